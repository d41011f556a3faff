//! `tracer check --expect-mtu N`: after a fix is applied, whether the node agrees with it —
//! every pod veth at N (a pod keeps its old MTU until it is recreated: those are named), the
//! CNI configuration giving new pods N, the tunnels carrying N, and every probed path carrying
//! N plus the overlay's overhead. Each disagreement is a problem, so the exit status says
//! whether the fix holds. Cilium keeps pods' veths at the device's MTU and sizes pod packets by
//! its routes into the overlay: there the routes are judged instead of the veths.
use super::{rules::cni_of, Audit, Cni, Finding, NsAudit, ProbeStatus, Role, Severity};

/// The findings of `--expect-mtu mtu` over an audit's facts.
pub fn findings(a: &Audit, mtu: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    let problem = |id: &str, location: String, arithmetic: String, summary: String| Finding {
        problem: id.into(),
        severity: Severity::Problem,
        summary,
        arithmetic,
        recommended_mtu: None,
        fix: None,
        location,
    };
    for ns in &a.namespaces {
        if cni_of(ns, &a.cni) == Cni::Cilium {
            let old: Vec<String> = ns
                .route_mtus
                .iter()
                .filter(|r| r.mtu != mtu && into_overlay(ns, r.dev.as_deref()))
                .map(|r| format!("{} ({})", r.dst, r.mtu))
                .collect();
            if !old.is_empty() {
                out.push(problem(
                    "routes_not_at_expected_mtu",
                    ns.netns.clone(),
                    format!("route MTU into the overlay ≠ expected {mtu}: {}", old.join(", ")),
                    "Cilium's routes still size pod packets otherwise: its agents have not applied \
                     the new mtu yet (restart the cilium DaemonSet)"
                        .into(),
                ));
            }
            out.extend(path_findings(ns, mtu));
            continue;
        }
        let old: Vec<String> = ns
            .by_role(Role::Pod)
            .filter(|d| d.mtu != mtu)
            .map(|d| format!("{} ({})", d.name, d.mtu))
            .collect();
        if !old.is_empty() {
            let mut f = problem(
                "pods_not_at_expected_mtu",
                ns.netns.clone(),
                format!("pod veth MTU ≠ expected {mtu}: {}", old.join(", ")),
                format!(
                    "{} pod(s) still have another MTU: they were created before the change",
                    old.len()
                ),
            );
            f.fix = Some(
                "restart those pods (their veths are named; `kubectl delete pod` or a rollout \
                 restart of their workload): an MTU applies to new veths"
                    .into(),
            );
            out.push(f);
        }
        for t in ns.by_role(Role::Tunnel).filter(|t| t.mtu < mtu) {
            out.push(problem(
                "tunnel_below_expected_mtu",
                format!("{}/{}", ns.netns, t.name),
                format!("tunnel {} MTU {} < expected pod MTU {mtu}", t.name, t.mtu),
                "the tunnel refuses the pods' full-size packets: the CNI's tunnel MTU was not \
                 changed with the pods'"
                    .into(),
            ));
        }
        out.extend(path_findings(ns, mtu));
    }
    if let Some(c) = a.cni.active_mtu().filter(|c| c.mtu != mtu) {
        out.push(problem(
            "cni_config_not_expected_mtu",
            c.source.clone(),
            format!("CNI MTU {} ≠ expected {mtu}", c.mtu),
            "the CNI configuration on this node still gives new pods another MTU".into(),
        ));
    }
    out
}

/// Whether a route's device leads into the overlay (a tunnel, or Cilium's `cilium_host`).
fn into_overlay(ns: &NsAudit, dev: Option<&str>) -> bool {
    ns.devices
        .iter()
        .any(|d| Some(d.name.as_str()) == dev && matches!(d.role, Role::Tunnel | Role::Other))
}

/// A probed path that cannot carry a pod packet of `mtu` bytes once encapsulated.
fn path_findings(ns: &NsAudit, mtu: u32) -> Vec<Finding> {
    let overhead = ns
        .by_role(Role::Tunnel)
        .filter_map(|t| t.encap.as_ref())
        .map(|e| e.overhead)
        .max()
        .unwrap_or(0);
    ns.probes
        .iter()
        .filter(|p| p.status == ProbeStatus::Ok)
        .filter_map(|p| Some((p, p.path_mtu?)))
        .filter(|(_, path)| *path < mtu + overhead)
        .map(|(p, path)| Finding {
            problem: "path_below_expected_mtu".into(),
            severity: Severity::Problem,
            summary: format!(
                "pod packets of {mtu} B do not fit the path to {}: the expected MTU is too large",
                p.peer
            ),
            arithmetic: format!(
                "expected pod MTU {mtu} + {overhead} B overlay = {} > path MTU {path} to {} \
                 (probed)",
                mtu + overhead,
                p.peer
            ),
            recommended_mtu: Some(path.saturating_sub(overhead)),
            fix: None,
            location: ns.netns.clone(),
        })
        .collect()
}

/// The line that says the fix holds, when it does.
pub fn agreement(a: &Audit, mtu: u32) -> String {
    let probes = a.probes_answered();
    let cni = a
        .cni
        .active_mtu()
        .map_or("no CNI MTU found to compare".to_string(), |c| {
            format!("the CNI config ({})", c.source)
        });
    // What was compared: the veths, or on Cilium its routes into the overlay (see `findings`).
    let (mut veths, mut routes) = (0, 0);
    for ns in &a.namespaces {
        if cni_of(ns, &a.cni) == Cni::Cilium {
            routes += ns
                .route_mtus
                .iter()
                .filter(|r| into_overlay(ns, r.dev.as_deref()))
                .count();
        } else {
            veths += ns.by_role(Role::Pod).count();
        }
    }
    let pods = match (veths, routes) {
        (v, 0) => format!("{v} pod veth(s) at {mtu}"),
        (0, r) => format!("{r} route(s) into the overlay at {mtu} (Cilium)"),
        (v, r) => format!("{v} pod veth(s) and {r} Cilium route(s) into the overlay at {mtu}"),
    };
    format!(
        "expected MTU {mtu} holds: {pods}, {} tunnel(s) carry it, {cni}, {probes} probed path(s) \
         carry it with the overlay",
        a.devices_of(Role::Tunnel),
    )
}
