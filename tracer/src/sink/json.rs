//! The event log line of a [`Record`], written directly into a byte buffer.
//!
//! Byte for byte what `serde_json::to_writer(rec)` writes (same field order, `null` for absent
//! values, the same string escapes), without serde's per-field machinery: at a million events a
//! second the generic serializer and its string escaping were a third of the pipeline (issue 7).
//! It still pays with the sectioned model (issue 23, pipeline bench side by side): serde's
//! flattened writer cost ~1.17 µs an event where this one costs ~0.83, 8% of the whole pipeline.
//!
//! [`Record`] is the one definition; this writer is checked against it, so it cannot drift: the
//! golden log (`event/golden.rs`) compares both writers byte for byte; `every_field` below does
//! not compile until a field added to `Record` or a section is set, and then
//! `the_fast_writer_emits_every_key_serde_does` fails until it is written here.

use std::net::IpAddr;

use crate::event::{Encap, IcmpTooBig, MtuSource, ObjectRef, Outer, Record, ServiceRef};

/// Append `rec` as one JSON object (no newline) to `out`.
pub fn write_record(out: &mut Vec<u8>, rec: &Record) {
    out.extend_from_slice(b"{\"ts\":");
    string(out, &rec.ts);
    out.extend_from_slice(b",\"kind\":");
    string(out, rec.kind.as_str());
    out.extend_from_slice(b",\"hook\":");
    string(out, &rec.hook);
    key(out, "ifname");
    opt_str(out, rec.device.ifname.as_deref());
    key(out, "ifindex");
    opt_num(out, rec.device.ifindex.map(u64::from));
    key(out, "netns");
    opt_num(out, rec.device.netns.map(u64::from));
    key(out, "len");
    opt_num(out, rec.size.len.map(u64::from));
    key(out, "l3_len");
    opt_num(out, rec.size.l3_len.map(u64::from));
    key(out, "mtu");
    opt_num(out, rec.size.mtu.map(u64::from));
    key(out, "mtu_source");
    opt_str(out, rec.size.mtu_source.map(MtuSource::as_str));
    key(out, "gso_size");
    opt_num(out, rec.size.gso_size.map(u64::from));
    key(out, "gso_segs");
    opt_num(out, rec.size.gso_segs.map(u64::from));
    key(out, "reason");
    opt_str(out, rec.drop.reason.as_deref());
    key(out, "reason_code");
    opt_num(out, rec.drop.reason_code.map(u64::from));
    key(out, "location");
    opt_str(out, rec.drop.location.as_deref());
    key(out, "matched");
    out.push(b'[');
    for (i, m) in rec.drop.matched.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, m.as_str());
    }
    out.push(b']');
    key(out, "out_ifname");
    opt_str(out, rec.route.out_ifname.as_deref());
    key(out, "out_ifindex");
    opt_num(out, rec.route.out_ifindex.map(u64::from));
    key(out, "out_mtu");
    opt_num(out, rec.route.out_mtu.map(u64::from));
    key(out, "peer_ifname");
    opt_str(out, rec.route.peer_ifname.as_deref());
    key(out, "peer_ifindex");
    opt_num(out, rec.route.peer_ifindex.map(u64::from));
    key(out, "peer_mtu");
    opt_num(out, rec.route.peer_mtu.map(u64::from));
    key(out, "proto");
    opt_num(out, rec.flow.proto.map(u64::from));
    key(out, "src");
    opt_ip(out, rec.flow.src);
    key(out, "sport");
    opt_num(out, rec.flow.sport.map(u64::from));
    key(out, "dst");
    opt_ip(out, rec.flow.dst);
    key(out, "dport");
    opt_num(out, rec.flow.dport.map(u64::from));
    key(out, "outer");
    match &rec.flow.outer {
        Some(o) => outer(out, o),
        None => null(out),
    }
    key(out, "icmp");
    match &rec.icmp {
        Some(i) => icmp(out, i),
        None => null(out),
    }
    key(out, "tcp_state");
    opt_str(out, rec.tcp_state.as_deref());
    key(out, "skb");
    opt_str(out, rec.skb.as_deref());
    key(out, "lost");
    opt_num(out, rec.lost);
    key(out, "src_pod");
    opt_object(out, rec.names.src_pod.as_ref());
    key(out, "dst_pod");
    opt_object(out, rec.names.dst_pod.as_ref());
    key(out, "service");
    match &rec.names.service {
        Some(s) => service(out, s),
        None => null(out),
    }
    key(out, "src_node");
    opt_object(out, rec.names.src_node.as_ref());
    key(out, "dst_node");
    opt_object(out, rec.names.dst_node.as_ref());
    key(out, "node");
    opt_str(out, rec.node.as_deref());
    key(out, "tcp_seq");
    opt_num(out, rec.tcp_seq.map(u64::from));
    key(out, "count");
    opt_num(out, rec.count);
    out.push(b'}');
}

