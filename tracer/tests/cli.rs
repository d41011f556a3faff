//! Bad input gets a clear error and a non-zero exit, never a panic, and fails before anything is
//! attached. Each row: arguments, a phrase the error must contain.
mod support;

use std::process::Command;

use support::{read_events, read_log_text, tracer_bin, TempLog};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("run tracer");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_input_is_refused_clearly() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--netns", "no-such-namespace-xyz"],
            "/run/netns/no-such-namespace-xyz",
        ),
        (
            &["run", "--netns", "/etc/hostname"],
            "not a network namespace",
        ),
        (
            &["run", "--iface", "nosuchdev0"],
            "--iface nosuchdev0: no such interface",
        ),
        (
            &["run", "--log", "/nonexistent-dir/x.jsonl"],
            "cannot create the event log /nonexistent-dir/x.jsonl",
        ),
        (
            &["run", "--log", "/tmp/a.jsonl", "--log", "/tmp/b.jsonl"],
            "--log is given at most twice: one FILE and `-`",
        ),
        (
            &["run", "--log", "-", "--pcap", "-"],
            "--log - and --pcap - both ask for standard output",
        ),
        (&["run", "--duration", "abc"], "not a number of seconds"),
        (&["run", "--duration", "0"], "positive"),
        (&["run", "--ringbuf-kib", "1000"], "power of two"),
        (&["run", "--unknown-flag"], "--unknown-flag"),
        (&["frobnicate"], "frobnicate"),
        (
            &["report", "/nonexistent-dir/events.jsonl"],
            "cannot open the event log /nonexistent-dir/events.jsonl",
        ),
        (&["report", "/etc/hostname"], "holds no tracer events"),
        (&["report", "/etc"], "/etc"),
        (&["report"], "FILE.jsonl"),
        // Malformed values (issue 9): each named with what was expected.
        (&["run", "--netns", ""], "--netns: empty namespace name"),
        (&["run", "--log-max-size", "12Q"], "unknown size unit `Q`"),
        (&["run", "--log-keep", "0"], "0 is not in 1..=1000"),
        (&["run", "--log-keep", "1001"], "1001 is not in 1..=1000"),
        (
            &["run", "--pcap", "/tmp/x.pcapng", "--snaplen", "abc"],
            "invalid value 'abc' for '--snaplen",
        ),
        (
            &["run", "--metrics", "99999"],
            "not an address to listen on",
        ),
        (
            &["run", "--metrics", "300.1.1.1:80"],
            "not an address to listen on",
        ),
        (&["run", "--duration", "1e400"], "at most a year"),
        (&["run", "--duration", "-5"], "give a positive duration"),
        (&["run", "--duration", "nan"], "give a positive duration"),
        (
            &["run", "--ringbuf-kib", "0"],
            "power of two between 64 and 1048576",
        ),
        (
            &["run", "--ringbuf-kib", "99999999999"],
            "not a whole number of KiB",
        ),
        (
            &[
                "run",
                "--iface",
                "cali*",
                "--netns",
                "no-such-namespace-xyz",
            ],
            "/run/netns/no-such-namespace-xyz",
        ),
    ];
    for (args, needle) in cases {
        let (code, stderr) = run(args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        // Nothing was attached: the start-up block only comes after a successful attach.
        assert!(
            !stderr.contains("tracing…"),
            "{args:?} started tracing:\n{stderr}"
        );
    }
}

