//! From events to a verdict: correlate size drops, ICMP too-big and retransmissions into
//! problems, each with where packets die, the evidence, the largest size that passes and the
//! fix with numbers.
//!
//! The same [`Analyzer`] runs live in the daemon (fed every [`Record`]) and offline in
//! `tracer report` (fed the records of an exported log), so both say the same thing.
//!
//! Vocabulary:
//! - a *site* is where packets die: a network namespace, a device, a kernel function and the
//!   MTU that refused them;
//! - a *connection* is one transport 5-tuple as events saw it; the same TCP connection seen
//!   before and after a service's DNAT shares (protocol, source, source port), which is how
//!   a pod's retransmissions are joined with the drops of its packets further on;
//! - a *path* groups the connections between the same two nodes over the same overlay: one
//!   verdict per path.

mod analyze;
pub mod cluster;
mod render;
pub mod stages;

pub use analyze::{Analyzer, ProbeWant};
pub use render::render;

use std::net::IpAddr;

use serde::Serialize;

use crate::event::{Encap, ObjectRef, ServiceRef};

/// How sure and how bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing size-related seen.
    Ok,
    /// Packets were too big but the senders adapted (path-MTU discovery worked).
    Info,
    /// Retransmissions look like a black hole, but nothing on this node saw a size problem.
    Suspected,
    /// Packets keep dying for their size: connections hang.
    Problem,
}

/// What was found. JSONL `problem`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// No size drops, no ICMP too-big, no full-size retransmissions at timeout intervals.
    None,
    /// Packets too big for the path keep dying: the senders never learn a size that fits.
    MtuBlackHole,
    /// Packets were too big, the kernel said so (ICMP) and the senders shrank.
    PmtudRecovered,
    /// Full-size segments retransmitted at timeout intervals with no size event on this node:
    /// they die beyond it (a router whose ICMP is filtered, a smaller MTU on the far node).
    SuspectedBlackHole,
    /// Packets died beyond this node and no ICMP came, but TCP MTU probing found a size that
    /// passes: transfers get through after seconds of timeouts.
    ProbingRecovered,
    /// Packets too big were refused and the senders shrank, but the run ended before it could
    /// be seen whether the smaller size passes further on: not "works" until it does.
    Unconfirmed,
}

/// How a verdict is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// From what was seen where packets die: a drop, an ICMP generated or dropped.
    Observed,
    /// From timing alone: retransmissions at timeout intervals, sizes that shrank; the packets
    /// die where this node cannot see.
    Inferred,
    /// From an active measurement (a path-MTU probe).
    Measured,
}

/// Where packets die and why, with the arithmetic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Site {
    /// Network namespace inode of the event, and its name when the run knows it.
    pub netns: Option<u32>,
    pub netns_name: Option<String>,
    /// Device the packet was on when it died.
    pub device: Option<String>,
    /// Kernel function (`ip_forward`, `__dev_forward_skb2`, ...), without offset.
    pub location: Option<String>,
    pub reason: Option<String>,
    /// Largest packet size seen dying here (IP length as it was here: outer if encapsulated).
    pub packet_len: u32,
    /// The MTU that refused it, and what it is (`peer eth0`, `route via to-new`, ...).
    pub limit_mtu: Option<u32>,
    pub limit_source: Option<String>,
    /// Encapsulation of the packets dying here and its overhead.
    pub overlay: Option<Encap>,
    pub overhead: u32,
    /// Largest pod packet that fits here: `limit_mtu − overhead`.
    pub largest_passing: Option<u32>,
    /// Packets that died here (a fragment and its original counted once).
    pub packets: u64,
    /// ICMP too-big the kernel generated here for these packets, and the MTU it advertised.
    pub icmp_sent: u64,
    pub icmp_mtu: Option<u32>,
    /// The senders stopped sending packets this size after the ICMP.
    pub recovered: bool,
    /// The node whose tracer saw it (its records' `node`).
    pub node: Option<String>,
}

/// One affected connection (or several of the same pods/service, aggregated).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowSummary {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: Option<u16>,
    pub dst: IpAddr,
    pub dport: Option<u16>,
    pub src_pod: Option<ObjectRef>,
    pub dst_pod: Option<ObjectRef>,
    pub service: Option<ServiceRef>,
    /// Packets of this connection that died for their size; the largest and smallest pod
    /// packet sizes that died.
    pub dropped: u64,
    pub largest_failed: Option<u32>,
    pub smallest_failed: Option<u32>,
    /// The smallest MTU an ICMP too-big told this connection's sender (its pod or its node).
    pub icmp_mtu: Option<u32>,
    /// TCP retransmissions, and how many came at timeout intervals (≥ 150 ms apart).
    pub retransmits: u64,
    pub timeout_retransmits: u64,
    /// The sender shrank its packets after an ICMP too-big.
    pub size_reduced: bool,
    /// The smallest path MTU the sender's socket recorded (`pmtu_update` events): the ICMP
    /// too-big reached its stack. Null when none was seen (or the hook was not attached).
    pub pmtu_learned: Option<u32>,
    /// Still dying at the end (drops or timeout retransmissions after the last ICMP).
    pub stuck: bool,
    /// The TCP segment size (payload) the sender retransmits at the end: what it sends now.
    /// Null without retransmissions.
    pub segment: Option<u32>,
    /// First and last event of the connection (RFC 3339).
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
}

