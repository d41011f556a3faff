//! `tracer check`: the MTU audit. No tracing: it reads each namespace's devices, routes and
//! learned path MTUs over netlink, the CNI's configured MTU from the node's files, optionally
//! probes the path MTU toward peer nodes, and reports every mismatch with its arithmetic.
//!
//! The verdict calls [`audit`] (or [`audit_static`] at start-up: no probe, milliseconds) and
//! reads [`Audit::findings`].
use std::{net::IpAddr, thread};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;

use crate::{
    host::HostRoot,
    ifaces::Iface,
    mtu::Overlay,
    netlink::{
        link::{self, Link},
        route::{self, Route},
    },
    netns::Namespaces,
};

pub mod cni;
pub mod expect;
pub mod probe;
pub mod report;
pub mod rules;

pub use cni::{Cni, CniFacts, CniMtu};
pub use probe::{Peer, ProbeLimits, ProbeResult, ProbeStatus};

/// At most this many peers are probed per namespace (discovered ones first come first).
pub const MAX_PEERS: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct AuditOptions {
    /// Namespaces to audit (`--netns`: a name under /run/netns or a path); empty: the
    /// caller's own namespace.
    pub netns: Vec<String>,
    pub host_root: HostRoot,
    /// `None`: static audit only (no packet is sent).
    pub probe: Option<ProbeOptions>,
    /// `--expect-mtu`: the pod MTU a fix set, to confirm (`expect.rs`).
    pub expect_mtu: Option<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// Probed from every audited namespace, besides the peers found in it.
    pub peers: Vec<IpAddr>,
    pub limits: ProbeLimits,
}

/// How bad a finding is. Only problems make `tracer check` exit 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Pod traffic of full size does not fit (or fits only thanks to ICMP frag-needed).
    Problem,
    /// Inconsistent but not hitting pod traffic: host-originated or forwarded traffic, pods
    /// that kept an old MTU, values that could not be checked.
    Warning,
}

/// One mismatch, with the numbers behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Short stable id, e.g. `pod_mtu_exceeds_path`.
    pub problem: String,
    pub severity: Severity,
    /// One sentence.
    pub summary: String,
    /// e.g. `pod veth MTU 1500 (calicli) + VXLAN 50 = 1550 > path MTU 1450 to 10.210.0.2 (probed)`.
    pub arithmetic: String,
    /// The largest pod (inner) MTU that fits, when the fix is an MTU.
    pub recommended_mtu: Option<u32>,
    pub fix: Option<String>,
    /// `netns/device`, `netns`, or `cluster` when it spans namespaces.
    #[serde(rename = "where")]
    pub location: String,
}

/// What a device is for the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Uplink,
    Tunnel,
    /// The host end of a pod's veth.
    Pod,
    Loopback,
    Other,
}

/// The encapsulation of a tunnel device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Encap {
    #[serde(skip)]
    pub overlay: Overlay,
    /// `VXLAN`, `IPIP`, ...
    pub name: &'static str,
    pub overhead: u32,
    pub outer_v6: bool,
    /// The outer family could not be read (no local/remote address): IPv4 assumed.
    pub outer_assumed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    /// Link kind (`veth`, `vxlan`, `ipip`, ...; none for physical NICs).
    pub kind: Option<String>,
    pub role: Role,
    pub encap: Option<Encap>,
}

/// A route with an explicit `mtu` metric, or a learned PMTU exception of the route cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteMtu {
    /// `10.244.1.0/24`, `default`.
    pub dst: String,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    pub mtu: u32,
    pub locked: bool,
}

/// Facts of one audited namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NsAudit {
    /// As given (`lab-old`, `/proc/1/ns/net`) or `root`.
    pub netns: String,
    pub devices: Vec<Device>,
    /// Routes carrying an `mtu` metric (`ip route ... mtu N`, Cilium).
    pub route_mtus: Vec<RouteMtu>,
    /// Learned path MTUs (`ip route show cache`).
    pub learned_pmtu: Vec<RouteMtu>,
    pub peers: Vec<Peer>,
    pub probes: Vec<ProbeResult>,
    /// IPv6 routes on pod or tunnel devices: pods use IPv6, so 1280 is a floor.
    pub ipv6_in_use: bool,
    pub notes: Vec<String>,
}

