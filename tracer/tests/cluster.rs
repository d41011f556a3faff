//! One verdict for the cluster (issue 17): a tracer per node, as the DaemonSet deploys them
//! (`--netns <node> --netns <its pod>`, `--node-name`), two processes, two logs; then
//! `tracer report nodeA.jsonl nodeB.jsonl` must say where the packets die — on the sender's
//! node, on the receiver's node, or between them — and each log alone a weaker but not wrong
//! verdict. The same two logs as a `kubectl logs --prefix --timestamps` stream read the same;
//! shifted by a few seconds they still join, by ten minutes they are reported as skewed.
//! Real kernel, real namespaces, real redis-server and HTTP server.
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{dump, read_log_text, TempLog, Tracer};
use xtask::incident::{Incident, IncidentOptions, OuterDf, Path};

const SENDER: &str = "worker-116";
const RECEIVER: &str = "worker-208";

struct Case {
    name: &'static str,
    /// Short name for recordings.
    slug: &'static str,
    opts: IncidentOptions,
    /// The pod MTU already fixed to this.
    fixed_pod_mtu: Option<u32>,
    /// The joined verdict's `where`; `None`: no problem at all.
    dies_at: Option<&'static str>,
}

fn up(case: &Case) -> Incident {
    let _ = xtask::lab::cleanup_stale("tcl");
    let incident = Incident::up(IncidentOptions {
        prefix: xtask::lab::Lab::unique_prefix("tcl"),
        ..case.opts.clone()
    })
    .expect("incident lab");
    if let Some(mtu) = case.fixed_pod_mtu {
        incident.apply_fix(mtu).expect("fix");
    }
    incident
}

/// One node's tracer, as deployed: its namespace and its pod's.
fn trace(incident: &Incident, log: &TempLog, node: &str, node_ns: &str, pod_ns: &str) -> Tracer {
    let snapshot = format!("{}.k8s.json", log.0.display());
    std::fs::write(&snapshot, incident.k8s_snapshot()).expect("write snapshot");
    let log_path = log.0.display().to_string();
    Tracer::start(
        &[
            "--netns",
            node_ns,
            "--netns",
            pod_ns,
            "--k8s-snapshot",
            &snapshot,
            "--log",
            &log_path,
            "--node-name",
            node,
            // No probe: the join must say where from what both ends saw, not from a measurement.
            "--no-probe",
            "--arrivals-interval",
            "1",
        ],
        &[],
    )
}

/// `tracer report --json` of `inputs` (files, or `-` with `stdin`): its verdicts.
fn report(inputs: &[&std::path::Path], stdin: Option<&str>) -> Vec<Value> {
    let mut child = Command::new(support::tracer_bin())
        .args(["report", "--json"])
        .args(inputs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tracer report");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    let out = child.wait_with_output().expect("tracer report");
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("report --json line"))
        .collect()
}

fn problems(verdicts: &[Value]) -> Vec<&Value> {
    verdicts
        .iter()
        .filter(|v| v["severity"] == "problem")
        .collect()
}

