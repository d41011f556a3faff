//! One verdict per path from several nodes' logs (`tracer report nodeA.jsonl nodeB.jsonl`).
//!
//! Each node's records are first judged alone, by the same [`super::Analyzer`] as ever: that is
//! its view, weaker but not wrong. The join then puts each path's views side by side: the
//! sender's node (its retransmissions, the sizes it sent, its sites, its probes) and the
//! receiver's node (its sites, and its `arrivals`: what came in from the sender). Where packets
//! die follows from what each end saw:
//! - a site where packets still die, on either node: there (observed);
//! - the sender sent packets of size S that keep dying and the receiver's uplink got nothing
//!   that large from it: between them, in the underlay (observed from both ends);
//! - they did arrive that large: on the receiving node, past its uplink.
//!
//! Clocks: the nodes' timestamps are compared only to pick the receiver's arrivals of the time
//! the sender's packets died, with a tolerance of [`CLOCK_TOLERANCE_NS`]; logs that do not
//! overlap within it are reported as skewed and not joined by time.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Confidence, DiesAt, Evidence, NodeView, PathRef, Problem, Severity, Verdict};
use crate::event::arrivals::Arrivals;
use crate::event::probe::Probe;
use crate::event::Encap;
use crate::time::{parse_rfc3339, rfc3339_nanos};

/// How far apart two nodes' clocks may be and their logs still be joined by time.
pub const CLOCK_TOLERANCE_NS: i128 = 30_000_000_000;
/// IPv4 + TCP headers around a segment.
const TCP_IP_HEADERS: u32 = 40;
const TCP_IP6_HEADERS: u32 = 60;
/// The smallest MTU IPv6 allows: below it no size is worth offering as a pod MTU.
const IPV6_MIN_MTU: u32 = 1280;

/// One node's log, read and judged alone.
#[derive(Debug, Default)]
pub struct NodeLog {
    pub node: String,
    /// Its own verdicts (as `tracer report` of its log alone gives them).
    pub verdicts: Vec<Verdict>,
    pub arrivals: Vec<Arrivals>,
    /// Its own underlay addresses: its start line's, and the `local` of its arrivals.
    pub addresses: BTreeSet<IpAddr>,
    pub probes: Vec<Probe>,
    /// The first and last time anything in its log was stamped.
    pub span: Option<(i128, i128)>,
}

impl NodeLog {
    /// Whether `endpoint` (a node name or an address, as a path names its ends) is this node.
    fn is(&self, endpoint: &str) -> bool {
        endpoint == self.node
            || endpoint
                .parse::<IpAddr>()
                .is_ok_and(|a| self.addresses.contains(&a))
    }
}

/// A path by its ends: the nodes among the logs (index), and their names.
type PathKey = (Option<usize>, Option<usize>, String, String);

/// A path's two ends as the join knows them.
struct Ends {
    src: Option<usize>,
    dst: Option<usize>,
    /// The path's own words for its ends, for those not among the logs.
    path: PathRef,
}

/// The joined verdicts of several nodes' logs: one per path, most severe first.
pub fn join(nodes: &[NodeLog], now: i128) -> Vec<Verdict> {
    let resolve =
        |endpoint: Option<&String>| endpoint.and_then(|e| nodes.iter().position(|n| n.is(e)));
    // Each node's verdicts on a path, grouped by the path's ends.
    let mut paths: BTreeMap<PathKey, Vec<(usize, &Verdict)>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for v in n.verdicts.iter().filter(|v| v.severity > Severity::Ok) {
            let mut src = resolve(v.path.src_node.as_ref());
            let dst = resolve(v.path.dst_node.as_ref());
            // Retransmissions are seen where they are sent: a path whose sender is not named
            // and whose flows retransmit starts at the node that saw them.
            if src.is_none() && v.flows.iter().any(|f| f.retransmits > 0) {
                src = Some(i);
            }
            let label = |end: Option<usize>, named: &Option<String>| match end {
                Some(k) => nodes[k].node.clone(),
                None => named.clone().unwrap_or_default(),
            };
            let key = (
                src,
                dst,
                label(src, &v.path.src_node),
                label(dst, &v.path.dst_node),
            );
            paths.entry(key).or_default().push((i, v));
        }
    }
    let mut out: Vec<Verdict> = paths
        .into_iter()
        .map(|((src, dst, _, _), views)| {
            let base = views[0].1;
            joined(
                nodes,
                &Ends {
                    src,
                    dst,
                    path: base.path.clone(),
                },
                &views,
                now,
            )
        })
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v.severity));
    if out.is_empty() {
        out.push(healthy(nodes, now));
    }
    out
}

