//! The analysis on event streams recorded in the incident lab (testdata/*.jsonl, written by
//! `tracer run --log` while the lab's clients ran) and on synthetic streams for MTUs the lab
//! does not have.
use std::net::IpAddr;

use super::*;
use crate::event::{IcmpTooBig, Kind, Matched, MtuSource, Outer, Record};

fn recorded(name: &str) -> Vec<Verdict> {
    let path = format!(
        "{}/src/verdict/testdata/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let (stats, verdicts) = crate::report::report(std::path::Path::new(&path)).unwrap();
    assert_eq!(stats.bad_count, 0, "{name}: {:?}", stats.bad);
    assert!(stats.events > 0);
    verdicts
}

/// The verdict of `problem`, or a panic that shows them all.
fn the_one(verdicts: &[Verdict], problem: Problem) -> &Verdict {
    verdicts
        .iter()
        .find(|v| v.problem == problem)
        .unwrap_or_else(|| panic!("no {problem:?}: {verdicts:#?}"))
}

/// The one verdict of severity problem (the join's tests use it too).
pub(super) fn only_problem(verdicts: &[Verdict]) -> &Verdict {
    let problems: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.severity == Severity::Problem)
        .collect();
    assert_eq!(problems.len(), 1, "{verdicts:#?}");
    problems[0]
}