/// Counts behind a verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub dropped_packets: u64,
    pub icmp_sent: u64,
    pub icmp_received: u64,
    /// ICMP too-big messages dropped on the way (a firewall eating path-MTU discovery).
    pub icmp_dropped: u64,
    pub oversize_tx: u64,
    pub retransmits: u64,
    pub timeout_retransmits: u64,
    /// Connections that shrank their packets after an ICMP too-big.
    pub size_reductions: u64,
    /// Path-MTU updates the kernel recorded for these connections' sockets or destinations
    /// (`pmtu_update` events).
    pub pmtu_learned: u64,
    pub connections: u64,
    /// Events the kernel could not queue: evidence that may be missing.
    pub lost_events: u64,
    /// Events of connections beyond the analysis' limit (65,536 connections): counted only.
    pub untracked_events: u64,
}

/// The nodes a problem lies between and the encapsulation on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PathRef {
    pub src_node: Option<String>,
    pub dst_node: Option<String>,
    pub overlay: Option<Encap>,
    pub overhead: u32,
}

/// One verdict: JSONL `kind: "verdict"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub ts: String,
    pub kind: &'static str,
    /// `live` (printed while tracing, once the evidence is strong) or `final` (end of run).
    pub stage: &'static str,
    pub severity: Severity,
    pub problem: Problem,
    /// One sentence.
    pub summary: String,
    pub path: PathRef,
    pub sites: Vec<Site>,
    pub flows: Vec<FlowSummary>,
    pub evidence: Evidence,
    /// The smallest MTU that refused packets on the path (outer size), when known.
    pub path_mtu: Option<u32>,
    /// Largest pod packet that passes end to end.
    pub largest_passing: Option<u32>,
    /// The pod MTU to configure.
    pub recommended_mtu: Option<u32>,
    pub fix: Option<String>,
    /// The fix as a ready change for the CNI in use (patch, commands, what follows): when the
    /// run knew the CNI's objects and the verdict has a recommended MTU.
    pub change: Option<crate::fix::Change>,
    pub stopgap: Option<String>,
    /// Time covered by the evidence (RFC 3339), and the run's length in seconds.
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    pub observed_s: f64,
    /// The configuration audit's problems at the start of the run (`tracer check` without the
    /// probe), as arithmetic; empty for `tracer report`, which has no node to audit.
    pub audit: Vec<String>,
    /// How the verdict is known (`observed`, `inferred`, `measured`).
    pub confidence: Confidence,
    /// What the run could not see, where the evidence is thin (inferred, or none): the hooks
    /// that did not attach, and what lies beyond the watched namespaces.
    pub not_seen: Vec<String>,
    /// The node whose evidence this is (its start line's `node`); null when unknown and for a
    /// verdict joined from several nodes' logs (see `nodes`).
    pub node: Option<String>,
    /// Where the packets die, from the logs of both ends (`tracer report` of several nodes):
    /// on the sender's node, on the receiver's node, or between them. Null from one node's
    /// view, which cannot tell the last two apart.
    #[serde(rename = "where")]
    pub dies_at: Option<DiesAt>,
    /// Each node's part of a joined verdict: what its tracer saw of this path.
    pub nodes: Vec<NodeView>,
    /// How far apart the nodes' clocks appear when their logs do not cover the same time
    /// (seconds, the receiver's minus the sender's); null when they overlap.
    pub clock_skew_s: Option<f64>,
}

/// Where packets die, once both ends were heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiesAt {
    /// The sending node refused them (a site on it).
    SenderNode,
    /// They reached the receiving node and died there.
    ReceiverNode,
    /// Sent, never arrived: the underlay between the nodes (a router, a link).
    Between,
}

/// What one node's tracer saw of a path (joined verdicts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub node: String,
    /// `sender`, `receiver` or `other` on this path.
    pub role: &'static str,
    /// Its own verdict on the path (`none` when it saw nothing of it).
    pub severity: Option<Severity>,
    pub problem: Option<Problem>,
    /// Size drops, ICMP too-big generated and received, retransmissions it saw on the path.
    pub dropped_packets: u64,
    pub icmp_sent: u64,
    pub icmp_received: u64,
    pub retransmits: u64,
    /// The largest outer packet it saw the sender send and die (sender) or that it received
    /// from the sender (receiver, from `arrivals`), and how many arrived.
    pub largest_sent: Option<u32>,
    pub largest_arrived: Option<u32>,
    pub arrived_packets: Option<u64>,
    /// A path-MTU probe it made toward the far end (`largest_ok`).
    pub probe_path_mtu: Option<u32>,
}

#[cfg(test)]
mod tests;
