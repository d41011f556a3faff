//! The NAT table on ctnetlink messages as the kernel lays them out (`netlink::conntrack`'s
//! builders), the refresher, and a real dump of a namespace with an nft DNAT rule.

use super::*;
use crate::netlink::conntrack::{
    dump,
    tests::{dnat_snat_v6, dnat_v4, ip, parse_messages, plain_v4, TCP, UDP},
    Tuple,
};

fn flow(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
    FlowKey {
        proto: Some(proto),
        src: Some(ip(src)),
        sport: Some(sport),
        dst: Some(ip(dst)),
        dport: Some(dport),
        ..Default::default()
    }
}

#[test]
fn the_nat_table_maps_post_dnat_packets_both_ways_to_the_original_destination() {
    let mut entries = Vec::new();
    parse_messages(
        &[dnat_v4(), dnat_snat_v6(), plain_v4()].concat(),
        &mut entries,
    )
    .unwrap();
    let mut table = NatTable::default();
    table.add(entries, MAX_ENTRIES);
    // The untranslated connection is not kept.
    assert_eq!(table.len(), 2);
    let cluster_ip = Some((ip("10.96.0.10"), 8080, TCP));
    // Client → backend after DNAT, and the backend's answer before it is translated back.
    assert_eq!(
        table.get(&flow(TCP, "10.212.1.2", 43512, "10.212.2.2", 8080)),
        cluster_ip
    );
    assert_eq!(
        table.get(&flow(TCP, "10.212.2.2", 8080, "10.212.1.2", 43512)),
        cluster_ip
    );
    // Masqueraded: the packet after NAT comes from the node's address and port.
    assert_eq!(
        table.get(&flow(UDP, "fd00:10::11", 61000, "fd00:244:0:2::9", 8443)),
        Some((ip("2001:db8:100::10"), 443, UDP))
    );
    // Another port, protocol or client is another connection.
    assert_eq!(
        table.get(&flow(TCP, "10.212.1.2", 43513, "10.212.2.2", 8080)),
        None
    );
    assert_eq!(
        table.get(&flow(UDP, "10.212.1.2", 43512, "10.212.2.2", 8080)),
        None
    );
    assert_eq!(
        table.get(&flow(TCP, "10.212.1.2", 40000, "10.212.2.2", 6379)),
        None
    );
    // Half a tuple: no answer.
    let mut partial = flow(TCP, "10.212.1.2", 43512, "10.212.2.2", 8080);
    partial.sport = None;
    assert_eq!(table.get(&partial), None);
}

#[test]
fn the_nat_table_is_bounded() {
    let entry = |sport: u16| Entry {
        orig: Tuple {
            proto: TCP,
            src: ip("10.212.1.2"),
            sport,
            dst: ip("10.96.0.10"),
            dport: 80,
        },
        reply: Tuple {
            proto: TCP,
            src: ip("10.212.2.2"),
            sport: 8080,
            dst: ip("10.212.1.2"),
            dport: sport,
        },
    };
    let mut table = NatTable::default();
    table.add((1..=10).map(entry), 4);
    assert_eq!(table.len(), 4);
    assert_eq!(table.overflow, 6);
    // The first ones are kept; an entry already known is updated, not counted as overflow.
    assert!(table
        .get(&flow(TCP, "10.212.1.2", 1, "10.212.2.2", 8080))
        .is_some());
    assert!(table
        .get(&flow(TCP, "10.212.1.2", 9, "10.212.2.2", 8080))
        .is_none());
    table.add([entry(2)], 4);
    assert_eq!(table.overflow, 6);
}

