//! `tracer check` against the incident lab (`xtask::incident`): node namespaces whose uplinks
//! disagree (1500 / 1450 on one L2 link), VXLAN at 1500, pods at 1500. No traffic runs: the
//! audit must find the misconfiguration from devices and its own probe, then call the fixed lab
//! consistent. Needs root (namespaces, raw ICMP).
//!
//! The IPv6 probe runs over a routed IPv6 path of its own (client → router → server), whose
//! onward hop is changed between runs: healthy, a 1400 hop that says so (packet too big), the
//! hop back at 1500 while the client remembers 1400, the 1400 hop with its packet too big
//! dropped, a hop that drops IPv6 packets over 1200, and a VXLAN-over-IPv6 tunnel whose remote
//! is found and probed without `--peer`.
mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::tracer_bin;
use xtask::{
    incident::{Incident, IncidentOptions, FIX_POD_MTU},
    lab::Lab,
    routed::{self, Family, RoutedPath},
};

fn check(args: &[&str]) -> Output {
    Command::new(tracer_bin())
        .arg("check")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run tracer check")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out.stdout)))
}

fn finding<'a>(audit: &'a Value, problem: &str, netns: &str) -> &'a Value {
    audit["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["problem"] == problem && f["where"].as_str().unwrap().starts_with(netns))
        .unwrap_or_else(|| panic!("no {problem} in {netns}:\n{audit:#}"))
}

fn ns<'a>(audit: &'a Value, name: &str) -> &'a Value {
    audit["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["netns"] == name)
        .unwrap_or_else(|| panic!("no namespace {name}:\n{audit:#}"))
}

