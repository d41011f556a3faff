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

/// `,"name":` followed by the value, or `,"name":null` in one copy: the key literals carry
/// their separator, so a field costs one or two appends (issue 18: the writer was ~20% of the
/// pipeline, most of it small appends and a byte-by-byte escape scan).
macro_rules! field {
    ($out:expr, $name:literal, $value:expr, $write:expr) => {
        match $value {
            Some(v) => {
                $out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes());
                $write($out, v)
            }
            None => $out.extend_from_slice(concat!(",\"", $name, "\":null").as_bytes()),
        }
    };
}

/// Append `rec` as one JSON object (no newline) to `out`.
pub fn write_record(out: &mut Vec<u8>, rec: &Record) {
    out.extend_from_slice(b"{\"ts\":\"");
    crate::time::push_rfc3339(out, rec.ts_unix_ns);
    out.push(b'"');
    out.extend_from_slice(b",\"kind\":");
    plain(out, rec.kind.as_str());
    out.extend_from_slice(b",\"hook\":");
    string(out, &rec.hook);
    field!(out, "ifname", rec.device.ifname.as_deref(), string);
    field!(out, "ifindex", rec.device.ifindex, number32);
    field!(out, "netns", rec.device.netns, number32);
    field!(out, "len", rec.size.len, number32);
    field!(out, "l3_len", rec.size.l3_len, number32);
    field!(out, "mtu", rec.size.mtu, number32);
    field!(
        out,
        "mtu_source",
        rec.size.mtu_source.map(MtuSource::as_str),
        plain
    );
    field!(out, "gso_size", rec.size.gso_size, number32);
    field!(out, "gso_segs", rec.size.gso_segs, number32);
    field!(out, "reason", rec.drop.reason.as_deref(), string);
    field!(out, "reason_code", rec.drop.reason_code, number32);
    field!(out, "location", rec.drop.location.as_deref(), string);
    out.extend_from_slice(b",\"matched\":[");
    for (i, m) in rec.drop.matched.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        plain(out, m.as_str());
    }
    out.push(b']');
    field!(out, "out_ifname", rec.route.out_ifname.as_deref(), string);
    field!(out, "out_ifindex", rec.route.out_ifindex, number32);
    field!(out, "out_mtu", rec.route.out_mtu, number32);
    field!(out, "peer_ifname", rec.route.peer_ifname.as_deref(), string);
    field!(out, "peer_ifindex", rec.route.peer_ifindex, number32);
    field!(out, "peer_mtu", rec.route.peer_mtu, number32);
    field!(out, "proto", rec.flow.proto.map(u32::from), number32);
    field!(out, "src", rec.flow.src, address);
    field!(out, "sport", rec.flow.sport.map(u32::from), number32);
    field!(out, "dst", rec.flow.dst, address);
    field!(out, "dport", rec.flow.dport.map(u32::from), number32);
    field!(out, "outer", rec.flow.outer.as_ref(), outer);
    field!(out, "icmp", rec.icmp.as_ref(), icmp);
    field!(out, "tcp_state", rec.tcp_state.as_deref(), string);
    field!(out, "skb", rec.skb, hex);
    field!(out, "lost", rec.lost, number);
    field!(out, "src_pod", rec.names.src_pod.as_ref(), object);
    field!(out, "dst_pod", rec.names.dst_pod.as_ref(), object);
    field!(out, "service", rec.names.service.as_ref(), service);
    field!(out, "src_node", rec.names.src_node.as_ref(), object);
    field!(out, "dst_node", rec.names.dst_node.as_ref(), object);
    field!(out, "node", rec.node.as_deref(), string);
    field!(out, "tcp_seq", rec.tcp_seq, number32);
    field!(out, "count", rec.count, number);
    out.push(b'}');
}

/// A pod or node: its text is made once per name and copied whole from then on.
fn object(out: &mut Vec<u8>, o: &ObjectRef) {
    out.extend_from_slice(o.json(object_text));
}

fn object_text(out: &mut Vec<u8>, o: &ObjectRef) {
    match o.namespace.as_deref() {
        Some(ns) => {
            out.extend_from_slice(b"{\"namespace\":");
            string(out, ns);
        }
        None => out.extend_from_slice(b"{\"namespace\":null"),
    }
    out.extend_from_slice(b",\"name\":");
    string(out, &o.name);
    // Skipped when absent, as serde does (`skip_serializing_if`).
    if let Some(w) = o.workload.as_deref() {
        out.extend_from_slice(b",\"workload\":");
        string(out, w);
    }
    out.push(b'}');
}

