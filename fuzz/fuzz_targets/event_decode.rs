//! Raw ring-buffer records: any bytes as an `Event` (kind, hook, cap_len and all), decoded and
//! serialized as the event log writes them.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tracer::{hooks::Names, kernel};
use tracer_common::Event;

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        let vmlinux = kernel::btf::load_vmlinux().expect("/sys/kernel/btf/vmlinux");
        Names {
            reasons: kernel::btf::DropReasons::from_btf(&vmlinux).expect("drop reasons"),
            kallsyms: kernel::kallsyms::Kallsyms::parse(
                "ffffffff81e57040 t __dev_forward_skb2\nffffffff81ff7890 T ip_forward\n",
            ),
            devices: Default::default(),
            clock_offset_ns: 1_700_000_000_000_000_000,
            inventory: None,
            conntrack: None,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut raw = vec![0u8; std::mem::size_of::<Event>()];
    let n = data.len().min(raw.len());
    raw[..n].copy_from_slice(&data[..n]);
    // SAFETY: Event is plain integers and byte arrays: every bit pattern is a value.
    let ev: Event = unsafe { std::ptr::read_unaligned(raw.as_ptr() as *const Event) };
    if let Some(rec) = tracer::hooks::decode(&ev, names()) {
        let line = serde_json::to_string(&rec).expect("serializes");
        assert!(!line.contains('\n'));
    }
});
