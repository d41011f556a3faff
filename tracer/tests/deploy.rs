//! deploy/ is checked here, since it cannot be run on a cluster from this repository: every
//! manifest must deserialize into the Kubernetes 1.37 API types (k8s-openapi) and serialize back
//! to exactly what was written, which is a schema check (a misspelt or misplaced field is
//! dropped by the typed round trip, a wrong type refuses to parse), and the DaemonSet must hold
//! together with the tracer itself: its arguments parse with the tracer's own command line, it
//! adds the capabilities the tracer checks for, its mounts, ports and RBAC agree. The kustomize
//! base, the prometheus-operator component and the overlay docs/cluster.md shows are rendered by
//! `kubectl kustomize` and their output checked the same way.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// The manifest's documents, as written.
fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{DEPLOY}/tracer-daemonset.yaml")).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).expect("valid YAML (no duplicate keys)")
}

/// Parse `doc` as `T` and check that nothing was lost or changed on the way back.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let name = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    let mut diffs = Vec::new();
    diff("", doc, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{name}: not in the schema:\n{}",
        diffs.join("\n")
    );
    t
}

/// Paths where `a` (written) and `b` (after the typed round trip) differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k}: unknown field")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: added by the type"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

#[test]
fn the_diff_catches_what_the_schema_does_not_have() {
    // The check itself: a misspelt field and a misplaced one are found, a wrong type refuses.
    let mut ds = by_kind(&documents(), "DaemonSet").clone();
    ds["spec"]["template"]["spec"]["hostNetwrok"] = Value::Bool(true);
    ds["spec"]["template"]["spec"]["containers"][0]["capabilities"] = Value::Null;
    let back =
        serde_json::to_value(serde_json::from_value::<DaemonSet>(ds.clone()).unwrap()).unwrap();
    let mut diffs = Vec::new();
    diff("", &ds, &back, &mut diffs);
    assert!(diffs.iter().any(|d| d.contains("hostNetwrok")), "{diffs:?}");
    assert!(
        diffs
            .iter()
            .any(|d| d.contains("containers[0].capabilities")),
        "{diffs:?}"
    );
    ds["spec"]["template"]["spec"]["hostPID"] = Value::String("yes".into());
    assert!(serde_json::from_value::<DaemonSet>(ds).is_err());
}

