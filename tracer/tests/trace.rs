//! Privileged end-to-end tests: the real tracer binary, its real kernel programs, real network
//! namespaces built by `xtask::lab` (removed even when a test fails), real traffic.
//! Run as root, one at a time (`cargo xtask test` does): tracepoints are kernel-wide.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    dump, find, held_bpf_objects, lost_total, matched, netns_inode, of_kind, read_events, total,
    TempLog, Tracer,
};
use xtask::lab::{self, Lab};
use xtask::routed::{Family, RoutedPath};

fn prefix() -> String {
    let _ = lab::cleanup_stale("trt");
    Lab::unique_prefix("trt")
}

fn ns_args(namespaces: &[&str]) -> Vec<String> {
    namespaces
        .iter()
        .flat_map(|n| ["--netns".to_string(), n.to_string()])
        .collect()
}

fn start(namespaces: &[&str], log: &TempLog, extra: &[&str], env: &[(&str, &str)]) -> Tracer {
    let mut args = ns_args(namespaces);
    args.push("--log".into());
    args.push(log.0.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Tracer::start(&args, env)
}

fn stop_ok(t: Tracer) -> Vec<String> {
    let (status, _stdout, stderr) = t.stop();
    assert!(
        status.success(),
        "tracer exit {status:?}; stderr:\n{}",
        stderr.join("\n")
    );
    assert!(
        stderr.iter().any(|l| l.starts_with("summary:")),
        "no summary on exit:\n{}",
        stderr.join("\n")
    );
    stderr
}

/// Give the kernel a moment to deliver the last events before stopping.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn routed_hop_drop_icmp_sent_and_received() {
    let (lab, s) = lab::routed_mtu_hop(&prefix()).expect("lab");
    let log = TempLog::new("routed");
    let t = start(&[&s.client_ns, &s.router_ns, &s.server_ns], &log, &[], &[]);
    let ping = lab::ping_df(&lab, &s.client_ns, s.server_ip, 1472, 1).expect("ping");
    assert!(
        !ping.success,
        "a 1500-byte DF ping must not pass a 1450 hop"
    );
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let all = dump(&events);

    let router = netns_inode(&s.router_ns);
    let drop = find(&events, "drop", "no PKT_TOO_BIG drop", |e| {
        e["reason"] == "PKT_TOO_BIG"
    });
    assert!(
        drop["location"]
            .as_str()
            .unwrap()
            .starts_with("ip_forward+0x"),
        "{drop}"
    );
    assert_eq!(drop["hook"], "tp_btf/kfree_skb");
    assert_eq!(drop["ifname"], s.router_client_if.as_str());
    assert_eq!(drop["netns"], router);
    assert_eq!(drop["l3_len"], 1500);
    assert_eq!(drop["mtu"], s.hop_mtu);
    assert_eq!(drop["mtu_source"], "route");
    assert_eq!(drop["out_ifname"], s.router_server_if.as_str());
    assert_eq!(drop["proto"], 1);
    assert_eq!(drop["src"], s.client_ip.to_string());
    assert_eq!(drop["dst"], s.server_ip.to_string());
    assert!(matched(drop, "reason"));

    // The router's ICMP frag-needed, seen leaving its client-side device with the MTU it
    // advertises, about the client's flow.
    let sent: Vec<&Value> = of_kind(&events, "icmp_too_big_sent");
    let on_wire = find(
        &events,
        "icmp_too_big_sent",
        "no ICMP leaving the router",
        |e| e["hook"] == "tcx/egress",
    );
    assert_eq!(on_wire["ifname"], s.router_client_if.as_str());
    assert_eq!(on_wire["netns"], router);
    assert_eq!(on_wire["mtu"], s.hop_mtu);
    assert_eq!(on_wire["mtu_source"], "icmp");
    assert_eq!(on_wire["icmp"]["mtu"], s.hop_mtu);
    assert_eq!(on_wire["icmp"]["to"], s.client_ip.to_string());
    assert_eq!(on_wire["src"], s.client_ip.to_string());
    assert_eq!(on_wire["dst"], s.server_ip.to_string());
    // The generator hook (tracepoint here, kprobe where the kernel has kprobes) too.
    assert!(
        sent.iter()
            .any(|e| e["hook"] != "tcx/egress" && e["skb"] == drop["skb"]),
        "the ICMP generation event should name the dropped skb:\n{all}"
    );

    // And the client receiving it.
    let received = of_kind(&events, "icmp_too_big_received");
    let rx = received
        .iter()
        .find(|e| e["netns"] == netns_inode(&s.client_ns))
        .unwrap_or_else(|| panic!("no ICMP received by the client:\n{all}"));
    assert_eq!(rx["ifname"], s.client_if.as_str());
    assert_eq!(rx["mtu"], s.hop_mtu);
    assert_eq!(rx["icmp"]["from"], s.client_gw.to_string());
}

/// Send `count` UDP datagrams of `payload` bytes with DF set (IP_PMTUDISC_PROBE: DF without the
/// sender's own PMTU check), from `ns` to `dst:port`; returns how many the socket accepted.
fn udp_df_burst(
    lab: &Lab,
    ns: &str,
    dst: std::net::Ipv4Addr,
    port: u16,
    payload: usize,
    count: usize,
) -> u64 {
    udp_df_bursts(lab, ns, dst, &[port], payload, 1, count)
}

/// `bursts` bursts of `size` such datagrams from one socket, each burst to the next of `ports`
/// in turn; how many the socket accepted.
fn udp_df_bursts(
    lab: &Lab,
    ns: &str,
    dst: std::net::Ipv4Addr,
    ports: &[u16],
    payload: usize,
    bursts: usize,
    size: usize,
) -> u64 {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IP, 10, 3)\n\
         s.bind(('0.0.0.0', 40000))\n\
         ports = [{}]\n\
         n = 0\n\
         for b in range({bursts}):\n\
         \x20   for i in range({size}):\n\
         \x20       try:\n\
         \x20           s.sendto(b'x' * {payload}, ('{dst}', ports[b % len(ports)]))\n\
         \x20           n += 1\n\
         \x20       except OSError:\n\
         \x20           pass\n\
         print(n)\n",
        ports.join(", ")
    );
    let out = lab
        .exec_ok(ns, &["python3", "-c", &script])
        .expect("udp burst");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count")
}