#[test]
fn l2_vxlan_mismatch_black_hole_at_the_new_nodes_link() {
    let v = recorded("l2vxlan");
    let p = only_problem(&v);
    assert_eq!(p.problem, Problem::MtuBlackHole);
    assert_eq!(p.path.src_node.as_deref(), Some("worker-116"));
    assert_eq!(p.path.dst_node.as_deref(), Some("worker-208"));
    assert_eq!(p.path.overlay, Some(crate::event::Encap::Vxlan));
    assert_eq!(p.path_mtu, Some(1450));
    assert_eq!(p.largest_passing, Some(1400));
    assert_eq!(p.recommended_mtu, Some(1400));
    let site = &p.sites[0];
    assert_eq!(site.location.as_deref(), Some("__dev_forward_skb2"));
    assert_eq!(site.limit_mtu, Some(1450));
    // The 1550-byte original, not only its 1500-byte first fragment.
    assert_eq!(site.packet_len, 1550);
    assert!(site
        .limit_source
        .as_deref()
        .unwrap()
        .contains("receiving end eth0"));
    // A fragment and its original are one packet: the ip_do_fragment drops are not a site.
    assert!(
        p.sites
            .iter()
            .all(|s| s.location.as_deref() != Some("ip_do_fragment")),
        "{:#?}",
        p.sites
    );
    // Every packet died twice in the log (first fragment, then the original): counted once.
    let log = std::fs::read_to_string(format!(
        "{}/src/verdict/testdata/l2vxlan.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let count = |kind: &str| log.lines().filter(|l| l.contains(kind)).count() as u64;
    assert_eq!(p.evidence.retransmits, count(r#""kind":"tcp_retransmit""#));
    assert_eq!(p.evidence.dropped_packets * 2, count(r#""kind":"drop""#));
    // Both the POST and the Redis SET, named, stuck.
    assert_eq!(p.flows.len(), 2);
    for f in &p.flows {
        assert!(f.stuck, "{f:?}");
        assert_eq!(&*f.src_pod.as_ref().unwrap().name, "order-api-7d9f8");
        assert_eq!(&*f.service.as_ref().unwrap().name, "storage");
        assert_eq!(f.largest_failed, Some(1500));
        // Full-size packets only: the 1500-byte first fragment (1450 inside) is not a packet
        // the pod sent.
        assert_eq!(f.smallest_failed, Some(1500));
        assert!(f.first_ts.as_deref() < f.last_ts.as_deref(), "{f:?}");
        assert!(f.timeout_retransmits >= 2, "{f:?}");
    }
    let fix = p.fix.as_deref().unwrap();
    assert!(fix.contains("1400") && fix.contains("vxlanMTU"), "{fix}");
    assert!(p.stopgap.as_deref().unwrap().contains("tcp_mtu_probing"));
}

#[test]
fn router_with_outer_df_the_binding_limit_is_the_routers_link() {
    let v = recorded("router_df");
    let p = only_problem(&v);
    assert_eq!(p.largest_passing, Some(1400), "{:#?}", p.sites);
    assert_eq!(p.path_mtu, Some(1450));
    // Three places refuse packets: the router (1500-byte VXLAN > 1450), the old node's overlay
    // (1500-byte pod packets > its 1450 tunnel: the pod is told and shrinks to 1450), and the
    // old node's uplink once it learned the router's 1450 (same 1500-byte VXLAN packets).
    let locations: Vec<&str> = p
        .sites
        .iter()
        .filter_map(|s| s.location.as_deref())
        .collect();
    assert!(locations.contains(&"ip_forward"), "{locations:?}");
    assert!(
        locations.iter().any(|l| l.starts_with("ip_fragment")),
        "{locations:?}"
    );
    let learned = p
        .sites
        .iter()
        .find(|s| {
            s.location
                .as_deref()
                .is_some_and(|l| l.starts_with("ip_fragment"))
        })
        .unwrap();
    assert_eq!(learned.limit_mtu, Some(1450));
    assert!(
        learned
            .limit_source
            .as_deref()
            .unwrap()
            .contains("10.211.1.1"),
        "{learned:?}"
    );
    let overlay_site = p
        .sites
        .iter()
        .find(|s| s.overlay.is_none())
        .expect("the old node's own refusal of the pod's 1500-byte packets");
    assert_eq!(overlay_site.largest_passing, Some(1450));
    assert!(overlay_site.icmp_sent > 0);
    assert!(p.evidence.icmp_received > 0);
    assert!(
        p.evidence.size_reductions > 0,
        "the pod shrank to 1450: {:?}",
        p.evidence
    );
    assert!(p.flows.iter().all(|f| f.stuck));
}

#[test]
fn filtered_icmp_is_named_as_the_reason_pmtud_fails() {
    let v = recorded("router_filtered");
    let p = only_problem(&v);
    assert_eq!(p.largest_passing, Some(1400));
    assert!(p.evidence.icmp_dropped > 0, "{:?}", p.evidence);
    assert!(
        p.summary.contains("NETFILTER_DROP") && p.summary.contains("nft_do_chain"),
        "{}",
        p.summary
    );
}

#[test]
fn fragmenting_router_recovers_no_mtu_problem() {
    let v = recorded("router_frag");
    assert!(v.iter().all(|v| v.severity < Severity::Suspected), "{v:#?}");
    // This log predates the run's verdict lines: it does not say how long the run watched
    // after the senders shrank, so "works" is not said, only that it is not known yet.
    let note = the_one(&v, Problem::Unconfirmed);
    assert!(note.summary.contains("not known yet"), "{}", note.summary);
    assert!(note.sites.iter().all(|s| s.recovered));
    assert!(note.flows.iter().all(|f| !f.stuck));
}

#[test]
fn fixed_lab_with_fast_retransmits_is_healthy() {
    let v = recorded("fixed_retransmits");
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].problem, Problem::None);
    assert_eq!(v[0].severity, Severity::Ok);
    assert!(v[0].summary.contains("not an MTU problem"));
}

#[test]
fn an_empty_run_is_healthy() {
    let a = Analyzer::new();
    let v = a.verdicts(0, Some(12.0));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].problem, Problem::None);
    assert!(v[0].summary.contains("12.0 s"), "{}", v[0].summary);
}

// Synthetic streams: the arithmetic for MTUs other than the lab's.

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A record about the test flow, 10.0.1.2:40000 → 10.0.2.2:443 over TCP.
fn flow_record(kind: Kind, hook: &'static str, ts: i128) -> Record {
    let mut r = Record::new(kind, hook, ts);
    r.flow.proto = Some(6);
    r.flow.src = Some(ip("10.0.1.2"));
    r.flow.sport = Some(40000);
    r.flow.dst = Some(ip("10.0.2.2"));
    r.flow.dport = Some(443);
    r
}

/// The router (namespace 1) telling the test flow's sender, with an ICMP too-big about packet
/// `skb`, that the next hop takes `mtu`.
fn icmp_told(hook: &'static str, ts: i128, skb: u64, mtu: u32) -> Record {
    let mut icmp = flow_record(Kind::IcmpTooBigSent, hook, ts);
    icmp.device.netns = Some(1);
    icmp.skb = Some(skb);
    icmp.icmp = Some(IcmpTooBig {
        from: None,
        to: ip("10.0.1.2"),
        icmp_type: 3,
        code: 4,
        mtu: Some(mtu),
    });
    icmp
}

/// The router's ICMP about packet `0xffff1` of the test flow (`hook` says how it was seen),
/// then its forwarding drop of that 1500-byte packet for a 1460-byte route.
fn told_and_dropped(icmp_hook: &'static str) -> (Record, Record) {
    let icmp = icmp_told(icmp_hook, 1_000, 0xffff1, 1460);
    let mut drop = flow_record(Kind::Drop, "tp_btf/kfree_skb", 2_000);
    drop.device.netns = Some(1);
    drop.device.ifname = Some("eth0".into());
    drop.size.l3_len = Some(1500);
    drop.route.out_ifname = Some("eth1".into());
    drop.route.out_mtu = Some(1460);
    drop.drop.location = Some("ip_forward+0x1".into());
    drop.drop.matched = [Matched::Oversize].into();
    drop.skb = Some(0xffff1);
    (icmp, drop)
}

/// A packet of `len` bytes dropped at `location` because `out_mtu` is smaller, `n` times at
/// timeout intervals (a stuck sender).
fn stuck_drops(
    a: &mut Analyzer,
    src: &str,
    dst: &str,
    len: u32,
    out_mtu: u32,
    outer: Option<Outer>,
) {
    for r in stuck_drop_records(src, dst, len, out_mtu, outer) {
        a.observe_record(&r);
    }
}

fn stuck_drop_records(
    src: &str,
    dst: &str,
    len: u32,
    out_mtu: u32,
    outer: Option<Outer>,
) -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..4i128 {
        let mut r = flow_record(
            Kind::Drop,
            "tp_btf/kfree_skb",
            1_000_000_000 + i * 400_000_000,
        );
        r.device.netns = Some(1);
        r.device.ifname = Some("eth0".into());
        r.size.l3_len = Some(len);
        r.size.mtu = Some(9001);
        r.route.out_ifname = Some("eth1".into());
        r.route.out_mtu = Some(out_mtu);
        r.drop.reason = Some("PKT_TOO_BIG".into());
        r.drop.location = Some("ip_forward+0x2c0".into());
        r.drop.matched = [Matched::Reason, Matched::Oversize].into();
        r.flow.src = Some(ip(src));
        r.flow.dst = Some(ip(dst));
        r.flow.outer = outer.clone();
        out.push(r);
    }
    out
}

#[test]
fn jumbo_9001_toward_1500_over_ipip() {
    let mut a = Analyzer::new();
    let outer = Outer {
        src: ip("172.31.0.1"),
        dst: ip("192.168.0.2"),
        encap: crate::event::Encap::Ipip,
        vni: None,
    };
    stuck_drops(&mut a, "10.0.1.2", "10.0.2.2", 9001, 1500, Some(outer));
    let v = a.verdicts(0, None);
    let p = only_problem(&v);
    assert_eq!(p.path_mtu, Some(1500));
    assert_eq!(p.largest_passing, Some(1480));
    assert_eq!(p.recommended_mtu, Some(1480));
    let fix = p.fix.as_deref().unwrap();
    assert!(
        fix.contains("1480") && fix.contains("1450 if VXLAN"),
        "{fix}"
    );
}

#[test]
fn cloud_1460_without_overlay() {
    let mut a = Analyzer::new();
    stuck_drops(&mut a, "10.0.1.2", "10.0.2.2", 1500, 1460, None);
    let v = a.verdicts(0, None);
    let p = only_problem(&v);
    assert_eq!(p.largest_passing, Some(1460));
    assert_eq!(p.recommended_mtu, Some(1460));
    assert!(p.fix.as_deref().unwrap().contains("1460"));
}

#[test]
fn ipv6_below_1280_inside_the_overlay_asks_for_a_bigger_underlay() {
    let mut a = Analyzer::new();
    let outer = Outer {
        src: ip("fd00::1"),
        dst: ip("fd00::2"),
        encap: crate::event::Encap::Vxlan,
        vni: Some(1),
    };
    // 1280 + 70 (VXLAN over IPv6) does not fit 1300: nothing below 1280 is allowed for IPv6.
    stuck_drops(&mut a, "fd10::2", "fd20::2", 1350, 1300, Some(outer));
    let v = a.verdicts(0, None);
    let p = only_problem(&v);
    assert_eq!(p.path.overhead, 70);
    assert_eq!(p.largest_passing, Some(1230));
    assert_eq!(p.recommended_mtu, None);
    let fix = p.fix.as_deref().unwrap();
    assert!(fix.contains("1350") && fix.contains("underlay"), "{fix}");
}

#[test]
fn icmp_told_and_obeyed_is_recovery_not_a_problem() {
    let mut a = Analyzer::new();
    let (icmp, mut drop) = told_and_dropped("tracepoint/icmp/icmp_send");
    a.observe_record(&icmp);
    a.observe_record(&drop);
    let v = a.verdicts(0, None);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].problem, Problem::PmtudRecovered);
    assert_eq!(v[0].sites[0].icmp_sent, 1);
    assert_eq!(v[0].sites[0].icmp_mtu, Some(1460));
    // A second drop of the same size well after the ICMP: the sender did not shrink.
    drop.ts_unix_ns = 2_000 + 300_000_000;
    drop.skb = Some(0xffff2);
    a.observe_record(&drop);
    let v = a.verdicts(0, None);
    assert_eq!(v[0].problem, Problem::MtuBlackHole);
}

