//! `tracer report FILE.jsonl`: the verdict from an exported event log, offline. The log's lines
//! are read back into [`Record`]s and fed to the same [`Analyzer`] the daemon runs live, so a
//! log taken during an incident gives the same answer anywhere.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use std::collections::BTreeMap;

use crate::event::arrivals::Arrivals;
use crate::event::probe::Probe;
use crate::event::start::Start;
use crate::event::{LineError, Record};
use crate::verdict::cluster::{self, NodeLog};
use crate::verdict::{self, Analyzer, Severity, Verdict};

/// What reading a log found besides the events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub lines: u64,
    pub events: u64,
    /// `kind: "verdict"` lines the daemon wrote (not evidence: the report recomputes them).
    pub verdicts: u64,
    /// `kind: "arrivals"` lines (what arrived from each peer, per window).
    pub arrivals: u64,
    /// Lines that are not events of this schema: (line number, why), the first few.
    pub bad: Vec<(u64, String)>,
    pub bad_count: u64,
}

/// One line of a log, read.
pub enum Line {
    Event(Box<Record>),
    /// What the run watched and could not see.
    Start(Start),
    Probe(Probe),
    Arrivals(Arrivals),
    /// The CNI install the live API showed.
    Cni(crate::fix::CniLine),
    /// A verdict the run wrote when it stopped: its time and node (the end of what it watched).
    Verdict {
        ts: i128,
        node: Option<String>,
    },
}

impl Line {
    /// The node whose record this is, when the line says.
    fn node(&self) -> Option<&str> {
        match self {
            Line::Event(r) => r.node.as_deref(),
            Line::Start(s) => s.node.as_deref(),
            Line::Probe(p) => p.node.as_deref(),
            Line::Arrivals(a) => a.node.as_deref(),
            Line::Cni(c) => c.node.as_deref(),
            Line::Verdict { node, .. } => node.as_deref(),
        }
    }

    /// When it was stamped.
    fn ts(&self) -> Option<i128> {
        match self {
            Line::Event(r) => Some(r.ts_unix_ns),
            Line::Start(s) => crate::time::parse_rfc3339(&s.ts),
            Line::Probe(p) => crate::time::parse_rfc3339(&p.ts),
            Line::Arrivals(a) => crate::time::parse_rfc3339(&a.ts),
            Line::Cni(c) => crate::time::parse_rfc3339(&c.ts),
            Line::Verdict { ts, .. } => Some(*ts),
        }
    }

    /// Give the line to one node's analysis.
    fn apply(self, analyzer: &mut Analyzer) {
        match self {
            Line::Event(r) => analyzer.observe_record(&r),
            Line::Start(s) => analyzer.apply_start(&s),
            Line::Probe(p) => analyzer.apply_probe(&p),
            // The far end's side: read by the join across nodes, not by one node's analysis.
            Line::Arrivals(_) => {}
            Line::Cni(c) => analyzer.set_cni(c.install),
            Line::Verdict { ts, .. } => analyzer.watched_until(ts),
        }
    }
}

/// Read every line of a JSON Lines log (`kubectl logs --prefix --timestamps` prefixes
/// skipped), handing each to `take`; what is no line of this schema is counted in the stats.
pub fn read_lines(input: impl BufRead, mut take: impl FnMut(Line)) -> Result<LogStats> {
    let mut stats = LogStats::default();
    for (i, line) in input.split(b'\n').enumerate() {
        let n = i as u64 + 1;
        let owned = line.context("reading the log")?;
        let line = without_log_prefix(&owned);
        stats.lines = n;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut bad = |why: String| {
            stats.bad_count += 1;
            if stats.bad.len() < 5 {
                stats.bad.push((n, why));
            }
        };
        let read = match Record::from_line(line) {
            Ok(rec) => {
                stats.events += rec.events();
                Ok(Line::Event(Box::new(rec)))
            }
            Err(LineError::Start) => serde_json::from_slice::<Start>(line)
                .map(Line::Start)
                .map_err(|e| format!("a start line that does not read: {e}")),
            Err(LineError::Probe) => serde_json::from_slice::<Probe>(line)
                .map(Line::Probe)
                .map_err(|e| format!("a probe line that does not read: {e}")),
            Err(LineError::Cni) => serde_json::from_slice::<crate::fix::CniLine>(line)
                .map(Line::Cni)
                .map_err(|e| format!("a cni line that does not read: {e}")),
            Err(LineError::Arrivals) => {
                stats.arrivals += 1;
                serde_json::from_slice::<Arrivals>(line)
                    .map(Line::Arrivals)
                    .map_err(|e| format!("an arrivals line that does not read: {e}"))
            }
            Err(LineError::Verdict) => {
                stats.verdicts += 1;
                match verdict_stamp(line) {
                    Some((ts, node)) => Ok(Line::Verdict { ts, node }),
                    // A verdict without a time still is no evidence: skipped quietly.
                    None => continue,
                }
            }
            Err(why) => Err(why.to_string()),
        };
        match read {
            Ok(l) => take(l),
            Err(why) => bad(why),
        }
    }
    Ok(stats)
}

