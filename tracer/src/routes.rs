//! The routing table of the calling thread's network namespace, dumped over NETLINK_ROUTE
//! (RTM_GETROUTE, [`crate::netlink`]), so that it works inside `Netns::enter` and sees IPv6
//! and every table.
use std::{io, net::IpAddr};

use crate::netlink::{self, attr_ip, attr_u32, attrs, Socket, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP};

/// `RT_TABLE_MAIN`: the table `ip route` shows.
pub const TABLE_MAIN: u32 = 254;
/// `RTN_UNICAST`: a route to a gateway or a directly connected network.
pub const TYPE_UNICAST: u8 = 1;
/// `RTPROT_BIRD`: routes installed by BIRD (Calico's BGP daemon).
pub const PROTO_BIRD: u8 = 12;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination; `None` with `dst_len` 0 is the default route.
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    /// Next hop (`via`); for a multipath route, its first hop.
    pub gateway: Option<IpAddr>,
    /// Output device index (`dev`).
    pub oif: Option<u32>,
    pub table: u32,
    /// `RTPROT_*`: who installed it (`proto kernel`, `boot`, `static`, `bird`, ...).
    pub protocol: u8,
    /// `RTN_*` (unicast, local, blackhole, ...).
    pub kind: u8,
}

const RTMSG_LEN: usize = 12;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;

/// Every IPv4 and IPv6 route of the calling thread's namespace.
pub fn dump() -> io::Result<Vec<Route>> {
    // rtm_family AF_UNSPEC: both families in one dump.
    let rtmsg = [0u8; RTMSG_LEN];
    let msgs = Socket::open(libc::NETLINK_ROUTE)?.request(
        RTM_GETROUTE,
        NLM_F_DUMP,
        &rtmsg,
        RTM_NEWROUTE,
    )?;
    Ok(msgs.iter().filter_map(|m| parse_route(m)).collect())
}

/// Parse one datagram of a dump into `out`; `Ok(true)` when the dump is complete.
pub fn parse_messages(buf: &[u8], out: &mut Vec<Route>) -> io::Result<bool> {
    for m in netlink::messages(buf)? {
        match m.kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = netlink::error_code(m.payload);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            RTM_NEWROUTE => out.extend(parse_route(m.payload)),
            _ => {}
        }
    }
    Ok(false)
}