#[test]
fn retransmissions_with_backoff_and_no_size_event_are_suspected() {
    let timing_out = || {
        let mut a = Analyzer::new();
        // RTO backoff: 0.2, 0.4, 0.8, 1.6 s; full-size segments.
        let mut t = 0i128;
        for gap in [0i128, 200, 400, 800, 1600] {
            t += gap * 1_000_000;
            let mut r = Record::new(Kind::TcpRetransmit, "tracepoint/tcp/tcp_retransmit_skb", t);
            r.flow.proto = Some(6);
            r.flow.src = Some(ip("10.0.1.2"));
            r.flow.sport = Some(40001);
            r.flow.dst = Some(ip("10.96.0.10"));
            r.flow.dport = Some(6379);
            r.size.len = Some(1448);
            r.device.netns = Some(4026532001);
            a.observe_record(&r);
        }
        a
    };
    let t_end = || 3_000 * 1_000_000i128;
    let mut a = timing_out();
    let v = a.verdicts(0, None);
    assert_eq!(v[0].problem, Problem::SuspectedBlackHole, "{v:#?}");
    assert_eq!(v[0].severity, Severity::Suspected);
    assert_eq!(v[0].recommended_mtu, None);
    // It says what it lacks: a size.
    assert!(
        v[0].summary.contains("No size is known"),
        "{}",
        v[0].summary
    );
    // It asks for a probe, from the sender's namespace toward the address the segments time
    // out to (the live verdicts of a tick say what to probe).
    a.live(t_end());
    let wants = a.probes_wanted();
    assert!(wants.iter().any(|w| w.to == ip("10.96.0.10")), "{wants:?}");
    let probe = |path_mtu: u32| crate::event::probe::Probe {
        kind: crate::event::probe::KIND.into(),
        to: Some(ip("10.96.0.10")),
        status: "ok".into(),
        largest_ok: Some(path_mtu),
        smallest_lost: Some(path_mtu + 1),
        path_mtu: Some(path_mtu),
        exact: true,
        ..Default::default()
    };
    // Measured: 1500 B pass, so the 1448-byte segments fit — still only a suspicion, which now
    // says the size may not be the cause.
    let mut fits = timing_out();
    fits.apply_probe(&probe(1500));
    let v = fits.verdicts(0, None);
    assert_eq!(v[0].problem, Problem::SuspectedBlackHole, "{v:#?}");
    assert!(v[0].summary.contains("another cause"), "{}", v[0].summary);
    // Measured: only 1400 B pass: the timing-out segments cannot — a problem, with that number.
    a.apply_probe(&probe(1400));
    let v = a.verdicts(0, None);
    assert_eq!(v[0].problem, Problem::MtuBlackHole, "{v:#?}");
    assert_eq!(v[0].severity, Severity::Problem);
    assert_eq!(v[0].confidence, Confidence::Measured);
    assert_eq!(v[0].recommended_mtu, Some(1400));
    assert!(v[0].flows.iter().all(|f| f.stuck), "{v:#?}");
}

#[test]
fn live_announces_a_problem_once() {
    let mut a = Analyzer::new();
    stuck_drops(&mut a, "10.0.1.2", "10.0.2.2", 1500, 1460, None);
    let first = a.live(0);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].stage, "live");
    assert!(a.live(0).is_empty());
}

