//! The audit's rules: from the facts of each namespace (and of the others audited with it) to
//! findings with their arithmetic. Pure functions, so that the tables below test them.
//!
//! Every size check compares a packet size with the tightest *limit* the audit knows for the
//! namespace: its own uplink MTU, a probed path MTU, a learned PMTU (route cache) on an uplink,
//! or the uplink MTU of another audited node (pods talk to pods there).
use super::{
    cni::{Cni, CniFacts},
    probe::ProbeStatus,
    Audit, Device, Encap, Finding, NsAudit, Role, Severity,
};
use crate::mtu::{Overlay, IPV6_MIN_MTU};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LimitKind {
    // Order = preference when two limits are equal: the node's own device is the most direct
    // statement, then a measurement, then what the kernel learned, then another node's device.
    Uplink,
    Path,
    Learned,
    PeerUplink,
}

impl LimitKind {
    fn suffix(self) -> &'static str {
        match self {
            LimitKind::Uplink => "uplink",
            LimitKind::Path => "path",
            LimitKind::Learned => "learned_pmtu",
            LimitKind::PeerUplink => "peer_uplink",
        }
    }
}

#[derive(Clone, Debug)]
struct Limit {
    mtu: u32,
    kind: LimitKind,
    /// `uplink eth0 MTU 1450`, `path MTU 1450 to 10.210.0.2 (probed)`.
    text: String,
}

/// A namespace that hosts pods or tunnels: a node (not a router, not a pod).
fn is_node(ns: &NsAudit) -> bool {
    ns.devices
        .iter()
        .any(|d| matches!(d.role, Role::Pod | Role::Tunnel))
}

fn uplink_limit(ns: &NsAudit) -> Option<Limit> {
    ns.by_role(Role::Uplink)
        .filter(|d| d.mtu > 0)
        .min_by_key(|d| d.mtu)
        .map(|d| Limit {
            mtu: d.mtu,
            kind: LimitKind::Uplink,
            text: format!("uplink {} MTU {}", d.name, d.mtu),
        })
}

fn limits(ns: &NsAudit, all: &[NsAudit]) -> Vec<Limit> {
    let mut v: Vec<Limit> = uplink_limit(ns).into_iter().collect();
    for p in ns.probes.iter().filter(|p| p.status == ProbeStatus::Ok) {
        let Some(m) = p.path_mtu else { continue };
        let text = if p.exact {
            format!("path MTU {m} to {} (probed)", p.peer)
        } else {
            format!(
                "path MTU {m} to {} (probed; at least {m}, {} got no answer)",
                p.peer,
                p.smallest_lost.unwrap_or(0)
            )
        };
        v.push(Limit {
            mtu: m,
            kind: LimitKind::Path,
            text,
        });
    }
    for l in &ns.learned_pmtu {
        let on_uplink = l
            .dev
            .as_ref()
            .is_some_and(|name| ns.by_role(Role::Uplink).any(|d| &d.name == name));
        if on_uplink {
            v.push(Limit {
                mtu: l.mtu,
                kind: LimitKind::Learned,
                text: format!("learned path MTU {} to {} (route cache)", l.mtu, l.dst),
            });
        }
    }
    for other in all.iter().filter(|o| o.netns != ns.netns && is_node(o)) {
        if let Some(u) = uplink_limit(other) {
            v.push(Limit {
                mtu: u.mtu,
                kind: LimitKind::PeerUplink,
                text: format!("{} of node {}", u.text, other.netns),
            });
        }
    }
    v
}

fn binding(limits: &[Limit]) -> Option<&Limit> {
    limits.iter().min_by_key(|l| (l.mtu, l.kind))
}

/// The encapsulation pod traffic gets: the tunnel with the largest overhead (worst case).
fn pod_encap(ns: &NsAudit) -> Option<(&Device, &Encap)> {
    ns.by_role(Role::Tunnel)
        .filter_map(|d| d.encap.as_ref().map(|e| (d, e)))
        .max_by_key(|(_, e)| e.overhead)
}

fn plus_overhead(encap: Option<&Encap>) -> (u32, String) {
    match encap {
        Some(e) if e.overhead > 0 => (e.overhead, format!(" + {} {}", e.name, e.overhead)),
        _ => (0, String::new()),
    }
}

/// Which CNI the fix is phrased for: the configured one, else the devices' naming.
pub(super) fn cni_of(ns: &NsAudit, cni: &CniFacts) -> Cni {
    if let Some(c) = cni.cnis.first() {
        return *c;
    }
    let any = |f: &dyn Fn(&str) -> bool| ns.devices.iter().any(|d| f(&d.name));
    if any(&|n| n.starts_with("cali") || n == "vxlan.calico" || n == "tunl0") {
        Cni::Calico
    } else if any(&|n| n.starts_with("flannel") || n == "cni0") {
        Cni::Flannel
    } else if any(&|n| n.starts_with("cilium_") || n.starts_with("lxc")) {
        Cni::Cilium
    } else {
        Cni::Other
    }
}