/// The overlay the path's packets go into: the path's own, else the tunnel device whose MTU
/// refused them at a site (`MTU of vxlan.calico`): past it they are encapsulated.
fn overlay_of(v: &Verdict) -> Option<(Encap, u32)> {
    if let Some(e) = v.path.overlay {
        return Some((e, v.path.overhead));
    }
    v.sites.iter().find_map(|s| {
        let device = s.limit_source.as_deref()?.strip_prefix("MTU of ")?;
        // The CNIs' tunnel names (as `Iface::is_tunnel` knows them).
        let (encap, overlay) = match device {
            "tunl0" => (Encap::Ipip, crate::mtu::Overlay::Ipip),
            "vxlan.calico" | "flannel.1" | "cilium_vxlan" => {
                (Encap::Vxlan, crate::mtu::Overlay::Vxlan)
            }
            _ => return None,
        };
        let v6 = v.flows.first().is_some_and(|f| f.src.is_ipv6());
        Some((encap, overlay.overhead(v6)))
    })
}

/// The outer size of the packets a sender's stuck flows send now (what keeps dying), and
/// whether it is exact: the MTU an ICMP told a sender that shrank (TCP fills its segments up to
/// it, options included), else the largest size seen dying; else only a lower bound, the
/// segment it retransmits plus the bare TCP/IP headers (options such as timestamps add 12 B).
fn sent_outer(v: &Verdict) -> Option<(u32, bool)> {
    v.flows
        .iter()
        .filter(|f| f.stuck)
        .filter_map(|f| {
            let headers = if f.src.is_ipv6() {
                TCP_IP6_HEADERS
            } else {
                TCP_IP_HEADERS
            };
            f.icmp_mtu
                .filter(|_| f.size_reduced)
                .or(f.largest_failed)
                .map(|exact| (exact, true))
                .or(f.segment.map(|s| (s + headers, false)))
        })
        .max()
        .map(|(inner, exact)| (inner + overlay_of(v).map_or(0, |(_, o)| o), exact))
}

/// When the sender's flows on the path were seen (their first and last events).
fn failure_window(v: &Verdict) -> Option<(i128, i128)> {
    let times = |pick: fn(&super::FlowSummary) -> &Option<String>| {
        v.flows
            .iter()
            .filter_map(move |f| pick(f).as_deref().and_then(parse_rfc3339))
    };
    Some((times(|f| &f.first_ts).min()?, times(|f| &f.last_ts).max()?))
}

/// What the receiver got from the sender around `window` (its clock, with the tolerance).
struct Arrived {
    packets: u64,
    largest: u32,
    windows: usize,
}

fn arrived_from(
    receiver: &NodeLog,
    sender_addrs: &BTreeSet<IpAddr>,
    window: (i128, i128),
) -> Arrived {
    let mut got = Arrived {
        packets: 0,
        largest: 0,
        windows: 0,
    };
    for a in &receiver.arrivals {
        if !a.peer.is_some_and(|p| sender_addrs.contains(&p)) {
            continue;
        }
        let (Some(first), Some(end)) = (parse_rfc3339(&a.first_ts), parse_rfc3339(&a.ts)) else {
            continue;
        };
        if end < window.0 - CLOCK_TOLERANCE_NS || first > window.1 + CLOCK_TOLERANCE_NS {
            continue;
        }
        got.windows += 1;
        got.packets += a.packets;
        got.largest = got.largest.max(a.max_len);
    }
    got
}