/// Feed every line of a JSON Lines log to one `analyzer` (whatever nodes it holds).
pub fn analyze(input: impl BufRead, analyzer: &mut Analyzer) -> Result<LogStats> {
    read_lines(input, |line| line.apply(analyzer))
}

/// The logs of one or several nodes, read line by line into one analysis per node.
#[derive(Default)]
pub struct Nodes {
    by_node: BTreeMap<String, NodeState>,
}

#[derive(Default)]
struct NodeState {
    analyzer: Analyzer,
    log: NodeLog,
}

impl Nodes {
    pub fn read(&mut self, input: impl BufRead) -> Result<LogStats> {
        read_lines(input, |line| self.take(line))
    }

    fn take(&mut self, line: Line) {
        // Records without a node (logs older than the field) are one node of their own.
        let node = line.node().unwrap_or("").to_string();
        let state = self.by_node.entry(node.clone()).or_default();
        state.log.node = node;
        if let Some(ts) = line.ts() {
            state.log.span = Some(match state.log.span {
                Some((a, b)) => (a.min(ts), b.max(ts)),
                None => (ts, ts),
            });
        }
        match &line {
            Line::Arrivals(a) => {
                // Its own unicast address (multicast `local`s are neighbour discovery's).
                state.log.addresses.extend(
                    a.local
                        .filter(|ip| !ip.is_multicast() && !ip.is_unspecified()),
                );
                state.log.arrivals.push(a.clone());
            }
            Line::Probe(p) => state.log.probes.push(p.clone()),
            Line::Start(s) => state.log.addresses.extend(s.addresses.iter().copied()),
            _ => {}
        }
        line.apply(&mut state.analyzer);
    }

    /// The verdicts: one node's own; several nodes' joined, one per path.
    pub fn verdicts(self) -> Vec<Verdict> {
        let mut logs: Vec<NodeLog> = self
            .by_node
            .into_values()
            .map(|mut s| {
                let now = analyzer_end(&s.analyzer);
                s.log.verdicts = s.analyzer.verdicts(now, None);
                s.log
            })
            .collect();
        if logs.len() <= 1 {
            return logs.pop().map(|l| l.verdicts).unwrap_or_default();
        }
        for l in &mut logs {
            if l.node.is_empty() {
                l.node = "(no node)".into();
            }
        }
        let now = logs
            .iter()
            .filter_map(|l| l.span.map(|s| s.1))
            .max()
            .unwrap_or(0);
        cluster::join(&logs, now)
    }
}

