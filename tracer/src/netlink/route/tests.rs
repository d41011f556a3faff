//! Route parsing on messages laid out as the kernel sends them, and real lookups and dumps.
use std::{io, net::Ipv6Addr};

use super::*;
use crate::netlink::{
    attr::testing::{attr, message},
    socket::{read_answer, NLMSG_DONE, NLMSG_ERROR},
};

/// One datagram of a route dump into `out`; `Ok(true)` when the dump is complete.
fn parse_messages(buf: &[u8], out: &mut Vec<Route>) -> io::Result<bool> {
    read_answer(buf, RTM_NEWROUTE, true, |p| out.extend(parse_route(p)))
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
            ..Route::default()
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
            Ok((routes()?, idx))
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

#[test]
fn the_mtu_metric_and_its_lock_are_read() {
    // 10.0.0.0/8 mtu lock 1400, as a learned exception (RTM_F_CLONED).
    let mut body = super::rtmsg(2, 8, RTM_F_CLONED);
    body.extend(attr(RTA_DST, &[10, 0, 0, 0]));
    let metrics = [
        attr(RTAX_LOCK, &(1u32 << RTAX_MTU).to_ne_bytes()),
        attr(RTAX_MTU, &1400u32.to_ne_bytes()),
    ]
    .concat();
    body.extend(attr(RTA_METRICS, &metrics));
    let mut out = Vec::new();
    parse_messages(&message(RTM_NEWROUTE, &body), &mut out).unwrap();
    assert_eq!(out[0].mtu, Some(1400));
    assert!(out[0].mtu_locked);
    assert!(out[0].cloned);
    assert!(!out[0].v6);
}

#[test]
fn loopback_route_lookup_answers() {
    let r = route_to("127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(r.oif, Some(1));
}