/// A service: its text is made once per service port and copied whole from then on.
fn service(out: &mut Vec<u8>, s: &ServiceRef) {
    out.extend_from_slice(s.json(service_text));
}

fn service_text(out: &mut Vec<u8>, s: &ServiceRef) {
    out.extend_from_slice(b"{\"namespace\":");
    string(out, &s.namespace);
    out.extend_from_slice(b",\"name\":");
    string(out, &s.name);
    field!(out, "port", s.port.map(u32::from), number32);
    field!(out, "port_name", s.port_name.as_deref(), string);
    out.push(b'}');
}

fn outer(out: &mut Vec<u8>, o: &Outer) {
    out.extend_from_slice(b"{\"src\":");
    address(out, o.src);
    out.extend_from_slice(b",\"dst\":");
    address(out, o.dst);
    out.extend_from_slice(match o.encap {
        Encap::Ipip => b",\"encap\":\"ipip\"",
        Encap::Vxlan => b",\"encap\":\"vxlan\"",
    });
    // Skipped when absent, as serde does (`skip_serializing_if`).
    if let Some(vni) = o.vni {
        out.extend_from_slice(b",\"vni\":");
        number32(out, vni);
    }
    out.push(b'}');
}

fn icmp(out: &mut Vec<u8>, i: &IcmpTooBig) {
    match i.from {
        Some(from) => {
            out.extend_from_slice(b"{\"from\":");
            address(out, from);
        }
        None => out.extend_from_slice(b"{\"from\":null"),
    }
    out.extend_from_slice(b",\"to\":");
    address(out, i.to);
    out.extend_from_slice(b",\"type\":");
    number32(out, u32::from(i.icmp_type));
    out.extend_from_slice(b",\"code\":");
    number32(out, u32::from(i.code));
    field!(out, "mtu", i.mtu, number32);
    out.push(b'}');
}

/// A kernel address as its `{:#x}` text in quotes: records keep the number (issue 18).
fn hex(out: &mut Vec<u8>, v: u64) {
    let (text, len) = crate::hex::text(v);
    out.push(b'"');
    out.extend_from_slice(&text[..len]);
    out.push(b'"');
}

/// "00" to "99": two digits per step.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Decimal, as serde_json writes integers.
fn number(out: &mut Vec<u8>, n: u64) {
    match u32::try_from(n) {
        Ok(n) => number32(out, n),
        Err(_) => {
            let mut digits = [0u8; 20];
            let i = digits_of(&mut digits, n);
            out.extend_from_slice(&digits[i..]);
        }
    }
}

/// [`number`] of the common width (sizes, ports, indexes): fewer and cheaper divisions.
fn number32(out: &mut Vec<u8>, n: u32) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let width = decimal_width(n);
    // Written from the left of a fixed buffer and appended whole, then cut to `width`: a
    // constant-length copy is a few moves, a variable-length one a call to memcpy.
    let mut digits = [0u8; 10];
    let mut i = width;
    let mut n = n;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[n as usize * 2..n as usize * 2 + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    append_prefix(out, &digits, width);
}

/// How many decimal digits `n` has.
fn decimal_width(n: u32) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1_000..=9_999 => 4,
        10_000..=99_999 => 5,
        100_000..=999_999 => 6,
        1_000_000..=9_999_999 => 7,
        10_000_000..=99_999_999 => 8,
        100_000_000..=999_999_999 => 9,
        _ => 10,
    }
}

/// The first `len` bytes of `buf`, appended as a copy of the whole buffer then truncated.
fn append_prefix<const N: usize>(out: &mut Vec<u8>, buf: &[u8; N], len: usize) {
    let end = out.len() + len;
    out.extend_from_slice(buf);
    out.truncate(end);
}

/// The decimal digits of `n` at the end of `digits`; returns where they start.
fn digits_of(digits: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// An address as its text form in quotes (serde writes `IpAddr` through `Display`). IPv4, the
/// common case, without the formatting machinery.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            // At most `"255.255.255.255"`: assembled on the stack, appended once.
            let mut text = [0u8; 17];
            text[0] = b'"';
            let mut at = 1;
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    text[at] = b'.';
                    at += 1;
                }
                let o = usize::from(octet);
                if o >= 100 {
                    text[at] = b'0' + (o / 100) as u8;
                    text[at + 1..at + 3].copy_from_slice(&PAIRS[o % 100 * 2..o % 100 * 2 + 2]);
                    at += 3;
                } else if o >= 10 {
                    text[at..at + 2].copy_from_slice(&PAIRS[o * 2..o * 2 + 2]);
                    at += 2;
                } else {
                    text[at] = b'0' + o as u8;
                    at += 1;
                }
            }
            text[at] = b'"';
            append_prefix(out, &text, at + 1);
        }
        IpAddr::V6(a) => {
            use std::io::Write as _;
            out.push(b'"');
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{a}");
            out.push(b'"');
        }
    }
}

