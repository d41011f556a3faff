//! `cargo xtask demo`: the incident, caught, explained and fixed, in about half a minute.
//!
//! 0. Bring up the incident lab with the misconfiguration (pods at MTU 1500, a VXLAN overlay
//!    adding 50 bytes, a new node whose uplink is 1450) and run `tracer check` on its nodes:
//!    the audit finds the mismatch before any traffic.
//! 1. Trace the lab's namespaces, live in the terminal, logging JSONL, while the clients run:
//!    small requests pass, the large POST and Redis SET time out, the tracer shows where the
//!    packets die and ends with the verdict (where, evidence, largest size that passes, fix,
//!    and the Calico change to make: the lab's snapshot lists its `calico-config`).
//! 2. `tracer report` on the log: the same verdict, offline.
//! 3. Apply the fix (pod MTU 1400 = 1450 − 50), confirm it (`tracer check --expect-mtu 1400`),
//!    trace the clients again: all pass and the verdict says "no MTU problem".
//!
//! The demo fails (non-zero exit) when the lab or the tracer does not behave like that, so it
//! doubles as a check of the whole chain.
use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::incident::{ClientResult, Incident, IncidentOptions, MIB};

const PREFIX: &str = "demo";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const FIXED_POD_MTU: u32 = 1400;
/// `tracer check` / `tracer report`: "found an MTU problem".
const EXIT_MTU_PROBLEM: i32 = 3;