#[test]
fn rendering_names_numbers_and_fix() {
    let v = recorded("l2vxlan");
    let p = only_problem(&v);
    let text = render(p).join("\n");
    for needle in [
        "MTU PROBLEM",
        "worker-116",
        "1550-byte VXLAN packets (1500 + 50 B VXLAN)",
        "largest size that passes end to end: 1400 B (path MTU 1450 − 50 B overlay)",
        "order-api-7d9f8",
        "fix         set the pod MTU to 1400",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn a_flood_of_distinct_connections_is_bounded_and_counted() {
    let mut a = Analyzer::new();
    let n = super::analyze::MAX_CONNS_FOR_TESTS as u32 + 10;
    for i in 0..n {
        let mut r = Record::new(Kind::Drop, "tp_btf/kfree_skb", i as i128);
        r.size.l3_len = Some(1500);
        r.route.out_mtu = Some(1450);
        r.drop.matched = [Matched::Oversize].into();
        r.flow.proto = Some(17);
        r.flow.src = Some(ip("10.0.0.1"));
        r.flow.sport = Some((i % 65_000) as u16);
        r.flow.dst = Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i)));
        r.flow.dport = Some(53);
        a.observe_record(&r);
    }
    let v = a.verdicts(0, None);
    assert_eq!(v[0].evidence.untracked_events, 10);
    assert_eq!(
        v[0].evidence.connections,
        super::analyze::MAX_CONNS_FOR_TESTS as u64
    );
}

#[test]
fn other_drops_of_all_drops_are_no_mtu_evidence() {
    // `--all-drops` logs every drop; a firewall dropping a flow over and over is not an MTU
    // black hole.
    let mut a = Analyzer::new();
    for i in 0..5i128 {
        let mut r = flow_record(Kind::Drop, "tp_btf/kfree_skb", i * 500_000_000);
        r.size.l3_len = Some(60);
        r.drop.reason = Some("NETFILTER_DROP".into());
        r.drop.location = Some("nft_do_chain+0x3e8".into());
        a.observe_record(&r);
    }
    let v = a.verdicts(0, None);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].problem, Problem::None, "{v:#?}");
}

#[test]
fn path_mtu_discovery_in_steps_is_recovery_not_a_black_hole() {
    // Three hops with smaller and smaller MTUs (as the 6.1 VM's IPIP lab shows): each attempt
    // is refused a little further on, the sender is told and sends smaller packets each time.
    let mut a = Analyzer::new();
    let mut t = 0i128;
    for (i, (len, mtu)) in [(1500u32, 1480u32), (1480, 1450), (1450, 1430)]
        .into_iter()
        .enumerate()
    {
        let skb = 0xffff0 + i as u64;
        a.observe_record(&icmp_told("kprobe/__icmp_send", t, skb, mtu));
        let mut drop = flow_record(Kind::Drop, "kprobe/kfree_skb", t + 1_000);
        drop.device.netns = Some(1);
        drop.device.ifname = Some("tunl0".into());
        drop.size.l3_len = Some(len);
        drop.route.out_ifname = Some("tunl0".into());
        drop.route.out_mtu = Some(mtu);
        drop.drop.location = Some("ip_tunnel_xmit+0x1".into());
        drop.drop.matched = [Matched::Location, Matched::Oversize].into();
        drop.skb = Some(skb);
        a.observe_record(&drop);
        // The next attempt comes after a retransmission timeout.
        t += 300_000_000;
    }
    let v = a.verdicts(0, None);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].problem, Problem::PmtudRecovered, "{v:#?}");
    assert_eq!(v[0].largest_passing, Some(1430));
}

/// The sender of 10.0.1.2:40000 → 10.0.2.2:443 told MTU 1460 for a 1500-byte packet that
/// died, then retransmitting full-size at timeouts (stuck unless it learned).
fn told_then_retransmitting(a: &mut Analyzer) {
    told_then_retransmitting_as(a, |_| {});
}

/// The same, each record changed by `map` first (another family's addresses).
fn told_then_retransmitting_as(a: &mut Analyzer, map: impl Fn(&mut Record)) {
    let mut records = vec![icmp_told("kprobe/__icmp_send", 1_000, 0xffff1, 1460)];
    records.extend(stuck_drop_records("10.0.1.2", "10.0.2.2", 1500, 1460, None));
    for i in 0..3i128 {
        let mut r = flow_record(
            Kind::TcpRetransmit,
            "tracepoint/tcp/tcp_retransmit_skb",
            1_000_000_000 + i * 400_000_000 + 10,
        );
        r.device.netns = Some(2);
        r.size.len = Some(1448);
        records.push(r);
    }
    for mut r in records {
        map(&mut r);
        a.observe_record(&r);
    }
}

/// The test flow's addresses in IPv6: 10.0.X.Y becomes fd00::X:Y.
fn in_ipv6(r: &mut Record) {
    let v6 = |a: IpAddr| match a {
        IpAddr::V4(v4) => {
            let [_, _, x, y] = v4.octets();
            IpAddr::V6(std::net::Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                x.into(),
                y.into(),
            ))
        }
        v6 => v6,
    };
    r.flow.src = r.flow.src.map(v6);
    r.flow.dst = r.flow.dst.map(v6);
    if let Some(icmp) = r.icmp.as_mut() {
        icmp.to = v6(icmp.to);
        icmp.icmp_type = 2; // ICMPv6 packet too big
        icmp.code = 0;
    }
}

/// A start line whose hooks say which families' path-MTU learning attached; `flag` is its
/// `pmtu_hook`. `v6: None` is a log written before the IPv6 hook existed (no line for it).
fn start_with_learning(v4: bool, v6: Option<bool>, flag: bool) -> crate::event::start::Start {
    let line = |concern: &str, attached: bool| crate::event::start::HookLine {
        concern: concern.into(),
        method: "fentry/…".into(),
        outcome: if attached { "attached" } else { "failed" }.into(),
        detail: None,
    };
    let mut hooks = vec![line("drops", true), line("pmtu-learned", v4)];
    hooks.extend(v6.map(|v6| line("pmtu6-learned", v6)));
    crate::event::start::Start {
        hooks,
        pmtu_hook: flag,
        ..Default::default()
    }
}

