//! The words of a verdict: its summary, fix and the phrases they share. Apart from the
//! decision (`decide.rs`), so that what is decided can be read without the prose, and the
//! prose changed without touching a decision.
use super::decide::Judged;
use super::overlay_kind;
use crate::event::Encap;
use crate::mtu::{Overlay, IPV6_MIN_MTU};
use crate::verdict::stages::{Outcome, ShrinkCause};
use crate::verdict::{PathRef, Problem, Site};

pub(super) fn problem_words(p: Problem) -> &'static str {
    match p {
        Problem::MtuBlackHole => "black hole beyond this node",
        Problem::SuspectedBlackHole => "suspected black hole",
        Problem::ProbingRecovered => "black hole got around by TCP probing",
        _ => "size problem",
    }
}

/// What is known of a black hole beyond this node.
pub(super) struct Beyond {
    /// The segment size the senders shrank to, which still dies.
    pub segment: u32,
    /// The MTU the ICMP told them.
    pub told: Option<u32>,
    /// Their retransmission gaps at that size (ms).
    pub gaps_ms: Vec<u32>,
}

fn path_words(path: &PathRef) -> String {
    let ends = match (&path.src_node, &path.dst_node) {
        (Some(a), Some(b)) => format!(" from {a} to {b}"),
        (None, Some(b)) => format!(" to {b}"),
        (Some(a), None) => format!(" from {a}"),
        (None, None) => String::new(),
    };
    let over = path.overlay.map_or(String::new(), |e| {
        format!(" over {}", overlay_kind(e).name())
    });
    format!("{ends}{over}")
}

pub(super) fn beyond_summary(path: &PathRef, sites: &[Site], b: &Beyond, measured: bool) -> String {
    let here = sites
        .iter()
        .find(|s| s.recovered)
        .and_then(|s| Some(format!(" at {}", s.location.as_deref()?)))
        .unwrap_or_default();
    let told = b.told.map_or("an MTU".to_string(), |m| format!("MTU {m}"));
    let gaps = if b.gaps_ms.is_empty() {
        String::new()
    } else {
        let g: Vec<String> = b
            .gaps_ms
            .iter()
            .map(|ms| format!("{:.1}", *ms as f64 / 1000.0))
            .collect();
        format!(" (retransmitted after {} s)", g.join(", "))
    };
    let unmeasured = if measured {
        ""
    } else {
        "; how much smaller the path beyond is was not measured"
    };
    format!(
        "MTU black hole beyond this node{}: the senders were told {told}{here} and shrank to \
         {}-byte segments, which still die further on{gaps}; no ICMP comes back. Packets that \
         fit {told} pass this node{unmeasured}",
        path_words(path),
        b.segment
    )
}

pub(super) fn beyond_fix_text(path: &PathRef, b: &Beyond) -> String {
    let bound = b.told.map_or(String::new(), |m| format!(" (below {m})"));
    let overhead = if path.overhead > 0 {
        format!(" minus {} B of overlay", path.overhead)
    } else {
        String::new()
    };
    format!(
        "measure the path MTU between the nodes (`tracer check --netns <node>` probes it), then \
         set the pod MTU to it{overhead}{bound}, and restart the pods (an MTU applies to new \
         veths)"
    )
}

pub(super) fn probing_summary(path: &PathRef, judged: &[Judged]) -> String {
    let sizes: Vec<(u32, u32)> = judged
        .iter()
        .filter_map(|j| match j.outcome {
            Outcome::Progressing { last } if last.cause == ShrinkCause::Probing => {
                Some((last.from, last.to))
            }
            _ => None,
        })
        .collect();
    let from = sizes.iter().map(|s| s.0).max().unwrap_or(0);
    let to = sizes.iter().map(|s| s.1).min().unwrap_or(0);
    format!(
        "packets die{}: {from}-byte segments were retransmitted at timeouts until TCP MTU \
         probing lowered them to {to} B, which pass. Transfers get through after seconds of \
         timeouts; the MTU should be fixed",
        path_words(path)
    )
}

pub(super) fn unconfirmed_summary(path: &PathRef, judged: &[Judged]) -> String {
    let watched = judged
        .iter()
        .filter_map(|j| match j.outcome {
            Outcome::Undecided { last, watched_ns } => Some((last.to, watched_ns)),
            _ => None,
        })
        .min_by_key(|w| w.1);
    let (to, ns) = watched.unwrap_or((0, 0));
    format!(
        "packets too big{} were refused and the senders shrank to {to}-byte segments; whether \
         those pass further on is not known yet (watched {:.1} s after the shrink)",
        path_words(path),
        ns as f64 / 1e9
    )
}