#[test]
fn routed_hop_udp_drop_shows_ports() {
    let (lab, s) = lab::routed_mtu_hop(&prefix()).expect("lab");
    let log = TempLog::new("routed-udp");
    let t = start(&[&s.client_ns, &s.router_ns, &s.server_ns], &log, &[], &[]);
    let sent = udp_df_burst(&lab, &s.client_ns, s.server_ip, 5353, 1472, 3);
    assert_eq!(sent, 3);
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let all = dump(&events);
    let drops: Vec<&Value> = of_kind(&events, "drop")
        .into_iter()
        .filter(|e| e["proto"] == 17 && e["dport"] == 5353)
        .collect();
    // The first datagram dies at the router; the router's ICMP then teaches the client's
    // kernel the path MTU, which refuses the next ones locally (EMSGSIZE is not a drop).
    assert!(!drops.is_empty(), "no UDP drop:\n{all}");
    let drop = drops[0];
    assert_eq!(drop["reason"], "PKT_TOO_BIG");
    assert_eq!(drop["sport"], 40000);
    assert_eq!(drop["src"], s.client_ip.to_string());
    assert_eq!(drop["dst"], s.server_ip.to_string());
    assert_eq!(drop["l3_len"], 1500);
    assert_eq!(drop["mtu"], s.hop_mtu);
}

/// The benchmarks' floor (`--bench-empty-programs`): every program loads and attaches where it
/// would (the verifier accepts the pruned bodies on this kernel), and the drop, the router's
/// ICMP and its arrival that `routed_hop_drop_icmp_sent_and_received` sees are not reported:
/// the programs did nothing.
#[test]
fn empty_programs_attach_everywhere_and_report_nothing() {
    let (lab, s) = lab::routed_mtu_hop(&prefix()).expect("lab");
    let log = TempLog::new("empty");
    let t = start(
        &[&s.client_ns, &s.router_ns, &s.server_ns],
        &log,
        &["--bench-empty-programs"],
        &[],
    );
    let ping = lab::ping_df(&lab, &s.client_ns, s.server_ip, 1472, 1).expect("ping");
    assert!(
        !ping.success,
        "a 1500-byte DF ping must not pass a 1450 hop"
    );
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let start = find(&events, "start", "no start line", |_| true);
    let attached = |concern: &str| {
        start["hooks"].as_array().is_some_and(|h| {
            h.iter()
                .any(|h| h["concern"] == concern && h["outcome"] == "attached")
        })
    };
    for concern in ["drops", "tx", "rx"] {
        assert!(attached(concern), "{concern} not attached: {start}");
    }
    for kind in [
        "drop",
        "icmp_too_big_sent",
        "icmp_too_big_received",
        "oversize_tx",
    ] {
        assert!(
            of_kind(&events, kind).is_empty(),
            "a {kind} event with empty programs:\n{}",
            dump(&events)
        );
    }
}

/// The far end's view: DF pings of three sizes (IP total length 1000, 1400 and 1500: three
/// size classes) cross a healthy 1500 link from `a` to `b`, the tracer watching `b` alone with
/// 1-second windows. Summed over the `arrivals` lines from `a` to `b`, every class holds
/// exactly what was sent, however the windows cut the pings; the start line names `b`'s own
/// address.
#[test]
fn arrivals_count_every_packet_from_a_peer_per_size_class() {
    let mut lab = Lab::new(&prefix()).expect("lab");
    let a_ns = lab.add_netns("a").expect("netns a");
    let b_ns = lab.add_netns("b").expect("netns b");
    let (a_ip, b_ip) = ("10.203.0.1", "10.203.0.2");
    lab.add_veth(&a_ns, "eth0", 1500, &b_ns, "eth0", 1500)
        .expect("veth");
    lab.add_addr(&a_ns, "eth0", &format!("{a_ip}/24"))
        .expect("addr a");
    lab.add_addr(&b_ns, "eth0", &format!("{b_ip}/24"))
        .expect("addr b");
    let log = TempLog::new("arrivals");
    let t = start(&[&b_ns], &log, &["--arrivals-interval", "1"], &[]);
    // (ICMP payload, IP total length, class index, how many): 1000 ≤ 1280, 1400 ≤ 1400,
    // 1500 ≤ 1500 (tracer_common::ARRIVAL_SIZE_EDGES).
    let sent = [
        (972u32, 1000u64, 1usize, 3u64),
        (1372, 1400, 2, 2),
        (1472, 1500, 5, 4),
    ];
    for (payload, _, _, count) in sent {
        let (payload, count) = (payload.to_string(), count.to_string());
        let argv = [
            "ping", "-n", "-M", "do", "-s", &payload, "-c", &count, "-i", "0.3", "-W", "1", b_ip,
        ];
        let out = lab.exec(&a_ns, &argv).expect("ping");
        assert!(
            out.status.success(),
            "every ping of {payload} B must pass the 1500 link: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let all = dump(&events);
    let lines: Vec<&Value> = of_kind(&events, "arrivals")
        .into_iter()
        .filter(|l| l["peer"] == a_ip && l["local"] == b_ip)
        .collect();
    assert!(!lines.is_empty(), "no arrivals from {a_ip}:\n{all}");
    let mut classes = [0u64; 8];
    let (mut packets, mut bytes, mut max_len) = (0, 0, 0);
    for l in &lines {
        assert_eq!(l["device"], "eth0", "{l}");
        assert_eq!(l["netns"], netns_inode(&b_ns), "{l}");
        assert_eq!(l["netns_name"], b_ns.as_str(), "{l}");
        assert_eq!(l["left_out"], 0, "{l}");
        let (first, last) = (
            l["first_ts"].as_str().unwrap(),
            l["last_ts"].as_str().unwrap(),
        );
        // RFC 3339 with nanoseconds, UTC: text order is time order.
        assert!(first <= last, "{l}");
        assert!(last <= l["ts"].as_str().unwrap(), "{l}");
        let sizes = l["sizes"].as_array().unwrap();
        assert_eq!(sizes.len(), 8, "{l}");
        for (i, c) in sizes.iter().enumerate() {
            classes[i] += c["packets"].as_u64().unwrap();
        }
        assert_eq!(sizes[5]["le"], 1500, "{l}");
        assert!(sizes[7]["le"].is_null(), "{l}");
        packets += l["packets"].as_u64().unwrap();
        bytes += l["bytes"].as_u64().unwrap();
        max_len = max_len.max(l["max_len"].as_u64().unwrap());
    }
    let mut expected = [0u64; 8];
    for (_, _, class, count) in sent {
        expected[class] += count;
    }
    assert_eq!(classes, expected, "packets per size class:\n{all}");
    assert_eq!(packets, sent.iter().map(|s| s.3).sum::<u64>(), "{all}");
    assert_eq!(bytes, sent.iter().map(|s| s.1 * s.3).sum::<u64>(), "{all}");
    assert_eq!(max_len, 1500, "{all}");
    // Nothing from b to itself or the other way round: b's ingress sees only what a sent.
    assert!(
        of_kind(&events, "arrivals")
            .iter()
            .all(|l| l["peer"] != b_ip),
        "{all}"
    );
    let start = find(&events, "start", "no start line", |_| true);
    let addresses = start["addresses"].as_array().unwrap();
    assert!(addresses.contains(&Value::from(b_ip)), "{start}");
    assert!(!addresses.contains(&Value::from(a_ip)), "{start}");
}

#[test]
fn veth_mismatch_drop_names_the_peer_mtu() {
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let log = TempLog::new("veth");
    let t = start(
        &[&s.a_ns, &s.b_ns],
        &log,
        &[],
        &[("NODE_NAME", "worker-116")],
    );
    let ping = lab::ping_df(&lab, &s.a_ns, s.b_ip, 1472, 1).expect("ping");
    assert!(!ping.success);
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let all = dump(&events);
    let drop = find(&events, "drop", "no drop", |e| e["proto"] == 1);
    assert_eq!(drop["reason"], "NOT_SPECIFIED");
    assert!(
        drop["location"]
            .as_str()
            .unwrap()
            .starts_with("__dev_forward_skb"),
        "{drop}"
    );
    assert_eq!(drop["ifname"], s.a_if.as_str());
    assert_eq!(drop["netns"], netns_inode(&s.a_ns));
    assert_eq!(drop["len"], 1514);
    assert_eq!(drop["l3_len"], 1500);
    assert_eq!(drop["mtu"], s.b_mtu);
    assert_eq!(drop["mtu_source"], "peer");
    assert_eq!(drop["peer_ifname"], s.b_if.as_str());
    assert_eq!(drop["src"], s.a_ip.to_string());
    assert_eq!(drop["dst"], s.b_ip.to_string());
    let matched = drop["matched"].as_array().unwrap();
    assert!(matched.contains(&Value::from("location")), "{drop}");
    assert!(matched.contains(&Value::from("oversize")), "{drop}");
    // Every event names the node the tracer runs on (at the end, before the fields added since).
    let text = support::read_log_text(&log.0);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                r#""kind":"verdict""#,
                r#""kind":"start""#,
                r#""kind":"arrivals""#,
            ]
            .iter()
            .all(|k| !l.contains(k))
        })
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(
            line.contains(r#","node":"worker-116","tcp_seq":"#),
            "{line}"
        );
    }
    // A small packet passes and is not reported.
    assert!(
        of_kind(&events, "drop")
            .iter()
            .all(|e| e["l3_len"].as_u64() > Some(1450)),
        "only oversized packets are reported by default:\n{all}"
    );
}

