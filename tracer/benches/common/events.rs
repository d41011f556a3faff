//! The pipeline benchmark's events and names, shared by `benches/pipeline.rs` (criterion) and
//! `examples/pipeline_replay.rs` (fixed rounds, for instruction counts): both measure the same
//! work. A 10,000-pod / 2,000-service inventory; the events mirror the incident:
//! VXLAN-encapsulated pod TCP dropped at a veth whose peer has a smaller MTU (60%), the pods'
//! retransmissions (25%) and kernel-generated ICMP (15%).
use std::collections::HashMap;

use tracer::{
    hooks::Names,
    kernel::{btf, btf::DropReasons, kallsyms::Kallsyms},
    packet::synth::{ethernet, ipv4, tcp, udp, vxlan},
};
use tracer_common::{flags, Event, EventKind, Hook};

pub const PODS: u32 = 10_000;
pub const SERVICES: u32 = 2_000;
pub const NODES: u32 = 100;
pub const EVENTS: usize = 10_000;
pub const KALLSYMS: &str = "ffffffff81e57040 t __dev_forward_skb2\n\
                        ffffffff81e571e0 T __dev_forward_skb\n\
                        ffffffff81ff7890 T ip_forward\n\
                        ffffffff81ff8000 T ip_forward_finish\n";

pub fn pod_ip(i: u32) -> String {
    format!("10.244.{}.{}", i / 250, i % 250 + 1)
}
pub fn node_ip(i: u32) -> String {
    format!("10.0.{}.{}", i / 250, i % 250 + 1)
}

pub fn snapshot() -> String {
    xtask::bench::cluster_snapshot(PODS, SERVICES, NODES)
}

pub fn names() -> Names {
    let vmlinux = btf::load_vmlinux().expect("kernel BTF");
    let (inventory, warnings) = tracer::k8s::snapshot::parse(&snapshot()).expect("snapshot");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(inventory.counts().0, PODS as usize);
    Names {
        reasons: DropReasons::from_btf(&vmlinux).expect("drop reasons"),
        kallsyms: Kallsyms::parse(KALLSYMS),
        devices: HashMap::new(),
        clock_offset_ns: 1_795_630_181_000_000_000,
        inventory: Some(inventory),
        conntrack: None,
        interned: Default::default(),
        // As a run without --pcap: the captured bytes are decoded, not kept.
        keep_packets: false,
    }
}

pub fn base(kind: EventKind, hook: Hook, i: usize) -> Event {
    let mut ev = Event::zeroed();
    ev.kind = kind as u8;
    ev.hook = hook as u8;
    ev.ts_ns = 1_000_000 * i as u64;
    ev.skb = 0xffff_8881_0000_0000 + (i as u64 % 512) * 0x100;
    ev.netns = 4026532177;
    ev.ifindex = 2;
    ev.ifname[..4].copy_from_slice(b"eth0");
    ev
}

/// One VXLAN packet of pod `src` → pod `dst`:8080, TCP source port `sport`.
pub fn vxlan_packet(src: u32, dst: u32, sport: u16) -> Vec<u8> {
    let inner = ipv4(&pod_ip(src), &pod_ip(dst), 6, &tcp(sport, 8080, 1460));
    let frame = ethernet(0x0800, None, &inner);
    ipv4(
        &node_ip(src % NODES),
        &node_ip(dst % NODES),
        17,
        &udp(51000, 4789, &vxlan(4096, &frame)),
    )
}

pub fn events(names: &Names) -> Vec<Event> {
    let not_specified = names.reasons.value("NOT_SPECIFIED").expect("reason");
    (0..EVENTS)
        .map(|i| {
            let src = (i as u32 * 7) % PODS;
            let dst = (i as u32 * 13 + 1) % PODS;
            let sport = 30000 + (i % 20000) as u16;
            match i % 20 {
                0..=11 => {
                    let mut ev = base(EventKind::Drop, Hook::DropsTpBtf, i);
                    let pkt = vxlan_packet(src, dst, sport);
                    let cap = pkt.len().min(ev.packet.len());
                    ev.packet[..cap].copy_from_slice(&pkt[..cap]);
                    ev.cap_len = cap as u16;
                    ev.l3_proto = 0x0800;
                    ev.len = 1550;
                    ev.l3_len = 1550;
                    ev.mtu = 1500;
                    ev.reason = not_specified;
                    ev.location = 0xffffffff81e57040 + 0x87;
                    ev.peer_mtu = 1450;
                    ev.peer_ifname[..4].copy_from_slice(b"eth0");
                    ev.flags = flags::HAS_PACKET
                        | flags::HAS_PEER_DEV
                        | flags::MATCH_LOCATION
                        | flags::MATCH_OVERSIZE;
                    ev
                }
                12..=16 => {
                    let mut ev = base(EventKind::TcpRetransmit, Hook::TcpRetransmitTracepoint, i);
                    ev.flow.family = 2;
                    ev.flow.proto = 6;
                    let s: std::net::Ipv4Addr = pod_ip(src).parse().unwrap();
                    let d: std::net::Ipv4Addr = format!("10.96.0.{}", i % 200 + 1).parse().unwrap();
                    ev.flow.saddr[..4].copy_from_slice(&s.octets());
                    ev.flow.daddr[..4].copy_from_slice(&d.octets());
                    ev.flow.sport = sport;
                    ev.flow.dport = 80;
                    ev.flags = flags::HAS_FLOW;
                    ev.aux1 = 1;
                    ev.len = 1448;
                    ev
                }
                _ => {
                    let mut ev = base(EventKind::IcmpTooBigSent, Hook::IcmpSendTracepoint, i);
                    let pkt = ipv4(&pod_ip(src), &pod_ip(dst), 6, &tcp(sport, 8080, 1460));
                    let cap = pkt.len().min(ev.packet.len());
                    ev.packet[..cap].copy_from_slice(&pkt[..cap]);
                    ev.cap_len = cap as u16;
                    ev.l3_proto = 0x0800;
                    ev.len = 1500;
                    ev.l3_len = 1500;
                    ev.mtu = 1450;
                    ev.flags = flags::HAS_PACKET;
                    ev
                }
            }
        })
        .collect()
}
