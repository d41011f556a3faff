//! The join on logs: the sender's side is a real lab recording (`testdata/router.jsonl`: the
//! first hop recovers by ICMP, a router's smaller next hop black-holes with its ICMP filtered),
//! stamped with its node; the receiver's side (its start line and `arrivals`) and the sender's
//! own address are written here, to vary what the far end saw. The lab test with a tracer on
//! each node is `tracer/tests/cluster.rs`.
use serde_json::Value;

use super::*;
use crate::report::Nodes;
use crate::verdict::tests::only_problem as the_problem;

const SENDER_ADDR: &str = "10.213.0.1";
const RECEIVER_ADDR: &str = "10.213.0.2";

/// The recording's lines stamped with `node`, shifted by `secs`.
fn stamped(text: &str, node: &str, secs: i128) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        v["node"] = Value::String(node.into());
        for key in ["ts", "first_ts", "last_ts"] {
            if let Some(ts) = v[key].as_str().and_then(parse_rfc3339) {
                v[key] = Value::String(rfc3339_nanos(ts + secs * 1_000_000_000));
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

fn sender_log() -> String {
    let recording = include_str!("../testdata/router.jsonl");
    let (first, last) = span_of(recording);
    // What arrived at the sender from the receiver (its ACKs): names the sender's address.
    let arrivals = arrivals_line(RECEIVER_ADDR, SENDER_ADDR, first, last, 120, 52);
    stamped(&format!("{recording}{arrivals}"), "worker-116", 0)
}

fn span_of(text: &str) -> (i128, i128) {
    let times: Vec<i128> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["ts"].as_str().and_then(parse_rfc3339))
        .collect();
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
}

fn arrivals_line(
    peer: &str,
    local: &str,
    first: i128,
    last: i128,
    packets: u64,
    max: u32,
) -> String {
    let mut counts = vec![0u64; crate::event::arrivals::SIZE_EDGES.len() + 1];
    counts[0] = packets;
    let a = Arrivals {
        ts: rfc3339_nanos(last + 500_000_000),
        kind: crate::event::arrivals::KIND.into(),
        node: None,
        netns: 4026532180,
        netns_name: Some("lab-new".into()),
        device: "eth0".into(),
        peer: Some(peer.parse().unwrap()),
        local: Some(local.parse().unwrap()),
        first_ts: rfc3339_nanos(first),
        last_ts: rfc3339_nanos(last),
        packets,
        bytes: packets * u64::from(max),
        max_len: max,
        sizes: Arrivals::classes(&counts),
    };
    serde_json::to_string(&a).unwrap() + "\n"
}

/// The receiver's log: its start line and what arrived from the sender (largest `max`).
fn receiver_log(max: Option<u32>, secs: i128) -> String {
    let (first, last) = span_of(include_str!("../testdata/router.jsonl"));
    let start = format!(
        r#"{{"ts":"{}","kind":"start","version":"0.1.0","node":"worker-208","addresses":["{RECEIVER_ADDR}"],"kernel":"6.18","hooks":[],"blind_spots":[],"namespaces":[],"audit":[],"pmtu_hook":false}}"#,
        rfc3339_nanos(first - 1_000_000_000)
    );
    let arrivals = max.map_or(String::new(), |m| {
        arrivals_line(SENDER_ADDR, RECEIVER_ADDR, first, last, 40, m)
    });
    stamped(&format!("{start}\n{arrivals}"), "worker-208", secs)
}

fn joined(logs: &[String]) -> Vec<Verdict> {
    let mut nodes = Nodes::default();
    for l in logs {
        nodes.read(l.as_bytes()).unwrap();
    }
    nodes.verdicts()
}

#[test]
fn nothing_large_arrived_so_the_packets_die_between_the_nodes() {
    let vs = joined(&[sender_log(), receiver_log(Some(598), 0)]);
    let v = the_problem(&vs);
    assert_eq!(v.dies_at, Some(DiesAt::Between), "{v:#?}");
    assert_eq!(v.problem, Problem::MtuBlackHole);
    // Seen at both ends: sent (the sender's retransmissions), never arrived (the receiver).
    assert_eq!(v.confidence, Confidence::Observed);
    assert!(v.node.is_none());
    assert_eq!(v.path.dst_node.as_deref(), Some(RECEIVER_ADDR));
    // The recording's path names no sender: the node whose log has its retransmissions.
    assert_eq!(v.path.src_node.as_deref(), Some("worker-116"));
    let roles: Vec<(&str, &str)> = v.nodes.iter().map(|n| (n.node.as_str(), n.role)).collect();
    assert_eq!(
        roles,
        [("worker-116", "sender"), ("worker-208", "receiver")]
    );
    // Told 1450 and shrank: 1450-byte packets + 50 B of VXLAN (the tunnel whose MTU refused them).
    assert_eq!(v.nodes[0].largest_sent, Some(1500), "{v:#?}");
    assert_eq!(v.nodes[1].largest_arrived, Some(598));
    assert_eq!(v.nodes[1].arrived_packets, Some(40));
    assert!(
        v.summary
            .contains("worker-208 received nothing above 598 B from it"),
        "{}",
        v.summary
    );
    // The bounds, and no pod MTU made of the small requests that passed.
    let fix = v.fix.as_deref().unwrap();
    assert!(
        fix.contains("at least 598 B") && fix.contains("below 1500 B"),
        "{fix}"
    );
    assert!(!fix.contains("548"), "{fix}");
    assert!(v.clock_skew_s.is_none());
    // The far end was heard: "not seen beyond the node" no longer holds.
    assert!(
        !v.not_seen
            .iter()
            .any(|n| n.starts_with("packets that die outside")),
        "{v:#?}"
    );
}

#[test]
fn packets_that_arrived_as_large_as_sent_die_on_the_receiving_node() {
    let vs = joined(&[sender_log(), receiver_log(Some(1500), 0)]);
    let v = the_problem(&vs);
    assert_eq!(v.dies_at, Some(DiesAt::ReceiverNode), "{v:#?}");
}

#[test]
fn a_few_seconds_of_clock_skew_still_join_ten_minutes_are_reported() {
    let v = joined(&[sender_log(), receiver_log(Some(598), 5)]);
    assert_eq!(the_problem(&v).dies_at, Some(DiesAt::Between));
    assert!(the_problem(&v).clock_skew_s.is_none());

    let vs = joined(&[sender_log(), receiver_log(Some(598), 600)]);
    let v = the_problem(&vs);
    assert_eq!(v.dies_at, None, "{v:#?}");
    let skew = v.clock_skew_s.expect("skew said");
    assert!((skew - 600.0).abs() < 30.0, "{skew}");
    assert!(v
        .not_seen
        .iter()
        .any(|n| n.contains("do not cover the same time")));
    // Not joined, so still the sender's own, inferred view.
    assert_eq!(v.confidence, Confidence::Inferred);
}

#[test]
fn without_the_receivers_arrivals_where_is_not_claimed() {
    let vs = joined(&[sender_log(), receiver_log(None, 0)]);
    let v = the_problem(&vs);
    assert_eq!(v.dies_at, None);
    assert!(
        v.not_seen.iter().any(|n| n.contains("no `arrivals` lines")),
        "{v:#?}"
    );
    // The sender alone: the same problem, its own view.
    let alone = joined(&[sender_log()]);
    assert_eq!(the_problem(&alone).dies_at, None);
    assert!(the_problem(&alone).nodes.is_empty());
}

#[test]
fn a_sender_whose_addresses_are_unknown_is_not_judged_by_arrivals() {
    // The recording alone names no address of the sender: arrivals cannot be attributed.
    let sender = stamped(include_str!("../testdata/router.jsonl"), "worker-116", 0);
    let vs = joined(&[sender, receiver_log(Some(598), 0)]);
    let v = the_problem(&vs);
    assert_eq!(v.dies_at, None, "{v:#?}");
    assert!(v.not_seen.iter().any(|n| n.contains("addresses")), "{v:#?}");
}

#[test]
fn a_kubectl_stream_of_both_nodes_reads_as_the_two_files() {
    let files = joined(&[sender_log(), receiver_log(Some(598), 0)]);
    let mut lines: Vec<(i128, String)> = Vec::new();
    for (pod, text) in [
        ("tracer-a", sender_log()),
        ("tracer-b", receiver_log(Some(598), 0)),
    ] {
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            let ts = v["ts"].as_str().and_then(parse_rfc3339).unwrap();
            lines.push((ts, format!("[pod/{pod}/tracer] {} {l}", rfc3339_nanos(ts))));
        }
    }
    lines.sort();
    let stream: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    let piped = joined(&[stream]);
    assert_eq!(piped, files);
}

