//! `cargo xtask bench`: the tracer's costs as ratios to issue 7's targets (≥ 1 meets it).
//!
//! - pipeline: criterion's estimate of `tracer/benches/pipeline.rs` (decode, name from a
//!   10,000-pod inventory, analyse, write JSONL) in events/s, against 1,000,000/s;
//! - start-up: launch to "tracing…" (BTF parsing, attach, audit included), median of 5, against 1 s;
//! - memory: peak RSS (VmHWM) with a 10,000-pod / 2,000-service snapshot during a drop flood,
//!   against 64 MiB.
//!
//! Not yet: the datapath overhead (iperf3 through the lab's overlay, ABBA order).
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::lab::Lab;

const PIPELINE_TARGET: f64 = 1_000_000.0;
const STARTUP_TARGET_S: f64 = 1.0;
const RSS_TARGET_KIB: f64 = 64.0 * 1024.0;

/// `kubectl get pods,services,endpointslices,nodes -A -o json` of a cluster of `pods` pods on
/// `nodes` nodes and `services` services with five backends each. Pod `i` has 10.244.x.y.
pub fn cluster_snapshot(pods: u32, services: u32, nodes: u32) -> String {
    let ip = |net: &str, i: u32| format!("{net}.{}.{}", i / 250, i % 250 + 1);
    let mut items = Vec::new();
    for n in 0..nodes {
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"node-{n}"}},"status":{{"addresses":[{{"type":"InternalIP","address":"{}"}}]}}}}"#,
            ip("10.0", n)
        ));
    }
    for p in 0..pods {
        let a = ip("10.244", p);
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"namespace":"ns-{}","name":"pod-{p}"}},"spec":{{"nodeName":"node-{}"}},"status":{{"podIP":"{a}","podIPs":[{{"ip":"{a}"}}]}}}}"#,
            p % 50,
            p % nodes.max(1)
        ));
    }
    for s in 0..services {
        let backends: Vec<String> = (0..5)
            .map(|b| {
                format!(
                    r#"{{"addresses":["{}"]}}"#,
                    ip("10.244", (s * 5 + b) % pods.max(1))
                )
            })
            .collect();
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"namespace":"ns-{}","name":"svc-{s}"}},"spec":{{"clusterIP":"{}","ports":[{{"name":"http","protocol":"TCP","port":80,"targetPort":8080}}]}}}}"#,
            s % 50,
            ip("10.96", s)
        ));
        items.push(format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"namespace":"ns-{}","name":"svc-{s}-x","labels":{{"kubernetes.io/service-name":"svc-{s}"}}}},"addressType":"IPv4","endpoints":[{}],"ports":[{{"name":"http","protocol":"TCP","port":8080}}]}}"#,
            s % 50,
            backends.join(",")
        ));
    }
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    )
}

pub fn run(root: &Path, target_dir: &Path, tracer: &Path) -> Result<()> {
    let rows = [
        pipeline(root, target_dir)?,
        startup(tracer)?,
        memory(tracer)?,
    ];
    println!(
        "\n{:<34} {:>16} {:>12} {:>8}",
        "what", "measured", "target", "ratio"
    );
    for (what, measured, target, ratio) in &rows {
        println!("{what:<34} {measured:>16} {target:>12} {ratio:>8.2}");
    }
    println!("(ratio ≥ 1.00 meets the target)");
    Ok(())
}

type Row = (&'static str, String, String, f64);

fn pipeline(root: &Path, target_dir: &Path) -> Result<Row> {
    let status = Command::new("cargo")
        .args([
            "bench",
            "-p",
            "tracer",
            "--bench",
            "pipeline",
            "--",
            "decode_name_analyze_write",
        ])
        .current_dir(root)
        .status()
        .context("cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let est = target_dir.join("criterion/pipeline/decode_name_analyze_write/new/estimates.json");
    let text =
        std::fs::read_to_string(&est).with_context(|| format!("reading {}", est.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let ns_per_iter = v["mean"]["point_estimate"]
        .as_f64()
        .context("no mean estimate")?;
    // One iteration is 10,000 events (the benchmark's batch).
    let per_s = 10_000.0 / (ns_per_iter / 1e9);
    Ok((
        "pipeline events/s (1 core)",
        format!("{per_s:.0}"),
        format!("{PIPELINE_TARGET:.0}"),
        per_s / PIPELINE_TARGET,
    ))
}

/// Seconds from spawn to the "tracing…" line of `tracer run ARGS`; the tracer is stopped then.
fn time_to_tracing(tracer: &Path, args: &[&str]) -> Result<(f64, u32)> {
    let started = Instant::now();
    let mut child = Command::new(tracer)
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.display()))?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut elapsed = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.starts_with("tracing") {
            elapsed = Some(started.elapsed().as_secs_f64());
            break;
        }
    }
    let pid = child.id();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = child.wait();
    Ok((elapsed.context("the tracer never reported tracing")?, pid))
}

fn startup(tracer: &Path) -> Result<Row> {
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(time_to_tracing(tracer, &["--no-k8s-api"])?.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok((
        "start-up to all hooks attached (s)",
        format!("{median:.3}"),
        format!("{STARTUP_TARGET_S:.3}"),
        STARTUP_TARGET_S / median,
    ))
}

fn memory(tracer: &Path) -> Result<Row> {
    let snapshot = std::env::temp_dir().join("tracer-bench-k8s.json");
    std::fs::write(&snapshot, cluster_snapshot(10_000, 2_000, 100))?;
    let mut lab = Lab::new(&Lab::unique_prefix("bm"))?;
    let ns = lab.add_netns("flood")?;
    lab.ip(&ns, &["link", "set", "lo", "up"])?;
    let snap = snapshot.display().to_string();
    let log = std::env::temp_dir().join("tracer-bench-flood.jsonl");
    let log_s = log.display().to_string();
    let mut child = Command::new(tracer)
        .args([
            "run",
            "--all-drops",
            "--no-k8s-api",
            "--netns",
            &ns,
            "--k8s-snapshot",
            &snap,
        ])
        .args(["--log", &log_s])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("tracing"));
    if !ready {
        let _ = child.kill();
        bail!("the tracer did not start");
    }
    // A drop flood: UDP to a closed port (NO_SOCKET drops, each one an event with --all-drops).
    let flood = lab.exec(
        &ns,
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nend=time.time()+3\nn=0\nwhile time.time()<end:\n  s.sendto(b'x'*64,('127.0.0.1',9)); n+=1\nprint(n)",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    let sent = String::from_utf8_lossy(&flood.stdout).trim().to_string();
    let events = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    let _ = std::fs::remove_file(&log);
    println!("memory: {sent} datagrams sent to a closed port in 3 s, {events} log lines");
    Ok((
        "peak RSS, 10k-pod snapshot, flood (MiB)",
        format!("{:.1}", hwm_kib / 1024.0),
        format!("{:.1}", RSS_TARGET_KIB / 1024.0),
        RSS_TARGET_KIB / hwm_kib,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_snapshot_is_a_kubectl_list() {
        let v: serde_json::Value = serde_json::from_str(&cluster_snapshot(20, 4, 3)).unwrap();
        let items = v["items"].as_array().unwrap();
        let kind = |k: &str| items.iter().filter(|i| i["kind"] == k).count();
        assert_eq!(
            (
                kind("Node"),
                kind("Pod"),
                kind("Service"),
                kind("EndpointSlice")
            ),
            (3, 20, 4, 4)
        );
    }
}