#[test]
fn a_bad_capture_path_or_a_taken_metrics_port_fails_before_any_file_is_truncated() {
    let log = TempLog::new("keep-outputs");
    let pcap = std::path::PathBuf::from(format!("{}.pcapng", log.0.display()));
    std::fs::write(&log.0, "{\"kind\":\"drop\"}\n").unwrap();
    std::fs::write(&pcap, "earlier capture").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(&[
        "run",
        "--log",
        log.0.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
        "--metrics",
        &port,
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {port} for --metrics")),
        "{stderr}"
    );
    assert!(!stderr.contains("tracing…"), "{stderr}");
    let (code, stderr) = run(&[
        "run",
        "--log",
        log.0.to_str().unwrap(),
        "--pcap",
        "/nonexistent-dir/x.pcapng",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot create the capture /nonexistent-dir/x.pcapng"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&log.0).unwrap(),
        "{\"kind\":\"drop\"}\n"
    );
    assert_eq!(std::fs::read_to_string(&pcap).unwrap(), "earlier capture");
    let _ = std::fs::remove_file(&pcap);
}

#[test]
fn an_existing_log_is_not_clobbered_by_a_failing_start() {
    // A run that fails on its arguments must not truncate a log left by an earlier run.
    let log = TempLog::new("keep");
    std::fs::write(&log.0, "{\"kind\":\"drop\"}\n").unwrap();
    let (code, _) = run(&[
        "run",
        "--iface",
        "nosuchdev0",
        "--log",
        log.0.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert_eq!(
        std::fs::read_to_string(&log.0).unwrap(),
        "{\"kind\":\"drop\"}\n"
    );
}

#[test]
fn missing_capabilities_are_named() {
    // Run as an unprivileged user (setpriv from util-linux drops every capability).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            tracer_bin(),
            "run",
            "--duration",
            "1",
        ])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("missing capabilities: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN"),
        "{stderr}"
    );
}

#[test]
fn duration_stops_by_itself_with_a_summary() {
    let log = TempLog::new("duration");
    let started = std::time::Instant::now();
    let out = Command::new(tracer_bin())
        .args(["run", "--duration", "1", "--log", log.0.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed().as_secs_f64() < 15.0);
    assert!(
        stderr.contains("tp_btf/kfree_skb ✔") || stderr.contains("tracepoint/skb/kfree_skb ✔"),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("summary:")),
        "{stderr}"
    );
    // Every line of the log (if any event happened on the host) is complete JSON.
    let _ = read_events(&log.0);
}

#[test]
fn a_log_file_and_stdout_both_get_the_log() {
    // As a DaemonSet may ask: a file on the node, and stdout for the cluster's log pipeline.
    let log = TempLog::new("file-and-stdout");
    let out = Command::new(tracer_bin())
        .args(["run", "--duration", "1", "--log", "-", "--log"])
        .arg(&log.0)
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kinds = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                v["kind"].as_str().unwrap_or_default().to_string()
            })
            .filter(|k| k == "start" || k == "verdict")
            .collect()
    };
    let on_stdout = kinds(&stdout);
    assert_eq!(
        on_stdout.first().map(String::as_str),
        Some("start"),
        "{stdout}"
    );
    assert!(on_stdout.iter().any(|k| k == "verdict"), "{stdout}");
    assert_eq!(on_stdout, kinds(&read_log_text(&log.0)));
    // The terminal's lines go to stderr then, not into the JSON on stdout.
    assert!(
        stderr.lines().any(|l| l.starts_with("summary:")),
        "{stderr}"
    );
}

