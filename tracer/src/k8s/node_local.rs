//! Names from the node itself, with no API and no snapshot: the lowest-precedence source.
//!
//! - **Local pods.** The kubelet keeps `/var/log/pods/<namespace>_<pod>_<uid>/` per pod. The
//!   pod's cgroup carries the same uid (cgroupfs driver `…/kubepods/burstable/pod<uid>/…`,
//!   systemd driver `…/kubepods-burstable-pod<uid with _>.slice/…`), which leads to one of its
//!   processes; that process's `/proc/PID/net/fib_trie` and `if_inet6` list the pod's addresses.
//!   Pods in the host's network namespace are left out: their address is the node's.
//! - **This node.** Its name is the hostname (as the kubelet lowercases it); its own addresses
//!   (those of PID 1's namespace) get that name.
//! - **Other nodes' pod CIDRs.** Routes of the watched namespaces that an overlay or CNI
//!   installs (through a tunnel device, by BIRD, or inside flannel's network) say which node
//!   address a remote pod CIDR is reached through. Without the API that address is the node's
//!   only name.
//! - **The CNI**, from the first file of `/etc/cni/net.d` (the one the runtime uses): reported,
//!   not used for names.
use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{Inventory, ObjectRef, PodInfo, Prefix};
use crate::{host::HostRoot, ifaces, netlink::route as routes, netns::Netns};

/// What node-local discovery found.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub inventory: Inventory,
    /// This node's name (its hostname), when readable.
    pub node: Option<String>,
    /// `calico (10-calico.conflist, mtu 1440)`.
    pub cni: Option<String>,
    /// Pods named from their own network namespace.
    pub local_pods: usize,
    /// Pods in the node's network namespace (not named: their address is the node's).
    pub host_network_pods: usize,
    /// Pod directories without a running process (the kubelet keeps logs of ended pods).
    pub not_running: usize,
    /// Problems worth a line each; discovery goes on past all of them.
    pub warnings: Vec<String>,
}

impl Discovery {
    /// One line for the start-up block.
    pub fn summary(&self) -> String {
        let cni = self
            .cni
            .as_ref()
            .map_or("no CNI config".to_string(), |c| format!("CNI {c}"));
        let node = self.node.as_deref().unwrap_or("(hostname unknown)");
        let mut pods = format!("{} local pods", self.local_pods);
        let mut extra = Vec::new();
        if self.host_network_pods > 0 {
            extra.push(format!("{} host-network", self.host_network_pods));
        }
        if self.not_running > 0 {
            extra.push(format!("{} not running", self.not_running));
        }
        if !extra.is_empty() {
            pods.push_str(&format!(" ({} skipped)", extra.join(", ")));
        }
        let cidrs = &self.inventory.node_by_pod_cidr;
        let mut shown: Vec<String> = cidrs
            .iter()
            .take(4)
            .map(|(p, via)| format!("{p} via {via}"))
            .collect();
        if cidrs.len() > shown.len() {
            shown.push("…".into());
        }
        let list = if shown.is_empty() {
            String::new()
        } else {
            format!(": {}", shown.join(", "))
        };
        format!(
            "{cni}, node {node}: {pods}, {} remote pod CIDRs{list}",
            cidrs.len()
        )
    }
}

