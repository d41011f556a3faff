//! An [`Inventory`] from the live Kubernetes API: Pods, Services, EndpointSlices and Nodes, listed
//! then watched, so that pods that appear during an incident get names too.
//!
//! [`choose_source`] picks the credentials (kubeconfig, in-cluster service account, the node's
//! kubelet credentials), [`connect`] makes a client and checks that the API server answers, and
//! [`watch`] keeps the four kinds in memory and sends [`Update`]s: the whole inventory again after
//! each change (debounced), and human-readable status lines (counts, refusals).
//!
//! Objects are parsed with the snapshot file's per-object logic ([`super::snapshot`]), so both
//! sources name the same objects the same way; only the small parsed form is kept, and the
//! inventory is re-derived from it on each change (linear in the number of objects).
//!
//! A kind that cannot be listed (RBAC refusal, a kind the credentials may not read) is reported
//! once and retried with backoff; the other kinds are used meanwhile.

use std::{
    collections::BTreeMap,
    error::Error as StdError,
    ffi::OsString,
    fmt::Debug,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Result};
use futures::{stream::BoxStream, StreamExt as _};
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt as _},
    Api, Client, Config, Resource, ResourceExt as _,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{sync::mpsc, time::Instant};

use super::{
    snapshot::{self, Item, ParsedNode, ParsedPod, ParsedService, ParsedSlice, Warnings},
    Inventory,
};

/// Where the kubelet keeps its credentials on kubeadm-installed nodes.
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";

/// How long [`connect`] waits for the API server's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this often an [`Update::Replace`] after the first: re-deriving the inventory is linear,
/// and a rolling restart must not cost one derivation per pod event.
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// The first [`Update::Replace`] waits for every kind's initial list (or its failure), but not
/// longer than this: names for what is listed are better than none while a slow list goes on.
const INITIAL_WAIT: Duration = Duration::from_secs(10);

/// At most this many warnings about odd objects are sent as [`Update::Status`].
const MAX_OBJECT_WARNINGS: usize = 20;

/// Credentials and address of an API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSource {
    /// A kubeconfig file (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`).
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the token and CA under
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`).
    InCluster,
    /// The node's kubelet credentials (a kubeconfig; see [`KUBELET_CONF`]). The node authorizer
    /// may refuse some cluster-wide lists: that is reported by [`watch`] per kind.
    KubeletConf(PathBuf),
    /// kube's own inference: `KUBECONFIG` (which may list several files, merged), then
    /// `~/.kube/config`, then in-cluster.
    Default,
}

impl std::fmt::Display for ApiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiSource::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            ApiSource::InCluster => f.write_str("in-cluster service account"),
            ApiSource::KubeletConf(p) => write!(f, "kubelet credentials {}", p.display()),
            ApiSource::Default => f.write_str("default Kubernetes configuration"),
        }
    }
}

/// The sources to try, in order; [`connect_any`] tries them.
///
/// An explicit `--kubeconfig` is the only candidate: the user said which cluster. Otherwise:
/// `KUBECONFIG` if set (as kubectl does, `~/.kube/config` is then not looked at), else
/// `~/.kube/config` if it exists; then the in-cluster service account if
/// `KUBERNETES_SERVICE_HOST` is set; then the kubelet's credentials if [`KUBELET_CONF`] exists.
/// Empty when nothing applies.
pub fn choose_source(explicit_kubeconfig: Option<&Path>) -> Vec<ApiSource> {
    choose_source_with(explicit_kubeconfig, &|k| std::env::var_os(k), &|p| {
        p.exists()
    })
}

/// [`choose_source`] with the environment and the file system as parameters, for tests.
fn choose_source_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
    exists: &dyn Fn(&Path) -> bool,
) -> Vec<ApiSource> {
    if let Some(p) = explicit {
        return vec![ApiSource::Kubeconfig(p.to_path_buf())];
    }
    let mut sources = Vec::new();
    match env("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => {
            let paths: Vec<PathBuf> = std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            match paths.as_slice() {
                [one] => sources.push(ApiSource::Kubeconfig(one.clone())),
                // Several files are merged, as kubectl does: kube knows how.
                _ => sources.push(ApiSource::Default),
            }
        }
        None => {
            if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
                let p = Path::new(&home).join(".kube/config");
                if exists(&p) {
                    sources.push(ApiSource::Kubeconfig(p));
                }
            }
        }
    }
    if env("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty()) {
        sources.push(ApiSource::InCluster);
    }
    let kubelet = Path::new(KUBELET_CONF);
    if exists(kubelet) {
        sources.push(ApiSource::KubeletConf(kubelet.to_path_buf()));
    }
    sources
}

/// A client for `source`, after one request (`/version`) answered: a wrong address or missing
/// credentials fail here with a clear message ("API server https://10.0.0.1:6443: connection
/// refused", "kubeconfig /x: no such file"), not later inside the watch loop.
pub async fn connect(source: ApiSource) -> Result<Client> {
    let config = config_for(&source).await?;
    // `https://10.0.0.1:6443/` → `https://10.0.0.1:6443`, as in the kubeconfig.
    let url = config.cluster_url.to_string();
    let url = url.trim_end_matches('/');
    let client = Client::try_from(config)
        // Client certificates and CA bundles are read here: a credentials problem, not the
        // server's.
        .map_err(|e| anyhow!("{source}: {}", chain(&e)))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Err(_) => bail!(
            "API server {url} ({source}): no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => bail!("API server {url} ({source}): {}", cause(&e)),
        Ok(Ok(_)) => Ok(client),
    }
}

