//! The incident, end to end: the incident lab (`xtask::incident`: nodes whose uplink MTUs
//! disagree, a Calico-style overlay, a kube-proxy-style ClusterIP, real redis-server and HTTP
//! server) with the real tracer watching every lab namespace. For each black-hole variant the
//! failing transfers fail and the event log holds the evidence; the fixed lab has no size event.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    dump, final_verdicts, find, matched, netns_inode, of_kind, read_events, the_problem,
    tracer_bin, FakeKubeApi, TempLog, Tracer,
};
use xtask::incident::{Incident, IncidentOptions, OuterDf, Path};

/// How long a client may take: a passing one needs well under a second here, a failing one
/// waits it out. Four times longer in the VMs of `cargo xtask vm` (TRACER_TEST_SLOW), where a
/// small GET alone took over 4 s under TCG.
fn timeout() -> Duration {
    support::slow(Duration::from_secs(4))
}
const SIZE_KINDS: [&str; 4] = [
    "drop",
    "icmp_too_big_sent",
    "icmp_too_big_received",
    "oversize_tx",
];

fn up(path: Path, outer_df: OuterDf, filter_icmp: bool) -> Incident {
    // Behind a router the old node's overlay is sized for its own uplink (1500 − 50), as
    // Calico's auto-detection would size it; only the new subnet's smaller MTU is missed.
    let tunnel_mtu = match path {
        Path::Router => 1450,
        Path::L2 => 1500,
    };
    up_with(IncidentOptions {
        path,
        outer_df,
        filter_icmp,
        tunnel_mtu,
        ..IncidentOptions::default()
    })
}

/// The incident lab of `opts`, under a prefix of this test process's own.
fn up_with(opts: IncidentOptions) -> Incident {
    let _ = xtask::lab::cleanup_stale("tri");
    Incident::up(IncidentOptions {
        prefix: xtask::lab::Lab::unique_prefix("tri"),
        ..opts
    })
    .expect("incident lab")
}

fn trace(incident: &Incident, log: &TempLog) -> Tracer {
    // The lab described as `kubectl get ... -o json` would: names for pods, service, nodes.
    let snapshot = std::path::PathBuf::from(format!("{}.k8s.json", log.0.display()));
    std::fs::write(&snapshot, incident.k8s_snapshot()).expect("write snapshot");
    trace_named(
        incident,
        log,
        &["--k8s-snapshot", &snapshot.display().to_string()],
    )
}

/// Trace every lab namespace into `log`, with `names` naming options.
fn trace_named(incident: &Incident, log: &TempLog, names: &[&str]) -> Tracer {
    let mut args: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    for ns in incident.namespaces() {
        args.push("--netns".into());
        args.push(ns);
    }
    args.push("--log".into());
    args.push(log.0.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Tracer::start(&args, &[])
}

fn stop(t: Tracer, log: &TempLog) -> Vec<Value> {
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, stderr) = t.stop();
    assert!(
        status.success(),
        "tracer: {status:?}\n{}",
        stderr.join("\n")
    );
    read_events(&log.0)
}

/// Small requests pass, large ones time out: the incident's symptom.
fn assert_incident_symptom(incident: &Incident) {
    let small = incident.http_get_small(timeout()).expect("GET");
    assert!(small.ok, "small GET must pass: {small}");
    let post = incident.http_post(1 << 20, timeout()).expect("POST");
    assert!(
        !post.ok && post.timed_out,
        "large POST must time out: {post}"
    );
    let set = incident.redis_set(1 << 20, timeout()).expect("SET");
    assert!(!set.ok && set.timed_out, "large SET must time out: {set}");
}

/// The client's socket talks to the ClusterIP: its retransmissions name the service tuple.
fn assert_retransmits_name_the_service(events: &[Value], incident: &Incident, all: &str) {
    for port in [incident.http_port, incident.redis_port] {
        let rtx = of_kind(events, "tcp_retransmit")
            .into_iter()
            .find(|e| e["dport"] == port && e["dst"] == incident.service_ip.to_string())
            .unwrap_or_else(|| panic!("no retransmission to the service port {port}:\n{all}"));
        assert_eq!(rtx["src"], incident.client_ip.to_string());
        assert_eq!(rtx["netns"], netns_inode(&incident.client_ns));
        // Named from the ClusterIP (the socket's view, before DNAT).
        assert_eq!(rtx["service"]["name"], "storage", "{rtx}");
        assert_eq!(rtx["src_pod"]["name"], "order-api-7d9f8");
    }
}

