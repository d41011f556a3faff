//! `tracer check` output: one block per namespace (devices, overlay, CNI MTU, probes), then
//! the findings with their arithmetic and fix, or a plain "MTU consistent"; `--json` prints
//! the [`Audit`] instead. Exit status: 0 consistent, 2 problems found, 1 error.
use std::{collections::BTreeMap, fmt::Write as _, process::ExitCode};

use super::{
    probe::ProbeStatus, Audit, AuditOptions, Device, NsAudit, ProbeLimits, ProbeOptions,
    ProbeResult, Role, Severity,
};
use crate::{cli::CheckArgs, host::HostRoot, mtu::IPV6_MIN_MTU};

/// Exit status when the audit found at least one problem.
pub use crate::cli::EXIT_MTU_PROBLEM as EXIT_PROBLEMS;

/// The `tracer check` command.
pub fn command(args: CheckArgs) -> ExitCode {
    let opts = AuditOptions {
        netns: args.netns.clone(),
        host_root: args
            .host_root
            .clone()
            .map(HostRoot::new)
            .unwrap_or_default(),
        probe: (!args.no_probe).then(|| ProbeOptions {
            peers: args.peers.clone(),
            limits: ProbeLimits::default(),
        }),
        expect_mtu: args.expect_mtu,
    };
    let audit = match super::audit(&opts) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tracer: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        match serde_json::to_string_pretty(&audit) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("tracer: error: JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        render(&audit)
    };
    print!("{text}");
    if audit.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    }
}

/// The human report.
pub fn render(a: &Audit) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tracer check: MTU audit of {} namespace(s){}",
        a.namespaces.len(),
        if a.probed { "" } else { " (no probe)" }
    );
    for ns in &a.namespaces {
        render_ns(&mut o, ns);
    }
    render_cni(&mut o, a);
    o.push('\n');
    for f in &a.findings {
        let tag = match f.severity {
            Severity::Problem => "PROBLEM",
            Severity::Warning => "warning",
        };
        let _ = writeln!(o, "{tag:<8} {}  {}", f.problem, f.location);
        let _ = writeln!(o, "  {}", f.arithmetic);
        let _ = writeln!(o, "  {}", f.summary);
        if let Some(fix) = &f.fix {
            let _ = writeln!(o, "  fix: {fix}");
        }
    }
    let problems = a.problems().count();
    let warnings = a.findings.len() - problems;
    if a.consistent {
        let probes = a.probes_answered();
        let (pods, tunnels) = (a.devices_of(Role::Pod), a.devices_of(Role::Tunnel));
        let what = if pods + tunnels == 0 {
            "no pod veths or tunnels here, nothing to compare".to_string()
        } else {
            format!(
                "{pods} pod veth(s) and {tunnels} tunnel(s) fit every uplink{} checked",
                if probes > 0 { " and probed path" } else { "" }
            )
        };
        if let Some(mtu) = a.expected_mtu {
            let _ = writeln!(o, "{}", super::expect::agreement(a, mtu));
        }
        let _ = writeln!(
            o,
            "MTU consistent: {what} ({} namespace(s), {probes} path(s) probed){}",
            a.namespaces.len(),
            if warnings > 0 {
                format!("; {warnings} warning(s) above do not affect pod traffic")
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            o,
            "MTU PROBLEM: {problems} problem(s), {warnings} warning(s){}",
            a.recommended_pod_mtu.map_or(String::new(), |m| format!(
                "; largest pod MTU that fits every path seen: {m}"
            ))
        );
    }
    o
}