/// Whether any of the 8 bytes of `w` is one JSON escapes: below 0x20, `"` or `\`. Exact for
/// "any" (the usual SWAR zero-byte tests: a borrow reaches a byte's top bit only from a byte
/// that matched or from the byte below it, which then matched).
fn any_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'"')));
    let backslash =
        (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGH != 0
}

/// Where the first byte that needs an escape is, if any: 8 bytes at a time.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if any_escape(w) {
            return chunk.iter().position(|&b| escapes(b)).map(|i| at + i);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return None;
    }
    // The tail as the last 8 bytes, overlapping the chunks already checked: one word test
    // instead of up to 7 byte tests (most names end in a partial chunk).
    if bytes.len() >= 8 {
        let last = bytes.len() - 8;
        let w = u64::from_le_bytes(bytes[last..].try_into().expect("8 bytes"));
        if !any_escape(w) {
            return None;
        }
    }
    tail.iter().position(|&b| escapes(b)).map(|i| at + i)
}

fn escapes(b: u8) -> bool {
    ESCAPES[usize::from(b)]
}

/// The bytes JSON escapes: below 0x20, `"` and `\`. One load per byte instead of three tests.
const ESCAPES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// A string known to need no escape (the enums' names: lowercase ASCII), in quotes.
fn plain(out: &mut Vec<u8>, s: &'static str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, the short forms `\b \f \n \r \t`, and
/// `\u00XX` (lowercase hex) for the other control characters; everything else as is. Names and
/// kernel strings rarely need one: they are scanned 8 bytes at a time and copied whole.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let Some(first) = first_escape(bytes) else {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    };
    escaped(out, bytes, first);
}

