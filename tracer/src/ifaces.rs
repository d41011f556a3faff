//! Network interfaces of a namespace: name, index, MTU, kind, which one carries the default
//! route. Read with the kernel's own interfaces (if_nameindex, ioctl, /proc/thread-self/net)
//! in the calling thread's namespace, so it works inside `Netns::enter`; their addresses are
//! [`crate::netlink::addr`]'s.
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

/// A device as a netlink link notification or dump describes it: its kind stands for the
/// driver (`veth`, `vxlan`, ...; none for NICs).
impl From<crate::netlink::link::Link> for Iface {
    fn from(l: crate::netlink::link::Link) -> Iface {
        Iface {
            name: l.name,
            ifindex: l.ifindex,
            mtu: l.mtu,
            driver: l.kind,
            link_type: l.link_type,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
