//! ctnetlink parsing on hand-built messages (as the kernel lays them out). The builders are
//! shared with `k8s::conntrack`'s tests of the NAT table.

use std::{io, net::IpAddr};

use super::*;
use crate::netlink::{
    attr::testing::{attr, message, nested},
    socket::{read_answer, NLMSG_DONE, NLMSG_ERROR},
};

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One datagram of a conntrack dump into `out`; `Ok(true)` when the dump is complete.
pub(crate) fn parse_messages(buf: &[u8], out: &mut Vec<Entry>) -> io::Result<bool> {
    read_answer(buf, CT_NEW, true, |p| out.extend(parse_entry(p)))
}

/// CTA_TUPLE_* as the kernel nests it; `None` ports for ICMP-like protocols.
fn tuple(kind: u16, proto: u8, src: &str, dst: &str, ports: Option<(u16, u16)>) -> Vec<u8> {
    let (s, d) = (ip(src), ip(dst));
    let (ks, kd) = if s.is_ipv4() {
        (CTA_IP_V4_SRC, CTA_IP_V4_DST)
    } else {
        (CTA_IP_V6_SRC, CTA_IP_V6_DST)
    };
    let mut proto_attrs = vec![attr(CTA_PROTO_NUM, &[proto])];
    if let Some((sp, dp)) = ports {
        proto_attrs.push(attr(CTA_PROTO_SRC_PORT, &sp.to_be_bytes()));
        proto_attrs.push(attr(CTA_PROTO_DST_PORT, &dp.to_be_bytes()));
    } else {
        // ICMP: id, type, code.
        proto_attrs.push(attr(4, &7u16.to_be_bytes()));
        proto_attrs.push(attr(5, &[8]));
        proto_attrs.push(attr(6, &[0]));
    }
    nested(
        kind,
        &[
            nested(
                CTA_TUPLE_IP,
                &[attr(ks, &ip_bytes(s)), attr(kd, &ip_bytes(d))],
            ),
            nested(CTA_TUPLE_PROTO, &proto_attrs),
        ],
    )
}

/// One IPCTNL_MSG_CT_NEW with its nfgenmsg, both tuples, and the attributes the kernel sends
/// along that are not needed (status, timeout, mark, id).
fn ct_message(orig: Vec<u8>, reply: Vec<u8>, family: u8) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    body.extend(orig);
    body.extend(reply);
    body.extend(attr(3, &0x18eu32.to_be_bytes())); // CTA_STATUS
    body.extend(attr(7, &431_999u32.to_be_bytes())); // CTA_TIMEOUT
    body.extend(attr(8, &0u32.to_be_bytes())); // CTA_MARK
    body.extend(attr(12, &0x1234u32.to_be_bytes())); // CTA_ID
    message(CT_NEW, &body)
}

/// Client 10.212.1.2:43512 → ClusterIP 10.96.0.10:8080, DNATed to 10.212.2.2:8080.
pub(crate) fn dnat_v4() -> Vec<u8> {
    ct_message(
        tuple(
            CTA_TUPLE_ORIG,
            TCP,
            "10.212.1.2",
            "10.96.0.10",
            Some((43512, 8080)),
        ),
        tuple(
            CTA_TUPLE_REPLY,
            TCP,
            "10.212.2.2",
            "10.212.1.2",
            Some((8080, 43512)),
        ),
        2,
    )
}

/// IPv6 UDP to a LoadBalancer address, DNATed and masqueraded (node port traffic).
pub(crate) fn dnat_snat_v6() -> Vec<u8> {
    ct_message(
        tuple(
            CTA_TUPLE_ORIG,
            UDP,
            "2001:db8:7::1",
            "2001:db8:100::10",
            Some((5000, 443)),
        ),
        tuple(
            CTA_TUPLE_REPLY,
            UDP,
            "fd00:244:0:2::9",
            "fd00:10::11",
            Some((8443, 61000)),
        ),
        10,
    )
}

