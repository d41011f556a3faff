//! An [`Inventory`] from a snapshot file: the output of
//! `kubectl get pods,services,endpointslices,nodes -A -o json`.
//!
//! Accepted shapes: a `List` (what kubectl prints), a typed list such as `PodList` (what the API
//! server returns, items without `kind`), or a bare JSON array of objects.
//!
//! Parsing is lenient, on [`serde_json::Value`] rather than typed structs: kubectl and API
//! versions differ in which fields they print, and one odd item must not cost the names of all
//! the others. Items or fields that cannot be used are skipped and reported as warnings; only a
//! file that cannot be read, is not JSON, or is not a list at all is an error.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    sync::Arc,
};

use anyhow::{bail, Context as _, Result};
use rustc_hash::FxHashMap;
use serde_json::Value;

use super::{Inventory, ObjectRef, PodInfo, ServiceRef};

/// At most this many warnings are returned, then one "and N more".
const MAX_WARNINGS: usize = 20;

/// The EndpointSlice label naming the service the slice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Read and parse a snapshot file. Returns what could be used and a bounded list of warnings
/// about what could not.
///
/// The file is read as a stream, one item at a time: a 10,000-pod cluster's file held whole as
/// text and as a [`Value`] tree cost ~50 MiB at start-up, most of the daemon's peak memory
/// (issue 7); one item at a time costs one item.
pub fn load(path: &Path) -> Result<(Inventory, Vec<String>)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read Kubernetes snapshot {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    // Files saved by some Windows tools start with a byte order mark, which serde_json refuses.
    let head = std::io::BufRead::fill_buf(&mut reader)
        .with_context(|| format!("cannot read Kubernetes snapshot {}", path.display()))?;
    if head.starts_with("\u{feff}".as_bytes()) {
        std::io::BufRead::consume(&mut reader, 3);
    }
    stream(serde_json::Deserializer::from_reader(reader))
        .with_context(|| format!("cannot load Kubernetes snapshot {}", path.display()))
}

/// Parse the text of a snapshot (see the module documentation for the accepted shapes).
pub fn parse(json: &str) -> Result<(Inventory, Vec<String>)> {
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    stream(serde_json::Deserializer::from_str(json))
}

/// The document, item by item, into a [`Loader`].
fn stream<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<(Inventory, Vec<String>)> {
    let mut loader = Loader::default();
    let parsed = serde::de::DeserializeSeed::deserialize(Document(&mut loader), &mut de)
        .and_then(|()| de.end());
    if let Some(shape) = loader.shape_error.take() {
        bail!(shape);
    }
    // serde_json's message carries the line and column ("EOF while parsing ... at line 9 column 4").
    parsed.context("not valid JSON")?;
    Ok(loader.finish())
}

/// [`parse`] on an already parsed document.
#[cfg(test)]
fn parse_value(root: &Value) -> Result<(Inventory, Vec<String>)> {
    let (items, item_kind) = list_items(root)?;
    let mut loader = Loader::default();
    for item in items {
        loader.item(item, item_kind);
    }
    Ok(loader.finish())
}

/// What the items of a file add up to, fed one item at a time.
#[derive(Default)]
struct Loader {
    w: Warnings,
    objects: Objects,
    ignored: BTreeMap<String, usize>,
    /// Items seen so far (the next item's place in the list, for messages).
    count: usize,
    /// Items without a `kind` of their own, kept (in order, with their place) until the list's
    /// kind is known: it may come after `items` in the file (`PodList`).
    deferred: Vec<(usize, Value)>,
    /// The document is no list of objects: the message, instead of serde's.
    shape_error: Option<String>,
}

impl Loader {
    /// One item of the list; `item_kind` is what a typed list (`PodList`) implies.
    fn item(&mut self, item: &Value, item_kind: Option<&str>) {
        let i = self.count;
        self.count += 1;
        self.item_at(i, item, item_kind);
    }

    fn item_at(&mut self, i: usize, item: &Value, item_kind: Option<&str>) {
        let w = &mut self.w;
        let Some(obj) = item.as_object() else {
            w.push(format!(
                "item {i}: not an object ({}); skipped",
                type_name(item)
            ));
            return;
        };
        // Items of a typed list (`PodList` from the API server) carry no `kind` of their own.
        let kind = match obj.get("kind") {
            Some(Value::String(k)) => k.as_str(),
            None | Some(Value::Null) => match item_kind {
                Some(k) => k,
                None => {
                    w.push(format!("item {i}: no `kind`; skipped"));
                    return;
                }
            },
            Some(other) => {
                w.push(format!("item {i}: `kind` is {}; skipped", type_name(other)));
                return;
            }
        };
        let at = Item {
            index: Some(i),
            kind,
            value: item,
        };
        let objects = &mut self.objects;
        match kind {
            "Pod" => objects.pods.extend(pod(&at, w)),
            "Service" => {
                if let Some(s) = service(&at, w) {
                    objects
                        .services
                        .insert((s.namespace.clone(), s.name.clone()), s);
                }
            }
            "EndpointSlice" => objects.slices.extend(endpoint_slice(&at, w)),
            "Node" => objects.nodes.extend(node(&at, w)),
            // How the CNI is configured: kept whole for the fix (`crate::fix`), the rest of
            // the cluster's ConfigMaps are not.
            "Installation" | "ConfigMap" if crate::fix::describes_cni(kind, item) => {
                // Items of a typed list (`ConfigMapList`) lack their own `kind`.
                let mut o = item.clone();
                o["kind"] = kind.into();
                objects.cni.push(o)
            }
            other => *self.ignored.entry(other.to_string()).or_default() += 1,
        }
    }

    /// An item of a streamed list whose kind may not be known yet.
    fn streamed(&mut self, item: Value) {
        let has_kind = item.get("kind").is_some_and(|k| !k.is_null());
        if has_kind && self.deferred.is_empty() {
            self.item(&item, None);
        } else {
            // Once one item waits, the later ones wait too: file order decides conflicts.
            self.deferred.push((self.count, item));
            self.count += 1;
        }
    }

    /// The end of the list: the waiting items, now that the list's kind is known.
    fn end_of_list(&mut self, item_kind: Option<&str>) {
        for (i, item) in std::mem::take(&mut self.deferred) {
            self.item_at(i, &item, item_kind);
        }
    }

    fn finish(self) -> (Inventory, Vec<String>) {
        let Loader {
            mut w,
            objects,
            ignored,
            ..
        } = self;
        let services = objects
            .services
            .values()
            .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
            .collect();
        let mut inv = build(
            objects.pods.iter(),
            &services,
            objects.slices.iter(),
            objects.nodes.iter(),
            &mut w,
        );
        inv.cni_objects = objects.cni;
        if !ignored.is_empty() {
            let n: usize = ignored.values().sum();
            let kinds: Vec<String> = ignored.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            w.push(format!(
                "ignored {n} item(s) of kinds not used for names: {}",
                kinds.join(", ")
            ));
        }
        (inv, w.finish())
    }
}

