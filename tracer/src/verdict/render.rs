//! A verdict as the operator reads it in the terminal: a header, then one labelled line per
//! clause, numbers first.
use super::{Confidence, FlowSummary, Problem, Severity, Site, Verdict};
use crate::mtu::Overlay;

/// The lines of one verdict (no trailing newlines).
pub fn render(v: &Verdict) -> Vec<String> {
    let header = match v.severity {
        Severity::Ok => "NO MTU PROBLEM",
        Severity::Info => "MTU NOTE",
        Severity::Suspected => "MTU SUSPECTED",
        Severity::Problem => "MTU PROBLEM",
    };
    let stage = if v.stage == "live" { " (live)" } else { "" };
    let mut out = vec![format!("{header}{stage}  {}", v.summary)];
    for (i, a) in v.audit.iter().enumerate() {
        let label = if i == 0 {
            "  config     "
        } else {
            "             "
        };
        out.push(format!("{label} {a}"));
    }
    if v.problem == Problem::None {
        if !v.audit.is_empty() {
            out.push(
                "  note        no traffic hit the configuration problem above during the run; \
                 it will when packets that large flow"
                    .to_string(),
            );
        }
        if v.evidence.lost_events > 0 {
            out.push(format!(
                "  caution     {} events were lost: evidence may be missing",
                v.evidence.lost_events
            ));
        }
        node_lines(v, &mut out);
        not_seen(v, &mut out);
        return out;
    }
    // The first site where packets still die: one the senders adapted to is not the answer.
    if let Some(first) = v.sites.iter().find(|s| !s.recovered) {
        out.push(format!("  what dies   {}", what_dies(first)));
    }
    for (i, s) in v.sites.iter().enumerate() {
        let label = if i == 0 {
            "  where      "
        } else {
            "             "
        };
        out.push(format!("{label} {}", site_line(s)));
    }
    let e = &v.evidence;
    out.push(format!(
        "  evidence    {} dropped packets, {} ICMP too-big sent, {} received, {} dropped on \
         the way, {} oversize at transmit, {} retransmissions ({} at timeouts), {} size \
         reductions seen, {}{} connections{}",
        e.dropped_packets,
        e.icmp_sent,
        e.icmp_received,
        e.icmp_dropped,
        e.oversize_tx,
        e.retransmits,
        e.timeout_retransmits,
        e.size_reductions,
        if e.pmtu_learned > 0 {
            format!("path MTU learned {} times, ", e.pmtu_learned)
        } else {
            String::new()
        },
        e.connections,
        if e.lost_events > 0 {
            format!("; {} events lost", e.lost_events)
        } else {
            String::new()
        }
    ));
    for (i, f) in v.flows.iter().enumerate() {
        let label = if i == 0 {
            "  flows      "
        } else {
            "             "
        };
        out.push(format!("{label} {}", flow_line(f)));
    }
    if let Some(p) = v.largest_passing {
        let path = v
            .path_mtu
            .map_or(String::new(), |m| format!(" (path MTU {m}"))
            + &match (v.path_mtu, v.path.overlay) {
                (Some(_), Some(_)) => format!(" − {} B overlay)", v.path.overhead),
                (Some(_), None) => ")".to_string(),
                _ => String::new(),
            };
        out.push(format!(
            "  passes      largest size that passes end to end: {p} B{path}"
        ));
    }
    if let Some(fix) = &v.fix {
        out.push(format!("  fix         {fix}"));
    }
    if let Some(c) = &v.change {
        // The commands on lines of their own, to copy.
        out.push(format!(
            "  change      {} ({}): {} {} → {}",
            c.cni, c.method, c.object, c.field, c.value
        ));
        for command in &c.commands {
            out.push(format!("                {command}"));
        }
        out.push(format!("                {}", c.then));
        out.push(format!("  risk        {}", c.risk));
    } else if v.severity >= Severity::Suspected && v.recommended_mtu.is_some() {
        // Say why there is no command to paste, and how to get one.
        out.push(
            "  change      no CNI configuration recognised among the objects the run was given \
             (a --k8s-snapshot listing configmaps, or the live API): make the fix above by hand"
                .to_string(),
        );
    }
    if let Some(s) = &v.stopgap {
        out.push(format!("  stopgap     {s}"));
    }
    let how = match (v.dies_at, v.confidence) {
        (Some(super::DiesAt::Between), Confidence::Observed) => {
            "observed at both ends: the sender's node saw its packets sent and retried, the \
             receiver's saw none that large arrive"
        }
        (Some(_), Confidence::Observed) if !v.nodes.is_empty() => {
            "observed: the drops or ICMP messages were seen on the node named in `where`"
        }
        (_, c) => how_known(c),
    };
    out.push(format!("  how known   {how}"));
    node_lines(v, &mut out);
    not_seen(v, &mut out);
    out
}

