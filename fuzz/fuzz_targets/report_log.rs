//! The event-log reader behind `tracer report`, and the verdicts it computes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut analyzer = tracer::verdict::Analyzer::new();
    if tracer::report::analyze(data, &mut analyzer).is_ok() {
        let _ = analyzer.verdicts(1_800_000_000_000_000_000, Some(10.0));
    }
});
