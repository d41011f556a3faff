//! From a verdict's number to the change an operator makes: which CNI and install method the
//! cluster uses (recognised from its objects), the object to change, the patch, the `kubectl`
//! commands in order, and what else must happen (pods keep their old MTU until restarted: an
//! MTU applies to new veths). The tracer never applies it.
//!
//! Recognised, first match wins, from the objects a snapshot lists (`kubectl get … configmaps
//! -A -o json`, with the `installations.operator.tigera.io` where Calico's operator runs):
//! - Calico installed by the Tigera operator: the `Installation` `default`,
//!   `spec.calicoNetwork.mtu` (the pod MTU; the operator rolls calico-node itself).
//! - Calico installed from the manifest: the `calico-config` ConfigMap, `veth_mtu` (the pod MTU,
//!   also the tunnels' through `FELIX_*MTU` in calico-node's environment), then a restart of the
//!   `calico-node` DaemonSet.
//! - flannel: the `kube-flannel-cfg` ConfigMap, `Backend.MTU` in `net-conf.json`: the *underlay*
//!   MTU (flannel subtracts its overhead for `flannel.1` and the pods), then a restart of the
//!   `kube-flannel-ds` DaemonSet.
//! - Cilium: the `cilium-config` ConfigMap, `mtu` (the agent's `--mtu`: the underlying network's
//!   MTU, from which Cilium sizes its tunnel and routes), then a restart of the `cilium`
//!   DaemonSet.
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the number in the object means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtuMeaning {
    /// The pods' MTU (the CNI gives new veths this).
    Pod,
    /// The underlay's MTU: the CNI subtracts its overlay's overhead.
    Underlay,
}

/// How the cluster's CNI is configured: enough to write the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInstall {
    /// `calico` or `flannel`.
    pub cni: String,
    /// `operator`, `manifest` (Calico) or `configmap` (flannel).
    pub method: String,
    /// `kind/name` as `kubectl` takes it.
    pub object: String,
    /// The object's namespace (none for cluster-scoped objects).
    pub namespace: Option<String>,
    /// The field, as a path (`spec.calicoNetwork.mtu`, `data.veth_mtu`,
    /// `data["net-conf.json"].Backend.MTU`).
    pub field: String,
    pub meaning: MtuMeaning,
    /// The number it holds now (none or 0: the CNI detects it).
    pub current: Option<u32>,
    /// The DaemonSet to restart after the change (`namespace/name`), when the CNI does not.
    pub restart_agent: Option<String>,
    /// For flannel: `net-conf.json` as found (the patch rewrites the whole string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_conf: Option<String>,
}

/// `kind` of a [`CniLine`].
pub const CNI_LINE_KIND: &str = "cni";

/// The log line that says which CNI install the live API showed (`kind: "cni"`; a snapshot's
/// goes on the start line instead). `tracer report` applies it as the start line's `cni`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniLine {
    pub ts: String,
    pub kind: String,
    /// The run's node, as its start line's (logs of several nodes are read apart by it).
    pub node: Option<String>,
    #[serde(flatten)]
    pub install: CniInstall,
}

/// The change for one verdict: what to run, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub cni: String,
    pub method: String,
    pub object: String,
    pub namespace: Option<String>,
    pub field: String,
    /// The number the field gets.
    pub value: u32,
    /// A JSON merge patch (`kubectl patch --type merge`).
    pub patch: Value,
    /// The commands, in order: the patch, the agent's restart when needed.
    pub commands: Vec<String>,
    /// What must follow: the pods to restart, and how.
    pub then: String,
    /// What the change disturbs.
    pub risk: String,
}

/// An install [`recognise`] knows: the object that holds the MTU, and what its number means.
struct Known {
    kind: &'static str,
    name: &'static str,
    cni: &'static str,
    method: &'static str,
    /// `kind/name` as `kubectl` takes it.
    object: &'static str,
    field: &'static str,
    meaning: MtuMeaning,
    /// The DaemonSet to restart after the change and its usual namespace, when the CNI does
    /// not roll it itself.
    agent: Option<(&'static str, &'static str)>,
    /// The number the object holds now, and for flannel the `net-conf.json` the patch rewrites;
    /// none when the object cannot be patched field by field.
    read: fn(&Value) -> Option<Found>,
}

