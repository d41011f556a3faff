//! Network devices (RTM_GETLINK dumps and RTM_NEWLINK / RTM_DELLINK notifications), and the
//! remote VTEPs of a VXLAN device's forwarding entries (RTM_GETNEIGH, bridge family).
use std::net::IpAddr;

use anyhow::Result;

use super::{
    attr::{attr_ip, attr_string, attr_u32, attrs},
    socket::{messages, route_request, Socket, NLM_F_DUMP},
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTMGRP_LINK: u32 = 1;
/// `struct ifinfomsg`: family u8, pad u8, type u16, index i32, flags u32, change u32.
const IFINFOMSG_LEN: usize = 16;
/// `struct ndmsg`: family u8, pad u8, pad u16, ifindex i32, state u16, flags u8, type u8.
const NDMSG_LEN: usize = 12;

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

/// A link notification, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    New(Link),
    Gone(u32),
}

fn unspecified_to_none(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.filter(|a| !a.is_unspecified())
}

/// Every device of the calling thread's namespace.
pub fn links() -> Result<Vec<Link>> {
    // ifinfomsg with ifi_family AF_UNSPEC: every device.
    let ifi = [0u8; IFINFOMSG_LEN];
    let msgs = route_request("RTM_GETLINK", RTM_GETLINK, NLM_F_DUMP, &ifi, RTM_NEWLINK)?;
    Ok(msgs.iter().filter_map(|m| parse_link(m)).collect())
}

/// A socket of the calling thread's namespace that receives its link notifications (read them
/// with [`Socket::recv_nonblocking`] and [`parse_link_changes`]). `rcvbuf`: its receive buffer
/// (the kernel caps it at `net.core.rmem_max`); an overflow reads as `ENOBUFS`.
pub fn watch_links(rcvbuf: usize) -> std::io::Result<Socket> {
    let s = Socket::open(libc::NETLINK_ROUTE)?;
    s.subscribe(RTMGRP_LINK, rcvbuf)?;
    Ok(s)
}

/// Decode the link notifications of one datagram; anything malformed is skipped, and so are
/// devices without an index or a name.
pub fn parse_link_changes(datagram: &[u8]) -> Vec<LinkChange> {
    let Ok(messages) = messages(datagram) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in messages {
        let Some(link) = parse_link(m.payload).filter(|l| l.ifindex != 0) else {
            continue;
        };
        match m.kind {
            RTM_DELLINK => out.push(LinkChange::Gone(link.ifindex)),
            RTM_NEWLINK if !link.name.is_empty() => out.push(LinkChange::New(link)),
            _ => {}
        }
    }
    out
}

fn parse_link(m: &[u8]) -> Option<Link> {
    let head = m.get(..IFINFOMSG_LEN)?;
    let mut l = Link {
        link_type: u16::from_ne_bytes([head[2], head[3]]),
        ifindex: u32::from_ne_bytes([head[4], head[5], head[6], head[7]]),
        ..Link::default()
    };
    for (ty, v) in attrs(&m[IFINFOMSG_LEN..]) {
        match ty {
            IFLA_IFNAME => l.name = attr_string(v),
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
            l.kind = Some(attr_string(val)).filter(|k| !k.is_empty());
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

/// Remote VTEP addresses of VXLAN forwarding entries (`bridge fdb show dev vxlan.calico`:
/// `... dst 10.33.44.208`): Calico and flannel program one per peer node.
pub fn fdb_remotes(ifindex: u32) -> Result<Vec<IpAddr>> {
    let mut nd = [0u8; NDMSG_LEN];
    nd[0] = libc::AF_BRIDGE as u8;
    let msgs = route_request("RTM_GETNEIGH", RTM_GETNEIGH, NLM_F_DUMP, &nd, RTM_NEWNEIGH)?;
    let mut out = Vec::new();
    for m in &msgs {
        let Some(head) = m.get(..NDMSG_LEN) else {
            continue;
        };
        if u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) != ifindex {
            continue;
        }
        for (ty, v) in attrs(&m[NDMSG_LEN..]) {
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
    use crate::netlink::attr::testing::{attr, message, nested};

    fn ifinfomsg(kind: u16, index: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = vec![0u8; IFINFOMSG_LEN];
        payload[2..4].copy_from_slice(&1u16.to_ne_bytes());
        payload[4..8].copy_from_slice(&index.to_ne_bytes());
        payload.extend(attrs.concat());
        message(kind, &payload)
    }

    #[test]
    fn loopback_is_dumped_with_its_mtu() {
        let all = links().unwrap();
        let lo = all.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mtu, 65536);
        assert_eq!(lo.link_type, 772);
    }

    #[test]
    fn link_notifications_are_decoded() {
        let mut dgram = ifinfomsg(
            RTM_NEWLINK,
            7,
            &[
                attr(IFLA_IFNAME, b"cali7\0"),
                attr(IFLA_MTU, &1440u32.to_ne_bytes()),
                nested(IFLA_LINKINFO, &[attr(IFLA_INFO_KIND, b"veth\0")]),
            ],
        );
        dgram.extend(ifinfomsg(RTM_DELLINK, 5, &[]));
        // No index, or no name: nothing to hook.
        dgram.extend(ifinfomsg(RTM_NEWLINK, 0, &[attr(IFLA_IFNAME, b"x\0")]));
        dgram.extend(ifinfomsg(RTM_NEWLINK, 9, &[]));
        let changes = parse_link_changes(&dgram);
        assert_eq!(
            changes,
            vec![
                LinkChange::New(Link {
                    name: "cali7".into(),
                    ifindex: 7,
                    mtu: 1440,
                    kind: Some("veth".into()),
                    link_type: 1,
                    ..Link::default()
                }),
                LinkChange::Gone(5),
            ]
        );
    }

    #[test]
    fn tunnel_endpoints_come_from_the_kind_s_data() {
        let dgram = ifinfomsg(
            RTM_NEWLINK,
            4,
            &[
                attr(IFLA_IFNAME, b"vxlan.calico\0"),
                nested(
                    IFLA_LINKINFO,
                    &[
                        attr(IFLA_INFO_KIND, b"vxlan\0"),
                        nested(
                            IFLA_INFO_DATA,
                            &[
                                attr(IFLA_VXLAN_LOCAL, &[10, 0, 0, 1]),
                                attr(IFLA_VXLAN_GROUP, &[0, 0, 0, 0]),
                            ],
                        ),
                    ],
                ),
            ],
        );
        let [LinkChange::New(l)] = &parse_link_changes(&dgram)[..] else {
            panic!("one new link expected");
        };
        assert_eq!(l.tunnel_local, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(l.tunnel_remote, None, "0.0.0.0 is no remote");
    }

    #[test]
    fn truncated_notifications_are_skipped_not_a_panic() {
        let dgram = ifinfomsg(RTM_NEWLINK, 7, &[attr(IFLA_IFNAME, b"cali7\0")]);
        for cut in 0..dgram.len() {
            let _ = parse_link_changes(&dgram[..cut]);
        }
    }
}