/// The whole document: a bare array of objects, or an object with `items` (and `kind`).
struct Document<'l>(&'l mut Loader);

/// A document that is not a list, as an error serde carries out (the message is the
/// loader's `shape_error`).
fn not_a_list<E: serde::de::Error>(loader: &mut Loader, what: &str) -> E {
    let msg = format!(
        "not a list of Kubernetes objects: the document is {what} (expected the output of \
         `kubectl get pods,services,endpointslices,nodes -A -o json`)"
    );
    loader.shape_error = Some(msg.clone());
    E::custom(msg)
}

impl<'de> serde::de::DeserializeSeed<'de> for Document<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Document<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of Kubernetes objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let loader = self.0;
        Items(loader).visit_seq(seq)?;
        loader.end_of_list(None);
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let loader = self.0;
        let mut kind: Option<Value> = None;
        // None: no `items` key; Some(false): `"items": null`; Some(true): an array.
        let mut items: Option<bool> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "kind" => kind = Some(map.next_value()?),
                "items" => items = Some(map.next_value_seed(ItemsField(loader))?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let kind = kind.as_ref().and_then(Value::as_str);
        let item_kind = kind
            .and_then(|k| k.strip_suffix("List"))
            .filter(|k| !k.is_empty());
        match items {
            Some(true) => {
                loader.end_of_list(item_kind);
                Ok(())
            }
            // An empty list may be printed with `"items": null`.
            None | Some(false) if kind.is_some_and(|k| k.ends_with("List")) => Ok(()),
            Some(false) => {
                let msg = "`items` is null, not an array".to_string();
                loader.shape_error = Some(msg.clone());
                Err(serde::de::Error::custom(msg))
            }
            None => {
                let msg = format!(
                    "not a list of Kubernetes objects: no `items` (kind {}; expected the output \
                     of `kubectl get pods,services,endpointslices,nodes -A -o json`)",
                    kind.unwrap_or("absent")
                );
                loader.shape_error = Some(msg.clone());
                Err(serde::de::Error::custom(msg))
            }
        }
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(not_a_list(self.0, "a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(not_a_list(self.0, "a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(not_a_list(self.0, "a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(not_a_list(self.0, "a number"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(not_a_list(self.0, "a string"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(not_a_list(self.0, "null"))
    }
}

/// The value of `items`: an array streamed into the loader (`true`), or null (`false`).
struct ItemsField<'l>(&'l mut Loader);

impl<'de> serde::de::DeserializeSeed<'de> for ItemsField<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsField<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of Kubernetes objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        Items(self.0).visit_seq(seq)?;
        Ok(true)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
        Err(items_not_array(self.0, "an object"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<bool, E> {
        Err(items_not_array(self.0, "a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<bool, E> {
        Err(items_not_array(self.0, "a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<bool, E> {
        Err(items_not_array(self.0, "a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        Err(items_not_array(self.0, "a number"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<bool, E> {
        Err(items_not_array(self.0, "a string"))
    }
}

fn items_not_array<E: serde::de::Error>(loader: &mut Loader, what: &str) -> E {
    let msg = format!("`items` is {what}, not an array");
    loader.shape_error = Some(msg.clone());
    E::custom(msg)
}

/// The elements of a list, each parsed alone and handed to the loader.
struct Items<'l>(&'l mut Loader);

impl Items<'_> {
    fn visit_seq<'de, A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            self.0.streamed(item);
        }
        Ok(())
    }
}

/// The usable objects of a file, in file order.
#[derive(Default)]
struct Objects {
    pods: Vec<ParsedPod>,
    services: HashMap<(String, String), ParsedService>,
    slices: Vec<ParsedSlice>,
    nodes: Vec<ParsedNode>,
    cni: Vec<Value>,
}

/// The [`Inventory`] of parsed objects. Shared by the snapshot file and the live API (which keeps
/// its objects parsed, so that it can re-derive the whole inventory on each change): linear in
/// the number of objects.
///
/// `pods` are taken in order: when two claim the same IP, the later one is used (with a
/// warning). Services are looked up by (namespace, name) for the EndpointSlices' port names.
pub(super) fn build<'a>(
    pods: impl Iterator<Item = &'a ParsedPod>,
    services: &HashMap<(&str, &str), &ParsedService>,
    slices: impl Iterator<Item = &'a ParsedSlice>,
    nodes: impl Iterator<Item = &'a ParsedNode>,
    w: &mut Warnings,
) -> Inventory {
    let mut inv = Inventory::default();
    let mut names = Interner::default();
    for p in pods {
        // One shared copy of each namespace and node name (a pod's own name stays its own).
        let info = PodInfo {
            pod: Arc::new(
                ObjectRef::new(
                    p.info.pod.namespace.as_deref().map(|n| names.get(n)),
                    p.info.pod.name.clone(),
                )
                .with_workload(p.info.pod.workload.as_deref().map(|n| names.get(n))),
            ),
            node: p.info.node.as_deref().map(|n| names.get(n)),
        };
        for ip in &p.ips {
            if let Some(prev) = inv.pods_by_ip.insert(*ip, info.clone()) {
                if prev.pod != p.info.pod {
                    w.push(format!(
                        "{}: IP {ip} is also claimed by pod {}; the later one is used",
                        p.describe,
                        object_name(&prev.pod)
                    ));
                }
            }
        }
    }
    for s in services.values() {
        for p in &s.ports {
            let sref = Arc::new(ServiceRef::new(
                names.get(&s.namespace),
                names.get(&s.name),
                Some(p.port),
                p.name.as_deref().map(|n| names.get(n)),
            ));
            for ip in &s.cluster_ips {
                inv.services_by_cluster_ip
                    .insert((*ip, p.port, p.proto), sref.clone());
            }
            // Unlike ClusterIPs and node ports, which the API server allocates uniquely, any
            // service may claim an external IP (and LoadBalancer IPs may be shared across
            // services on different ports): the same key twice is possible, so the choice must
            // not depend on the objects' order.
            for ip in &s.external_ips {
                insert_first_by_name(
                    &mut inv.services_by_external_ip,
                    (*ip, p.port, p.proto),
                    &sref,
                );
            }
            if let Some(np) = p.node_port {
                insert_first_by_name(&mut inv.services_by_node_port, (np, p.proto), &sref);
            }
        }
    }
    // The same backend address and port can serve several services (a StatefulSet's headless
    // service and its ClusterIP service, a canary service...). One must be chosen; the choice
    // must not depend on the order of the objects: services with a ClusterIP first (post-DNAT
    // traffic came through one), then by namespace and name.
    let mut backends: HashMap<(IpAddr, u16, u8), (BackendRank, Arc<ServiceRef>)> = HashMap::new();
    for slice in slices {
        slice_backends(slice, services, &mut backends, &mut names);
    }
    inv.services_by_backend = backends.into_iter().map(|(k, (_, s))| (k, s)).collect();
    for n in nodes {
        for ip in &n.ips {
            inv.nodes_by_ip.insert(*ip, names.get(&n.name));
        }
    }
    inv
}

/// One `Arc<str>` per distinct name (namespaces, node, service and port names): every pod and
/// service of a namespace shares its name, and naming an event touches a few hot copies
/// instead of one per object (issue 18; also less memory: 10,000 pods had 20,000 of them).
#[derive(Default)]
struct Interner(rustc_hash::FxHashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

/// Insert `sref` at `key` unless a service earlier by (namespace, name) has it.
fn insert_first_by_name<K: std::hash::Hash + Eq>(
    map: &mut FxHashMap<K, Arc<ServiceRef>>,
    key: K,
    sref: &Arc<ServiceRef>,
) {
    let earlier =
        |old: &Arc<ServiceRef>| (&old.namespace, &old.name) <= (&sref.namespace, &sref.name);
    if !map.get(&key).is_some_and(earlier) {
        map.insert(key, sref.clone());
    }
}

/// The items of the top-level list, and the kind of item a typed list (`PodList`) implies.
#[cfg(test)]
fn list_items(root: &Value) -> Result<(&[Value], Option<&str>)> {
    let obj = match root {
        Value::Array(items) => return Ok((items, None)),
        Value::Object(obj) => obj,
        other => bail!(
            "not a list of Kubernetes objects: the document is {} (expected the output of \
             `kubectl get pods,services,endpointslices,nodes -A -o json`)",
            type_name(other)
        ),
    };
    let kind = obj.get("kind").and_then(Value::as_str);
    let item_kind = kind
        .and_then(|k| k.strip_suffix("List"))
        .filter(|k| !k.is_empty());
    match obj.get("items") {
        Some(Value::Array(items)) => Ok((items, item_kind)),
        // An empty list may be printed with `"items": null`.
        None | Some(Value::Null) if kind.is_some_and(|k| k.ends_with("List")) => Ok((&[], None)),
        Some(other) => bail!("`items` is {}, not an array", type_name(other)),
        None => bail!(
            "not a list of Kubernetes objects: no `items` (kind {}; expected the output of \
             `kubectl get pods,services,endpointslices,nodes -A -o json`)",
            kind.unwrap_or("absent")
        ),
    }
}

/// One object: an item of a file's list, or an object from the API.
pub(super) struct Item<'a> {
    /// The place in the file's list, for messages; `None` for objects from the API.
    index: Option<usize>,
    kind: &'a str,
    value: &'a Value,
}

impl<'a> Item<'a> {
    /// An object of `kind` (`Pod`, `Service`, `EndpointSlice`, `Node`) not from a file.
    pub(super) fn new(kind: &'a str, value: &'a Value) -> Item<'a> {
        Item {
            index: None,
            kind,
            value,
        }
    }

    fn str(&self, pointer: &str) -> Option<&str> {
        self.value.pointer(pointer).and_then(Value::as_str)
    }

    /// `Pod shop/web-1` (or `Node node-a`), for messages.
    fn describe(&self) -> String {
        let name = self.str("/metadata/name").unwrap_or("?");
        let object = match self.str("/metadata/namespace") {
            Some(ns) => format!("{} {ns}/{name}", self.kind),
            None => format!("{} {name}", self.kind),
        };
        match self.index {
            Some(i) => format!("item {i} ({object})"),
            None => object,
        }
    }

    /// `metadata.name`, or a warning.
    fn name(&self, w: &mut Warnings) -> Option<String> {
        match self.str("/metadata/name") {
            Some(n) if !n.is_empty() => Some(n.to_string()),
            _ => {
                w.push(format!("{}: no `metadata.name`; skipped", self.describe()));
                None
            }
        }
    }

    /// `metadata.namespace`; the API server fills it in for namespaced objects, and an object
    /// without one is in `default` by the API's own rule.
    fn namespace(&self) -> String {
        match self.str("/metadata/namespace") {
            Some(ns) if !ns.is_empty() => ns.to_string(),
            _ => "default".to_string(),
        }
    }

    /// The array at `pointer`: empty when absent or null, a warning when of another type.
    fn array(&self, pointer: &str, w: &mut Warnings) -> &[Value] {
        match self.value.pointer(pointer) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &[],
            Some(other) => {
                w.push(format!(
                    "{}: `{}` is {}, not an array; ignored",
                    self.describe(),
                    dotted(pointer),
                    type_name(other)
                ));
                &[]
            }
        }
    }

    /// An IP address string, or a warning naming `what` (a field path).
    fn ip(&self, v: &Value, what: &str, w: &mut Warnings) -> Option<IpAddr> {
        match v {
            Value::String(s) => match s.trim().parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    w.push(format!(
                        "{}: `{what}` {s:?} is not an IP address; ignored",
                        self.describe()
                    ));
                    None
                }
            },
            other => {
                w.push(format!(
                    "{}: `{what}` is {}, not an IP address; ignored",
                    self.describe(),
                    type_name(other)
                ));
                None
            }
        }
    }
}

