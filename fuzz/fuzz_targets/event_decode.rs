//! Raw ring-buffer records: any bytes as an `Event` (kind, hook, cap_len and all), decoded and
//! written as the event log writes them (checks shared with tests/robustness.rs).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tracer::{fuzzing, hooks::Names};

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| fuzzing::names().expect("/sys/kernel/btf/vmlinux"))
}

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decode_line(&fuzzing::event(data), names());
});
