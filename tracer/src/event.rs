//! The one event model every sink is fed with: a kernel [`tracer_common::Event`] decoded, named
//! and enriched (reason names from BTF, locations from kallsyms, flows from packet headers).
//!
//! The JSONL field names below are a contract (README "Event log schema"): add fields, never
//! rename or remove one.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::k8s::{Attribution, ObjectRef, ServiceRef};

/// JSONL `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Drop,
    IcmpTooBigSent,
    IcmpTooBigReceived,
    OversizeTx,
    TcpRetransmit,
    PmtuUpdate,
    Lost,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Drop => "drop",
            Kind::IcmpTooBigSent => "icmp_too_big_sent",
            Kind::IcmpTooBigReceived => "icmp_too_big_received",
            Kind::OversizeTx => "oversize_tx",
            Kind::TcpRetransmit => "tcp_retransmit",
            Kind::PmtuUpdate => "pmtu_update",
            Kind::Lost => "lost",
        }
    }

    /// The kind a log line names (the inverse of [`Kind::as_str`]).
    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Drop,
            Kind::IcmpTooBigSent,
            Kind::IcmpTooBigReceived,
            Kind::OversizeTx,
            Kind::TcpRetransmit,
            Kind::PmtuUpdate,
            Kind::Lost,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Encapsulation of a tunnel packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// IPv4/IPv6 in IPv4 (IP protocol 4 or 41): Calico `tunl0`.
    Ipip,
    /// VXLAN over UDP 4789 (IANA) or 8472 (Linux/flannel default).
    Vxlan,
}

/// A transport flow. Ports are `None` for protocols without ports (ICMP).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    /// IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...
    pub proto: u8,
    pub src: IpAddr,
    pub sport: Option<u16>,
    pub dst: IpAddr,
    pub dport: Option<u16>,
}

/// The outer (node-to-node) header of an encapsulated packet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outer {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub encap: Encap,
    /// VXLAN network identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

/// An ICMP "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big" (type 2) message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpTooBig {
    /// Sender and receiver of the ICMP message itself. `from` is null when the event comes
    /// from the kernel's ICMP generator (it has not chosen a source address yet).
    pub from: Option<IpAddr>,
    pub to: IpAddr,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
    /// Next-hop MTU the message advertises; `None` when it carries none (old routers send 0).
    pub mtu: Option<u32>,
}

/// Result of decoding packet bytes that start at the network header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The innermost flow: the pod flow when encapsulated. For an ICMP too-big message, the flow
    /// of the packet it quotes (the packet that was too big).
    pub flow: Option<Flow>,
    /// Outer addresses when the (quoted) packet is encapsulated.
    pub outer: Option<Outer>,
    /// Set when the packet is itself an ICMP too-big message.
    pub icmp: Option<IcmpTooBig>,
    /// IP total length of the outermost header, as it says.
    pub ip_len: Option<u32>,
}

