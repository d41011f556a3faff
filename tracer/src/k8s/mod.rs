//! Kubernetes names for the addresses in events: which pod, service and node a packet belongs
//! to. Sources fill one in-memory [`Inventory`]; [`Inventory::attribute`] answers per event
//! without any API call.
//!
//! Sources (in order of preference, combinable): the API server, listed and watched ([`api`]),
//! a snapshot file (`kubectl get pods,services,endpointslices,nodes -A -o json`, [`snapshot`]),
//! facts of the node itself: /var/log/pods, cgroups, routes ([`node_local`]).

pub mod api;
pub mod conntrack;
pub mod node_local;
pub mod snapshot;

use std::{cell::RefCell, collections::HashSet, fmt, net::IpAddr, str::FromStr, sync::Arc};

use rustc_hash::FxHashMap;

// The names a record carries are part of the event model; re-exported for the sources here.
pub use crate::event::{Attribution, ObjectRef, ServiceRef};

use crate::event::Cache;

/// A pod: its name and the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodInfo {
    pub pod: Arc<ObjectRef>,
    pub node: Option<Arc<str>>,
}

/// What the sources know, indexed for per-event lookups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Pod IP → pod (host-network pods are left out: their IP is the node's).
    pub pods_by_ip: FxHashMap<IpAddr, PodInfo>,
    /// (ClusterIP, port, IP protocol) → service.
    pub services_by_cluster_ip: FxHashMap<(IpAddr, u16, u8), Arc<ServiceRef>>,
    /// (backend IP, target port, IP protocol) → service, from EndpointSlices.
    pub services_by_backend: FxHashMap<(IpAddr, u16, u8), Arc<ServiceRef>>,
    /// (external IP or LoadBalancer ingress IP, service port, IP protocol) → service.
    pub services_by_external_ip: FxHashMap<(IpAddr, u16, u8), Arc<ServiceRef>>,
    /// (nodePort, IP protocol) → service, on any address of `nodes_by_ip`.
    pub services_by_node_port: FxHashMap<(u16, u8), Arc<ServiceRef>>,
    /// Node address (InternalIP, ExternalIP) → node name.
    pub nodes_by_ip: FxHashMap<IpAddr, Arc<str>>,
    /// Another node's pod CIDR → the address its route goes through (that node's address or
    /// tunnel address), from the node's routing table. One entry per prefix.
    pub node_by_pod_cidr: Vec<(Prefix, IpAddr)>,
    /// The objects that say how the CNI is configured (`crate::fix::recognise`), as listed.
    pub cni_objects: Vec<serde_json::Value>,
    /// Node names as records carry them, made once per name.
    pub node_refs: NodeRefs,
}

/// A node's [`ObjectRef`] made once per name and shared by every record that names the node:
/// a fresh one per event would be an allocation per node side. Keyed by the name alone (a
/// node's reference has nothing else), so never stale; not part of the inventory's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRefs(Cache<RefCell<FxHashMap<Arc<str>, Arc<ObjectRef>>>>);

/// Entries kept before the cache starts over: a name from an address (no API) is one per
/// address seen, which nothing bounds.
const MAX_NODE_REFS: usize = 4096;

impl NodeRefs {
    fn get(&self, name: Arc<str>) -> Arc<ObjectRef> {
        let mut refs = self.0 .0.borrow_mut();
        if let Some(r) = refs.get(&name) {
            return r.clone();
        }
        if refs.len() >= MAX_NODE_REFS {
            refs.clear();
        }
        let r = Arc::new(ObjectRef::new(None, name.clone()));
        refs.insert(name, r.clone());
        r
    }
}

/// An address prefix such as `10.244.1.0/24` (host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `None` when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => IpAddr::V4((u32::from(a) & mask32(len)).into()),
            IpAddr::V6(a) if len <= 128 => IpAddr::V6((u128::from(a) & mask128(len)).into()),
            _ => return None,
        };
        Some(Prefix { addr, len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let len: u8 = len.parse().map_err(|_| format!("{s:?}: bad length"))?;
        Prefix::new(addr, len).ok_or_else(|| format!("{s:?}: length too long"))
    }
}