/// The first of `sources` that [`connect`] accepts, or an error listing why each failed.
pub async fn connect_any(sources: &[ApiSource]) -> Result<(ApiSource, Client)> {
    let mut errors = Vec::new();
    for s in sources {
        match connect(s.clone()).await {
            Ok(c) => return Ok((s.clone(), c)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        bail!(
            "no Kubernetes credentials found (no --kubeconfig, KUBECONFIG, ~/.kube/config, \
             in-cluster service account or {KUBELET_CONF})"
        );
    }
    bail!("{}", errors.join("; "))
}

async fn config_for(source: &ApiSource) -> Result<Config> {
    match source {
        ApiSource::Kubeconfig(path) | ApiSource::KubeletConf(path) => {
            // Checked here for a short message: kube's says "failed to read kubeconfig from
            // '\"/x\"': No such file or directory (os error 2)".
            if let Err(e) = std::fs::metadata(path) {
                bail!("{source}: {}", io_text(&e));
            }
            // The whole chain from here on: an I/O error may be about another file (a client
            // certificate the kubeconfig names), which kube's messages name.
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| anyhow!("{source}: {}", chain(&e)))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow!("{source}: {}", chain(&e)))
        }
        ApiSource::InCluster => Config::incluster().map_err(|e| anyhow!("{source}: {}", chain(&e))),
        ApiSource::Default => Config::infer()
            .await
            .map_err(|e| anyhow!("no Kubernetes configuration found: {}", chain(&e))),
    }
}

/// What [`watch`] sends.
// At most two updates a second go through a 16-slot channel: the size of the inline inventory
// (its maps' headers; the entries are on the heap) costs nothing worth a Box at every user.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Everything the API currently says: replaces the previous [`Update::Replace`] wholesale
    /// (pods that were deleted are not in it). The first comes after the initial lists; then one
    /// per burst of changes, at most every half second.
    Replace(Inventory),
    /// A line for the user: counts after the initial lists ("API: 412 pods, 97 services,
    /// 12 nodes"), a kind that cannot be listed ("API: listing pods refused (403 Forbidden:
    /// ...); continuing without pod names"), its recovery, odd objects.
    Status(String),
    /// The CNI install the cluster's objects show ([`cni_objects`]), read once after connecting.
    Cni(crate::fix::CniInstall),
}