#[test]
fn manifests_match_the_kubernetes_schema_and_hold_together() {
    let docs = documents();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    let ns: Namespace = typed(by_kind(&docs, "Namespace"));
    let sa: ServiceAccount = typed(by_kind(&docs, "ServiceAccount"));
    let role: ClusterRole = typed(by_kind(&docs, "ClusterRole"));
    let binding: ClusterRoleBinding = typed(by_kind(&docs, "ClusterRoleBinding"));
    let ds: DaemonSet = typed(by_kind(&docs, "DaemonSet"));
    let namespace = ns.metadata.name.unwrap();
    assert_eq!(sa.metadata.namespace.as_deref(), Some(namespace.as_str()));
    assert_eq!(ds.metadata.namespace.as_deref(), Some(namespace.as_str()));

    // RBAC: list and watch on exactly what the tracer names flows from, and get on exactly the
    // CNI objects it reads by name (`tracer::fix`), nothing more.
    let mut granted = BTreeMap::new();
    let mut named = BTreeSet::new();
    for rule in role.rules.unwrap() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        if let Some(names) = &rule.resource_names {
            assert_eq!(verbs, BTreeSet::from(["get"]), "{rule:?}");
            for group in rule.api_groups.clone().unwrap() {
                for r in rule.resources.clone().unwrap() {
                    for n in names {
                        named.insert((group.clone(), r.clone(), n.clone()));
                    }
                }
            }
            continue;
        }
        assert_eq!(verbs, BTreeSet::from(["list", "watch"]), "{rule:?}");
        for group in rule.api_groups.unwrap() {
            for r in rule.resources.clone().unwrap() {
                granted.insert(r, group.clone());
            }
        }
    }
    assert_eq!(
        granted,
        BTreeMap::from([
            ("pods".to_string(), String::new()),
            ("services".to_string(), String::new()),
            ("nodes".to_string(), String::new()),
            ("endpointslices".to_string(), "discovery.k8s.io".to_string()),
        ])
    );
    let mut wanted: BTreeSet<(String, String, String)> = tracer::fix::CONFIG_MAPS
        .iter()
        .map(|(_, name)| (String::new(), "configmaps".to_string(), name.to_string()))
        .collect();
    wanted.insert((
        "operator.tigera.io".into(),
        "installations".into(),
        "default".into(),
    ));
    assert_eq!(named, wanted);
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            Some(&subject.name),
            subject.namespace.as_ref()
        ),
        (
            "ServiceAccount",
            sa.metadata.name.as_ref(),
            Some(&namespace)
        )
    );

    // The DaemonSet.
    let spec = ds.spec;
    let template = spec.template;
    assert_eq!(
        spec.selector.match_labels.unwrap(),
        template.metadata.as_ref().unwrap().labels.clone().unwrap(),
        "the selector selects the pods"
    );
    let pod = template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert!(pod
        .tolerations
        .unwrap()
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists")));
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];

    // Least privilege: not privileged; every capability dropped, then the ones the tracer
    // checks for at start (run::NEEDED_CAPS) and the three documented extras added back.
    let sc = c.security_context.clone().unwrap();
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    let added: BTreeSet<String> = caps.add.unwrap().into_iter().collect();
    let mut wanted: BTreeSet<String> = tracer::run::NEEDED_CAPS
        .iter()
        .map(|(_, n)| n.trim_start_matches("CAP_").to_string())
        .collect();
    wanted.extend(["SYSLOG", "SYS_PTRACE", "NET_RAW"].map(String::from));
    assert_eq!(added, wanted);
    // The one-off `kubectl debug --custom` profile grants exactly these too.
    let text = std::fs::read_to_string(format!("{DEPLOY}/tracer-debug.yaml")).unwrap();
    let custom: Value = serde_saphyr::from_str(&text).expect("tracer-debug.yaml is YAML");
    let debug_sc: k8s_openapi::api::core::v1::SecurityContext =
        serde_json::from_value(custom["securityContext"].clone()).expect("a securityContext");
    let debug_caps = debug_sc.capabilities.expect("capabilities");
    assert_eq!(debug_caps.drop.unwrap(), ["ALL"]);
    let debug_added: BTreeSet<String> = debug_caps.add.unwrap().into_iter().collect();
    assert_eq!(
        debug_added, added,
        "tracer-debug.yaml and the DaemonSet disagree"
    );
    assert_eq!(
        custom.as_object().map(|o| o.len()),
        Some(1),
        "only the securityContext: {custom}"
    );
    // Linux nodes only.
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|s| s.get("kubernetes.io/os"))
            .map(String::as_str),
        Some("linux")
    );

    // The arguments are the tracer's: they parse with its own command line, once the
    // $(VAR) references (each defined in env) are expanded as the kubelet does.
    assert!(c.command.is_none(), "the image's ENTRYPOINT is the tracer");
    // The kubelet's expansion for a node address of either family (`status.hostIP`): the
    // arguments must parse for both, and the metrics listen on that address.
    let run_on = |host_ip: &str| {
        let env: BTreeMap<String, String> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| {
                let sample = match e.value_from {
                    Some(_) => host_ip.to_string(), // status.hostIP
                    None => e.value.unwrap(),
                };
                (e.name, sample)
            })
            .collect();
        let args: Vec<String> = c
            .args
            .clone()
            .unwrap()
            .into_iter()
            .map(|a| {
                let mut a = a;
                while let Some(start) = a.find("$(") {
                    let end = start + a[start..].find(')').expect("closed $(");
                    let value = env
                        .get(&a[start + 2..end])
                        .unwrap_or_else(|| panic!("{a}: not in env"));
                    a.replace_range(start..=end, value);
                }
                a
            })
            .collect();
        use clap::Parser as _;
        let cli =
            tracer::cli::Cli::try_parse_from(std::iter::once("tracer".to_string()).chain(args))
                .unwrap_or_else(|e| panic!("with host IP {host_ip}: {e}"));
        let tracer::cli::Command::Run(run) = cli.command else {
            panic!("not `tracer run`")
        };
        let metrics = run.metrics.expect("--metrics");
        assert_eq!(metrics.ip().to_string(), host_ip, "on the node's address");
        assert_eq!(metrics.port(), tracer::sink::metrics::DEFAULT_PORT);
        run
    };
    run_on("2001:db8::10");
    let run = run_on("192.0.2.10");
    let metrics = run.metrics.expect("--metrics");
    assert!(
        run.log.iter().any(|p| p.as_os_str() == "-"),
        "JSONL on stdout: {:?}",
        run.log
    );
    assert_eq!(run.host_root, std::path::Path::new("/host"));

    // The metrics port: the container's, the probe's and the scrape annotation's.
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(port.container_port, i32::from(metrics.port()));
    let probe = c.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.path.as_deref(), Some("/metrics"));
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
            port.name.clone().unwrap()
        )
    );
    let annotations = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(
        annotations["prometheus.io/port"],
        metrics.port().to_string()
    );

    // Mounts: each names a volume, all read-only; node files land under --host-root.
    let volumes: BTreeMap<String, String> = pod
        .volumes
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.host_path.expect("hostPath volumes only").path))
        .collect();
    let mounts = c.volume_mounts.clone().unwrap();
    assert_eq!(mounts.len(), volumes.len(), "every volume mounted");
    for m in &mounts {
        let host = &volumes[&m.name];
        assert_eq!(m.read_only, Some(true), "{}", m.name);
        if m.mount_path.starts_with("/host/") {
            assert_eq!(&m.mount_path["/host".len()..], host.as_str(), "{}", m.name);
        } else {
            assert_eq!(&m.mount_path, host, "{}", m.name);
        }
    }
    let paths: BTreeSet<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
    for needed in [
        "/sys/kernel/tracing",
        "/host/var/log/pods",
        "/host/etc/cni/net.d",
    ] {
        assert!(paths.contains(needed), "{needed} not mounted");
    }
}

