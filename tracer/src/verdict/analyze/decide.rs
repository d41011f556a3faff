//! From one path's connections to its verdict, one step per function, in the order they run:
//!
//! 1. [`Analyzer::judge`]: each connection's stage (from its sender's retransmissions, see
//!    `stages.rs`) and whether it dies further on; then [`is_stuck`] for each.
//! 2. [`path_problem`]: the path's problem and severity from its judged connections.
//! 3. [`Analyzer::sites`]: where packets died, and whether the senders adapted there.
//! 4. [`Analyzer::limits`]: what passes — the binding site, else the MTU the ICMP told, and a
//!    probe's measurement over either.
//! 5. [`Analyzer::explain`]: the words (`texts.rs`) and how it is known (observed, inferred,
//!    measured).
//!
//! [`Analyzer::verdict_for`] runs them and assembles the [`Verdict`].
use std::collections::HashSet;
use std::net::IpAddr;

use rustc_hash::FxHashMap as HashMap;

use super::texts::{
    beyond_fix_text, beyond_summary, fix_text, probing_summary, summary_text, unconfirmed_summary,
    Beyond,
};
use super::{Analyzer, ConnAcc, ConnKey, MAX_FLOWS};
use crate::event::probe::Probe;
use crate::fix::{Change, PodToRestart};
use crate::mtu::IPV6_MIN_MTU;
use crate::verdict::stages::{Outcome, ShrinkCause, Stages};
use crate::verdict::{
    Confidence, Evidence, FlowSummary, PathRef, Problem, Severity, Site, Verdict,
};

/// A connection as the verdict sees it: its sender's stage, and what that makes it on its path.
pub(super) struct Judged<'a> {
    pub key: ConnKey,
    pub acc: &'a ConnAcc,
    pub outcome: Outcome,
    /// Its sender's timeout retransmissions at full size, over every segment size.
    pub timeouts: u32,
    /// Shrank after an ICMP and is stuck again at the new size, with nothing on this node
    /// refusing it: its packets die further on.
    pub dies_beyond: bool,
    /// Its packets keep dying and it does not get past them ([`is_stuck`]).
    pub stuck: bool,
}

/// Whether a judged connection is stuck. `beyond`: some connection of its path dies beyond
/// this node.
fn is_stuck(j: &Judged, beyond: bool) -> bool {
    let c = j.acc;
    // Refused at this node again and again: in more than one sending attempt, or after it
    // was told the MTU.
    let refused_again = c.dropped > 0 && (c.repeat_episodes > 0 || c.drops_after_told > 0);
    // The ICMP that would have told it was dropped on the way, and it timed out.
    let never_told = c.icmp_dropped > 0 && j.timeouts > 0;
    match j.outcome {
        // Shrank after an ICMP, and the new size times out too.
        Outcome::StuckAfterShrink { .. } => true,
        // Backing off at its first size: dying at this node, or with the others whose packets
        // die beyond it.
        Outcome::StuckAtFirstSize { .. } => {
            c.dropped > 0 || c.icmp_dropped > 0 || beyond || refused_again || never_told
        }
        _ => refused_again || never_told,
    }
}

/// The path's problem, from its judged connections; the first that holds decides.
fn path_problem(judged: &[Judged]) -> (Severity, Problem) {
    let any = |f: &dyn Fn(&Judged) -> bool| judged.iter().any(f);
    // Refused here (a drop seen), or refused further on and told: an ICMP too-big reached the
    // sender (a router's, beyond this node's view). Either is a size event.
    let refused = any(&|j| j.acc.dropped > 0 || j.acc.icmp_received > 0);
    if any(&|j| j.stuck) {
        // A connection that does not get past its size: transfers hang.
        (Severity::Problem, Problem::MtuBlackHole)
    } else if any(
        &|j| matches!(j.outcome, Outcome::Progressing { last } if last.cause == ShrinkCause::Probing),
    ) {
        // Got through only when TCP's own probing lowered the size after timeouts.
        (Severity::Info, Problem::ProbingRecovered)
    } else if refused && any(&|j| matches!(j.outcome, Outcome::Undecided { .. })) {
        // Refused, shrank, and not watched long enough since to say whether the size passes.
        (Severity::Info, Problem::Unconfirmed)
    } else if refused {
        // Refused, told, adapted: path-MTU discovery works.
        (Severity::Info, Problem::PmtudRecovered)
    } else if any(&|j| j.acc.icmp_dropped > 0) {
        // Nothing too big seen here, but the ICMP that would tell the senders died.
        (Severity::Problem, Problem::MtuBlackHole)
    } else {
        // Only the timing of full-size retransmissions: they die beyond this node.
        (Severity::Suspected, Problem::SuspectedBlackHole)
    }
}