#[test]
fn vxlan_mismatch_large_upload_dies_with_the_pod_flow_inside() {
    let (lab, s) = lab::vxlan_mismatch(&prefix()).expect("lab");
    let log = TempLog::new("vxlan");
    let t = start(
        &[&s.node1_ns, &s.node2_ns, &s.pod1_ns, &s.pod2_ns],
        &log,
        &[],
        &[],
    );
    let small = lab::tcp_upload(
        &lab,
        &s.pod1_ns,
        &s.pod2_ns,
        s.pod2_ip,
        6379,
        1000,
        Duration::from_secs(5),
    )
    .expect("small upload");
    let large = lab::tcp_upload(
        &lab,
        &s.pod1_ns,
        &s.pod2_ns,
        s.pod2_ip,
        6380,
        200_000,
        Duration::from_secs(4),
    )
    .expect("large upload");
    assert!(small.completed, "small upload: {}", small.detail);
    assert!(
        !large.completed,
        "large upload must hang like the incident: {}",
        large.detail
    );
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let all = dump(&events);
    let drop = find(
        &events,
        "drop",
        "no encapsulated drop of the large upload",
        |e| {
            e["dport"] == 6380
                && !e["outer"].is_null()
                && e["location"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("__dev_forward_skb"))
        },
    );
    assert_eq!(drop["reason"], "NOT_SPECIFIED");
    assert!(
        drop["location"]
            .as_str()
            .unwrap()
            .starts_with("__dev_forward_skb"),
        "{drop}"
    );
    assert_eq!(drop["ifname"], s.node1_underlay_if.as_str());
    assert_eq!(drop["netns"], netns_inode(&s.node1_ns));
    assert_eq!(drop["mtu"], s.node2_underlay_mtu);
    // The 1550-byte VXLAN packet (1500 + 50) is fragmented to fit node 1's 1500 underlay; its
    // 1500-byte first fragment (with the pod's headers in it) is what the 1450 peer refuses.
    assert!(
        drop["l3_len"].as_u64().unwrap() > s.node2_underlay_mtu as u64,
        "{drop}"
    );
    assert_eq!(drop["proto"], 6);
    assert_eq!(drop["src"], s.pod1_ip.to_string());
    assert_eq!(drop["dst"], s.pod2_ip.to_string());
    assert_eq!(drop["outer"]["encap"], "vxlan");
    assert_eq!(drop["outer"]["vni"], s.vxlan_id);
    assert_eq!(drop["outer"]["src"], s.node1_underlay_ip.to_string());
    assert_eq!(drop["outer"]["dst"], s.node2_underlay_ip.to_string());
    // The small upload's flow is never reported.
    assert!(
        of_kind(&events, "drop").iter().all(|e| e["dport"] != 6379),
        "{all}"
    );
    // The pod keeps retransmitting the segment that cannot pass.
    let rtx: Vec<&Value> = of_kind(&events, "tcp_retransmit")
        .into_iter()
        .filter(|e| e["dport"] == 6380)
        .collect();
    assert!(
        !rtx.is_empty(),
        "no retransmissions of the large upload:\n{all}"
    );
    assert_eq!(rtx[0]["src"], s.pod1_ip.to_string());
    assert_eq!(rtx[0]["netns"], netns_inode(&s.pod1_ns));
}