#[test]
fn the_image_runs_the_tracer_built_by_xtask() {
    let dockerfile = std::fs::read_to_string(format!("{DEPLOY}/Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        lines[0].starts_with("FROM debian:12"),
        "same glibc as the build machine"
    );
    assert!(lines.contains(&"COPY target/release/tracer /usr/local/bin/tracer"));
    assert!(lines.contains(&r#"ENTRYPOINT ["/usr/local/bin/tracer"]"#));
    let ignore = std::fs::read_to_string(format!("{DEPLOY}/Dockerfile.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "!target/release/tracer"));
}

/// `kubectl kustomize DIR`: the renderer operators use (kustomize 5.5 inside kubectl 1.32 here).
fn kustomize(dir: &std::path::Path) -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl (with kustomize 3.7 or newer) renders deploy/'s kustomizations: {e}")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple::<Value>(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// (kind, name) of each document, sorted: kustomize orders documents its own way.
fn names(docs: &[Value]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    names.sort();
    names
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The ServiceMonitor fields `deploy/prometheus-operator` uses, named and typed as in the
/// `monitoring.coreos.com/v1` CRD of prometheus-operator 0.84 (read there; the CRD itself is not
/// vendored). k8s-openapi has no type for it; with `typed` these refuse a misspelt or misplaced
/// field as the API server's pruning would silently drop it.
mod service_monitor {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ServiceMonitor {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: Spec,
    }

    /// `required: [endpoints, selector]` in the CRD: not `Option`.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Spec {
        pub selector: LabelSelector,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub namespace_selector: Option<NamespaceSelector>,
        pub endpoints: Vec<Endpoint>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct NamespaceSelector {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub any: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub match_names: Option<Vec<String>>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Endpoint {
        /// The Service port's name.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub port: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub path: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub interval: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub relabelings: Option<Vec<Relabel>>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Relabel {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub source_labels: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub target_label: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub action: Option<String>,
    }

    /// The CRD's `interval` pattern, `^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?
    /// (([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`: units in that order, each at most once.
    pub fn is_duration(s: &str) -> bool {
        if s == "0" {
            return true;
        }
        let units = ["y", "w", "d", "h", "m", "s", "ms"];
        let mut next = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return false;
            }
            rest = &rest[digits..];
            // "ms" before "m": the longer unit first.
            let Some((i, unit)) = units
                .iter()
                .enumerate()
                .skip(next)
                .filter(|(_, u)| rest.starts_with(**u))
                .max_by_key(|(_, u)| u.len())
            else {
                return false;
            };
            rest = &rest[unit.len()..];
            next = i + 1;
        }
        true
    }

    /// The CRD's label name pattern `^[a-zA-Z_][a-zA-Z0-9_]*$`.
    pub fn is_label_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// The CRD's `action` enum, lower-case spellings (each also accepted capitalised).
    pub const ACTIONS: &[&str] = &[
        "replace",
        "keep",
        "drop",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "lowercase",
        "uppercase",
        "keepequal",
        "dropequal",
    ];
}

#[test]
fn the_service_monitor_checks_catch_what_the_crd_refuses() {
    use service_monitor::{is_duration, is_label_name};
    for ok in ["30s", "1m30s", "0", "1h", "500ms", "1d12h"] {
        assert!(is_duration(ok), "{ok}");
    }
    // (The CRD's pattern accepts "": every group is optional.)
    for bad in ["30", "s", "30s1m", "1m1m", "1.5s", "30 s"] {
        assert!(!is_duration(bad), "{bad}");
    }
    assert!(is_label_name("__meta_kubernetes_pod_node_name"));
    assert!(!is_label_name("node-name") && !is_label_name("1node"));
    let mut doc = find(&documented_overlay(), "ServiceMonitor", "tracer").clone();
    doc["spec"]["endpoints"][0]["intervall"] = Value::String("30s".into());
    assert!(serde_json::from_value::<service_monitor::ServiceMonitor>(doc).is_err());
}

/// The overlay docs/cluster.md shows, rendered as an operator would: written into a temporary
/// directory next to a `tracer` link to this checkout.
fn documented_overlay() -> Vec<Value> {
    let page = std::fs::read_to_string(format!("{DEPLOY}/../docs/cluster.md")).unwrap();
    let start = page
        .find("# my-cluster/kustomization.yaml")
        .expect("docs/cluster.md shows the overlay");
    let block = &page[start..page[start..].find("```").unwrap() + start];
    // The block sits in a list item: two spaces of indentation after its first line.
    let yaml: String = block
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    // Tests run in parallel threads of one process: each render its own directory.
    static RENDERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        Dir(std::env::temp_dir().join(format!("tracer-kustomize-{}-{n}", std::process::id())));
    std::fs::create_dir_all(dir.0.join("my-cluster")).unwrap();
    std::os::unix::fs::symlink(format!("{DEPLOY}/.."), dir.0.join("tracer")).unwrap();
    std::fs::write(dir.0.join("my-cluster/kustomization.yaml"), yaml).unwrap();
    kustomize(&dir.0.join("my-cluster"))
}

#[test]
fn the_kustomize_base_is_the_manifest() {
    let rendered = kustomize(std::path::Path::new(DEPLOY));
    let written = documents();
    assert_eq!(names(&rendered), names(&written));
    for w in &written {
        let (kind, name) = (
            w["kind"].as_str().unwrap(),
            w["metadata"]["name"].as_str().unwrap(),
        );
        assert_eq!(find(&rendered, kind, name), w, "{kind} {name}");
    }
}

#[test]
fn the_documented_overlay_adds_a_service_monitor_that_scrapes_every_tracer() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use service_monitor::{is_duration, is_label_name, ServiceMonitor, ACTIONS};

    let docs = documented_overlay();
    let mut wanted = names(&documents());
    wanted.push(("Service".into(), "tracer-metrics".into()));
    wanted.push(("ServiceMonitor".into(), "tracer".into()));
    wanted.sort();
    assert_eq!(names(&docs), wanted, "the base and the component");
    let ds: DaemonSet = typed(find(&docs, "DaemonSet", "tracer"));
    let svc: Service = typed(find(&docs, "Service", "tracer-metrics"));
    let sm: ServiceMonitor = typed(find(&docs, "ServiceMonitor", "tracer"));

    // The overlay's image and label landed.
    let pod = ds.spec.template;
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/tracer:0.1.0")
    );
    let sm_labels = sm.metadata.labels.clone().unwrap();
    assert_eq!(
        sm_labels.get("release").map(String::as_str),
        Some("kube-prometheus-stack")
    );

    // The Service: headless, in the tracer's namespace, over the DaemonSet's pods, on the
    // container's metrics port.
    let namespace = ds.metadata.namespace.clone().unwrap();
    assert_eq!(svc.metadata.namespace.as_ref(), Some(&namespace));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let pod_labels = pod.metadata.unwrap().labels.unwrap();
    let selector = spec.selector.unwrap();
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Service selects the pods: {k}"
        );
    }
    let container_port = &container.ports.as_ref().unwrap()[0];
    let svc_port = &spec.ports.unwrap()[0];
    assert_eq!(svc_port.port, container_port.container_port);
    assert_eq!(
        svc_port.target_port,
        Some(IntOrString::String(container_port.name.clone().unwrap()))
    );

    // The ServiceMonitor: selects that Service (its labels, its namespace) and scrapes the
    // path the liveness probe reads, on the Service's port, at an interval the CRD accepts.
    assert_eq!(sm.api_version, "monitoring.coreos.com/v1");
    assert_eq!(sm.metadata.namespace.as_ref(), Some(&namespace));
    assert!(sm.spec.selector.match_expressions.is_none());
    let svc_labels = svc.metadata.labels.unwrap();
    let match_labels = sm.spec.selector.match_labels.clone().unwrap();
    assert!(!match_labels.is_empty());
    for (k, v) in &match_labels {
        assert_eq!(
            svc_labels.get(k),
            Some(v),
            "the ServiceMonitor selects the Service: {k}"
        );
    }
    let ns = sm.spec.namespace_selector.as_ref().unwrap();
    assert_eq!(ns.match_names.as_deref(), Some(&[namespace][..]));
    assert_eq!(sm.spec.endpoints.len(), 1);
    let endpoint = &sm.spec.endpoints[0];
    assert_eq!(endpoint.port, svc_port.name);
    let probe = container.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(endpoint.path, probe.path);
    assert!(is_duration(endpoint.interval.as_deref().unwrap()));
    for r in endpoint.relabelings.as_deref().unwrap_or_default() {
        for l in r.source_labels.iter().flatten() {
            assert!(is_label_name(l), "{l}");
        }
        assert!(r.target_label.as_deref().is_none_or(is_label_name));
        let action = r
            .action
            .as_deref()
            .unwrap_or("replace")
            .to_ascii_lowercase();
        assert!(ACTIONS.contains(&action.as_str()), "{action}");
    }
}
