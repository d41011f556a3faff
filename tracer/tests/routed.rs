//! Verdicts on a routed path without an overlay, IPv4 and IPv6 alike (issue 21): client →
//! router → server, the router's route onward limited to 1400 (a smaller hop beyond it), a
//! real redis-server, the tracer watching the client's namespace only (as on the client's
//! node: the router is out of its view). A 100 KB SET:
//! - the router's too-big allowed: the sender is told, shrinks, the SET passes — path-MTU
//!   discovery works, never an alarm;
//! - the router's too-big suppressed (a firewall): the SET times out — a problem, with the
//!   number a probe measured (timing alone names no size);
//! - no smaller hop: nothing to say.
//!
//! Each verdict live and from `tracer report`.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{dump, final_verdicts, read_events, TempLog, Tracer};
use xtask::routed::{Family, RoutedPath};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    /// Every link and route at 1500.
    Healthy,
    /// The router's route onward at 1400; its ICMP too-big reaches the client.
    Told,
    /// The router's route onward at 1400; its ICMP too-big dropped as it leaves the router.
    Suppressed,
}

const HOP_MTU: u32 = 1400;
const VALUE: usize = 100_000;

fn run(family: Family, hop: Hop) {
    let name = format!("{family:?} {hop:?}");
    println!("case: {name}");
    let family_tag = if family == Family::V4 { "tr4" } else { "tr6" };
    let _ = xtask::lab::cleanup_stale(family_tag);
    let path =
        RoutedPath::up(&xtask::lab::Lab::unique_prefix(family_tag), family).expect("routed path");
    if hop != Hop::Healthy {
        path.limit_onward(HOP_MTU).expect("limit the onward route");
    }
    if hop == Hop::Suppressed {
        path.suppress_too_big().expect("nft in the router");
    }
    path.start_redis().expect("redis-server");
    let log = TempLog::new("routed");
    let log_path = log.0.display().to_string();
    let t = Tracer::start(&["--netns", &path.client_ns, "--log", &log_path], &[]);
    // A passing SET needs well under a second; a stuck one waits out its timeouts (the probe
    // runs meanwhile, once the second backed-off timeout makes the connection suspect).
    let set = path
        .redis_set(VALUE, support::slow(Duration::from_secs(6)))
        .expect("redis-cli");
    println!("  {set}");
    std::thread::sleep(Duration::from_millis(300));
    let (status, stdout, stderr) = t.stop();
    assert!(status.success(), "{}", stderr.join("\n"));
    let events = read_events(&log.0);
    let verdicts = final_verdicts(&events, &log);
    let shown = || format!("{name}\n{stdout}\n{}", dump(&verdicts));
    let alarms: Vec<&Value> = verdicts
        .iter()
        .filter(|v| v["severity"] == "problem" || v["severity"] == "suspected")
        .collect();
    let received = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    match hop {
        Hop::Healthy => {
            assert!(set.ok, "{}", shown());
            assert!(alarms.is_empty(), "a healthy path: {}", shown());
        }
        Hop::Told => {
            assert!(set.ok, "{}", shown());
            // What makes it a test of the verdict: the router did tell the sender.
            assert!(received("icmp_too_big_received") > 0, "{}", shown());
            assert!(
                alarms.is_empty(),
                "told, shrank and passed is no alarm: {}",
                shown()
            );
            let v = verdicts
                .iter()
                .find(|v| v["problem"] == "pmtud_recovered")
                .unwrap_or_else(|| panic!("path-MTU discovery worked: {}", shown()));
            assert_eq!(v["largest_passing"], HOP_MTU, "{}", shown());
        }
        Hop::Suppressed => {
            assert!(!set.ok && set.timed_out, "{}", shown());
            assert_eq!(received("icmp_too_big_received"), 0, "{}", shown());
            assert_eq!(alarms.len(), 1, "{}", shown());
            let v = alarms[0];
            assert_eq!(v["severity"], "problem", "{}", shown());
            assert_eq!(v["problem"], "mtu_black_hole", "{}", shown());
            // The number is measured (the probe toward the server, from the client).
            assert_eq!(v["confidence"], "measured", "{}", shown());
            let probe = events
                .iter()
                .find(|e| e["kind"] == "probe" && e["status"] == "ok")
                .unwrap_or_else(|| panic!("no probe line: {}", shown()));
            assert_eq!(probe["to"], path.server_ip.to_string(), "{}", shown());
            assert_eq!(probe["path_mtu"], HOP_MTU, "{}", shown());
            assert_eq!(v["recommended_mtu"], HOP_MTU, "{}", shown());
            let stuck = v["flows"].as_array().unwrap();
            assert!(
                stuck
                    .iter()
                    .any(|f| f["stuck"] == true && f["dst"] == path.server_ip.to_string()),
                "{}",
                shown()
            );
            assert!(
                verdicts.iter().all(|v| v["problem"] != "pmtud_recovered"),
                "{}",
                shown()
            );
        }
    }
}

#[test]
fn ipv6_told_shrank_and_passed_is_no_alarm() {
    run(Family::V6, Hop::Told);
}

#[test]
fn ipv6_packet_too_big_suppressed_is_a_problem_with_a_measured_mtu() {
    run(Family::V6, Hop::Suppressed);
}

#[test]
fn ipv6_healthy_path_is_no_alarm() {
    run(Family::V6, Hop::Healthy);
}

#[test]
fn ipv4_told_shrank_and_passed_is_no_alarm() {
    run(Family::V4, Hop::Told);
}

#[test]
fn ipv4_frag_needed_suppressed_is_a_problem_with_a_measured_mtu() {
    run(Family::V4, Hop::Suppressed);
}