#[test]
fn l2_mismatch_vxlan_large_transfers_die_at_the_new_nodes_link() {
    let incident = up(Path::L2, OuterDf::Unset, false);
    let log = TempLog::new("inc-l2");
    let t = trace(&incident, &log);
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    let all = dump(&events);
    // Each large transfer: VXLAN packets of pod flow → backend, refused by the 1450 peer.
    for port in [incident.http_port, incident.redis_port] {
        let drop = find(
            &events,
            "drop",
            "no drop of the pod flow to port {port}",
            |e| {
                e["dport"] == port
                    && e["location"]
                        .as_str()
                        .is_some_and(|l| l.starts_with("__dev_forward_skb"))
            },
        );
        assert_eq!(drop["ifname"], incident.old_uplink_if.as_str());
        assert_eq!(drop["netns"], netns_inode(&incident.old_node_ns));
        assert_eq!(drop["mtu"], incident.opts.new_mtu);
        assert_eq!(drop["mtu_source"], "peer");
        assert!(drop["l3_len"].as_u64().unwrap() > incident.opts.new_mtu as u64);
        assert_eq!(drop["proto"], 6);
        assert_eq!(drop["src"], incident.client_ip.to_string());
        assert_eq!(
            drop["dst"],
            incident.server_ip.to_string(),
            "after DNAT: the backend"
        );
        assert_eq!(drop["outer"]["encap"], "vxlan");
        assert_eq!(drop["outer"]["src"], incident.old_node_ip.to_string());
        assert_eq!(drop["outer"]["dst"], incident.new_node_ip.to_string());
        // Named: the client pod, the service (found from its backend, after DNAT), the
        // server pod, and the nodes from the VXLAN header.
        assert_eq!(drop["src_pod"]["namespace"], "shop", "{drop}");
        assert_eq!(drop["src_pod"]["name"], "order-api-7d9f8");
        assert_eq!(drop["dst_pod"]["namespace"], "cache");
        assert_eq!(drop["dst_pod"]["name"], "storage-0");
        assert_eq!(drop["service"]["namespace"], "cache");
        assert_eq!(drop["service"]["name"], "storage");
        assert_eq!(drop["service"]["port"], port);
        assert_eq!(drop["src_node"]["name"], "worker-116");
        assert_eq!(drop["dst_node"]["name"], "worker-208");
    }
    assert_retransmits_name_the_service(&events, &incident, &all);
    // The verdict: where, how big, what passes, the fix; both transfers named and stuck.
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["problem"], "mtu_black_hole");
    assert_eq!(v["path"]["src_node"], "worker-116");
    assert_eq!(v["path"]["dst_node"], "worker-208");
    assert_eq!(v["path"]["overlay"], "vxlan");
    assert_eq!(v["path_mtu"], incident.opts.new_mtu);
    assert_eq!(v["largest_passing"], 1400);
    assert_eq!(v["recommended_mtu"], 1400);
    let site = &v["sites"][0];
    assert_eq!(site["netns_name"], incident.old_node_ns.as_str());
    assert_eq!(site["device"], incident.old_uplink_if.as_str());
    assert!(site["location"]
        .as_str()
        .unwrap()
        .starts_with("__dev_forward_skb"));
    assert_eq!(site["packet_len"], 1550);
    let flows = v["flows"].as_array().unwrap();
    for port in [incident.http_port, incident.redis_port] {
        let f = flows
            .iter()
            .find(|f| f["dport"] == port)
            .unwrap_or_else(|| panic!("no flow to {port}: {v:#}"));
        assert_eq!(f["stuck"], true);
        assert_eq!(f["src_pod"]["name"], "order-api-7d9f8");
        assert_eq!(f["src_pod"]["workload"], "deployment/order-api");
        assert_eq!(f["service"]["name"], "storage");
        assert!(f["retransmits"].as_u64().unwrap() > 0, "{f}");
    }
    assert!(v["fix"].as_str().unwrap().contains("1400"));
    // The lab's snapshot lists its CNI's config (a Calico manifest install): the fix comes as
    // the change to make, the start line says what was recognised.
    assert_eq!(
        events[0]["cni"]["object"], "configmap/calico-config",
        "{}",
        events[0]
    );
    assert_eq!(events[0]["cni"]["current"], incident.opts.pod_mtu);
    let change = &v["change"];
    assert_eq!(change["value"], 1400, "{change}");
    assert_eq!(change["patch"]["data"]["veth_mtu"], "1400", "{change}");
    assert_eq!(
        change["commands"][1],
        "kubectl rollout restart daemonset/calico-node -n kube-system"
    );
    // The stuck connections' pod restarts by its workload (from the snapshot's
    // ownerReferences: a Deployment's ReplicaSet), after the agent.
    assert_eq!(
        change["commands"][3], "kubectl rollout restart deployment/order-api -n shop",
        "{change}"
    );
    assert_eq!(change["commands"].as_array().unwrap().len(), 4, "{change}");
    // The start-up audit's arithmetic for the new node (its uplink is 1450) backs it.
    let audit: Vec<&str> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        audit
            .iter()
            .any(|a| a.contains("1500") && a.contains("= 1550 > uplink eth0 MTU 1450")),
        "{audit:?}"
    );
}