/// A pod with an IP of its own.
pub(super) struct ParsedPod {
    pub(super) ips: Vec<IpAddr>,
    pub(super) info: PodInfo,
    /// The pod, for messages (IP conflicts).
    describe: String,
}

/// A pod's IPs and [`PodInfo`]; `None` for pods that must not be named by IP (host network,
/// terminated, no IP yet) and unusable items.
pub(super) fn pod(at: &Item, w: &mut Warnings) -> Option<ParsedPod> {
    let name = at.name(w)?;
    // A host-network pod's IP is its node's, shared with every other such pod on that node:
    // naming one of them would be a guess. The node names that traffic.
    if at.value.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        return None;
    }
    // A pod that has terminated keeps its IP in its status, but the IP is free and may already
    // belong to a new pod.
    if matches!(at.str("/status/phase"), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut ips = Vec::new();
    let pod_ips = at.array("/status/podIPs", w);
    for (j, e) in pod_ips.iter().enumerate() {
        let what = format!("status.podIPs[{j}].ip");
        match e.get("ip") {
            Some(v) => ips.extend(at.ip(v, &what, w)),
            None => w.push(format!("{}: no `{what}`; ignored", at.describe())),
        }
    }
    // Before dual-stack (Kubernetes < 1.16) there was only `podIP`. (When `podIPs` has entries,
    // `podIP` is its first one: no need to warn twice about the same bad address.)
    if pod_ips.is_empty() {
        match at.value.pointer("/status/podIP") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => ips.extend(at.ip(v, "status.podIP", w)),
        }
    }
    // No IP yet (Pending): nothing to name, and nothing wrong.
    if ips.is_empty() {
        return None;
    }
    let info = PodInfo {
        pod: Arc::new(
            ObjectRef::new(Some(at.namespace().into()), name.as_str().into())
                .with_workload(Some(workload(at.value, &name).into())),
        ),
        node: at
            .str("/spec/nodeName")
            .filter(|n| !n.is_empty())
            .map(Arc::from),
    };
    Some(ParsedPod {
        ips,
        info,
        describe: at.describe(),
    })
}