/// The kernel's folding when the ring overflows: bursts whose first drop found no room are lost
/// with the drops folded into them, and counts that come for a burst whose first event was lost
/// are reported lost. Every datagram is still counted once.
#[test]
fn folded_bursts_lost_in_a_full_ring_are_counted_with_their_folds() {
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let log = TempLog::new("foldloss");
    let t = start(
        &[&s.a_ns, &s.b_ns],
        &log,
        &["--ringbuf-kib", "64"],
        &[("TRACER_TEST_READER_DELAY_MS", "3000")],
    );
    lab::ping_df(&lab, &s.a_ns, s.b_ip, 56, 1).expect("ping");
    // 600 bursts of 4: 600 events for a ring of ~176, each carrying 3 folded drops.
    let sent = udp_df_bursts(&lab, &s.a_ns, s.b_ip, &[21, 22], 1472, 600, 4);
    assert!(sent > 2000, "sent only {sent}");
    std::thread::sleep(Duration::from_millis(3500));
    stop_ok(t);
    let events = read_events(&log.0);
    let bursts: Vec<&Value> = of_kind(&events, "drop")
        .into_iter()
        .filter(|e| e["proto"] == 17 && (e["dport"] == 21 || e["dport"] == 22))
        .collect();
    let counted = total(&bursts);
    let lost = lost_total(&events);
    println!(
        "{sent} datagrams: {counted} counted in {} lines, {lost} lost",
        bursts.len()
    );
    assert!(lost > 0, "the ring did not overflow");
    assert!(
        bursts.iter().any(|e| e["count"].as_u64() > Some(1)),
        "nothing was folded"
    );
    assert_eq!(counted + lost, sent, "counted {counted} + lost {lost}");
}

#[test]
fn ring_buffer_overflow_is_counted_not_hidden() {
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let log = TempLog::new("loss");
    // The smallest ring (64 KiB, ~180 events) and a reader held back for 3 s: a flood of
    // 5000 oversized datagrams cannot fit (`--no-fold`: folded, the flood would).
    let t = start(
        &[&s.a_ns, &s.b_ns],
        &log,
        &["--ringbuf-kib", "64", "--no-fold"],
        &[("TRACER_TEST_READER_DELAY_MS", "3000")],
    );
    // Resolve the neighbour first so that every datagram reaches the veth.
    lab::ping_df(&lab, &s.a_ns, s.b_ip, 56, 1).expect("ping");
    let sent = udp_df_burst(&lab, &s.a_ns, s.b_ip, 9, 1472, 5000);
    assert!(sent > 4000, "flood sent only {sent}");
    std::thread::sleep(Duration::from_millis(3500));
    let stderr = stop_ok(t);
    let events = read_events(&log.0);
    let drops = total(
        &of_kind(&events, "drop")
            .into_iter()
            .filter(|e| e["l3_len"] == 1500 && e["proto"] == 17)
            .collect::<Vec<_>>(),
    );
    let lost = lost_total(&events);
    assert!(
        lost > 0,
        "nothing lost with a 64 KiB ring and a stalled reader?"
    );
    assert!(drops > 0 && drops < sent, "drops {drops} of {sent}");
    // Every datagram was dropped exactly once: each is either delivered or counted as lost.
    assert_eq!(
        drops + lost,
        sent,
        "delivered {drops} + lost {lost} != sent {sent}"
    );
    let summary = stderr.iter().find(|l| l.starts_with("summary:")).unwrap();
    assert!(summary.contains(&format!("{lost} lost")), "{summary}");
    assert!(of_kind(&events, "lost")
        .iter()
        .all(|e| e["hook"] == "tp_btf/kfree_skb"));
    // Without NODE_NAME the node is the hostname, on the `lost` records too.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(of_kind(&events, "lost")
        .iter()
        .all(|e| e["node"] == host.trim().to_ascii_lowercase()));
}

#[test]
fn classic_tracepoint_fallback_reads_the_same_drop() {
    // Forces the tracefs-offset path that kernels without tp_btf use.
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let log = TempLog::new("classic");
    let t = start(
        &[&s.a_ns, &s.b_ns],
        &log,
        &[],
        &[("TRACER_DROPS_HOOK", "tracepoint")],
    );
    assert!(
        t.stderr
            .iter()
            .any(|l| l.contains("tracepoint/skb/kfree_skb ✔")),
        "{}",
        t.stderr.join("\n")
    );
    let ping = lab::ping_df(&lab, &s.a_ns, s.b_ip, 1472, 1).expect("ping");
    assert!(!ping.success);
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let drop = find(&events, "drop", "no drop via the classic tracepoint", |e| {
        e["proto"] == 1
    });
    assert_eq!(drop["hook"], "tracepoint/skb/kfree_skb");
    assert_eq!(drop["reason"], "NOT_SPECIFIED");
    assert!(drop["location"]
        .as_str()
        .unwrap()
        .starts_with("__dev_forward_skb"));
    assert_eq!(drop["mtu"], s.b_mtu);
    assert_eq!(drop["l3_len"], 1500);
}

/// Which of the programs `ids` are still loaded, by name, from `bpftool prog show` (ids, not
/// names: other tracers on the machine load programs of the same names).
fn still_loaded(ids: &std::collections::BTreeSet<u32>) -> Vec<String> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(": ")?;
            let id: u32 = id.trim().parse().ok()?;
            let name = rest.split(" name ").nth(1)?.split_whitespace().next()?;
            ids.contains(&id).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn nothing_stays_attached_after_sigterm_or_sigkill() {
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let mut lab = Some(lab);
    let gone_within =
        |ids: &std::collections::BTreeSet<u32>, what: &str, done: &dyn Fn(&[String]) -> bool| {
            // Programs are freed once their last link/fd goes; that is asynchronous (RCU).
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let left = still_loaded(ids);
                if done(&left) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "still loaded 5 s after {what}: {left:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let log = TempLog::new("signal");
        let mut t = start(&[&s.a_ns, &s.b_ns], &log, &[], &[]);
        let (ids, _) = held_bpf_objects(t.pid());
        assert!(
            !still_loaded(&ids).is_empty(),
            "programs should be loaded while tracing"
        );
        // Before TCX (6.6) tc attaches through netlink: filters, not file descriptors.
        let netlink_tc = t.stderr.iter().any(|l| l.contains(" tc/egress "));
        let status = t.signal_and_wait(signal);
        if signal == libc::SIGTERM {
            assert!(status.success(), "SIGTERM is a normal stop: {status:?}");
        }
        if signal == libc::SIGKILL && netlink_tc {
            // Nothing can remove them at SIGKILL (docs/how-it-works.md, "Detaching"): everything else goes,
            // and the filters go with their devices.
            let tc_only = |left: &[String]| {
                left.iter()
                    .all(|n| n.starts_with("tx_tc_") || n.starts_with("rx_tc_"))
            };
            gone_within(&ids, "SIGKILL (all but the tc filters)", &tc_only);
            drop(lab.take());
        }
        gone_within(&ids, &format!("signal {signal}"), &|left| left.is_empty());
        // The log holds only complete lines.
        let _ = read_events(&log.0);
    }
}

