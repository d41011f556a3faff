//! The one event model every sink is fed with: a kernel [`tracer_common::Event`] decoded, named
//! and enriched (reason names from BTF, locations from kallsyms, flows from packet headers).
//! The same [`Record`] is what `tracer report` reads back from a log ([`Record::from_line`]).
//!
//! A record is grouped in sections (device, sizes, drop, route, flow, names) that serde
//! flattens into one JSON object: the JSONL field names and their order are a contract (docs/schema.md
//! "Event log schema", pinned by `golden.rs`): add fields at the end, never rename or remove
//! one. A field is declared once, here; the fast writer (`sink/json.rs`) is checked against it.

pub mod arrivals;
pub mod fragments;
mod names;
pub mod node;
pub mod probe;
pub mod start;

pub use names::{Attribution, Cache, ObjectRef, ServiceRef};
pub use node::set as set_node;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The one list of event kinds: the enum, its JSONL names ([`Kind::as_str`], the same as
/// serde's), [`Kind::ALL`] and the kernel kinds it maps ([`Kind::from_kernel`]).
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal $([$kernel:ident])?,)*) => {
        /// JSONL `kind`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Kind {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl Kind {
            /// Every kind, in the order summaries print them.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The JSONL name (what serde writes).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }

            /// The kind of a kernel event.
            pub fn from_kernel(kind: tracer_common::EventKind) -> Kind {
                match kind {
                    $($(tracer_common::EventKind::$kernel => Kind::$variant,)?)*
                }
            }
        }
    };
}

kinds! {
    /// A packet freed as dropped.
    Drop = "drop" [Drop],
    /// An ICMP "fragmentation needed" / ICMPv6 "packet too big" the kernel generated.
    IcmpTooBigSent = "icmp_too_big_sent" [IcmpTooBigSent],
    /// One arriving on a hooked device.
    IcmpTooBigReceived = "icmp_too_big_received" [IcmpTooBigReceived],
    /// A packet leaving a device larger than its MTU.
    OversizeTx = "oversize_tx" [OversizeTx],
    TcpRetransmit = "tcp_retransmit" [TcpRetransmit],
    /// The kernel recorded a path MTU for a destination.
    PmtuUpdate = "pmtu_update" [PmtuUpdate],
    /// Events the kernel could not queue (`lost` says how many).
    Lost = "lost",
}

/// JSONL `mtu_source`: what the record's `mtu` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtuSource {
    /// The device's own MTU.
    Device,
    /// The route's output device (forwarding).
    Route,
    /// What an ICMP too-big advertises.
    Icmp,
    /// The veth peer that refused the packet.
    Peer,
    /// The path MTU the kernel recorded.
    Pmtu,
}

impl MtuSource {
    /// The JSONL name (what serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            MtuSource::Device => "device",
            MtuSource::Route => "route",
            MtuSource::Icmp => "icmp",
            MtuSource::Peer => "peer",
            MtuSource::Pmtu => "pmtu",
        }
    }
}

/// JSONL `matched`: why the in-kernel filter kept a drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    /// The drop reason is a size reason (`PKT_TOO_BIG`, ...).
    Reason,
    /// The kernel function is one where packets die for their size.
    Location,
    /// The packet is larger than the MTU it met.
    Oversize,
    /// The dropped packet is itself an ICMP too-big.
    IcmpTooBig,
}

impl Matched {
    /// The JSONL name (what serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            Matched::Reason => "reason",
            Matched::Location => "location",
            Matched::Oversize => "oversize",
            Matched::IcmpTooBig => "icmp_too_big",
        }
    }

    /// Kept for the packet's size: MTU evidence (with `--all-drops` other drops come too).
    pub fn is_size(self) -> bool {
        matches!(
            self,
            Matched::Reason | Matched::Location | Matched::Oversize
        )
    }
}

/// JSONL `matched` of one drop: a set of [`Matched`], written as a list in declaration order
/// (the order decoders always gave it). A byte instead of a `Vec`: every drop has one, and it
/// was an allocation per event (issue 18).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MatchedSet(u8);

