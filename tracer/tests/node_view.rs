//! The verdict from one node's view, as the tracer is deployed (issue 16): `tracer run --netns
//! <sending node> --netns <client pod>`, never the router or the far node. In multi-stage
//! setups the first hop recovers by ICMP and a later one black-holes (a router whose next hop is
//! smaller, outer DF set, its ICMP lost on the way): the node sees the pod shrink and then the
//! shrunk segments time out again. That must be a problem, never "path-MTU discovery works";
//! and the setups that do recover (outer DF unset, TCP MTU probing, a healthy or fixed cluster)
//! must not become one. Each case: real kernel, real redis-server and HTTP server, the verdict
//! live and from `tracer report`.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{dump, final_verdicts, read_events, TempLog, Tracer};
use xtask::incident::{Incident, IncidentOptions, OuterDf, Path};

/// Where the ICMP "fragmentation needed" of the router's next hop is lost.
#[derive(Clone, Copy, Debug)]
enum IcmpLost {
    /// It comes through.
    Nowhere,
    /// Filtered where it is sent (the router's output, and the node's input: the lab's filter).
    AtTheRouter,
    /// Dropped on arrival at the sending node only (a host firewall).
    AtTheNode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Large transfers time out; the verdict is a problem that names them.
    Problem,
    /// Every transfer passes; no verdict of severity problem.
    NoProblem,
}

struct Case {
    name: &'static str,
    path: Path,
    outer_df: OuterDf,
    icmp_lost: IcmpLost,
    /// The new node's uplink and the router's link to it.
    new_mtu: u32,
    /// The overlay device on both nodes (sized for the old node's own uplink: 1450).
    tunnel_mtu: u32,
    /// `net.ipv4.tcp_mtu_probing=1` in the client pod.
    tcp_mtu_probing: bool,
    /// The pod MTU already fixed to this.
    fixed_pod_mtu: Option<u32>,
    /// The tracer may probe (`--no-probe` otherwise).
    probe: bool,
    expect: Expect,
}

const RECOVERED_THEN_BLACK_HOLED: Case = Case {
    name: "first hop recovers by ICMP, the router's 1450 next hop black-holes (ICMP filtered)",
    path: Path::Router,
    outer_df: OuterDf::Set,
    icmp_lost: IcmpLost::AtTheRouter,
    new_mtu: 1450,
    tunnel_mtu: 1450,
    tcp_mtu_probing: false,
    fixed_pod_mtu: None,
    probe: true,
    expect: Expect::Problem,
};

/// A client may take this long: a passing one needs well under a second here (TCP MTU probing
/// several RTO rounds), a failing one waits it out.
fn timeout(case: &Case) -> Duration {
    support::slow(Duration::from_secs(if case.tcp_mtu_probing {
        20
    } else {
        4
    }))
}

fn up(case: &Case) -> Incident {
    let _ = xtask::lab::cleanup_stale("tnv");
    let incident = Incident::up(IncidentOptions {
        prefix: xtask::lab::Lab::unique_prefix("tnv"),
        path: case.path,
        outer_df: case.outer_df,
        filter_icmp: matches!(case.icmp_lost, IcmpLost::AtTheRouter),
        new_mtu: case.new_mtu,
        tunnel_mtu: case.tunnel_mtu,
        ..IncidentOptions::default()
    })
    .expect("incident lab");
    if matches!(case.icmp_lost, IcmpLost::AtTheNode) {
        let rules = "table ip tnv_icmp {\n chain input {\n  type filter hook input priority 0;\n  \
                     icmp type destination-unreachable icmp code frag-needed drop\n }\n}\n";
        incident
            .lab
            .nft(&incident.old_node_ns, rules)
            .expect("nft in the old node");
    }
    if case.tcp_mtu_probing {
        incident
            .lab
            .exec_ok(
                &incident.client_ns,
                &["sysctl", "-qw", "net.ipv4.tcp_mtu_probing=1"],
            )
            .expect("sysctl in the client pod");
    }
    if let Some(mtu) = case.fixed_pod_mtu {
        incident.apply_fix(mtu).expect("fix");
    }
    incident
}