/// What passes on the path, and how it is known.
struct Limits<'a> {
    largest_passing: Option<u32>,
    path_mtu: Option<u32>,
    /// A probe the run made toward the path's pods: the largest size that got an answer.
    measured: Option<(u32, &'a Probe)>,
    recommended: Option<u32>,
}

/// The verdict's words and how sure it is.
struct Explained {
    summary: String,
    fix: Option<String>,
    stopgap: Option<String>,
    confidence: Confidence,
}

impl Analyzer {
    pub(super) fn verdict_for(
        &self,
        path: PathRef,
        conns: &[(ConnKey, &ConnAcc)],
        now: i128,
        observed_s: f64,
    ) -> Verdict {
        let judged = self.judge(conns, now);
        let (severity, problem) = path_problem(&judged);
        let sites = self.sites(&judged);
        let limits = self.limits(&path, &judged, &sites, problem);
        let words = self.explain(&path, &judged, &sites, problem, &limits);
        let confidence = words.confidence;
        let flows = self.flows(&judged);
        // A ready change only where something must change: a recovered path's fix is optional,
        // and a command to paste would say otherwise.
        let change = (severity >= Severity::Suspected)
            .then(|| self.change(&path, &flows, limits.recommended))
            .flatten();
        Verdict {
            ts: crate::time::rfc3339_nanos(now),
            kind: "verdict",
            stage: "final",
            severity,
            problem,
            summary: words.summary,
            evidence: self.evidence(&judged, &sites),
            flows,
            path,
            sites,
            path_mtu: limits.path_mtu,
            largest_passing: limits.largest_passing,
            recommended_mtu: limits.recommended,
            fix: words.fix,
            change,
            stopgap: words.stopgap,
            first_ts: self.first_ns.map(crate::time::rfc3339_nanos),
            last_ts: self.last_ns.map(crate::time::rfc3339_nanos),
            observed_s,
            audit: self.audit.clone(),
            confidence,
            not_seen: self.not_seen(confidence, problem),
            node: self.node(),
            dies_at: None,
            nodes: Vec::new(),
            clock_skew_s: None,
        }
    }