/// The pod's workload as `kubectl` names it, from its controller (the `ownerReferences` entry
/// with `controller: true`): a ReplicaSet that a Deployment made (its name is the
/// Deployment's plus `-<pod-template-hash>`, the label its pods carry) is that Deployment;
/// other controllers are themselves (`statefulset/redis`, `daemonset/…`, `job/…`); a pod that
/// nothing controls is `pod/<name>`.
pub(super) fn workload(pod: &Value, name: &str) -> String {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let controller = owners.and_then(|o| {
        o.iter()
            .find(|r| r.get("controller") == Some(&Value::Bool(true)))
    });
    let owner = controller.and_then(|r| Some((r.get("kind")?.as_str()?, r.get("name")?.as_str()?)));
    let Some((kind, owner)) = owner else {
        return format!("pod/{name}");
    };
    if kind == "ReplicaSet" {
        let hash = pod
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str);
        let deployment = hash.and_then(|h| owner.strip_suffix(h)?.strip_suffix('-'));
        if let Some(d) = deployment.filter(|d| !d.is_empty()) {
            return format!("deployment/{d}");
        }
    }
    format!("{}/{owner}", kind.to_ascii_lowercase())
}

/// A service port: what ClusterIP keys and EndpointSlice port lookups need.
pub(super) struct ParsedPort {
    name: Option<String>,
    port: u16,
    proto: u8,
    /// `nodePort` of NodePort and LoadBalancer services (never of slice ports).
    node_port: Option<u16>,
}