/// Send one TCP GSO super-packet (3000 bytes of payload) from `dev` through a packet socket
/// with a virtio-net header, as a VM's virtio NIC would hand it over, cut into `gso_size`
/// segments.
fn send_gso(
    lab: &Lab,
    ns: &str,
    dev: &str,
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    dport: u16,
    gso_size: u16,
) {
    let script = format!(
        "import socket, struct\n\
         def csum(b):\n\
         \x20   s = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n\
         \x20   s = (s >> 16) + (s & 0xffff)\n\
         \x20   s += s >> 16\n\
         \x20   return (~s) & 0xffff\n\
         payload = b'x' * 2960\n\
         tcp = struct.pack('!HHIIBBHHH', 40002, {dport}, 1, 0, 5 << 4, 0x18, 65535, 0, 0)\n\
         ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0,\n\
         \x20   socket.inet_aton('{src}'), socket.inet_aton('{dst}'))\n\
         ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]\n\
         frame = b'\\x02' * 12 + b'\\x08\\x00' + ip + tcp + payload\n\
         vnet = struct.pack('=BBHHHH', 1, 1, 14 + 40, {gso_size}, 14 + 20, 16)  # NEEDS_CSUM, GSO_TCPV4\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR\n\
         s.bind(('{dev}', 0))\n\
         print(s.send(vnet + frame))\n"
    );
    let out = lab
        .exec_ok(ns, &["python3", "-c", &script])
        .expect("GSO send");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3024");
}

#[test]
fn oversize_tx_is_judged_per_gso_segment() {
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let log = TempLog::new("oversize");
    let t = start(&[&s.a_ns, &s.b_ns], &log, &[], &[]);
    // 1460-byte segments make 1500-byte packets: fits, though the super-packet is 3000 bytes.
    send_gso(&lab, &s.a_ns, &s.a_if, s.a_ip, s.b_ip, 7001, 1460);
    // 1480-byte segments make 1520-byte packets: one segment does not fit a 1500 MTU.
    send_gso(&lab, &s.a_ns, &s.a_if, s.a_ip, s.b_ip, 7002, 1480);
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let all = dump(&events);
    let oversize = of_kind(&events, "oversize_tx");
    assert!(
        oversize.iter().all(|e| e["dport"] != 7001),
        "a fitting GSO packet was reported:\n{all}"
    );
    let tx = oversize
        .into_iter()
        .find(|e| e["dport"] == 7002)
        .unwrap_or_else(|| panic!("no oversize_tx:\n{all}"));
    assert_eq!(tx["hook"], "tcx/egress");
    assert_eq!(tx["ifname"], s.a_if.as_str());
    assert_eq!(tx["netns"], netns_inode(&s.a_ns));
    assert_eq!(tx["len"], 3014);
    assert_eq!(tx["gso_size"], 1480);
    assert_eq!(tx["mtu"], s.a_mtu);
    assert_eq!(tx["mtu_source"], "device");
    assert_eq!(tx["proto"], 6);
    assert_eq!(tx["sport"], 40002);
    assert_eq!(tx["src"], s.a_ip.to_string());
    assert_eq!(tx["dst"], s.b_ip.to_string());
}

#[test]
fn a_filtered_icmp_too_big_is_reported_as_a_drop() {
    // The classic PMTU black hole: the router says "fragmentation needed", a firewall on the
    // client eats it. The tracer must show both the message and its death.
    let (lab, s) = lab::routed_mtu_hop(&prefix()).expect("lab");
    lab.nft(
        &s.client_ns,
        "table ip pmtud {\n chain input {\n  type filter hook input priority 0;\n  \
         icmp type destination-unreachable icmp code frag-needed drop\n }\n}\n",
    )
    .expect("nft");
    let log = TempLog::new("icmp-filtered");
    let t = start(&[&s.client_ns, &s.router_ns, &s.server_ns], &log, &[], &[]);
    let ping = lab::ping_df(&lab, &s.client_ns, s.server_ip, 1472, 1).expect("ping");
    assert!(!ping.success);
    settle();
    stop_ok(t);
    let events = read_events(&log.0);
    let eaten = find(&events, "drop", "the filtered ICMP was not reported", |e| {
        matched(e, "icmp_too_big")
    });
    assert_eq!(eaten["reason"], "NETFILTER_DROP");
    assert_eq!(eaten["netns"], netns_inode(&s.client_ns));
    assert_eq!(eaten["icmp"]["mtu"], s.hop_mtu);
    assert_eq!(eaten["icmp"]["to"], s.client_ip.to_string());
    // The flow is the one the message was about.
    assert_eq!(eaten["src"], s.client_ip.to_string());
    assert_eq!(eaten["dst"], s.server_ip.to_string());
}

