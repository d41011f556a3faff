//! Where every record goes: the run's summary, the analyzer, and each output. An output that
//! fails (disk full, closed pipe) is reported once and skipped; tracing goes on into the others.
use crate::event::probe::Probe;
use crate::event::start::Start;
use crate::verdict::ProbeWant;
use tracer_common::Hook;

use crate::{
    event::{Kind, Record},
    sink::{Sink, Summary},
    verdict::{Analyzer, Verdict},
};

pub struct Fanout {
    sinks: Vec<Box<dyn Sink>>,
    /// Per sink: it failed once and is skipped from then on.
    failed: Vec<bool>,
    summary: Summary,
    analyzer: Analyzer,
    /// The run's node (its start line's): lines written later say it too.
    node: Option<String>,
}

impl Fanout {
    /// `names_expected`: some source of Kubernetes names is on, so records left unnamed are
    /// counted in the summary.
    pub fn new(sinks: Vec<Box<dyn Sink>>, analyzer: Analyzer, names_expected: bool) -> Fanout {
        let mut summary = Summary::default();
        if names_expected {
            summary.unattributed = Some(0);
        }
        Fanout {
            failed: vec![false; sinks.len()],
            sinks,
            summary,
            analyzer,
            node: None,
        }
    }

    pub fn deliver(&mut self, rec: &Record) {
        self.summary.add(rec);
        self.analyzer.observe_record(rec);
        if let Some(n) = self.summary.unattributed.as_mut() {
            if rec.flow.src.is_some() && !rec.has_names() {
                *n += rec.events();
            }
        }
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if self.failed[i] {
                continue;
            }
            if let Err(e) = sink.emit(rec) {
                fail(&mut self.failed, i, &e);
            }
        }
    }

    /// `count` events of `hook` (a [`Hook`] number) never reached the reader: a `lost` record,
    /// so that lost is counted, never silent.
    pub fn lost(&mut self, hook: u8, count: u64, now_unix_ns: i128) {
        let hook_name = Hook::from_u8(hook).map_or("unknown", Hook::name);
        let mut rec = Record::new(Kind::Lost, hook_name, now_unix_ns);
        rec.lost = Some(count);
        self.deliver(&rec);
    }

    /// The run's start line, first in the outputs that keep one, and what the analyzer must
    /// know of the run (the same as `tracer report` reads back from it).
    pub fn start(&mut self, start: &Start) {
        self.analyzer.apply_start(start);
        self.node = start.node.clone();
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = sink.start(start) {
                fail(&mut self.failed, i, &e);
            }
        }
    }

    /// A probe the run made: logged, and evidence for the analyzer.
    pub fn probe(&mut self, probe: &Probe) {
        self.analyzer.apply_probe(probe);
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if self.failed[i] {
                continue;
            }
            if let Err(e) = sink.probe(probe) {
                fail(&mut self.failed, i, &e);
            }
        }
    }

    /// The CNI install the live API showed: logged, and what the verdicts' change patches.
    pub fn cni(&mut self, install: crate::fix::CniInstall, now_unix_ns: i128) {
        let line = crate::fix::CniLine {
            ts: crate::time::rfc3339_nanos(now_unix_ns),
            kind: crate::fix::CNI_LINE_KIND.to_string(),
            node: self.node.clone(),
            install,
        };
        self.analyzer.set_cni(line.install.clone());
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if self.failed[i] {
                continue;
            }
            if let Err(e) = sink.cni(&line) {
                fail(&mut self.failed, i, &e);
            }
        }
    }

    /// A window's arrivals lines: logged (the analyzer of one node has no use for them yet).
    pub fn arrivals(&mut self, lines: &[crate::event::arrivals::ArrivalsLine]) {
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            for line in lines {
                if self.failed[i] {
                    break;
                }
                if let Err(e) = sink.arrivals(line) {
                    fail(&mut self.failed, i, &e);
                }
            }
        }
    }

    /// A probe toward `to` starts: its own packets are not evidence.
    pub fn probing(&mut self, to: std::net::IpAddr, now_unix_ns: i128) {
        self.analyzer.probing(to, now_unix_ns);
    }

    /// The probes the evidence asks for, as of the last tick (see `Analyzer::probes_wanted`).
    pub fn probes_wanted(&mut self) -> Vec<ProbeWant> {
        self.analyzer.probes_wanted()
    }

    /// The end of a batch read from the ring (see [`Sink::batch_end`]).
    pub fn batch_end(&mut self) {
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = sink.batch_end() {
                fail(&mut self.failed, i, &e);
            }
        }
    }

    /// About once a second: time-based output (the terminal's fold lines), and the verdicts
    /// that the evidence so far already supports.
    pub fn tick(&mut self, now_unix_ns: i128) {
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = sink.tick(now_unix_ns) {
                fail(&mut self.failed, i, &e);
            }
        }
        for v in self.analyzer.live(now_unix_ns) {
            self.verdict(&v);
        }
    }

    /// The answer: what the evidence of the whole run says, once it has ended.
    pub fn finish(&mut self, duration_s: f64, now_unix_ns: i128) {
        self.summary.duration_s = duration_s;
        for v in self.analyzer.verdicts(now_unix_ns, Some(duration_s)) {
            self.verdict(&v);
        }
    }

    /// Push out what every output still buffers; the run's counts.
    pub fn close(mut self) -> Summary {
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush() {
                eprintln!("tracer: flushing output failed: {e:#}");
            }
        }
        self.summary
    }

    fn verdict(&mut self, v: &Verdict) {
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if self.failed[i] {
                continue;
            }
            if let Err(e) = sink.verdict(v) {
                fail(&mut self.failed, i, &e);
            }
        }
    }
}

