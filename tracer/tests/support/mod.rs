//! Running the real `tracer` binary against lab namespaces, for the privileged tests.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn tracer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tracer")
}

/// A unique temporary path for one test's event log, removed on drop.
pub struct TempLog(pub PathBuf);

impl TempLog {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tracer-test-{}-{tag}-{n}.jsonl",
            std::process::id()
        ));
        TempLog(path)
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        // A failed test keeps its log for a look (the path is said on stderr).
        if std::thread::panicking() || std::env::var_os("TRACER_TEST_KEEP_LOGS").is_some() {
            eprintln!("kept the log of the failed test: {}", self.0.display());
            return;
        }
        // The live file and every rotated one (`--log-max-size`): a flood can rotate.
        for file in log_files(&self.0) {
            let _ = std::fs::remove_file(file);
        }
        // Files tests keep beside the log (a k8s snapshot, the tracer's stderr).
        let _ = std::fs::remove_file(format!("{}.k8s.json", self.0.display()));
        let _ = std::fs::remove_file(format!("{}.stderr", self.0.display()));
    }
}

/// A running tracer. Killed on drop if the test did not stop it (e.g. on a failed assertion),
/// so nothing stays attached.
/// A time limit, stretched 4 times when `TRACER_TEST_SLOW` is set: `cargo xtask vm` sets it in
/// its VMs, where qemu's TCG runs user space and the verifier 10–20 times slower than here.
pub fn slow(limit: Duration) -> Duration {
    if std::env::var_os("TRACER_TEST_SLOW").is_some() {
        limit * 4
    } else {
        limit
    }
}

pub struct Tracer {
    child: Option<Child>,
    stderr_lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
    stdout_thread: Option<thread::JoinHandle<String>>,
}

impl Tracer {
    /// Start `tracer run ARGS` and wait until it says it is tracing (all hooks attached).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Tracer {
        Self::start_within(args, env, slow(Duration::from_secs(30)))
    }

    /// [`Tracer::start`] allowing `ready` for the start: 6.1's verifier under TCG (the VM
    /// matrix) takes about a minute over the drop program once veth is loaded.
    pub fn start_within(args: &[&str], env: &[(&str, &str)], ready: Duration) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.arg("run").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("NO_COLOR", "1");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout_thread = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut t = Tracer {
            child: Some(child),
            stderr_lines: rx,
            stderr: Vec::new(),
            stdout_thread: Some(stdout_thread),
        };
        let deadline = Instant::now() + ready;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match t.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.starts_with("tracing");
                    t.stderr.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => {
                    let status = t.child.as_mut().unwrap().try_wait().ok().flatten();
                    panic!(
                        "tracer did not start (status {status:?}); stderr:\n{}",
                        t.stderr.join("\n")
                    );
                }
            }
        }
        t
    }

    /// Wait (bounded) for a stderr line containing `needle`; every line read is kept.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The process, for a test that signals and times it itself; [`Tracer::finish`] then
    /// collects the output.
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("running")
    }

    /// The output of a process taken with [`Tracer::take_child`] that has exited.
    pub fn finish(mut self, status: ExitStatus) -> (ExitStatus, String, Vec<String>) {
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(500)) {
            self.stderr.push(line);
        }
        let stdout = self
            .stdout_thread
            .take()
            .unwrap()
            .join()
            .unwrap_or_default();
        (status, stdout, std::mem::take(&mut self.stderr))
    }

    /// Stop with SIGINT like Ctrl-C; returns the exit status, stdout and full stderr.
    pub fn stop(mut self) -> (ExitStatus, String, Vec<String>) {
        let status = self.signal_and_wait(libc::SIGINT);
        self.finish(status)
    }

    /// Send `signal` and wait (10 s at most) for the process to end.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tracer did not stop within 10 s of signal {signal}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The files of a log the tracer may have rotated, oldest first: `FILE.N` … `FILE.1`, then
/// `FILE` (the order `tracer report` takes them in). Only the files that exist; rotated files
/// are numbered without gaps, so the first missing number ends them.
pub fn log_files(path: &std::path::Path) -> Vec<PathBuf> {
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let mut files: Vec<PathBuf> = (1..).map(rotated).take_while(|p| p.exists()).collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// The text of a whole log: its rotated files (oldest first) and the live file, in that order.
/// How fast a flood fills the log depends on the machine, so a test never knows whether the
/// log rotated: every test reads its log through this (or [`read_events`]).
pub fn read_log_text(path: &std::path::Path) -> String {
    let files = log_files(path);
    assert!(!files.is_empty(), "no event log at {}", path.display());
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_else(|e| panic!("read event log {}: {e}", f.display()))
        })
        .collect()
}

