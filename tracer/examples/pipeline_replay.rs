//! The pipeline benchmark's full path (benches/pipeline.rs, decode_name_analyze_write) replayed
//! a fixed number of times without criterion, for instruction counts that the machine's load does
//! not move: `valgrind --tool=cachegrind target/release/examples/pipeline_replay [ROUNDS]`, then
//! Ir / (ROUNDS x 10,000) is the cost per event. Set-up (BTF, the 10,000-pod inventory) is counted
//! too: run it with ROUNDS 0 and subtract.
//!
//! `pipeline_replay ROUNDS --print` writes the JSONL lines and then the verdicts to stdout instead,
//! to compare two builds' output byte for byte.
use std::hint::black_box;

use tracer::{
    hooks::{attribute, decode_unnamed},
    run::fold::Folds,
    sink::{jsonl::JsonlSink, Sink},
    verdict::Analyzer,
};

#[path = "../benches/common/events.rs"]
mod events;
use events::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(10);
    let print = args.next().is_some_and(|a| a == "--print");
    let names = names();
    let events = events(&names);
    let mut analyzer = Analyzer::new();
    let out: Box<dyn std::io::Write> = if print {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::sink())
    };
    let mut sink = JsonlSink::new(out);
    for _ in 0..rounds {
        let mut folds = Folds::new(true);
        for ev in &events {
            let rec = decode_unnamed(black_box(ev), &names).expect("decodes");
            folds.admit(ev, rec, |mut rec| {
                attribute(&mut rec, &names);
                analyzer.observe_record(&rec);
                sink.emit(&rec).expect("write");
            });
        }
    }
    drop(sink);
    if print {
        let end = names.clock_offset_ns + (EVENTS as i128) * 1_000_000;
        for v in analyzer.verdicts(end, None) {
            println!("{}", serde_json::to_string(&v).expect("verdict"));
        }
    }
    black_box(&analyzer);
}