/// `,"name":` (every field after the first).
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => null(out),
    }
}

fn opt_num(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => number(out, n),
        None => null(out),
    }
}

fn opt_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        Some(ip) => address(out, ip),
        None => null(out),
    }
}

fn opt_object(out: &mut Vec<u8>, o: Option<&ObjectRef>) {
    let Some(o) = o else { return null(out) };
    out.extend_from_slice(b"{\"namespace\":");
    opt_str(out, o.namespace.as_deref());
    key(out, "name");
    string(out, &o.name);
    out.push(b'}');
}

fn service(out: &mut Vec<u8>, s: &ServiceRef) {
    out.extend_from_slice(b"{\"namespace\":");
    string(out, &s.namespace);
    key(out, "name");
    string(out, &s.name);
    key(out, "port");
    opt_num(out, s.port.map(u64::from));
    key(out, "port_name");
    opt_str(out, s.port_name.as_deref());
    out.push(b'}');
}

fn outer(out: &mut Vec<u8>, o: &Outer) {
    out.extend_from_slice(b"{\"src\":");
    address(out, o.src);
    key(out, "dst");
    address(out, o.dst);
    key(out, "encap");
    string(
        out,
        match o.encap {
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
        },
    );
    // The one field serde skips when absent (`skip_serializing_if`).
    if let Some(vni) = o.vni {
        key(out, "vni");
        number(out, u64::from(vni));
    }
    out.push(b'}');
}

fn icmp(out: &mut Vec<u8>, i: &IcmpTooBig) {
    out.extend_from_slice(b"{\"from\":");
    opt_ip(out, i.from);
    key(out, "to");
    address(out, i.to);
    key(out, "type");
    number(out, u64::from(i.icmp_type));
    key(out, "code");
    number(out, u64::from(i.code));
    key(out, "mtu");
    opt_num(out, i.mtu.map(u64::from));
    out.push(b'}');
}

