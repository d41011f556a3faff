//! Output files of a run (the event log, the pcapng capture): created 0640 whatever the umask,
//! and, for the line-oriented event log, rotated by size between whole lines so that a long run
//! cannot fill a disk: `events.jsonl` → `events.jsonl.1` → … → `events.jsonl.N`, the oldest
//! deleted.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Mode of every file the tracer writes: owner read/write, group read (a log shipper's group),
/// nothing for others (the logs name pods, services and addresses).
pub const FILE_MODE: u32 = 0o640;

/// Create (or truncate) `path` with mode [`FILE_MODE`]. The mode is set again after opening:
/// `open(2)` applies the umask to a new file's mode and keeps an existing file's mode.
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Whether `path` can be opened for writing, without truncating it (a missing file is created
/// empty, mode [`FILE_MODE`]): checked for every output before any is truncated.
pub fn check_writable(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
}

/// When to rotate: after `max_bytes` (a line is never split, so a file may end up to one line
/// longer), keeping `keep` rotated files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

/// How often a log checks that its path still names the file it writes (a deleted file or
/// removed directory would otherwise swallow every later line silently).
const PRESENCE_CHECK: Duration = Duration::from_secs(1);

/// An append-only file written in whole lines, rotated by size.
///
/// On the first write error (disk full) the file is cut back to its last complete line and the
/// log stops: what was written stays valid JSON Lines. A log whose file was deleted or whose
/// directory was removed mid-run stops with an error that says so.
pub struct LogFile {
    path: PathBuf,
    /// `None` once the log failed: nothing more is written, not even buffered bytes.
    out: Option<BufWriter<File>>,
    /// Bytes written into the current file (buffered ones included).
    written: u64,
    rotation: Option<Rotation>,
    /// (device, inode) of the file being written.
    identity: (u64, u64),
    last_check: Instant,
    /// Written at the head of every new file (the run's start line).
    header: Option<Vec<u8>>,
}

fn identity(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Cut `file` back to the end of its last complete line (a failed write may have left part of
/// one). The file is reopened for reading through /proc: it was opened write-only, and may
/// already be unlinked.
fn cut_to_last_line(file: &File) -> io::Result<()> {
    let reader = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let len = reader.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        reader.read_exact_at(buf, start)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    file.set_len(0)
}

impl LogFile {
    /// Create (or truncate) the log now, so that an unwritable path fails before tracing starts.
    /// Rotated files of an earlier run (`FILE.1`, …) are left alone: they are shifted out as
    /// this run rotates.
    pub fn create(path: &Path, rotation: Option<Rotation>) -> anyhow::Result<Self> {
        let file = create_private(path)
            .with_context(|| format!("cannot create the event log {}", path.display()))?;
        Ok(LogFile {
            path: path.to_path_buf(),
            identity: identity(&file)?,
            out: Some(BufWriter::new(file)),
            written: 0,
            rotation,
            last_check: Instant::now(),
            header: None,
        })
    }

    /// Write `line` now and again first in every file a rotation starts.
    pub fn write_header(&mut self, line: &[u8]) -> io::Result<()> {
        self.header = Some(line.to_vec());
        self.write_line(line)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one complete line (its newline included). Rotation happens only before a line, so
    /// every file holds whole lines; a line longer than the limit gets a file of its own.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let r = self.try_write_line(line);
        if r.is_err() {
            self.fail();
        }
        r
    }

    fn try_write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.out.is_none() {
            return Err(io::Error::other("the event log failed earlier"));
        }
        if self.last_check.elapsed() >= PRESENCE_CHECK {
            self.last_check = Instant::now();
            self.check_present()?;
        }
        if let Some(r) = self.rotation {
            if self.written > 0 && self.written + line.len() as u64 > r.max_bytes {
                self.rotate(r.keep)?;
            }
        }
        self.writer()?.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Push out buffered lines. After a failure (already reported) there is nothing to do.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let r = out.flush().and_then(|()| self.check_present());
        if r.is_err() {
            self.fail();
        }
        r
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("the event log failed earlier"))
    }

    /// Whether the path still names the file being written.
    fn check_present(&self) -> io::Result<()> {
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => Ok(()),
            Ok(_) => Err(io::Error::other(format!(
                "{} was replaced by another file mid-run; no longer writing the event log",
                self.path.display()
            ))),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "{} disappeared mid-run (deleted, or its directory removed): {e}; no longer \
                     writing the event log",
                    self.path.display()
                ),
            )),
        }
    }

    /// Stop writing: drop what is buffered (a later flush could add part of a line to a
    /// full disk) and cut the file back to its last complete line.
    fn fail(&mut self) {
        if let Some(out) = self.out.take() {
            let (file, _unwritten) = out.into_parts();
            if let Err(e) = cut_to_last_line(&file) {
                log::warn!("could not cut the event log back to whole lines: {e}");
            }
        }
    }

    /// `FILE.{keep-1}` → `FILE.{keep}`, …, `FILE` → `FILE.1`, then a new empty `FILE`. The
    /// current file is flushed first and only renamed, so nothing written is lost if the new
    /// file cannot be created (the error then stops this output, reported once by the run).
    fn rotate(&mut self, keep: u32) -> io::Result<()> {
        self.writer()?.flush()?;
        for n in (1..keep).rev() {
            match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        let file = create_private(&self.path)?;
        self.identity = identity(&file)?;
        self.out = Some(BufWriter::new(file));
        self.written = 0;
        if let Some(header) = &self.header {
            let out = self.out.as_mut().expect("just opened");
            out.write_all(header)?;
            self.written = header.len() as u64;
        }
        Ok(())
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-logfile-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_failed_write_is_cut_back_to_whole_lines() {
        let d = dir("cut");
        let path = d.join("events.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        cut_to_last_line(&file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        std::fs::write(&path, "no newline at all").unwrap();
        cut_to_last_line(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_deleted_log_is_an_error_not_silence() {
        let d = dir("deleted");
        let path = d.join("events.jsonl");
        let mut log = LogFile::create(&path, None).unwrap();
        log.write_line(b"{}\n").unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        log.last_check = Instant::now() - PRESENCE_CHECK;
        let err = log.write_line(b"{}\n").unwrap_err();
        assert!(err.to_string().contains("disappeared mid-run"), "{err}");
        // Failed for good, and quietly: the run reported the first error.
        assert!(log.write_line(b"{}\n").is_err());
        assert!(log.flush().is_ok());
    }

    #[test]
    fn files_are_0640_whatever_the_umask_and_an_existing_mode() {
        let d = dir("mode");
        let fresh = d.join("fresh");
        let existing = d.join("existing");
        std::fs::write(&existing, "x").unwrap();
        std::fs::set_permissions(&existing, Permissions::from_mode(0o666)).unwrap();
        // SAFETY: umask(2) has no preconditions; restored below. A strict umask (077) would
        // leave a new file 0600, unreadable by the log shipper's group, without the chmod.
        let old = unsafe { libc::umask(0o077) };
        let a = create_private(&fresh);
        let b = create_private(&existing);
        unsafe { libc::umask(old) };
        a.unwrap();
        b.unwrap();
        assert_eq!(mode(&fresh), 0o640);
        assert_eq!(mode(&existing), 0o640);
        assert_eq!(std::fs::read(&existing).unwrap(), b"", "truncated");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotates_between_whole_lines_and_keeps_n() {
        let d = dir("rotate");
        let path = d.join("events.jsonl");
        // A stale rotated file of an earlier run is shifted out, not kept forever.
        std::fs::write(d.join("events.jsonl.1"), "{\"old\":true}\n").unwrap();
        let mut log = LogFile::create(
            &path,
            Some(Rotation {
                max_bytes: 100,
                keep: 3,
            }),
        )
        .unwrap();
        let mut all = Vec::new();
        for i in 0..40 {
            // 20 to 38 bytes: lines never fall on the limit exactly.
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 19));
            log.write_line(line.as_bytes()).unwrap();
            all.push(line);
        }
        // One line longer than the limit gets a file of its own.
        let long = format!("{{\"long\":\"{}\"}}\n", "y".repeat(150));
        log.write_line(long.as_bytes()).unwrap();
        all.push(long.clone());
        log.flush().unwrap();

        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "events.jsonl",
                "events.jsonl.1",
                "events.jsonl.2",
                "events.jsonl.3"
            ]
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), long);
        // Oldest first, the kept files are the tail of what was written, in order, each made
        // of whole JSON lines and at most one line over the limit.
        let mut kept = String::new();
        for name in ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1"] {
            let p = d.join(name);
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.ends_with('\n'), "{name}: {text:?}");
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("{name}: {l:?}: {e}"));
            }
            let last = text.lines().last().unwrap().len() as u64 + 1;
            assert!(text.len() as u64 - last <= 100, "{name}: {}", text.len());
            assert_eq!(mode(&p), 0o640, "{name}");
            kept.push_str(&text);
        }
        kept.push_str(&std::fs::read_to_string(&path).unwrap());
        let whole = all.concat();
        assert!(whole.ends_with(&kept), "kept files are not the tail");
        assert!(
            !kept.contains("old"),
            "the earlier run's file is shifted out"
        );
        assert!(kept.len() < whole.len(), "something was rotated away");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_header_heads_every_file_a_rotation_starts() {
        let d = dir("header");
        let path = d.join("events.jsonl");
        let mut f = LogFile::create(
            &path,
            Some(Rotation {
                max_bytes: 64,
                keep: 10,
            }),
        )
        .unwrap();
        f.write_header(b"{\"kind\":\"start\"}\n").unwrap();
        for i in 0..12 {
            f.write_line(format!("{{\"n\":{i:04}}}\n").as_bytes())
                .unwrap();
        }
        f.flush().unwrap();
        let mut files = vec![path.clone()];
        files.extend(
            (1..)
                .map(|n| d.join(format!("events.jsonl.{n}")))
                .take_while(|p| p.exists()),
        );
        assert!(files.len() > 2, "{files:?}");
        let mut numbers = Vec::new();
        for p in files.iter().rev() {
            let text = std::fs::read_to_string(p).unwrap();
            let mut lines = text.lines();
            assert_eq!(
                lines.next(),
                Some("{\"kind\":\"start\"}"),
                "{}",
                p.display()
            );
            numbers.extend(lines.map(str::to_string));
        }
        // Oldest first, every line once.
        let want: Vec<String> = (0..12).map(|i| format!("{{\"n\":{i:04}}}")).collect();
        assert_eq!(numbers, want);
    }

    #[test]
    fn without_rotation_the_file_just_grows() {
        let d = dir("norot");
        let path = d.join("e.jsonl");
        let mut log = LogFile::create(&path, None).unwrap();
        for _ in 0..100 {
            log.write_line(b"{\"a\":1}\n").unwrap();
        }
        log.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 100);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_rotation_loses_nothing_already_written() {
        let d = dir("fail");
        let path = d.join("e.jsonl");
        let mut log = LogFile::create(
            &path,
            Some(Rotation {
                max_bytes: 10,
                keep: 1,
            }),
        )
        .unwrap();
        log.write_line(b"{\"a\":1}\n").unwrap();
        // Something in the way of the rotated name: renaming onto a non-empty directory fails.
        std::fs::create_dir_all(d.join("e.jsonl.1/x")).unwrap();
        let err = log.write_line(b"{\"b\":22222}\n").unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::NotFound, "{err}");
        // What was written before is flushed and still in place, whole.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