/// The addresses of one event that [`Inventory::attribute`] names. Everything is optional:
/// events carry what their hook could decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP: the ones services have).
    pub proto: Option<u8>,
    /// Inner (pod) addresses and ports: for ICMP too-big events, those of the quoted packet.
    pub src: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dst: Option<IpAddr>,
    pub dport: Option<u16>,
    /// Outer (node-to-node) addresses of an encapsulated packet.
    pub outer_src: Option<IpAddr>,
    pub outer_dst: Option<IpAddr>,
}

impl FlowKey {
    /// The record's flow fields and, when encapsulated, its outer addresses.
    pub fn from_record(rec: &crate::event::Record) -> FlowKey {
        FlowKey {
            proto: rec.flow.proto,
            src: rec.flow.src,
            sport: rec.flow.sport,
            dst: rec.flow.dst,
            dport: rec.flow.dport,
            outer_src: rec.flow.outer.as_ref().map(|o| o.src),
            outer_dst: rec.flow.outer.as_ref().map(|o| o.dst),
        }
    }
}

impl Inventory {
    /// Add `other`'s entries. `other` is taken as the newer data: where both know an address
    /// (an IP reused by a new pod, a service re-created), `other`'s answer wins. Entries only
    /// `self` has are kept, even if `other` would no longer list them: a merge cannot tell "gone"
    /// from "not in this source".
    pub fn merge(&mut self, other: Inventory) {
        self.pods_by_ip.extend(other.pods_by_ip);
        self.services_by_cluster_ip
            .extend(other.services_by_cluster_ip);
        self.services_by_backend.extend(other.services_by_backend);
        self.services_by_external_ip
            .extend(other.services_by_external_ip);
        self.services_by_node_port
            .extend(other.services_by_node_port);
        self.nodes_by_ip.extend(other.nodes_by_ip);
        for (prefix, via) in other.node_by_pod_cidr {
            self.node_by_pod_cidr.retain(|(p, _)| *p != prefix);
            self.node_by_pod_cidr.push((prefix, via));
        }
        self.cni_objects.extend(other.cni_objects);
    }

    pub fn is_empty(&self) -> bool {
        self.pods_by_ip.is_empty()
            && self.services_by_cluster_ip.is_empty()
            && self.services_by_backend.is_empty()
            && self.services_by_external_ip.is_empty()
            && self.services_by_node_port.is_empty()
            && self.nodes_by_ip.is_empty()
            && self.node_by_pod_cidr.is_empty()
    }

    /// Distinct (pods, services, nodes) indexed, for a startup log line. A dual-stack pod counts
    /// once; a service counts when it has any entry (ClusterIP, backend, external or load
    /// balancer IP, node port); a node known
    /// only as a pod CIDR's route target counts once per name it would get.
    pub fn counts(&self) -> (usize, usize, usize) {
        let pods: HashSet<(Option<&str>, &str)> = self
            .pods_by_ip
            .values()
            .map(|p| (p.pod.namespace.as_deref(), &*p.pod.name))
            .collect();
        let services: HashSet<(&str, &str)> = self
            .services_by_cluster_ip
            .values()
            .chain(self.services_by_backend.values())
            .chain(self.services_by_external_ip.values())
            .chain(self.services_by_node_port.values())
            .map(|s| (&*s.namespace, &*s.name))
            .collect();
        let mut nodes: HashSet<Arc<str>> = self.nodes_by_ip.values().cloned().collect();
        nodes.extend(
            self.node_by_pod_cidr
                .iter()
                .map(|(_, via)| self.node_name(*via)),
        );
        (pods.len(), services.len(), nodes.len())
    }

    /// Names for one event's addresses; fields stay `None` when nothing is known.
    ///
    /// - `src_pod`/`dst_pod`: the inner addresses' pods.
    /// - `service`, first match of: destination is a service's front (before DNAT): a
    ///   ClusterIP:port, else an external or LoadBalancer IP:port, else a nodePort on an address
    ///   of a known node (only known node addresses: a nodePort number on any other address is
    ///   just a port); the connection's original destination, from conntrack, is a front
    ///   (after DNAT: [`Inventory::attribute_with`]); destination is a backend (after DNAT, or
    ///   pod-to-pod through a headless service); source is a front or a backend (a reply, or an ICMP error quoting a reply:
    ///   the service is on the sending side).
    /// - `src_node`/`dst_node`, per side, first match of: the outer address of an encapsulated
    ///   packet (the tunnel endpoints are the nodes); the node of the side's pod; the inner
    ///   address as a node address (node-to-node or host-network traffic); the node whose pod
    ///   CIDR holds the inner address (longest prefix), named by its route's target address
    ///   (or that address's node name when one is known).
    pub fn attribute(&self, flow: &FlowKey) -> Attribution {
        self.attribute_with(flow, |_| None)
    }