pub fn run(tracer: &Path, log: &Path) -> Result<()> {
    if !tracer.is_file() {
        bail!(
            "{} not found: build it first (cargo xtask build)",
            tracer.display()
        );
    }
    let log = std::env::current_dir()?.join(log);
    let log_fixed = log.with_extension("fixed.jsonl");
    let opts = IncidentOptions {
        prefix: PREFIX.to_string(),
        ..IncidentOptions::default()
    };
    let started = Instant::now();
    let incident = Incident::up(opts).context("bringing up the incident lab")?;
    heading(&format!(
        "incident lab up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        describe(&incident)
    ));

    // What `kubectl get ... -o json` would say about the lab, so the tracer names pods,
    // the service and nodes.
    let snapshot = std::env::temp_dir().join("tracer-demo-k8s-snapshot.json");
    std::fs::write(&snapshot, incident.k8s_snapshot())
        .with_context(|| format!("writing {}", snapshot.display()))?;
    let nodes = [incident.old_node_ns.as_str(), incident.new_node_ns.as_str()];

    heading("0. tracer check: the MTU audit of both nodes, before any traffic");
    let audit_before = check(tracer, &nodes, None)?;

    heading(&format!(
        "1. misconfigured: pod MTU {} + 50 B of VXLAN > new node's {}: tracing the clients",
        incident.opts.pod_mtu, incident.opts.new_mtu
    ));
    let before = traced(tracer, &incident, &log, &snapshot)?;
    let verdict_before = final_verdicts(&log)?;

    heading("2. tracer report: the verdict again, offline, from the log");
    let report_code = run_tool(tracer, "report", &["report".as_ref(), log.as_os_str()])?;

    heading(&format!(
        "3. fix: pod MTU {FIXED_POD_MTU} (= {} − 50 B VXLAN; in the lab, set on the pods' veths as \
         the verdict's change and the pods' restart would), confirm it with tracer check \
         --expect-mtu {FIXED_POD_MTU}, trace again",
        incident.opts.new_mtu
    ));
    incident.apply_fix(FIXED_POD_MTU)?;
    let audit_after = check(tracer, &nodes, Some(FIXED_POD_MTU))?;
    let after = traced(tracer, &incident, &log_fixed, &snapshot)?;
    let verdict_after = final_verdicts(&log_fixed)?;
    drop(incident);

    heading("result");
    let problem = verdict_before
        .iter()
        .find(|v| v["severity"] == "problem" && v["problem"] == "mtu_black_hole");
    println!(
        "  misconfigured: tracer check exit {audit_before}; {} of {} requests timed out; verdict: {}",
        before.iter().filter(|r| !r.ok).count(),
        before.len(),
        problem.map_or("none".to_string(), |v| format!(
            "MTU black hole, largest size that passes {}, set the pod MTU to {}",
            v["largest_passing"], v["recommended_mtu"]
        ))
    );
    println!(
        "  fixed (pod MTU {FIXED_POD_MTU}): tracer check exit {audit_after}; {} of {} requests ok; verdict: {}",
        after.iter().filter(|r| r.ok).count(),
        after.len(),
        verdict_after
            .first()
            .and_then(|v| v["summary"].as_str())
            .unwrap_or("none")
    );
    println!(
        "  event logs: {} (misconfigured), {} (fixed)",
        log.display(),
        log_fixed.display()
    );

    // The demo is also a check: it must have reproduced the incident, explained it and fixed it.
    if before.iter().all(|r| r.ok) {
        bail!("the misconfigured lab did not reproduce the incident: every request passed");
    }
    if before.iter().any(|r| r.name.contains("small") && !r.ok) {
        bail!("small requests failed in the misconfigured lab: that is not the incident");
    }
    if after.iter().any(|r| !r.ok) {
        bail!("requests still fail after the fix");
    }
    if audit_before != EXIT_MTU_PROBLEM {
        bail!("tracer check did not find the misconfiguration (exit {audit_before})");
    }
    if audit_after != 0 {
        bail!("tracer check still finds a problem after the fix (exit {audit_after})");
    }
    let Some(problem) = problem else {
        bail!("the tracer gave no MTU black-hole verdict while large requests timed out");
    };
    if problem["recommended_mtu"] != FIXED_POD_MTU {
        bail!(
            "the verdict recommends {} instead of {FIXED_POD_MTU}",
            problem["recommended_mtu"]
        );
    }
    // The lab's snapshot lists its Calico config and the pods' controllers: the fix must come
    // as the change to make, ending with the client's Deployment's rollout restart.
    let restarts_the_client = problem["change"]["commands"]
        .as_array()
        .and_then(|c| c.last())
        .is_some_and(|c| c == "kubectl rollout restart deployment/order-api -n shop");
    if problem["change"]["value"] != FIXED_POD_MTU
        || problem["change"]["object"] != "configmap/calico-config"
        || !restarts_the_client
    {
        bail!(
            "the verdict does not give the Calico change for {FIXED_POD_MTU}: {}",
            problem["change"]
        );
    }
    if report_code != EXIT_MTU_PROBLEM {
        bail!("tracer report did not find the problem in the log (exit {report_code})");
    }
    if verdict_after.len() != 1 || verdict_after[0]["problem"] != "none" {
        bail!("after the fix the verdict is not \"no MTU problem\": {verdict_after:?}");
    }
    Ok(())
}

/// `tracer check --netns …` on the nodes (`--expect-mtu` to confirm a fix); its exit status.
fn check(tracer: &Path, nodes: &[&str], expect_mtu: Option<u32>) -> Result<i32> {
    let expect = expect_mtu.map(|m| m.to_string());
    let mut args: Vec<&std::ffi::OsStr> = vec!["check".as_ref()];
    for n in nodes {
        args.push("--netns".as_ref());
        args.push(n.as_ref());
    }
    if let Some(m) = &expect {
        args.push("--expect-mtu".as_ref());
        args.push(m.as_ref());
    }
    run_tool(tracer, "check", &args)
}

/// Runs the tracer with `args`, its output indented under `[label]`; its exit status.
fn run_tool(tracer: &Path, label: &str, args: &[&std::ffi::OsStr]) -> Result<i32> {
    let out = Command::new(tracer)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} {label}", tracer.display()))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("  [{label}] {line}");
    }
    Ok(out.status.code().unwrap_or(-1))
}