/// The addresses a node is known by: its own, and the path's word for it when an address.
fn addresses_of(nodes: &[NodeLog], end: Option<usize>, named: &Option<String>) -> BTreeSet<IpAddr> {
    let mut out: BTreeSet<IpAddr> = end.map(|k| nodes[k].addresses.clone()).unwrap_or_default();
    out.extend(named.as_deref().and_then(|n| n.parse::<IpAddr>().ok()));
    out
}

/// Whether two logs cover the same time, within the tolerance; else the receiver's start minus
/// the sender's (the skew, or the tracers did not run together).
fn skew(a: &NodeLog, b: &NodeLog) -> Option<f64> {
    let ((a0, a1), (b0, b1)) = (a.span?, b.span?);
    let apart = b0 > a1 + CLOCK_TOLERANCE_NS || a0 > b1 + CLOCK_TOLERANCE_NS;
    apart.then(|| (b0 - a0) as f64 / 1e9)
}

fn joined(nodes: &[NodeLog], ends: &Ends, views: &[(usize, &Verdict)], now: i128) -> Verdict {
    let path = &ends.path;
    let name = |end: Option<usize>, named: &Option<String>| match end {
        Some(k) => nodes[k].node.clone(),
        None => named.clone().unwrap_or_else(|| "?".into()),
    };
    let src_name = name(ends.src, &path.src_node);
    let dst_name = name(ends.dst, &path.dst_node);
    // The sender's own view leads (it saw its flows); else the most severe.
    let lead = views
        .iter()
        .find(|(i, _)| Some(*i) == ends.src)
        .or_else(|| views.iter().max_by_key(|(_, v)| v.severity))
        .expect("a path has a view");
    let mut v = lead.1.clone();
    v.ts = rfc3339_nanos(now);
    v.node = None;
    // An end the path did not name but the join knows (the node whose log has the senders'
    // retransmissions) is named by its node.
    if v.path.src_node.is_none() {
        v.path.src_node = ends.src.map(|k| nodes[k].node.clone());
    }
    if v.path.dst_node.is_none() {
        v.path.dst_node = ends.dst.map(|k| nodes[k].node.clone());
    }
    // Every node's sites, the lead's first.
    for (i, other) in views.iter().filter(|(i, _)| *i != lead.0) {
        for s in &other.sites {
            let mut s = s.clone();
            s.node = s.node.or_else(|| Some(nodes[*i].node.clone()));
            v.sites.push(s);
        }
        v.evidence = add(&v.evidence, &other.evidence);
        for f in &other.flows {
            if !v
                .flows
                .iter()
                .any(|g| (g.proto, g.src, g.sport) == (f.proto, f.src, f.sport))
            {
                v.flows.push(f.clone());
            }
        }
        v.severity = v.severity.max(other.severity);
        for b in &other.not_seen {
            if !v.not_seen.contains(b) {
                v.not_seen.push(b.clone());
            }
        }
    }
    for s in v.sites.iter_mut() {
        if s.node.is_none() {
            s.node = Some(nodes[lead.0].node.clone());
        }
    }

    let sender = ends.src.map(|k| &nodes[k]);
    let receiver = ends.dst.map(|k| &nodes[k]);
    let sent = sent_outer(&v);
    let overlay = overlay_of(&v).map_or(String::new(), |(e, _)| format!(" {}", overlay_name(e)));
    // Where: a site where packets still die, on one of the ends.
    let dying_site = v.sites.iter().find(|s| !s.recovered && s.packets > 0);
    let mut clock_skew = None;
    let mut where_words = None;
    // A link whose receiving end is the receiver's uplink (the sender's kernel drops what the
    // far end of a veth cannot take; on hardware the far NIC would): the receiver's node, when
    // its arrivals show that device taking packets from the sender.
    let from = addresses_of(nodes, ends.src, &path.src_node);
    let far_end = dying_site.and_then(|s| {
        let device = s
            .limit_source
            .as_deref()?
            .strip_prefix("MTU of the receiving end ")?;
        receiver?
            .arrivals
            .iter()
            .any(|a| a.device == device && a.peer.is_some_and(|p| from.contains(&p)))
            .then_some((device, s.limit_mtu))
    });
    v.dies_at = match dying_site {
        Some(_) if far_end.is_some() => Some(DiesAt::ReceiverNode),
        Some(s) if s.node.as_deref() == Some(src_name.as_str()) => Some(DiesAt::SenderNode),
        Some(s) if s.node.as_deref() == Some(dst_name.as_str()) => Some(DiesAt::ReceiverNode),
        _ => None,
    };
    if let Some(d) = v.dies_at {
        let s = dying_site.expect("a site");
        let at = format!(
            "{} {}",
            s.device.as_deref().unwrap_or("?"),
            s.location.as_deref().unwrap_or("?")
        );
        where_words = Some(match (d, far_end) {
            (_, Some((device, mtu))) => format!(
                "entering the receiving node {dst_name}: its {device}{} takes less than the \
                 {}-byte packets {src_name} sends over the link (the drops were seen on \
                 {src_name} at {at})",
                mtu.map_or(String::new(), |m| format!(" (MTU {m})")),
                s.packet_len
            ),
            (DiesAt::SenderNode, None) => format!("on the sending node {src_name} ({at})"),
            _ => format!("on the receiving node {dst_name} ({at})"),
        });
    }
    // What the receiver got from the sender while its flows failed: only from logs that cover
    // the same time, and a sender whose addresses are known.
    let window = failure_window(&v);
    let skewed = sender.zip(receiver).and_then(|(s, r)| skew(s, r));
    let got = match (receiver, window) {
        (Some(r), Some(w)) if !r.arrivals.is_empty() && !from.is_empty() && skewed.is_none() => {
            Some(arrived_from(r, &from, w))
        }
        _ => None,
    };
    if let Some(off) = skewed {
        clock_skew = Some(off);
        v.not_seen.push(format!(
            "the logs of {src_name} and {dst_name} do not cover the same time ({dst_name}'s \
             starts {off:+.0} s from {src_name}'s): their clocks differ or the tracers did not \
             run together, so what {dst_name} received is not joined with what {src_name} sent"
        ));
    }
    let still_dying = v.severity >= Severity::Suspected;
    if v.dies_at.is_none() && still_dying && skewed.is_none() {
        match (receiver, &got) {
            (None, _) => v.not_seen.push(format!(
                "no log from the receiving node {dst_name}: whether the packets reach it is not \
                 known"
            )),
            (Some(r), _) if r.arrivals.is_empty() => v.not_seen.push(format!(
                "{dst_name}'s log has no `arrivals` lines (its tracer predates them, its uplink \
                 hook did not attach, or --arrivals-interval 0): whether the packets reach it is \
                 not known"
            )),
            _ if from.is_empty() => v.not_seen.push(format!(
                "{src_name}'s own addresses are not known (its log has neither a start line with \
                 `addresses` nor `arrivals`): what {dst_name} received from it cannot be told"
            )),
            (Some(_), Some(got)) => match sent {
                Some((size, _)) if got.largest < size => {
                    v.dies_at = Some(DiesAt::Between);
                    where_words = Some(format!(
                        "between {src_name} and {dst_name}, in the underlay: {src_name} sends \
                         {size}-byte{overlay} packets and {dst_name} received nothing above {} B \
                         from it ({} packets arrived{}): a router or link on the way, or \
                         {dst_name}'s own NIC if its MTU is below {size} (a NIC drops what it \
                         cannot take before any hook sees it)",
                        got.largest,
                        got.packets,
                        if got.windows == 0 {
                            ", none while these flows were failing"
                        } else {
                            ""
                        }
                    ));
                }
                // Only an exact size: a bound below the real one proves nothing arrived whole.
                Some((size, false)) => v.not_seen.push(format!(
                    "the size {src_name} sends is known only as at least {size} B (its \
                     retransmitted segments plus bare headers) and {dst_name} received up to {} B \
                     from it: not conclusive about where the packets die",
                    got.largest
                )),
                Some((size, true)) => {
                    v.dies_at = Some(DiesAt::ReceiverNode);
                    where_words = Some(format!(
                        "on the receiving node {dst_name}, past its uplink: {size}-byte packets \
                         from {src_name} arrived there (up to {} B), so they die further in, \
                         where its tracer did not watch",
                        got.largest
                    ));
                }
                None => v.not_seen.push(format!(
                    "the size {src_name} sends was not seen (no retransmission sizes): not \
                     compared with what {dst_name} received (up to {} B)",
                    got.largest
                )),
            },
            _ => {}
        }
    }
    if v.dies_at == Some(DiesAt::Between) {
        // Seen at both ends: sent, never arrived. Not a suspicion any more.
        if v.problem == Problem::SuspectedBlackHole {
            v.problem = Problem::MtuBlackHole;
        }
        v.severity = v.severity.max(Severity::Problem);
        if v.confidence == Confidence::Inferred {
            v.confidence = Confidence::Observed;
            v.not_seen
                .retain(|b| !b.starts_with("packets that die outside"));
        }
        if let (None, Some(largest)) = (
            v.recommended_mtu,
            got.as_ref().map(|g| g.largest).filter(|l| *l > 0),
        ) {
            let overhead = overlay_of(&v).map_or(0, |(_, o)| o);
            let sent = sent.map_or(0, |(s, _)| s);
            // A size seen passing is safe, but the small requests that passed say little: only
            // a size an MTU could sensibly be is offered as one.
            let safe = largest.saturating_sub(overhead);
            let offer = if safe >= IPV6_MIN_MTU {
                format!(", or set the pod MTU to {safe} (seen passing: {largest} − {overhead} B of overlay) at once")
            } else {
                String::new()
            };
            v.fix = Some(format!(
                "the path MTU between {src_name} and {dst_name} is at least {largest} B (seen \
                 arriving) and below {sent} B (never arrived): measure it (`tracer check --netns \
                 <node>` probes it; `tracer run` without --no-probe does it by itself), set the \
                 pod MTU to it minus {overhead} B of overlay{offer}, and restart the pods"
            ));
        }
    }
    if let Some(w) = &where_words {
        v.summary = format!("Packets die {w}. {}", v.summary);
    }
    v.clock_skew_s = clock_skew;
    v.nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let own = views.iter().find(|(k, _)| *k == i).map(|(_, v)| *v);
            let role = if Some(i) == ends.src {
                "sender"
            } else if Some(i) == ends.dst {
                "receiver"
            } else {
                "other"
            };
            NodeView {
                node: n.node.clone(),
                role,
                severity: own.map(|o| o.severity),
                problem: own.map(|o| o.problem),
                dropped_packets: own.map_or(0, |o| o.evidence.dropped_packets),
                icmp_sent: own.map_or(0, |o| o.evidence.icmp_sent),
                icmp_received: own.map_or(0, |o| o.evidence.icmp_received),
                retransmits: own.map_or(0, |o| o.evidence.retransmits),
                largest_sent: own
                    .filter(|_| role == "sender")
                    .and_then(sent_outer)
                    .map(|(s, _)| s),
                largest_arrived: got
                    .as_ref()
                    .filter(|_| role == "receiver")
                    .map(|g| g.largest),
                arrived_packets: got
                    .as_ref()
                    .filter(|_| role == "receiver")
                    .map(|g| g.packets),
                probe_path_mtu: n
                    .probes
                    .iter()
                    .filter(|p| p.status == "ok")
                    .filter_map(|p| p.path_mtu)
                    .min(),
            }
        })
        .collect();
    v
}

