//! What the fuzzers of the event decoder share: cargo-fuzz's `event_decode` target (`fuzz/`)
//! and the seeded in-test fuzz of `tracer/tests/robustness.rs`, so that both feed the decoder
//! the same way and check its output the same way.

use tracer_common::Event;

use crate::{
    hooks::{self, Names},
    kernel::{btf, kallsyms::Kallsyms},
};

/// Names to decode against without a running tracer: the running kernel's drop reasons (from
/// its BTF), two kallsyms symbols and a fixed clock offset.
pub fn names() -> anyhow::Result<Names> {
    let vmlinux = btf::load_vmlinux()?;
    Ok(Names {
        reasons: btf::DropReasons::from_btf(&vmlinux)?,
        kallsyms: Kallsyms::parse(
            "ffffffff81e57040 t __dev_forward_skb2\nffffffff81ff7890 T ip_forward\n",
        ),
        devices: Default::default(),
        clock_offset_ns: 1_700_000_000_000_000_000,
        inventory: None,
        conntrack: None,
        interned: Default::default(),
        keep_packets: true,
    })
}

/// Any bytes as a ring-buffer record: the `Event` they spell, zero-padded when short.
pub fn event(bytes: &[u8]) -> Event {
    let mut raw = [0u8; std::mem::size_of::<Event>()];
    let n = bytes.len().min(raw.len());
    raw[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: Event is plain integers and byte arrays: every bit pattern is a value.
    unsafe { std::ptr::read_unaligned(raw.as_ptr() as *const Event) }
}

/// Decode `ev` as the daemon does and write it as the event log does; the line, or `None` for
/// a kind or hook this build does not know. Panics (what the fuzzers look for) unless the line
/// is one line of JSON saying what serde would.
pub fn decode_line(ev: &Event, names: &Names) -> Option<String> {
    let rec = hooks::decode(ev, names)?;
    let mut line = Vec::new();
    crate::sink::json::write_record(&mut line, &rec);
    let line = String::from_utf8(line).expect("the event log line is UTF-8");
    assert!(!line.contains('\n'), "a newline inside {line}");
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(
        parsed,
        serde_json::to_value(&rec).expect("a record serializes"),
        "the event log line says what serde says"
    );
    Some(line)
}