#[test]
fn router_with_outer_df_the_router_refuses_and_tells_the_node_not_the_pod() {
    let incident = up(Path::Router, OuterDf::Inherit, false);
    let router = incident.router_ns.clone().expect("router");
    let log = TempLog::new("inc-router");
    let t = trace(&incident, &log);
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    let all = dump(&events);
    let drop = find(&events, "drop", "no PKT_TOO_BIG drop at the router", |e| {
        e["reason"] == "PKT_TOO_BIG"
            && e["dport"] == incident.http_port
            && e["netns"] == netns_inode(&router)
    });
    assert_eq!(drop["netns"], netns_inode(&router));
    assert!(drop["location"]
        .as_str()
        .unwrap()
        .starts_with("ip_forward+"));
    assert_eq!(drop["mtu"], incident.opts.new_mtu);
    assert_eq!(drop["src"], incident.client_ip.to_string());
    assert_eq!(drop["outer"]["encap"], "vxlan");
    // The router's ICMP reaches the old node (outer source), quoting the pod flow...
    let received = find(
        &events,
        "icmp_too_big_received",
        "the old node did not receive the router's ICMP",
        |e| e["netns"] == netns_inode(&incident.old_node_ns),
    );
    assert_eq!(received["icmp"]["mtu"], incident.opts.new_mtu);
    assert_eq!(received["icmp"]["to"], incident.old_node_ip.to_string());
    assert_eq!(received["src"], incident.client_ip.to_string());
    // ...but nothing tells the pod about the path: the only MTU it ever hears (from its own
    // node's overlay) is the tunnel's.
    let to_pod: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("icmp_too_big"))
                && e["icmp"]["to"] == incident.client_ip.to_string()
        })
        .collect();
    assert!(
        to_pod
            .iter()
            .all(|e| e["icmp"]["mtu"].is_null() || e["icmp"]["mtu"] == incident.opts.tunnel_mtu),
        "routed VXLAN should not relay the path MTU to the pod:\n{all}"
    );
    assert_retransmits_name_the_service(&events, &incident, &all);
    // The verdict finds the router's link as the binding limit (1450 − 50), past the old node's
    // own overlay limit (1450) that the pod did learn.
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["largest_passing"], 1400, "{v:#}");
    assert_eq!(v["recommended_mtu"], 1400);
    let sites = v["sites"].as_array().unwrap();
    assert!(
        sites
            .iter()
            .any(|s| s["netns_name"] == router.as_str() && s["location"] == "ip_forward"),
        "{v:#}"
    );
    assert!(v["evidence"]["icmp_received"].as_u64().unwrap() > 0);
}

#[test]
fn router_with_icmp_filtered_the_pmtu_signal_dies_in_a_firewall() {
    let incident = up(Path::Router, OuterDf::Set, true);
    let log = TempLog::new("inc-filtered");
    let t = trace(&incident, &log);
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    let all = dump(&events);
    assert!(
        of_kind(&events, "drop")
            .iter()
            .any(|e| e["reason"] == "PKT_TOO_BIG"),
        "no PKT_TOO_BIG drop:\n{all}"
    );
    let eaten = find(&events, "drop", "the filtered ICMP was not reported", |e| {
        matched(e, "icmp_too_big")
    });
    assert_eq!(eaten["reason"], "NETFILTER_DROP");
    assert_eq!(eaten["icmp"]["mtu"], incident.opts.new_mtu);
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["recommended_mtu"], 1400, "{v:#}");
    assert!(v["evidence"]["icmp_dropped"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        v["summary"].as_str().unwrap().contains("NETFILTER_DROP"),
        "{}",
        v["summary"]
    );
}