/// How to set the pod MTU to `rec` (= `limit` − the encapsulation's overhead).
pub fn fix_text(cni: Cni, encap: Option<&Encap>, rec: u32, limit: u32) -> String {
    let why = match encap {
        Some(e) if e.overhead > 0 => format!("{}: {limit} − {}", e.name, e.overhead),
        _ => format!("{limit}, no encapsulation"),
    };
    // The incident's advice: IPIP's tight value, and the one that also survives VXLAN.
    let alt = match encap {
        Some(e) if e.overlay == Overlay::Ipip => format!(
            "; {} if VXLAN may also be used",
            Overlay::Vxlan.inner_mtu(limit, e.outer_v6)
        ),
        _ => String::new(),
    };
    match cni {
        Cni::Calico => format!("set Calico veth_mtu to {rec} ({why}{alt}), then restart the pods"),
        Cni::Flannel => format!(
            "set flannel's MTU so that FLANNEL_MTU is {rec} ({why}), then restart the pods"
        ),
        Cni::Cilium => format!(
            "set Cilium's mtu to {limit} (it subtracts the {} overhead itself: pods get {rec}), then restart the pods",
            encap.map_or("tunnel", |e| e.name)
        ),
        Cni::Other => format!("set the CNI's pod MTU to {rec} ({why}{alt}), then restart the pods"),
    }
}

fn names_at(devs: &[&Device], mtu: u32) -> String {
    let at: Vec<&str> = devs
        .iter()
        .filter(|d| d.mtu == mtu)
        .map(|d| d.name.as_str())
        .collect();
    match at.len() {
        0 => String::new(),
        1..=3 => at.join(", "),
        n => format!("{}, … {} more", at[..3].join(", "), n - 3),
    }
}