/// List and watch Pods, Services, EndpointSlices and Nodes in all namespaces and send
/// [`Update`]s to `tx`. Runs until `tx`'s receiver is dropped (then `Ok`); API errors are
/// reported as [`Update::Status`] and retried with backoff, never returned.
pub async fn watch(client: Client, tx: mpsc::Sender<Update>) -> Result<()> {
    let mut changes = futures::stream::select_all([
        changes(Api::<Pod>::all(client.clone()), Kind::Pods),
        changes(Api::<Service>::all(client.clone()), Kind::Services),
        changes(
            Api::<EndpointSlice>::all(client.clone()),
            Kind::EndpointSlices,
        ),
        changes(Api::<Node>::all(client), Kind::Nodes),
    ]);
    let started = Instant::now();
    let mut state = State::default();
    loop {
        let deadline = state.next_send(started);
        tokio::select! {
            change = changes.next() => {
                // The watcher streams do not end; if they did, there would be nothing to wait for.
                let Some((kind, change)) = change else { return Ok(()) };
                for msg in state.apply(kind, change) {
                    if tx.send(Update::Status(msg)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => {
                let inv = state.inventory();
                if state.last_sent.is_none() {
                    let msg = state.summary(&inv);
                    if tx.send(Update::Status(msg)).await.is_err() {
                        return Ok(());
                    }
                }
                state.last_sent = Some(Instant::now());
                state.dirty = false;
                if tx.send(Update::Replace(inv)).await.is_err() {
                    return Ok(());
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// The objects that say how the CNI is configured ([`crate::fix`]), each read once by name
/// where its install puts it; with the lines to tell the user (a refused read). An object that
/// is not there (another CNI, no operator CRD) is no answer, and no line.
pub async fn cni_objects(client: &Client) -> (Vec<serde_json::Value>, Vec<String>) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::{ApiResource, DynamicObject};
    let mut objects = Vec::new();
    let mut lines = Vec::new();
    let mut keep =
        |kind: &str, what: String, got: kube::Result<Option<serde_json::Value>>| match got {
            Ok(Some(mut o)) => {
                o["kind"] = kind.into();
                objects.push(o);
            }
            Ok(None) => {}
            Err(e) => lines.push(format!(
                "API: reading {what} failed ({}); the fix stays generic",
                cause(&e)
            )),
        };
    for (ns, name) in crate::fix::CONFIG_MAPS {
        let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
        let got = api
            .get_opt(name)
            .await
            .map(|o| o.and_then(|o| serde_json::to_value(o).ok()));
        keep("ConfigMap", format!("configmap {ns}/{name}"), got);
    }
    let installation = ApiResource {
        group: "operator.tigera.io".into(),
        version: "v1".into(),
        api_version: "operator.tigera.io/v1".into(),
        kind: "Installation".into(),
        plural: "installations".into(),
    };
    let api = Api::<DynamicObject>::all_with(client.clone(), &installation);
    let got = api
        .get_opt("default")
        .await
        .map(|o| o.and_then(|o| serde_json::to_value(o).ok()));
    keep("Installation", "installation default".into(), got);
    (objects, lines)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pods = 0,
    Services = 1,
    EndpointSlices = 2,
    Nodes = 3,
}

const KINDS: [Kind; 4] = [
    Kind::Pods,
    Kind::Services,
    Kind::EndpointSlices,
    Kind::Nodes,
];

impl Kind {
    /// The resource's name in API paths and RBAC rules.
    fn plural(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
            Kind::Nodes => "nodes",
        }
    }

    /// The object kind, as the snapshot parser knows it.
    fn object_kind(self) -> &'static str {
        match self {
            Kind::Pods => "Pod",
            Kind::Services => "Service",
            Kind::EndpointSlices => "EndpointSlice",
            Kind::Nodes => "Node",
        }
    }

    /// What the inventory lacks while this kind cannot be listed.
    fn loss(self) -> &'static str {
        match self {
            Kind::Pods => "pod names",
            Kind::Services => "service names by ClusterIP (and service ports)",
            Kind::EndpointSlices => "service names by backend address",
            Kind::Nodes => "node names",
        }
    }
}

/// One object in its parsed form.
enum Object {
    Pod(ParsedPod),
    Service(ParsedService),
    Slice(ParsedSlice),
    Node(ParsedNode),
}

/// Store key: creation time first, so that iterating a store visits older objects first and
/// [`snapshot::build`]'s "the later one wins" gives an IP claimed by two pods (a terminating one
/// and its successor) to the newer pod. RFC 3339 UTC times sort as strings.
type Key = (String, String, String);

/// One watcher event, reduced to what [`State`] needs.
enum Change {
    /// A (re)list starts.
    Init,
    /// An object from a list (`init`) or a watch. `None`: nothing to index (a host-network or
    /// finished pod), any previous entry goes.
    Apply {
        key: Key,
        object: Option<Object>,
        warnings: Vec<String>,
        init: bool,
    },
    Delete(Key),
    /// The (re)list is complete.
    InitDone,
    /// `None`: an error not worth a message (410 Gone: the watcher re-lists by itself).
    Error(Option<String>),
}

/// One kind's changes: kube's watcher (list, then watch from the list's resourceVersion, re-list
/// when needed) with its default backoff on errors (0.8 s doubling to 30 s).
fn changes<K>(api: Api<K>, kind: Kind) -> BoxStream<'static, (Kind, Change)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| {
            let change = match event {
                Ok(watcher::Event::Init) => Change::Init,
                Ok(watcher::Event::InitApply(o)) => parse(kind, &o, true),
                Ok(watcher::Event::Apply(o)) => parse(kind, &o, false),
                Ok(watcher::Event::Delete(o)) => Change::Delete(key_of(&o)),
                Ok(watcher::Event::InitDone) => Change::InitDone,
                Err(e) => Change::Error(error_message(kind, &e)),
            };
            (kind, change)
        })
        .boxed()
}

fn key_of<K: Resource>(o: &K) -> Key {
    let created = o
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    (created, o.namespace().unwrap_or_default(), o.name_any())
}

/// A typed object through the snapshot parser (which reads JSON values: one parser for both
/// sources).
fn parse<K: Resource + Serialize>(kind: Kind, o: &K, init: bool) -> Change {
    let key = key_of(o);
    let mut w = Warnings::default();
    let object = match serde_json::to_value(o) {
        Ok(v) => {
            let at = Item::new(kind.object_kind(), &v);
            match kind {
                Kind::Pods => snapshot::pod(&at, &mut w).map(Object::Pod),
                Kind::Services => snapshot::service(&at, &mut w).map(Object::Service),
                Kind::EndpointSlices => snapshot::endpoint_slice(&at, &mut w).map(Object::Slice),
                Kind::Nodes => snapshot::node(&at, &mut w).map(Object::Node),
            }
        }
        // Not expected (the object was just deserialized), but not worth a panic.
        Err(e) => {
            w.push(format!("{} {}: {e}", kind.object_kind(), key.2));
            None
        }
    };
    Change::Apply {
        key,
        object,
        warnings: w.finish(),
        init,
    }
}

/// A Status line for a watcher error.
fn error_message(kind: Kind, e: &watcher::Error) -> Option<String> {
    let plural = kind.plural();
    let (op, status) = match e {
        watcher::Error::InitialListFailed(e) => ("listing", api_status(e)),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            ("watching", api_status(e))
        }
        watcher::Error::WatchError(s) => ("watching", Some(&**s)),
        watcher::Error::NoResourceVersion => {
            return Some(format!(
                "API: listing {plural}: the answer has no resourceVersion; retrying"
            ))
        }
    };
    let cause = match (status, e) {
        (Some(s), _) => status_text(s),
        (
            None,
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e),
        ) => cause(e),
        (None, other) => cause(other),
    };
    match status.map(|s| s.code) {
        // The watch's resourceVersion is too old: the watcher lists again, nothing is lost.
        Some(410) => None,
        Some(403) => {
            let s = status.map(|s| s.message.as_str()).unwrap_or_default();
            // The kubelet's identity: the node authorizer lets it read only what its own node
            // needs.
            let hint = if s.contains("system:node:") {
                "; the node's kubelet credentials may not read this cluster-wide: give the tracer \
                 a kubeconfig or service account allowed to list and watch pods, services, \
                 endpointslices and nodes"
            } else {
                ""
            };
            Some(format!(
                "API: {op} {plural} refused ({cause}); continuing without {}{hint}",
                kind.loss()
            ))
        }
        Some(401) => Some(format!(
            "API: {op} {plural}: credentials rejected ({cause}); retrying"
        )),
        _ => Some(format!("API: {op} {plural} failed: {cause}; retrying")),
    }
}

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// The useful part of a request's error: the I/O error at its bottom ("connection refused"; the
/// layers above it only say "client error (Connect)"), the API server's Status ("403 Forbidden:
/// pods is forbidden: ..."), or else the whole chain.
fn cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io_text(io);
        }
        if let Some(kube::Error::Api(s)) = err.downcast_ref::<kube::Error>() {
            return status_text(s);
        }
        if let Some(s) = err.downcast_ref::<kube::core::Status>() {
            return status_text(s);
        }
        cur = err.source();
    }
    chain(e)
}

