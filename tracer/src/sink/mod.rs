//! Where decoded events go: a JSON Lines log (file or stdout) and the live terminal view. The
//! daemon feeds every [`Record`] to each configured sink.

pub mod json;
pub mod jsonl;
pub mod logfile;
pub mod metrics;
pub mod pcap;
pub mod terminal;

pub use terminal::Summary;

use crate::event::Record;
use crate::verdict::Verdict;

pub trait Sink {
    /// Write one event. Errors are I/O errors of the output (disk full, closed pipe).
    fn emit(&mut self, rec: &Record) -> anyhow::Result<()>;
    /// Push out everything buffered, including the terminal's pending "folded" lines.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// Called about once a second with the wall clock (Unix ns) while events may be scarce, so
    /// that time-based output (the terminal's fold lines) appears without waiting for the next
    /// event. Sinks without such output ignore it.
    fn tick(&mut self, _now_unix_ns: i128) -> anyhow::Result<()> {
        Ok(())
    }
    /// The events read from the ring in one go are delivered: output held back for an event
    /// that might follow at once (the terminal's line of a fragment's drop) goes out now.
    fn batch_end(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Write a verdict (live once the evidence is strong, and at the end of the run).
    fn verdict(&mut self, v: &Verdict) -> anyhow::Result<()>;
    /// What the run watches and cannot see, once before the first event. Only the event log
    /// keeps it (the terminal printed the start-up block already).
    fn start(&mut self, _start: &crate::event::start::Start) -> anyhow::Result<()> {
        Ok(())
    }
    /// A path-MTU measurement the run made. The event log keeps it; the terminal says it.
    fn probe(&mut self, _probe: &crate::event::probe::Probe) -> anyhow::Result<()> {
        Ok(())
    }
    /// The CNI install the live API showed. Only the event log keeps it (the terminal said it in
    /// a `names:` line).
    fn cni(&mut self, _line: &crate::fix::CniLine) -> anyhow::Result<()> {
        Ok(())
    }
    /// What arrived from a peer in a window (`--arrivals-interval`). Only the event log keeps
    /// it: a window's worth of lines per peer is not for the terminal.
    fn arrivals(&mut self, _line: &crate::event::arrivals::ArrivalsLine) -> anyhow::Result<()> {
        Ok(())
    }
}