/// The findings for one namespace, given every namespace audited with it.
pub fn ns_findings(ns: &NsAudit, all: &[NsAudit], cni: &CniFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    if !is_node(ns) {
        return out;
    }
    let lims = limits(ns, all);
    let Some(limit) = binding(&lims).cloned() else {
        return out;
    };
    let tunnel = pod_encap(ns);
    let encap = tunnel.map(|(_, e)| e);
    let (oh, plus) = plus_overhead(encap);
    let which = cni_of(ns, cni);
    let rec = limit.mtu.saturating_sub(oh);
    let fix = fix_text(which, encap, rec, limit.mtu);
    let via = tunnel.map_or(String::new(), |(d, _)| format!(" through {}", d.name));
    let pods: Vec<&Device> = ns.by_role(Role::Pod).collect();
    let max_pod = pods.iter().map(|d| d.mtu).max();

    if let Some(pod) = max_pod {
        let need = pod + oh;
        let names = names_at(&pods, pod);
        let first = pods.iter().find(|d| d.mtu == pod).map_or("", |d| &d.name);
        if need > limit.mtu {
            let (arith, summary) = if oh > 0 {
                (
                    format!("pod veth MTU {pod} ({names}){plus} = {need} > {}", limit.text),
                    format!(
                        "Full-size pod packets leave{via} as {need}-byte {} packets, larger than the {}: large transfers from pods on {} stall while small requests work.",
                        encap.map_or("", |e| e.name),
                        limit.text,
                        ns.netns
                    ),
                )
            } else {
                (
                    format!("pod veth MTU {pod} ({names}) > {}", limit.text),
                    format!(
                        "Full-size pod packets are larger than the {}: large transfers from pods on {} stall while small requests work.",
                        limit.text, ns.netns
                    ),
                )
            };
            out.push(Finding {
                problem: format!("pod_mtu_exceeds_{}", limit.kind.suffix()),
                severity: Severity::Problem,
                summary,
                arithmetic: arith,
                recommended_mtu: Some(rec),
                fix: Some(fix.clone()),
                location: format!("{}/{first}", ns.netns),
            });
        }
        for t in ns.by_role(Role::Tunnel).filter(|t| t.mtu < pod) {
            let r = t.mtu.min(rec);
            out.push(Finding {
                problem: "pod_mtu_exceeds_tunnel".into(),
                severity: Severity::Problem,
                summary: format!(
                    "Pods send packets larger than {} accepts; they pass only if ICMP frag-needed reaches the pod and it lowers its path MTU (often filtered: a black hole).",
                    t.name
                ),
                arithmetic: format!("pod veth MTU {pod} ({names}) > tunnel {} MTU {}", t.name, t.mtu),
                recommended_mtu: Some(r),
                fix: Some(fix_text(which, encap, r, r + oh)),
                location: format!("{}/{}", ns.netns, t.name),
            });
        }
    }

    for t in ns.by_role(Role::Tunnel) {
        let Some(e) = &t.encap else { continue };
        let need = t.mtu + e.overhead;
        if need <= limit.mtu {
            continue;
        }
        let r = limit.mtu.saturating_sub(e.overhead);
        let pods_ok = max_pod.is_some_and(|p| p + oh <= limit.mtu);
        let assumed = if e.outer_assumed {
            " (outer IPv4 assumed: the tunnel's addresses were not readable)"
        } else {
            ""
        };
        out.push(Finding {
            problem: format!("tunnel_mtu_exceeds_{}", limit.kind.suffix()),
            severity: Severity::Warning,
            summary: format!(
                "Packets the node itself sends or forwards into {} (host-network clients, NodePort traffic) can exceed the {}{}.",
                t.name,
                limit.text,
                if pods_ok { "; pod traffic fits at the pods' MTU" } else { "" }
            ),
            arithmetic: format!(
                "tunnel {} MTU {} + {} {}{assumed} = {need} > {}",
                t.name, t.mtu, e.name, e.overhead, limit.text
            ),
            recommended_mtu: Some(r),
            fix: Some(match which {
                Cni::Calico => format!(
                    "Calico sizes {} from the same setting: set Calico veth_mtu to {r}",
                    t.name
                ),
                _ => format!("set the {} MTU to {r}", t.name),
            }),
            location: format!("{}/{}", ns.netns, t.name),
        });
    }

    if let Some(c) = cni.active_mtu() {
        let need = c.mtu + oh;
        if need > limit.mtu {
            out.push(Finding {
                problem: format!("cni_mtu_exceeds_{}", limit.kind.suffix()),
                severity: Severity::Problem,
                summary: format!(
                    "New pods get MTU {} from the CNI configuration, too large for the {}.",
                    c.mtu, limit.text
                ),
                arithmetic: format!(
                    "CNI MTU {} ({}){plus} = {need} > {}",
                    c.mtu, c.source, limit.text
                ),
                recommended_mtu: Some(rec),
                fix: Some(fix.clone()),
                location: ns.netns.clone(),
            });
        }
        let differ: Vec<&Device> = pods.iter().copied().filter(|d| d.mtu != c.mtu).collect();
        if let Some(d) = differ.first() {
            out.push(Finding {
                problem: "pod_mtu_differs_from_cni".into(),
                severity: Severity::Warning,
                summary: format!(
                    "{} pod veth(s) do not have the CNI's MTU: pods keep the MTU they were created with until restarted.",
                    differ.len()
                ),
                arithmetic: format!(
                    "pod veth MTU {} ({}) ≠ CNI MTU {} ({})",
                    d.mtu,
                    names_at(&differ, d.mtu),
                    c.mtu,
                    c.source
                ),
                recommended_mtu: None,
                fix: Some("restart the pods created before the CNI MTU changed".into()),
                location: format!("{}/{}", ns.netns, d.name),
            });
        }
    }

    for r in &ns.route_mtus {
        let Some(dev) = r
            .dev
            .as_ref()
            .and_then(|n| ns.devices.iter().find(|d| &d.name == n))
        else {
            continue;
        };
        match dev.role {
            Role::Uplink if r.mtu > dev.mtu => out.push(Finding {
                problem: "route_mtu_exceeds_device".into(),
                severity: Severity::Warning,
                summary: format!(
                    "Route {} claims a larger MTU than its device {}: packets between the two are dropped at the device.",
                    r.dst, dev.name
                ),
                arithmetic: format!(
                    "route {} mtu {} > device {} MTU {}",
                    r.dst, r.mtu, dev.name, dev.mtu
                ),
                recommended_mtu: Some(dev.mtu),
                fix: Some(format!("set the route's mtu to at most {}", dev.mtu)),
                location: format!("{}/{}", ns.netns, dev.name),
            }),
            Role::Uplink | Role::Pod | Role::Loopback => {}
            Role::Tunnel | Role::Other => {
                // Routes into the overlay (Cilium sets them on cilium_host): their packets get
                // the tunnel's overhead on the way out.
                let (roh, rplus) = plus_overhead(dev.encap.as_ref().or(encap));
                let need = r.mtu + roh;
                if need > limit.mtu {
                    out.push(Finding {
                        problem: format!("route_mtu_exceeds_{}", limit.kind.suffix()),
                        severity: Severity::Problem,
                        summary: format!(
                            "Route {} lets packets of {} bytes into the overlay, too large for the {}.",
                            r.dst, r.mtu, limit.text
                        ),
                        arithmetic: format!(
                            "route {} dev {} mtu {}{rplus} = {need} > {}",
                            r.dst, dev.name, r.mtu, limit.text
                        ),
                        recommended_mtu: Some(limit.mtu.saturating_sub(roh)),
                        fix: Some(fix.clone()),
                        location: format!("{}/{}", ns.netns, dev.name),
                    });
                }
            }
        }
    }

    if rec < IPV6_MIN_MTU {
        let (severity, tail) = if ns.ipv6_in_use {
            (Severity::Problem, "IPv6 pods cannot work over it")
        } else {
            (
                Severity::Warning,
                "IPv6 pods could not work over it (none seen)",
            )
        };
        out.push(Finding {
            problem: "ipv6_pod_mtu_below_minimum".into(),
            severity,
            summary: format!(
                "The largest pod MTU this path allows is below IPv6's minimum of {IPV6_MIN_MTU}: {tail}; IPv4 pods can use {rec}."
            ),
            arithmetic: if oh > 0 {
                format!(
                    "{} − {} {oh} = {rec} < {IPV6_MIN_MTU} (IPv6 minimum MTU, RFC 8200)",
                    limit.text,
                    encap.map_or("", |e| e.name)
                )
            } else {
                format!("{} < {IPV6_MIN_MTU} (IPv6 minimum MTU, RFC 8200)", limit.text)
            },
            recommended_mtu: None,
            fix: Some(format!(
                "give the underlay an MTU of at least {} (or use less encapsulation)",
                IPV6_MIN_MTU + oh
            )),
            location: ns.netns.clone(),
        });
    }
    out
}