/// Decimal, as serde_json writes integers.
fn number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// An address as its text form in quotes (serde writes `IpAddr` through `Display`). IPv4, the
/// common case, without the formatting machinery.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, u64::from(octet));
            }
        }
        IpAddr::V6(a) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{a}");
        }
    }
    out.push(b'"');
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, the short forms `\b \f \n \r \t`, and
/// `\u00XX` (lowercase hex) for the other control characters; everything else as is.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{
        Attribution, Device, DropCause, FlowFields, Kind, Matched, Record, Route, Size,
    };

    /// Names that need escaping, and some that do not.
    const AWKWARD: &[&str] = &[
        "plain",
        "",
        "quote\"inside",
        "back\\slash",
        "line\nbreak\r\ttab",
        "bell\u{7}nul\u{0}esc\u{1b}unit\u{1f}",
        "\u{8}\u{c}",
        "del\u{7f}",
        "ünïcødé ✔ 🚀",
        "</script>",
    ];

    fn serde_line(rec: &Record) -> String {
        serde_json::to_string(rec).unwrap()
    }

    fn fast_line(rec: &Record) -> String {
        let mut out = Vec::new();
        write_record(&mut out, rec);
        String::from_utf8(out).unwrap()
    }

    fn full(name: &str, v6: bool, n: u64) -> Record {
        let ip = |last: u8| -> IpAddr {
            if v6 {
                format!("fd00:244::{last:x}").parse().unwrap()
            } else {
                format!("10.244.{}.{last}", n % 256).parse().unwrap()
            }
        };
        let obj = |ns: Option<&str>| ObjectRef {
            namespace: ns.map(Arc::from),
            name: name.into(),
        };
        let mut r = Record::new(Kind::Drop, "tp_btf/kfree_skb", 1_795_630_181_123_456_789);
        r.device.ifname = Some(name.to_string());
        r.device.ifindex = Some(u32::MAX);
        r.device.netns = Some(4026532177);
        r.size.len = Some(1550);
        r.size.l3_len = Some(0);
        r.size.mtu = Some(1450);
        r.size.mtu_source = Some(MtuSource::Peer);
        r.size.gso_size = Some(1448);
        r.size.gso_segs = Some(45);
        r.drop.reason = Some(name.to_string());
        r.drop.reason_code = Some(2);
        r.drop.location = Some(format!("{name}+0x87"));
        r.drop.matched = vec![Matched::Location, Matched::Oversize];
        r.route.out_ifname = Some(name.to_string());
        r.route.out_ifindex = Some(3);
        r.route.out_mtu = Some(1500);
        r.route.peer_ifname = Some(name.to_string());
        r.route.peer_ifindex = Some(9);
        r.route.peer_mtu = Some(1450);
        r.flow.proto = Some(255);
        r.flow.src = Some(ip(1));
        r.flow.sport = Some(0);
        r.flow.dst = Some(ip(255));
        r.flow.dport = Some(u16::MAX);
        r.flow.outer = Some(Outer {
            src: ip(10),
            dst: ip(11),
            encap: if n.is_multiple_of(2) {
                Encap::Vxlan
            } else {
                Encap::Ipip
            },
            vni: n.is_multiple_of(2).then_some(4096),
        });
        r.icmp = Some(IcmpTooBig {
            from: (!n.is_multiple_of(3)).then(|| ip(12)),
            to: ip(13),
            icmp_type: 3,
            code: 4,
            mtu: (n % 3 != 1).then_some(1430),
        });
        r.tcp_state = Some(name.to_string());
        r.skb = Some(format!("{:#x}", 0xffff_8881_0000_0000u64 + n));
        r.lost = Some(u64::MAX - n);
        r.names.src_pod = Some(obj(Some(name)));
        r.names.dst_pod = Some(obj(None));
        r.names.service = Some(ServiceRef {
            namespace: name.into(),
            name: name.into(),
            port: n.is_multiple_of(2).then_some(443),
            port_name: (!n.is_multiple_of(2)).then(|| Arc::from(name)),
        });
        r.names.src_node = Some(obj(None));
        r.names.dst_node = Some(obj(Some(name)));
        r
    }

    #[test]
    fn every_field_set_matches_serde_byte_for_byte() {
        for (n, name) in AWKWARD.iter().enumerate() {
            for v6 in [false, true] {
                let rec = full(name, v6, n as u64);
                assert_eq!(fast_line(&rec), serde_line(&rec), "name {name:?}");
            }
        }
    }

    #[test]
    fn nothing_set_matches_serde() {
        for &kind in Kind::ALL {
            let rec = Record::new(kind, "ringbuf", 0);
            assert_eq!(fast_line(&rec), serde_line(&rec));
        }
    }

    #[test]
    fn partly_set_records_match_serde_and_parse_back() {
        // Each field of a full record removed in turn: every null/absent path is covered.
        for n in 0..24u64 {
            let mut rec = full(AWKWARD[n as usize % AWKWARD.len()], n.is_multiple_of(4), n);
            match n % 8 {
                0 => rec.flow.outer = None,
                1 => rec.icmp = None,
                2 => rec.names.service = None,
                3 => (rec.names.src_pod, rec.names.dst_node) = (None, None),
                4 => rec.drop.matched.clear(),
                5 => (rec.flow.src, rec.flow.dst, rec.flow.sport) = (None, None, None),
                6 => rec.drop.matched = vec![Matched::IcmpTooBig],
                _ => (rec.device.ifname, rec.drop.reason, rec.skb) = (None, None, None),
            }
            let fast = fast_line(&rec);
            assert_eq!(fast, serde_line(&rec), "variant {n}");
            let back: serde_json::Value = serde_json::from_str(&fast).unwrap();
            assert_eq!(back, serde_json::to_value(&rec).unwrap());
        }
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_does() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut rec = Record::new(Kind::Drop, "x", 0);
        rec.drop.reason = Some(all);
        assert_eq!(fast_line(&rec), serde_line(&rec));
    }

    /// A record with every field written out (no `..`), every `Option` `Some` and every `Vec`
    /// non-empty, nested structs included: a field added to `Record` (or to what it nests)
    /// does not compile here until it is set, and then the test below checks its key.
    fn every_field() -> Record {
        let name: Arc<str> = Arc::from("n");
        let obj = || ObjectRef {
            namespace: Some(name.clone()),
            name: name.clone(),
        };
        let ip = |last: u8| IpAddr::from([10, 244, 0, last]);
        Record {
            ts: "2026-11-26T02:00:00.000000001Z".into(),
            ts_unix_ns: 1,
            kind: Kind::Drop,
            hook: "tp_btf/kfree_skb".into(),
            device: Device {
                ifname: Some("eth0".into()),
                ifindex: Some(2),
                netns: Some(4026531840),
            },
            size: Size {
                len: Some(1514),
                l3_len: Some(1500),
                mtu: Some(1450),
                mtu_source: Some(MtuSource::Device),
                gso_size: Some(1448),
                gso_segs: Some(2),
            },
            drop: DropCause {
                reason: Some("PKT_TOO_BIG".into()),
                reason_code: Some(2),
                location: Some("ip_forward+0x2c0".into()),
                matched: vec![Matched::Reason],
            },
            route: Route {
                out_ifname: Some("tunl0".into()),
                out_ifindex: Some(3),
                out_mtu: Some(1480),
                peer_ifname: Some("cali1".into()),
                peer_ifindex: Some(4),
                peer_mtu: Some(1440),
            },
            flow: FlowFields {
                proto: Some(6),
                src: Some(ip(1)),
                sport: Some(1),
                dst: Some(ip(2)),
                dport: Some(2),
                outer: Some(Outer {
                    src: ip(3),
                    dst: ip(4),
                    encap: Encap::Vxlan,
                    vni: Some(4096),
                }),
            },
            icmp: Some(IcmpTooBig {
                from: Some(ip(5)),
                to: ip(6),
                icmp_type: 3,
                code: 4,
                mtu: Some(1430),
            }),
            tcp_state: Some("TCP_ESTABLISHED".into()),
            tcp_seq: Some(4_000_000_000),
            count: Some(u64::MAX),
            skb: Some("0xffff888100000000".into()),
            lost: Some(1),
            names: Attribution {
                src_pod: Some(obj()),
                dst_pod: Some(obj()),
                service: Some(ServiceRef {
                    namespace: name.clone(),
                    name: name.clone(),
                    port: Some(443),
                    port_name: Some(name.clone()),
                }),
                src_node: Some(obj()),
                dst_node: Some(obj()),
            },
            node: Some(name.clone()),
            packet: Some(crate::event::Captured {
                ethertype: 0x0800,
                bytes: vec![0x45],
            }),
        }
    }

    /// Every key path in `v` (`outer.vni`, `matched[]`), and every path whose value is null or
    /// an empty array.
    fn key_paths(v: &serde_json::Value, at: &str, keys: &mut Vec<String>, empty: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    keys.push(path.clone());
                    key_paths(v, &path, keys, empty);
                }
            }
            serde_json::Value::Array(items) if items.is_empty() => empty.push(at.to_string()),
            serde_json::Value::Array(items) => {
                for item in items {
                    key_paths(item, &format!("{at}[]"), keys, empty);
                }
            }
            serde_json::Value::Null => empty.push(at.to_string()),
            _ => {}
        }
    }

    #[test]
    fn the_fast_writer_emits_every_key_serde_does() {
        let rec = every_field();
        let (mut by_serde, mut by_fast, mut unset) = (Vec::new(), Vec::new(), Vec::new());
        key_paths(
            &serde_json::to_value(&rec).unwrap(),
            "",
            &mut by_serde,
            &mut unset,
        );
        // A null hides the keys of what it stands for: every_field must set everything.
        assert!(unset.is_empty(), "every_field leaves {unset:?} unset");
        let fast: serde_json::Value = serde_json::from_str(&fast_line(&rec)).unwrap();
        key_paths(&fast, "", &mut by_fast, &mut Vec::new());
        let missing: Vec<&String> = by_serde.iter().filter(|k| !by_fast.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "write_record does not write {missing:?}"
        );
        let extra: Vec<&String> = by_fast.iter().filter(|k| !by_serde.contains(k)).collect();
        assert!(
            extra.is_empty(),
            "write_record writes {extra:?}, serde does not"
        );
    }
}
