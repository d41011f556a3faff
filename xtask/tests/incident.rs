//! The incident lab behaves as the shared notes `blackholes.md` say, with the real servers
//! (redis-server, an HTTP endpoint) and the incident's clients (needs root: network namespaces).
//! Run one at a time: `cargo test -p xtask --test incident -- --test-threads=1`.

use std::time::{Duration, Instant};
use xtask::incident::{self, ClientResult, Incident, IncidentOptions, OuterDf, Overlay, Path, MIB};
use xtask::lab::{self, Lab};

/// Namespace family of these tests; leftovers of crashed runs are removed at each start.
const FAMILY: &str = "xti";
/// Clients expected to hang are given this long.
const HANG: Duration = Duration::from_secs(4);
/// Clients expected to work finish in well under a second; this only bounds a failure.
const WORKS: Duration = Duration::from_secs(5);

fn options(path: Path, outer_df: OuterDf) -> IncidentOptions {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the incident tests need root (network namespaces)"
    );
    lab::cleanup_stale(FAMILY).expect("cleanup_stale");
    IncidentOptions {
        prefix: Lab::unique_prefix(FAMILY),
        path,
        outer_df,
        ..IncidentOptions::default()
    }
}

fn up(opts: IncidentOptions) -> Incident {
    let t = Instant::now();
    let what = format!("{:?}", opts);
    let inc = Incident::up(opts).unwrap_or_else(|e| panic!("Incident::up({what}): {e:#}"));
    eprintln!("lab up in {:?}:\n{}", t.elapsed(), inc.describe().unwrap());
    inc
}

fn clients(inc: &Incident, timeout: Duration) -> Vec<ClientResult> {
    let results = inc.run_clients(timeout).expect("run_clients");
    for r in &results {
        eprintln!("{r}   [{}]", r.detail);
    }
    results
}

/// `expect_ok[i]`: client i must succeed; otherwise it must time out (not fail otherwise: a
/// refused connection or a wrong answer would be a broken lab, not the incident).
fn assert_outcomes(results: &[ClientResult], expect_ok: [bool; 4]) {
    assert_eq!(results.len(), 4);
    for (r, ok) in results.iter().zip(expect_ok) {
        if ok {
            assert!(r.ok, "expected success: {r} ({})", r.detail);
        } else {
            assert!(
                !r.ok && r.timed_out,
                "expected a timeout: {r} ({})",
                r.detail
            );
            assert!(r.elapsed >= HANG, "gave up early: {r}");
        }
    }
}

const SMALL_ONLY: [bool; 4] = [true, false, true, false];
const ALL: [bool; 4] = [true; 4];

/// A counter of `/proc/net/snmp` (per namespace), e.g. ("Ip", "FragOKs").
fn snmp(inc: &Incident, ns: &str, group: &str, name: &str) -> u64 {
    let out = inc
        .lab
        .exec_ok(ns, &["cat", "/proc/net/snmp"])
        .expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{group}:")))
        .collect();
    let (names, values) = (lines[0], lines[1]);
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {group} {name} in /proc/net/snmp"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn tx_dropped(inc: &Incident, ns: &str, ifname: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/tx_dropped");
    let out = inc.lab.exec_ok(ns, &["cat", &path]).expect("read counter");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn server_pids(inc: &Incident) -> Vec<i32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &inc.server_ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Dead: gone, or a zombie of this process (reaped here).
fn assert_dead(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: waitpid(2) on a pid; WNOHANG never blocks; a null status pointer is allowed.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        assert!(
            stat.is_empty() || state == Some('Z'),
            "server {pid} survived: {stat}"
        );
    }
}

fn assert_removed(prefix: &str, names: &[String]) {
    let left = lab::list_netns().expect("ip netns list");
    for n in names {
        assert!(!left.contains(n), "namespace {n} survived");
    }
    assert!(
        !left.iter().any(|n| n.starts_with(&format!("{prefix}-"))),
        "{left:?}"
    );
    assert!(!std::path::Path::new(&format!("/run/{prefix}-lab.json")).exists());
}

fn teardown(inc: Incident) {
    let (prefix, names, pids) = (inc.opts.prefix.clone(), inc.namespaces(), server_pids(&inc));
    assert_eq!(pids.len(), 2, "redis-server and the HTTP server");
    drop(inc);
    assert_removed(&prefix, &names);
    assert_dead(&pids);
}