/// Trace the lab into `log` while the clients run; the tracer prints its verdict on exit.
fn traced(
    tracer: &Path,
    incident: &Incident,
    log: &Path,
    snapshot: &Path,
) -> Result<Vec<ClientResult>> {
    let mut child = Running(start_tracer(
        tracer,
        &incident.namespaces(),
        log,
        snapshot,
        Duration::from_secs(20),
    )?);
    if let Some(status) = child.0.try_wait()? {
        bail!("the tracer exited early ({status})");
    }
    let results = clients(incident)?;
    // Let the last retransmissions and drops reach the log before the verdict.
    std::thread::sleep(Duration::from_millis(300));
    stop_tracer(&mut child.0);
    Ok(results)
}

/// Stops the tracer also when the demo fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        stop_tracer(&mut self.0);
    }
}

/// The `kind: "verdict"`, `stage: "final"` objects of a log.
pub(crate) fn final_verdicts(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the tracer left no log at {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        if v["kind"] == "verdict" && v["stage"] == "final" {
            out.push(v);
        }
    }
    Ok(out)
}

fn describe(i: &Incident) -> String {
    format!(
        "client pod {} on node {} (uplink MTU {}) → service {}:{{{},{}}} → server pod {} on node {} \
         (uplink MTU {}), {:?} overlay MTU {}, pod MTU {}",
        i.client_ip,
        i.old_node_ns,
        i.opts.old_mtu,
        i.service_ip,
        i.http_port,
        i.redis_port,
        i.server_ip,
        i.new_node_ns,
        i.opts.new_mtu,
        i.opts.overlay,
        i.opts.tunnel_mtu,
        i.opts.pod_mtu
    )
}

fn heading(text: &str) {
    println!("\n== {text}");
}

/// The incident's four requests, each printed as soon as it ends so that it reads alongside
/// the tracer's lines.
fn clients(incident: &Incident) -> Result<Vec<ClientResult>> {
    let runs: [&dyn Fn() -> Result<ClientResult>; 4] = [
        &|| incident.http_get_small(CLIENT_TIMEOUT),
        &|| incident.http_post(MIB, CLIENT_TIMEOUT),
        &|| incident.redis_set(1, CLIENT_TIMEOUT),
        &|| incident.redis_set(MIB, CLIENT_TIMEOUT),
    ];
    let mut out = Vec::new();
    for run in runs {
        let r = run()?;
        println!("  client: {r}");
        out.push(r);
    }
    Ok(out)
}

pub(crate) fn start_tracer(
    tracer: &Path,
    namespaces: &[String],
    log: &Path,
    snapshot: &Path,
    ready_within: Duration,
) -> Result<Child> {
    let mut cmd = Command::new(tracer);
    cmd.arg("run");
    for ns in namespaces {
        cmd.args(["--netns", ns]);
    }
    cmd.arg("--k8s-snapshot").arg(snapshot);
    cmd.arg("--log").arg(log).args(["--duration", "120"]);
    heading(&format!("tracer: {}", crate::lab::display_cmd(&cmd)));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.display()))?;
    let (tx, rx) = mpsc::channel();
    forward_lines(child.stdout.take(), tx.clone());
    forward_lines(child.stderr.take(), tx);
    // Ready once it says it is tracing (all hooks attached).
    let deadline = Instant::now() + ready_within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("tracing") => return Ok(child),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "the tracer did not start tracing within {} s",
                    ready_within.as_secs()
                );
            }
        }
    }
}

/// Copies a child's output lines to our stdout (prefixed) and to `tx`.
fn forward_lines<R: Read + Send + 'static>(pipe: Option<R>, tx: mpsc::Sender<String>) {
    let Some(pipe) = pipe else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            println!("  [tracer] {line}");
            let _ = tx.send(line);
        }
    });
}

/// SIGINT (the tracer flushes its log and prints its summary), SIGKILL after 5 s.
pub(crate) fn stop_tracer(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // Give the output threads a moment to print the summary.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("demo: the tracer ignored SIGINT for 5 s: killing it");
        let _ = child.kill();
    }
    let _ = child.wait();
}