#[test]
fn quiet_nodes_give_one_healthy_verdict_for_the_cluster() {
    let (first, last) = span_of(include_str!("../testdata/router.jsonl"));
    let quiet = |node: &str, peer: &str, local: &str| {
        let start = format!(
            r#"{{"ts":"{}","kind":"start","version":"0.1.0","node":"{node}","kernel":"6.18","hooks":[],"blind_spots":[],"namespaces":[],"audit":[],"pmtu_hook":false}}"#,
            rfc3339_nanos(first)
        );
        stamped(
            &format!(
                "{start}\n{}",
                arrivals_line(peer, local, first, last, 10, 1500)
            ),
            node,
            0,
        )
    };
    let vs = joined(&[
        quiet("worker-116", RECEIVER_ADDR, SENDER_ADDR),
        quiet("worker-208", SENDER_ADDR, RECEIVER_ADDR),
    ]);
    assert_eq!(vs.len(), 1, "{vs:#?}");
    let v = &vs[0];
    assert_eq!(v.severity, Severity::Ok);
    assert!(v.node.is_none());
    assert!(
        v.summary.contains("2 nodes (worker-116, worker-208)"),
        "{}",
        v.summary
    );
    assert_eq!(v.nodes.len(), 2);
    assert_eq!(v.nodes[1].largest_arrived, Some(1500));
}