#[test]
fn a_log_from_before_the_ipv6_hook_claims_nothing_about_ipv6_senders() {
    // Such a log says `pmtu_hook: true` with the IPv4 hook alone attached.
    let old_log = start_with_learning(true, None, true);
    let mut a = Analyzer::new();
    a.apply_start(&old_log);
    told_then_retransmitting_as(&mut a, in_ipv6);
    let p = only_problem(&a.verdicts(0, None)).clone();
    assert_eq!(p.problem, Problem::MtuBlackHole, "{}", p.summary);
    assert!(!p.summary.contains("never reached"), "{}", p.summary);
    // ... and still says it about IPv4 senders, which it could see.
    let mut a = Analyzer::new();
    a.apply_start(&old_log);
    told_then_retransmitting(&mut a);
    let p = only_problem(&a.verdicts(0, None)).clone();
    assert!(p.summary.contains("never reached"), "{}", p.summary);
}

#[test]
fn learning_is_judged_per_family_from_the_hooks_that_attached() {
    for (v4, v6) in [(true, false), (false, true), (true, true), (false, false)] {
        let start = start_with_learning(v4, Some(v6), v4 && v6);
        for (family, seen, map) in [
            ("IPv4", v4, (|_: &mut Record| {}) as fn(&mut Record)),
            ("IPv6", v6, in_ipv6 as fn(&mut Record)),
        ] {
            let mut a = Analyzer::new();
            a.apply_start(&start);
            told_then_retransmitting_as(&mut a, map);
            let p = only_problem(&a.verdicts(0, None)).clone();
            assert_eq!(
                p.summary.contains("never reached the senders' stacks"),
                seen,
                "{family} with hooks v4 {v4} v6 {v6}: {}",
                p.summary
            );
        }
    }
}

/// A path-MTU update for 10.0.1.2 → `dst` recorded in namespace `netns` (the kernel's flow key
/// has no ports). The sender's namespace in these tests is 2, the router's 1.
fn pmtu_update(netns: u32, dst: &str, mtu: u32) -> Record {
    let mut r = Record::new(Kind::PmtuUpdate, "fentry/__ip_rt_update_pmtu", 500_000_000);
    r.device.netns = Some(netns);
    r.size.mtu = Some(mtu);
    r.size.mtu_source = Some(MtuSource::Pmtu);
    r.flow.proto = Some(6);
    r.flow.src = Some(ip("10.0.1.2"));
    r.flow.dst = Some(ip(dst));
    r
}

#[test]
fn with_the_pmtu_hook_a_stuck_sender_that_learned_nothing_never_got_the_icmp() {
    let mut a = Analyzer::new();
    a.set_pmtu_hook(true);
    told_then_retransmitting(&mut a);
    let p = only_problem(&a.verdicts(0, None)).clone();
    assert_eq!(p.problem, Problem::MtuBlackHole);
    assert!(
        p.summary.contains("never reached the senders' stacks"),
        "{}",
        p.summary
    );
    assert_eq!(p.evidence.pmtu_learned, 0);
    assert_eq!(p.flows[0].pmtu_learned, None);
}

#[test]
fn without_the_pmtu_hook_nothing_is_claimed_about_the_senders_stack() {
    let mut a = Analyzer::new();
    a.set_pmtu_hook(false);
    told_then_retransmitting(&mut a);
    let p = only_problem(&a.verdicts(0, None)).clone();
    assert!(!p.summary.contains("stacks"), "{}", p.summary);
}

#[test]
fn a_sender_whose_socket_learned_the_mtu_is_told_apart() {
    let mut a = Analyzer::new();
    // No set_pmtu_hook: as `tracer report` on a log, where the event itself shows the hook.
    told_then_retransmitting(&mut a);
    a.observe_record(&pmtu_update(2, "10.0.2.2", 1460));
    let p = only_problem(&a.verdicts(0, None)).clone();
    assert!(
        p.summary.contains("recorded path MTU 1460, yet"),
        "{}",
        p.summary
    );
    assert!(!p.summary.contains("never learn"), "{}", p.summary);
    assert_eq!(p.evidence.pmtu_learned, 1);
    assert_eq!(p.flows[0].pmtu_learned, Some(1460));
    let text = render(&p).join("\n");
    assert!(text.contains("path MTU learned 1 times"), "{text}");
    assert!(text.contains("its stack learned MTU 1460"), "{text}");
}

#[test]
fn a_router_learning_for_the_flow_is_not_the_sender_learning() {
    let mut a = Analyzer::new();
    a.set_pmtu_hook(true);
    told_then_retransmitting(&mut a);
    // The node's tunnel lowered its route toward the pod (namespace 1, not the sender's 2),
    // and an unrelated flow learned something.
    a.observe_record(&pmtu_update(1, "10.0.2.2", 1430));
    a.observe_record(&pmtu_update(2, "10.9.9.9", 1400));
    let p = only_problem(&a.verdicts(0, None)).clone();
    // Only the update for this path's flow counts.
    assert_eq!(p.evidence.pmtu_learned, 1);
    assert_eq!(p.flows[0].pmtu_learned, None);
    // The sender's own stack still recorded nothing.
    assert!(p.summary.contains("never reached"), "{}", p.summary);
}

#[test]
fn recovery_says_the_icmp_arrived_when_the_socket_learned() {
    let mut a = Analyzer::new();
    a.set_pmtu_hook(true);
    let (icmp, drop) = told_and_dropped("kprobe/__icmp_send");
    a.observe_record(&icmp);
    a.observe_record(&drop);
    // The sender's namespace is known from a retransmission that fits the told MTU.
    let mut rtx = flow_record(
        Kind::TcpRetransmit,
        "tracepoint/tcp/tcp_retransmit_skb",
        3_000,
    );
    rtx.device.netns = Some(2);
    rtx.size.len = Some(1400);
    a.observe_record(&rtx);
    a.observe_record(&pmtu_update(2, "10.0.2.2", 1460));
    // Judged 5 s later: the shrunk size went quiet while watched.
    let v = a.verdicts(5_000_000_000, None);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].problem, Problem::PmtudRecovered);
    assert!(
        v[0].summary
            .contains("recorded path MTU 1460 (the ICMP too-big arrived)"),
        "{}",
        v[0].summary
    );
}