    /// [`Inventory::attribute`] with `original_dst`: the destination the flow's connection had
    /// before DNAT (address, port, protocol), from conntrack ([`conntrack::Conntrack`]). It is
    /// asked only when the destination is no service front, and its answer names the service
    /// before the backend does: it is what the kernel translated, where EndpointSlices may be
    /// stale or missing.
    pub fn attribute_with(
        &self,
        flow: &FlowKey,
        original_dst: impl FnOnce(&FlowKey) -> Option<(IpAddr, u16, u8)>,
    ) -> Attribution {
        let src_pod = flow.src.and_then(|ip| self.pods_by_ip.get(&ip));
        let dst_pod = flow.dst.and_then(|ip| self.pods_by_ip.get(&ip));
        let key = |ip: Option<IpAddr>, port: Option<u16>| Some((ip?, port?, flow.proto?));
        let service = key(flow.dst, flow.dport)
            .and_then(|k| self.front(k))
            .or_else(|| original_dst(flow).and_then(|k| self.front(k)))
            .or_else(|| key(flow.dst, flow.dport).and_then(|k| self.services_by_backend.get(&k)))
            .or_else(|| self.service_at(flow.src, flow.sport, flow.proto))
            .cloned();
        Attribution {
            src_pod: src_pod.map(|p| p.pod.clone()),
            dst_pod: dst_pod.map(|p| p.pod.clone()),
            service,
            src_node: self.node_of(flow.outer_src, src_pod, flow.src),
            dst_node: self.node_of(flow.outer_dst, dst_pod, flow.dst),
        }
    }

    /// The service `(ip, port, proto)` is the front or a backend of.
    fn service_at(
        &self,
        ip: Option<IpAddr>,
        port: Option<u16>,
        proto: Option<u8>,
    ) -> Option<&Arc<ServiceRef>> {
        let key = (ip?, port?, proto?);
        self.front(key)
            .or_else(|| self.services_by_backend.get(&key))
    }

    /// The service whose ClusterIP, external or LoadBalancer IP, or nodePort (on a known node
    /// address) `(ip, port, proto)` is: where clients send before DNAT.
    pub fn front(&self, key: (IpAddr, u16, u8)) -> Option<&Arc<ServiceRef>> {
        let (ip, port, proto) = key;
        self.services_by_cluster_ip
            .get(&key)
            .or_else(|| self.services_by_external_ip.get(&key))
            .or_else(|| {
                self.nodes_by_ip
                    .contains_key(&ip)
                    .then(|| self.services_by_node_port.get(&(port, proto)))
                    .flatten()
            })
    }

    /// One side's node (see [`Inventory::attribute`]). An outer address that is not a known
    /// node falls through to the pod's node: both name the same machine when the data agree.
    fn node_of(
        &self,
        outer: Option<IpAddr>,
        pod: Option<&PodInfo>,
        inner: Option<IpAddr>,
    ) -> Option<Arc<ObjectRef>> {
        let by_ip = |ip: Option<IpAddr>| ip.and_then(|ip| self.nodes_by_ip.get(&ip)).cloned();
        let name = by_ip(outer)
            .or_else(|| pod.and_then(|p| p.node.clone()))
            .or_else(|| by_ip(inner))
            .or_else(|| self.node_by_cidr(inner?))?;
        Some(self.node_refs.get(name))
    }

    fn node_by_cidr(&self, ip: IpAddr) -> Option<Arc<str>> {
        let (_, via) = self
            .node_by_pod_cidr
            .iter()
            .filter(|(p, _)| p.contains(ip))
            .max_by_key(|(p, _)| p.prefix_len())?;
        Some(self.node_name(*via))
    }

    /// Without the API a node is known by its address only: that is its name then.
    fn node_name(&self, ip: IpAddr) -> Arc<str> {
        self.nodes_by_ip
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| ip.to_string().into())
    }
}

#[cfg(test)]
mod tests;