/// Read the node's facts through `host` and the routes of `watched` (the namespaces the
/// tracer watches: the node's own, or the lab's nodes). Never fails: what cannot be read
/// becomes a warning.
pub fn discover(host: &HostRoot, watched: &[Netns]) -> Discovery {
    let proc = host.proc();
    let mut d = Discovery {
        node: hostname(host, &proc),
        ..Discovery::default()
    };
    if d.node.is_none() {
        d.warnings.push(format!(
            "no hostname in {} or {}: local pods are named without their node",
            proc.join("sys/kernel/hostname").display(),
            host.path("/etc/hostname").display()
        ));
    }
    let kubelet = local_pods(host, &proc, &mut d);
    let (cni, warnings) = cni_config(host);
    d.cni = cni;
    d.warnings.extend(warnings);
    let pod_networks = flannel_networks(host);
    for ns in watched {
        let listed = ns.enter(|| Ok((ifaces::list()?, routes::routes()?)));
        match listed {
            Ok((ifs, routes)) => {
                for (prefix, via) in remote_pod_cidrs(&routes, &ifs, &pod_networks) {
                    if !d
                        .inventory
                        .node_by_pod_cidr
                        .iter()
                        .any(|(p, _)| *p == prefix)
                    {
                        d.inventory.node_by_pod_cidr.push((prefix, via));
                    }
                }
            }
            Err(e) => d
                .warnings
                .push(format!("routes of {} unreadable: {e:#}", ns.label)),
        }
    }
    // On a machine that is no Kubernetes node, naming its own addresses would only add noise.
    if kubelet || d.cni.is_some() || !d.inventory.node_by_pod_cidr.is_empty() {
        node_addresses(&proc, &mut d);
    }
    d
}

/// A pod as `/var/log/pods/<namespace>_<name>_<uid>` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDir {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Namespaces and pod names are DNS labels/subdomains (no `_`), so the name splits in three.
pub fn parse_pod_dir(name: &str) -> Option<PodDir> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || !is_uid(uid) {
        return None;
    }
    Some(PodDir {
        namespace: ns.to_string(),
        name: pod.to_string(),
        uid: uid.to_ascii_lowercase(),
    })
}

/// A pod UID: a dashed UUID, or the 32 hex digits of a static pod's config hash.
fn is_uid(s: &str) -> bool {
    (32..=36).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The pod UID in a `/proc/PID/cgroup` file, if the process belongs to a pod. Every line is
/// looked at (cgroup v1 hierarchies and the v2 `0::` line alike).
pub fn pod_uid_in_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        if !path.contains("kubepods") {
            continue;
        }
        for comp in path.split('/') {
            // cgroupfs driver: `pod<uid>`.
            if let Some(uid) = comp.strip_prefix("pod").filter(|u| is_uid(u)) {
                return Some(uid.to_ascii_lowercase());
            }
            // systemd driver: `kubepods-<qos>-pod<uid, - as _>.slice` (no dash: it nests).
            if let Some(rest) = comp.strip_suffix(".slice") {
                if let Some(i) = rest.rfind("-pod") {
                    let uid = rest[i + 4..].replace('_', "-");
                    if is_uid(&uid) {
                        return Some(uid.to_ascii_lowercase());
                    }
                }
            }
        }
    }
    None
}

/// IPv4 addresses the namespace owns: the `/32 host LOCAL` leaves of `/proc/net/fib_trie`,
/// without loopback. Each appears in both the Main and the Local trie: listed once.
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut leaf: Option<Ipv4Addr> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if t.starts_with("+-- ") || !line.starts_with(' ') {
            leaf = None;
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = leaf.filter(|a| !a.is_loopback() && !out.contains(a)) {
                out.push(a);
            }
        }
    }
    out
}

/// Global-scope IPv6 addresses of `/proc/net/if_inet6`
/// (`address ifindex prefixlen scope flags name`), without those whose duplicate address
/// detection failed.
pub fn parse_if_inet6_global(text: &str) -> Vec<Ipv6Addr> {
    const IFA_F_DADFAILED: u32 = 0x08;
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [addr, _, _, scope, flags, ..] = cols[..] else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            if addr.len() != 32 || scope != "00" || flags & IFA_F_DADFAILED != 0 {
                return None;
            }
            Some(Ipv6Addr::from(u128::from_str_radix(addr, 16).ok()?))
        })
        .collect()
}

/// This node's name as [`discover`] finds it, alone (no pods, no routes).
pub fn node_name(host: &HostRoot) -> Option<String> {
    hostname(host, &host.proc())
}

/// The kubelet's default node name: the hostname, lowercased.
fn hostname(host: &HostRoot, proc: &Path) -> Option<String> {
    [proc.join("sys/kernel/hostname"), host.path("/etc/hostname")]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .find(|s| !s.is_empty())
}