/// One `rtmsg` and its attributes; `None` for families other than IPv4/IPv6 or a short message.
fn parse_route(body: &[u8]) -> Option<Route> {
    let hdr = body.get(..RTMSG_LEN)?;
    let family = hdr[0] as i32;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return None;
    }
    let mut route = Route {
        dst: None,
        dst_len: hdr[1],
        gateway: None,
        oif: None,
        table: u32::from(hdr[4]),
        protocol: hdr[5],
        kind: hdr[7],
    };
    for (kind, value) in attrs(&body[RTMSG_LEN..]) {
        match kind {
            RTA_DST => route.dst = attr_ip(value),
            RTA_GATEWAY => route.gateway = attr_ip(value),
            // An IPv4 route through an IPv6 next hop (RFC 5549): family (u16) + address.
            RTA_VIA if value.len() > 2 => route.gateway = attr_ip(&value[2..]),
            RTA_OIF => route.oif = attr_u32(value),
            RTA_TABLE => route.table = attr_u32(value).unwrap_or(route.table),
            RTA_MULTIPATH => {
                // rtnexthop: len u16, flags u8, hops u8, ifindex i32, then its attributes.
                if let Some(hop) = value.get(..8) {
                    let hop_len = usize::from(u16::from_ne_bytes([hop[0], hop[1]]));
                    route.oif = route.oif.or(attr_u32(&hop[4..8]));
                    let hop_attrs = value.get(8..hop_len.max(8)).unwrap_or(&[]);
                    for (k, v) in attrs(hop_attrs) {
                        if k == RTA_GATEWAY {
                            route.gateway = route.gateway.or(attr_ip(v));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{align4, NLMSG_HDR_LEN as NLMSG_HDR};
    use std::net::Ipv6Addr;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((4 + value.len()) as u16).to_ne_bytes());
        v.extend(kind.to_ne_bytes());
        v.extend(value);
        v.resize(align4(v.len()), 0);
        v
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        v.extend(kind.to_ne_bytes());
        v.extend([0u8; 10]);
        v.extend(body);
        v.resize(align4(v.len()), 0);
        v
    }

    /// `rtmsg` for `family`/`dst_len`, table main, `protocol`, unicast.
    fn rtmsg(family: u8, dst_len: u8, protocol: u8) -> Vec<u8> {
        vec![
            family,
            dst_len,
            0,
            0,
            254,
            protocol,
            0,
            TYPE_UNICAST,
            0,
            0,
            0,
            0,
        ]
    }

    #[test]
    fn a_dump_with_gateway_multipath_and_done_is_parsed() {
        // 10.244.1.0/24 via 10.168.0.3 dev 2 (flannel host-gw).
        let mut body = rtmsg(2, 24, 3);
        body.extend(attr(RTA_TABLE, &254u32.to_ne_bytes()));
        body.extend(attr(RTA_DST, &[10, 244, 1, 0]));
        body.extend(attr(RTA_GATEWAY, &[10, 168, 0, 3]));
        body.extend(attr(RTA_OIF, &2u32.to_ne_bytes()));
        let mut buf = message(RTM_NEWROUTE, &body);
        // fd00:212:2::/64, ECMP: first hop fe80::1 on dev 7, proto bird.
        let mut hop = Vec::new();
        let gw6 = attr(
            RTA_GATEWAY,
            &"fe80::1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        hop.extend(((8 + gw6.len()) as u16).to_ne_bytes());
        hop.extend([0u8, 0]);
        hop.extend(7u32.to_ne_bytes());
        hop.extend(gw6);
        let mut body6 = rtmsg(10, 64, PROTO_BIRD);
        body6.extend(attr(
            RTA_DST,
            &"fd00:212:2::".parse::<Ipv6Addr>().unwrap().octets(),
        ));
        body6.extend(attr(RTA_MULTIPATH, &hop));
        buf.extend(message(RTM_NEWROUTE, &body6));
        // An MPLS route (family 28) is skipped.
        buf.extend(message(RTM_NEWROUTE, &rtmsg(28, 20, 3)));
        buf.extend(message(NLMSG_DONE, &[0, 0, 0, 0]));

        let mut out = Vec::new();
        assert!(parse_messages(&buf, &mut out).unwrap());
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0],
            Route {
                dst: Some("10.244.1.0".parse().unwrap()),
                dst_len: 24,
                gateway: Some("10.168.0.3".parse().unwrap()),
                oif: Some(2),
                table: TABLE_MAIN,
                protocol: 3,
                kind: TYPE_UNICAST,
            }
        );
        assert_eq!(out[1].gateway, Some("fe80::1".parse().unwrap()));
        assert_eq!(out[1].oif, Some(7));
        assert_eq!(out[1].protocol, PROTO_BIRD);
    }

    #[test]
    fn truncated_and_error_messages_are_errors_not_panics() {
        let mut body = rtmsg(2, 24, 3);
        body.extend(attr(RTA_DST, &[10, 244, 1, 0]));
        let buf = message(RTM_NEWROUTE, &body);
        for cut in 0..buf.len() {
            let mut out = Vec::new();
            // Any prefix: either parsed as incomplete or refused, never a panic.
            let _ = parse_messages(&buf[..cut], &mut out);
        }
        let mut bad_attr = rtmsg(2, 24, 3);
        bad_attr.extend([200u8, 0, 1, 0, 10, 244]);
        let mut out = Vec::new();
        assert!(!parse_messages(&message(RTM_NEWROUTE, &bad_attr), &mut out).unwrap());
        assert_eq!(out[0].dst, None, "a malformed attribute is ignored");
        let eperm = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let err = parse_messages(&eperm, &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn the_kernel_dump_of_a_namespace_holds_its_routes() {
        // A real namespace with a dummy device and the kind of route an overlay installs.
        // A lab namespace (xtask::lab): deleted on drop, also when an assertion fails.
        let mut lab = xtask::lab::Lab::new(&xtask::lab::Lab::unique_prefix("urt")).unwrap();
        let name = lab
            .add_netns("t")
            .expect("ip netns add (tests run as root)");
        for args in [
            // No dummy driver on every kernel: a veth pair inside the namespace.
            &["link", "add", "nl0", "type", "veth", "peer", "name", "nl1"][..],
            &["link", "set", "nl1", "up"],
            &["link", "set", "nl0", "up"],
            &["addr", "add", "10.250.0.1/24", "dev", "nl0"],
            &[
                "route",
                "add",
                "10.250.9.0/26",
                "via",
                "10.250.0.9",
                "dev",
                "nl0",
                "onlink",
            ],
            &["-6", "route", "add", "fd00:250::/64", "dev", "nl0"],
        ] {
            lab.ip(&name, args).unwrap();
        }
        let ns = crate::netns::Netns::resolve(&name).unwrap();
        let (routes, ifindex) = ns
            .enter(|| {
                let idx = crate::ifaces::list()?
                    .into_iter()
                    .find(|i| i.name == "nl0")
                    .map(|i| i.ifindex);
                Ok((dump()?, idx))
            })
            .unwrap();
        let via = routes
            .iter()
            .find(|r| r.dst == Some("10.250.9.0".parse().unwrap()))
            .unwrap_or_else(|| panic!("no 10.250.9.0/26 in {routes:?}"));
        assert_eq!(via.dst_len, 26);
        assert_eq!(via.gateway, Some("10.250.0.9".parse().unwrap()));
        assert_eq!(via.oif, ifindex);
        assert_eq!(via.table, TABLE_MAIN);
        assert_eq!(via.kind, TYPE_UNICAST);
        assert!(routes
            .iter()
            .any(|r| r.dst == Some("fd00:250::".parse().unwrap()) && r.dst_len == 64));
        // Nothing of the tracer's own namespace leaks in.
        assert!(!routes.iter().any(|r| r.gateway.is_some() && r.dst_len == 0));
    }
}