#[test]
fn router_without_outer_df_fragments_and_recovers() {
    // blackholes.md: with the outer DF unset (the Linux VXLAN default) the router fragments the
    // outer packet and the far node reassembles it: no black hole.
    let incident = up(Path::Router, OuterDf::Unset, false);
    let log = TempLog::new("inc-frag");
    let t = trace(&incident, &log);
    let post = incident.http_post(1 << 20, timeout()).expect("POST");
    assert!(post.ok, "{post}");
    let set = incident.redis_set(1 << 20, timeout()).expect("SET");
    assert!(set.ok, "{set}");
    let events = stop(t, &log);
    let all = dump(&events);
    // The only drops are the pod's own path-MTU discovery toward its node's 1450 overlay
    // (PKT_TOO_BIG in the old node, answered with an ICMP the pod obeys): nothing encapsulated
    // dies anywhere.
    for drop in of_kind(&events, "drop") {
        assert!(
            drop["outer"].is_null(),
            "an encapsulated packet died:\n{all}"
        );
        assert_eq!(drop["netns"], netns_inode(&incident.old_node_ns), "{all}");
        assert_eq!(drop["mtu"], incident.opts.tunnel_mtu, "{all}");
    }
    // No MTU problem: at most a note that path-MTU discovery did its job.
    let verdicts = final_verdicts(&events, &log);
    for v in &verdicts {
        assert!(
            v["severity"] == "ok" || v["severity"] == "info",
            "a recovering path is not a problem: {v:#}"
        );
    }
    if let Some(note) = verdicts.iter().find(|v| v["problem"] == "pmtud_recovered") {
        assert_eq!(note["largest_passing"], incident.opts.tunnel_mtu);
    }
}

#[test]
fn the_fix_ends_the_timeouts_and_the_size_events() {
    let incident = up(Path::L2, OuterDf::Unset, false);
    assert_fixed_is_no_problem(&incident, 1400);
}

/// The IPv6 incident over an IPv6 underlay, fixed with the verdict's 1380: nothing to say.
#[test]
fn ipv6_fixed_with_1380_over_an_ipv6_underlay_is_no_problem() {
    let incident = up_with(IncidentOptions {
        ipv6: true,
        ipv6_underlay: true,
        ..IncidentOptions::default()
    });
    assert_fixed_is_no_problem(&incident, 1380);
}

/// With the pods at `pod_mtu` every client passes, no size event happens, and the verdict says
/// so.
fn assert_fixed_is_no_problem(incident: &Incident, pod_mtu: u32) {
    incident.apply_fix(pod_mtu).expect("fix");
    let log = TempLog::new("inc-fixed");
    let t = trace(incident, &log);
    for r in incident.run_clients(timeout()).expect("clients") {
        assert!(r.ok, "after the fix: {r}");
    }
    let events = stop(t, &log);
    let all = dump(&events);
    let size: Vec<&Value> = events
        .iter()
        .filter(|e| SIZE_KINDS.contains(&e["kind"].as_str().unwrap_or("")))
        .collect();
    assert!(size.is_empty(), "size events after the fix:\n{all}");
    let verdicts = final_verdicts(&events, &log);
    assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
    assert_eq!(verdicts[0]["problem"], "none");
    assert_eq!(verdicts[0]["severity"], "ok");
}

#[test]
fn a_healthy_cluster_with_equal_mtus_gets_no_mtu_verdict() {
    // Both uplinks 1500 and pods at 1450 (1500 − 50 VXLAN): what Calico's auto-detection
    // gives a cluster on one subnet. The audit agrees and the large transfers pass.
    let incident = up_with(IncidentOptions {
        new_mtu: 1500,
        pod_mtu: 1450,
        tunnel_mtu: 1450,
        ..IncidentOptions::default()
    });
    let check = std::process::Command::new(tracer_bin())
        .args(["check", "--netns", &incident.old_node_ns])
        .args(["--netns", &incident.new_node_ns])
        .output()
        .expect("tracer check");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let log = TempLog::new("inc-healthy");
    let t = trace(&incident, &log);
    for r in incident.run_clients(timeout()).expect("clients") {
        assert!(r.ok, "healthy cluster: {r}");
    }
    let events = stop(t, &log);
    let verdicts = final_verdicts(&events, &log);
    assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
    assert_eq!(verdicts[0]["problem"], "none");
    assert!(verdicts[0]["audit"].as_array().unwrap().is_empty());
}