/// A router's firewall drops an oversized packet before the router's own size check (no DF:
/// `ip_forward` lets it through to the FORWARD hook). The kernel names the cause,
/// NETFILTER_DROP: not a size drop, however large the packet is for the next hop. The drop
/// program decides that on the reason alone; `--all-drops` still reports it, unmatched.
#[test]
fn a_firewall_drop_of_a_large_packet_is_not_a_size_drop() {
    let (lab, s) = lab::routed_mtu_hop(&prefix()).expect("lab");
    lab.nft(
        &s.router_ns,
        "table ip fw {\n chain forward {\n  type filter hook forward priority 0;\n  \
         icmp type echo-request counter drop\n }\n}\n",
    )
    .expect("nft");
    let server = s.server_ip.to_string();
    // Last: the default mode again with the kernel programs' log at trace, which says each
    // decision on stderr; off (the default) it says nothing.
    for (all_drops, kernel_log) in [(false, false), (true, false), (false, true)] {
        let log = TempLog::new("policy-drop");
        let extra: &[&str] = match (all_drops, kernel_log) {
            (true, _) => &["--all-drops"],
            (false, true) => &["--kernel-log", "trace"],
            (false, false) => &[],
        };
        let t = start(&[&s.router_ns], &log, extra, &[]);
        // 1500 bytes without DF toward a 1450 hop, three times.
        let out = lab
            .exec(
                &s.client_ns,
                &[
                    "ping", "-n", "-M", "dont", "-s", "1472", "-c", "3", "-i", "0.2", "-W", "1",
                    &server,
                ],
            )
            .expect("ping");
        assert!(!out.status.success(), "the firewall let the echo through");
        settle();
        let stderr = stop_ok(t).join("\n");
        let said = stderr.contains("names another cause");
        assert_eq!(
            said, kernel_log,
            "--kernel-log trace: {kernel_log}\n{stderr}"
        );
        let events = read_events(&log.0);
        let all = dump(&events);
        let policy: Vec<&Value> = of_kind(&events, "drop")
            .into_iter()
            .filter(|e| e["reason"] == "NETFILTER_DROP" && e["proto"] == 1)
            .collect();
        if all_drops {
            assert_eq!(
                policy.len(),
                3,
                "every policy drop with --all-drops:\n{all}"
            );
            for e in &policy {
                assert_eq!(e["l3_len"], 1500, "{e}");
                assert_eq!(e["out_mtu"], s.hop_mtu, "{e}");
                assert_eq!(e["matched"], Value::Array(vec![]), "{e}");
            }
        } else {
            assert!(
                policy.is_empty(),
                "a policy drop reported as a size drop:\n{all}"
            );
        }
    }
}

/// The kernel can run kprobes: then the path-MTU hook must attach (fentry or kprobe); without
/// them (this machine's 6.18) fentry is refused too and the tracer must say it is blind.
fn kernel_has_kprobes() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
}

