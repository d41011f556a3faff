//! The daemon's work per kernel event, on one core: decode the raw event, name its flow from a
//! 10,000-pod / 2,000-service inventory, fold bursts (as the event loop does), feed the verdict analysis and write the JSONL line.
//! Issue 7's target is 1,000,000 events/s; `cargo xtask bench` prints the ratio to it from
//! criterion's estimate (target/criterion/pipeline/*/new/estimates.json).
//!
//! The events mirror the incident: VXLAN-encapsulated pod TCP dropped at a veth whose peer has
//! a smaller MTU (60%), the pods' retransmissions (25%) and kernel-generated ICMP (15%).
use std::{collections::HashMap, hint::black_box};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracer::{
    hooks::{attribute, decode, decode_unnamed, Names},
    kernel::kallsyms::Kallsyms,
    run::fold::Folds,
    sink::{jsonl::JsonlSink, Sink},
    verdict::Analyzer,
};

#[path = "common/events.rs"]
mod events;
use events::*;

/// The same kernel facts without Kubernetes names.
fn names_like(n: &Names) -> Names {
    Names {
        reasons: n.reasons.clone(),
        kallsyms: Kallsyms::parse(KALLSYMS),
        devices: HashMap::new(),
        clock_offset_ns: n.clock_offset_ns,
        inventory: None,
        conntrack: None,
        interned: Default::default(),
        keep_packets: n.keep_packets,
    }
}

fn pipeline(c: &mut Criterion) {
    let names = names();
    let events = events(&names);
    // Every event decodes and is named: the benchmark measures the path real events take.
    let named = events
        .iter()
        .filter_map(|e| decode(e, &names))
        .filter(|r| r.has_names())
        .count();
    assert_eq!(named, EVENTS, "events that decode and get names");
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    // The stages one by one, to see where the time goes.
    let unnamed = Names {
        inventory: None,
        ..names_like(&names)
    };
    group.bench_function("decode", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(decode(black_box(ev), &unnamed));
            }
        })
    });
    group.bench_function("decode_name", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(decode(black_box(ev), &names));
            }
        })
    });
    // One analyzer for all samples, as the daemon keeps one for the run: criterion calls each
    // closure once per sample, and a fresh analyzer would time the first sight of every
    // connection (map growth) over and over.
    let mut analyzer = Analyzer::new();
    group.bench_function("decode_name_analyze", |b| {
        b.iter(|| {
            for ev in &events {
                let rec = decode(black_box(ev), &names).expect("decodes");
                analyzer.observe_record(&rec);
            }
        })
    });
    let mut analyzer = Analyzer::new();
    // The whole path as the event loop takes it: decode, the ring's-edge folding (these events
    // are all different: it only looks), names, analysis, the log line. A new folding state per
    // batch: replayed, the same events at the same times would fold into the last batch's.
    group.bench_function("decode_name_analyze_write", |b| {
        let mut sink = JsonlSink::new(std::io::sink());
        b.iter(|| {
            let mut folds = Folds::new(true);
            for ev in &events {
                let rec = decode_unnamed(black_box(ev), &names).expect("decodes");
                folds.admit(ev, rec, |mut rec| {
                    attribute(&mut rec, &names);
                    analyzer.observe_record(&rec);
                    sink.emit(&rec).expect("write");
                });
            }
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