impl MatchedSet {
    /// Every member, in the order the list is written.
    const ORDER: [Matched; 4] = [
        Matched::Reason,
        Matched::Location,
        Matched::Oversize,
        Matched::IcmpTooBig,
    ];

    fn bit(m: Matched) -> u8 {
        // Exhaustive on purpose: a new variant does not compile here until `ORDER` lists it.
        match m {
            Matched::Reason | Matched::Location | Matched::Oversize | Matched::IcmpTooBig => {
                1 << m as u8
            }
        }
    }

    pub fn insert(&mut self, m: Matched) {
        self.0 |= Self::bit(m);
    }

    pub fn contains(self, m: Matched) -> bool {
        self.0 & Self::bit(m) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in the order the list is written.
    pub fn iter(self) -> impl Iterator<Item = Matched> {
        Self::ORDER.into_iter().filter(move |&m| self.contains(m))
    }
}

impl FromIterator<Matched> for MatchedSet {
    fn from_iter<I: IntoIterator<Item = Matched>>(iter: I) -> Self {
        let mut set = MatchedSet::default();
        for m in iter {
            set.insert(m);
        }
        set
    }
}

impl<const N: usize> From<[Matched; N]> for MatchedSet {
    fn from(ms: [Matched; N]) -> Self {
        ms.into_iter().collect()
    }
}

impl std::fmt::Debug for MatchedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for MatchedSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for MatchedSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Matched>::deserialize(d)?.into_iter().collect())
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

/// One decoded event: what sinks consume and what `tracer report` reads back. Its sections are
/// flattened: the JSONL object is one level of fields (plus `outer`, `icmp` and the names as
/// objects), in declaration order.
///
/// Reading a log, unknown fields are ignored (logs of newer versions) and missing ones are
/// null (logs of older versions): every field but `ts` and `kind` may be absent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// JSONL `ts`: wall-clock nanoseconds since the Unix epoch (for sorting and joining),
    /// written as RFC 3339 UTC with nanoseconds by the writers only: a string per event was an
    /// allocation and its formatting even for records folded away (issue 18).
    #[serde(rename = "ts", with = "crate::time::serde_rfc3339")]
    pub ts_unix_ns: i128,
    pub kind: Kind,
    /// Which kernel hook produced the event (`tp_btf/kfree_skb`, `tcx/egress`, ...). Borrowed
    /// from the hook table live; a log may name hooks this build does not have.
    #[serde(default)]
    pub hook: Cow<'static, str>,
    #[serde(flatten)]
    pub device: Device,
    #[serde(flatten)]
    pub size: Size,
    #[serde(flatten)]
    pub drop: DropCause,
    #[serde(flatten)]
    pub route: Route,
    #[serde(flatten)]
    pub flow: FlowFields,
    /// The ICMP too-big message the packet is (or the generator is about to send).
    pub icmp: Option<IcmpTooBig>,
    /// TCP retransmits: socket state (`TCP_ESTABLISHED`, ...), as the kernel names it.
    pub tcp_state: Option<String>,
    /// Kernel `sk_buff` address: joins events about the same packet. Kept as the number (the
    /// analyzer matches on it); written as hex text (`0xffff888100b84a00`) in the log.
    #[serde(default, with = "crate::hex::serde_opt")]
    pub skb: Option<u64>,
    /// `lost` events: how many events the kernel could not queue since the previous report.
    pub lost: Option<u64>,
    /// Kubernetes names of the flow's ends (`--k8s-snapshot`, the API, the node's own facts):
    /// pods by IP, the service by its ClusterIP:port or by a backend (after DNAT), nodes by the
    /// outer header of an encapsulated packet or by the pods' node.
    #[serde(flatten)]
    pub names: Attribution,
    /// The Kubernetes node this tracer runs on (`NODE_NAME`, else the hostname).
    pub node: Option<Arc<str>>,
    /// TCP retransmits: the segment's first sequence number. The same number re-sent at
    /// timeouts means nothing was acknowledged in between. (After `node`: fields are only ever
    /// added at the end of the line.)
    pub tcp_seq: Option<u32>,
    /// Kernel events: how many identical events this line stands for — 1, or more when a burst
    /// of the same event (same hook, place, flow and sizes, each within
    /// [`crate::run::fold::BURST_GAP_NS`] of the one before) was folded into this line, in the
    /// kernel or at the ring's edge; it then carries the time of the burst's last event. `None` on `lost` lines and in logs
    /// older than the field (read them as 1: [`Record::events`]).
    pub count: Option<u64>,
    /// The captured packet bytes, kept only for `--pcap` (`Names::keep_packets`); never in the
    /// JSON log (its decoded fields are).
    #[serde(skip)]
    pub packet: Option<Captured>,
}