/// Every line of a JSONL log (all its rotated files, oldest first), parsed; panics with the
/// offending line if one is not JSON.
pub fn read_events(path: &std::path::Path) -> Vec<Value> {
    read_log_text(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line {l:?}: {e}")))
        .collect()
}

pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The kernel events these lines stand for: a line folded from a burst says how many in
/// `count` (logs of older versions have none: one each).
pub fn total(lines: &[&Value]) -> u64 {
    lines.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum()
}

/// The events the kernel could not queue, as the run's `lost` lines report them.
pub fn lost_total(events: &[Value]) -> u64 {
    of_kind(events, "lost")
        .iter()
        .map(|e| e["lost"].as_u64().unwrap_or(0))
        .sum()
}

pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn netns_inode(ns: &str) -> u64 {
    xtask::lab::Lab::netns_inode(ns).expect("netns inode")
}

/// The stand-in Kubernetes API (`fake_kube_api.py`) serving `list_json` on 127.0.0.1, and a
/// kubeconfig pointing at it. Killed on drop.
pub struct FakeKubeApi {
    child: Child,
    pub kubeconfig: PathBuf,
}

impl FakeKubeApi {
    pub fn start(list_json: &str) -> FakeKubeApi {
        use std::io::Write as _;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/fake_kube_api.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 fake API");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(list_json.as_bytes())
            .expect("feed the fake API");
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .expect("fake API port");
        let port: u16 = port.trim().parse().expect("port number");
        let kubeconfig = std::env::temp_dir().join(format!(
            "tracer-test-{}-{port}.kubeconfig",
            std::process::id()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:{port}\n\
                 users:\n- name: tracer\n  user:\n    token: lab-token\n\
                 contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: tracer\ncurrent-context: lab\n"
            ),
        )
        .expect("write kubeconfig");
        FakeKubeApi { child, kubeconfig }
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The first event of `kind` that satisfies `pred`; panics with every event when there is none,
/// so a failing test shows what the tracer did report.
pub fn find<'a>(
    events: &'a [Value],
    kind: &str,
    what: &str,
    pred: impl Fn(&&Value) -> bool,
) -> &'a Value {
    of_kind(events, kind)
        .into_iter()
        .find(pred)
        .unwrap_or_else(|| panic!("{what}:\n{}", dump(events)))
}

/// Whether the drop filter kept `event` for this reason (`reason`, `location`, ...).
pub fn matched(event: &Value, why: &str) -> bool {
    event["matched"]
        .as_array()
        .is_some_and(|m| m.iter().any(|v| v == why))
}

/// The BPF programs and links a process holds, from its descriptors' fdinfo (bpftool on this
/// host does not know owners, and other tracers may run at the same time).
pub fn held_bpf_objects(
    pid: u32,
) -> (
    std::collections::BTreeSet<u32>,
    std::collections::BTreeSet<u32>,
) {
    let mut progs = std::collections::BTreeSet::new();
    let mut links = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (progs, links);
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            let mut parts = line.split(':');
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(id) = value.trim().parse::<u32>() else {
                continue;
            };
            match key {
                "prog_id" => {
                    progs.insert(id);
                }
                "link_id" => {
                    links.insert(id);
                }
                _ => {}
            }
        }
    }
    (progs, links)
}

/// The run's final verdicts from its log, after checking that `tracer report` computes the
/// same ones offline from that log (numbers, not the namespace names only the run knows).
pub fn final_verdicts(events: &[Value], log: &TempLog) -> Vec<Value> {
    let live: Vec<Value> = events
        .iter()
        .filter(|e| e["kind"] == "verdict" && e["stage"] == "final")
        .cloned()
        .collect();
    assert!(
        !live.is_empty(),
        "no final verdict in the log:\n{}",
        dump(events)
    );
    let out = std::process::Command::new(tracer_bin())
        .args(["report", "--json"])
        .arg(&log.0)
        .output()
        .expect("tracer report");
    let problem = live.iter().any(|v| v["severity"] == "problem");
    assert_eq!(
        out.status.code(),
        Some(if problem { 3 } else { 0 }),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("report --json line"))
        .collect();
    assert_eq!(live.len(), offline.len(), "{live:#?}\n{offline:#?}");
    for (a, b) in live.iter().zip(&offline) {
        for field in [
            "severity",
            "problem",
            "path",
            "path_mtu",
            "largest_passing",
            "recommended_mtu",
            "fix",
            "evidence",
            "flows",
            "confidence",
            // From the log's start line: what the run could not see, and its audit.
            "not_seen",
            "audit",
        ] {
            assert_eq!(a[field], b[field], "{field}: live {a:#}\noffline {b:#}");
        }
    }
    live
}

/// The one verdict of severity `problem`.
pub fn the_problem(verdicts: &[Value]) -> &Value {
    let p: Vec<&Value> = verdicts
        .iter()
        .filter(|v| v["severity"] == "problem")
        .collect();
    assert_eq!(p.len(), 1, "{verdicts:#?}");
    p[0]
}