impl NsAudit {
    pub fn by_role(&self, role: Role) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |d| d.role == role)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// No finding of severity `problem`.
    pub consistent: bool,
    /// The largest pod MTU that fits every path the audit saw, when some finding needs one.
    pub recommended_pod_mtu: Option<u32>,
    pub probed: bool,
    pub namespaces: Vec<NsAudit>,
    pub cni: CniFacts,
    pub findings: Vec<Finding>,
    /// The pod MTU `--expect-mtu` asked to confirm (its findings are among `findings`).
    pub expected_mtu: Option<u32>,
}

impl Audit {
    /// Add `--expect-mtu mtu`'s findings and judge again.
    pub fn expect(&mut self, mtu: u32) {
        self.findings.extend(expect::findings(self, mtu));
        self.findings.sort_by_key(|f| f.severity);
        let consistent = self.problems().next().is_none();
        self.consistent = consistent;
        self.recommended_pod_mtu = self.problems().filter_map(|f| f.recommended_mtu).min();
        self.expected_mtu = Some(mtu);
    }

    /// Devices of `role` over every audited namespace.
    pub fn devices_of(&self, role: Role) -> usize {
        self.namespaces
            .iter()
            .map(|n| n.by_role(role).count())
            .sum()
    }

    /// Probes that got an answer, over every audited namespace.
    pub fn probes_answered(&self) -> usize {
        self.namespaces
            .iter()
            .flat_map(|n| &n.probes)
            .filter(|p| p.status == ProbeStatus::Ok)
            .count()
    }

    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }
}

/// The full audit: static facts, then (with `opts.probe`) the path-MTU probe, then the rules.
/// Errors only for what makes the audit meaningless (an unknown `--netns`, no netlink); a
/// missing file or an unanswered probe is a fact in the result.
pub fn audit(opts: &AuditOptions) -> Result<Audit> {
    let namespaces = resolve(&opts.netns)?;
    let mut audit = audit_namespaces(&namespaces, &opts.host_root, opts.probe.as_ref())?;
    if let Some(mtu) = opts.expect_mtu {
        audit.expect(mtu);
    }
    Ok(audit)
}

/// Devices, routes, cache and CNI only, of namespaces already resolved: cheap enough for a
/// tracing run's start-up.
pub fn audit_static(namespaces: &Namespaces, host_root: &HostRoot) -> Result<Audit> {
    audit_namespaces(namespaces, host_root, None)
}

fn audit_namespaces(
    namespaces: &Namespaces,
    host_root: &HostRoot,
    probe: Option<&ProbeOptions>,
) -> Result<Audit> {
    // Our own namespace is read in place: entering it would need CAP_SYS_ADMIN for nothing.
    let own = !namespaces.named;
    let cni = cni::read(host_root);
    // One thread per namespace: setns is per thread, and the probes' waits then overlap.
    let handles: Vec<_> = namespaces
        .list
        .iter()
        .cloned()
        .map(|ns| {
            let probe = probe.cloned();
            thread::Builder::new()
                .name(format!("check-{}", ns.label))
                .spawn(move || -> Result<NsAudit> {
                    let label = ns.label.clone();
                    let run = || gather(&label, probe.as_ref());
                    if own {
                        run()
                    } else {
                        ns.enter(run)
                    }
                })
                .context("spawn audit thread")
        })
        .collect::<Result<_>>()?;
    let mut audited = Vec::new();
    for h in handles {
        audited.push(h.join().map_err(|_| anyhow!("audit thread panicked"))??);
    }
    Ok(rules::evaluate(audited, cni, probe.is_some()))
}

/// `--netns` as `tracer run` resolves it, after a check that says why a non-root caller fails.
fn resolve(names: &[String]) -> Result<Namespaces> {
    if !names.is_empty() && unsafe { libc::geteuid() } != 0 {
        bail!("--netns needs root (entering a network namespace needs CAP_SYS_ADMIN)");
    }
    Namespaces::resolve(names)
}