/// Say once that sink `i` failed, and skip it from then on.
fn fail(failed: &mut [bool], i: usize, e: &anyhow::Error) {
    if !failed[i] {
        eprintln!("tracer: output failed, continuing without it: {e:#}");
        failed[i] = true;
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;

    /// A sink that notes the kinds it is given, and fails every write when told to.
    struct Probe {
        seen: Rc<RefCell<Vec<&'static str>>>,
        broken: bool,
    }

    impl Sink for Probe {
        fn emit(&mut self, rec: &Record) -> anyhow::Result<()> {
            self.seen.borrow_mut().push(rec.kind.as_str());
            if self.broken {
                anyhow::bail!("disk full");
            }
            Ok(())
        }
        fn flush(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        fn verdict(&mut self, _v: &Verdict) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn probe(broken: bool) -> (Box<dyn Sink>, Rc<RefCell<Vec<&'static str>>>) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink = Probe {
            seen: seen.clone(),
            broken,
        };
        (Box::new(sink), seen)
    }

    #[test]
    fn a_failed_output_is_skipped_and_the_others_go_on() {
        let (broken, broken_seen) = probe(true);
        let (good, good_seen) = probe(false);
        let mut fanout = Fanout::new(vec![broken, good], Analyzer::new(), false);
        for ts in [1, 2, 3] {
            fanout.deliver(&Record::new(Kind::Drop, "kfree_skb", ts));
        }
        fanout.tick(4);
        let summary = fanout.close();
        assert_eq!(*broken_seen.borrow(), ["drop"]);
        assert_eq!(*good_seen.borrow(), ["drop", "drop", "drop"]);
        assert_eq!(summary.count(Kind::Drop), 3);
        assert_eq!(summary.unattributed, None);
    }

    #[test]
    fn lost_events_are_records_and_counted() {
        let (good, seen) = probe(false);
        let mut fanout = Fanout::new(vec![good], Analyzer::new(), true);
        fanout.lost(0, 5, 1);
        fanout.lost(1, 2, 1);
        let summary = fanout.close();
        assert_eq!(*seen.borrow(), ["lost", "lost"]);
        assert_eq!(summary.lost, 7);
        assert_eq!(summary.count(Kind::Drop), 0);
        assert_eq!(summary.unattributed, Some(0));
    }
}