// One node's view of multi-stage setups (issue 16): `tracer run --netns <old node> --netns
// <client pod>`, recorded in the incident lab behind a router (testdata/, see stages/tests.rs).

#[test]
fn shrunk_and_stuck_again_behind_a_router_is_a_black_hole_beyond_the_node() {
    let v = recorded("router");
    let p = only_problem(&v);
    assert_eq!(p.problem, Problem::MtuBlackHole);
    assert_eq!(p.confidence, super::Confidence::Inferred);
    assert!(p.summary.contains("further on"), "{}", p.summary);
    assert!(p.summary.contains("told MTU 1450"), "{}", p.summary);
    // Nothing measured says what passes beyond: no made-up number.
    assert_eq!((p.largest_passing, p.recommended_mtu), (None, None));
    assert!(
        p.fix.as_deref().unwrap().contains("below 1450"),
        "{:?}",
        p.fix
    );
    // The HTTP connection (shrank) and the Redis one (started small) are both stuck, in one
    // verdict, and no other verdict says path-MTU discovery works.
    assert_eq!(
        p.flows.iter().filter(|f| f.stuck).count(),
        2,
        "{:#?}",
        p.flows
    );
    assert!(
        v.iter().all(|v| v.problem != Problem::PmtudRecovered),
        "{v:#?}"
    );
    // The first hop recovered: it is where they were told, not what dies.
    assert!(p.sites.iter().all(|s| s.recovered), "{:#?}", p.sites);
}