/// Every message of an error chain, once: wrappers often repeat their source's text.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut texts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !texts.last().is_some_and(|prev| prev.contains(&text)) {
            texts.push(text);
        }
        cur = err.source();
    }
    texts.join(": ")
}

/// "403 Forbidden: pods is forbidden: ..." (the reason is empty when the body was not a Status).
fn status_text(s: &kube::core::Status) -> String {
    let reason = match (s.reason.as_str(), s.code) {
        ("", 401) => "Unauthorized",
        ("", 403) => "Forbidden",
        ("", 404) => "NotFound",
        (r, _) => r,
    };
    let mut text = format!("{} {reason}", s.code);
    if !s.message.is_empty() {
        text.push_str(": ");
        text.push_str(&s.message);
    }
    text
}

fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".into(),
        PermissionDenied => "permission denied".into(),
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "connection timed out".into(),
        _ => e.to_string(),
    }
}

/// The watcher task's memory: per kind, its parsed objects and how its list is going.
#[derive(Default)]
struct State {
    kinds: [KindState; 4],
    /// Something changed since the last [`Update::Replace`].
    dirty: bool,
    last_sent: Option<Instant>,
    warnings_sent: usize,
}

#[derive(Default)]
struct KindState {
    objects: BTreeMap<Key, Object>,
    /// During a (re)list: the objects listed so far, swapped in at its end, so that objects
    /// deleted while the watch was down disappear.
    listing: Option<BTreeMap<Key, Object>>,
    /// An initial list has completed once.
    synced: bool,
    /// An error was reported and no success seen since (reported once, not on every retry).
    failing: bool,
}

