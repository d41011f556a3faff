//! Kubernetes names for the run: node-local facts, then `--k8s-snapshot` over them, loaded at
//! start; then the API's view, streamed in the background and merged over both. Every source
//! that fails is a status line, never an error: names help, but the trace goes on without them.
use tokio::sync::mpsc;

use super::plan::Plan;
use crate::{
    cli::RunArgs,
    hooks::Names,
    k8s::{
        self,
        api::{ApiSource, Update},
        Inventory,
    },
};

/// Where Kubernetes names come from once the run is under way.
pub struct NameSources {
    /// What node-local facts and `--k8s-snapshot` gave (the base the API's view is merged over).
    snapshot: Option<Inventory>,
    /// API credentials to try, in order; empty = no API.
    api: Vec<ApiSource>,
}

/// Load the names known at start into `names`, choose the API's credentials and start the
/// conntrack lookups; the start-up block's `names:` lines.
pub fn prepare(args: &RunArgs, plan: &Plan, names: &mut Names) -> (NameSources, Vec<String>) {
    let mut lines = load_names(args, plan, names);
    let snapshot = names.inventory.clone();
    let api = if args.no_k8s_api {
        Vec::new()
    } else {
        k8s::api::choose_source(args.kubeconfig.as_deref())
    };
    if api.is_empty() {
        lines.push(if args.no_k8s_api {
            "Kubernetes API off (--no-k8s-api)".to_string()
        } else {
            "no Kubernetes API credentials (--kubeconfig, KUBECONFIG, ~/.kube/config, in-cluster, \
             /etc/kubernetes/kubelet.conf)"
                .to_string()
        });
    } else {
        let list: Vec<String> = api.iter().map(|s| s.to_string()).collect();
        lines.push(format!(
            "Kubernetes API: connecting ({}), in the background",
            list.join(", ")
        ));
        // Names are expected: count what stays unnamed.
        names.inventory.get_or_insert_with(Default::default);
    }
    if lines.is_empty() {
        lines.push(
            "none (--k8s-snapshot FILE or --kubeconfig FILE to name pods, services and nodes)"
                .into(),
        );
    } else if names.inventory.is_some() {
        // Services after DNAT by their conntrack entries, dumped only when a lookup misses.
        names.conntrack = Some(k8s::conntrack::Conntrack::start(plan.watched().to_vec()));
        lines.push("conntrack of the watched namespaces, on demand (services after DNAT)".into());
    }
    (NameSources { snapshot, api }, lines)
}

/// Node-local facts, then the snapshot over them (it knows more).
fn load_names(args: &RunArgs, plan: &Plan, names: &mut Names) -> Vec<String> {
    let mut lines = Vec::new();
    if !args.no_node_local {
        lines.extend(node_local_names(plan, names));
    }
    let Some(path) = &args.k8s_snapshot else {
        return lines;
    };
    match k8s::snapshot::load(path) {
        Ok((inventory, warnings)) => {
            let (pods, services, nodes) = inventory.counts();
            lines.push(format!(
                "snapshot {}: {pods} pods, {services} services, {nodes} nodes",
                path.display()
            ));
            lines.extend(warnings.into_iter().map(|w| format!("snapshot: {w}")));
            names
                .inventory
                .get_or_insert_with(Default::default)
                .merge(inventory);
        }
        Err(e) => lines.push(format!(
            "snapshot unusable, continuing without names: {e:#}"
        )),
    }
    lines
}

/// Names from the node itself (`k8s::node_local`), read once at start: the lowest precedence.
fn node_local_names(plan: &Plan, names: &mut Names) -> Vec<String> {
    let found = k8s::node_local::discover(&plan.host_root, plan.watched());
    let mut lines = vec![format!("node-local: {}", found.summary())];
    lines.extend(found.warnings.iter().map(|w| format!("node-local: {w}")));
    if !found.inventory.is_empty() {
        names.inventory = Some(found.inventory);
    }
    lines
}

impl NameSources {
    /// Connect to the API in the background (needs a running tokio runtime).
    pub fn start(self) -> ApiFeed {
        let (tx, rx) = mpsc::channel(16);
        let open = !self.api.is_empty();
        if open {
            tokio::spawn(api_names(self.api, tx));
        }
        ApiFeed {
            rx,
            open,
            snapshot: self.snapshot,
        }
    }
}

/// The API's view and status lines as they arrive.
pub struct ApiFeed {
    rx: mpsc::Receiver<Update>,
    /// Until the background task ends; without an API, never.
    open: bool,
    snapshot: Option<Inventory>,
}

impl ApiFeed {
    pub fn is_open(&self) -> bool {
        self.open
    }

    pub async fn recv(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// What `recv` gave: new names into `names`, a status line to stderr, or the end; the CNI
    /// install the API showed, for the caller to hand on.
    pub fn apply(
        &mut self,
        update: Option<Update>,
        names: &mut Names,
    ) -> Option<crate::fix::CniInstall> {
        match update {
            Some(Update::Replace(api_view)) => {
                // The API's view is newer than the snapshot file: it wins where both know.
                let mut combined = self.snapshot.clone().unwrap_or_default();
                combined.merge(api_view);
                names.inventory = Some(combined);
            }
            Some(Update::Status(line)) => eprintln!("names: {line}"),
            Some(Update::Cni(install)) => {
                eprintln!(
                    "names: API: the CNI is {} ({}, {}): verdicts give the change to make",
                    install.cni, install.method, install.object
                );
                return Some(install);
            }
            None => self.open = false,
        }
        None
    }
}

/// How long the CNI's objects may take to read before the names' watch starts without them.
const CNI_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connect to the API and stream its view; failures become status lines, never errors.
async fn api_names(sources: Vec<ApiSource>, tx: mpsc::Sender<Update>) {
    match k8s::api::connect_any(&sources).await {
        Ok((source, client)) => {
            let _ = tx
                .send(Update::Status(format!(
                    "Kubernetes API: connected via {source}"
                )))
                .await;
            // How the CNI is configured: read once, before the names' watch begins, and never
            // for long (a slow answer must not hold the names back).
            let read = tokio::time::timeout(CNI_READ_TIMEOUT, k8s::api::cni_objects(&client));
            match read.await {
                Ok((objects, lines)) => {
                    for line in lines {
                        let _ = tx.send(Update::Status(line)).await;
                    }
                    if let Some(install) = crate::fix::recognise(&objects) {
                        let _ = tx.send(Update::Cni(install)).await;
                    }
                }
                Err(_) => {
                    let _ = tx
                        .send(Update::Status(format!(
                            "API: reading the CNI's configuration took over {} s; the fix stays \
                             generic",
                            CNI_READ_TIMEOUT.as_secs()
                        )))
                        .await;
                }
            }
            if let Err(e) = k8s::api::watch(client, tx.clone()).await {
                let _ = tx
                    .send(Update::Status(format!(
                        "Kubernetes API: watch ended: {e:#}"
                    )))
                    .await;
            }
        }
        Err(e) => {
            let _ = tx
                .send(Update::Status(format!(
                    "Kubernetes API unavailable, continuing without it: {e:#}"
                )))
                .await;
        }
    }
}