/// A client that gives up early (a slow start, a short timeout) leaves a connection with no
/// size event of its own two timeouts, not three: on a path where another connection met one,
/// that is enough to be named stuck (a CI run lost the Redis SET this way).
#[test]
fn a_connection_that_started_small_is_stuck_after_two_timeouts_on_a_told_path() {
    let path = format!(
        "{}/src/verdict/testdata/router.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let is_redis_rtx = |l: &str| l.contains("\"tcp_retransmit\"") && l.contains("\"dport\":6379");
    let last = text.lines().filter(|l| is_redis_rtx(l)).count();
    assert_eq!(last, 4, "the recording's Redis retransmissions");
    // The recording without the Redis connection's last retransmission.
    let mut n = 0;
    let cut: String = text
        .lines()
        .filter(|l| {
            n += usize::from(is_redis_rtx(l));
            !(is_redis_rtx(l) && n == last)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let log = std::env::temp_dir().join(format!("tracer-verdict-cut-{}.jsonl", std::process::id()));
    std::fs::write(&log, cut).unwrap();
    let result = crate::report::report(&log);
    let _ = std::fs::remove_file(&log);
    let (_, v) = result.unwrap();
    let p = only_problem(&v);
    assert_eq!(p.problem, Problem::MtuBlackHole);
    let redis: Vec<_> = p.flows.iter().filter(|f| f.dport == Some(6379)).collect();
    assert_eq!(redis.len(), 1, "{:#?}", p.flows);
    assert!(redis[0].stuck, "{:#?}", redis[0]);
}

#[test]
fn the_router_icmp_dropped_on_arrival_is_a_black_hole() {
    let v = recorded("icmp-dropped-at-node");
    let p = only_problem(&v);
    assert!(p.evidence.icmp_dropped > 0, "{:?}", p.evidence);
    assert!(
        v.iter().all(|v| v.problem != Problem::PmtudRecovered),
        "{v:#?}"
    );
    assert!(
        p.flows.iter().filter(|f| f.stuck).count() >= 2,
        "{:#?}",
        p.flows
    );
}

#[test]
fn the_router_icmp_reaching_the_node_is_a_black_hole_at_its_fragmenter() {
    let v = recorded("icmp-reaches-node");
    let p = only_problem(&v);
    assert_eq!(p.confidence, super::Confidence::Observed);
    assert_eq!(p.recommended_mtu, Some(1400), "{p:#?}");
    // The pod was told the tunnel's 1450, not the 1400 that passes: said as such, not
    // "never learn it".
    assert!(
        p.summary
            .ends_with("the senders were told 1450 B (ICMP), more than passes"),
        "{}",
        p.summary
    );
}

#[test]
fn outer_df_unset_behind_the_router_works() {
    let v = recorded("df-unset");
    assert!(v.iter().all(|v| v.severity < Severity::Suspected), "{v:#?}");
    assert!(
        v.iter().any(|v| v.problem == Problem::PmtudRecovered),
        "{v:#?}"
    );
}

#[test]
fn tcp_mtu_probing_getting_around_the_black_hole_is_a_note_not_a_problem() {
    let v = recorded("probing");
    assert!(v.iter().all(|v| v.severity < Severity::Suspected), "{v:#?}");
    let n = the_one(&v, Problem::ProbingRecovered);
    assert_eq!(n.confidence, super::Confidence::Inferred);
    assert!(n.summary.contains("TCP MTU probing"), "{}", n.summary);
    assert!(
        v.iter().all(|v| v.problem != Problem::PmtudRecovered),
        "{v:#?}"
    );
}

#[test]
fn a_probe_line_turns_the_bound_into_a_measured_mtu() {
    let path = format!(
        "{}/src/verdict/testdata/router.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut log = std::fs::read_to_string(path).unwrap();
    let probe = crate::event::probe::Probe {
        ts: "2026-12-04T04:43:05.000000000Z".into(),
        kind: crate::event::probe::KIND.into(),
        netns: 4026532639,
        netns_name: "lab-cli".into(),
        to: Some("10.212.2.2".parse().unwrap()),
        why: "black hole beyond this node".into(),
        status: "ok".into(),
        largest_ok: Some(1400),
        smallest_lost: Some(1401),
        path_mtu: Some(1400),
        exact: true,
        ..Default::default()
    };
    // Before the run's final verdict lines, as the daemon writes it.
    let at = log
        .find(r#""kind":"verdict""#)
        .and_then(|i| log[..i].rfind('\n'))
        .unwrap()
        + 1;
    log.insert_str(at, &format!("{}\n", serde_json::to_string(&probe).unwrap()));
    let mut a = Analyzer::new();
    let stats = crate::report::analyze(log.as_bytes(), &mut a).unwrap();
    assert_eq!(stats.bad_count, 0, "{:?}", stats.bad);
    let end = a.span().unwrap().1;
    let v = a.verdicts(end, None);
    let p = only_problem(&v);
    assert_eq!(p.confidence, super::Confidence::Measured);
    assert_eq!(
        (p.largest_passing, p.recommended_mtu),
        (Some(1400), Some(1400))
    );
    assert!(
        p.summary.contains("Measured: packets up to 1400 B"),
        "{}",
        p.summary
    );
    assert!(!p.summary.contains("not measured"), "{}", p.summary);
    // A probe toward an address none of the path's connections sends to changes nothing.
    let mut other = probe.clone();
    other.to = Some("10.99.0.1".parse().unwrap());
    let mut b = Analyzer::new();
    crate::report::analyze(
        std::fs::read_to_string(format!(
            "{}/src/verdict/testdata/router.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .as_bytes(),
        &mut b,
    )
    .unwrap();
    b.apply_probe(&other);
    let v = b.verdicts(end, None);
    assert_eq!(only_problem(&v).recommended_mtu, None);
}

#[test]
fn a_verdict_names_the_node_of_its_start_line_and_none_for_several() {
    let start = |node: &str| crate::event::start::Start {
        kind: crate::event::start::KIND.into(),
        node: Some(node.into()),
        ..Default::default()
    };
    let mut a = Analyzer::new();
    a.apply_start(&start("worker-116"));
    assert_eq!(a.verdicts(0, None)[0].node.as_deref(), Some("worker-116"));
    // The same node again (a rotated file's start line) changes nothing.
    a.apply_start(&start("worker-116"));
    assert_eq!(a.verdicts(0, None)[0].node.as_deref(), Some("worker-116"));
    // Two nodes' logs read as one: no single node to name.
    a.apply_start(&start("worker-208"));
    assert_eq!(a.verdicts(0, None)[0].node, None);
}

#[test]
fn a_live_problem_is_printed_again_once_a_probe_measures_it() {
    let path = format!(
        "{}/src/verdict/testdata/router.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut a = Analyzer::new();
    crate::report::analyze(std::fs::read_to_string(path).unwrap().as_bytes(), &mut a).unwrap();
    let end = a.span().unwrap().1 + 10_000_000_000;
    let first = a.live(end);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0].recommended_mtu, None);
    assert!(a.live(end).is_empty(), "nothing new");
    a.apply_probe(&crate::event::probe::Probe {
        kind: crate::event::probe::KIND.into(),
        to: Some("10.212.2.2".parse().unwrap()),
        status: "ok".into(),
        path_mtu: Some(1400),
        ..Default::default()
    });
    let again = a.live(end);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].recommended_mtu, Some(1400));
    assert_eq!(again[0].confidence, super::Confidence::Measured);
    a.apply_probe(&crate::event::probe::Probe {
        kind: crate::event::probe::KIND.into(),
        to: Some("10.212.2.2".parse().unwrap()),
        status: "ok".into(),
        path_mtu: Some(1400),
        ..Default::default()
    });
    assert!(a.live(end).is_empty(), "measured once is enough");
}

#[test]
fn a_live_problem_is_printed_again_once_the_cni_brings_its_change() {
    // As a run with API access: the problem is timed before the CNI's objects are read.
    let path = format!(
        "{}/src/verdict/testdata/router.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut a = Analyzer::new();
    crate::report::analyze(std::fs::read_to_string(path).unwrap().as_bytes(), &mut a).unwrap();
    a.apply_probe(&crate::event::probe::Probe {
        kind: crate::event::probe::KIND.into(),
        to: Some("10.212.2.2".parse().unwrap()),
        status: "ok".into(),
        path_mtu: Some(1400),
        ..Default::default()
    });
    let end = a.span().unwrap().1 + 10_000_000_000;
    let first = a.live(end);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0].change.is_none(), "no CNI known yet");
    let objects: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/src/fix/testdata/calico-manifest.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let install = crate::fix::recognise(objects["items"].as_array().unwrap()).expect("Calico");
    a.set_cni(install);
    let again = a.live(end);
    assert_eq!(again.len(), 1, "{again:#?}");
    let change = again[0].change.as_ref().expect("the ready change");
    assert!(
        change.commands.iter().any(|c| c.contains("calico-config")),
        "{change:#?}"
    );
    assert!(a.live(end).is_empty(), "the change once is enough");
}

/// ICMP echo requests of `len` bytes toward 10.0.2.2 dropped at a 1450 hop, 4 times at 400 ms:
/// what a probe's own packets look like to the drop hook.
fn probe_echo_drops(a: &mut Analyzer, len: u32) {
    for i in 0..4i128 {
        let mut r = Record::new(
            Kind::Drop,
            "tp_btf/kfree_skb",
            1_000_000_000 + i * 400_000_000,
        );
        r.flow.proto = Some(1);
        r.flow.src = Some(ip("10.0.1.2"));
        r.flow.dst = Some(ip("10.0.2.2"));
        r.device.netns = Some(1);
        r.device.ifname = Some("eth0".into());
        r.size.l3_len = Some(len);
        r.route.out_ifname = Some("eth1".into());
        r.route.out_mtu = Some(1450);
        r.drop.reason = Some("PKT_TOO_BIG".into());
        r.drop.location = Some("ip_forward+0x2c0".into());
        r.drop.matched = [Matched::Reason, Matched::Oversize].into();
        a.observe_record(&r);
    }
}

#[test]
fn a_probes_own_echo_requests_are_not_evidence() {
    let probe = crate::event::probe::Probe {
        ts: crate::time::rfc3339_nanos(2_500_000_000),
        kind: crate::event::probe::KIND.into(),
        to: Some(ip("10.0.2.2")),
        status: "ok".into(),
        path_mtu: Some(1400),
        elapsed_ms: 1_600,
        ..Default::default()
    };
    // Without a probe they are a stuck ICMP flow at the 1450 hop.
    let mut a = Analyzer::new();
    probe_echo_drops(&mut a, 1500);
    assert_eq!(
        only_problem(&a.verdicts(3_000_000_000, None)).flows[0].proto,
        1
    );
    // Inside a probe's time toward that address (from its line, as tracer report reads it):
    // not a connection of the verdict.
    let mut b = Analyzer::new();
    probe_echo_drops(&mut b, 1500);
    b.apply_probe(&probe);
    let v = b.verdicts(3_000_000_000, None);
    assert!(v.iter().all(|v| v.flows.is_empty()), "{v:#?}");
    // While the probe is under way (live, before its line): the same.
    let mut c = Analyzer::new();
    c.probing(ip("10.0.2.2"), 900_000_000);
    probe_echo_drops(&mut c, 1500);
    let v = c.verdicts(3_000_000_000, None);
    assert!(v.iter().all(|v| v.flows.is_empty()), "{v:#?}");
    // A probe toward another address changes nothing.
    let mut d = Analyzer::new();
    probe_echo_drops(&mut d, 1500);
    d.apply_probe(&crate::event::probe::Probe {
        to: Some(ip("10.9.9.9")),
        ..probe
    });
    assert_eq!(
        only_problem(&d.verdicts(3_000_000_000, None)).flows[0].proto,
        1
    );
}

/// The verdicts of recorded log `name` as if its run had recognised Calico's manifest install
/// (a start line naming it first).
fn recorded_with_calico(name: &str) -> Vec<Verdict> {
    recorded_with_calico_in(name, "start")
}

/// The same, the install said by a line of `kind`: `start` (from a snapshot) or `cni` (from the
/// live API, after the start).
fn recorded_with_calico_in(name: &str, kind: &str) -> Vec<Verdict> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let objects: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/src/fix/testdata/calico-manifest.json")).unwrap(),
    )
    .unwrap();
    let install = crate::fix::recognise(objects["items"].as_array().unwrap()).unwrap();
    let start = if kind == "start" {
        serde_json::json!({"ts": "2026-11-25T20:25:13Z", "kind": "start", "cni": install})
    } else {
        let line = crate::fix::CniLine {
            ts: "2026-11-25T20:25:13Z".into(),
            kind: kind.into(),
            node: None,
            install,
        };
        serde_json::to_value(line).unwrap()
    };
    let events =
        std::fs::read_to_string(format!("{dir}/src/verdict/testdata/{name}.jsonl")).unwrap();
    let log = std::env::temp_dir().join(format!(
        "tracer-verdict-cni-{name}-{}.jsonl",
        std::process::id()
    ));
    std::fs::write(&log, format!("{start}\n{events}")).unwrap();
    let result = crate::report::report(&log);
    let _ = std::fs::remove_file(&log);
    result.unwrap().1
}