/// Where the event happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Shared per name (`hooks::Interned`): no copy per event.
    pub ifname: Option<Arc<str>>,
    pub ifindex: Option<u32>,
    /// Network namespace inode.
    pub netns: Option<u32>,
}

/// How big the packet was, and the MTU it met.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// `skb->len`: the packet as the kernel held it (may include the L2 header).
    pub len: Option<u32>,
    /// Length from the network header on.
    pub l3_len: Option<u32>,
    /// Device MTU, or the MTU an ICMP message advertises (`mtu_source`).
    pub mtu: Option<u32>,
    pub mtu_source: Option<MtuSource>,
    pub gso_size: Option<u32>,
    pub gso_segs: Option<u32>,
}

/// Drops: why the kernel freed the packet, and why the filter kept the event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCause {
    /// Reason name from the running kernel's BTF (`PKT_TOO_BIG`, `NOT_SPECIFIED`, ...). Shared
    /// with the reason table: no copy per drop.
    pub reason: Option<Arc<str>>,
    pub reason_code: Option<u32>,
    /// `symbol+0xoffset` from /proc/kallsyms. Shared per address (`hooks::Interned`): no copy
    /// per drop.
    pub location: Option<Arc<str>>,
    /// Why the default filter kept it; empty with `--all-drops` when none applies.
    #[serde(default)]
    pub matched: MatchedSet,
}

/// The devices the packet was headed for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Output device of the packet's route, when the kernel had one.
    pub out_ifname: Option<Arc<str>>,
    pub out_ifindex: Option<u32>,
    pub out_mtu: Option<u32>,
    /// veth drops: the peer device that refused the packet (its MTU is the one that failed).
    pub peer_ifname: Option<Arc<str>>,
    pub peer_ifindex: Option<u32>,
    pub peer_mtu: Option<u32>,
}

