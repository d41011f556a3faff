//! The event log schema pinned byte for byte: records of every kind, with every field set and
//! with none set, written by serde and by the fast writer, against `testdata/golden.jsonl`.
//! Users' scripts read these lines, so a change here is a schema change; run with
//! `UPDATE_GOLDEN=1` only when one is meant (adding a field at the end), and say so.

use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{
    Encap, IcmpTooBig, Kind, Matched, MtuSource, ObjectRef, Outer, Record, ServiceRef,
};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/event/testdata/golden.jsonl"
);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node(name: &str) -> Arc<ObjectRef> {
    Arc::new(ObjectRef::new(None, name.into()))
}

fn pod(ns: &str, name: &str) -> Arc<ObjectRef> {
    Arc::new(ObjectRef::new(Some(Arc::from(ns)), name.into()))
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
    r.device.ifname = Some("eth0".into());
    r.device.ifindex = Some(2);
    r.device.netns = Some(4026532177);
    r.size.len = Some(1564);
    r.size.l3_len = Some(1550);
    r.size.mtu = Some(1450);
    r.size.mtu_source = Some(
        [
            MtuSource::Peer,
            MtuSource::Device,
            MtuSource::Route,
            MtuSource::Icmp,
            MtuSource::Pmtu,
        ][n as usize % 5],
    );
    r.size.gso_size = Some(1398);
    r.size.gso_segs = Some(3);
    r.drop.reason = Some("PKT_TOO_BIG".into());
    r.drop.reason_code = Some(93);
    r.drop.location = Some("__dev_forward_skb2+0x87".into());
    r.drop.matched = [
        Matched::Reason,
        Matched::Location,
        Matched::Oversize,
        Matched::IcmpTooBig,
    ]
    .into();
    r.route.out_ifname = Some("vxlan.calico".into());
    r.route.out_ifindex = Some(7);
    r.route.out_mtu = Some(1500);
    r.route.peer_ifname = Some("cali8d1f2a\"x\\y".into());
    r.route.peer_ifindex = Some(9);
    r.route.peer_mtu = Some(1450);
    r.flow.proto = Some(6);
    r.flow.src = Some(ip("10.212.1.2"));
    r.flow.sport = Some(48556);
    r.flow.dst = Some(ip("10.212.2.2"));
    r.flow.dport = Some(6379);
    r.flow.outer = Some(Outer {
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
    r.tcp_seq = Some(3_217_031_337);
    r.count = Some(412);
    r.skb = Some(0xffff_8881_7ad5_f4e0);
    r.lost = Some(17);
    r.names.src_pod = Some(pod("shop", "order-api-7d9f8"));
    r.names.dst_pod = Some(pod("cache", "storage-0"));
    r.names.service = Some(Arc::new(ServiceRef::new(
        "cache".into(),
        "storage".into(),
        Some(6379),
        Some("redis".into()),
    )));
    r.names.src_node = Some(node("worker-116"));
    r.names.dst_node = Some(node("worker-208"));
    r.node = Some("worker-116".into());
    r
}

/// Every record the golden log holds, in its order.
pub(super) fn records() -> Vec<Record> {
    let mut all = Vec::new();
    for (n, &kind) in Kind::ALL.iter().enumerate() {
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
    v6.flow.proto = Some(58);
    v6.flow.src = Some(ip("fd00:212:1::2"));
    v6.flow.dst = Some(ip("fd00:212:2::2"));
    v6.flow.outer = Some(Outer {
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
    v6.names.service = Some(Arc::new(ServiceRef::new(
        "default".into(),
        "web".into(),
        None,
        Some("http".into()),
    )));
    v6.names.dst_node = Some(node("worker-208"));
    all.push(v6);
    // A name with every kind of character serde escapes.
    let mut odd = Record::new(Kind::Drop, "tp_btf/kfree_skb", -1);
    odd.device.ifname = Some("tab\there\nnul\u{0}bell\u{7}ü🚀".into());
    odd.drop.matched = [Matched::Oversize].into();
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

#[test]
fn the_golden_log_reads_back_into_the_same_records() {
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    let mut again = String::new();
    for (line, want) in golden.lines().zip(records()) {
        let rec = Record::from_line(line.as_bytes()).unwrap();
        assert_eq!(rec.ts_unix_ns, want.ts_unix_ns, "{line}");
        again.push_str(&serde_json::to_string(&rec).unwrap());
        again.push('\n');
    }
    assert_eq!(again, golden);
}

#[test]
fn kinds_are_named_as_serde_names_them() {
    for &kind in Kind::ALL {
        assert_eq!(
            serde_json::to_string(&kind).unwrap(),
            format!("\"{}\"", kind.as_str())
        );
    }
    for m in [
        Matched::Reason,
        Matched::Location,
        Matched::Oversize,
        Matched::IcmpTooBig,
    ] {
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            format!("\"{}\"", m.as_str())
        );
    }
    for s in [
        MtuSource::Device,
        MtuSource::Route,
        MtuSource::Icmp,
        MtuSource::Peer,
        MtuSource::Pmtu,
    ] {
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
}

#[test]
fn lines_of_other_versions_read_and_lines_that_are_no_events_say_why() {
    use crate::event::LineError;
    // An older line: fields missing (gso_*, out_*, peer_*, icmp, names...), one unknown.
    let old = br#"{"ts":"2026-11-25T23:22:04.415074053Z","kind":"drop","hook":"tp_btf/kfree_skb","ifname":"eth0","mtu":1450,"mtu_source":"device","matched":["reason"],"src":"10.77.0.1","outer":{"src":"192.0.2.1","dst":"192.0.2.2","encap":"vxlan","vni":42},"from_the_future":[1,2]}"#;
    let rec = Record::from_line(old).unwrap();
    assert_eq!(rec.kind, Kind::Drop);
    assert_eq!(rec.ts_unix_ns, 1_795_648_924_415_074_053);
    assert_eq!(rec.size.mtu_source, Some(MtuSource::Device));
    assert_eq!(rec.drop.matched, [Matched::Reason].into());
    assert_eq!(rec.flow.outer.unwrap().vni, Some(42));
    assert_eq!((rec.size.gso_size, rec.route.out_mtu), (None, None));
    let no_hook = Record::from_line(br#"{"ts":"2026-11-25T23:22:04Z","kind":"lost"}"#).unwrap();
    assert_eq!((no_hook.hook.as_ref(), no_hook.lost), ("", None));
    for (line, want) in [
        (
            &br#"{"ts":"x","kind":"verdict","severity":"problem"}"#[..],
            LineError::Verdict,
        ),
        (
            br#"{"ts":"2026-11-25T23:22:04Z","kind":"teleport"}"#,
            LineError::UnknownKind("teleport".into()),
        ),
        (
            br#"{"ts":"yesterday","kind":"drop"}"#,
            LineError::BadTimestamp("yesterday".into()),
        ),
    ] {
        assert_eq!(Record::from_line(line).unwrap_err(), want);
    }
    for line in [
        &b"not json"[..],
        br#"{"kind":"drop"}"#,
        br#"{"ts":"2026-11-25T23:22:04Z","kind":"drop","mtu":"big"}"#,
        br#"{"ts":"2026-11-25T23:22:04Z","kind":"drop","matched":["size"]}"#,
    ] {
        let err = Record::from_line(line).unwrap_err();
        assert!(matches!(err, LineError::NotAnEvent(_)), "{err:?}");
    }
}