/// One decoded event: what sinks consume.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// RFC 3339 UTC with nanoseconds.
    pub ts: String,
    /// Wall-clock nanoseconds since the Unix epoch (for sorting and joining).
    #[serde(skip)]
    pub ts_unix_ns: i128,
    pub kind: Kind,
    /// Which kernel hook produced the event (`tp_btf/kfree_skb`, `tcx/egress`, ...).
    pub hook: &'static str,
    pub ifname: Option<String>,
    pub ifindex: Option<u32>,
    /// Network namespace inode.
    pub netns: Option<u32>,
    /// `skb->len`: the packet as the kernel held it (may include the L2 header).
    pub len: Option<u32>,
    /// Length from the network header on.
    pub l3_len: Option<u32>,
    /// Device MTU, or the MTU an ICMP message advertises (`mtu_source`).
    pub mtu: Option<u32>,
    /// `device`, `route` (output device of the route) or `icmp`.
    pub mtu_source: Option<&'static str>,
    pub gso_size: Option<u32>,
    pub gso_segs: Option<u32>,
    /// Drops: reason name from the running kernel's BTF (`PKT_TOO_BIG`, `NOT_SPECIFIED`, ...).
    pub reason: Option<String>,
    pub reason_code: Option<u32>,
    /// Drops: `symbol+0xoffset` from /proc/kallsyms.
    pub location: Option<String>,
    /// Drops: why the default filter kept it (`reason`, `location`, `oversize`); empty with
    /// `--all-drops` when none applies.
    pub matched: Vec<&'static str>,
    /// Output device of the packet's route, when the kernel had one.
    pub out_ifname: Option<String>,
    pub out_ifindex: Option<u32>,
    pub out_mtu: Option<u32>,
    /// veth drops: the peer device that refused the packet (its MTU is the one that failed).
    pub peer_ifname: Option<String>,
    pub peer_ifindex: Option<u32>,
    pub peer_mtu: Option<u32>,
    pub proto: Option<u8>,
    pub src: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dst: Option<IpAddr>,
    pub dport: Option<u16>,
    pub outer: Option<Outer>,
    pub icmp: Option<IcmpTooBig>,
    /// TCP retransmits: socket state (`TCP_ESTABLISHED`, ...).
    pub tcp_state: Option<String>,
    /// Kernel `sk_buff` address (hex): joins events about the same packet.
    pub skb: Option<String>,
    /// `lost` events: how many events the kernel could not queue since the previous report.
    pub lost: Option<u64>,
    /// Kubernetes names of the flow's ends (`--k8s-snapshot`): pods by IP, the service by its
    /// ClusterIP:port or by a backend (after DNAT), nodes by the outer header of an
    /// encapsulated packet or by the pods' node. Null when unknown.
    pub src_pod: Option<ObjectRef>,
    pub dst_pod: Option<ObjectRef>,
    pub service: Option<ServiceRef>,
    pub src_node: Option<ObjectRef>,
    pub dst_node: Option<ObjectRef>,
    /// The captured packet bytes, for `--pcap`; never in the JSON log (its decoded fields are).
    #[serde(skip)]
    pub packet: Option<Captured>,
}

/// Packet bytes as the kernel captured them: from the network header on, at most
/// [`tracer_common::PACKET_CAPTURE`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// 0x0800 (IPv4) or 0x86DD (IPv6).
    pub ethertype: u16,
    pub bytes: Vec<u8>,
}

impl Record {
    /// An empty record of `kind` at `ts_unix_ns`: decoders fill in what they know.
    pub fn new(kind: Kind, hook: &'static str, ts_unix_ns: i128) -> Self {
        Record {
            ts: crate::time::rfc3339_nanos(ts_unix_ns),
            ts_unix_ns,
            kind,
            hook,
            ifname: None,
            ifindex: None,
            netns: None,
            len: None,
            l3_len: None,
            mtu: None,
            mtu_source: None,
            gso_size: None,
            gso_segs: None,
            reason: None,
            reason_code: None,
            location: None,
            matched: Vec::new(),
            out_ifname: None,
            out_ifindex: None,
            out_mtu: None,
            peer_ifname: None,
            peer_ifindex: None,
            peer_mtu: None,
            proto: None,
            src: None,
            sport: None,
            dst: None,
            dport: None,
            outer: None,
            icmp: None,
            tcp_state: None,
            skb: None,
            lost: None,
            src_pod: None,
            dst_pod: None,
            service: None,
            src_node: None,
            dst_node: None,
            packet: None,
        }
    }

    /// Take the Kubernetes names found for this event's flow.
    pub fn set_names(&mut self, a: Attribution) {
        self.src_pod = a.src_pod;
        self.dst_pod = a.dst_pod;
        self.service = a.service;
        self.src_node = a.src_node;
        self.dst_node = a.dst_node;
    }

    /// Whether any Kubernetes name is known for this event.
    pub fn has_names(&self) -> bool {
        self.src_pod.is_some()
            || self.dst_pod.is_some()
            || self.service.is_some()
            || self.src_node.is_some()
            || self.dst_node.is_some()
    }

    /// Fill the flow fields from decoded packet headers.
    pub fn set_decoded(&mut self, d: &Decoded) {
        if let Some(f) = &d.flow {
            self.proto = Some(f.proto);
            self.src = Some(f.src);
            self.sport = f.sport;
            self.dst = Some(f.dst);
            self.dport = f.dport;
        }
        if d.outer.is_some() {
            self.outer = d.outer.clone();
        }
        if d.icmp.is_some() {
            self.icmp = d.icmp.clone();
        }
    }
}

#[cfg(test)]
mod golden;