/// The transport flow, innermost (the pod flow when encapsulated; for an ICMP too-big, the
/// quoted packet's), and the outer header of an encapsulated packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFields {
    pub proto: Option<u8>,
    pub src: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dst: Option<IpAddr>,
    pub dport: Option<u16>,
    pub outer: Option<Outer>,
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
            ts_unix_ns,
            kind,
            hook: Cow::Borrowed(hook),
            device: Device::default(),
            size: Size::default(),
            drop: DropCause::default(),
            route: Route::default(),
            flow: FlowFields::default(),
            icmp: None,
            tcp_state: None,
            tcp_seq: None,
            count: None,
            skb: None,
            lost: None,
            names: Attribution::default(),
            node: node::current(),
            packet: None,
        }
    }

    /// How many kernel events the record stands for (`count`; 1 in logs older than it).
    pub fn events(&self) -> u64 {
        self.count.unwrap_or(1)
    }

    /// Whether any Kubernetes name is known for this event.
    pub fn has_names(&self) -> bool {
        self.names.any()
    }

    /// Fill the flow fields from decoded packet headers.
    pub fn set_decoded(&mut self, d: &Decoded) {
        if let Some(f) = &d.flow {
            self.flow.proto = Some(f.proto);
            self.flow.src = Some(f.src);
            self.flow.sport = f.sport;
            self.flow.dst = Some(f.dst);
            self.flow.dport = f.dport;
        }
        if d.outer.is_some() {
            self.flow.outer = d.outer.clone();
        }
        if d.icmp.is_some() {
            self.icmp = d.icmp.clone();
        }
    }

    /// `drop.matched` has `m`.
    pub fn matched(&self, m: Matched) -> bool {
        self.drop.matched.contains(m)
    }

    /// One line of an event log. `kind: "verdict"` lines (the daemon's verdicts) are
    /// [`LineError::Verdict`]: not events.
    pub fn from_line(line: &[u8]) -> Result<Record, LineError> {
        match serde_json::from_slice(line) {
            Ok(rec) => Ok(rec),
            Err(e) => {
                /// What a line that is no record says it is.
                #[derive(Deserialize)]
                struct Head {
                    kind: Option<String>,
                    ts: Option<serde_json::Value>,
                }
                Err(match serde_json::from_slice::<Head>(line) {
                    Ok(Head { kind: Some(k), .. }) if k == "verdict" => LineError::Verdict,
                    Ok(Head { kind: Some(k), .. }) if k == start::KIND => LineError::Start,
                    Ok(Head { kind: Some(k), .. }) if k == probe::KIND => LineError::Probe,
                    Ok(Head { kind: Some(k), .. }) if k == arrivals::KIND => LineError::Arrivals,
                    Ok(Head { kind: Some(k), .. }) if k == crate::fix::CNI_LINE_KIND => {
                        LineError::Cni
                    }
                    Ok(Head { kind: Some(k), .. })
                        if !Kind::ALL.iter().any(|a| a.as_str() == k) =>
                    {
                        LineError::UnknownKind(k)
                    }
                    // An event whose time is text but no RFC 3339 time.
                    Ok(Head {
                        ts: Some(serde_json::Value::String(ts)),
                        ..
                    }) if crate::time::parse_rfc3339(&ts).is_none() => LineError::BadTimestamp(ts),
                    _ => LineError::NotAnEvent(e.to_string()),
                })
            }
        }
    }
}

/// Why a log line is no event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    NotAnEvent(String),
    /// A verdict the daemon wrote (`tracer report` recomputes them).
    Verdict,
    /// The run's [`start::Start`] line: what it watched and could not see.
    Start,
    /// A path-MTU measurement the run made ([`probe::Probe`]).
    Probe,
    /// What arrived from a peer in a window ([`arrivals::Arrivals`]).
    Arrivals,
    /// The CNI install the live API showed ([`crate::fix::CniLine`]).
    Cni,
    UnknownKind(String),
    BadTimestamp(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::NotAnEvent(e) => write!(f, "not an event: {e}"),
            LineError::Verdict => write!(f, "a verdict, not an event"),
            LineError::Start => write!(f, "the run's start line, not an event"),
            LineError::Probe => write!(f, "a probe, not an event"),
            LineError::Arrivals => write!(f, "arrivals from a peer, not an event"),
            LineError::Cni => write!(f, "the CNI install, not an event"),
            LineError::UnknownKind(k) => write!(f, "unknown kind `{k}`"),
            LineError::BadTimestamp(ts) => write!(f, "bad timestamp `{ts}`"),
        }
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod matched_set_tests {
    use super::{Matched, MatchedSet};

    /// Written in declaration order whatever order it was filled in; a log's list in another
    /// order, or with a repeat, reads as the same set.
    #[test]
    fn matched_is_a_set_written_in_declaration_order() {
        let set: MatchedSet = [Matched::IcmpTooBig, Matched::Reason, Matched::Oversize].into();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["reason","oversize","icmp_too_big"]"#
        );
        assert!(set.contains(Matched::Oversize) && !set.contains(Matched::Location));
        let read: MatchedSet =
            serde_json::from_str(r#"["oversize","icmp_too_big","reason","oversize"]"#).unwrap();
        assert_eq!(read, set);
        let empty: MatchedSet = serde_json::from_str("[]").unwrap();
        assert!(empty.is_empty());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
        assert_eq!(format!("{set:?}"), "[Reason, Oversize, IcmpTooBig]");
    }
}