pub(super) fn fix_text(
    problem: Problem,
    path: &PathRef,
    largest: Option<u32>,
    path_mtu: Option<u32>,
    ipv6: bool,
) -> Option<String> {
    match problem {
        Problem::None => None,
        Problem::SuspectedBlackHole | Problem::ProbingRecovered => Some(
            "find the path MTU between the nodes (`tracer check` probes it) and set the CNI \
             MTU to it minus the overlay's overhead"
                .to_string(),
        ),
        Problem::Unconfirmed => Some(
            "watch longer (the senders shrank; whether that size passes further on shows in \
             their retransmissions), or probe the path (`tracer check`)"
                .to_string(),
        ),
        Problem::MtuBlackHole | Problem::PmtudRecovered => {
            let p = largest?;
            if ipv6 && p < IPV6_MIN_MTU {
                let need = IPV6_MIN_MTU + path.overhead;
                return Some(format!(
                    "the path allows only {p} B inside the overlay, below IPv6's minimum of \
                     {IPV6_MIN_MTU}: raise the underlay MTU to at least {need} (a pod MTU \
                     cannot fix this)"
                ));
            }
            let restart = "then restart the pods (an MTU applies to new veths)";
            let text = match path.overlay {
                Some(Encap::Ipip) => {
                    let vx = path_mtu.map_or(String::new(), |m| {
                        format!(
                            "; {} if VXLAN may also be used",
                            Overlay::Vxlan.inner_mtu(m, false)
                        )
                    });
                    format!(
                        "set the pod MTU to {p} (Calico: veth_mtu / FelixConfiguration ipipMTU = \
                         {} − 20 B IPIP){vx}, {restart}",
                        path_mtu.unwrap_or(p + 20)
                    )
                }
                Some(Encap::Vxlan) => format!(
                    "set the pod MTU to {p} (Calico: veth_mtu / FelixConfiguration vxlanMTU; \
                     flannel: the vxlan backend MTU = {} − {} B VXLAN), {restart}",
                    path_mtu.unwrap_or(p + path.overhead),
                    path.overhead
                ),
                None => format!("set the pod (CNI) MTU to {p}, {restart}"),
            };
            Some(if problem == Problem::PmtudRecovered {
                format!("optional: {text} (saves each new connection a lost round trip)")
            } else {
                text
            })
        }
    }
}

/// `senders_learned`: a sender's stack recorded a path MTU (so "never learn" would be wrong).
pub(super) fn summary_text(
    problem: Problem,
    path: &PathRef,
    sites: &[Site],
    largest: Option<u32>,
    senders_learned: bool,
    told: Option<u32>,
) -> String {
    let between = match (&path.src_node, &path.dst_node) {
        (Some(s), Some(d)) => format!(" from {s} to {d}"),
        (Some(s), None) => format!(" from {s}"),
        (None, Some(d)) => format!(" to {d}"),
        (None, None) => String::new(),
    };
    let over = path.overlay.map_or(String::new(), |e| {
        format!(" over {}", overlay_kind(e).name())
    });
    let fits = largest.map_or("an unknown size".to_string(), |l| format!("{l} B"));
    match problem {
        Problem::None => "no MTU problem".into(),
        Problem::MtuBlackHole => {
            let site = sites.first().map_or(String::new(), |s| {
                format!(
                    ": {}-byte packets die at {}",
                    s.packet_len,
                    s.location.as_deref().unwrap_or("?")
                )
            });
            // What the senders were told, if anything: a stack that learned a working size
            // and still sends larger, an ICMP with a number that is itself too big (a tunnel
            // on the way told its own MTU), or nothing at all.
            let senders = match (senders_learned, told, largest) {
                (true, _, _) => "senders keep sending larger ones".to_string(),
                (false, Some(t), Some(l)) if t > l => {
                    format!("senders were told {t} B (ICMP), more than passes")
                }
                _ => "senders never learn it".to_string(),
            };
            format!("MTU black hole{between}{over}{site}; only packets up to {fits} pass and the {senders}")
        }
        Problem::PmtudRecovered => format!(
            "packets too big for the path{between}{over} were refused, the senders were told \
             (ICMP) and shrank to {fits}: path-MTU discovery works, connections pay one round \
             trip"
        ),
        Problem::SuspectedBlackHole => format!(
            "suspected MTU black hole{between}: full-size segments retransmitted at growing \
             timeouts and no size event on this node: they die beyond it"
        ),
        // Their own texts (`probing_summary`, `unconfirmed_summary`) need the stages.
        Problem::ProbingRecovered | Problem::Unconfirmed => {
            format!("packets too big{between}{over}")
        }
    }
}
