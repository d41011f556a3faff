//! A small NETLINK_ROUTE client: dumps of links, routes (and the route cache's learned PMTU
//! exceptions), VXLAN FDB entries, and a single route lookup. Written by hand rather than with
//! a netlink crate: the audit needs four requests and a handful of attributes. The socket is
//! created in the calling thread's network namespace, so this works inside `Netns::enter`.
use std::net::IpAddr;

use anyhow::{Context as _, Result};

use crate::netlink::{align4, attr_ip, attr_u32, attrs, Socket, NLM_F_DUMP};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
// VXLAN and GENEVE share the numbering of these two; IPIP/GRE/sit use IFLA_IPTUN_*.
const IFLA_VXLAN_GROUP: u16 = 2;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_GROUP6: u16 = 16;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const IFLA_GENEVE_REMOTE: u16 = 2;
const IFLA_GENEVE_REMOTE6: u16 = 7;
const IFLA_IPTUN_LOCAL: u16 = 2;
const IFLA_IPTUN_REMOTE: u16 = 3;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTAX_LOCK: u16 = 1;
const RTAX_MTU: u16 = 2;
const RTM_F_CLONED: u32 = 0x200;
const RT_TABLE_LOCAL: u32 = 255;

const NDA_DST: u16 = 1;

/// One network device, as RTM_NEWLINK describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mtu: u32,
    /// ARPHRD_* type.
    pub link_type: u16,
    /// `IFLA_INFO_KIND`: `veth`, `vxlan`, `ipip`, `geneve`, `wireguard`, ... (none for NICs).
    pub kind: Option<String>,
    /// Tunnel endpoints from the kind's data (VXLAN local/remote, IPIP local/remote, ...).
    pub tunnel_local: Option<IpAddr>,
    pub tunnel_remote: Option<IpAddr>,
    /// `IFLA_LINK`: a veth's peer index (in the peer's namespace when `link_netnsid` is set).
    pub link: Option<u32>,
    pub link_netnsid: Option<i32>,
}

/// One route, or one learned exception of the route cache (`cloned`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// The `mtu` metric (set by `ip route ... mtu N`, Cilium, or learned from ICMP).
    pub mtu: Option<u32>,
    pub mtu_locked: bool,
    pub table: u32,
    pub cloned: bool,
    pub v6: bool,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.dst_len == 0
    }
}

fn unspecified_to_none(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.filter(|a| !a.is_unspecified())
}

fn route_socket() -> Result<Socket> {
    Socket::open(libc::NETLINK_ROUTE).context("netlink socket")
}

/// Every device of the calling thread's namespace.
pub fn links() -> Result<Vec<Link>> {
    let sock = route_socket()?;
    let mut ifi = [0u8; 16];
    ifi[0] = libc::AF_UNSPEC as u8;
    let msgs = sock
        .request(RTM_GETLINK, NLM_F_DUMP, &ifi, RTM_NEWLINK)
        .context("netlink: RTM_GETLINK")?;
    Ok(msgs.iter().filter_map(|m| parse_link(m)).collect())
}

fn parse_link(m: &[u8]) -> Option<Link> {
    if m.len() < 16 {
        return None;
    }
    let mut l = Link {
        link_type: u16::from_ne_bytes([m[2], m[3]]),
        ifindex: i32::from_ne_bytes(m[4..8].try_into().unwrap()) as u32,
        ..Link::default()
    };
    for (ty, v) in attrs(&m[16..]) {
        match ty {
            IFLA_IFNAME => {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                l.name = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            IFLA_MTU => l.mtu = attr_u32(v).unwrap_or(0),
            IFLA_LINK => l.link = attr_u32(v),
            IFLA_LINK_NETNSID => l.link_netnsid = attr_u32(v).map(|x| x as i32),
            IFLA_LINKINFO => parse_linkinfo(v, &mut l),
            _ => {}
        }
    }
    Some(l)
}

fn parse_linkinfo(v: &[u8], l: &mut Link) {
    let info = attrs(v);
    for (ty, val) in &info {
        if *ty == IFLA_INFO_KIND {
            let end = val.iter().position(|&b| b == 0).unwrap_or(val.len());
            l.kind = Some(String::from_utf8_lossy(&val[..end]).into_owned());
        }
    }
    let Some(data) = info
        .iter()
        .find(|(t, _)| *t == IFLA_INFO_DATA)
        .map(|(_, d)| *d)
    else {
        return;
    };
    let (local, remote): (&[u16], &[u16]) = match l.kind.as_deref() {
        Some("vxlan") => (
            &[IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6],
            &[IFLA_VXLAN_GROUP, IFLA_VXLAN_GROUP6],
        ),
        Some("geneve") => (&[], &[IFLA_GENEVE_REMOTE, IFLA_GENEVE_REMOTE6]),
        Some("ipip" | "sit" | "ip6tnl" | "gre" | "gretap" | "ip6gre") => {
            (&[IFLA_IPTUN_LOCAL], &[IFLA_IPTUN_REMOTE])
        }
        _ => return,
    };
    for (ty, val) in attrs(data) {
        if local.contains(&ty) {
            l.tunnel_local = unspecified_to_none(attr_ip(val)).or(l.tunnel_local);
        }
        if remote.contains(&ty) {
            l.tunnel_remote = unspecified_to_none(attr_ip(val)).or(l.tunnel_remote);
        }
    }
}

fn rtmsg(family: u8, dst_len: u8, flags: u32) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[0] = family;
    b[1] = dst_len;
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b
}