/// Each node's part, in a verdict joined from several nodes' logs.
fn node_lines(v: &Verdict, out: &mut Vec<String>) {
    for (i, n) in v.nodes.iter().enumerate() {
        let label = if i == 0 {
            "  nodes      "
        } else {
            "             "
        };
        let own = match (n.severity, n.problem) {
            (Some(_), Some(p)) => serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            _ => "nothing of this path".to_string(),
        };
        let mut facts = vec![own];
        if n.dropped_packets > 0 {
            facts.push(format!("{} dropped", n.dropped_packets));
        }
        if n.icmp_sent + n.icmp_received > 0 {
            facts.push(format!(
                "{} ICMP too-big sent, {} received",
                n.icmp_sent, n.icmp_received
            ));
        }
        if n.retransmits > 0 {
            facts.push(format!("{} retransmissions", n.retransmits));
        }
        if let Some(s) = n.largest_sent {
            facts.push(format!("sends {s}-byte packets that die"));
        }
        if let Some(a) = n.largest_arrived {
            facts.push(format!(
                "received up to {a} B{}",
                n.arrived_packets
                    .map_or(String::new(), |p| format!(" ({p} packets)"))
            ));
        }
        if let Some(m) = n.probe_path_mtu {
            facts.push(format!("its probe measured {m}"));
        }
        out.push(format!(
            "{label} {} ({}): {}",
            n.node,
            n.role,
            facts.join(", ")
        ));
    }
    if let Some(s) = v.clock_skew_s {
        out.push(format!(
            "  clocks      the logs do not cover the same time ({s:+.0} s apart)"
        ));
    }
}

fn not_seen(v: &Verdict, out: &mut Vec<String>) {
    for (i, b) in v.not_seen.iter().enumerate() {
        let label = if i == 0 {
            "  not seen   "
        } else {
            "             "
        };
        out.push(format!("{label} {b}"));
    }
}

fn how_known(c: Confidence) -> &'static str {
    match c {
        Confidence::Observed => "observed: the drops or ICMP messages were seen on this node",
        Confidence::Inferred => {
            "inferred from retransmission timing: the packets die where this node cannot see"
        }
        Confidence::Measured => "measured: a path-MTU probe",
    }
}

fn what_dies(s: &Site) -> String {
    let limit = match (s.limit_mtu, &s.limit_source) {
        (Some(m), Some(src)) => format!("{src} ({m})"),
        (Some(m), None) => format!("an MTU of {m}"),
        _ => "a limit the events do not show".into(),
    };
    match (s.overlay, s.largest_passing) {
        (Some(e), Some(p)) => {
            let name = match e {
                crate::event::Encap::Ipip => Overlay::Ipip.name(),
                crate::event::Encap::Vxlan => Overlay::Vxlan.name(),
            };
            format!(
                "pod packets > {p} B: {}-byte {name} packets ({} + {} B {name}) do not fit {limit}",
                s.packet_len,
                s.packet_len.saturating_sub(s.overhead),
                s.overhead
            )
        }
        (None, Some(p)) => format!(
            "packets > {p} B: {}-byte packets do not fit {limit}",
            s.packet_len
        ),
        _ => format!("{}-byte packets do not fit {limit}", s.packet_len),
    }
}

fn site_line(s: &Site) -> String {
    let place = s
        .netns_name
        .clone()
        .or_else(|| s.netns.map(|n| format!("netns {n}")))
        .unwrap_or_else(|| "?".into());
    let at = s.location.as_deref().unwrap_or("?");
    let reason = s
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(" ({r})"));
    let limit = s.limit_mtu.map_or(String::new(), |m| format!(" > {m}"));
    let icmp = if s.icmp_sent > 0 {
        format!(
            ", {} ICMP too-big sent{}",
            s.icmp_sent,
            s.icmp_mtu.map_or(String::new(), |m| format!(" (mtu {m})"))
        )
    } else {
        String::new()
    };
    let state = if s.recovered { ", senders adapted" } else { "" };
    format!(
        "{} in {place} at {at}{reason}: {} packets of up to {} B{limit}{icmp}{state}",
        s.device.as_deref().unwrap_or("-"),
        s.packets,
        s.packet_len
    )
}

fn flow_line(f: &FlowSummary) -> String {
    let ep = |ip: std::net::IpAddr, port: Option<u16>| match (ip, port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    let proto = match f.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        p => format!("proto {p}"),
    };
    let mut names = Vec::new();
    if let Some(p) = &f.src_pod {
        names.push(format!(
            "{}/{}",
            p.namespace.as_deref().unwrap_or("-"),
            p.name
        ));
    }
    if let Some(s) = &f.service {
        names.push(format!(
            "svc {}/{}{}",
            s.namespace,
            s.name,
            s.port.map_or(String::new(), |p| format!(":{p}"))
        ));
    }
    if let Some(p) = &f.dst_pod {
        names.push(format!(
            "{}/{}",
            p.namespace.as_deref().unwrap_or("-"),
            p.name
        ));
    }
    let names = if names.is_empty() {
        String::new()
    } else {
        format!(" = {}", names.join(" → "))
    };
    let state = if f.stuck {
        "stuck"
    } else if f.size_reduced {
        "shrank"
    } else if f.timeout_retransmits > 0 {
        // Not (yet) judged stuck, but not shown to have adapted either.
        "retransmitted at timeouts"
    } else {
        "adapted"
    };
    let learned = f
        .pmtu_learned
        .map_or(String::new(), |m| format!(", its stack learned MTU {m}"));
    format!(
        "{proto} {} → {}{names}: {} dropped{}, {} retransmits ({} at timeouts), {state}{learned}",
        ep(f.src, f.sport),
        ep(f.dst, f.dport),
        f.dropped,
        f.largest_failed
            .map_or(String::new(), |l| format!(" (up to {l} B)")),
        f.retransmits,
        f.timeout_retransmits
    )
}