/// Everything about the calling thread's namespace.
fn gather(label: &str, probe_opts: Option<&ProbeOptions>) -> Result<NsAudit> {
    let links = link::links().context("listing devices (netlink)")?;
    // The `local` table holds the node's own addresses, no path to anywhere.
    let routes: Vec<Route> = route::routes()
        .context("listing routes (netlink)")?
        .into_iter()
        .filter(|r| r.table != route::TABLE_LOCAL && !r.cloned)
        .collect();
    let mut notes = Vec::new();
    let cache = route::route_exceptions().unwrap_or_else(|e| {
        notes.push(format!("route cache not readable: {e:#}"));
        Vec::new()
    });
    let name_of = |i: Option<u32>| {
        i.and_then(|i| links.iter().find(|l| l.ifindex == i))
            .map(|l| l.name.clone())
    };
    let default_oifs: Vec<u32> = routes
        .iter()
        .filter(|r| r.is_default())
        .filter_map(|r| r.oif)
        .collect();
    let mut devices: Vec<Device> = links
        .iter()
        .map(|l| {
            let (role, encap) = classify(l, &default_oifs, &mut notes);
            Device {
                name: l.name.clone(),
                ifindex: l.ifindex,
                mtu: l.mtu,
                kind: l.kind.clone(),
                role,
                encap,
            }
        })
        .collect();
    // No default route (a lab node, an isolated host): every plain device is an uplink, as
    // `tracer run` chooses its tc devices.
    if !devices.iter().any(|d| d.role == Role::Uplink) {
        for d in devices.iter_mut().filter(|d| d.role == Role::Other) {
            d.role = Role::Uplink;
        }
    }
    let route_mtu = |r: &Route| RouteMtu {
        dst: match r.dst {
            Some(d) if r.dst_len > 0 => format!("{d}/{}", r.dst_len),
            Some(d) => format!("{d}"),
            None => "default".into(),
        },
        gateway: r.gateway,
        dev: name_of(r.oif),
        mtu: r.mtu.unwrap_or(0),
        locked: r.mtu_locked,
    };
    let route_mtus = routes
        .iter()
        .filter(|r| r.mtu.is_some())
        .map(route_mtu)
        .collect();
    let learned_pmtu = cache
        .iter()
        .filter(|r| r.mtu.is_some())
        .map(route_mtu)
        .collect();
    let role_of = |oif: Option<u32>| {
        oif.and_then(|i| devices.iter().find(|d| d.ifindex == i))
            .map(|d| d.role)
    };
    let ipv6_in_use = routes.iter().any(|r| {
        r.v6 && matches!(role_of(r.oif), Some(Role::Pod | Role::Tunnel))
            && !r
                .dst
                .is_some_and(|d| matches!(d, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 || a.is_multicast()))
    });
    let mut peers = discover_peers(&links, &devices, &routes, &mut notes);
    if let Some(p) = probe_opts {
        for addr in &p.peers {
            if !peers.iter().any(|x| x.addr == *addr) {
                peers.insert(
                    0,
                    Peer {
                        addr: *addr,
                        source: "--peer".into(),
                    },
                );
            }
        }
    }
    if peers.len() > MAX_PEERS {
        notes.push(format!(
            "{} peers found; probing the first {MAX_PEERS}",
            peers.len()
        ));
    }
    let probes = match probe_opts {
        Some(p) => probe::probe(&peers[..peers.len().min(MAX_PEERS)], &links, p.limits),
        None => Vec::new(),
    };
    Ok(NsAudit {
        netns: label.to_string(),
        devices,
        route_mtus,
        learned_pmtu,
        peers,
        probes,
        ipv6_in_use,
        notes,
    })
}