/// Routes of all tables but `local` (IPv4 and IPv6), or with `cache` the learned exceptions
/// (`ip route show cache`: PMTU learned from ICMP, redirects).
pub fn routes(cache: bool) -> Result<Vec<Route>> {
    let sock = route_socket()?;
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let flags = if cache { RTM_F_CLONED } else { 0 };
        let msgs = sock
            .request(
                RTM_GETROUTE,
                NLM_F_DUMP,
                &rtmsg(family, 0, flags),
                RTM_NEWROUTE,
            )
            .context("netlink: RTM_GETROUTE dump")?;
        out.extend(
            msgs.iter()
                .filter_map(|m| parse_route(m))
                .filter(|r| r.table != RT_TABLE_LOCAL && r.cloned == cache),
        );
    }
    Ok(out)
}

/// The route the kernel would use toward `dst` (`ip route get`), including a learned PMTU.
pub fn route_get(dst: IpAddr) -> Result<Route> {
    let sock = route_socket()?;
    let (family, bytes, bits) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128),
    };
    let mut body = rtmsg(family, bits, 0);
    let alen = 4 + bytes.len();
    body.extend_from_slice(&(alen as u16).to_ne_bytes());
    body.extend_from_slice(&RTA_DST.to_ne_bytes());
    body.extend_from_slice(&bytes);
    body.resize(align4(body.len()), 0);
    let msgs = sock
        .request(RTM_GETROUTE, 0, &body, RTM_NEWROUTE)
        .context("netlink: RTM_GETROUTE")?;
    msgs.first()
        .and_then(|m| parse_route(m))
        .with_context(|| format!("no route to {dst}"))
}

fn parse_route(m: &[u8]) -> Option<Route> {
    if m.len() < 12 {
        return None;
    }
    let family = m[0];
    let rtm_flags = u32::from_ne_bytes(m[8..12].try_into().unwrap());
    let mut r = Route {
        dst_len: m[1],
        table: m[4] as u32,
        cloned: rtm_flags & RTM_F_CLONED != 0,
        v6: family == libc::AF_INET6 as u8,
        ..Route::default()
    };
    for (ty, v) in attrs(&m[12..]) {
        match ty {
            RTA_DST => r.dst = attr_ip(v),
            RTA_GATEWAY => r.gateway = attr_ip(v),
            RTA_OIF => r.oif = attr_u32(v),
            RTA_TABLE => r.table = attr_u32(v).unwrap_or(r.table),
            RTA_METRICS => {
                let mut lock = 0;
                for (mt, mv) in attrs(v) {
                    match mt {
                        RTAX_MTU => r.mtu = attr_u32(mv).filter(|&x| x > 0),
                        RTAX_LOCK => lock = attr_u32(mv).unwrap_or(0),
                        _ => {}
                    }
                }
                r.mtu_locked = lock & (1 << RTAX_MTU) != 0;
            }
            _ => {}
        }
    }
    Some(r)
}

/// Remote VTEP addresses of VXLAN forwarding entries (`bridge fdb show dev vxlan.calico`:
/// `... dst 10.33.44.208`): Calico and flannel program one per peer node.
pub fn fdb_remotes(ifindex: u32) -> Result<Vec<IpAddr>> {
    let sock = route_socket()?;
    let mut nd = [0u8; 12];
    nd[0] = libc::AF_BRIDGE as u8;
    let msgs = sock
        .request(RTM_GETNEIGH, NLM_F_DUMP, &nd, RTM_NEWNEIGH)
        .context("netlink: RTM_GETNEIGH")?;
    let mut out = Vec::new();
    for m in &msgs {
        if m.len() < 12 || i32::from_ne_bytes(m[4..8].try_into().unwrap()) as u32 != ifindex {
            continue;
        }
        for (ty, v) in attrs(&m[12..]) {
            if ty == NDA_DST {
                if let Some(ip) = unspecified_to_none(attr_ip(v)) {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_dumped_with_its_mtu() {
        let all = links().unwrap();
        let lo = all.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mtu, 65536);
        assert_eq!(lo.link_type, 772);
    }

    #[test]
    fn attributes_are_walked_with_padding() {
        // IFLA_MTU = 1450, then a 5-byte name padded to 8.
        let mut b = Vec::new();
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&IFLA_MTU.to_ne_bytes());
        b.extend_from_slice(&1450u32.to_ne_bytes());
        b.extend_from_slice(&9u16.to_ne_bytes());
        b.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        b.extend_from_slice(b"eth0\0\0\0\0");
        let a = attrs(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(attr_u32(a[0].1), Some(1450));
        assert_eq!(a[1].1, b"eth0\0");
        // A length running past the buffer stops the walk instead of panicking.
        let mut bad = b.clone();
        bad[0] = 200;
        assert!(attrs(&bad).is_empty());
    }

    #[test]
    fn loopback_route_lookup_answers() {
        let r = route_get("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(r.oif, Some(1));
    }
}
