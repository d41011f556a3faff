//! Network interfaces of a namespace: name, index, MTU, kind, which one carries the default
//! route, and their addresses. Read with the kernel's own interfaces (if_nameindex, ioctl,
//! /proc/thread-self/net, netlink) in the calling thread's namespace, so it works inside
//! `Netns::enter`.
use std::{ffi::CStr, fs, os::fd::AsRawFd};

use anyhow::{Context as _, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    /// Kernel driver (`veth`, `vxlan`, `ipip`, `bridge`, ...), when it tells.
    pub driver: Option<String>,
    /// ARPHRD_* link type (1 Ethernet, 768 IPIP, 772 loopback, ...).
    pub link_type: u16,
}

impl Iface {
    /// Tunnel devices an overlay sends pod traffic through.
    pub fn is_tunnel(&self) -> bool {
        const TUNNEL_NAMES: [&str; 4] = ["tunl0", "vxlan.calico", "flannel.1", "cilium_vxlan"];
        const ARPHRD_TUNNEL: u16 = 768;
        const ARPHRD_TUNNEL6: u16 = 769;
        TUNNEL_NAMES.contains(&self.name.as_str())
            || matches!(
                self.driver.as_deref(),
                Some("vxlan" | "ipip" | "geneve" | "ip6_tunnel")
            )
            || self.link_type == ARPHRD_TUNNEL
            || self.link_type == ARPHRD_TUNNEL6
    }

    /// The host end of a pod's veth, by the CNIs' naming (Calico `cali*`, Cilium `lxc*`,
    /// Weave `vethwe*`, bridge CNIs `veth*`).
    pub fn is_pod_side(&self) -> bool {
        const POD_PREFIXES: [&str; 3] = ["cali", "lxc", "veth"];
        POD_PREFIXES.iter().any(|p| self.name.starts_with(p))
    }

    pub fn is_loopback(&self) -> bool {
        self.link_type == 772 || self.name == "lo"
    }
}

/// All interfaces of the calling thread's network namespace.
pub fn list() -> Result<Vec<Iface>> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for interface ioctls");
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let mut out = Vec::new();
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(std::io::Error::last_os_error()).context("if_nameindex");
    }
    let mut p = head;
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(Iface {
                mtu: ioctl_mtu(sock.as_raw_fd(), &name).unwrap_or(0),
                driver: ethtool_driver(sock.as_raw_fd(), &name),
                link_type: ioctl_link_type(sock.as_raw_fd(), &name).unwrap_or(0),
                ifindex: (*p).if_index,
                name,
            });
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    Ok(out)
}

fn ifreq_for(name: &str) -> Option<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Some(req)
}

fn ioctl_mtu(sock: i32, name: &str) -> Option<u32> {
    let mut req = ifreq_for(name)?;
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFMTU, &mut req) };
    (rc == 0).then_some(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

fn ioctl_link_type(sock: i32, name: &str) -> Option<u16> {
    let mut req = ifreq_for(name)?;
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFHWADDR, &mut req) };
    (rc == 0).then_some(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// The driver name via ETHTOOL_GDRVINFO: tells a VXLAN or IPIP device from a NIC by kind rather
/// than by name.
fn ethtool_driver(sock: i32, name: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    let rc = unsafe { libc::ioctl(sock, libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return None;
    }
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    let driver = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    (!driver.is_empty()).then_some(driver)
}

/// Names of the devices carrying a default route (IPv4 and IPv6) in the calling thread's
/// namespace.
pub fn default_route_devices() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string("/proc/thread-self/net/route") {
        out.extend(parse_ipv4_default_routes(&text));
    }
    if let Ok(text) = fs::read_to_string("/proc/thread-self/net/ipv6_route") {
        out.extend(parse_ipv6_default_routes(&text));
    }
    out.sort();
    out.dedup();
    out
}

/// /proc/net/route: `Iface Destination Gateway Flags ... Mask ...`, hex, default = dest 0 mask 0.
pub fn parse_ipv4_default_routes(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 8 && cols[1] == "00000000" && cols[7] == "00000000" {
                Some(cols[0].to_string())
            } else {
                None
            }
        })
        .collect()
}