/// What [`Known::read`] found: the number (none: the CNI detects it) and the text a patch
/// rewrites whole, if any.
type Found = (Option<u32>, Option<String>);

/// First match wins: an operator's Installation over a leftover manifest ConfigMap.
const KNOWN: [Known; 4] = [
    Known {
        kind: "Installation",
        name: "default",
        cni: "calico",
        method: "operator",
        object: "installation.operator.tigera.io/default",
        field: "spec.calicoNetwork.mtu",
        meaning: MtuMeaning::Pod,
        agent: None,
        read: |o| Some((number(&o["spec"]["calicoNetwork"]["mtu"]), None)),
    },
    Known {
        kind: "ConfigMap",
        name: "calico-config",
        cni: "calico",
        method: "manifest",
        object: "configmap/calico-config",
        field: "data.veth_mtu",
        meaning: MtuMeaning::Pod,
        agent: Some(("calico-node", "kube-system")),
        read: |o| Some((number(&o["data"]["veth_mtu"]), None)),
    },
    Known {
        kind: "ConfigMap",
        name: "kube-flannel-cfg",
        cni: "flannel",
        method: "configmap",
        object: "configmap/kube-flannel-cfg",
        field: "data[\"net-conf.json\"].Backend.MTU",
        meaning: MtuMeaning::Underlay,
        agent: Some(("kube-flannel-ds", "kube-flannel")),
        read: |o| {
            let text = o["data"]["net-conf.json"].as_str()?;
            let conf: Value = serde_json::from_str(text).ok()?;
            Some((number(&conf["Backend"]["MTU"]), Some(text.to_string())))
        },
    },
    Known {
        kind: "ConfigMap",
        name: "cilium-config",
        cni: "cilium",
        method: "configmap",
        object: "configmap/cilium-config",
        field: "data.mtu",
        meaning: MtuMeaning::Underlay,
        agent: Some(("cilium", "kube-system")),
        read: |o| Some((number(&o["data"]["mtu"]), None)),
    },
];

/// Where the installs put their ConfigMaps (namespace, name): what the live API reads by name.
pub const CONFIG_MAPS: [(&str, &str); 4] = [
    ("kube-system", "calico-config"),
    ("kube-flannel", "kube-flannel-cfg"),
    ("kube-system", "kube-flannel-cfg"),
    ("kube-system", "cilium-config"),
];

/// Whether `o`, of `kind`, is one of the objects that say how the CNI is configured.
pub fn describes_cni(kind: &str, o: &Value) -> bool {
    KNOWN
        .iter()
        .any(|k| kind == k.kind && o["metadata"]["name"] == k.name)
}

/// The CNI install from a cluster's objects (items of `kubectl get … -o json` lists), if one
/// is recognised.
pub fn recognise(objects: &[Value]) -> Option<CniInstall> {
    KNOWN.iter().find_map(|k| {
        let o = objects
            .iter()
            .find(|o| o["kind"] == k.kind && o["metadata"]["name"] == k.name)?;
        let (current, net_conf) = (k.read)(o)?;
        let namespace = o["metadata"]["namespace"].as_str().map(str::to_string);
        Some(CniInstall {
            cni: k.cni.into(),
            method: k.method.into(),
            object: k.object.into(),
            restart_agent: k
                .agent
                .map(|(ds, usual)| format!("{}/{ds}", namespace.as_deref().unwrap_or(usual))),
            namespace,
            field: k.field.into(),
            meaning: k.meaning,
            current,
            net_conf,
        })
    })
}

/// A JSON number or a numeric string (ConfigMap values are strings); 0 is "detect".
fn number(v: &Value) -> Option<u32> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// A pod the verdict names, to be recreated so that it gets a veth with the new MTU.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodToRestart {
    pub namespace: String,
    pub name: String,
    /// Its workload as `kubectl` names it (`deployment/order-api`; `pod/<name>` when nothing
    /// controls it), when known.
    pub workload: Option<String>,
}

/// Workload kinds `kubectl rollout restart` recreates one pod at a time.
const ROLLABLE: [&str; 3] = ["deployment/", "statefulset/", "daemonset/"];