impl State {
    /// Apply one change; returns Status lines to send.
    fn apply(&mut self, kind: Kind, change: Change) -> Vec<String> {
        let mut out = Vec::new();
        let k = &mut self.kinds[kind as usize];
        match change {
            Change::Init => k.listing = Some(BTreeMap::new()),
            Change::Apply {
                key,
                object,
                warnings,
                init,
            } => {
                let store = match (&mut k.listing, init) {
                    (Some(listing), true) => listing,
                    _ => &mut k.objects,
                };
                match object {
                    Some(o) => store.insert(key, o),
                    None => store.remove(&key),
                };
                if !init {
                    k.failing = false;
                    self.dirty = true;
                }
                for w in warnings {
                    self.warnings_sent += 1;
                    match self.warnings_sent {
                        n if n <= MAX_OBJECT_WARNINGS => out.push(format!("API: {w}")),
                        n if n == MAX_OBJECT_WARNINGS + 1 => {
                            out.push("API: more warnings about objects are not shown".into())
                        }
                        _ => {}
                    }
                }
            }
            Change::Delete(key) => {
                k.objects.remove(&key);
                k.failing = false;
                self.dirty = true;
            }
            Change::InitDone => {
                k.objects = k.listing.take().unwrap_or_default();
                if k.failing && k.synced {
                    out.push(format!("API: {} listed again", kind.plural()));
                } else if k.failing {
                    out.push(format!(
                        "API: {} listed ({} with names)",
                        kind.plural(),
                        k.objects.len()
                    ));
                }
                k.synced = true;
                k.failing = false;
                self.dirty = true;
            }
            Change::Error(msg) => {
                if !k.failing {
                    k.failing = true;
                    out.extend(msg);
                }
            }
        }
        out
    }

    /// When to send the next [`Update::Replace`], if one is due.
    fn next_send(&self, started: Instant) -> Option<Instant> {
        match self.last_sent {
            None => {
                let settled = self.kinds.iter().all(|k| k.synced || k.failing);
                Some(if settled {
                    Instant::now()
                } else {
                    started + INITIAL_WAIT
                })
            }
            Some(last) => self.dirty.then(|| last + MIN_INTERVAL),
        }
    }

    /// The inventory of everything stored (linear: see [`snapshot::build`]).
    fn inventory(&self) -> Inventory {
        let objects = |kind: Kind| self.kinds[kind as usize].objects.values();
        let pods = objects(Kind::Pods).filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        });
        let services = objects(Kind::Services)
            .filter_map(|o| match o {
                Object::Service(s) => Some(((s.namespace.as_str(), s.name.as_str()), s)),
                _ => None,
            })
            .collect();
        let slices = objects(Kind::EndpointSlices).filter_map(|o| match o {
            Object::Slice(s) => Some(s),
            _ => None,
        });
        let nodes = objects(Kind::Nodes).filter_map(|o| match o {
            Object::Node(n) => Some(n),
            _ => None,
        });
        // Conflicts found while building (an IP claimed by two pods) would repeat on every
        // rebuild: logged at debug level, not sent.
        let mut w = Warnings::default();
        let inv = snapshot::build(pods, &services, slices, nodes, &mut w);
        for msg in w.finish() {
            log::debug!("API: {msg}");
        }
        inv
    }

    /// "API: 412 pods, 97 services, 12 nodes", and which kinds are missing.
    fn summary(&self, inv: &Inventory) -> String {
        let (pods, services, nodes) = inv.counts();
        let mut msg = format!("API: {pods} pods, {services} services, {nodes} nodes");
        let missing: Vec<&str> = KINDS
            .iter()
            .filter(|k| !self.kinds[**k as usize].synced)
            .map(|k| k.plural())
            .collect();
        if !missing.is_empty() {
            msg.push_str(&format!(" (not listed yet: {})", missing.join(", ")));
        }
        msg
    }
}

#[cfg(test)]
mod tests;