/// A connection nothing translated.
pub(crate) fn plain_v4() -> Vec<u8> {
    ct_message(
        tuple(
            CTA_TUPLE_ORIG,
            TCP,
            "10.212.1.2",
            "10.212.2.2",
            Some((40000, 6379)),
        ),
        tuple(
            CTA_TUPLE_REPLY,
            TCP,
            "10.212.2.2",
            "10.212.1.2",
            Some((6379, 40000)),
        ),
        2,
    )
}

fn ping() -> Vec<u8> {
    ct_message(
        tuple(CTA_TUPLE_ORIG, 1, "10.212.1.2", "10.96.0.10", None),
        tuple(CTA_TUPLE_REPLY, 1, "10.212.2.2", "10.212.1.2", None),
        2,
    )
}

fn done() -> Vec<u8> {
    message(NLMSG_DONE, &0i32.to_ne_bytes())
}

#[test]
fn a_dump_of_both_families_is_parsed_and_portless_entries_are_left_out() {
    let buf = [dnat_v4(), ping(), dnat_snat_v6(), plain_v4(), done()].concat();
    let mut out = Vec::new();
    assert!(
        parse_messages(&buf, &mut out).unwrap(),
        "NLMSG_DONE ends it"
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        out[0],
        Entry {
            orig: Tuple {
                proto: TCP,
                src: ip("10.212.1.2"),
                sport: 43512,
                dst: ip("10.96.0.10"),
                dport: 8080,
            },
            reply: Tuple {
                proto: TCP,
                src: ip("10.212.2.2"),
                sport: 8080,
                dst: ip("10.212.1.2"),
                dport: 43512,
            },
        }
    );
    assert_eq!(out[1].orig.dst, ip("2001:db8:100::10"));
    assert_eq!(out[1].reply.dport, 61000);
    // Without NLMSG_DONE the dump goes on in the next datagram.
    let mut more = Vec::new();
    assert!(!parse_messages(&dnat_v4(), &mut more).unwrap());
    assert_eq!(more.len(), 1);
}

#[test]
fn truncated_garbage_and_error_messages_never_panic() {
    let whole = [dnat_v4(), dnat_snat_v6(), done()].concat();
    for cut in 0..whole.len() {
        let mut out = Vec::new();
        // Any prefix: entries before the cut, then either "not done yet" or an error.
        match parse_messages(&whole[..cut], &mut out) {
            Ok(done) => assert!(!done || cut == whole.len()),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
        }
        assert!(out.len() <= 2);
    }
    // Every byte after the header (attribute lengths, types, values) forced to odd values:
    // at most the one entry comes out, never a panic or a read beyond the message.
    let one = dnat_v4();
    for at in 16..one.len() {
        for v in [0u8, 1, 3, 4, 5, 0x80, 0xff] {
            let mut m = one.clone();
            m[at] = v;
            let mut out = Vec::new();
            assert!(parse_messages(&m, &mut out).is_ok());
            assert!(out.len() <= 1);
        }
    }
    // Pseudo-random bytes (a fixed xorshift sequence), with a plausible header.
    let mut x: u32 = 0x2545_f491;
    for len in [0usize, 3, 16, 17, 40, 200, 1000] {
        let mut buf: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        if len >= 16 {
            buf[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
            buf[4..6].copy_from_slice(&CT_NEW.to_ne_bytes());
        }
        let _ = parse_messages(&buf, &mut Vec::new());
    }
    // A message without its nfgenmsg, or with only one tuple: skipped.
    let mut out = Vec::new();
    parse_messages(&message(CT_NEW, &[2, 0]), &mut out).unwrap();
    let mut one_tuple = vec![2, 0, 0, 0];
    one_tuple.extend(tuple(
        CTA_TUPLE_ORIG,
        TCP,
        "10.0.0.1",
        "10.0.0.2",
        Some((1, 2)),
    ));
    parse_messages(&message(CT_NEW, &one_tuple), &mut out).unwrap();
    assert!(out.is_empty());
    // The kernel's refusal is an error with its errno.
    let err = parse_messages(
        &message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes()),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}