/// The client pings 1500 B with DF through the 1450 hop: the router's frag-needed reaches the
/// client's stack, which records path MTU 1450 toward the server (`__ip_rt_update_pmtu`).
/// Where the kernel allows it, the event must say so, from fentry and from the kprobe fallback;
/// elsewhere, the start-up report must refuse both with the kernel's reason and print the blind
/// spot, and no such event may appear.
#[test]
fn path_mtu_learning_is_reported_or_declared_blind() {
    let modes: &[Option<&str>] = if kernel_has_kprobes() {
        &[None, Some("kprobe")]
    } else {
        &[None]
    };
    for &forced in modes {
        // A fresh lab per mode: the client's learned route exception would stop the next ping
        // at the client (EMSGSIZE) before any ICMP.
        let (lab, s) = lab::routed_mtu_hop(&prefix()).expect("lab");
        let log = TempLog::new("pmtu");
        let env: Vec<(&str, &str)> = forced
            .map(|m| ("TRACER_PMTU_HOOK", m))
            .into_iter()
            .collect();
        let mut args = ns_args(&[&s.client_ns, &s.router_ns, &s.server_ns]);
        args.extend(["--log".to_string(), log.0.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // 6.1's verifier needs about a minute under TCG (the VM matrix) for the drop program.
        let t = Tracer::start_within(&args, &env, Duration::from_secs(180));
        let ping = lab::ping_df(&lab, &s.client_ns, s.server_ip, 1472, 1).expect("ping");
        assert!(
            !ping.success,
            "a 1500-byte DF ping must not pass a 1450 hop"
        );
        settle();
        let stderr = stop_ok(t);
        let events = read_events(&log.0);
        let all = dump(&events);
        let learned = of_kind(&events, "pmtu_update");
        let Some(expected_hook) = learning_hook_report(
            &stderr,
            "pmtu-learned",
            "__ip_rt_update_pmtu",
            forced,
            "blind: path-MTU learning",
        ) else {
            assert!(learned.is_empty(), "{all}");
            continue;
        };
        let client = netns_inode(&s.client_ns);
        let ev = learned
            .iter()
            .find(|e| e["netns"] == client)
            .unwrap_or_else(|| panic!("no pmtu_update in the client's namespace:\n{all}"));
        assert_eq!(ev["hook"], expected_hook);
        assert_eq!(ev["mtu"], s.hop_mtu);
        assert_eq!(ev["mtu_source"], "pmtu");
        assert_eq!(ev["src"], s.client_ip.to_string());
        assert_eq!(ev["dst"], s.server_ip.to_string());
        assert_eq!(ev["proto"], 1);
        assert_eq!(ev["out_ifname"], s.client_if.as_str());
        assert_eq!(ev["out_mtu"], s.client_mtu);
        drop(lab);
    }
}

/// The hook report's lines for a path-MTU learning hook (`concern`, on kernel `function`): on a
/// kernel without kprobes both methods refused, with the reason, and the `blind` line printed
/// (None); elsewhere fentry attached, or the kprobe when `forced` (the method, which the events
/// must name).
fn learning_hook_report(
    stderr: &[String],
    concern: &str,
    function: &str,
    forced: Option<&str>,
    blind: &str,
) -> Option<String> {
    let report = stderr.join("\n");
    let line = |method: &str| {
        stderr
            .iter()
            .find(|l| l.contains(concern) && l.contains(method))
            .unwrap_or_else(|| panic!("no {method} line in the hook report:\n{report}"))
            .clone()
    };
    let fentry = line(&format!("fentry/{function}"));
    let kprobe = line(&format!("kprobe/{function}"));
    let blind_printed = stderr.iter().any(|l| l.starts_with(blind));
    if !kernel_has_kprobes() {
        assert!(fentry.contains('✘'), "{report}");
        assert!(
            kprobe.contains("✘ kernel without kprobes"),
            "the kprobe refusal must say why:\n{report}"
        );
        assert!(blind_printed, "no blind-spot line:\n{report}");
        return None;
    }
    assert!(!blind_printed, "{report}");
    Some(match forced {
        Some(_) => {
            assert!(fentry.contains("✘ skipped: TRACER_PMTU_HOOK"), "{report}");
            assert!(kprobe.contains('✔'), "{report}");
            format!("kprobe/{function}")
        }
        None => {
            assert!(fentry.contains('✔'), "fentry should load here:\n{report}");
            assert!(kprobe.contains("– fentry attached"), "{report}");
            format!("fentry/{function}")
        }
    })
}

/// Client —1500— router —1500— server over IPv6 (`xtask::routed`), the router's route onward
/// limited to `onward_mtu`: a 1500-byte ping draws its packet too big, and the client's stack
/// records it (`__ip6_rt_update_pmtu` from `icmpv6_err`).
fn ipv6_routed_hop(prefix: &str, onward_mtu: u32) -> RoutedPath {
    let path = RoutedPath::up(prefix, Family::V6).expect("lab");
    path.limit_onward(onward_mtu).expect("onward route");
    path
}

/// The IPv6 twin of `path_mtu_learning_is_reported_or_declared_blind`: where fentry or a kprobe
/// attaches to `__ip6_rt_update_pmtu`, the client's stack is seen recording the router's 1400;
/// where neither does, the start says so (its own `blind:` line, `pmtu_hook` false).
#[test]
fn ipv6_path_mtu_learning_is_reported_or_declared_blind() {
    let modes: &[Option<&str>] = if kernel_has_kprobes() {
        &[None, Some("kprobe")]
    } else {
        &[None]
    };
    for &forced in modes {
        // A fresh lab per mode: the client's learned exception would stop the next ping at the
        // client itself, before any packet too big.
        let path = ipv6_routed_hop(&prefix(), 1400);
        let (lab, cli, rtr, srv) = (&path.lab, &path.client_ns, &path.router_ns, &path.server_ns);
        let server = path.server_ip.to_string();
        let log = TempLog::new("pmtu6");
        let env: Vec<(&str, &str)> = forced
            .map(|m| ("TRACER_PMTU_HOOK", m))
            .into_iter()
            .collect();
        let mut args = ns_args(&[cli, rtr, srv]);
        args.extend(["--log".to_string(), log.0.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Tracer::start_within(&args, &env, Duration::from_secs(180));
        // 1452 + 8 + 40 = 1500 bytes: too big for the 1400 hop.
        let ping = lab
            .exec(
                cli,
                &[
                    "ping", "-6", "-n", "-M", "do", "-s", "1452", "-c", "1", "-W", "1", &server,
                ],
            )
            .unwrap();
        assert!(
            !ping.status.success(),
            "a 1500-byte ping must not pass a 1400 hop"
        );
        settle();
        let stderr = stop_ok(t);
        let events = read_events(&log.0);
        let all = dump(&events);
        let start = events
            .iter()
            .find(|e| e["kind"] == "start")
            .unwrap_or_else(|| panic!("no start line:\n{all}"));
        let learned: Vec<&Value> = of_kind(&events, "pmtu_update")
            .into_iter()
            .filter(|e| e["hook"].as_str().is_some_and(|h| h.contains("ip6")))
            .collect();
        let Some(expected_hook) = learning_hook_report(
            &stderr,
            "pmtu6-learned",
            "__ip6_rt_update_pmtu",
            forced,
            "blind: IPv6 path-MTU learning",
        ) else {
            let blind = start["blind_spots"].as_array().expect("blind_spots");
            assert!(
                blind
                    .iter()
                    .any(|b| b.as_str().is_some_and(|b| b.starts_with("IPv6 path-MTU"))),
                "{start}"
            );
            assert_eq!(start["pmtu_hook"], false, "{start}");
            assert!(learned.is_empty(), "{all}");
            continue;
        };
        let client = netns_inode(cli);
        let ev = learned
            .iter()
            .find(|e| e["netns"] == client)
            .unwrap_or_else(|| panic!("no IPv6 pmtu_update in the client's namespace:\n{all}"));
        assert_eq!(ev["hook"], expected_hook);
        assert_eq!(ev["mtu"], 1400);
        assert_eq!(ev["mtu_source"], "pmtu");
        assert_eq!(ev["src"], path.client_ip.to_string());
        assert_eq!(ev["dst"], server);
        assert_eq!(ev["proto"], 58, "the quoted ICMPv6 echo");
        assert_eq!(ev["out_ifname"], "eth0");
        assert_eq!(ev["out_mtu"], 1500);
        drop(path);
    }
}

/// A TCP sender's stack records the path MTU from its socket (`tcp_v{4,6}_mtu_reduced` updates
/// the route with no packet: `__ip{,6}_rt_update_pmtu` gets the socket and a null skb), the way
/// the incident's Redis and HTTP clients learn. Where the family's hook attaches, the update is
/// seen in the client's namespace with the connection's addresses and protocol (read from the
/// socket); where it does not, nothing is reported and the start line says so.
#[test]
fn a_tcp_senders_learning_is_read_from_its_socket_in_both_families() {
    for family in [Family::V4, Family::V6] {
        let path = RoutedPath::up(&prefix(), family).expect("lab");
        path.limit_onward(1400).expect("onward route");
        path.start_redis().expect("redis-server");
        let log = TempLog::new("pmtu-tcp");
        let t = start(&[&path.client_ns], &log, &[], &[]);
        let set = path
            .redis_set(100_000, support::slow(Duration::from_secs(6)))
            .expect("redis-cli");
        assert!(
            set.ok,
            "{family:?}: told by the router, the SET passes: {set}"
        );
        settle();
        stop_ok(t);
        let events = read_events(&log.0);
        let all = dump(&events);
        let start = events
            .iter()
            .find(|e| e["kind"] == "start")
            .unwrap_or_else(|| panic!("no start line:\n{all}"));
        let concern = match family {
            Family::V4 => "pmtu-learned",
            Family::V6 => "pmtu6-learned",
        };
        let hooked = start["hooks"]
            .as_array()
            .expect("hooks")
            .iter()
            .any(|h| h["concern"] == concern && h["outcome"] == "attached");
        let client = netns_inode(&path.client_ns);
        let learned: Vec<&Value> = of_kind(&events, "pmtu_update")
            .into_iter()
            .filter(|e| e["netns"] == client && e["dst"] == path.server_ip.to_string())
            .collect();
        if !hooked {
            assert!(learned.is_empty(), "{family:?}: {all}");
            assert!(
                start["blind_spots"].as_array().is_some_and(|b| b
                    .iter()
                    .any(|b| b.as_str().is_some_and(|b| b.contains("path-MTU learning")))),
                "{family:?}: {start}"
            );
            continue;
        }
        let ev = learned.first().unwrap_or_else(|| {
            panic!("{family:?}: no pmtu_update for the TCP sender in its namespace:\n{all}")
        });
        assert_eq!(ev["mtu"], 1400, "{all}");
        assert_eq!(ev["src"], path.client_ip.to_string(), "{all}");
        assert_eq!(ev["proto"], 6, "the socket's protocol: {all}");
        drop(path);
    }
}

/// Frames written onto `a`'s device by a packet socket: ICMP too-big messages plain and inside
/// one tunnel layer, each advertising its own MTU, and look-alikes that are not one (or are
/// nested deeper than the hooks look). Prints the MTUs of the frames that are too-big messages
/// the tc hooks must find, then of those they must not.
const TOO_BIG_FRAMES: &str = r#"
import socket, struct, sys
dev, dst_mac = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
src_mac = s.getsockname()[4]
dmac = bytes.fromhex(dst_mac.replace(':', ''))
A, B = socket.inet_aton('192.0.2.1'), socket.inet_aton('192.0.2.2')
A6, B6 = socket.inet_pton(socket.AF_INET6, 'fd00::1'), socket.inet_pton(socket.AF_INET6, 'fd00::2')
def eth(et, p): return dmac + src_mac + struct.pack('!H', et) + p
def ip4(proto, p, opts=b''):
    return struct.pack('!BBHHHBBH4s4s', 0x40 | (5 + len(opts) // 4), 0, 20 + len(opts) + len(p), 1, 0x4000, 64, proto, 0, A, B) + opts + p
def ip6(nxt, p): return struct.pack('!IHBB16s16s', 0x60000000, len(p), nxt, 64, A6, B6) + p
def udp(dport, p): return struct.pack('!HHHH', 50000, dport, 8 + len(p), 0) + p
def vxlan(inner_et, p, dport=4789):
    return udp(dport, struct.pack('!II', 0x08000000, 42 << 8) + dmac + src_mac + struct.pack('!H', inner_et) + p)
tcp = struct.pack('!HHIIBBHHH', 40000, 80, 1, 0, 0x50, 0x18, 65535, 0, 0)
quote4 = ip4(6, tcp)[:28]
quote6 = ip6(6, tcp)[:48]
def too_big4(mtu, code=4): return ip4(1, struct.pack('!BBHHH', 3, code, 0, 0, mtu) + quote4)
def too_big4_opts(mtu): return ip4(1, struct.pack('!BBHHH', 3, 4, 0, 0, mtu) + quote4, opts=b'\x01' * 4)
def too_big6(mtu): return ip6(58, struct.pack('!BBHI', 2, 0, 0, mtu) + quote6)
found = [
    (1401, eth(0x0800, too_big4(1401))),
    (1402, eth(0x0800, too_big4_opts(1402))),
    (1403, eth(0x0800, ip4(4, too_big4(1403)))),
    (1404, eth(0x0800, ip4(17, vxlan(0x0800, too_big4(1404))))),
    (1405, eth(0x0800, ip4(17, vxlan(0x0800, too_big4_opts(1405)), opts=b'\x01' * 8))),
    (1406, eth(0x86dd, too_big6(1406))),
    (1407, eth(0x0800, ip4(17, vxlan(0x86dd, too_big6(1407))))),
    (1408, eth(0x0800, ip4(41, too_big6(1408)))),
    (1409, eth(0x86dd, ip6(17, vxlan(0x0800, too_big4(1409), dport=8472)))),
]
missed = [
    (1410, eth(0x0800, ip4(17, vxlan(0x0800, too_big4(1410), dport=5000)))),
    (1411, eth(0x0800, too_big4(1411, code=1))),
    (1412, eth(0x0800, ip4(4, ip4(4, too_big4(1412))))),
]
for _ in range(3):
    for _, f in found + missed:
        s.send(f)
print(' '.join(str(m) for m, _ in found))
print(' '.join(str(m) for m, _ in missed))
"#;

#[test]
fn icmp_too_big_is_found_plain_and_inside_one_tunnel_layer() {
    let (lab, s) = lab::veth_mismatch(&prefix()).expect("lab");
    let mac = lab
        .exec_ok(
            &s.b_ns,
            &["cat", &format!("/sys/class/net/{}/address", s.b_if)],
        )
        .expect("b's address");
    let mac = String::from_utf8_lossy(&mac.stdout).trim().to_string();
    let log = TempLog::new("too-big-frames");
    let t = start(&[&s.a_ns, &s.b_ns], &log, &[], &[]);
    let out = lab
        .exec_ok(&s.a_ns, &["python3", "-c", TOO_BIG_FRAMES, &s.a_if, &mac])
        .expect("frames");
    settle();
    stop_ok(t);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = printed.lines().map(|l| {
        l.split_whitespace()
            .map(|m| m.parse::<u64>().unwrap())
            .collect::<std::collections::BTreeSet<u64>>()
    });
    let (expected, not_expected) = (lines.next().unwrap(), lines.next().unwrap());
    let events = read_events(&log.0);
    let mtus = |kind: &str, ns: &str| {
        let netns = netns_inode(ns);
        of_kind(&events, kind)
            .iter()
            .filter(|e| e["hook"].as_str().is_some_and(|h| h.starts_with("tc")))
            .filter(|e| e["netns"] == netns)
            .filter_map(|e| e["icmp"]["mtu"].as_u64())
            .collect::<std::collections::BTreeSet<u64>>()
    };
    // Leaving `a` (egress hook) and arriving at `b` (ingress hook): the same frames.
    for (kind, ns) in [
        ("icmp_too_big_sent", &s.a_ns),
        ("icmp_too_big_received", &s.b_ns),
    ] {
        let seen = mtus(kind, ns);
        assert_eq!(
            seen,
            expected,
            "{kind} in {ns}: found {seen:?}, expected {expected:?} and none of \
             {not_expected:?}:\n{}",
            dump(&events)
        );
    }
}