/// The change that gives pods `pod_mtu` on a path whose overlay adds `overhead` bytes, for the
/// pods `restart` the verdict names. None when the install's object cannot carry it (a flannel
/// `net-conf.json` that is not a JSON object).
pub fn change(
    install: &CniInstall,
    pod_mtu: u32,
    overhead: u32,
    restart: &[PodToRestart],
) -> Option<Change> {
    let value = match install.meaning {
        MtuMeaning::Pod => pod_mtu,
        MtuMeaning::Underlay => pod_mtu + overhead,
    };
    let patch = match (install.cni.as_str(), install.method.as_str()) {
        ("calico", "operator") => json!({"spec": {"calicoNetwork": {"mtu": value}}}),
        ("calico", _) => json!({"data": {"veth_mtu": value.to_string()}}),
        ("cilium", _) => json!({"data": {"mtu": value.to_string()}}),
        ("flannel", _) => {
            let mut conf: Value = serde_json::from_str(install.net_conf.as_deref()?).ok()?;
            let backend = conf.as_object_mut()?.entry("Backend").or_insert(json!({}));
            backend.as_object_mut()?.insert("MTU".into(), json!(value));
            let text = serde_json::to_string_pretty(&conf).ok()?;
            json!({"data": {"net-conf.json": text}})
        }
        _ => return None,
    };
    let ns_arg = install
        .namespace
        .as_deref()
        .map_or(String::new(), |n| format!(" -n {n}"));
    let mut commands = vec![format!(
        "kubectl patch {}{ns_arg} --type merge -p {}",
        install.object,
        sh_quote(&patch.to_string())
    )];
    if let Some(agent) = &install.restart_agent {
        let (ns, ds) = agent.split_once('/').unwrap_or(("kube-system", agent));
        commands.push(format!("kubectl rollout restart daemonset/{ds} -n {ns}"));
        commands.push(format!("kubectl rollout status daemonset/{ds} -n {ns}"));
    }
    let (rolled, others) = restarts(restart);
    commands.extend(rolled);
    let then = then_text(restart.is_empty(), &others);
    let agent = match install.restart_agent.as_deref() {
        Some(a) => format!("the {a} restart reprograms every node's networking for seconds"),
        None => "the operator restarts calico-node on every node, one at a time".to_string(),
    };
    let risk = format!(
        "{agent}; until every pod is recreated, old and new pods use different MTUs (the old \
         ones still send packets that are too big)"
    );
    Some(Change {
        cni: install.cni.clone(),
        method: install.method.clone(),
        object: install.object.clone(),
        namespace: install.namespace.clone(),
        field: install.field.clone(),
        value,
        patch,
        commands,
        then,
        risk,
    })
}

/// The pods' restarts: a `kubectl rollout restart` per workload that rolls (each once, in
/// order), and for the other pods what recreates them.
fn restarts(pods: &[PodToRestart]) -> (Vec<String>, Vec<String>) {
    let mut rolled = std::collections::BTreeSet::new();
    let mut others = Vec::new();
    for p in pods {
        let (ns, name) = (&p.namespace, &p.name);
        match p.workload.as_deref() {
            Some(w) if ROLLABLE.iter().any(|k| w.starts_with(k)) => {
                rolled.insert(format!("kubectl rollout restart {w} -n {ns}"));
            }
            // Deleting a pod that nothing controls loses it.
            Some(w) if w.starts_with("pod/") => others.push(format!(
                "{ns}/{name} (no controller: recreate it from its manifest)"
            )),
            Some(w) => others.push(format!(
                "`kubectl delete pod -n {ns} {name}` (its {w} recreates it)"
            )),
            None => others.push(format!(
                "`kubectl delete pod -n {ns} {name}` if a controller recreates it (its \
                 workload is not known)"
            )),
        }
    }
    others.dedup();
    (rolled.into_iter().collect(), others)
}

/// What follows the commands: why the pods must be recreated, and the ones no command does.
fn then_text(none_named: bool, others: &[String]) -> String {
    let why = "a running pod keeps the old MTU on its veth until it is recreated";
    if none_named {
        return format!(
            "then recreate the pods that talk across the changed path ({why}): `kubectl rollout \
             restart` of their Deployment, StatefulSet or DaemonSet does it one pod at a time"
        );
    }
    let rest = "recreate the other pods on the changed path the same way";
    if others.is_empty() {
        format!("these rollouts recreate the pods the verdict names ({why}); {rest}")
    } else {
        format!("then recreate {} ({why}); {rest}", others.join(", "))
    }
}

/// `s` as one POSIX shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests;