/// (1) The incident: the MTU mismatch on one L2 link. The outer packets (1550, fragmented to
/// 1500 since outer DF is unset) die in the new node's 1450 veth; nobody sends an ICMP.
#[test]
fn l2_vxlan_small_requests_work_large_ones_time_out() {
    let inc = up(options(Path::L2, OuterDf::Unset));
    assert_eq!(inc.namespaces().len(), 4);
    assert_eq!(
        inc.lab.link_mtu(&inc.old_node_ns, &inc.tunnel_if).unwrap(),
        1500
    );
    assert_eq!(
        inc.lab
            .link_mtu(&inc.new_node_ns, &inc.new_uplink_if)
            .unwrap(),
        1450
    );
    let dropped = tx_dropped(&inc, &inc.old_node_ns, &inc.old_uplink_if);
    assert_outcomes(&clients(&inc, HANG), SMALL_ONLY);
    let after = tx_dropped(&inc, &inc.old_node_ns, &inc.old_uplink_if);
    assert!(
        after > dropped,
        "old uplink tx_dropped {dropped} -> {after}"
    );
    assert_eq!(snmp(&inc, &inc.client_ns, "Icmp", "InDestUnreachs"), 0);
    teardown(inc);
}

/// (2) Through a router with outer DF unset (the Linux default): the router fragments the outer
/// packet, the new node reassembles, everything works.
#[test]
fn router_vxlan_outer_df_unset_works() {
    let inc = up(options(Path::Router, OuterDf::Unset));
    assert_eq!(inc.namespaces().len(), 5);
    assert_outcomes(&clients(&inc, WORKS), ALL);
    let rtr = inc.router_ns.clone().unwrap();
    assert!(
        snmp(&inc, &rtr, "Ip", "FragOKs") > 0,
        "the router fragmented nothing"
    );
    assert!(snmp(&inc, &inc.new_node_ns, "Ip", "ReasmOKs") > 0);
    teardown(inc);
}

/// Counters that say where a routed DF black hole drops (printed for the record).
fn report_df_drops(inc: &Incident) {
    let rtr = inc.router_ns.clone().unwrap();
    eprintln!(
        "old node: IpFragFails {}, IcmpOutDestUnreachs {}; router: IpFragFails {}, \
         IcmpOutDestUnreachs {}; client pod: IcmpInDestUnreachs {}",
        snmp(inc, &inc.old_node_ns, "Ip", "FragFails"),
        snmp(inc, &inc.old_node_ns, "Icmp", "OutDestUnreachs"),
        snmp(inc, &rtr, "Ip", "FragFails"),
        snmp(inc, &rtr, "Icmp", "OutDestUnreachs"),
        snmp(inc, &inc.client_ns, "Icmp", "InDestUnreachs"),
    );
    if inc.opts.filter_icmp {
        for ns in [&inc.old_node_ns, &rtr] {
            let out = inc
                .lab
                .exec_ok(ns, &["nft", "list", "table", "ip", "lab-icmp-filter"])
                .expect("nft list");
            let text = String::from_utf8_lossy(&out.stdout);
            let counter = text.lines().find(|l| l.contains("counter")).unwrap_or("");
            eprintln!("{ns} ICMP filter: {}", counter.trim());
        }
    }
}

/// (3) Outer DF inherited from TCP's DF, ICMP allowed: still a black hole, because routed VXLAN
/// never tells the pod (forwarding ignores the PMTU the node learns). Measured here: with the
/// tunnel at 1500 on a 1500 uplink the 1550-byte DF outer packet is dropped by the old node
/// itself (IpFragFails; its frag-needed goes to itself) and never reaches the router; VXLAN
/// records PMTU 1450 on the node's route to the pod, which forwarding ignores.
#[test]
fn router_vxlan_outer_df_inherit_black_holes() {
    let inc = up(options(Path::Router, OuterDf::Inherit));
    assert_outcomes(&clients(&inc, HANG), SMALL_ONLY);
    report_df_drops(&inc);
    assert_eq!(
        snmp(&inc, &inc.client_ns, "Icmp", "InDestUnreachs"),
        0,
        "the pod was told"
    );
    teardown(inc);
}

/// (4) Outer DF set and ICMP frag-needed dropped by firewalls: the classic PMTUD black hole.
/// (With the default MTUs the old node already drops its own outer packets, as in (3); its
/// input filter then drops the frag-needed it sends itself, and the router's sees none.)
#[test]
fn router_vxlan_outer_df_set_with_icmp_filtered_black_holes() {
    let mut opts = options(Path::Router, OuterDf::Set);
    opts.filter_icmp = true;
    let inc = up(opts);
    assert_outcomes(&clients(&inc, HANG), SMALL_ONLY);
    report_df_drops(&inc);
    assert_eq!(snmp(&inc, &inc.client_ns, "Icmp", "InDestUnreachs"), 0);
    teardown(inc);
}