/// A log with every top-level time shifted by `secs` (a node whose clock is off).
fn shifted(text: &str, secs: i128) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).expect("log line");
        for key in ["ts", "first_ts", "last_ts"] {
            if let Some(ts) = v[key].as_str().and_then(tracer::time::parse_rfc3339) {
                v[key] = Value::String(tracer::time::rfc3339_nanos(ts + secs * 1_000_000_000));
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

/// Two nodes' logs as `kubectl logs -l app=tracer --prefix --timestamps` prints them:
/// interleaved by time, each line prefixed with its pod and the runtime's timestamp.
fn kubectl_stream(a: &str, b: &str) -> String {
    let mut lines: Vec<(i128, String)> = Vec::new();
    for (pod, text) in [("tracer-x7k2p", a), ("tracer-q9z4m", b)] {
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("log line");
            let ts = v["ts"]
                .as_str()
                .and_then(tracer::time::parse_rfc3339)
                .unwrap_or(0);
            lines.push((
                ts,
                format!(
                    "[pod/{pod}/tracer] {} {line}",
                    tracer::time::rfc3339_nanos(ts)
                ),
            ));
        }
    }
    lines.sort_by_key(|(ts, _)| *ts);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

fn run_case(case: &Case) {
    println!("case: {}", case.name);
    let incident = up(case);
    let (log_a, log_b) = (TempLog::new("cluster-a"), TempLog::new("cluster-b"));
    let a = trace(
        &incident,
        &log_a,
        SENDER,
        &incident.old_node_ns,
        &incident.client_ns,
    );
    let b = trace(
        &incident,
        &log_b,
        RECEIVER,
        &incident.new_node_ns,
        &incident.server_ns,
    );
    let results = incident
        .run_clients(support::slow(Duration::from_secs(4)))
        .expect("clients");
    for r in &results {
        println!("  {r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    for (t, name) in [(a, SENDER), (b, RECEIVER)] {
        let (status, _, stderr) = t.stop();
        assert!(status.success(), "{name}: {}", stderr.join("\n"));
    }
    let (text_a, text_b) = (read_log_text(&log_a.0), read_log_text(&log_b.0));
    // `TRACER_RECORD_DIR=DIR`: keep both logs (how `verdict/testdata/cluster-*.jsonl` were made).
    if let Some(dir) = std::env::var_os("TRACER_RECORD_DIR") {
        let slug = case.slug;
        std::fs::write(
            std::path::Path::new(&dir).join(format!("cluster-{slug}-a.jsonl")),
            &text_a,
        )
        .unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("cluster-{slug}-b.jsonl")),
            &text_b,
        )
        .unwrap();
    }
    let joined = report(&[&log_a.0, &log_b.0], None);
    let shown = |vs: &[Value]| format!("{}\n{}", case.name, dump(vs));
    // The receiver's tracer wrote what arrived from the sender's node.
    assert!(
        text_b.lines().any(|l| l.contains(r#""kind":"arrivals""#)
            && l.contains(&format!(r#""peer":"{}""#, incident.old_node_ip))),
        "no arrivals from {} in {RECEIVER}'s log",
        incident.old_node_ip
    );
    match case.dies_at {
        None => {
            assert!(results.iter().all(|r| r.ok), "{}", shown(&joined));
            assert!(problems(&joined).is_empty(), "{}", shown(&joined));
            assert!(
                joined.iter().all(|v| v["node"].is_null()),
                "{}",
                shown(&joined)
            );
        }
        Some(place) => {
            assert!(results[0].ok && results[2].ok, "{}", shown(&joined));
            assert!(!results[1].ok && !results[3].ok, "{}", shown(&joined));
            let p = problems(&joined);
            assert_eq!(p.len(), 1, "one verdict for one path: {}", shown(&joined));
            let v = p[0];
            assert_eq!(v["where"], place, "{}", shown(&joined));
            assert_eq!(v["path"]["src_node"], SENDER, "{}", shown(&joined));
            assert_eq!(v["path"]["dst_node"], RECEIVER, "{}", shown(&joined));
            let roles: Vec<(&str, &str)> = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| (n["node"].as_str().unwrap(), n["role"].as_str().unwrap()))
                .collect();
            assert_eq!(
                roles,
                [(SENDER, "sender"), (RECEIVER, "receiver")],
                "{}",
                shown(&joined)
            );
            assert!(v["fix"].is_string(), "{}", shown(&joined));
            // The sizes on each side, as the summary says them.
            let receiver = &v["nodes"][1];
            if place == "between" {
                let sent = v["nodes"][0]["largest_sent"].as_u64().expect("sent size");
                let arrived = receiver["largest_arrived"].as_u64().expect("arrived size");
                assert!(arrived < sent, "{}", shown(&joined));
                assert!(
                    v["summary"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("nothing above {arrived} B")),
                    "{}",
                    shown(&joined)
                );
            }

            // Each log alone: weaker, never wrong — no "recovered", and the receiver's log
            // alone never names a problem it cannot see.
            let alone_a = report(&[&log_a.0], None);
            let alone_b = report(&[&log_b.0], None);
            for v in alone_a.iter().chain(&alone_b) {
                assert_ne!(
                    v["problem"],
                    "pmtud_recovered",
                    "{}",
                    shown(std::slice::from_ref(v))
                );
                assert!(v["where"].is_null(), "{}", shown(std::slice::from_ref(v)));
            }
            assert_eq!(problems(&alone_a).len(), 1, "{}", shown(&alone_a));

            // Both logs as the cluster's log pipeline gives them: the same answer.
            let stream = kubectl_stream(&text_a, &text_b);
            let piped = report(&[std::path::Path::new("-")], Some(&stream));
            let q = problems(&piped);
            assert_eq!(q.len(), 1, "{}", shown(&piped));
            for field in ["where", "problem", "path", "nodes", "recommended_mtu"] {
                assert_eq!(q[0][field], v[field], "{field}: {}", shown(&piped));
            }

            // The receiver's clock 5 s ahead: still joined. Ten minutes: reported, not joined.
            for (secs, joins) in [(5, true), (600, false)] {
                let file = TempLog::new("cluster-b-shifted");
                std::fs::write(&file.0, shifted(&text_b, secs)).unwrap();
                let skewed = report(&[&log_a.0, &file.0], None);
                let w = skewed
                    .iter()
                    .find(|w| w["path"]["src_node"] == SENDER)
                    .unwrap_or_else(|| panic!("{}", shown(&skewed)));
                if joins {
                    assert_eq!(w["where"], v["where"], "+{secs} s: {}", shown(&skewed));
                    assert!(w["clock_skew_s"].is_null(), "{}", shown(&skewed));
                } else if place == "between" {
                    let skew = w["clock_skew_s"].as_f64().expect("skew reported");
                    assert!((skew - 600.0).abs() < 60.0, "{}", shown(&skewed));
                    assert!(w["where"].is_null(), "{}", shown(&skewed));
                }
            }
        }
    }
}

#[test]
fn a_router_black_hole_dies_between_the_nodes() {
    run_case(&Case {
        name: "the router's 1450 next hop black-holes (outer DF set, its ICMP filtered)",
        slug: "router",
        opts: IncidentOptions {
            path: Path::Router,
            outer_df: OuterDf::Set,
            filter_icmp: true,
            new_mtu: 1450,
            tunnel_mtu: 1450,
            ..IncidentOptions::default()
        },
        fixed_pod_mtu: None,
        dies_at: Some("between"),
    });
}

#[test]
fn the_l2_mismatch_dies_entering_the_receiving_node() {
    run_case(&Case {
        name: "one link, 1500 on the old node's end, 1450 on the new node's",
        slug: "l2",
        opts: IncidentOptions::default(),
        fixed_pod_mtu: None,
        dies_at: Some("receiver_node"),
    });
}

#[test]
fn a_healthy_cluster_is_no_problem_on_either_node() {
    run_case(&Case {
        name: "equal MTUs on every link, pod MTU 1400",
        slug: "healthy",
        opts: IncidentOptions {
            new_mtu: 1500,
            tunnel_mtu: 1450,
            ..IncidentOptions::default()
        },
        fixed_pod_mtu: Some(1400),
        dies_at: None,
    });
}