/// Probed IPv6 paths that do not carry 1280 bytes: broken for every IPv6 packet of full size,
/// whatever the pods' MTU, so judged in any namespace (a node or not), and no MTU is the fix.
pub fn ipv6_path_findings(ns: &NsAudit) -> Vec<Finding> {
    ns.probes
        .iter()
        .filter(|p| p.below_ipv6_minimum())
        .map(|p| {
            let via = p.via.as_deref().unwrap_or("?");
            let lost = p.smallest_lost.unwrap_or(IPV6_MIN_MTU);
            let router = match (p.icmp_mtu, p.icmp_from) {
                (Some(m), Some(from)) => format!("; {from} sent packet too big mtu {m}"),
                _ => String::new(),
            };
            Finding {
                problem: "ipv6_path_below_minimum".into(),
                severity: Severity::Problem,
                summary: format!(
                    "The path to {} does not carry {IPV6_MIN_MTU}-byte packets, the least every IPv6 link must carry: IPv6 senders never go below it, so their full-size packets to it are lost.",
                    p.peer
                ),
                arithmetic: format!(
                    "path to {} via {via} (probed): {lost} B got no answer, {} B did{router} < {IPV6_MIN_MTU} (IPv6 minimum MTU, RFC 8200)",
                    p.peer,
                    p.largest_ok.unwrap_or(0)
                ),
                recommended_mtu: None,
                fix: Some(format!(
                    "raise the MTU of the link below {IPV6_MIN_MTU} on the way to {} (a tunnel or a misconfigured hop); no pod MTU can fix it",
                    p.peer
                )),
                location: format!("{}/{via}", ns.netns),
            }
        })
        .collect()
}

