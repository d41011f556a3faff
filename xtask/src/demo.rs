//! `cargo xtask demo`: the incident, caught and fixed, in about half a minute.
//!
//! 1. Bring up the incident lab with the misconfiguration (pods at MTU 1500, a VXLAN overlay
//!    adding 50 bytes, a new node whose uplink is 1450).
//! 2. Start the tracer on the lab's namespaces, live in the terminal, logging JSONL.
//! 3. Run the clients: small requests pass, the large POST and Redis SET time out, and the
//!    tracer shows where the packets die.
//! 4. Apply the fix (pod MTU 1400 = 1450 − 50) and run the clients again: all pass, and the
//!    tracer reports no size events after the fix.
//!
//! The demo fails (non-zero exit) when the lab does not behave like the incident, so it doubles
//! as a check of the whole chain.
use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::incident::{ClientResult, Incident, IncidentOptions, MIB};

const PREFIX: &str = "demo";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const FIXED_POD_MTU: u32 = 1400;

/// Kinds that mean "a packet was too big"; retransmissions are evidence, not size events.
const SIZE_KINDS: [&str; 4] = [
    "drop",
    "icmp_too_big_sent",
    "icmp_too_big_received",
    "oversize_tx",
];

pub fn run(tracer: &Path, log: &Path) -> Result<()> {
    if !tracer.is_file() {
        bail!(
            "{} not found: build it first (cargo xtask build)",
            tracer.display()
        );
    }
    let log = std::env::current_dir()?.join(log);
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
    let mut tracer = start_tracer(tracer, &incident.namespaces(), &log, &snapshot)?;
    let outcome = phases(&incident, &mut tracer);
    stop_tracer(&mut tracer);
    drop(incident);
    let (before, after, fix_at) = outcome?;

    let events = read_log(&log)?;
    let size_before = count(&events, |e| {
        SIZE_KINDS.contains(&e.kind.as_str()) && e.ts_ns < fix_at
    });
    let rtx_before = count(&events, |e| e.kind == "tcp_retransmit" && e.ts_ns < fix_at);
    let size_after = count(&events, |e| {
        SIZE_KINDS.contains(&e.kind.as_str()) && e.ts_ns >= fix_at
    });
    heading("result");
    println!(
        "  misconfigured: {} of {} requests timed out; the tracer saw {size_before} size events \
         and {rtx_before} retransmissions",
        before.iter().filter(|r| !r.ok).count(),
        before.len()
    );
    println!(
        "  fixed (pod MTU {FIXED_POD_MTU}): {} of {} requests ok; the tracer saw {size_after} size events",
        after.iter().filter(|r| r.ok).count(),
        after.len()
    );
    println!("  event log: {} ({} events)", log.display(), events.len());

    // The demo is also a check: it must have reproduced the incident and the fix.
    let large_failed = before.iter().filter(|r| !r.ok).count();
    if large_failed == 0 {
        bail!("the misconfigured lab did not reproduce the incident: every request passed");
    }
    if before.iter().any(|r| r.name.contains("small") && !r.ok) {
        bail!("small requests failed in the misconfigured lab: that is not the incident");
    }
    if after.iter().any(|r| !r.ok) {
        bail!("requests still fail after the fix");
    }
    if size_before == 0 {
        bail!("the tracer saw no size event while large requests were timing out");
    }
    if size_after != 0 {
        bail!("the tracer still saw {size_after} size events after the fix");
    }
    Ok(())
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

/// Runs both client rounds; returns their results and the wall time (ns) of the fix.
fn phases(
    incident: &Incident,
    tracer: &mut Child,
) -> Result<(Vec<ClientResult>, Vec<ClientResult>, i128)> {
    if let Some(status) = tracer.try_wait()? {
        bail!("the tracer exited early ({status})");
    }
    heading(&format!(
        "1. misconfigured: pod MTU {} + 50 B of VXLAN > new node's {}: running the clients",
        incident.opts.pod_mtu, incident.opts.new_mtu
    ));
    let before = clients(incident)?;
    heading(&format!(
        "2. fix: pod MTU {FIXED_POD_MTU} (= {} − 50 B VXLAN): running the clients again",
        incident.opts.new_mtu
    ));
    // Let the tracer print what the first round caused before the fix is applied.
    std::thread::sleep(Duration::from_millis(300));
    let fix_at = now_ns();
    incident.apply_fix(FIXED_POD_MTU)?;
    let after = clients(incident)?;
    std::thread::sleep(Duration::from_millis(300));
    Ok((before, after, fix_at))
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

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn start_tracer(
    tracer: &Path,
    namespaces: &[String],
    log: &Path,
    snapshot: &Path,
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("tracing") => return Ok(child),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                bail!("the tracer did not start tracing within 20 s");
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
fn stop_tracer(child: &mut Child) {
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

/// The two fields of a log line the demo needs.
struct LoggedEvent {
    kind: String,
    ts_ns: i128,
}

fn read_log(path: &PathBuf) -> Result<Vec<LoggedEvent>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the tracer left no log at {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let ts_ns = v["ts"].as_str().and_then(parse_rfc3339_ns).unwrap_or(0);
        out.push(LoggedEvent { kind, ts_ns });
    }
    Ok(out)
}

fn count(events: &[LoggedEvent], pred: impl Fn(&LoggedEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

/// `2026-11-25T18:09:41.123456789Z` → Unix ns (the tracer's own `ts` format, UTC only).
fn parse_rfc3339_ns(ts: &str) -> Option<i128> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_ns;

    #[test]
    fn parses_the_tracer_timestamps() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00.000000000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("2026-11-25T18:09:41.123456789Z"),
            Some(1_795_630_181_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T00:00:01.5Z"),
            Some(1_709_164_801_500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("yesterday"), None);
    }
}