/// The live API told the CNI after the start (a `cni` line): `tracer report` gives the same change.
#[test]
fn a_cni_line_from_the_api_gives_the_change_as_the_start_line_does() {
    let from_start = recorded_with_calico_in("l2vxlan", "start");
    let from_line = recorded_with_calico_in("l2vxlan", "cni");
    let change = |v: &[Verdict]| only_problem(v).change.clone().expect("a change");
    assert_eq!(change(&from_line), change(&from_start));
}

/// A path where path-MTU discovery worked: its fix is optional, so no command to paste.
#[test]
fn a_recovered_path_gets_no_change_to_make() {
    let v = recorded_with_calico("df-unset");
    let note = v
        .iter()
        .find(|v| v.problem == Problem::PmtudRecovered)
        .unwrap();
    assert!(note.recommended_mtu.is_some());
    assert!(note.change.is_none(), "{:#?}", note.change);
}

/// The run knew the cluster's CNI (its start line says so): the verdict's recommended MTU
/// comes as the change to make, naming the stuck connections' pods to restart once each.
#[test]
fn with_the_cni_known_the_verdict_carries_the_change_to_make() {
    let v = recorded_with_calico("l2vxlan");
    let p = only_problem(&v);
    let c = p.change.as_ref().expect("a change");
    assert_eq!(Some(c.value), p.recommended_mtu);
    assert_eq!(c.value, 1400);
    assert!(
        c.commands[0].contains(r#"{"data":{"veth_mtu":"1400"}}"#),
        "{c:#?}"
    );
    assert_eq!(c.then.matches("order-api-7d9f8").count(), 1, "{}", c.then);
    // The text shows the commands on lines of their own.
    let text = super::render(p).join("\n");
    assert!(
        text.contains(
            "\n                kubectl rollout restart daemonset/calico-node -n kube-system"
        ),
        "{text}"
    );
    // Without the start line, no change: the generic fix only, and the text says why.
    let v = recorded("l2vxlan");
    assert!(v.iter().all(|v| v.change.is_none()));
    let text = super::render(only_problem(&v)).join("\n");
    assert!(
        text.contains(
            "  change      no CNI configuration recognised among the objects the run was given"
        ),
        "{text}"
    );
}

/// A routed path without overlay, recorded from the client's namespace (IPv4 and IPv6): the
/// router beyond the node refuses the 1500-byte packets and its ICMP too-big reaches the
/// sender, which shrinks and passes. No drop on this node: the ICMP received is the size
/// event. It once read as a suspected black hole (an alarm on a path that works).
#[test]
fn told_by_a_router_beyond_the_node_and_shrunk_is_pmtud_working() {
    for name in ["routed-told-v4", "routed-told-v6"] {
        let v = recorded(name);
        assert!(
            v.iter().all(|v| v.severity < Severity::Suspected),
            "{name}: {v:#?}"
        );
        let v = the_one(&v, Problem::PmtudRecovered);
        assert_eq!(v.largest_passing, Some(1400), "{name}");
        assert_eq!(v.evidence.icmp_received, 10, "{name}");
        assert_eq!(v.evidence.dropped_packets, 0, "{name}");
    }
}