/// All namespaces' findings, the overall recommendation and the verdict.
pub fn evaluate(namespaces: Vec<NsAudit>, cni: CniFacts, probed: bool) -> Audit {
    let mut findings: Vec<Finding> = namespaces
        .iter()
        .flat_map(|ns| {
            let mut v = ipv6_path_findings(ns);
            v.extend(ns_findings(ns, &namespaces, &cni));
            v
        })
        .collect();
    findings.sort_by_key(|f| f.severity);
    let recommended_pod_mtu = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .filter_map(|f| f.recommended_mtu)
        .min();
    Audit {
        consistent: !findings.iter().any(|f| f.severity == Severity::Problem),
        recommended_pod_mtu,
        probed,
        namespaces,
        cni,
        findings,
        expected_mtu: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{
        cni::CniMtu,
        probe::{ProbeResult, ProbeStatus},
        RouteMtu,
    };

    fn dev(name: &str, mtu: u32, role: Role, overlay: Option<(Overlay, bool)>) -> Device {
        Device {
            name: name.into(),
            ifindex: 0,
            mtu,
            kind: None,
            role,
            encap: overlay.map(|(o, v6)| Encap {
                overlay: o,
                name: o.name(),
                overhead: o.overhead(v6),
                outer_v6: v6,
                outer_assumed: false,
            }),
        }
    }

    /// A node: uplink `eth0`, optionally a tunnel, pods `cali1`… at the given MTUs.
    fn node(name: &str, uplink: u32, tunnel: Option<(Overlay, u32)>, pods: &[u32]) -> NsAudit {
        let mut devices = vec![
            dev("lo", 65536, Role::Loopback, None),
            dev("eth0", uplink, Role::Uplink, None),
        ];
        if let Some((o, mtu)) = tunnel {
            let n = match o {
                Overlay::Ipip => "tunl0",
                Overlay::Vxlan => "vxlan.calico",
                Overlay::Wireguard => "wireguard.cali",
                _ => "tun",
            };
            devices.push(dev(n, mtu, Role::Tunnel, Some((o, false))));
        }
        for (i, &p) in pods.iter().enumerate() {
            devices.push(dev(&format!("cali{i}"), p, Role::Pod, None));
        }
        NsAudit {
            netns: name.into(),
            devices,
            route_mtus: vec![],
            learned_pmtu: vec![],
            peers: vec![],
            probes: vec![],
            ipv6_in_use: false,
            notes: vec![],
        }
    }

    fn probed(mut ns: NsAudit, peer: &str, local: u32, path: u32) -> NsAudit {
        ns.probes.push(ProbeResult {
            peer: peer.parse().unwrap(),
            source: "test".into(),
            status: ProbeStatus::Ok,
            via: Some("eth0".into()),
            local_mtu: Some(local),
            path_mtu: Some(path),
            largest_ok: Some(path),
            smallest_lost: (path < local).then_some(path + 1),
            exact: true,
            icmp_mtu: None,
            icmp_from: None,
            sent: 3,
            elapsed_ms: 1,
            detail: None,
        });
        ns
    }

    fn run(nss: Vec<NsAudit>, cni: CniFacts) -> Audit {
        evaluate(nss, cni, true)
    }

    fn ids(a: &Audit) -> Vec<(String, Severity, Option<u32>)> {
        a.findings
            .iter()
            .map(|f| (f.problem.clone(), f.severity, f.recommended_mtu))
            .collect()
    }

    fn find<'a>(a: &'a Audit, id: &str) -> &'a Finding {
        a.findings
            .iter()
            .find(|f| f.problem == id)
            .unwrap_or_else(|| panic!("no {id} in {:#?}", a.findings))
    }

    use Severity::{Problem as P, Warning as W};

    #[test]
    fn the_incident_vxlan_new_node() {
        let a = run(
            vec![node("new", 1450, Some((Overlay::Vxlan, 1500)), &[1500])],
            CniFacts::default(),
        );
        assert!(!a.consistent);
        assert_eq!(a.recommended_pod_mtu, Some(1400));
        let f = find(&a, "pod_mtu_exceeds_uplink");
        assert_eq!(
            f.arithmetic,
            "pod veth MTU 1500 (cali0) + VXLAN 50 = 1550 > uplink eth0 MTU 1450"
        );
        assert_eq!(
            f.fix.as_deref(),
            Some("set Calico veth_mtu to 1400 (VXLAN: 1450 − 50), then restart the pods")
        );
        assert_eq!(f.location, "new/cali0");
        let t = find(&a, "tunnel_mtu_exceeds_uplink");
        assert_eq!(t.severity, W);
        assert_eq!(
            t.arithmetic,
            "tunnel vxlan.calico MTU 1500 + VXLAN 50 = 1550 > uplink eth0 MTU 1450"
        );
    }

    #[test]
    fn the_incident_ipip_gives_1430_and_the_vxlan_safe_1400() {
        let a = run(
            vec![node("new", 1450, Some((Overlay::Ipip, 1500)), &[1500])],
            CniFacts::default(),
        );
        let f = find(&a, "pod_mtu_exceeds_uplink");
        assert_eq!(f.recommended_mtu, Some(1430));
        assert_eq!(
            f.arithmetic,
            "pod veth MTU 1500 (cali0) + IPIP 20 = 1520 > uplink eth0 MTU 1450"
        );
        let fix = f.fix.as_deref().unwrap();
        assert!(
            fix.contains("1430 (IPIP: 1450 − 20; 1400 if VXLAN may also be used)"),
            "{fix}"
        );
    }

    #[test]
    fn table_of_uplink_overlay_pod_mtus() {
        // (uplink, tunnel, pods, expected findings (id, severity, recommended))
        type Row = (
            u32,
            Option<(Overlay, u32)>,
            &'static [u32],
            Vec<(&'static str, Severity, Option<u32>)>,
        );
        let rows: Vec<Row> = vec![
            // Healthy: Calico's own numbers for 1500 and for GCP's 1460.
            (1500, Some((Overlay::Vxlan, 1450)), &[1450, 1450], vec![]),
            (1500, Some((Overlay::Ipip, 1480)), &[1480], vec![]),
            (1460, Some((Overlay::Vxlan, 1410)), &[1410], vec![]),
            (9001, Some((Overlay::Vxlan, 8951)), &[8951], vec![]),
            (1500, None, &[1500], vec![]),
            // GCP 1460 with pods left at 1440 (IPIP-sized) on VXLAN.
            (
                1460,
                Some((Overlay::Vxlan, 1410)),
                &[1440],
                vec![
                    ("pod_mtu_exceeds_uplink", P, Some(1410)),
                    ("pod_mtu_exceeds_tunnel", P, Some(1410)),
                ],
            ),
            // Routed (no overlay): the pod MTU itself must fit.
            (
                1450,
                None,
                &[1500],
                vec![("pod_mtu_exceeds_uplink", P, Some(1450))],
            ),
            // WireGuard over IPv4: 60.
            (1500, Some((Overlay::Wireguard, 1440)), &[1440], vec![]),
            (
                1500,
                Some((Overlay::Wireguard, 1450)),
                &[1450],
                vec![
                    ("pod_mtu_exceeds_uplink", P, Some(1440)),
                    ("tunnel_mtu_exceeds_uplink", W, Some(1440)),
                ],
            ),
        ];
        for (uplink, tunnel, pods, want) in rows {
            let a = run(vec![node("n", uplink, tunnel, pods)], CniFacts::default());
            let got = ids(&a);
            let want: Vec<_> = want
                .into_iter()
                .map(|(i, s, r)| (i.to_string(), s, r))
                .collect();
            assert_eq!(got, want, "uplink {uplink} tunnel {tunnel:?} pods {pods:?}");
            assert_eq!(a.consistent, !want.iter().any(|w| w.1 == P));
        }
    }

    #[test]
    fn jumbo_node_on_a_1500_path_is_found_by_the_probe() {
        // 9001 (AWS) inside, but the path to the peer is 1500: static facts look fine.
        let n = node("a", 9001, Some((Overlay::Vxlan, 8951)), &[8951]);
        assert!(run(vec![n.clone()], CniFacts::default()).consistent);
        let a = run(vec![probed(n, "10.0.0.2", 9001, 1500)], CniFacts::default());
        let f = find(&a, "pod_mtu_exceeds_path");
        assert_eq!(
            f.arithmetic,
            "pod veth MTU 8951 (cali0) + VXLAN 50 = 9001 > path MTU 1500 to 10.0.0.2 (probed)"
        );
        assert_eq!(f.recommended_mtu, Some(1450));
        assert_eq!(a.recommended_pod_mtu, Some(1450));
    }

    #[test]
    fn old_node_is_judged_against_the_new_nodes_uplink_and_the_probe() {
        let old = node("old", 1500, Some((Overlay::Vxlan, 1500)), &[1500]);
        let new = node("new", 1450, Some((Overlay::Vxlan, 1500)), &[1500]);
        // Without a probe: the other node's uplink is the limit.
        let a = run(vec![old.clone(), new.clone()], CniFacts::default());
        let f = a
            .findings
            .iter()
            .find(|f| f.location.starts_with("old/") && f.problem.starts_with("pod_"))
            .unwrap();
        assert_eq!(f.problem, "pod_mtu_exceeds_peer_uplink");
        assert_eq!(
            f.arithmetic,
            "pod veth MTU 1500 (cali0) + VXLAN 50 = 1550 > uplink eth0 MTU 1450 of node new"
        );
        // With a probe the measurement is named (same number).
        let a = run(
            vec![probed(old, "10.210.0.2", 1500, 1450), new],
            CniFacts::default(),
        );
        let f = a
            .findings
            .iter()
            .find(|f| f.location.starts_with("old/") && f.problem.starts_with("pod_"))
            .unwrap();
        assert_eq!(f.problem, "pod_mtu_exceeds_path");
        assert_eq!(f.recommended_mtu, Some(1400));
        assert_eq!(a.recommended_pod_mtu, Some(1400));
        // After the fix (pods 1400) only the tunnels' warnings remain.
        let old = node("old", 1500, Some((Overlay::Vxlan, 1500)), &[1400]);
        let new = node("new", 1450, Some((Overlay::Vxlan, 1500)), &[1400]);
        let a = run(
            vec![probed(old, "10.210.0.2", 1500, 1450), new],
            CniFacts::default(),
        );
        assert!(a.consistent, "{:#?}", a.findings);
        assert_eq!(a.recommended_pod_mtu, None);
        assert!(a.findings.iter().all(|f| f.severity == W));
    }

    #[test]
    fn a_probe_that_finds_the_uplink_mtu_changes_nothing() {
        let n = node("a", 1500, Some((Overlay::Vxlan, 1450)), &[1450]);
        let a = run(vec![probed(n, "10.0.0.2", 1500, 1500)], CniFacts::default());
        assert!(a.findings.is_empty(), "{:#?}", a.findings);
    }

    #[test]
    fn learned_pmtu_on_the_uplink_is_a_limit() {
        let mut n = node("a", 1500, Some((Overlay::Vxlan, 1450)), &[1450]);
        n.learned_pmtu.push(RouteMtu {
            dst: "10.0.0.2".into(),
            gateway: None,
            dev: Some("eth0".into()),
            mtu: 1450,
            locked: false,
        });
        let a = run(vec![n], CniFacts::default());
        let f = find(&a, "pod_mtu_exceeds_learned_pmtu");
        assert_eq!(
            f.arithmetic,
            "pod veth MTU 1450 (cali0) + VXLAN 50 = 1500 > learned path MTU 1450 to 10.0.0.2 (route cache)"
        );
        assert_eq!(f.recommended_mtu, Some(1400));
    }

    #[test]
    fn ipv6_minimum() {
        // VXLAN over an IPv6 underlay: 70 bytes; 1350 leaves exactly 1280.
        let mut n = node("a", 1350, None, &[1280]);
        n.devices.push(dev(
            "vxlan.calico",
            1280,
            Role::Tunnel,
            Some((Overlay::Vxlan, true)),
        ));
        n.ipv6_in_use = true;
        assert!(run(vec![n.clone()], CniFacts::default())
            .findings
            .is_empty());
        n.devices[1].mtu = 1349;
        let a = run(vec![n.clone()], CniFacts::default());
        let f = find(&a, "ipv6_pod_mtu_below_minimum");
        assert_eq!(f.severity, P);
        assert_eq!(
            f.arithmetic,
            "uplink eth0 MTU 1349 − VXLAN 70 = 1279 < 1280 (IPv6 minimum MTU, RFC 8200)"
        );
        assert_eq!(
            find(&a, "pod_mtu_exceeds_uplink").recommended_mtu,
            Some(1279)
        );
        // Without IPv6 pods it is only a warning.
        n.ipv6_in_use = false;
        let a = run(vec![n], CniFacts::default());
        assert_eq!(find(&a, "ipv6_pod_mtu_below_minimum").severity, W);
    }

    #[test]
    fn a_probed_ipv6_path_is_judged_with_the_ipv6_underlay_overhead() {
        // VXLAN over IPv6 (70 B), pods at 1400, the probe to the IPv6 peer finds 1400.
        let mut n = node("a", 1500, None, &[1400]);
        n.devices.push(dev(
            "vxlan.calico",
            1400,
            Role::Tunnel,
            Some((Overlay::Vxlan, true)),
        ));
        let n = probed(n, "fd00:203::2", 1500, 1400);
        let a = run(vec![n.clone()], CniFacts::default());
        let f = find(&a, "pod_mtu_exceeds_path");
        assert_eq!(
            f.arithmetic,
            "pod veth MTU 1400 (cali0) + VXLAN 70 = 1470 > path MTU 1400 to fd00:203::2 (probed)"
        );
        assert_eq!(f.recommended_mtu, Some(1330));
        assert_eq!(a.recommended_pod_mtu, Some(1330));
        // A path at 1340 leaves 1270 for IPv6 pods: below the floor.
        let mut low = n.clone();
        low.probes[0].path_mtu = Some(1340);
        low.probes[0].largest_ok = Some(1340);
        low.probes[0].smallest_lost = Some(1341);
        low.ipv6_in_use = true;
        let a = run(vec![low], CniFacts::default());
        let f = find(&a, "ipv6_pod_mtu_below_minimum");
        assert_eq!(f.severity, P);
        assert_eq!(
            f.arithmetic,
            "path MTU 1340 to fd00:203::2 (probed) − VXLAN 70 = 1270 < 1280 (IPv6 minimum MTU, RFC 8200)"
        );
        // Pods and tunnel at 1430 over a 1500 path: 1430 + 70 fits exactly.
        let mut ok = n;
        ok.devices[2].mtu = 1430;
        ok.devices[3].mtu = 1430;
        ok.probes[0].path_mtu = Some(1500);
        ok.probes[0].largest_ok = Some(1500);
        ok.probes[0].smallest_lost = None;
        let a = run(vec![ok], CniFacts::default());
        assert!(a.findings.is_empty(), "{:#?}", a.findings);
    }

    #[test]
    fn an_ipv6_path_below_1280_is_a_problem_on_its_own() {
        // The small probe passed, 1280 did not: no path MTU is claimed, and no pod MTU is
        // recommended from it; even a namespace without pods gets the finding.
        let below = |ns: NsAudit| {
            let mut ns = probed(ns, "fd00:203::2", 1500, 1500);
            let p = &mut ns.probes[0];
            p.path_mtu = None;
            p.largest_ok = Some(96);
            p.smallest_lost = Some(1280);
            p.exact = false;
            p.icmp_mtu = Some(1200);
            p.icmp_from = Some("fd00:202::1".parse().unwrap());
            ns
        };
        let a = run(
            vec![below(node("a", 1500, None, &[1500]))],
            CniFacts::default(),
        );
        assert!(!a.consistent);
        let f = find(&a, "ipv6_path_below_minimum");
        assert_eq!(f.severity, P);
        assert_eq!(f.location, "a/eth0");
        assert_eq!(
            f.arithmetic,
            "path to fd00:203::2 via eth0 (probed): 1280 B got no answer, 96 B did; fd00:202::1 sent packet too big mtu 1200 < 1280 (IPv6 minimum MTU, RFC 8200)"
        );
        assert_eq!(f.recommended_mtu, None);
        assert_eq!(a.recommended_pod_mtu, None);
        // The pods (1500 on a 1500 uplink) are not judged against an unknown path MTU.
        assert_eq!(ids(&a).len(), 1, "{:#?}", a.findings);
        let router = below(node("rtr", 1500, None, &[]));
        let a = run(vec![router], CniFacts::default());
        assert_eq!(find(&a, "ipv6_path_below_minimum").location, "rtr/eth0");
        // An IPv4 path answered only at 96 bytes is an ordinary (tiny) path MTU.
        let mut v4 = below(node("a", 1500, None, &[1500]));
        v4.probes[0].peer = "10.0.0.2".parse().unwrap();
        let a = run(vec![v4], CniFacts::default());
        assert!(a
            .findings
            .iter()
            .all(|f| f.problem != "ipv6_path_below_minimum"));
    }

    #[test]
    fn cni_configured_mtu_is_checked_and_old_pods_are_named() {
        let cni = CniFacts {
            config_files: vec!["/etc/cni/net.d/10-calico.conflist".into()],
            cnis: vec![Cni::Calico],
            mtus: vec![CniMtu {
                cni: Cni::Calico,
                mtu: 1500,
                source: "/etc/cni/net.d/10-calico.conflist: calico mtu".into(),
                active: true,
            }],
            warnings: vec![],
        };
        let a = run(
            vec![node("n", 1450, Some((Overlay::Vxlan, 1400)), &[1400, 1400])],
            cni.clone(),
        );
        let f = find(&a, "cni_mtu_exceeds_uplink");
        assert_eq!(
            f.arithmetic,
            "CNI MTU 1500 (/etc/cni/net.d/10-calico.conflist: calico mtu) + VXLAN 50 = 1550 > uplink eth0 MTU 1450"
        );
        assert_eq!(f.recommended_mtu, Some(1400));
        let d = find(&a, "pod_mtu_differs_from_cni");
        assert_eq!(d.severity, W);
        assert!(d
            .arithmetic
            .starts_with("pod veth MTU 1400 (cali0, cali1) ≠ CNI MTU 1500"));
        // A CNI MTU that fits and matches the pods: nothing.
        let mut ok = cni;
        ok.mtus[0].mtu = 1400;
        let a = run(
            vec![node("n", 1450, Some((Overlay::Vxlan, 1400)), &[1400])],
            ok,
        );
        assert!(a.findings.is_empty(), "{:#?}", a.findings);
    }

    /// A Cilium node: uplink `uplink`, a pod veth `lxc0` at `pod`, `cilium_vxlan`, and the route
    /// into the overlay on `cilium_host` at `route_mtu`.
    fn cilium_node(uplink: u32, pod: u32, route_mtu: u32) -> NsAudit {
        let mut n = node("n", uplink, None, &[pod]);
        n.devices[2].name = "lxc0".into();
        n.devices.push(dev(
            "cilium_vxlan",
            1500,
            Role::Tunnel,
            Some((Overlay::Vxlan, false)),
        ));
        n.devices.push(dev("cilium_host", 1500, Role::Other, None));
        n.route_mtus.push(RouteMtu {
            dst: "10.0.1.0/24".into(),
            gateway: Some("10.0.0.1".parse().unwrap()),
            dev: Some("cilium_host".into()),
            mtu: route_mtu,
            locked: false,
        });
        n
    }

    #[test]
    fn route_mtus_like_ciliums_are_checked() {
        let mut n = cilium_node(1450, 1400, 1450);
        n.route_mtus.push(RouteMtu {
            dst: "default".into(),
            gateway: None,
            dev: Some("eth0".into()),
            mtu: 1500,
            locked: false,
        });
        let a = run(vec![n], CniFacts::default());
        let f = find(&a, "route_mtu_exceeds_uplink");
        assert_eq!(
            f.arithmetic,
            "route 10.0.1.0/24 dev cilium_host mtu 1450 + VXLAN 50 = 1500 > uplink eth0 MTU 1450"
        );
        assert!(
            f.fix
                .as_deref()
                .unwrap()
                .starts_with("set Cilium's mtu to 1450"),
            "{f:?}"
        );
        assert_eq!(find(&a, "route_mtu_exceeds_device").severity, W);
    }

    #[test]
    fn routers_and_pods_are_not_judged_as_nodes() {
        let mut router = node("rtr", 1450, None, &[]);
        router.devices.push(dev("to-old", 1500, Role::Uplink, None));
        let a = run(
            vec![
                router,
                node("n", 1500, Some((Overlay::Vxlan, 1450)), &[1450]),
            ],
            CniFacts::default(),
        );
        assert!(a.findings.is_empty(), "{:#?}", a.findings);
    }

    // `--expect-mtu` (check/expect.rs): after the fix, everything agrees or the stragglers
    // are named.

    fn calico_at(mtu: u32) -> CniFacts {
        CniFacts {
            mtus: vec![CniMtu {
                cni: Cni::Calico,
                mtu,
                source: "/etc/cni/net.d/10-calico.conflist: mtu".into(),
                active: true,
            }],
            ..CniFacts::default()
        }
    }

    #[test]
    fn expect_mtu_holds_when_pods_config_tunnel_and_path_agree() {
        let n = probed(
            node("n", 1500, Some((Overlay::Vxlan, 1450)), &[1400, 1400]),
            "10.0.0.2",
            1500,
            1450,
        );
        let mut a = run(vec![n], calico_at(1400));
        a.expect(1400);
        assert!(a.consistent, "{:#?}", a.findings);
        assert_eq!(a.expected_mtu, Some(1400));
        let line = crate::check::expect::agreement(&a, 1400);
        assert!(
            line.starts_with("expected MTU 1400 holds: 2 pod veth(s) at 1400, 1 tunnel(s)"),
            "{line}"
        );
    }

    #[test]
    fn expect_mtu_names_the_pods_still_on_the_old_mtu_and_the_config_that_lags() {
        let n = node("n", 1500, Some((Overlay::Vxlan, 1450)), &[1400, 1500, 1500]);
        let mut a = run(vec![n], calico_at(1500));
        a.expect(1400);
        assert!(!a.consistent);
        let f = find(&a, "pods_not_at_expected_mtu");
        assert_eq!(
            f.arithmetic,
            "pod veth MTU ≠ expected 1400: cali1 (1500), cali2 (1500)"
        );
        assert!(f.summary.starts_with("2 pod(s)"), "{}", f.summary);
        assert_eq!(
            find(&a, "cni_config_not_expected_mtu").severity,
            Severity::Problem
        );
    }

    #[test]
    fn expect_mtu_refuses_a_number_the_tunnel_or_the_probed_path_cannot_carry() {
        let n = probed(
            node("n", 1500, Some((Overlay::Vxlan, 1350)), &[1420]),
            "10.0.0.2",
            1500,
            1450,
        );
        let mut a = run(vec![n], CniFacts::default());
        a.expect(1420);
        find(&a, "tunnel_below_expected_mtu");
        let f = find(&a, "path_below_expected_mtu");
        assert_eq!(
            f.arithmetic,
            "expected pod MTU 1420 + 50 B overlay = 1470 > path MTU 1450 to 10.0.0.2 (probed)"
        );
        // The tightest of all: the tunnel (the base audit says so too).
        assert_eq!(a.recommended_pod_mtu, Some(1350));
    }

    #[test]
    fn expect_mtu_on_cilium_judges_the_routes_into_the_overlay_not_the_veths() {
        // Cilium after `mtu: 1450`: veths stay at the device's 1500, the route into the overlay
        // carries 1400 (1450 − 50).
        let cilium = |route_mtu: u32| cilium_node(1500, 1500, route_mtu);
        let mut a = run(vec![cilium(1400)], CniFacts::default());
        a.expect(1400);
        assert!(
            a.findings
                .iter()
                .all(|f| f.problem != "pods_not_at_expected_mtu"),
            "{:#?}",
            a.findings
        );
        assert!(a
            .findings
            .iter()
            .all(|f| !f.problem.starts_with("routes_not")));
        // What holds is said as what was compared: the route, not the 1500-byte veth.
        let line = crate::check::expect::agreement(&a, 1400);
        assert!(
            line.starts_with(
                "expected MTU 1400 holds: 1 route(s) into the overlay at 1400 (Cilium)"
            ),
            "{line}"
        );
        // Agents not restarted yet: the old route MTU is named.
        let mut a = run(vec![cilium(1450)], CniFacts::default());
        a.expect(1400);
        let f = find(&a, "routes_not_at_expected_mtu");
        assert_eq!(
            f.arithmetic,
            "route MTU into the overlay ≠ expected 1400: 10.0.1.0/24 (1450)"
        );
    }
}