#[test]
fn names_come_live_from_the_kubernetes_api_too() {
    // The same lab, named through the API (list + watch) instead of a snapshot file.
    let incident = up(Path::L2, OuterDf::Unset, false);
    let api = FakeKubeApi::start(&incident.k8s_snapshot());
    let log = TempLog::new("inc-api");
    let mut t = trace_named(
        &incident,
        &log,
        &["--kubeconfig", &api.kubeconfig.display().to_string()],
    );
    // The API is read in the background: wait for its first view before the traffic.
    assert!(
        t.wait_for_stderr("names: API: 2 pods", Duration::from_secs(20)),
        "no API view: {}",
        t.stderr.join("\n")
    );
    let post = incident.http_post(1 << 20, timeout()).expect("POST");
    assert!(!post.ok, "{post}");
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, stderr) = t.stop();
    assert!(status.success(), "{}", stderr.join("\n"));
    let stderr = stderr.join("\n");
    assert!(stderr.contains("Kubernetes API: connected via"), "{stderr}");
    let events = read_events(&log.0);
    let drop = find(&events, "drop", "no named drop of the POST", |e| {
        e["dport"] == incident.http_port && !e["src_pod"].is_null()
    });
    assert_eq!(drop["src_pod"]["name"], "order-api-7d9f8");
    assert_eq!(drop["dst_pod"]["name"], "storage-0");
    // The pods' workloads from the API's ownerReferences, as from a snapshot.
    assert_eq!(
        drop["src_pod"]["workload"], "deployment/order-api",
        "{drop}"
    );
    assert_eq!(drop["dst_pod"]["workload"], "statefulset/storage", "{drop}");
    assert_eq!(drop["service"]["name"], "storage");
    assert_eq!(drop["src_node"]["name"], "worker-116");
    assert_eq!(drop["dst_node"]["name"], "worker-208");
    // The CNI's config, read by name from the API: said, logged, and the verdict's change.
    assert!(
        stderr.contains("names: API: the CNI is calico (manifest, configmap/calico-config)"),
        "{stderr}"
    );
    let cni = of_kind(&events, "cni");
    assert_eq!(cni.len(), 1, "{}", dump(&events));
    assert_eq!(cni[0]["object"], "configmap/calico-config");
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["change"]["value"], v["recommended_mtu"], "{v}");
    assert_eq!(v["change"]["patch"]["data"]["veth_mtu"], "1400", "{v}");
}

#[test]
fn without_endpoint_slices_conntrack_names_the_service_after_dnat() {
    // The lab described without its EndpointSlice (a partial snapshot, a stale or missing
    // slice): after DNAT the backend's address names no service; the old node's conntrack
    // entry, whose original destination is the ClusterIP, does.
    let incident = up(Path::L2, OuterDf::Unset, false);
    let log = TempLog::new("inc-ct");
    let mut doc: Value = serde_json::from_str(&incident.k8s_snapshot()).expect("snapshot JSON");
    let items = doc["items"].as_array_mut().expect("items");
    let before = items.len();
    items.retain(|i| i["kind"] != "EndpointSlice");
    assert_eq!(items.len(), before - 1, "the lab's snapshot has one slice");
    let snapshot = std::path::PathBuf::from(format!("{}.k8s.json", log.0.display()));
    std::fs::write(&snapshot, doc.to_string()).expect("write snapshot");
    let t = trace_named(
        &incident,
        &log,
        &["--k8s-snapshot", &snapshot.display().to_string()],
    );
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    let all = dump(&events);
    for port in [incident.http_port, incident.redis_port] {
        let post_dnat: Vec<&Value> = of_kind(&events, "drop")
            .into_iter()
            .filter(|e| {
                e["dport"] == port
                    && e["dst"] == incident.server_ip.to_string()
                    && e["netns"] == netns_inode(&incident.old_node_ns)
            })
            .collect();
        let first = post_dnat
            .iter()
            .position(|e| !e["service"].is_null())
            .unwrap_or_else(|| panic!("no post-DNAT drop to {port} names a service:\n{all}"));
        let named = post_dnat[first];
        assert_eq!(named["service"]["namespace"], "cache", "{named}");
        assert_eq!(named["service"]["name"], "storage");
        // The service port of the ClusterIP the client dialled.
        assert_eq!(named["service"]["port"], port);
        assert_eq!(named["src_pod"]["name"], "order-api-7d9f8");
        assert_eq!(named["dst_pod"]["name"], "storage-0");
        // Once the connection is in the table, its later drops are named too (the first ones
        // may come before the first dump, which a miss asks for).
        for e in &post_dnat[first..] {
            if e["sport"] == named["sport"] {
                assert_eq!(e["service"]["name"], "storage", "{e}");
            }
        }
    }
    // Before DNAT the ClusterIP still names it, as always.
    assert_retransmits_name_the_service(&events, &incident, &all);
}