fn classify(l: &Link, default_oifs: &[u32], notes: &mut Vec<String>) -> (Role, Option<Encap>) {
    let iface = Iface {
        name: l.name.clone(),
        ifindex: l.ifindex,
        mtu: l.mtu,
        driver: l.kind.clone(),
        link_type: l.link_type,
    };
    if iface.is_loopback() {
        return (Role::Loopback, None);
    }
    let wireguard = l.kind.as_deref() == Some("wireguard");
    if iface.is_tunnel() || wireguard {
        let overlay = match (l.kind.as_deref(), l.name.as_str()) {
            (Some("vxlan"), _) | (_, "vxlan.calico" | "flannel.1" | "cilium_vxlan") => {
                Some(Overlay::Vxlan)
            }
            (Some("ipip"), _) | (_, "tunl0") => Some(Overlay::Ipip),
            (Some("geneve"), _) | (_, "cilium_geneve") => Some(Overlay::Geneve),
            (Some("wireguard"), _) => Some(Overlay::Wireguard),
            _ => None,
        };
        let Some(overlay) = overlay else {
            notes.push(format!(
                "{}: tunnel of kind {} with an overhead this audit does not know: not checked",
                l.name,
                l.kind.as_deref().unwrap_or("unknown")
            ));
            return (Role::Tunnel, None);
        };
        // The outer family: the tunnel's own addresses, else its FDB's remotes (Calico and
        // flannel program those), else an assumption that is said out loud.
        let mut outer = l.tunnel_local.or(l.tunnel_remote);
        if outer.is_none() && overlay == Overlay::Vxlan {
            outer = link::fdb_remotes(l.ifindex)
                .ok()
                .and_then(|v| v.first().copied());
        }
        let (outer_v6, outer_assumed) = match (overlay, outer) {
            (Overlay::Ipip, _) => (false, false),
            (_, Some(ip)) => (ip.is_ipv6(), false),
            (_, None) => (false, true),
        };
        return (
            Role::Tunnel,
            Some(Encap {
                overlay,
                name: overlay.name(),
                overhead: overlay.overhead(outer_v6),
                outer_v6,
                outer_assumed,
            }),
        );
    }
    if iface.is_pod_side() {
        return (Role::Pod, None);
    }
    if default_oifs.contains(&l.ifindex) {
        return (Role::Uplink, None);
    }
    (Role::Other, None)
}

/// Peer nodes as the namespace's own configuration names them.
fn discover_peers(
    links: &[Link],
    devices: &[Device],
    routes: &[Route],
    notes: &mut Vec<String>,
) -> Vec<Peer> {
    let mut peers: Vec<Peer> = Vec::new();
    let mut add = |addr: IpAddr, source: String| {
        if !addr.is_loopback() && !addr.is_unspecified() && !peers.iter().any(|p| p.addr == addr) {
            peers.push(Peer { addr, source });
        }
    };
    for d in devices.iter().filter(|d| d.role == Role::Tunnel) {
        let Some(l) = links.iter().find(|l| l.ifindex == d.ifindex) else {
            continue;
        };
        if let Some(r) = l.tunnel_remote.filter(|r| !r.is_multicast()) {
            add(r, format!("remote of {}", d.name));
        }
        if l.kind.as_deref() == Some("vxlan") {
            match link::fdb_remotes(l.ifindex) {
                Ok(v) => v
                    .into_iter()
                    .filter(|r| !r.is_multicast())
                    .for_each(|r| add(r, format!("FDB entry of {}", d.name))),
                Err(e) => notes.push(format!("{}: FDB not readable: {e:#}", d.name)),
            }
        }
        // IPIP routes name the peer node as their gateway (`via NODE dev tunl0 onlink`);
        // VXLAN routes name the peer's tunnel address instead, which is no underlay peer.
        if d.encap.as_ref().is_some_and(|e| e.overlay == Overlay::Ipip) {
            for r in routes.iter().filter(|r| r.oif == Some(d.ifindex)) {
                if let Some(gw) = r.gateway {
                    add(gw, format!("gateway of {} route {}", d.name, show_dst(r)));
                }
            }
        }
    }
    // Routed CNIs (Calico BGP, flannel host-gw): pod CIDRs via the peer node on the uplink.
    for d in devices.iter().filter(|d| d.role == Role::Uplink) {
        for r in routes
            .iter()
            .filter(|r| r.oif == Some(d.ifindex) && !r.is_default())
        {
            if let Some(gw) = r.gateway {
                add(gw, format!("gateway of route {}", show_dst(r)));
            }
        }
    }
    peers
}

fn show_dst(r: &Route) -> String {
    match r.dst {
        Some(d) => format!("{d}/{}", r.dst_len),
        None => "default".into(),
    }
}