/// The node's network namespace: PID 1's. Reading it needs ptrace rights over PID 1; without
/// them (a restricted container) the tracer's own namespace stands in, which is the node's in
/// a `hostNetwork` pod.
fn host_netns(proc: &Path) -> Option<u64> {
    fs::metadata(proc.join("1/ns/net"))
        .or_else(|_| fs::metadata("/proc/thread-self/ns/net"))
        .ok()
        .map(|m| m.ino())
}

fn addresses(net_dir: &Path) -> Option<Vec<IpAddr>> {
    let v4 = fs::read_to_string(net_dir.join("fib_trie")).ok();
    let v6 = fs::read_to_string(net_dir.join("if_inet6")).ok();
    if v4.is_none() && v6.is_none() {
        return None;
    }
    let mut out: Vec<IpAddr> = v4
        .map(|t| parse_fib_trie_local(&t))
        .unwrap_or_default()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    out.extend(
        v6.map(|t| parse_if_inet6_global(&t))
            .unwrap_or_default()
            .into_iter()
            .map(IpAddr::V6),
    );
    Some(out)
}

/// Whether the kubelet's pod log directory is there.
fn local_pods(host: &HostRoot, proc: &Path, d: &mut Discovery) -> bool {
    let logs = host.path("/var/log/pods");
    let entries = match fs::read_dir(&logs) {
        Ok(e) => e,
        Err(e) => {
            d.warnings.push(format!(
                "no pods: {} unreadable ({e}); not a Kubernetes node, or --host-root not set?",
                logs.display()
            ));
            return false;
        }
    };
    let mut pods = Vec::new();
    let mut odd = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match parse_pod_dir(&name) {
            Some(p) => pods.push(p),
            None => odd.push(name),
        }
    }
    if !odd.is_empty() {
        odd.sort();
        d.warnings.push(format!(
            "{} entries of {} are not <namespace>_<pod>_<uid>, skipped: {}",
            odd.len(),
            logs.display(),
            odd.join(", ")
        ));
    }
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let uids: HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
    let pids = pids_by_pod_uid(proc, &uids);
    let host_ns = host_netns(proc);
    for pod in &pods {
        let Some(candidates) = pids.get(&pod.uid) else {
            d.not_running += 1;
            continue;
        };
        // The first process whose namespace can be read: others of the pod share it.
        let found = candidates.iter().find_map(|pid| {
            let dir = proc.join(pid.to_string());
            let ino = fs::metadata(dir.join("ns/net")).ok()?.ino();
            if Some(ino) == host_ns {
                return Some(None);
            }
            addresses(&dir.join("net")).map(Some)
        });
        match found {
            None => d.not_running += 1,
            Some(None) => d.host_network_pods += 1,
            Some(Some(addrs)) if addrs.is_empty() => d.warnings.push(format!(
                "pod {}/{} has no address yet",
                pod.namespace, pod.name
            )),
            Some(Some(addrs)) => {
                d.local_pods += 1;
                let info = PodInfo {
                    pod: std::sync::Arc::new(ObjectRef::new(
                        Some(pod.namespace.as_str().into()),
                        pod.name.as_str().into(),
                    )),
                    node: d.node.as_deref().map(Into::into),
                };
                for ip in addrs {
                    d.inventory.pods_by_ip.insert(ip, info.clone());
                }
            }
        }
    }
    true
}

/// Processes of each pod in `uids`, lowest PID first (the pod's sandbox usually).
fn pids_by_pod_uid(proc: &Path, uids: &HashSet<&str>) -> HashMap<String, Vec<u32>> {
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    if uids.is_empty() {
        return out;
    }
    let Ok(entries) = fs::read_dir(proc) else {
        return out;
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        // A process may end between the listing and the read: skipped.
        let Ok(text) = fs::read_to_string(proc.join(format!("{pid}/cgroup"))) else {
            continue;
        };
        if let Some(uid) = pod_uid_in_cgroup(&text).filter(|u| uids.contains(u.as_str())) {
            out.entry(uid).or_default().push(pid);
        }
    }
    out
}