/// A pod's cgroup as the kubelet's systemd driver names it, in the real cgroup v2 hierarchy
/// (wherever it is mounted: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host),
/// under a per-process prefix. Drop kills the process moved in and removes the directories.
struct PodCgroup {
    dirs: Vec<std::path::PathBuf>,
    process: Option<std::process::Child>,
}

impl PodCgroup {
    fn create(uid: &str) -> PodCgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
            })
            .expect("a cgroup v2 hierarchy is mounted");
        let p = format!("tracer-test-{}-", std::process::id());
        let uid_ = uid.replace('-', "_");
        let mut dirs = Vec::new();
        let mut dir = root;
        for name in [
            format!("{p}kubepods.slice"),
            format!("{p}kubepods-besteffort.slice"),
            format!("{p}kubepods-besteffort-pod{uid_}.slice"),
        ] {
            dir = dir.join(name);
            dirs.push(dir.clone());
        }
        let cg = PodCgroup {
            dirs,
            process: None,
        };
        std::fs::create_dir_all(cg.dirs.last().unwrap()).expect("create the pod cgroup");
        cg
    }

    /// Move `child` into the pod cgroup once it is inside `netns_inode` (`ip netns exec` enters
    /// the namespace before it becomes the command).
    fn adopt(&mut self, child: std::process::Child, netns_inode: u64) -> u32 {
        use std::os::unix::fs::MetadataExt as _;
        let pid = child.id();
        self.process = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| m.ino())
            .ok()
            != Some(netns_inode)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} never entered the pod netns"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let procs = self.dirs.last().unwrap().join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).expect("move into the pod cgroup");
        pid
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            // An exited task can take a moment to leave the cgroup.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A node's files for `--host-root`, removed on drop.
struct HostTree(std::path::PathBuf);

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn names_come_from_node_local_facts_without_api_or_snapshot() {
    // No API, no snapshot: the client pod is found as on a node, from the kubelet's log
    // directory, its cgroup (a real process in its real netns) and that netns's address; the
    // server's node from the old node's VXLAN route to the new node's pod CIDR.
    let incident = up(Path::L2, OuterDf::Unset, false);
    let uid = format!("{:08x}-7d9f-4c1a-9b2e-0242ac110002", std::process::id());
    let root = HostTree(
        std::env::temp_dir().join(format!("tracer-test-{}-host-root", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(
        root.0
            .join(format!("var/log/pods/shop_order-api-7d9f8_{uid}/order-api")),
    )
    .unwrap();
    std::fs::create_dir_all(root.0.join("etc/cni/net.d")).unwrap();
    std::fs::write(
        root.0.join("etc/cni/net.d/10-calico.conflist"),
        r#"{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","mtu":1500,"ipam":{"type":"calico-ipam"}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    let mut cgroup = PodCgroup::create(&uid);
    let sleeper = incident
        .lab
        .spawn(&incident.client_ns, &["sleep", "600"])
        .expect("a process in the client pod");
    cgroup.adopt(sleeper, netns_inode(&incident.client_ns));

    let log = TempLog::new("inc-node-local");
    let t = trace_named(
        &incident,
        &log,
        &["--host-root", &root.0.display().to_string(), "--no-k8s-api"],
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    let startup = t.stderr.join("\n");
    let expected = format!(
        "names: node-local: CNI calico (10-calico.conflist, mtu 1500), node {host}: 1 local pods"
    );
    assert!(startup.contains(&expected), "{expected}\n{startup}");
    assert!(
        startup.contains(&format!(
            "{} via {}",
            incident.new_pod_cidr, incident.new_tunnel_ip
        )),
        "{startup}"
    );
    let post = incident.http_post(1 << 20, timeout()).expect("POST");
    assert!(
        !post.ok && post.timed_out,
        "large POST must time out: {post}"
    );
    let events = stop(t, &log);
    let drop = find(&events, "drop", "no drop of the POST", |e| {
        e["dport"] == incident.http_port
            && e["location"]
                .as_str()
                .is_some_and(|l| l.starts_with("__dev_forward_skb"))
    });
    assert_eq!(drop["src"], incident.client_ip.to_string());
    assert_eq!(drop["src_pod"]["namespace"], "shop", "{drop}");
    assert_eq!(drop["src_pod"]["name"], "order-api-7d9f8");
    assert_eq!(drop["src_node"]["name"], host.as_str());
    // The server pod is on another node: not known by name, but its node is, by the
    // address its pod CIDR is routed through (no API: the address is the name).
    assert!(drop["dst_pod"].is_null(), "{drop}");
    assert_eq!(drop["dst_node"]["name"], incident.new_tunnel_ip.to_string());
    assert!(
        drop["service"].is_null(),
        "no service without API or snapshot"
    );
    // The client's retransmissions (to the ClusterIP) name the pod too.
    let rtx = find(
        &events,
        "tcp_retransmit",
        "no retransmission of the POST",
        |e| e["dport"] == incident.http_port && e["src"] == incident.client_ip.to_string(),
    );
    assert_eq!(rtx["src_pod"]["name"], "order-api-7d9f8", "{rtx}");
}

/// The incident with dual-stack pods, the clients talking IPv6 (issue 21): IPv6 pod packets in
/// VXLAN over the IPv4 underlay die at the new node's 1450 link as the IPv4 ones do; the drops,
/// the retransmissions to the IPv6 ClusterIP and the verdict name the IPv6 flows and their pods,
/// and the fix is the same 1400 (1450 − 50 B VXLAN), with the Calico change.
#[test]
fn ipv6_pods_large_transfers_die_at_the_new_nodes_link_too() {
    let incident = up_with(IncidentOptions {
        ipv6: true,
        ..IncidentOptions::default()
    });
    let (client, server, service) = (
        incident.client_addr().to_string(),
        incident.server_addr().to_string(),
        incident.service_addr().to_string(),
    );
    assert!(client.contains(':') && server.contains(':') && service.contains(':'));
    let log = TempLog::new("inc-v6");
    let t = trace(&incident, &log);
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    let all = dump(&events);
    for port in [incident.http_port, incident.redis_port] {
        let drop = find(
            &events,
            "drop",
            "no drop of the IPv6 pod flow to port {port}",
            |e| e["dport"] == port && e["src"] == client.as_str(),
        );
        assert_eq!(drop["dst"], server.as_str(), "after DNAT: {drop}");
        assert_eq!(drop["outer"]["encap"], "vxlan", "{drop}");
        assert_eq!(drop["outer"]["src"], incident.old_node_ip.to_string());
        assert_eq!(drop["mtu"], incident.opts.new_mtu, "{drop}");
        assert_eq!(drop["src_pod"]["name"], "order-api-7d9f8", "{drop}");
        assert_eq!(drop["dst_pod"]["name"], "storage-0", "{drop}");
        assert_eq!(drop["service"]["name"], "storage", "{drop}");
        // The client's own retransmissions go to the IPv6 ClusterIP and name the service.
        let rtx = find(
            &events,
            "tcp_retransmit",
            "no retransmission to the IPv6 ClusterIP port {port}",
            |e| e["dport"] == port && e["dst"] == service.as_str(),
        );
        assert_eq!(rtx["service"]["name"], "storage", "{rtx}\n{all}");
    }
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["problem"], "mtu_black_hole", "{v:#}");
    assert_eq!(v["largest_passing"], 1400, "{v:#}");
    assert_eq!(v["recommended_mtu"], 1400, "{v:#}");
    for port in [incident.http_port, incident.redis_port] {
        let f = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["dport"] == port)
            .unwrap_or_else(|| panic!("no flow to {port}: {v:#}"));
        assert_eq!(f["stuck"], true, "{f}");
        assert_eq!(f["src"], client.as_str(), "{f}");
        assert_eq!(f["src_pod"]["workload"], "deployment/order-api", "{f}");
    }
    assert_eq!(v["change"]["value"], 1400, "{v:#}");
}

/// The same incident over an IPv6 underlay (issue 21): VXLAN over IPv6 costs 70 bytes, so the
/// 1500-byte pod packets leave as 1570-byte ones, the new node's 1450 link refuses them, and
/// what passes is 1450 − 70 = 1380 — not the IPv4 underlay's 1400.
#[test]
fn over_an_ipv6_underlay_vxlan_costs_70_bytes_and_the_fix_is_1380() {
    let incident = up_with(IncidentOptions {
        ipv6: true,
        ipv6_underlay: true,
        ..IncidentOptions::default()
    });
    let (old6, new6) = incident.node_addrs();
    assert!(old6.is_ipv6() && new6.is_ipv6());
    let client = incident.client_addr().to_string();
    let log = TempLog::new("inc-u6");
    let t = trace(&incident, &log);
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    for port in [incident.http_port, incident.redis_port] {
        let drop = find(
            &events,
            "drop",
            "no drop of the IPv6 pod flow to port {port} in VXLAN over IPv6",
            |e| e["dport"] == port && e["src"] == client.as_str() && !e["outer"].is_null(),
        );
        assert_eq!(drop["outer"]["encap"], "vxlan", "{drop}");
        assert_eq!(drop["outer"]["src"], old6.to_string(), "{drop}");
        assert_eq!(drop["outer"]["dst"], new6.to_string(), "{drop}");
        assert_eq!(drop["src_node"]["name"], "worker-116", "{drop}");
        assert_eq!(drop["dst_node"]["name"], "worker-208", "{drop}");
        assert_eq!(drop["mtu"], incident.opts.new_mtu, "{drop}");
    }
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["problem"], "mtu_black_hole", "{v:#}");
    assert_eq!(v["path"]["overhead"], 70, "{v:#}");
    assert_eq!(v["largest_passing"], 1380, "{v:#}");
    assert_eq!(v["recommended_mtu"], 1380, "{v:#}");
    assert_eq!(v["change"]["value"], 1380, "{v:#}");
    assert!(
        v["sites"][0]["packet_len"].as_u64().unwrap() > 1450,
        "{v:#}"
    );
}

/// Behind a router, over an IPv6 underlay, with the router's packet too big eaten by a
/// firewall (issue 21): IPv6 routers never fragment, so the 1570-byte VXLAN packets die at the
/// router (PKT_TOO_BIG) and the ICMPv6 that would tell the node dies in the filter. The verdict
/// is a problem with 1380 (1450 − 70), and the eaten packet too big is evidence.
#[test]
fn behind_a_router_over_ipv6_the_eaten_packet_too_big_is_a_black_hole() {
    let incident = up_with(IncidentOptions {
        path: Path::Router,
        filter_icmp: true,
        ipv6: true,
        ipv6_underlay: true,
        // Sized for the old node's own uplink, as Calico's auto-detection would: 1500 − 70.
        tunnel_mtu: 1430,
        ..IncidentOptions::default()
    });
    let log = TempLog::new("inc-r6");
    let t = trace(&incident, &log);
    assert_incident_symptom(&incident);
    let events = stop(t, &log);
    let all = dump(&events);
    assert!(
        of_kind(&events, "drop")
            .iter()
            .any(|e| e["reason"] == "PKT_TOO_BIG" && e["outer"]["encap"] == "vxlan"),
        "no PKT_TOO_BIG drop of a VXLAN packet at the router:\n{all}"
    );
    let eaten = find(
        &events,
        "drop",
        "the router's filtered ICMPv6 was not reported",
        |e| matched(e, "icmp_too_big") && e["icmp"]["mtu"] == incident.opts.new_mtu,
    );
    assert_eq!(eaten["reason"], "NETFILTER_DROP", "{eaten}");
    assert_eq!(
        eaten["icmp"]["type"], 2,
        "an ICMPv6 packet too big: {eaten}"
    );
    let verdicts = final_verdicts(&events, &log);
    let v = the_problem(&verdicts);
    assert_eq!(v["problem"], "mtu_black_hole", "{v:#}");
    assert_eq!(v["recommended_mtu"], 1380, "{v:#}");
    assert!(v["evidence"]["icmp_dropped"].as_u64().unwrap() > 0, "{v:#}");
}