fn render_ns(o: &mut String, ns: &NsAudit) {
    let _ = writeln!(o, "\n{}", ns.netns);
    for d in ns.devices.iter().filter(|d| d.role != Role::Pod) {
        let role = match d.role {
            Role::Uplink => "uplink",
            Role::Tunnel => "tunnel",
            Role::Other => "device",
            Role::Loopback | Role::Pod => continue,
        };
        let encap = match &d.encap {
            Some(e) => format!(
                "  {} +{} (outer IPv{}{})",
                e.name,
                e.overhead,
                if e.outer_v6 { 6 } else { 4 },
                if e.outer_assumed { ", assumed" } else { "" }
            ),
            None => String::new(),
        };
        let line = format!("  {role:<8} {:<16} mtu {:<5}{encap}", d.name, d.mtu);
        let _ = writeln!(o, "{}", line.trim_end());
    }
    let pods: Vec<&Device> = ns.by_role(Role::Pod).collect();
    if !pods.is_empty() {
        let mut by_mtu: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for p in &pods {
            by_mtu.entry(p.mtu).or_default().push(&p.name);
        }
        let groups: Vec<String> = by_mtu
            .iter()
            .rev()
            .map(|(mtu, names)| {
                let shown = if names.len() > 3 {
                    format!("{}, …", names[..3].join(", "))
                } else {
                    names.join(", ")
                };
                format!("mtu {mtu} ×{} ({shown})", names.len())
            })
            .collect();
        let _ = writeln!(o, "  {:<8} {}", "pods", groups.join("; "));
    }
    for r in &ns.route_mtus {
        let _ = writeln!(
            o,
            "  {:<8} {} dev {} mtu {}{}",
            "route",
            r.dst,
            r.dev.as_deref().unwrap_or("?"),
            r.mtu,
            if r.locked { " (locked)" } else { "" }
        );
    }
    for r in &ns.learned_pmtu {
        let _ = writeln!(
            o,
            "  {:<8} {} dev {} mtu {} (learned, route cache)",
            "pmtu",
            r.dst,
            r.dev.as_deref().unwrap_or("?"),
            r.mtu
        );
    }
    for p in &ns.probes {
        let head = format!("{} ({})", p.peer, p.source);
        let body = match p.status {
            ProbeStatus::Ok if p.below_ipv6_minimum() => format!(
                "via {} mtu {}: path below IPv6's minimum MTU ({} got no answer, {} did){}; {} probes, {:.1} s",
                p.via.as_deref().unwrap_or("?"),
                p.local_mtu.unwrap_or(0),
                p.smallest_lost.unwrap_or(IPV6_MIN_MTU),
                p.largest_ok.unwrap_or(0),
                too_big(p),
                p.sent,
                p.elapsed_ms as f64 / 1e3
            ),
            ProbeStatus::Ok => {
                let m = p.path_mtu.unwrap_or(0);
                let local = p.local_mtu.unwrap_or(0);
                let mut s = format!(
                    "via {} mtu {local}: path MTU {m}",
                    p.via.as_deref().unwrap_or("?")
                );
                if !p.exact {
                    let _ = write!(
                        s,
                        " or more (budget ran out; {} got no answer)",
                        p.smallest_lost.unwrap_or(0)
                    );
                } else if m < local {
                    let largest = p.largest_ok.unwrap_or(m);
                    if largest > m {
                        let _ = write!(
                            s,
                            " ({largest} got through: receivers take a few bytes over their MTU; {} and larger got no answer)",
                            p.smallest_lost.unwrap_or(largest + 1)
                        );
                    } else {
                        let _ = write!(s, " ({} and larger got no answer)", m + 1);
                    }
                }
                s.push_str(&too_big(p));
                let _ = write!(s, "; {} probes, {:.1} s", p.sent, p.elapsed_ms as f64 / 1e3);
                s
            }
            _ => format!(
                "{}: {}",
                match p.status {
                    ProbeStatus::NoReply => "no reply",
                    ProbeStatus::NoRoute => "no route",
                    _ => "not probed",
                },
                p.detail.as_deref().unwrap_or("")
            ),
        };
        let _ = writeln!(o, "  {:<8} {head} {body}", "probe");
    }
    if ns.probes.is_empty() && !ns.peers.is_empty() {
        let list: Vec<String> = ns.peers.iter().map(|p| p.addr.to_string()).collect();
        let _ = writeln!(o, "  {:<8} not probed: {}", "peers", list.join(", "));
    }
    for n in &ns.notes {
        let _ = writeln!(o, "  {:<8} {n}", "note");
    }
}

/// The router's own word on the path, if one spoke: `; 10.0.0.1 sent frag-needed mtu 1450`
/// (IPv6: `packet too big`).
fn too_big(p: &ProbeResult) -> String {
    match (p.icmp_mtu, p.icmp_from) {
        (Some(m), Some(from)) => format!(
            "; {from} sent {} mtu {m}",
            if from.is_ipv6() {
                "packet too big"
            } else {
                "frag-needed"
            }
        ),
        _ => String::new(),
    }
}

fn render_cni(o: &mut String, a: &Audit) {
    let c = &a.cni;
    if c.config_files.is_empty() && c.mtus.is_empty() {
        let _ = writeln!(
            o,
            "\ncni      no configuration found (/etc/cni/net.d, /run/flannel/subnet.env): CNI MTU not checked"
        );
    } else {
        for m in &c.mtus {
            let _ = writeln!(
                o,
                "\ncni      {:?} mtu {} from {}{}",
                m.cni,
                m.mtu,
                m.source,
                if m.active {
                    ""
                } else {
                    " (not the active config)"
                }
            );
        }
        if c.mtus.is_empty() {
            let _ = writeln!(
                o,
                "\ncni      {}: no MTU configured",
                c.config_files.join(", ")
            );
        }
    }
    for w in &c.warnings {
        let _ = writeln!(o, "cni      warning: {w}");
    }
}