/// The node's own addresses (PID 1's namespace, else the tracer's), named by its hostname.
fn node_addresses(proc: &Path, d: &mut Discovery) {
    let Some(node) = d.node.as_deref().map(std::sync::Arc::<str>::from) else {
        return;
    };
    let addrs = addresses(&proc.join("1/net")).or_else(|| addresses(&proc.join("self/net")));
    for ip in addrs.unwrap_or_default() {
        if !d.inventory.pods_by_ip.contains_key(&ip) {
            d.inventory.nodes_by_ip.insert(ip, node.clone());
        }
    }
}

/// Routes that lead to another node's pods: through a tunnel device (IPIP, VXLAN), installed
/// by BIRD (Calico BGP), or inside a known pod network (flannel host-gw). Other routes with a
/// gateway (a default route, a static route to another subnet) say nothing about pods.
pub fn remote_pod_cidrs(
    routes: &[routes::Route],
    ifs: &[ifaces::Iface],
    pod_networks: &[Prefix],
) -> Vec<(Prefix, IpAddr)> {
    let mut out: Vec<(Prefix, IpAddr)> = Vec::new();
    for r in routes {
        let (Some(dst), Some(via)) = (r.dst, r.gateway) else {
            continue;
        };
        if r.table != routes::TABLE_MAIN || r.kind != routes::TYPE_UNICAST || r.dst_len == 0 {
            continue;
        }
        let Some(prefix) = Prefix::new(dst, r.dst_len) else {
            continue;
        };
        let tunnel = r
            .oif
            .and_then(|i| ifs.iter().find(|f| f.ifindex == i))
            .is_some_and(ifaces::Iface::is_tunnel);
        let in_pod_network = pod_networks
            .iter()
            .any(|n| n.prefix_len() <= prefix.prefix_len() && n.contains(prefix.addr()));
        if (tunnel || r.protocol == routes::PROTO_BIRD || in_pod_network)
            && !out.iter().any(|(p, _)| *p == prefix)
        {
            out.push((prefix, via));
        }
    }
    out
}

/// flannel's cluster-wide pod networks (`/run/flannel/subnet.env`), to recognise its host-gw
/// routes, which go through the uplink like any other route.
fn flannel_networks(host: &HostRoot) -> Vec<Prefix> {
    let Ok(text) = fs::read_to_string(host.path("/run/flannel/subnet.env")) else {
        return Vec::new();
    };
    parse_flannel_env(&text)
}

pub fn parse_flannel_env(text: &str) -> Vec<Prefix> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            matches!(k.trim(), "FLANNEL_NETWORK" | "FLANNEL_IPV6_NETWORK")
                .then(|| v.trim().parse().ok())?
        })
        .collect()
}

/// The CNI plugin the runtime uses: the first `*.conf`, `*.conflist` or `*.json` of
/// `/etc/cni/net.d` by name that parses. Files that do not parse are one warning each.
fn cni_config(host: &HostRoot) -> (Option<String>, Vec<String>) {
    let dir = host.path("/etc/cni/net.d");
    let mut warnings = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return (None, warnings);
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
        })
        .collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let parsed = fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_cni(&t));
        match parsed {
            Ok((kind, mtu)) => {
                let mtu = mtu.map_or(String::new(), |m| format!(", mtu {m}"));
                return (Some(format!("{kind} ({file}{mtu})")), warnings);
            }
            Err(e) => warnings.push(format!("{}: not a usable CNI config: {e}", path.display())),
        }
    }
    (None, warnings)
}

/// The main plugin's `type` (the first of a conflist's `plugins`) and its `mtu`, if a number.
pub fn parse_cni(text: &str) -> Result<(String, Option<u64>), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let plugin = match v.get("plugins") {
        Some(list) => list
            .as_array()
            .and_then(|l| l.first())
            .ok_or("`plugins` is not a non-empty list")?,
        None => &v,
    };
    let kind = plugin
        .get("type")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("no plugin `type`")?;
    Ok((kind.to_string(), plugin.get("mtu").and_then(|m| m.as_u64())))
}

#[cfg(test)]
mod tests;