#[test]
fn a_broken_snapshot_is_reported_and_tracing_goes_on() {
    let log = TempLog::new("bad-snapshot");
    let out = Command::new(tracer_bin())
        .args(["run", "--duration", "1", "--k8s-snapshot", "/etc/hostname"])
        .args(["--log", log.0.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("names: snapshot unusable, continuing without names"),
        "{stderr}"
    );
    assert!(stderr.contains("/etc/hostname"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("summary:")),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_kubernetes_api_is_reported_and_tracing_goes_on() {
    let out = Command::new(tracer_bin())
        .args([
            "run",
            "--duration",
            "2",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("names: Kubernetes API: connecting"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Kubernetes API unavailable, continuing without it"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("summary:")),
        "{stderr}"
    );
}

/// `tracer report` reads what a crash or a disk-full left: whole lines are used, the cut last
/// line and foreign lines are named on stderr, and the verdict still comes out.
#[test]
fn report_reads_a_damaged_log_and_names_the_bad_lines() {
    let recorded = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/verdict/testdata/l2vxlan.jsonl"
    );
    let text = std::fs::read_to_string(recorded).unwrap();
    let log = TempLog::new("report-damaged");
    let mut damaged = String::from("not json at all\n");
    damaged.push_str(&text);
    damaged.push_str(r#"{"ts":"yesterday","kind":"drop"}"#);
    damaged.push('\n');
    damaged.push_str(r#"{"ts":"2026-11-25T20:24:17.26Z","kind":"teleport"}"#);
    damaged.push('\n');
    // Cut mid-line, as a crash would leave it.
    damaged.push_str(&text.lines().next().unwrap()[..40]);
    std::fs::write(&log.0, damaged).unwrap();
    let out = Command::new(tracer_bin())
        .args(["report", log.0.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("MTU PROBLEM"), "{stdout}");
    assert!(stdout.contains("set the pod MTU to 1400"), "{stdout}");
    assert!(stderr.contains("4 lines skipped"), "{stderr}");
    for needle in [
        "line 1: not an event",
        "bad timestamp `yesterday`",
        "unknown kind `teleport`",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?}:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A rotated log is read as one run, oldest file first: split anywhere between lines, it gives
/// the verdict the whole log gives.
#[test]
fn report_reads_a_rotated_log_as_one_run() {
    let recorded = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/verdict/testdata/router_df.jsonl"
    );
    let text = std::fs::read_to_string(recorded).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (older, newer) = lines.split_at(lines.len() / 2);
    let a = TempLog::new("report-rot-1");
    let b = TempLog::new("report-rot-0");
    std::fs::write(&a.0, older.join("\n") + "\n").unwrap();
    std::fs::write(&b.0, newer.join("\n") + "\n").unwrap();
    let json = |args: &[&str]| {
        let out = Command::new(tracer_bin())
            .args(["report", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let whole = json(&[recorded]);
    let split = json(&[a.0.to_str().unwrap(), b.0.to_str().unwrap()]);
    assert_eq!(whole, split);
    assert!(whole.contains(r#""recommended_mtu":1400"#), "{whole}");
}

/// `--color` decides, else the environment as the ecosystem reads it (NO_COLOR over
/// CLICOLOR_FORCE), for output that is not a terminal here (a pipe): colour only when forced.
#[test]
fn colour_follows_the_flag_then_the_environment() {
    let escapes = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(args).args(["run", "--duration", "0.5s"]);
        for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE"] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout.windows(2).any(|w| w == b"\x1b[")
    };
    assert!(!escapes(&[], &[]), "a pipe gets no colour by default");
    assert!(escapes(&["--color", "always"], &[]));
    assert!(!escapes(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]));
    assert!(escapes(&[], &[("CLICOLOR_FORCE", "1")]));
    assert!(!escapes(&[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]));
}

/// Shell completions and man pages come from the parser's own definition: the bash script is
/// valid bash and offers the options, and the man pages name them.
#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let bash = Command::new(tracer_bin())
        .args(["completion", "bash"])
        .output()
        .expect("completion");
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    for word in ["--netns", "--pcap", "--expect-mtu", "report", "check"] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
    let dir = std::env::temp_dir().join(format!("tracer-man-{}", std::process::id()));
    let path = dir.join("tracer.bash");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(tracer_bin())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    assert!(!Command::new(tracer_bin())
        .args(["completion", "tcsh"])
        .status()
        .unwrap()
        .success());

    let pages = Command::new(tracer_bin())
        .arg("manpages")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(pages.success());
    let run = std::fs::read_to_string(dir.join("tracer-run.1")).unwrap();
    assert!(
        run.starts_with(".ie") && run.contains(".TH tracer-run 1"),
        "{run}"
    );
    assert!(run.contains("\\-\\-netns"), "{run}");
    let top = std::fs::read_to_string(dir.join("tracer.1")).unwrap();
    for sub in ["tracer\\-run(1)", "tracer\\-report(1)", "tracer\\-check(1)"] {
        assert!(top.contains(sub), "{sub} not referenced:\n{top}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
