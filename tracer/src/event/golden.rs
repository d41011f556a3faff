//! The event log schema pinned byte for byte: records of every kind, with every field set and
//! with none set, written by serde and by the fast writer, against `testdata/golden.jsonl`.
//! Users' scripts read these lines, so a change here is a schema change; run with
//! `UPDATE_GOLDEN=1` only when one is meant (adding a field at the end), and say so.

use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Encap, IcmpTooBig, Kind, Outer, Record};
use crate::k8s::{ObjectRef, ServiceRef};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/event/testdata/golden.jsonl"
);

const KINDS: [Kind; 7] = [
    Kind::Drop,
    Kind::IcmpTooBigSent,
    Kind::IcmpTooBigReceived,
    Kind::OversizeTx,
    Kind::TcpRetransmit,
    Kind::PmtuUpdate,
    Kind::Lost,
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node(name: &str) -> ObjectRef {
    ObjectRef {
        namespace: None,
        name: name.into(),
    }
}

fn pod(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: Some(Arc::from(ns)),
        name: name.into(),
    }
}

/// A record of `kind` with every field set, the values a real event of that kind would carry
/// where it has them.
fn full(kind: Kind, n: u32) -> Record {
    let hook = match kind {
        Kind::Drop => "tp_btf/kfree_skb",
        Kind::IcmpTooBigSent => "tracepoint/icmp/icmp_send",
        Kind::IcmpTooBigReceived => "tcx/ingress",
        Kind::OversizeTx => "tcx/egress",
        Kind::TcpRetransmit => "tracepoint/tcp/tcp_retransmit_skb",
        Kind::PmtuUpdate => "fentry/__ip_rt_update_pmtu",
        Kind::Lost => "ringbuf",
    };
    let mut r = Record::new(kind, hook, 1_795_630_181_123_456_789 + i128::from(n));
    r.ifname = Some("eth0".into());
    r.ifindex = Some(2);
    r.netns = Some(4026532177);
    r.len = Some(1564);
    r.l3_len = Some(1550);
    r.mtu = Some(1450);
    r.mtu_source = Some(["peer", "device", "route", "icmp", "pmtu"][n as usize % 5]);
    r.gso_size = Some(1398);
    r.gso_segs = Some(3);
    r.reason = Some("PKT_TOO_BIG".into());
    r.reason_code = Some(93);
    r.location = Some("__dev_forward_skb2+0x87".into());
    r.matched = vec!["reason", "location", "oversize", "icmp_too_big"];
    r.out_ifname = Some("vxlan.calico".into());
    r.out_ifindex = Some(7);
    r.out_mtu = Some(1500);
    r.peer_ifname = Some("cali8d1f2a\"x\\y".into());
    r.peer_ifindex = Some(9);
    r.peer_mtu = Some(1450);
    r.proto = Some(6);
    r.src = Some(ip("10.212.1.2"));
    r.sport = Some(48556);
    r.dst = Some(ip("10.212.2.2"));
    r.dport = Some(6379);
    r.outer = Some(Outer {
        src: ip("10.211.1.2"),
        dst: ip("10.211.2.2"),
        encap: Encap::Vxlan,
        vni: Some(4096),
    });
    r.icmp = Some(IcmpTooBig {
        from: Some(ip("10.211.0.1")),
        to: ip("10.211.1.2"),
        icmp_type: 3,
        code: 4,
        mtu: Some(1450),
    });
    r.tcp_state = Some("TCP_ESTABLISHED".into());
    r.skb = Some("0xffff88817ad5f4e0".into());
    r.lost = Some(17);
    r.src_pod = Some(pod("shop", "order-api-7d9f8"));
    r.dst_pod = Some(pod("cache", "storage-0"));
    r.service = Some(ServiceRef {
        namespace: "cache".into(),
        name: "storage".into(),
        port: Some(6379),
        port_name: Some("redis".into()),
    });
    r.src_node = Some(node("worker-116"));
    r.dst_node = Some(node("worker-208"));
    r
}

/// Every record the golden log holds, in its order.
pub(super) fn records() -> Vec<Record> {
    let mut all = Vec::new();
    for (n, kind) in KINDS.into_iter().enumerate() {
        all.push(full(kind, n as u32));
        all.push(Record::new(kind, "ringbuf", 0));
    }
    // The shapes in between: IPv6 with an ICMPv6 too-big from the generator (no `from`, no
    // MTU), IP-in-IP (no VNI), a service known by port name only, a node without a pod.
    let mut v6 = Record::new(
        Kind::IcmpTooBigSent,
        "kprobe/__icmp_send",
        1_795_630_182_000_000_001,
    );
    v6.proto = Some(58);
    v6.src = Some(ip("fd00:212:1::2"));
    v6.dst = Some(ip("fd00:212:2::2"));
    v6.outer = Some(Outer {
        src: ip("fd00:211:1::2"),
        dst: ip("fd00:211:2::2"),
        encap: Encap::Ipip,
        vni: None,
    });
    v6.icmp = Some(IcmpTooBig {
        from: None,
        to: ip("fd00:212:1::2"),
        icmp_type: 2,
        code: 0,
        mtu: None,
    });
    v6.service = Some(ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
        port: None,
        port_name: Some("http".into()),
    });
    v6.dst_node = Some(node("worker-208"));
    all.push(v6);
    // A name with every kind of character serde escapes.
    let mut odd = Record::new(Kind::Drop, "tp_btf/kfree_skb", -1);
    odd.ifname = Some("tab\there\nnul\u{0}bell\u{7}ü🚀".into());
    odd.matched = vec!["oversize"];
    all.push(odd);
    all
}

fn serde_lines(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).unwrap());
        out.push('\n');
    }
    out
}

fn fast_lines(records: &[Record]) -> String {
    let mut out = Vec::new();
    for r in records {
        crate::sink::json::write_record(&mut out, r);
        out.push(b'\n');
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_event_log_is_byte_for_byte_the_golden_log() {
    let by_serde = serde_lines(&records());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &by_serde).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    assert_eq!(by_serde, golden, "serde");
    assert_eq!(fast_lines(&records()), golden, "the fast writer");
}