/// The tracer as deployed on the sending node: its namespace and its pod's, named from the
/// lab's snapshot.
fn trace_node(incident: &Incident, log: &TempLog, probe: bool) -> Tracer {
    let snapshot = format!("{}.k8s.json", log.0.display());
    std::fs::write(&snapshot, incident.k8s_snapshot()).expect("write snapshot");
    let log_path = log.0.display().to_string();
    let mut args = vec![
        "--netns",
        &incident.old_node_ns,
        "--netns",
        &incident.client_ns,
        "--k8s-snapshot",
        &snapshot,
        "--log",
        &log_path,
        "--node-name",
        "worker-116",
    ];
    if !probe {
        args.push("--no-probe");
    }
    Tracer::start(&args, &[])
}

fn run_case(case: &Case) {
    println!("case: {}", case.name);
    let incident = up(case);
    let log = TempLog::new("node-view");
    let t = trace_node(&incident, &log, case.probe);
    let results = incident.run_clients(timeout(case)).expect("clients");
    for r in &results {
        println!("  {r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, stdout, stderr) = t.stop();
    assert!(status.success(), "{}", stderr.join("\n"));
    let events = read_events(&log.0);
    // The log opens with what the run watched and could not see.
    let start = &events[0];
    assert_eq!(start["kind"], "start", "{start}");
    assert_eq!(start["node"], "worker-116", "{start}");
    let watched: Vec<&str> = start["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        watched,
        [incident.old_node_ns.as_str(), incident.client_ns.as_str()]
    );
    assert!(
        start["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["concern"] == "drops" && h["outcome"] == "attached"),
        "{start}"
    );
    let verdicts = final_verdicts(&events, &log);
    let problems: Vec<&Value> = verdicts
        .iter()
        .filter(|v| v["severity"] == "problem")
        .collect();
    let shown = || format!("{}\n{stdout}\n{}", case.name, dump(&verdicts));
    // Every verdict says whose view it is.
    assert!(
        verdicts.iter().all(|v| v["node"] == "worker-116"),
        "{}",
        shown()
    );
    match case.expect {
        Expect::NoProblem => {
            assert!(results.iter().all(|r| r.ok), "{}", shown());
            assert!(
                problems.is_empty(),
                "a setup that recovers is not a problem: {}",
                shown()
            );
        }
        Expect::Problem => {
            // The symptom: small requests pass, large ones time out.
            assert!(results[0].ok && results[2].ok, "{}", shown());
            assert!(!results[1].ok && !results[3].ok, "{}", shown());
            assert_eq!(problems.len(), 1, "one problem for one path: {}", shown());
            let v = problems[0];
            assert_eq!(v["problem"], "mtu_black_hole", "{}", shown());
            // Never "works": no verdict may say path-MTU discovery recovered this path.
            assert!(
                verdicts.iter().all(|v| v["problem"] != "pmtud_recovered"),
                "{}",
                shown()
            );
            // Both large transfers are named, by service port.
            for port in [incident.http_port, incident.redis_port] {
                assert!(
                    v["flows"].as_array().unwrap().iter().any(|f| {
                        f["stuck"] == true && (f["dport"] == port || f["service"]["port"] == port)
                    }),
                    "no stuck flow to port {port}: {}",
                    shown()
                );
            }
            // The kernel's sequence numbers: each stuck connection re-sent the same bytes at
            // its timeouts (what makes it stuck however irregular the gaps).
            for port in [incident.http_port, incident.redis_port] {
                let mut times: std::collections::HashMap<u64, u32> = Default::default();
                for e in events.iter().filter(|e| {
                    e["kind"] == "tcp_retransmit"
                        && (e["dport"] == port || e["service"]["port"] == port)
                }) {
                    let seq = e["tcp_seq"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("a retransmission without tcp_seq: {e}"));
                    *times.entry(seq).or_default() += 1;
                }
                assert!(
                    times.values().any(|&n| n >= 3),
                    "no bytes re-sent 3 times to port {port}: {times:?}\n{}",
                    shown()
                );
            }
            if case.probe {
                // Measured: the tracer probed toward the pod, and its number is the verdict's.
                assert_eq!(v["confidence"], "measured", "{}", shown());
                let probe = events
                    .iter()
                    .find(|e| e["kind"] == "probe" && e["status"] == "ok")
                    .unwrap_or_else(|| panic!("no probe line: {}", shown()));
                assert_eq!(v["recommended_mtu"], probe["path_mtu"], "{}", shown());
                // A recommended MTU is one that passes: rerun the clients with it.
                let mtu = v["recommended_mtu"].as_u64().expect("a recommended MTU") as u32;
                incident.apply_fix(mtu).expect("apply the recommended MTU");
                for r in incident.run_clients(timeout(case)).expect("clients") {
                    assert!(r.ok, "with the recommended MTU {mtu}: {r}\n{}", shown());
                }
            } else {
                // Unmeasured: the bound it knows, and no made-up number.
                assert_eq!(v["confidence"], "inferred", "{}", shown());
                assert!(v["recommended_mtu"].is_null(), "{}", shown());
                assert!(
                    v["summary"].as_str().unwrap().contains("further on"),
                    "{}",
                    shown()
                );
            }
        }
    }
}

#[test]
fn recovered_first_hop_then_a_router_black_hole_is_a_problem() {
    run_case(&RECOVERED_THEN_BLACK_HOLED);
}

#[test]
fn without_the_probe_the_verdict_gives_the_bound_and_no_number() {
    run_case(&Case {
        name: "first hop recovers, the router black-holes; --no-probe",
        probe: false,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}

#[test]
fn recovered_first_hop_then_the_icmp_dropped_at_the_node_is_a_problem() {
    run_case(&Case {
        name: "first hop recovers, the router's ICMP dropped on arrival at the node",
        icmp_lost: IcmpLost::AtTheNode,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}

#[test]
fn recovered_first_hop_then_a_smaller_next_hop_is_a_problem() {
    run_case(&Case {
        name: "first hop recovers, the router's next hop is 1400 (ICMP filtered)",
        new_mtu: 1400,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}

#[test]
fn outer_df_unset_the_router_fragments_and_it_is_no_problem() {
    run_case(&Case {
        name: "outer DF unset: the router fragments the VXLAN packets",
        outer_df: OuterDf::Unset,
        expect: Expect::NoProblem,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}

#[test]
fn tcp_mtu_probing_recovers_and_it_is_no_problem() {
    run_case(&Case {
        name: "tcp_mtu_probing=1 in the client pod finds a size that passes",
        tcp_mtu_probing: true,
        expect: Expect::NoProblem,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}

#[test]
fn a_healthy_cluster_is_no_problem() {
    run_case(&Case {
        name: "equal MTUs on every link",
        path: Path::L2,
        outer_df: OuterDf::Unset,
        icmp_lost: IcmpLost::Nowhere,
        new_mtu: 1500,
        tunnel_mtu: 1450,
        fixed_pod_mtu: Some(1400),
        expect: Expect::NoProblem,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}

#[test]
fn the_fixed_incident_is_no_problem() {
    run_case(&Case {
        name: "the incident with the pod MTU fixed to 1400",
        path: Path::L2,
        outer_df: OuterDf::Unset,
        icmp_lost: IcmpLost::Nowhere,
        tunnel_mtu: 1500,
        fixed_pod_mtu: Some(1400),
        expect: Expect::NoProblem,
        ..RECOVERED_THEN_BLACK_HOLED
    });
}
