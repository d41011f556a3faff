//! JSON Lines event log: one [`Record`] per line, the exported evidence of an incident.

use std::io::{self, Stdout, Write};
use std::path::Path;

use anyhow::Context;

use super::logfile::{LogFile, Rotation};
use super::Sink;
use crate::event::Record;

/// Where whole lines go: any writer (stdout, a test's `Vec`), or a [`LogFile`] that rotates
/// between lines.
pub trait LineOut {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush_lines(&mut self) -> io::Result<()>;
    /// A line that heads the output: written now, and again at the head of every file a
    /// rotating log starts, so that each file says what its run could see.
    fn write_header(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_line(line)
    }
}

impl<W: Write> LineOut for W {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_all(line)
    }
    fn flush_lines(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl LineOut for LogFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        LogFile::write_line(self, line)
    }
    fn write_header(&mut self, line: &[u8]) -> io::Result<()> {
        LogFile::write_header(self, line)
    }
    fn flush_lines(&mut self) -> io::Result<()> {
        self.flush()
    }
}

pub struct JsonlSink<W: LineOut> {
    out: W,
    /// Reused line buffer: a record is serialized whole before any of it is written.
    line: Vec<u8>,
}

impl JsonlSink<LogFile> {
    /// Create (or truncate) the log file now, so that an unwritable path fails before tracing
    /// starts rather than after the first event. Mode 0640; no rotation.
    pub fn create(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        Self::create_rotating(path, None)
    }

    /// As [`JsonlSink::create`], rotating by size (`--log-max-size`, `--log-keep`).
    pub fn create_rotating(
        path: impl AsRef<Path>,
        rotation: Option<Rotation>,
    ) -> anyhow::Result<Self> {
        Ok(Self::new(LogFile::create(path.as_ref(), rotation)?))
    }
}

impl JsonlSink<Stdout> {
    /// Events to standard output. Rust's stdout is line-buffered, so each event reaches a pipe
    /// (`tracer --json | jq`) as soon as it is emitted.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }
}

impl<W: LineOut> JsonlSink<W> {
    /// One object that is not an event (start, probe, arrivals, verdict), by serde, as one line;
    /// `header`: it heads every file of a rotating log.
    fn write_object(&mut self, value: &impl serde::Serialize, header: bool) -> anyhow::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).context("cannot serialize a log object")?;
        self.line.push(b'\n');
        let written = if header {
            self.out.write_header(&self.line)
        } else {
            self.out.write_line(&self.line)
        };
        written.context("cannot write to the event log")
    }

    pub fn new(out: W) -> Self {
        JsonlSink {
            out,
            line: Vec::with_capacity(1024),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: LineOut> Sink for JsonlSink<W> {
    fn emit(&mut self, rec: &Record) -> anyhow::Result<()> {
        self.line.clear();
        super::json::write_record(&mut self.line, rec);
        self.line.push(b'\n');
        // One write per complete line: a BufWriter never splits a line smaller than its
        // buffer across flushes, and a LogFile rotates only between lines, so readers (and a
        // crash) see whole lines only.
        self.out
            .write_line(&self.line)
            .context("cannot write to the event log")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush_lines().context("cannot flush the event log")
    }

    fn start(&mut self, start: &crate::event::start::Start) -> anyhow::Result<()> {
        self.write_object(start, true)
    }

    fn probe(&mut self, probe: &crate::event::probe::Probe) -> anyhow::Result<()> {
        self.write_object(probe, false)
    }

    fn arrivals(&mut self, line: &crate::event::arrivals::ArrivalsLine) -> anyhow::Result<()> {
        self.write_object(line, false)
    }

    fn cni(&mut self, line: &crate::fix::CniLine) -> anyhow::Result<()> {
        self.write_object(line, false)
    }

    fn verdict(&mut self, v: &crate::verdict::Verdict) -> anyhow::Result<()> {
        self.write_object(v, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Decoded, Encap, Flow, Kind, Matched, Outer};

    fn sample() -> Record {
        let mut r = Record::new(Kind::Drop, "tp_btf/kfree_skb", 1_795_630_181_123_456_789);
        r.device.ifname = Some("eth0".into());
        r.size.len = Some(1534);
        r.size.l3_len = Some(1520);
        r.size.mtu = Some(1450);
        r.drop.reason = Some("PKT_TOO_BIG".into());
        r.drop.matched = [Matched::Reason, Matched::Oversize].into();
        r.set_decoded(&Decoded {
            flow: Some(Flow {
                proto: 6,
                src: "10.0.1.2".parse().unwrap(),
                sport: Some(41234),
                dst: "10.0.2.2".parse().unwrap(),
                dport: Some(6379),
            }),
            outer: Some(Outer {
                src: "192.168.0.1".parse().unwrap(),
                dst: "192.168.0.2".parse().unwrap(),
                encap: Encap::Vxlan,
                vni: Some(1),
            }),
            icmp: None,
            ip_len: Some(1520),
        });
        r
    }

    #[test]
    fn one_complete_object_per_line() {
        let mut s = JsonlSink::new(Vec::new());
        s.emit(&sample()).unwrap();
        let mut lost = Record::new(Kind::Lost, "ringbuf", 0);
        lost.lost = Some(3);
        s.emit(&lost).unwrap();
        s.flush().unwrap();
        let text = String::from_utf8(s.into_inner()).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["ts"], "2026-11-25T18:09:41.123456789Z");
        assert_eq!(v["kind"], "drop");
        assert_eq!(v["src"], "10.0.1.2");
        assert_eq!(v["outer"]["encap"], "vxlan");
        assert_eq!(v["outer"]["vni"], 1);
        assert_eq!(v["matched"], serde_json::json!(["reason", "oversize"]));
        assert!(v.get("ts_unix_ns").is_none());
        // Field order follows the struct: ts first, then kind, hook.
        assert!(
            lines[0].starts_with(r#"{"ts":"2026-11-25T18:09:41.123456789Z","kind":"drop","hook":"#)
        );
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["lost"].as_u64()),
            (Some("lost"), Some(3))
        );
    }

    #[test]
    fn unwritable_path_names_the_path() {
        let path = "/nonexistent-dir-for-tracer-test/events.jsonl";
        let err = match JsonlSink::create(path) {
            Ok(_) => panic!("created {path}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(path), "{err}");
    }

    #[test]
    fn create_truncates_and_writes() {
        let path = std::env::temp_dir().join(format!("tracer-jsonl-{}.jsonl", std::process::id()));
        std::fs::write(&path, "old contents\n").unwrap();
        let mut s = JsonlSink::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "truncated at start"
        );
        s.emit(&sample()).unwrap();
        s.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with("}\n"));
    }
}