pub(super) struct ParsedService {
    pub(super) namespace: String,
    pub(super) name: String,
    /// Empty for headless (`None`) and ExternalName services.
    cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`: kube-proxy DNATs both with
    /// the service port, as it does the ClusterIP.
    external_ips: Vec<IpAddr>,
    ports: Vec<ParsedPort>,
}

pub(super) fn service(at: &Item, w: &mut Warnings) -> Option<ParsedService> {
    let name = at.name(w)?;
    let mut raw_ips: Vec<&Value> = at.array("/spec/clusterIPs", w).iter().collect();
    // Before dual-stack there was only `clusterIP`.
    if raw_ips.is_empty() {
        raw_ips.extend(at.value.pointer("/spec/clusterIP"));
    }
    let mut cluster_ips = Vec::new();
    for (j, v) in raw_ips.into_iter().enumerate() {
        match v {
            // Headless services have "None"; ExternalName services have none at all.
            Value::Null => {}
            Value::String(s) if s.is_empty() || s == "None" => {}
            v => cluster_ips.extend(at.ip(v, &format!("spec.clusterIPs[{j}]"), w)),
        }
    }
    let mut external_ips = Vec::new();
    for (j, v) in at.array("/spec/externalIPs", w).iter().enumerate() {
        external_ips.extend(at.ip(v, &format!("spec.externalIPs[{j}]"), w));
    }
    for (j, e) in at
        .array("/status/loadBalancer/ingress", w)
        .iter()
        .enumerate()
    {
        match e.get("ip") {
            // Cloud load balancers known by a host name only (AWS ELB): no address to key on,
            // nothing wrong; their traffic reaches the nodes on the NodePort.
            None | Some(Value::Null) => {}
            Some(v) => {
                external_ips.extend(at.ip(v, &format!("status.loadBalancer.ingress[{j}].ip"), w))
            }
        }
    }
    let mut ports = Vec::new();
    for (j, p) in at.array("/spec/ports", w).iter().enumerate() {
        let what = format!("spec.ports[{j}]");
        if let Some(mut entry) = port_entry(at, p, &what, w) {
            entry.node_port = match p.get("nodePort") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(n) if n != 0 => Some(n),
                    _ => {
                        w.push(format!(
                            "{}: `{what}.nodePort` {v} is not a port number; ignored",
                            at.describe()
                        ));
                        None
                    }
                },
            };
            ports.push(entry);
        }
    }
    Some(ParsedService {
        namespace: at.namespace(),
        name,
        cluster_ips,
        external_ips,
        ports,
    })
}

/// `{name, port, protocol}` as in Service and EndpointSlice ports. `None` when unusable (with a
/// warning) and for the EndpointSlice "all ports" entry (port null), which cannot be keyed.
fn port_entry(at: &Item, p: &Value, what: &str, w: &mut Warnings) -> Option<ParsedPort> {
    if !p.is_object() {
        w.push(format!(
            "{}: `{what}` is {}, not an object; ignored",
            at.describe(),
            type_name(p)
        ));
        return None;
    }
    let port = match p.get("port") {
        // EndpointSlice: a null port means "all ports"; nothing to key on, nothing wrong.
        None | Some(Value::Null) if at.kind == "EndpointSlice" => return None,
        Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(n) if n != 0 => n,
            _ => {
                w.push(format!(
                    "{}: `{what}.port` {v} is not a port number; ignored",
                    at.describe()
                ));
                return None;
            }
        },
        None => {
            w.push(format!("{}: no `{what}.port`; ignored", at.describe()));
            return None;
        }
    };
    // The API's default protocol is TCP.
    let proto = match p.get("protocol") {
        None | Some(Value::Null) => 6,
        Some(Value::String(s)) => match s.as_str() {
            "TCP" => 6,
            "UDP" => 17,
            "SCTP" => 132,
            other => {
                w.push(format!(
                    "{}: `{what}.protocol` {other:?} is not TCP, UDP or SCTP; ignored",
                    at.describe()
                ));
                return None;
            }
        },
        Some(v) => {
            w.push(format!(
                "{}: `{what}.protocol` is {}; ignored",
                at.describe(),
                type_name(v)
            ));
            return None;
        }
    };
    Some(ParsedPort {
        name: port_name(p.get("name")),
        port,
        proto,
        node_port: None,
    })
}

/// Port names: absent and "" (the EndpointSlice controller's spelling of "unnamed") are the
/// same thing, so that an unnamed slice port finds its unnamed service port.
fn port_name(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Preference among services sharing a backend (lower wins): has a ClusterIP, then names.
type BackendRank = (bool, String, String);

/// An EndpointSlice's addresses and ports, and the service it belongs to.
pub(super) struct ParsedSlice {
    namespace: String,
    service: String,
    ports: Vec<ParsedPort>,
    ips: Vec<IpAddr>,
}

/// An EndpointSlice; `None` for FQDN slices and unusable items.
///
/// Endpoints that are not ready (or terminating) are kept: a backend that is starting or
/// shutting down still receives traffic (retransmissions, established connections), and that is
/// exactly when oversize packets may be dropped.
pub(super) fn endpoint_slice(at: &Item, w: &mut Warnings) -> Option<ParsedSlice> {
    if let Some(v) = at.str("/apiVersion") {
        // v1beta1 (removed in 1.25) has the same addresses and ports.
        if !v.starts_with("discovery.k8s.io/") {
            w.push(format!(
                "{}: apiVersion {v:?} is not discovery.k8s.io; skipped",
                at.describe()
            ));
            return None;
        }
    }
    // FQDN slices list host names, not addresses.
    if at.str("/addressType") == Some("FQDN") {
        return None;
    }
    let label = format!("/metadata/labels/{}", SERVICE_NAME_LABEL.replace('/', "~1"));
    let Some(service) = at.str(&label).filter(|s| !s.is_empty()) else {
        w.push(format!(
            "{}: no `{SERVICE_NAME_LABEL}` label, so no service; skipped",
            at.describe()
        ));
        return None;
    };

    let mut ports = Vec::new();
    for (j, p) in at.array("/ports", w).iter().enumerate() {
        if let Some(p) = port_entry(at, p, &format!("ports[{j}]"), w) {
            ports.push(p);
        }
    }
    let mut ips = Vec::new();
    for (j, e) in at.array("/endpoints", w).iter().enumerate() {
        match e.get("addresses") {
            Some(Value::Array(addrs)) => {
                for (k, a) in addrs.iter().enumerate() {
                    ips.extend(at.ip(a, &format!("endpoints[{j}].addresses[{k}]"), w));
                }
            }
            None | Some(Value::Null) => {}
            Some(other) => w.push(format!(
                "{}: `endpoints[{j}].addresses` is {}; ignored",
                at.describe(),
                type_name(other)
            )),
        }
    }
    Some(ParsedSlice {
        namespace: at.namespace(),
        service: service.to_string(),
        ports,
        ips,
    })
}

/// A slice's addresses × ports → services_by_backend (via `backends`, see [`build`]).
fn slice_backends(
    slice: &ParsedSlice,
    services: &HashMap<(&str, &str), &ParsedService>,
    backends: &mut HashMap<(IpAddr, u16, u8), (BackendRank, Arc<ServiceRef>)>,
    names: &mut Interner,
) {
    let ParsedSlice {
        namespace,
        service: svc_name,
        ports,
        ips,
    } = slice;
    let svc = services
        .get(&(namespace.as_str(), svc_name.as_str()))
        .copied();
    let rank: BackendRank = (
        svc.is_none_or(|s| s.cluster_ips.is_empty()),
        namespace.clone(),
        svc_name.clone(),
    );
    for p in ports {
        // The slice port is the target port; the service port is found by name (unique within
        // a service, and the one link the API keeps between the two).
        let service_port = svc
            .and_then(|s| s.ports.iter().find(|sp| sp.name == p.name))
            .map(|sp| sp.port);
        let sref = Arc::new(ServiceRef::new(
            names.get(namespace),
            names.get(svc_name),
            service_port,
            p.name.as_deref().map(|n| names.get(n)),
        ));
        for ip in ips {
            let key = (*ip, p.port, p.proto);
            let better = backends.get(&key).is_none_or(|(r, _)| rank < *r);
            if better {
                backends.insert(key, (rank.clone(), sref.clone()));
            }
        }
    }
}

/// A node and its InternalIP and ExternalIP addresses.
pub(super) struct ParsedNode {
    pub(super) name: String,
    ips: Vec<IpAddr>,
}

pub(super) fn node(at: &Item, w: &mut Warnings) -> Option<ParsedNode> {
    let name = at.name(w)?;
    let mut ips = Vec::new();
    for (j, a) in at.array("/status/addresses", w).iter().enumerate() {
        // Hostname and InternalDNS/ExternalDNS are names, not addresses.
        match a.get("type").and_then(Value::as_str) {
            Some("InternalIP" | "ExternalIP") => {}
            _ => continue,
        }
        let what = format!("status.addresses[{j}].address");
        match a.get("address") {
            Some(v) => ips.extend(at.ip(v, &what, w)),
            None => w.push(format!("{}: no `{what}`; ignored", at.describe())),
        }
    }
    Some(ParsedNode { name, ips })
}

/// Warnings, bounded: a file with thousands of odd items must not flood the log.
#[derive(Default)]
pub(super) struct Warnings {
    list: Vec<String>,
    more: usize,
}

impl Warnings {
    pub(super) fn push(&mut self, msg: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(msg);
        } else {
            self.more += 1;
        }
    }

    pub(super) fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list.push(format!("and {} more warnings", self.more));
        }
        self.list
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `/status/podIPs` → `status.podIPs`, for messages.
fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn object_name(o: &ObjectRef) -> String {
    match &o.namespace {
        Some(ns) => format!("{ns}/{}", o.name),
        None => o.name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/k8s/testdata")
            .join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cluster() -> Inventory {
        let (inv, warnings) = load(&testdata("cluster.json")).unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        inv
    }

    fn pod_name(inv: &Inventory, addr: &str) -> Option<String> {
        inv.pods_by_ip.get(&ip(addr)).map(|p| object_name(&p.pod))
    }

    fn svc(ns: &str, name: &str, port: Option<u16>, port_name: Option<&str>) -> Arc<ServiceRef> {
        Arc::new(ServiceRef::new(
            ns.into(),
            name.into(),
            port,
            port_name.map(Into::into),
        ))
    }

    #[test]
    fn cluster_counts() {
        let inv = cluster();
        // Pods: memcached-0, redis-0, redis-1, coredns, checkout ×2, frontend. Services:
        // kubernetes, kube-dns, checkout, frontend, memcached, redis (headless, by its
        // backends), payments-gateway (a slice without its Service), ingress-nginx-controller
        // (a LoadBalancer without backends in the file). Nodes: node-a..c.
        assert_eq!(inv.counts(), (7, 8, 3));
        assert!(!inv.is_empty());
        // Dual-stack pods are indexed under both addresses.
        assert_eq!(inv.pods_by_ip.len(), 7 + 4);
    }

    #[test]
    fn host_network_pods_are_left_out() {
        let inv = cluster();
        // kube-proxy (node-b) and calico-node (node-c) share their node's addresses.
        for a in ["10.0.0.11", "fd00:10::11", "10.0.0.12", "fd00:10::12"] {
            assert_eq!(pod_name(&inv, a), None, "{a}");
        }
        assert_eq!(&*inv.nodes_by_ip[&ip("10.0.0.11")], "node-b");
        assert_eq!(&*inv.nodes_by_ip[&ip("fd00:10::12")], "node-c");
    }

    #[test]
    fn pending_and_terminated_pods_are_left_out() {
        let inv = cluster();
        let names: Vec<String> = inv
            .pods_by_ip
            .values()
            .map(|p| object_name(&p.pod))
            .collect();
        // Pending: no IP. Succeeded (a Job's pod) and Failed: IP released.
        assert!(!names.iter().any(|n| n == "shop/frontend-7c9d8f6b5-tz5vd"));
        assert!(!names.iter().any(|n| n == "shop/db-migrate-28411520-9kx7z"));
        assert!(!names.iter().any(|n| n == "default/debug-shell"));
        assert_eq!(pod_name(&inv, "10.244.2.40"), None);
        // The failed pod's IP has been given to a running pod, which must keep it.
        assert_eq!(
            pod_name(&inv, "10.244.1.17").as_deref(),
            Some("shop/frontend-7c9d8f6b5-x2x9k")
        );
    }

    #[test]
    fn ipv6_pods_services_and_backends() {
        let inv = cluster();
        let p = &inv.pods_by_ip[&ip("fd00:244:0:2::23")];
        assert_eq!(object_name(&p.pod), "shop/checkout-6b8f7d9c4-lm3np");
        assert_eq!(p.node.as_deref(), Some("node-c"));
        // Non-canonical spellings are the same address.
        assert!(inv.pods_by_ip.contains_key(&ip("fd00:244:0:2:0:0:0:23")));
        assert_eq!(
            inv.services_by_cluster_ip[&(ip("fd00:96::1234"), 80, 6)],
            svc("shop", "checkout", Some(80), Some("http"))
        );
        assert_eq!(
            inv.services_by_backend[&(ip("fd00:244:0:1::24"), 9090, 6)],
            svc("shop", "checkout", Some(9090), Some("metrics"))
        );
        assert_eq!(&*inv.nodes_by_ip[&ip("fd00:10::10")], "node-a");
    }

    #[test]
    fn every_service_port_is_mapped() {
        let inv = cluster();
        let dns = ip("10.96.0.10");
        assert_eq!(
            inv.services_by_cluster_ip[&(dns, 53, 17)],
            svc("kube-system", "kube-dns", Some(53), Some("dns"))
        );
        assert_eq!(
            inv.services_by_cluster_ip[&(dns, 53, 6)],
            svc("kube-system", "kube-dns", Some(53), Some("dns-tcp"))
        );
        assert_eq!(
            inv.services_by_cluster_ip[&(dns, 9153, 6)],
            svc("kube-system", "kube-dns", Some(9153), Some("metrics"))
        );
        assert_eq!(
            inv.services_by_cluster_ip[&(ip("10.96.12.34"), 9090, 6)],
            svc("shop", "checkout", Some(9090), Some("metrics"))
        );
        // Unnamed single port.
        assert_eq!(
            inv.services_by_cluster_ip[&(ip("10.96.88.8"), 11211, 6)],
            svc("cache", "memcached", Some(11211), None)
        );
        // A protocol the service does not have is not mapped.
        assert!(!inv
            .services_by_cluster_ip
            .contains_key(&(ip("10.96.12.34"), 80, 17)));
        // Headless: no ClusterIP entry at all ("None" is not an address).
        assert!(inv
            .services_by_cluster_ip
            .values()
            .all(|s| &*s.name != "redis"));
        // checkout dual-stack ×2 ports, kube-dns and ingress-nginx dual-stack ×3, kubernetes,
        // frontend, memcached.
        assert_eq!(inv.services_by_cluster_ip.len(), 4 + 6 + 6 + 3);
    }

    #[test]
    fn node_ports_external_and_load_balancer_ips_are_mapped() {
        let inv = cluster();
        let ingress = |port, name: &str| {
            svc(
                "ingress-nginx",
                "ingress-nginx-controller",
                Some(port),
                Some(name),
            )
        };
        // LoadBalancer ingress IPs, both families, with the service port (not the node port).
        assert_eq!(
            inv.services_by_external_ip[&(ip("198.51.100.10"), 443, 6)],
            ingress(443, "https")
        );
        assert_eq!(
            inv.services_by_external_ip[&(ip("2001:db8:100::10"), 80, 6)],
            ingress(80, "http")
        );
        assert_eq!(
            inv.services_by_external_ip[&(ip("198.51.100.10"), 443, 17)],
            ingress(443, "quic")
        );
        // externalIPs.
        assert_eq!(
            inv.services_by_external_ip[&(ip("203.0.113.80"), 80, 6)],
            svc("shop", "frontend", Some(80), Some("http"))
        );
        assert!(!inv
            .services_by_external_ip
            .contains_key(&(ip("203.0.113.80"), 30080, 6)));
        // 2 ingress IPs × 3 ports, frontend's one external IP × 1 port.
        assert_eq!(inv.services_by_external_ip.len(), 6 + 1);
        // Node ports: the same number over TCP and UDP is two ports of the service.
        let np = &inv.services_by_node_port;
        assert_eq!(
            np[&(30080, 6)],
            svc("shop", "frontend", Some(80), Some("http"))
        );
        assert_eq!(np[&(31080, 6)], ingress(80, "http"));
        assert_eq!(np[&(31443, 6)], ingress(443, "https"));
        assert_eq!(np[&(31443, 17)], ingress(443, "quic"));
        // healthCheckNodePort is kube-proxy's health answer, not a service port.
        assert!(!np.contains_key(&(32456, 6)));
        assert_eq!(np.len(), 4);
    }

    #[test]
    fn odd_external_addresses_and_node_ports() {
        let service = |name: &str, spec: &str, status: &str| {
            format!(
                r#"{{"kind":"Service","metadata":{{"namespace":"edge","name":"{name}"}},
                  "spec":{spec},"status":{status}}}"#
            )
        };
        let items = [
            // A cloud load balancer known by name only, and one with an address.
            service(
                "elb",
                r#"{"type":"LoadBalancer","clusterIP":"10.96.7.1",
                   "ports":[{"port":443,"nodePort":30443}]}"#,
                r#"{"loadBalancer":{"ingress":[{"hostname":"a1b2.elb.example.com"},
                   {"ip":"192.0.2.7","ports":[{"port":443,"protocol":"TCP"}]}]}}"#,
            ),
            // Bad addresses and node ports: warned about, the rest kept.
            service(
                "broken",
                r#"{"type":"NodePort","clusterIP":"10.96.7.2","externalIPs":["192.0.2.300", 7, "192.0.2.8"],
                   "ports":[{"port":80,"nodePort":"thirty"},{"port":81,"nodePort":70000},
                            {"port":82,"nodePort":0},{"port":83,"nodePort":30083}]}"#,
                r#"{"loadBalancer":{"ingress":[{"ip":"nope"}]}}"#,
            ),
            // Two services claiming one external IP and port: the first by name wins, in any
            // order of the file.
            service(
                "z-claim",
                r#"{"clusterIP":"10.96.7.3","externalIPs":["192.0.2.8"],"ports":[{"port":83}]}"#,
                "{}",
            ),
            service(
                "a-claim",
                r#"{"clusterIP":"10.96.7.4","externalIPs":["192.0.2.8"],"ports":[{"port":83}]}"#,
                "{}",
            ),
        ];
        let (inv, warnings) = parse(&format!("[{}]", items.join(","))).unwrap();
        let joined = warnings.join("\n");
        for needle in [
            "`spec.externalIPs[0]` \"192.0.2.300\" is not an IP address",
            "`spec.externalIPs[1]` is a number",
            "`spec.ports[0].nodePort` \"thirty\" is not a port number",
            "`spec.ports[1].nodePort` 70000 is not a port number",
            "`spec.ports[2].nodePort` 0 is not a port number",
            "`status.loadBalancer.ingress[0].ip` \"nope\" is not an IP address",
        ] {
            assert!(joined.contains(needle), "{needle:?} not in:\n{joined}");
        }
        assert!(!joined.contains("hostname"), "{joined}");
        assert_eq!(warnings.len(), 6, "{joined}");
        // A bad node port costs only the node port: the port keeps its ClusterIP entry.
        assert!(inv
            .services_by_cluster_ip
            .contains_key(&(ip("10.96.7.2"), 80, 6)));
        assert_eq!(&*inv.services_by_node_port[&(30083, 6)].name, "broken");
        assert_eq!(&*inv.services_by_node_port[&(30443, 6)].name, "elb");
        assert_eq!(inv.services_by_node_port.len(), 2);
        assert_eq!(
            &*inv.services_by_external_ip[&(ip("192.0.2.7"), 443, 6)].name,
            "elb"
        );
        assert_eq!(
            &*inv.services_by_external_ip[&(ip("192.0.2.8"), 83, 6)].name,
            "a-claim"
        );
        let mut reversed = items.to_vec();
        reversed.reverse();
        let (backward, _) = parse(&format!("[{}]", reversed.join(","))).unwrap();
        assert_eq!(backward, inv);
    }

    #[test]
    fn backends_map_to_the_service_port_by_name() {
        let inv = cluster();
        let b = &inv.services_by_backend;
        // targetPort 8080 (named "http") is service port 80.
        assert_eq!(
            b[&(ip("10.244.2.23"), 8080, 6)],
            svc("shop", "checkout", Some(80), Some("http"))
        );
        // Not-ready backends are kept.
        assert_eq!(
            b[&(ip("10.244.1.24"), 8080, 6)],
            svc("shop", "checkout", Some(80), Some("http"))
        );
        assert_eq!(
            b[&(ip("10.244.1.32"), 6379, 6)],
            svc("cache", "redis", Some(6379), Some("redis"))
        );
        // Numeric targetPort 3000 → port 80.
        assert_eq!(
            b[&(ip("10.244.1.17"), 3000, 6)],
            svc("shop", "frontend", Some(80), Some("http"))
        );
        // The API server's own slice: a node address.
        assert_eq!(
            b[&(ip("10.0.0.10"), 6443, 6)],
            svc("default", "kubernetes", Some(443), Some("https"))
        );
        // UDP and TCP on the same port, IPv6 slice.
        assert_eq!(
            b[&(ip("fd00:244::5"), 53, 17)],
            svc("kube-system", "kube-dns", Some(53), Some("dns"))
        );
        assert_eq!(
            b[&(ip("fd00:244::5"), 53, 6)],
            svc("kube-system", "kube-dns", Some(53), Some("dns-tcp"))
        );
        // Unnamed slice port ("") ↔ unnamed service port.
        assert_eq!(
            b[&(ip("10.244.0.41"), 11211, 6)],
            svc("cache", "memcached", Some(11211), None)
        );
        // Service not in the file: name known, service port not.
        assert_eq!(
            b[&(ip("192.0.2.51"), 443, 6)],
            svc("shop", "payments-gateway", None, Some("https"))
        );
    }

    #[test]
    fn typed_pod_list_without_item_kinds() {
        let (inv, warnings) = load(&testdata("podlist.json")).unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        // node-exporter is host-network.
        assert_eq!(inv.counts(), (2, 0, 0));
        assert_eq!(
            pod_name(&inv, "fd00:244:0:2::50").as_deref(),
            Some("monitoring/prometheus-k8s-0")
        );
    }

    #[test]
    fn bare_array_of_items() {
        let (inv, warnings) = parse(
            r#"[{"kind":"Node","metadata":{"name":"n1"},"status":{"addresses":[
                {"type":"InternalIP","address":"10.1.0.1"},{"type":"Hostname","address":"n1"}]}}]"#,
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(&*inv.nodes_by_ip[&ip("10.1.0.1")], "n1");
        assert_eq!(inv.nodes_by_ip.len(), 1);
    }

    #[test]
    fn empty_lists() {
        for text in [
            "[]",
            r#"{"apiVersion":"v1","kind":"List","items":[],"metadata":{"resourceVersion":""}}"#,
            r#"{"apiVersion":"v1","kind":"PodList","items":null}"#,
        ] {
            let (inv, warnings) = parse(text).unwrap();
            assert!(inv.is_empty(), "{text}");
            assert!(warnings.is_empty(), "{text}");
        }
    }

    #[test]
    fn malformed_file_is_an_error_naming_the_file_and_place() {
        let path = testdata("truncated.json");
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("not valid JSON"), "{e}");
        assert!(e.contains("line 223"), "{e}");
    }

    #[test]
    fn unreadable_file_is_an_error_naming_the_file() {
        let path = testdata("no-such-file.json");
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("no-such-file.json"), "{e}");
    }

    #[test]
    fn documents_that_are_not_lists_are_errors() {
        for text in [
            "",
            "null",
            "42",
            r#""pods""#,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
            r#"{"kind":"List","items":{"a":1}}"#,
            "W0302 kubectl warning\n{}",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn garbage_items_are_warned_about_and_the_rest_is_loaded() {
        let (inv, warnings) = load(&testdata("garbage.json")).unwrap();
        let joined = warnings.join("\n");
        // The good items.
        assert_eq!(
            pod_name(&inv, "10.244.3.3").as_deref(),
            Some("shop/cart-5f7b9c6d8-h4k2m")
        );
        assert_eq!(&*inv.nodes_by_ip[&ip("10.0.0.13")], "node-d");
        assert_eq!(
            inv.services_by_cluster_ip[&(ip("10.96.3.3"), 81, 6)],
            svc("shop", "cart", Some(81), Some("http"))
        );
        assert_eq!(inv.services_by_cluster_ip.len(), 1);
        assert_eq!(
            inv.services_by_backend[&(ip("10.244.3.3"), 8081, 6)],
            svc("shop", "cart", Some(81), Some("http"))
        );
        assert_eq!(inv.counts(), (1, 1, 1));
        // Each bad one, named.
        for needle in [
            "item 1 (Pod shop/cart-5f7b9c6d8-w8q1z): `status.podIPs` is a string",
            "item 1 (Pod shop/cart-5f7b9c6d8-w8q1z): `status.podIP` is a number",
            "item 2 (Pod ?): no `metadata.name`",
            "\"10.244.3.999\" is not an IP address",
            "`spec.ports[0].port` \"eighty\" is not a port number",
            "`spec.ports[1].port` 70000 is not a port number",
            "`spec.ports[2].protocol` \"ICMP\"",
            "item 5 (Node node-x): `status.addresses` is a string",
            "item 6: not an object (a number)",
            "item 7: no `kind`",
            "`endpoints` is an object",
            "\"not-an-ip\" is not an IP address",
            "ConfigMap ×1",
        ] {
            assert!(joined.contains(needle), "{needle:?} not in:\n{joined}");
        }
        assert!(warnings.len() <= MAX_WARNINGS, "{joined}");
    }

    #[test]
    fn warnings_are_bounded() {
        let items: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
        let (inv, warnings) = parse(&format!("[{}]", items.join(","))).unwrap();
        assert!(inv.is_empty());
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(warnings[MAX_WARNINGS], "and 80 more warnings");
    }

    #[test]
    fn backend_shared_by_two_services_is_named_deterministically() {
        let svc_json = |name: &str, ip: &str| {
            format!(
                r#"{{"kind":"Service","metadata":{{"namespace":"cache","name":"{name}"}},
                  "spec":{{"clusterIP":"{ip}","ports":[{{"name":"redis","port":6379}}]}}}}"#
            )
        };
        let slice_json = |name: &str| {
            format!(
                r#"{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","addressType":"IPv4",
                  "metadata":{{"namespace":"cache","name":"{name}-x",
                  "labels":{{"kubernetes.io/service-name":"{name}"}}}},
                  "endpoints":[{{"addresses":["10.244.2.31"]}}],
                  "ports":[{{"name":"redis","port":6379,"protocol":"TCP"}}]}}"#
            )
        };
        let items = [
            svc_json("a-headless", "None"),
            svc_json("redis", "10.96.5.5"),
            svc_json("z-other", "10.96.5.6"),
            slice_json("a-headless"),
            slice_json("redis"),
            slice_json("z-other"),
        ];
        let key = (ip("10.244.2.31"), 6379, 6);
        let forward = parse(&format!("[{}]", items.join(","))).unwrap().0;
        let mut reversed = items.to_vec();
        reversed.reverse();
        let backward = parse(&format!("[{}]", reversed.join(","))).unwrap().0;
        // With a ClusterIP beats headless; then the name decides.
        assert_eq!(&*forward.services_by_backend[&key].name, "redis");
        assert_eq!(&*backward.services_by_backend[&key].name, "redis");
    }

    /// No input shape panics: every value inside every fixture item replaced by every JSON type.
    #[test]
    fn no_panic_on_mutated_items() {
        let text = std::fs::read_to_string(testdata("cluster.json")).unwrap();
        let root: Value = serde_json::from_str(&text).unwrap();
        let replacements = [
            Value::Null,
            Value::Bool(true),
            serde_json::json!(-1),
            serde_json::json!(1e300),
            serde_json::json!("None"),
            serde_json::json!([]),
            serde_json::json!({}),
        ];
        let mut runs = 0;
        for item in root["items"].as_array().unwrap() {
            let mut pointers = Vec::new();
            collect_pointers(item, String::new(), &mut pointers);
            for p in &pointers {
                for r in &replacements {
                    let mut mutated = item.clone();
                    *mutated.pointer_mut(p).unwrap() = r.clone();
                    let list = Value::Array(vec![mutated]);
                    let (_, warnings) = parse_value(&list).unwrap();
                    assert!(warnings.len() <= MAX_WARNINGS + 1);
                    runs += 1;
                }
            }
        }
        assert!(runs > 1000, "{runs}");
    }

    fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    collect_pointers(c, p.clone(), out);
                    out.push(p);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    collect_pointers(c, p.clone(), out);
                    out.push(p);
                }
            }
            _ => {}
        }
    }

    /// The streamed file gives what the whole parsed document gives: same names, same warnings.
    #[test]
    fn streaming_matches_the_whole_document() {
        for name in ["cluster.json", "garbage.json", "podlist.json"] {
            let text = std::fs::read_to_string(testdata(name)).unwrap();
            let root: Value = serde_json::from_str(&text).unwrap();
            let whole = parse_value(&root).unwrap();
            assert_eq!(load(&testdata(name)).unwrap(), whole, "{name}");
            assert_eq!(parse(&text).unwrap(), whole, "{name}");
        }
    }

    /// A typed list may name its kind after its items: the items wait for it.
    #[test]
    fn a_typed_list_whose_kind_comes_last() {
        let text = r#"{"items":[
            {"metadata":{"namespace":"a","name":"p1"},"status":{"podIP":"10.1.0.1"}},
            {"metadata":{"namespace":"a","name":"p2"},"status":{"podIP":"10.1.0.2"}}
          ],"apiVersion":"v1","kind":"PodList"}"#;
        let (inv, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(&*inv.pods_by_ip[&ip("10.1.0.2")].pod.name, "p2");
        // The same items in a plain `List` have no kind: each is reported, by its place.
        let (inv, warnings) = parse(&text.replace("PodList", "List")).unwrap();
        assert!(inv.is_empty());
        assert_eq!(
            warnings,
            ["item 0: no `kind`; skipped", "item 1: no `kind`; skipped"]
        );
    }

    /// No prefix of a real file panics; each is an error or (the whole file) a result.
    #[test]
    fn no_panic_on_truncated_text() {
        let text = std::fs::read_to_string(testdata("podlist.json")).unwrap();
        for end in (0..text.len()).step_by(7) {
            if text.is_char_boundary(end) {
                assert!(parse(&text[..end]).is_err());
            }
        }
        assert!(parse(&text).is_ok());
    }
}