/// /proc/net/ipv6_route: `dest destlen src srclen nexthop metric refcnt use flags iface`.
pub fn parse_ipv6_default_routes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 10
                && cols[0] == "00000000000000000000000000000000"
                && cols[1] == "00"
                && cols[9] != "lo"
            {
                Some(cols[9].to_string())
            } else {
                None
            }
        })
        .collect()
}

/// `RTM_NEWADDR` / `RTM_GETADDR` and the `ifaddrmsg` attributes read (linux/if_addr.h).
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `RT_SCOPE_LINK`: IPv6 link-local and the like, never a node's address toward its peers.
const RT_SCOPE_LINK: u8 = 253;

/// The addresses of the calling thread's namespace's devices, as (ifindex, address), over
/// NETLINK_ROUTE (`RTM_GETADDR`, both families); link- and host-scope addresses left out.
pub fn addresses() -> std::io::Result<Vec<(u32, std::net::IpAddr)>> {
    use crate::netlink::{Socket, NLM_F_DUMP};
    // ifaddrmsg with ifa_family AF_UNSPEC: every family.
    let msgs = Socket::open(libc::NETLINK_ROUTE)?.request(
        RTM_GETADDR,
        NLM_F_DUMP,
        &[0u8; IFADDRMSG_LEN],
        RTM_NEWADDR,
    )?;
    Ok(msgs.iter().filter_map(|m| parse_address(m)).collect())
}

/// One `ifaddrmsg` and its attributes: the device's index and its own address (`IFA_LOCAL`
/// where given: on a point-to-point link `IFA_ADDRESS` is the far end's).
fn parse_address(body: &[u8]) -> Option<(u32, std::net::IpAddr)> {
    let hdr = body.get(..IFADDRMSG_LEN)?;
    let family = i32::from(hdr[0]);
    if (family != libc::AF_INET && family != libc::AF_INET6) || hdr[3] >= RT_SCOPE_LINK {
        return None;
    }
    let ifindex = u32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let (mut local, mut address) = (None, None);
    for (kind, value) in crate::netlink::attrs(&body[IFADDRMSG_LEN..]) {
        match kind {
            IFA_LOCAL => local = crate::netlink::attr_ip(value),
            IFA_ADDRESS => address = crate::netlink::attr_ip(value),
            _ => {}
        }
    }
    Some((ifindex, local.or(address)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_host_scope_and_left_out_and_messages_parse() {
        // `lo` holds 127.0.0.1 (scope host) in every namespace: never an underlay address.
        let all = addresses().unwrap();
        assert!(all.iter().all(|(_, a)| !a.is_loopback()), "{all:?}");
        let msg = |family: u8, scope: u8, attrs: &[(u16, &[u8])]| {
            let mut m = vec![family, 24, 0, scope];
            m.extend_from_slice(&7u32.to_ne_bytes());
            for (kind, value) in attrs {
                m.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
                m.extend_from_slice(&kind.to_ne_bytes());
                m.extend_from_slice(value);
                m.resize(crate::netlink::align4(m.len()), 0);
            }
            m
        };
        let ptp = msg(
            2,
            0,
            &[(IFA_ADDRESS, &[10, 0, 0, 9]), (IFA_LOCAL, &[10, 0, 0, 1])],
        );
        assert_eq!(parse_address(&ptp), Some((7, "10.0.0.1".parse().unwrap())));
        let v6 = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(
            parse_address(&msg(10, 0, &[(IFA_ADDRESS, &v6)])),
            Some((7, "2001:db8::2".parse().unwrap()))
        );
        let fe80 = "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(parse_address(&msg(10, 253, &[(IFA_ADDRESS, &fe80)])), None);
        assert_eq!(parse_address(&[2, 24, 0]), None);
    }

    #[test]
    fn loopback_is_listed_with_its_mtu() {
        let all = list().unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo present");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mtu, 65536);
        assert!(lo.is_loopback());
        assert!(!lo.is_tunnel());
    }

    #[test]
    fn default_routes_are_parsed() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_ipv4_default_routes(v4), vec!["eth0".to_string()]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     ens5\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     ens5\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(parse_ipv6_default_routes(v6), vec!["ens5".to_string()]);
    }
}