    /// Step 1: each connection's stage, whether it dies beyond this node, then whether it is
    /// stuck (which for a connection at its first size depends on the others).
    fn judge<'a>(&self, conns: &[(ConnKey, &'a ConnAcc)], now: i128) -> Vec<Judged<'a>> {
        let mut judged: Vec<Judged> = conns
            .iter()
            .map(|(k, c)| {
                let outcome = self.outcome(k, now);
                Judged {
                    key: *k,
                    acc: c,
                    timeouts: self.sender(k).map_or(0, Stages::total_timeouts),
                    dies_beyond: matches!(outcome, Outcome::StuckAfterShrink { .. })
                        && c.drops_after_told == 0,
                    outcome,
                    stuck: false,
                }
            })
            .collect();
        let beyond = judged.iter().any(|j| j.dies_beyond);
        for j in &mut judged {
            j.stuck = is_stuck(j, beyond) || self.measured_too_big(j);
        }
        judged
    }

    /// A connection that times out at a size a probe toward its destination measured not to
    /// pass: what timing alone only suspects, the measurement settles (packets die beyond this
    /// node, and no ICMP says so).
    fn measured_too_big(&self, j: &Judged) -> bool {
        let segment = match j.outcome {
            Outcome::StuckAtFirstSize { segment } => segment,
            Outcome::Retrying { segment, timeouts } if timeouts > 0 => segment,
            _ => return false,
        };
        // The smallest headers a segment travels with (IP and TCP without options): the
        // packet is at least this large.
        let headers = if j.key.dst.is_ipv6() { 60 } else { 40 };
        self.probes
            .iter()
            .filter(|p| p.status == "ok" && p.to == Some(j.key.dst))
            .filter_map(|p| p.path_mtu)
            .min()
            .is_some_and(|m| segment > 0 && segment + headers > m)
    }

    /// Step 3: the sites the connections died at, the binding constraint first.
    fn sites(&self, judged: &[Judged]) -> Vec<Site> {
        let by_key: HashMap<ConnKey, &Judged> = judged.iter().map(|j| (j.key, j)).collect();
        let mut sites: Vec<Site> = self
            .sites
            .iter()
            .filter(|(_, s)| s.conns.iter().any(|k| by_key.contains_key(k)))
            .map(|(k, s)| Site {
                netns: k.netns,
                netns_name: k.netns.and_then(|n| self.netns_names.get(&n).cloned()),
                device: self.strings.name(k.device),
                location: self.strings.name(k.location),
                reason: s.reason.clone(),
                packet_len: s.packet_len,
                limit_mtu: k.limit,
                limit_source: s.limit_source.clone(),
                overlay: k.overlay,
                overhead: s.overhead,
                largest_passing: k.limit.map(|l| l.saturating_sub(s.overhead)),
                packets: s.packets,
                icmp_sent: s.icmp_sent,
                icmp_mtu: s.icmp_mtu,
                // The senders adapted here: not stuck, or stuck only further on.
                recovered: s
                    .conns
                    .iter()
                    .filter_map(|k| by_key.get(k))
                    .all(|j| !j.stuck || j.dies_beyond),
                node: self.node(),
            })
            .collect();
        // The binding constraint first; where two agree, the place that has the small MTU
        // before one that only learned it from a router's ICMP.
        sites.sort_by_key(|s| {
            (
                s.largest_passing.unwrap_or(u32::MAX),
                s.limit_source
                    .as_deref()
                    .is_some_and(|l| l.starts_with("path MTU learned")),
                u64::MAX - s.packets,
            )
        });
        sites
    }

    /// Step 4: what passes. The binding limit is one where packets still die (a site the
    /// senders adapted to is not it when they are stuck beyond it); without one, the MTU the
    /// ICMP told, unless packets that fit it die further on (then nothing seen says what
    /// passes). A probe's measurement overrides either.
    fn limits(
        &self,
        path: &PathRef,
        judged: &[Judged],
        sites: &[Site],
        problem: Problem,
    ) -> Limits<'_> {
        let beyond = judged.iter().any(|j| j.dies_beyond);
        let binding = sites
            .iter()
            .find(|s| s.largest_passing.is_some() && !(beyond && s.recovered));
        let mut largest_passing = binding.and_then(|s| s.largest_passing);
        let mut path_mtu = binding.and_then(|s| s.limit_mtu);
        if largest_passing.is_none() && !beyond {
            if let Some(m) = judged.iter().filter_map(|j| j.acc.told_mtu).min() {
                path_mtu = Some(m);
                largest_passing = Some(m.saturating_sub(path.overhead));
            }
        }
        // A probe toward one of these connections' pods (pod-sized packets: the probe's route
        // is the pods' own, through the overlay), when timing is all the node saw.
        // (A site on this node that refuses them gives the number instead, unless the
        // connections die beyond it.)
        let measured = if matches!(
            problem,
            Problem::MtuBlackHole | Problem::SuspectedBlackHole | Problem::ProbingRecovered
        ) && (beyond || problem != Problem::MtuBlackHole || binding.is_none())
        {
            self.probes
                .iter()
                .filter(|p| p.status == "ok")
                .filter(|p| {
                    p.to.is_some_and(|to| judged.iter().any(|j| j.key.dst == to))
                })
                .filter_map(|p| Some((p.path_mtu?, p)))
                .min_by_key(|(m, _)| *m)
        } else {
            None
        };
        if let Some((m, _)) = measured {
            largest_passing = Some(m);
            path_mtu = Some(m + path.overhead);
        }
        let ipv6 = judged.iter().any(|j| j.key.src.is_ipv6());
        let recommended = match (problem, largest_passing) {
            // Timing alone names no size: only a measurement does.
            (Problem::SuspectedBlackHole | Problem::ProbingRecovered, _) if measured.is_none() => {
                None
            }
            (_, None) => None,
            (_, Some(p)) if ipv6 && p < IPV6_MIN_MTU => None,
            (_, Some(p)) => Some(p),
        };
        Limits {
            largest_passing,
            path_mtu,
            measured,
            recommended,
        }
    }

    /// Step 5: the summary, the fix and the stopgap, and how the verdict is known.
    fn explain(
        &self,
        path: &PathRef,
        judged: &[Judged],
        sites: &[Site],
        problem: Problem,
        limits: &Limits,
    ) -> Explained {
        let ipv6 = judged.iter().any(|j| j.key.src.is_ipv6());
        let beyond = beyond_facts(self, judged);
        let fix = match (&beyond, limits.measured) {
            (Some(b), None) => Some(beyond_fix_text(path, b)),
            // Measured: the pod MTU to set, whatever timing suggested the problem.
            (_, Some(_)) => fix_text(
                Problem::MtuBlackHole,
                path,
                limits.largest_passing,
                limits.path_mtu,
                ipv6,
            ),
            (None, None) => fix_text(problem, path, limits.largest_passing, limits.path_mtu, ipv6),
        };
        let stopgap =
            matches!(problem, Problem::MtuBlackHole | Problem::SuspectedBlackHole).then(|| {
                "sysctl net.ipv4.tcp_mtu_probing=1 in the sending pods (TCP finds a size that \
             passes after a timeout; UDP is not helped)"
                    .to_string()
            });
        let senders_learned = judged
            .iter()
            .any(|j| self.learned_by_sender(&j.key, j.acc).is_some());
        let mut summary = match (&beyond, problem) {
            (Some(b), _) => beyond_summary(path, sites, b, limits.measured.is_some()),
            (None, Problem::ProbingRecovered) => probing_summary(path, judged),
            (None, Problem::Unconfirmed) => unconfirmed_summary(path, judged),
            _ => summary_text(
                problem,
                path,
                sites,
                limits.largest_passing,
                senders_learned,
                judged
                    .iter()
                    .filter(|j| j.stuck)
                    .filter_map(|j| j.acc.told_mtu)
                    .min(),
            ),
        };
        if let Some((m, p)) = limits.measured {
            summary = format!(
                "{summary}. Measured: packets up to {m} B reach {} from {} (a DF probe; larger \
                 ones get no answer)",
                p.to.map_or("?".to_string(), |a| a.to_string()),
                p.netns_name
            );
        }
        // A suspicion says what it lacks: a size (none measured), or a cause (the probe says
        // the retransmitted size passes; otherwise the connections would be stuck).
        if problem == Problem::SuspectedBlackHole {
            summary = match limits.measured {
                None => format!(
                    "{summary}. No size is known: no ICMP too-big reached the senders and no \
                     probe measured the path"
                ),
                Some(_) => format!(
                    "{summary}; segments of the retransmitted size fit it: the timeouts may \
                     have another cause"
                ),
            };
        }
        // How it is known: a drop or an ICMP seen where packets die, only their timing, or a
        // probe.
        let confidence = match problem {
            _ if limits.measured.is_some() => Confidence::Measured,
            Problem::MtuBlackHole if beyond.is_some() => Confidence::Inferred,
            Problem::SuspectedBlackHole | Problem::ProbingRecovered => Confidence::Inferred,
            _ => Confidence::Observed,
        };
        if let Some(t) = self.learning_text(problem, judged) {
            summary = format!("{summary}. {t}");
        }
        let icmp_eaten = self.icmp_eaten_lines(judged);
        if !icmp_eaten.is_empty() {
            summary = format!("{summary}. {}", icmp_eaten.join(" "));
        }
        Explained {
            summary,
            fix,
            stopgap,
            confidence,
        }
    }

    /// The recommended MTU as a change of the CNI's configuration, restarting the pods whose
    /// connections were stuck (their veths keep the old MTU).
    fn change(&self, path: &PathRef, flows: &[FlowSummary], mtu: Option<u32>) -> Option<Change> {
        let mut pods: Vec<PodToRestart> = flows
            .iter()
            .filter(|f| f.stuck)
            .filter_map(|f| {
                let p = f.src_pod.as_ref()?;
                Some(PodToRestart {
                    namespace: p.namespace.as_deref()?.to_string(),
                    name: p.name.to_string(),
                    workload: p.workload.as_deref().map(str::to_string),
                })
            })
            .collect();
        pods.sort();
        pods.dedup();
        crate::fix::change(self.cni.as_ref()?, mtu?, path.overhead, &pods)
    }

    fn evidence(&self, judged: &[Judged], sites: &[Site]) -> Evidence {
        let mut evidence = Evidence {
            lost_events: self.lost,
            untracked_events: self.untracked,
            connections: judged.len() as u64,
            icmp_sent: sites.iter().map(|s| s.icmp_sent).sum(),
            ..Evidence::default()
        };
        for j in judged {
            let c = j.acc;
            evidence.dropped_packets += c.dropped - c.oversize_tx;
            evidence.oversize_tx += c.oversize_tx;
            evidence.icmp_received += c.icmp_received;
            evidence.icmp_dropped += c.icmp_dropped;
            evidence.retransmits += c.retransmits;
            evidence.timeout_retransmits += u64::from(j.timeouts);
            evidence.size_reductions += u64::from(c.size_reduced);
        }
        // Updates for the connections' flows by any stack (sender, tunnel, router), and for
        // their outer (node-to-node) flows; each (source, destination) once.
        let pairs: HashSet<(IpAddr, IpAddr)> = judged
            .iter()
            .flat_map(|j| {
                [
                    Some((j.key.src, j.key.dst)),
                    j.acc.sender.map(|(_, d)| (j.key.src, d)),
                    j.acc.outer_src.zip(j.acc.outer_dst),
                ]
            })
            .flatten()
            .collect();
        evidence.pmtu_learned = pairs
            .iter()
            .filter_map(|p| self.learned.get(p))
            .flatten()
            .map(|l| l.count)
            .sum();
        evidence
    }

    /// The connections, stuck first, then by how much of theirs died.
    fn flows(&self, judged: &[Judged]) -> Vec<FlowSummary> {
        let mut flows: Vec<FlowSummary> = judged
            .iter()
            .map(|j| {
                let (k, c) = (&j.key, j.acc);
                FlowSummary {
                    proto: k.proto,
                    src: k.src,
                    sport: k.sport,
                    dst: k.dst,
                    dport: k.dport,
                    src_pod: c.src_pod.as_deref().cloned(),
                    dst_pod: c.dst_pod.as_deref().cloned(),
                    service: c.service.as_deref().cloned(),
                    dropped: c.dropped,
                    largest_failed: c.largest_failed,
                    smallest_failed: c.smallest_failed,
                    icmp_mtu: c.told_mtu,
                    retransmits: c.retransmits,
                    timeout_retransmits: u64::from(j.timeouts),
                    size_reduced: c.size_reduced,
                    pmtu_learned: self.learned_by_sender(k, c),
                    stuck: j.stuck,
                    segment: self
                        .sender(k)
                        .filter(|st| st.total_timeouts() > 0 || c.retransmits > 0)
                        .map(Stages::segment)
                        .filter(|s| *s > 0),
                    first_ts: c.first_ns.map(crate::time::rfc3339_nanos),
                    last_ts: c.last_ns.map(crate::time::rfc3339_nanos),
                }
            })
            .collect();
        flows.sort_by_key(|f| (!f.stuck, u64::MAX - f.dropped, f.src, f.sport));
        flows.truncate(MAX_FLOWS);
        flows
    }

    /// What the path-MTU hook says about the senders: that their stacks recorded the MTU, or
    /// that the ICMP too-big never reached them. Only said when the hook was attached and the
    /// sender's side was visible (its retransmissions were seen).
    fn learning_text(&self, problem: Problem, judged: &[Judged]) -> Option<String> {
        let learned = judged
            .iter()
            .filter_map(|j| self.learned_by_sender(&j.key, j.acc))
            .min();
        match problem {
            Problem::MtuBlackHole => {
                if let Some(m) = learned {
                    return Some(format!(
                        "The senders' stacks recorded path MTU {m}, yet packets larger than that \
                         still die"
                    ));
                }
                // Told (an ICMP was generated for it), its sender visible (its retransmissions
                // were seen, so its namespace is watched), stuck, and nothing recorded there.
                let unheard = judged.iter().filter(|j| {
                    j.stuck
                        && self.learning_seen(j.key.src)
                        && j.acc.told_mtu.is_some()
                        && j.acc.sender.is_some()
                        && self.learned_by_sender(&j.key, j.acc).is_none()
                });
                let n = unheard.count();
                (n > 0).then(|| {
                    format!(
                        "The ICMP too-big never reached the senders' stacks: no path-MTU update \
                         for {n} stuck connection(s) that were told"
                    )
                })
            }
            Problem::PmtudRecovered => learned.map(|m| {
                format!("The senders' stacks recorded path MTU {m} (the ICMP too-big arrived)")
            }),
            _ => None,
        }
    }

    fn icmp_eaten_lines(&self, judged: &[Judged]) -> Vec<String> {
        if !judged.iter().any(|j| j.acc.icmp_dropped > 0) {
            return Vec::new();
        }
        self.icmp_eaten
            .iter()
            .map(|((netns, loc, reason), (n, mtu))| {
                let place = netns
                    .and_then(|n| self.netns_names.get(&n).cloned())
                    .or_else(|| netns.map(|n| format!("netns {n}")))
                    .unwrap_or_else(|| "?".into());
                let mtu = mtu.map_or(String::new(), |m| format!(" (mtu {m})"));
                format!(
                    "{n} ICMP too-big{mtu} dropped at {loc} ({reason}) in {place}: path-MTU \
                     discovery cannot work."
                )
            })
            .collect()
    }

    pub(super) fn healthy(&self, now: i128, observed_s: f64) -> Verdict {
        Verdict {
            ts: crate::time::rfc3339_nanos(now),
            kind: "verdict",
            stage: "final",
            severity: Severity::Ok,
            problem: Problem::None,
            summary: format!(
                "no size drops, no ICMP too-big, no full-size retransmissions at timeout \
                 intervals in {observed_s:.1} s: not an MTU problem where the tracer looked"
            ),
            path: PathRef::default(),
            sites: Vec::new(),
            flows: Vec::new(),
            evidence: Evidence {
                lost_events: self.lost,
                untracked_events: self.untracked,
                ..Evidence::default()
            },
            path_mtu: None,
            largest_passing: None,
            recommended_mtu: None,
            fix: None,
            change: None,
            stopgap: None,
            first_ts: self.first_ns.map(crate::time::rfc3339_nanos),
            last_ts: self.last_ns.map(crate::time::rfc3339_nanos),
            observed_s,
            audit: self.audit.clone(),
            confidence: Confidence::Observed,
            not_seen: self.not_seen(Confidence::Observed, Problem::None),
            node: self.node(),
            dies_at: None,
            nodes: Vec::new(),
            clock_skew_s: None,
        }
    }
}

/// What the senders use now, and what they were told, for a black hole further on (none when
/// no connection dies beyond this node).
fn beyond_facts(a: &Analyzer, judged: &[Judged]) -> Option<Beyond> {
    if !judged.iter().any(|j| j.dies_beyond) {
        return None;
    }
    let stuck_after_shrink = || {
        judged.iter().filter_map(|j| match j.outcome {
            Outcome::StuckAfterShrink { last, .. } => Some((j, last)),
            _ => None,
        })
    };
    Some(Beyond {
        segment: stuck_after_shrink()
            .map(|(_, last)| last.to)
            .max()
            .unwrap_or(0),
        told: judged.iter().filter_map(|j| j.acc.told_mtu).min(),
        gaps_ms: stuck_after_shrink()
            .next()
            .and_then(|(j, _)| a.sender(&j.key))
            .map(|st| st.timeout_gaps_ms().to_vec())
            .unwrap_or_default(),
    })
}