/// [`string`] of one that needs escapes from `first` on. Apart, so that the common case
/// (nothing to escape) is a small function without this one's register saves.
#[cold]
#[inline(never)]
fn escaped(out: &mut Vec<u8>, bytes: &[u8], first: usize) {
    out.push(b'"');
    out.extend_from_slice(&bytes[..first]);
    let mut start = first;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
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
        let obj = |ns: Option<&str>| ObjectRef::new(ns.map(Arc::from), name.into());
        let mut r = Record::new(Kind::Drop, "tp_btf/kfree_skb", 1_795_630_181_123_456_789);
        r.device.ifname = Some(name.into());
        r.device.ifindex = Some(u32::MAX);
        r.device.netns = Some(4026532177);
        r.size.len = Some(1550);
        r.size.l3_len = Some(0);
        r.size.mtu = Some(1450);
        r.size.mtu_source = Some(MtuSource::Peer);
        r.size.gso_size = Some(1448);
        r.size.gso_segs = Some(45);
        r.drop.reason = Some(name.into());
        r.drop.reason_code = Some(2);
        r.drop.location = Some(format!("{name}+0x87").into());
        r.drop.matched = [Matched::Location, Matched::Oversize].into();
        r.route.out_ifname = Some(name.into());
        r.route.out_ifindex = Some(3);
        r.route.out_mtu = Some(1500);
        r.route.peer_ifname = Some(name.into());
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
        r.skb = Some(0xffff_8881_0000_0000u64 + n);
        r.lost = Some(u64::MAX - n);
        r.names.src_pod = Some(Arc::new(obj(Some(name)).with_workload(Some(name.into()))));
        // Every other record's destination pod has no known workload (the field is skipped).
        r.names.dst_pod = Some(Arc::new(
            obj(None).with_workload(
                n.is_multiple_of(2)
                    .then(|| Arc::from(format!("deployment/{name}"))),
            ),
        ));
        r.names.service = Some(Arc::new(ServiceRef::new(
            name.into(),
            name.into(),
            n.is_multiple_of(2).then_some(443),
            (!n.is_multiple_of(2)).then(|| Arc::from(name)),
        )));
        r.names.src_node = Some(Arc::new(obj(None)));
        r.names.dst_node = Some(Arc::new(obj(Some(name))));
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
    fn a_names_kept_text_serves_every_record_and_a_changed_clone_gets_its_own() {
        // One pod shared by records that differ elsewhere: its text is made by the first
        // write and copied by the next ones, which must still read as serde writes them.
        let pod = Arc::new(
            ObjectRef::new(Some("shop".into()), "order-api".into())
                .with_workload(Some("deployment/order-api".into())),
        );
        let mut a = full("a", false, 0);
        let mut b = full("b\"quoted\"", true, 1);
        a.names.src_pod = Some(pod.clone());
        b.names.dst_node = Some(pod.clone());
        for rec in [&a, &b, &a] {
            assert_eq!(fast_line(rec), serde_line(rec));
        }
        // A clone changed after the original was written must not carry the original's text.
        let moved = Arc::new(
            (*pod)
                .clone()
                .with_workload(Some("statefulset/order-api".into())),
        );
        a.names.src_pod = Some(moved);
        let line = fast_line(&a);
        assert_eq!(line, serde_line(&a));
        assert!(line.contains("statefulset/order-api"), "{line}");
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
                4 => rec.drop.matched = Default::default(),
                5 => (rec.flow.src, rec.flow.dst, rec.flow.sport) = (None, None, None),
                6 => rec.drop.matched = [Matched::IcmpTooBig].into(),
                _ => (rec.device.ifname, rec.drop.reason, rec.skb) = (None, None, None),
            }
            let fast = fast_line(&rec);
            assert_eq!(fast, serde_line(&rec), "variant {n}");
            let back: serde_json::Value = serde_json::from_str(&fast).unwrap();
            assert_eq!(back, serde_json::to_value(&rec).unwrap());
        }
    }

    #[test]
    fn the_word_scan_finds_every_byte_that_needs_an_escape() {
        // Every byte value at every place of a word and of the tail, among neighbours that
        // need none (ASCII, and UTF-8 bytes with the top bit set, which must not match).
        // Every length up to 19: short strings, whole words, and tails read as an overlapping
        // last word.
        for filler in [b'a', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
            for b in 0..=255u8 {
                for len in 1..=19 {
                    for at in 0..len {
                        let mut bytes = vec![filler; len];
                        bytes[at] = b;
                        let want = bytes
                            .iter()
                            .position(|&x| x < 0x20 || x == b'"' || x == b'\\');
                        assert_eq!(first_escape(&bytes), want, "byte {b:#x} at {at} of {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn addresses_are_written_as_serde_writes_them() {
        for o in 0..=255u8 {
            for ip in [
                [o, 0, 0, 1],
                [10, o, 7, 255],
                [1, 99, o, 100],
                [255, 10, 0, o],
            ] {
                let ip = IpAddr::from(ip);
                let mut out = Vec::new();
                address(&mut out, ip);
                assert_eq!(out, serde_json::to_vec(&ip).unwrap(), "{ip}");
            }
        }
    }

    #[test]
    fn numbers_are_written_as_serde_writes_them() {
        let mut n = 1u64;
        let mut samples = vec![0, 9, 10, 99, 100, 101, u64::from(u32::MAX), u64::MAX];
        while n < u64::MAX / 7 {
            samples.extend([n - 1, n, n + 1]);
            n *= 7;
        }
        // Each decimal width's first and last number.
        let mut p = 10u64;
        while p <= 10_000_000_000 {
            samples.extend([p - 1, p]);
            p *= 10;
        }
        for n in samples {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap(), "{n}");
        }
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_does() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut rec = Record::new(Kind::Drop, "x", 0);
        rec.drop.reason = Some(all.into());
        assert_eq!(fast_line(&rec), serde_line(&rec));
    }

    /// A record with every field written out (no `..`), every `Option` `Some` and every `Vec`
    /// non-empty, nested structs included: a field added to `Record` (or to what it nests)
    /// does not compile here until it is set, and then the test below checks its key.
    fn every_field() -> Record {
        let name: Arc<str> = Arc::from("n");
        let obj = || ObjectRef::new(Some(name.clone()), name.clone());
        let ip = |last: u8| IpAddr::from([10, 244, 0, last]);
        Record {
            ts_unix_ns: 1_795_658_400_000_000_001,
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
                matched: [Matched::Reason].into(),
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
            skb: Some(0xffff_8881_0000_0000),
            lost: Some(1),
            names: Attribution {
                src_pod: Some(Arc::new(obj())),
                dst_pod: Some(Arc::new(obj())),
                service: Some(Arc::new(ServiceRef::new(
                    name.clone(),
                    name.clone(),
                    Some(443),
                    Some(name.clone()),
                ))),
                src_node: Some(Arc::new(obj())),
                dst_node: Some(Arc::new(obj())),
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