/// Real two-node recordings (`tracer/tests/cluster.rs` with `TRACER_RECORD_DIR`): a tracer per
/// node namespace as deployed, both logs whole.
fn recorded(case: &str) -> Vec<Verdict> {
    let read = |end: &str| {
        std::fs::read_to_string(format!(
            "{}/src/verdict/testdata/cluster-{case}-{end}.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    joined(&[read("a"), read("b")])
}

#[test]
fn recorded_two_node_logs_say_where_the_packets_die() {
    for (case, place) in [
        ("router", Some(DiesAt::Between)),
        ("l2", Some(DiesAt::ReceiverNode)),
        ("healthy", None),
    ] {
        let vs = recorded(case);
        match place {
            Some(place) => {
                let v = the_problem(&vs);
                assert_eq!(v.dies_at, Some(place), "{case}: {v:#?}");
                assert_eq!(v.path.src_node.as_deref(), Some("worker-116"), "{case}");
                assert_eq!(v.path.dst_node.as_deref(), Some("worker-208"), "{case}");
                let sent = v.nodes[0].largest_sent.expect("sent");
                let arrived = v.nodes[1].largest_arrived.expect("arrived");
                assert!(arrived < sent, "{case}: {arrived} ≥ {sent}");
            }
            None => {
                assert_eq!(vs.len(), 1, "{case}: {vs:#?}");
                assert_eq!(vs[0].severity, Severity::Ok, "{case}");
                assert_eq!(vs[0].nodes.len(), 2, "{case}");
            }
        }
    }
}

#[test]
fn a_sent_size_known_only_as_a_bound_does_not_place_the_death_on_the_receiver() {
    // The sender's own verdict, keeping only the flow whose size is known from its retransmitted
    // segments alone (1398 + 40 + 50 B of VXLAN: at least 1488 B; TCP options make it 1500).
    let mut v = the_problem(&joined(&[sender_log()])).clone();
    v.flows.retain(|f| f.icmp_mtu.is_none());
    assert!(!v.flows.is_empty() && v.flows.iter().all(|f| f.largest_failed.is_none()));
    let (first, last) = span_of(include_str!("../testdata/router.jsonl"));
    let node = |name: &str, addr: &str, verdicts: Vec<Verdict>, arrivals: Vec<Arrivals>| NodeLog {
        node: name.into(),
        verdicts,
        arrivals,
        addresses: [addr.parse().unwrap()].into(),
        probes: Vec::new(),
        span: Some((first, last)),
    };
    let arrived = |max: u32| {
        let line = arrivals_line(SENDER_ADDR, RECEIVER_ADDR, first, last, 40, max);
        vec![serde_json::from_str::<Arrivals>(&line).unwrap()]
    };
    // 1490 B arrived: above the bound, below what may really be sent. Not conclusive.
    let vs = join(
        &[
            node("worker-116", SENDER_ADDR, vec![v.clone()], Vec::new()),
            node("worker-208", RECEIVER_ADDR, Vec::new(), arrived(1490)),
        ],
        last,
    );
    let j = the_problem(&vs);
    assert_eq!(j.dies_at, None, "{j:#?}");
    assert!(
        j.not_seen.iter().any(|n| n.contains("not conclusive")),
        "{j:#?}"
    );
    // Nothing near it arrived: between, whatever the exact size.
    let vs = join(
        &[
            node("worker-116", SENDER_ADDR, vec![v], Vec::new()),
            node("worker-208", RECEIVER_ADDR, Vec::new(), arrived(598)),
        ],
        last,
    );
    assert_eq!(the_problem(&vs).dies_at, Some(DiesAt::Between));
}