fn overlay_name(e: Encap) -> &'static str {
    match e {
        Encap::Ipip => crate::mtu::Overlay::Ipip.name(),
        Encap::Vxlan => crate::mtu::Overlay::Vxlan.name(),
    }
}

fn add(a: &Evidence, b: &Evidence) -> Evidence {
    Evidence {
        dropped_packets: a.dropped_packets + b.dropped_packets,
        icmp_sent: a.icmp_sent + b.icmp_sent,
        icmp_received: a.icmp_received + b.icmp_received,
        icmp_dropped: a.icmp_dropped + b.icmp_dropped,
        oversize_tx: a.oversize_tx + b.oversize_tx,
        retransmits: a.retransmits + b.retransmits,
        timeout_retransmits: a.timeout_retransmits + b.timeout_retransmits,
        size_reductions: a.size_reductions + b.size_reductions,
        pmtu_learned: a.pmtu_learned + b.pmtu_learned,
        connections: a.connections + b.connections,
        lost_events: a.lost_events + b.lost_events,
        untracked_events: a.untracked_events + b.untracked_events,
    }
}

/// No node saw a size problem: one verdict for all of them, with what each received.
fn healthy(nodes: &[NodeLog], now: i128) -> Verdict {
    let mut v = nodes
        .iter()
        .find_map(|n| n.verdicts.first().cloned())
        .unwrap_or_else(|| super::Analyzer::new().verdicts(now, Some(0.0)).remove(0));
    v.ts = rfc3339_nanos(now);
    v.node = None;
    let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
    v.summary = format!(
        "no size drops, no ICMP too-big, no full-size retransmissions at timeout intervals on \
         any of the {} nodes ({}): not an MTU problem where the tracers looked",
        nodes.len(),
        names.join(", ")
    );
    v.evidence = nodes
        .iter()
        .flat_map(|n| n.verdicts.first())
        .fold(Evidence::default(), |acc, o| add(&acc, &o.evidence));
    v.audit = nodes
        .iter()
        .flat_map(|n| n.verdicts.iter().flat_map(|o| o.audit.iter()))
        .fold(Vec::new(), |mut acc, a| {
            if !acc.contains(a) {
                acc.push(a.clone());
            }
            acc
        });
    v.first_ts = nodes
        .iter()
        .filter_map(|n| n.span.map(|s| s.0))
        .min()
        .map(rfc3339_nanos);
    v.last_ts = nodes
        .iter()
        .filter_map(|n| n.span.map(|s| s.1))
        .max()
        .map(rfc3339_nanos);
    v.nodes = nodes
        .iter()
        .map(|n| NodeView {
            node: n.node.clone(),
            role: "other",
            severity: n.verdicts.first().map(|o| o.severity),
            problem: n.verdicts.first().map(|o| o.problem),
            largest_arrived: n.arrivals.iter().map(|a| a.max_len).max(),
            arrived_packets: (!n.arrivals.is_empty())
                .then(|| n.arrivals.iter().map(|a| a.packets).sum()),
            ..NodeView::default()
        })
        .collect();
    // Logs that do not overlap in time: say so, the "all quiet" may be of different times.
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            if let Some(off) = skew(a, b) {
                v.clock_skew_s = Some(off);
                v.not_seen.push(format!(
                    "the logs of {} and {} do not cover the same time ({}'s starts {off:+.0} s \
                     from {}'s): their clocks differ or the tracers did not run together",
                    a.node, b.node, b.node, a.node
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests;
