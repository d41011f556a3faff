//! The Kubernetes names a record carries (JSONL `src_pod`, `dst_pod`, `service`, `src_node`,
//! `dst_node`). They are part of the event model; `k8s` finds them ([`crate::k8s::Inventory`])
//! and depends on this module, never the other way round.

use std::sync::{Arc, OnceLock};

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
    #[serde(skip)]
    json: JsonText,
}

impl ObjectRef {
    /// A node, or a pod whose workload is not known.
    pub fn new(namespace: Option<Arc<str>>, name: Arc<str>) -> Self {
        ObjectRef {
            namespace,
            name,
            workload: None,
            json: JsonText::default(),
        }
    }

    /// A pod and the workload that controls it.
    pub fn with_workload(self, workload: Option<Arc<str>>) -> Self {
        ObjectRef { workload, ..self }
    }

    /// This name as the event log writes it, made by `write` the first time and kept.
    pub(crate) fn json(&self, write: impl FnOnce(&mut Vec<u8>, &Self)) -> &[u8] {
        self.json.get_or_make(|out| write(out, self))
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
    #[serde(skip)]
    json: JsonText,
}

impl ServiceRef {
    /// A service, by the port a packet used when it is known.
    pub fn new(
        namespace: Arc<str>,
        name: Arc<str>,
        port: Option<u16>,
        port_name: Option<Arc<str>>,
    ) -> Self {
        ServiceRef {
            namespace,
            name,
            port,
            port_name,
            json: JsonText::default(),
        }
    }

    /// This service as the event log writes it, made by `write` the first time and kept.
    pub(crate) fn json(&self, write: impl FnOnce(&mut Vec<u8>, &Self)) -> &[u8] {
        self.json.get_or_make(|out| write(out, self))
    }
}

/// A name's JSON text, made the first time the event log writes it: a name is shared by every
/// record about its object (`Arc`), so its strings need not be escaped and appended one by
/// one for each event (issue 18). The fields of a name must not change once it has been
/// written (names are shared behind `Arc`, which keeps them so).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct JsonText(Cache<OnceLock<Box<[u8]>>>);

impl JsonText {
    fn get_or_make(&self, make: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        self.0 .0.get_or_init(|| {
            let mut text = Vec::new();
            make(&mut text);
            text.into_boxed_slice()
        })
    }
}

/// What a value keeps only to go faster, not part of the value: equal and hashed as nothing,
/// and a clone starts empty (the clone's fields may then change).
#[derive(Default)]
pub struct Cache<T: Default>(pub T);

impl<T: Default> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache::default()
    }
}

impl<T: Default> PartialEq for Cache<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T: Default> Eq for Cache<T> {}

impl<T: Default> std::hash::Hash for Cache<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl<T: Default> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
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