/// (5) The fix on the L2 lab: pod MTU 1400 (+50 = 1450 fits every hop), new connections work.
#[test]
fn pod_mtu_1400_fixes_the_l2_lab() {
    let inc = up(options(Path::L2, OuterDf::Unset));
    let before = inc.http_post(MIB, HANG).unwrap();
    eprintln!("before the fix: {before}");
    assert!(before.timed_out, "{before}");

    inc.apply_fix(incident::FIX_POD_MTU).unwrap();
    for (ns, ifname) in [
        (&inc.client_ns, &inc.pod_if),
        (&inc.server_ns, &inc.pod_if),
        (&inc.old_node_ns, &inc.client_host_if),
        (&inc.new_node_ns, &inc.server_host_if),
    ] {
        assert_eq!(inc.lab.link_mtu(ns, ifname).unwrap(), 1400, "{ns}/{ifname}");
    }
    let dropped = tx_dropped(&inc, &inc.old_node_ns, &inc.old_uplink_if);
    assert_outcomes(&clients(&inc, WORKS), ALL);
    assert_eq!(
        tx_dropped(&inc, &inc.old_node_ns, &inc.old_uplink_if),
        dropped,
        "frames were still dropped after the fix"
    );
    assert!(inc.apply_fix(70_000).is_err());
    teardown(inc);
}

/// (6) IPIP needs CONFIG_NET_IPIP: without it `up` says so and leaves nothing behind. (Where it
/// exists, the L2 mismatch black-holes IPIP like VXLAN.)
#[test]
fn ipip_without_kernel_support_is_a_clear_error() {
    let mut opts = options(Path::L2, OuterDf::Unset);
    opts.overlay = Overlay::Ipip;
    let prefix = opts.prefix.clone();
    match Incident::up(opts) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("IPIP is not available on this kernel (CONFIG_NET_IPIP)"),
                "{msg}"
            );
            assert_removed(&prefix, &[]);
        }
        Ok(inc) => {
            eprintln!("this kernel has IPIP:\n{}", inc.describe().unwrap());
            assert_outcomes(&clients(&inc, HANG), SMALL_ONLY);
            teardown(inc);
        }
    }
}

/// `cargo xtask lab up|clients|status|down`: a kept lab is found again by its prefix, and
/// `down` kills its servers and removes everything; `down` on nothing is fine.
#[test]
fn kept_lab_is_attached_by_prefix_and_removed_by_down() {
    let mut opts = options(Path::L2, OuterDf::Unset);
    opts.pod_mtu = incident::FIX_POD_MTU;
    let prefix = opts.prefix.clone();
    let inc = up(opts.clone());
    let (names, pids) = (inc.namespaces(), server_pids(&inc));
    inc.keep();

    let again = Incident::attach(&prefix).unwrap();
    assert_eq!(again.opts, opts);
    assert_eq!(again.namespaces(), names);
    let r = again.http_get_small(WORKS).unwrap();
    assert!(r.ok, "{r}");
    drop(again); // an attached lab is left alone
    let status = incident::status(&prefix).unwrap();
    assert!(
        status.contains("redis on 10.212.2.2:6379: listening"),
        "{status}"
    );
    assert!(status.contains("tracer run --netns"), "{status}");

    // `up` again replaces it (idempotent), then `down` removes it.
    let inc = up(opts);
    let pids2 = server_pids(&inc);
    inc.keep();
    assert_dead(&pids);
    let mut removed = incident::down(&prefix).unwrap();
    removed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(removed, want);
    assert_removed(&prefix, &names);
    assert_dead(&pids2);
    assert!(incident::down(&prefix).unwrap().is_empty());
    assert!(incident::status(&prefix).unwrap().contains("down"));
    assert!(Incident::attach(&prefix).is_err());
}

/// A test that panics with a lab up leaves no namespace and no server behind.
#[test]
fn a_panic_cleans_up_namespaces_and_servers() {
    let mut opts = options(Path::Router, OuterDf::Unset);
    let prefix = opts.prefix.clone();
    opts.pod_mtu = incident::FIX_POD_MTU;
    let mut seen = (Vec::new(), Vec::new());
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let inc = up(opts);
        seen = (inc.namespaces(), server_pids(&inc));
        panic!("intentional panic: the incident's Drop must still clean up");
    }));
    assert!(unwound.is_err());
    assert_eq!(seen.0.len(), 5);
    assert_removed(&prefix, &seen.0);
    assert_dead(&seen.1);
}

#[test]
fn the_k8s_snapshot_is_a_kubectl_style_list_of_the_lab() {
    let incident = Incident::up(IncidentOptions {
        prefix: Lab::unique_prefix("xtk"),
        ..IncidentOptions::default()
    })
    .expect("lab");
    let snapshot: serde_json::Value =
        serde_json::from_str(&incident.k8s_snapshot()).expect("valid JSON");
    assert_eq!(snapshot["kind"], "List");
    let items = snapshot["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Node").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "Pod").count(), 4);
    let client = items
        .iter()
        .find(|i| i["status"]["podIP"] == incident.client_ip.to_string())
        .expect("client pod");
    assert_eq!(client["spec"]["nodeName"], "worker-116");
    let svc = items.iter().find(|i| i["kind"] == "Service").unwrap();
    assert_eq!(svc["spec"]["clusterIP"], incident.service_ip.to_string());
    let slice = items.iter().find(|i| i["kind"] == "EndpointSlice").unwrap();
    assert_eq!(
        slice["endpoints"][0]["addresses"][0],
        incident.server_ip.to_string()
    );
}
