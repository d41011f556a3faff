//! The Kubernetes names a record carries (JSONL `src_pod`, `dst_pod`, `service`, `src_node`,
//! `dst_node`). They are part of the event model; `k8s` finds them ([`crate::k8s::Inventory`])
//! and depends on this module, never the other way round.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A namespaced object (`namespace` is null for nodes).
///
/// Names are shared (`Arc<str>`): every event about a pod carries its name, and a reference
/// count is cheaper than a copy per event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub namespace: Option<Arc<str>>,
    pub name: Arc<str>,
    /// A pod's workload as `kubectl` names it (`deployment/order-api`, `statefulset/redis`,
    /// `daemonset/…`, `job/…`; `pod/<name>` when nothing controls it), from its controller's
    /// `ownerReferences`: what to restart so that the pod gets a new veth. Absent when unknown
    /// (node-local names, nodes, logs of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Arc<str>>,
}

impl ObjectRef {
    /// A node, or a pod whose workload is not known.
    pub fn new(namespace: Option<Arc<str>>, name: Arc<str>) -> Self {
        ObjectRef {
            namespace,
            name,
            workload: None,
        }
    }
}

/// A service a packet was addressed to (by ClusterIP, external or LoadBalancer IP, node port)
/// or reached (by a backend).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The service port (`spec.ports[].port`), when known.
    pub port: Option<u16>,
    /// The port's name (`http`, `redis`), when it has one.
    pub port_name: Option<Arc<str>>,
}

/// The names an event gains: the record's names section. Null when unknown.
///
/// Each name is shared whole (`Arc`) with the inventory that found it: an event costs one
/// reference count per name instead of one per string in it, and the record stays small
/// (it is moved several times on its way to the sinks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub src_pod: Option<Arc<ObjectRef>>,
    pub dst_pod: Option<Arc<ObjectRef>>,
    pub service: Option<Arc<ServiceRef>>,
    pub src_node: Option<Arc<ObjectRef>>,
    pub dst_node: Option<Arc<ObjectRef>>,
}

impl Attribution {
    /// Whether any name is known.
    pub fn any(&self) -> bool {
        self.src_pod.is_some()
            || self.dst_pod.is_some()
            || self.service.is_some()
            || self.src_node.is_some()
            || self.dst_node.is_some()
    }
}