/// `tracer report`: prints the verdicts of the logs (read in the order given, as one run);
/// `Ok(true)` when an MTU problem was found.
pub fn run(files: &[PathBuf], json: bool) -> Result<bool> {
    let (stats, verdicts) = report_files(files)?;
    let mut err = std::io::stderr().lock();
    let mut out = std::io::stdout().lock();
    for (file, stats) in files.iter().zip(&stats) {
        writeln!(
            err,
            "{}: {} events{}{}",
            file.display(),
            stats.events,
            if stats.arrivals > 0 {
                format!(", {} arrivals lines", stats.arrivals)
            } else {
                String::new()
            },
            if stats.verdicts > 0 {
                format!(
                    " ({} verdict lines of the run ignored: recomputed)",
                    stats.verdicts
                )
            } else {
                String::new()
            }
        )?;
        if stats.bad_count > 0 {
            writeln!(err, "{} lines skipped:", stats.bad_count)?;
            for (n, why) in &stats.bad {
                writeln!(err, "  line {n}: {why}")?;
            }
        }
    }
    for v in &verdicts {
        if json {
            serde_json::to_writer(&mut out, v)?;
            writeln!(out)?;
        } else {
            for line in verdict::render(v) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(verdicts.iter().any(|v| v.severity == Severity::Problem))
}

/// Read and analyse one log (`-` = standard input).
pub fn report(file: &Path) -> Result<(LogStats, Vec<Verdict>)> {
    let (mut stats, verdicts) = report_files(&[file.to_path_buf()])?;
    Ok((stats.remove(0), verdicts))
}

/// Read and analyse several logs as one run: a rotated log oldest first
/// (`events.jsonl.2 events.jsonl.1 events.jsonl`). `-` = standard input.
pub fn report_files(files: &[PathBuf]) -> Result<(Vec<LogStats>, Vec<Verdict>)> {
    let mut nodes = Nodes::default();
    let mut all = Vec::new();
    for file in files {
        let stats = if file.as_os_str() == "-" {
            nodes.read(std::io::stdin().lock())?
        } else {
            let f = std::fs::File::open(file)
                .with_context(|| format!("cannot open the event log {}", file.display()))?;
            nodes
                .read(BufReader::new(f))
                .with_context(|| format!("reading {}", file.display()))?
        };
        if stats.events == 0 && stats.bad_count > 0 {
            bail!(
                "{} holds no tracer events (line {}: {})",
                file.display(),
                stats.bad[0].0,
                stats.bad[0].1
            );
        }
        all.push(stats);
    }
    Ok((all, nodes.verdicts()))
}

/// A report's verdicts are stamped with the log's last event, so a report is reproducible.
fn analyzer_end(a: &Analyzer) -> i128 {
    a.span().map_or(0, |(_, last)| last)
}

/// The time and node of a `kind: "verdict"` line.
fn verdict_stamp(line: &[u8]) -> Option<(i128, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Stamp<'a> {
        ts: &'a str,
        node: Option<String>,
    }
    let stamp: Stamp = serde_json::from_slice(line).ok()?;
    Some((crate::time::parse_rfc3339(stamp.ts)?, stamp.node))
}

/// A log line without what `kubectl logs --prefix --timestamps` puts before it
/// (`[pod/tracer-x7k2p/tracer] 2026-12-04T05:00:00.123456789Z {…}`): the DaemonSet's tracers
/// write their log to stdout, and the cluster's logs are read as they come.
fn without_log_prefix(line: &[u8]) -> &[u8] {
    let trim = |b: &[u8]| -> usize { b.iter().take_while(|c| **c == b' ').count() };
    let mut rest = line;
    if rest.first() == Some(&b'[') {
        if let Some(end) = rest.iter().position(|&b| b == b']') {
            rest = &rest[end + 1..];
            rest = &rest[trim(rest)..];
        }
    }
    if rest.first().is_some_and(u8::is_ascii_digit) {
        if let Some(space) = rest.iter().position(|&b| b == b' ') {
            let stamp = std::str::from_utf8(&rest[..space]).ok();
            if stamp.and_then(crate::time::parse_rfc3339).is_some() {
                rest = &rest[space + 1..];
                rest = &rest[trim(rest)..];
            }
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_log_prefixes_are_read_through() {
        let event = r#"{"ts":"2026-12-04T05:00:00.000000001Z","kind":"tcp_retransmit","hook":"tracepoint/tcp/tcp_retransmit_skb","proto":6,"src":"10.0.0.1","sport":1,"dst":"10.0.0.2","dport":2,"len":1448}"#;
        for line in [
            event.to_string(),
            format!("[pod/tracer-x7k2p/tracer] {event}"),
            format!("2026-12-04T05:00:00.123456789Z {event}"),
            format!("[pod/tracer-x7k2p/tracer] 2026-12-04T05:00:00.123456789Z {event}"),
        ] {
            assert_eq!(
                without_log_prefix(line.as_bytes()),
                event.as_bytes(),
                "{line}"
            );
        }
        // Two nodes' streams interleaved, prefixed, with a verdict line: every event read.
        let stream = format!(
            "[pod/tracer-a/tracer] 2026-12-04T05:00:00.1Z {event}\n\
             [pod/tracer-b/tracer] 2026-12-04T05:00:00.2Z {event}\n\
             [pod/tracer-a/tracer] 2026-12-04T05:00:01Z {{\"ts\":\"2026-12-04T05:00:01Z\",\"kind\":\"verdict\"}}\n"
        );
        let mut a = Analyzer::new();
        let stats = analyze(stream.as_bytes(), &mut a).unwrap();
        assert_eq!(
            (stats.events, stats.verdicts, stats.bad_count),
            (2, 1, 0),
            "{stats:?}"
        );
        // Not a prefix: left alone (and then reported as a bad line).
        assert_eq!(without_log_prefix(b"12 {}"), b"12 {}");
    }
}