#[test]
fn finds_the_incident_without_traffic_and_accepts_the_fix() {
    let _ = xtask::lab::cleanup_stale("tck");
    let inc = Incident::up(IncidentOptions {
        prefix: xtask::lab::Lab::unique_prefix("tck"),
        ..IncidentOptions::default()
    })
    .expect("incident lab");
    let (old, new) = (inc.old_node_ns.as_str(), inc.new_node_ns.as_str());
    let (old_ip, new_ip) = (inc.old_node_ip.to_string(), inc.new_node_ip.to_string());

    let started = std::time::Instant::now();
    let out = check(&["--netns", old, "--netns", new, "--json"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(took.as_secs_f64() < 5.0, "the audit took {took:?}");
    let a = json_of(&out);
    assert_eq!(a["consistent"], false);
    assert_eq!(a["recommended_pod_mtu"], 1400);

    // The probe, from the old node toward the VXLAN remote, finds the new node's 1450.
    let probe = ns(&a, old)["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == new_ip.as_str())
        .unwrap_or_else(|| panic!("old node did not probe {new_ip}:\n{a:#}"));
    assert_eq!(probe["status"], "ok", "{probe}");
    assert_eq!(probe["path_mtu"], 1450, "{probe}");
    // veth takes 4 bytes over its MTU (VLAN room), as many NICs do: measured, then snapped.
    assert_eq!(probe["largest_ok"], 1454, "{probe}");
    assert_eq!(probe["smallest_lost"], 1455, "{probe}");
    assert_eq!(probe["exact"], true);
    assert_eq!(probe["via"], "eth0");
    assert_eq!(probe["local_mtu"], 1500);
    // And from the new node the path back is as large as its own uplink.
    let back = ns(&a, new)["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == old_ip.as_str())
        .unwrap_or_else(|| panic!("new node did not probe {old_ip}:\n{a:#}"));
    assert_eq!(
        (back["path_mtu"].as_u64(), back["exact"].as_bool()),
        (Some(1450), Some(true))
    );

    let f = finding(&a, "pod_mtu_exceeds_path", &format!("{old}/"));
    assert_eq!(f["severity"], "problem");
    assert_eq!(
        f["arithmetic"],
        format!(
            "pod veth MTU 1500 ({}) + VXLAN 50 = 1550 > path MTU 1450 to {new_ip} (probed)",
            inc.client_host_if
        )
    );
    assert_eq!(f["recommended_mtu"], 1400);
    assert_eq!(
        f["fix"],
        "set Calico veth_mtu to 1400 (VXLAN: 1450 − 50), then restart the pods"
    );
    let f = finding(&a, "pod_mtu_exceeds_uplink", &format!("{new}/"));
    assert_eq!(
        f["arithmetic"],
        format!(
            "pod veth MTU 1500 ({}) + VXLAN 50 = 1550 > uplink eth0 MTU 1450",
            inc.server_host_if
        )
    );
    // The lab's VXLAN has a local address: the outer family is read, not assumed.
    let vx = ns(&a, new)["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == inc.tunnel_if.as_str())
        .unwrap();
    assert_eq!(vx["role"], "tunnel");
    assert_eq!(vx["encap"]["overhead"], 50);
    assert_eq!(vx["encap"]["outer_assumed"], false);

    // The human report says the same, with the fix.
    let out = check(&["--netns", old, "--netns", new]);
    assert_eq!(out.status.code(), Some(3));
    let human = text(&out.stdout);
    for needle in [
        "PROBLEM  pod_mtu_exceeds_path",
        "path MTU 1450 (1454 got through: receivers take a few bytes over their MTU; 1455 and larger got no answer)",
        "fix: set Calico veth_mtu to 1400 (VXLAN: 1450 − 50)",
        "MTU PROBLEM: ",
        "largest pod MTU that fits every path seen: 1400",
    ] {
        assert!(human.contains(needle), "missing {needle:?} in:\n{human}");
    }

    // Without the probe the other node's uplink still gives the answer.
    let out = check(&["--netns", old, "--netns", new, "--no-probe", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let a = json_of(&out);
    assert_eq!(a["probed"], false);
    let f = finding(&a, "pod_mtu_exceeds_peer_uplink", &format!("{old}/"));
    assert_eq!(f["recommended_mtu"], 1400);
    assert!(ns(&a, old)["probes"].as_array().unwrap().is_empty());

    // Asked to confirm a fix not applied yet: the pods still on 1500 are named, per node.
    let expect = FIX_POD_MTU.to_string();
    let out = check(&[
        "--netns",
        old,
        "--netns",
        new,
        "--expect-mtu",
        &expect,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let a = json_of(&out);
    assert_eq!(a["expected_mtu"], FIX_POD_MTU);
    for node in [old, new] {
        let f = finding(&a, "pods_not_at_expected_mtu", node);
        assert!(f["arithmetic"].as_str().unwrap().contains("(1500)"), "{f}");
    }

    // The fix: pods at 1400. Consistent; only the tunnels' own size is left as a warning
    // (the lab, unlike Calico, leaves vxlan.calico at 1500).
    inc.apply_fix(FIX_POD_MTU).expect("apply fix");
    let out = check(&["--netns", old, "--netns", new, "--expect-mtu", &expect]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(&format!(
            "expected MTU {FIX_POD_MTU} holds: 2 pod veth(s) at {FIX_POD_MTU}, 2 tunnel(s) carry it"
        )),
        "{}",
        text(&out.stdout)
    );
    let out = check(&["--netns", old, "--netns", new, "--json"]);
    let a = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{a:#}");
    assert_eq!(a["consistent"], true);
    assert!(a["recommended_pod_mtu"].is_null());
    for f in a["findings"].as_array().unwrap() {
        assert_eq!(f["severity"], "warning", "{f}");
        assert!(
            f["problem"]
                .as_str()
                .unwrap()
                .starts_with("tunnel_mtu_exceeds"),
            "{f}"
        );
    }
    let out = check(&["--netns", old, "--netns", new]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("MTU consistent: 2 pod veth(s) and 2 tunnel(s) fit every uplink and probed path checked (2 namespace(s), 2 path(s) probed)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn unknown_namespace_is_a_clear_error() {
    // An MTU no link can have is refused before anything is read.
    let out = check(&["--expect-mtu", "20"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("20 is not in 68..=65535"),
        "{}",
        text(&out.stderr)
    );
    let out = check(&["--netns", "no-such-ns-for-tracer-check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tracer: error: --netns no-such-ns-for-tracer-check: no network namespace at /run/netns/no-such-ns-for-tracer-check"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = check(&["--netns", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a network namespace"));
}

#[test]
fn unprivileged_runs_say_what_needs_root() {
    let unpriv = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                tracer_bin(),
                "check",
            ])
            .args(args)
            .output()
            .expect("setpriv")
    };
    let out = unpriv(&["--netns", "anything"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--netns needs root"),
        "{}",
        text(&out.stderr)
    );
    // The own namespace is still audited without privileges (netlink dumps need none).
    let out = unpriv(&["--no-probe", "--json"]);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    let a = json_of(&out);
    assert_eq!(a["namespaces"][0]["netns"], "root");
    assert!(a["namespaces"][0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "lo" && d["mtu"] == 65536));
}

/// client (`eth0` 1500, and a Calico-style pod veth `cali1` at 1500, so that the pod MTU is
/// judged) —1500— router —`onward`— server, over IPv6 only: `xtask::routed`'s path.
struct Ipv6Path {
    lab: Lab,
    cli: String,
    rtr: String,
}

const V6_CLIENT: &str = "fd00:207:1::2";
const V6_ROUTER_CLIENT_SIDE: &str = "fd00:207:1::1";
const V6_SERVER: &str = "fd00:207:2::2";

impl Ipv6Path {
    fn up() -> Ipv6Path {
        assert!(
            std::path::Path::new("/proc/net/if_inet6").exists(),
            "this kernel has IPv6 disabled: the IPv6 probe cannot be tested"
        );
        let _ = xtask::lab::cleanup_stale("tc6");
        let routed = RoutedPath::up(&Lab::unique_prefix("tc6"), Family::V6).expect("lab");
        assert_eq!(routed.client_ip.to_string(), V6_CLIENT);
        assert_eq!(routed.server_ip.to_string(), V6_SERVER);
        let RoutedPath {
            mut lab,
            client_ns: cli,
            router_ns: rtr,
            ..
        } = routed;
        let pod = lab.add_netns("pod").expect("netns");
        lab.add_veth(&cli, "cali1", 1500, &pod, "eth0", 1500)
            .expect("veth");
        Ipv6Path { lab, cli, rtr }
    }

    /// The router's route onward at `mtu`, and no PMTU the client learned before.
    fn onward_mtu(&self, mtu: u32) {
        self.onward_mtu_keeping_pmtu(mtu);
        self.lab
            .ip(&self.cli, &["-6", "route", "flush", "cache"])
            .expect("flush");
    }

    fn onward_mtu_keeping_pmtu(&self, mtu: u32) {
        routed::limit_onward(&self.lab, &self.rtr, Family::V6, mtu).expect("mtu");
    }

    /// `tracer check` from the client toward the server: its JSON and its text.
    fn check(&self) -> (Option<i32>, Value, String) {
        let args = ["--netns", self.cli.as_str(), "--peer", V6_SERVER];
        let out = check(&[&args[..], &["--json"]].concat());
        let json = json_of(&out);
        let human = check(&args);
        assert_eq!(
            out.status.code(),
            human.status.code(),
            "{}",
            text(&human.stdout)
        );
        (out.status.code(), json, text(&human.stdout))
    }
}

/// The probe closed on `mtu` to the byte: `mtu` passed, one more did not.
fn closed_on(p: &Value, mtu: u32) {
    assert_eq!(
        (
            &p["path_mtu"],
            &p["largest_ok"],
            &p["smallest_lost"],
            &p["exact"]
        ),
        (&mtu.into(), &mtu.into(), &(mtu + 1).into(), &true.into()),
        "{p}"
    );
}

fn only_probe(a: &Value) -> &Value {
    let probes = a["namespaces"][0]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 1, "{a:#}");
    assert_eq!(probes[0]["peer"], V6_SERVER);
    assert_eq!(probes[0]["via"], "eth0");
    assert_eq!(probes[0]["local_mtu"], 1500);
    &probes[0]
}

#[test]
fn probes_an_ipv6_path_and_finds_its_mtu_with_and_without_packet_too_big() {
    let path = Ipv6Path::up();
    // The server answers, directly and through the router.
    path.lab
        .exec_ok(&path.cli, &["ping", "-6", "-c1", "-W2", V6_SERVER])
        .expect("the lab's IPv6 path works");

    // Healthy: every link 1500, the probe gets through at the device MTU.
    let (code, a, human) = path.check();
    let p = only_probe(&a);
    assert_eq!(p["status"], "ok", "{p}");
    assert_eq!(p["path_mtu"], 1500, "{p}");
    assert_eq!(p["largest_ok"], 1500, "{p}");
    assert_eq!(p["exact"], true, "{p}");
    assert!(
        p["smallest_lost"].is_null() && p["icmp_mtu"].is_null(),
        "{p}"
    );
    assert!(p["sent"].as_u64().unwrap() <= 24, "{p}");
    assert_eq!(code, Some(0), "{human}");
    assert!(
        human.contains(&format!(
            "probe    {V6_SERVER} (--peer) via eth0 mtu 1500: path MTU 1500;"
        )),
        "{human}"
    );
    assert!(human.contains("MTU consistent: 1 pod veth(s)"), "{human}");

    // A 1400 hop that says so: the router's packet too big names it, and the search closes on
    // it to the byte.
    path.onward_mtu(1400);
    let (code, a, human) = path.check();
    let p = only_probe(&a);
    assert_eq!(p["status"], "ok", "{p}");
    closed_on(p, 1400);
    assert_eq!(p["icmp_mtu"], 1400, "{p}");
    assert_eq!(p["icmp_from"], V6_ROUTER_CLIENT_SIDE, "{p}");
    assert_eq!(code, Some(3), "{human}");
    let f = finding(&a, "pod_mtu_exceeds_path", &format!("{}/cali1", path.cli));
    assert_eq!(
        f["arithmetic"],
        format!("pod veth MTU 1500 (cali1) > path MTU 1400 to {V6_SERVER} (probed)")
    );
    assert_eq!(f["recommended_mtu"], 1400);
    for needle in [
        "path MTU 1400 (1401 and larger got no answer)".to_string(),
        format!("{V6_ROUTER_CLIENT_SIDE} sent packet too big mtu 1400"),
        "largest pod MTU that fits every path seen: 1400".into(),
    ] {
        assert!(human.contains(&needle), "missing {needle:?} in:\n{human}");
    }

    // The hop back at 1500 while the client still remembers 1400 from that packet too big:
    // the probe ignores what the namespace learned (IPV6_PMTUDISC_PROBE) and measures 1500.
    path.onward_mtu_keeping_pmtu(1500);
    let out = check(&["--netns", path.cli.as_str(), "--peer", V6_SERVER, "--json"]);
    let a = json_of(&out);
    let learned = a["namespaces"][0]["learned_pmtu"].as_array().unwrap();
    assert!(
        learned
            .iter()
            .any(|l| l["dst"] == format!("{V6_SERVER}/128") && l["mtu"] == 1400),
        "the client did not learn 1400 from the packet too big:\n{a:#}"
    );
    let p = only_probe(&a);
    assert_eq!(
        (&p["path_mtu"], &p["exact"]),
        (&1500.into(), &true.into()),
        "{p}"
    );
    assert!(p["icmp_mtu"].is_null(), "{p}");

    // The same hop with its packet too big dropped on the way out of the router: a black
    // hole. Silence above 1400 still bounds it; the path is not called fine.
    path.onward_mtu(1400);
    path.lab
        .nft(
            &path.rtr,
            "table ip6 tracer_test {\n chain out {\n type filter hook output priority 0;\n \
             icmpv6 type packet-too-big counter drop\n }\n}\n",
        )
        .expect("nft");
    let (code, a, human) = path.check();
    let p = only_probe(&a);
    closed_on(p, 1400);
    assert!(p["icmp_mtu"].is_null() && p["icmp_from"].is_null(), "{p}");
    assert_eq!(code, Some(3), "{human}");
    assert_eq!(
        finding(&a, "pod_mtu_exceeds_path", &path.cli)["recommended_mtu"],
        1400
    );
    assert!(!human.contains("packet too big"), "{human}");
    // The router did generate packet too big, and nft ate it: the black hole is real.
    let rules = path
        .lab
        .exec_ok(&path.rtr, &["nft", "list", "table", "ip6", "tracer_test"])
        .expect("nft list");
    let rules = text(&rules.stdout);
    assert!(!rules.contains("counter packets 0 "), "{rules}");

    // A hop that drops every IPv6 packet over 1200 B, silently: the path is below IPv6's
    // minimum. Nothing under 1280 but the reachability probe is tried, and no path MTU is made up.
    path.onward_mtu(1500);
    path.lab
        .nft(
            &path.rtr,
            "table ip6 tracer_test_small {\n chain big {\n type filter hook forward priority 0;\n \
             meta length > 1200 drop\n }\n}\n",
        )
        .expect("nft");
    let (code, a, human) = path.check();
    let p = only_probe(&a);
    assert_eq!(p["status"], "ok", "{p}");
    assert!(p["path_mtu"].is_null(), "{p}");
    assert_eq!(
        (&p["largest_ok"], &p["smallest_lost"]),
        (&96.into(), &1280.into()),
        "{p}"
    );
    // Round one only (11 sizes, the lost ones re-sent once): no narrowing below 1280 followed,
    // which would have cost a round of up to 24 sizes more.
    assert!(p["sent"].as_u64().unwrap() < 24, "{p}");
    assert_eq!(code, Some(3), "{human}");
    let f = finding(&a, "ipv6_path_below_minimum", &format!("{}/eth0", path.cli));
    assert_eq!(f["severity"], "problem");
    assert_eq!(
        f["arithmetic"],
        format!("path to {V6_SERVER} via eth0 (probed): 1280 B got no answer, 96 B did < 1280 (IPv6 minimum MTU, RFC 8200)")
    );
    assert!(a["recommended_pod_mtu"].is_null(), "{a:#}");
    assert!(
        human.contains("path below IPv6's minimum MTU (1280 got no answer, 96 did)"),
        "{human}"
    );

    // A VXLAN tunnel over IPv6 toward the server, behind the 1400 hop: the tunnel's remote is
    // probed without being named, and the pods are judged with the IPv6 underlay's 70 B.
    path.lab
        .exec_ok(
            &path.rtr,
            &["nft", "delete", "table", "ip6", "tracer_test_small"],
        )
        .expect("nft delete");
    path.onward_mtu(1400);
    path.lab
        .ip(
            &path.cli,
            &[
                "link", "add", "vxlan0", "type", "vxlan", "id", "42", "local", V6_CLIENT, "remote",
                V6_SERVER, "dstport", "4789",
            ],
        )
        .expect("vxlan");
    path.lab.set_mtu_up(&path.cli, "vxlan0", 1500).expect("mtu");
    let out = check(&["--netns", path.cli.as_str(), "--json"]);
    let a = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "{a:#}");
    let p = only_probe(&a);
    assert_eq!(p["source"], "remote of vxlan0", "{p}");
    assert_eq!(
        (&p["path_mtu"], &p["exact"]),
        (&1400.into(), &true.into()),
        "{p}"
    );
    let f = finding(&a, "pod_mtu_exceeds_path", &format!("{}/cali1", path.cli));
    assert_eq!(
        f["arithmetic"],
        format!(
            "pod veth MTU 1500 (cali1) + VXLAN 70 = 1570 > path MTU 1400 to {V6_SERVER} (probed)"
        )
    );
    assert_eq!(f["recommended_mtu"], 1330);
    assert_eq!(a["recommended_pod_mtu"], 1330);
}