#[test]
fn the_refresher_dumps_on_a_miss_and_stops_with_its_handle() {
    // The tracer's own namespace: whatever its table holds, a miss must lead to a dump
    // (observable as the lookup staying a miss without a panic or a hang), and dropping the
    // handle must end the thread.
    let ct = Conntrack::start(Vec::new());
    let f = flow(TCP, "192.0.2.1", 1, "192.0.2.2", 2);
    assert_eq!(
        ct.shared.refreshes.load(Ordering::Relaxed),
        0,
        "no dump before a miss"
    );
    assert_eq!(ct.original_destination(&f), None);
    // (The refresher may already have taken the request: wait for the dump it leads to.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while ct.shared.refreshes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no refresh after a miss");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!ct.shared.wanted.load(Ordering::Relaxed));
    // A flow without ports asks for nothing.
    let mut portless = f;
    portless.sport = None;
    assert_eq!(ct.original_destination(&portless), None);
    assert!(!ct.shared.wanted.load(Ordering::Relaxed));
    let weak = Arc::downgrade(&ct.shared);
    drop(ct);
    let deadline = Instant::now() + MIN_REFRESH * 4;
    while weak.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "the refresher keeps its state alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the refresher has finished `n` dumps.
fn wait_for_dumps(ct: &Conntrack, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ct.shared.refreshes.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "no dump {n} after a miss");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_flow_missed_by_a_dump_begun_after_its_first_miss_asks_no_more() {
    // A connection that is not NATed (most are not) must not keep the tables dumped once a
    // second for as long as its events come.
    let ct = Conntrack::start(Vec::new());
    let busy = flow(UDP, "192.0.2.1", 1000, "192.0.2.2", 2000);
    assert_eq!(ct.original_destination(&busy), None);
    wait_for_dumps(&ct, 1);
    // The first dump may have begun before the miss: the flow asks once more.
    assert_eq!(ct.original_destination(&busy), None);
    wait_for_dumps(&ct, 2);
    for _ in 0..100 {
        assert_eq!(ct.original_destination(&busy), None);
    }
    assert!(
        !ct.shared.wanted.load(Ordering::Relaxed),
        "a flow two dumps did not hold asked for a third"
    );
    std::thread::sleep(MIN_REFRESH + Duration::from_millis(300));
    assert_eq!(ct.shared.refreshes.load(Ordering::Relaxed), 2);
    // A new flow still asks.
    let new = flow(UDP, "192.0.2.1", 1001, "192.0.2.2", 2000);
    assert_eq!(ct.original_destination(&new), None);
    wait_for_dumps(&ct, 3);
}

/// A real namespace: an nft DNAT rule (as kube-proxy's nftables mode writes for a ClusterIP)
/// and one TCP connection and one UDP datagram through it; the dump must hold both, translated,
/// and the refresher must find them from a post-DNAT flow.
#[test]
fn the_kernel_dump_of_a_namespace_holds_its_dnat_entries() {
    // A lab namespace (xtask::lab): deleted on drop, also when an assertion fails.
    let mut lab = xtask::lab::Lab::new(&xtask::lab::Lab::unique_prefix("uct")).unwrap();
    let name = lab
        .add_netns("t")
        .expect("ip netns add (tests run as root)");
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .status()
            .unwrap()
            .success()
    };
    for args in [
        &["link", "add", "ct0", "type", "veth", "peer", "name", "ct1"][..],
        &["link", "set", "ct1", "up"],
        &["link", "set", "ct0", "up"],
        &["addr", "add", "10.251.0.1/24", "dev", "ct0"],
        &["route", "add", "10.251.96.0/24", "dev", "ct0"],
        &["-6", "addr", "add", "fd00:251::1/64", "dev", "ct0", "nodad"],
        &["-6", "route", "add", "fd00:251:96::/64", "dev", "ct0"],
    ] {
        lab.ip(&name, args).unwrap();
    }
    let rules = "table inet tracer_ct_test {
        chain out {
            type nat hook output priority -100;
            ip daddr 10.251.96.10 tcp dport 80 dnat ip to 10.251.0.1:8080
            ip6 daddr fd00:251:96::10 udp dport 53 dnat ip6 to [fd00:251::1]:5353
        }
    }";
    let rules_file = std::env::temp_dir().join(format!("{name}.nft"));
    std::fs::write(&rules_file, rules).unwrap();
    assert!(
        run(
            "ip",
            &[
                "netns",
                "exec",
                &name,
                "nft",
                "-f",
                &rules_file.display().to_string()
            ]
        ),
        "nft -f {rules}"
    );
    let _ = std::fs::remove_file(&rules_file);

    let ns = Netns::resolve(&name).unwrap();
    let (entries, client) = ns
        .enter(|| {
            let listener = std::net::TcpListener::bind("10.251.0.1:8080")?;
            let conn = std::net::TcpStream::connect("10.251.96.10:80")?;
            let client = conn.local_addr()?;
            let _accepted = listener.accept()?;
            let udp = std::net::UdpSocket::bind("[fd00:251::1]:0")?;
            udp.send_to(b"q", "[fd00:251:96::10]:53")?;
            Ok((dump()?, (client, udp.local_addr()?)))
        })
        .unwrap();
    let (tcp_client, udp_client) = client;
    let tcp = entries
        .iter()
        .find(|e| e.orig.dst == ip("10.251.96.10") && e.orig.sport == tcp_client.port())
        .unwrap_or_else(|| panic!("no TCP DNAT entry in {entries:#?}"));
    assert_eq!(tcp.orig.proto, TCP);
    assert_eq!(tcp.orig.dport, 80);
    assert_eq!(tcp.reply.src, ip("10.251.0.1"));
    assert_eq!(tcp.reply.sport, 8080);
    assert_eq!(tcp.reply.dport, tcp_client.port());
    let udp = entries
        .iter()
        .find(|e| e.orig.dst == ip("fd00:251:96::10"))
        .unwrap_or_else(|| panic!("no UDP DNAT entry in {entries:#?}"));
    assert_eq!(udp.orig.proto, UDP);
    assert_eq!((udp.reply.src, udp.reply.sport), (ip("fd00:251::1"), 5353));
    assert_eq!(udp.orig.sport, udp_client.port());

    // Through the refresher: the first lookup misses and asks, a later one answers.
    let ct = Conntrack::start(vec![ns]);
    let post_dnat = flow(TCP, "10.251.0.1", tcp_client.port(), "10.251.0.1", 8080);
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        if let Some(d) = ct.original_destination(&post_dnat) {
            break d;
        }
        assert!(Instant::now() < deadline, "no answer from the refresher");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(found, (ip("10.251.96.10"), 80, TCP));
    assert!(ct.len() >= 2);
}
