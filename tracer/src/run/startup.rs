//! The start-up block on stderr: what the tracer watches, which hooks attached, what it is
//! blind to as a result, where names come from, what the static MTU audit says, and where
//! the events go. An operator reads it to know what the trace can and cannot show.
use std::io::Write as _;

use super::{attach::KernelFacts, plan::Plan};
use crate::event::start::{HookLine, Start, Watched};
use crate::hooks::{self, Attempt, Outcome};

/// The parts of the block, each from the step that produced it.
pub struct Startup<'a> {
    pub facts: &'a KernelFacts,
    pub plan: &'a Plan,
    pub hooks: &'a [Attempt],
    /// `names:` lines.
    pub names: &'a [String],
    /// `audit:` lines.
    pub audit: &'a [String],
    /// Lines printed as they are (the link watcher's, the privileges').
    pub more: &'a [String],
    /// Where events go (the `log:` line).
    pub log: &'a str,
}

impl Startup<'_> {
    pub fn print(&self) {
        let facts = self.facts;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        eprintln!(
            "tracer {} on {} (kernel {}, BTF ok, {} drop reasons, PKT_TOO_BIG={})",
            env!("CARGO_PKG_VERSION"),
            host.trim(),
            facts.release,
            facts.names.reasons.len(),
            facts
                .names
                .reasons
                .value("PKT_TOO_BIG")
                .map_or("none".to_string(), |v| v.to_string()),
        );
        let ns: Vec<String> = self
            .plan
            .watched()
            .iter()
            .map(|n| format!("{} (netns {})", n.label, n.inode))
            .collect();
        eprintln!("watching: {}", ns.join(", "));
        eprintln!("hooks:");
        for a in self.hooks {
            eprintln!("  {a}");
        }
        let blind = blind_spots(self.hooks);
        if blind.is_empty() {
            eprintln!("blind: none");
        } else {
            for b in blind {
                eprintln!("blind: {b}");
            }
        }
        for n in &facts.notes {
            eprintln!("note: {n}");
        }
        for line in self.names {
            eprintln!("names: {line}");
        }
        for line in self.audit {
            eprintln!("audit: {line}");
        }
        for line in self.more {
            eprintln!("{line}");
        }
        eprintln!("log: {}", self.log);
        // The event lines' clock is UTC, as the log's: said once, not on every line.
        eprintln!("tracing… (Ctrl-C to stop; times are UTC)");
        let _ = std::io::stderr().flush();
    }
}

/// The log's start line: what this run watches, which hooks attached, what it cannot see, and
/// the audit's problems. The analyzer learns them from it, live and in `tracer report` alike.
pub fn start_line(
    facts: &KernelFacts,
    plan: &Plan,
    hooks: &[Attempt],
    audit_problems: Vec<String>,
    addresses: Vec<std::net::IpAddr>,
    cni: Option<crate::fix::CniInstall>,
) -> Start {
    Start {
        ts: crate::time::rfc3339_nanos(super::now_unix_ns()),
        kind: crate::event::start::KIND.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        node: plan.node.clone(),
        kernel: facts.release.clone(),
        hooks: hooks
            .iter()
            .map(|a| {
                let (outcome, detail) = match &a.outcome {
                    Outcome::Attached => ("attached", None),
                    Outcome::Failed(why) => ("failed", Some(why.clone())),
                    Outcome::Skipped(why) => ("skipped", Some(why.clone())),
                };
                HookLine {
                    concern: a.concern.to_string(),
                    method: a.method.to_string(),
                    outcome: outcome.to_string(),
                    detail,
                }
            })
            .collect(),
        blind_spots: blind_spots(hooks),
        namespaces: plan
            .watched()
            .iter()
            .map(|n| Watched {
                inode: n.inode,
                name: n.label.clone(),
            })
            .collect(),
        audit: audit_problems,
        // Both families: the verdict says "the ICMP never reached the sender" from the absence of
        // an update, which only holds where the sender's family was hooked.
        pmtu_hook: hooks::pmtu::blind_spot(hooks).is_none()
            && hooks::pmtu6::blind_spot(hooks).is_none(),
        addresses,
        cni,
    }
}

/// What the operator cannot see with the hooks that attached, in their terms.
fn blind_spots(report: &[Attempt]) -> Vec<String> {
    let ok = |method: &str| {
        report
            .iter()
            .any(|a| a.method.starts_with(method) && a.outcome == Outcome::Attached)
    };
    let mut out = Vec::new();
    if !ok("kprobe/__icmp_send") {
        if ok("tracepoint/icmp/icmp_send") {
            out.push("advertised MTU of kernel-generated ICMP (no kprobes): taken from ICMP packets leaving hooked devices instead".to_string());
        } else {
            out.push(
                "kernel-generated ICMP frag-needed: only seen leaving hooked devices".to_string(),
            );
        }
    }
    if !ok("kprobe/icmp6_send") {
        out.push(
            "kernel-generated ICMPv6 packet-too-big: only seen leaving hooked devices".to_string(),
        );
    }
    if !ok("tcx/egress") && !ok("tc/egress") {
        out.push(
            "oversized transmissions and ICMP leaving devices (no tc egress hook)".to_string(),
        );
    }
    if !ok("tcx/ingress") && !ok("tc/ingress") {
        out.push("ICMP too-big arriving from the underlay (no tc ingress hook)".to_string());
    }
    if !ok("tracepoint/tcp") {
        out.push("TCP retransmissions".to_string());
    }
    out.extend(hooks::pmtu::blind_spot(report));
    out.extend(hooks::pmtu6::blind_spot(report));
    out
}

/// What the static MTU audit (`tracer check` without its probe) says about the watched
/// namespaces: start-up lines, and the problems' arithmetic for the verdicts.
pub struct StaticAudit {
    pub startup: Vec<String>,
    pub problems: Vec<String>,
}

impl StaticAudit {
    pub fn of(plan: &Plan) -> StaticAudit {
        match crate::check::audit_static(&plan.namespaces, &plan.host_root) {
            Ok(a) => {
                let problems: Vec<String> = a
                    .problems()
                    .map(|f| format!("{}: {}", f.location, f.arithmetic))
                    .collect();
                let warnings = a.findings.len() - problems.len();
                let mut startup = if problems.is_empty() {
                    vec![format!(
                        "MTUs consistent (devices, routes, CNI; `tracer check` also probes paths){}",
                        if warnings > 0 {
                            format!(", {warnings} warning(s)")
                        } else {
                            String::new()
                        }
                    )]
                } else {
                    problems.iter().map(|p| format!("PROBLEM {p}")).collect()
                };
                if let (false, Some(m)) = (problems.is_empty(), a.recommended_pod_mtu) {
                    startup.push(format!("largest pod MTU that fits every limit seen: {m}"));
                }
                StaticAudit { startup, problems }
            }
            Err(e) => StaticAudit {
                startup: vec![format!("unavailable: {e:#}")],
                problems: Vec::new(),
            },
        }
    }
}
