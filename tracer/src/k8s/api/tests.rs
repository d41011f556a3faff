//! The live API source against a fake API server: plain HTTP on 127.0.0.1, answering list
//! requests with recorded lists (testdata/api/*.json, recorded from the same objects as
//! testdata/cluster.json) and watch requests with recorded newline-delimited events in chunked
//! transfer encoding, as the real API server does.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch as gate,
    time::timeout,
};

use super::*;
use crate::k8s::ObjectRef;

/// No test waits longer than this for anything.
const PATIENCE: Duration = Duration::from_secs(10);

const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NODES: &str = "/api/v1/nodes";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/k8s/testdata")
        .join(name)
}

fn recorded(name: &str) -> String {
    std::fs::read_to_string(testdata(&format!("api/{name}"))).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod_name(inv: &Inventory, addr: &str) -> Option<String> {
    inv.pods_by_ip.get(&ip(addr)).map(|p| match &*p.pod {
        ObjectRef {
            namespace: Some(ns),
            name,
            ..
        } => format!("{ns}/{name}"),
        ObjectRef { name, .. } => name.to_string(),
    })
}

/// The error's message with its causes; a panic if it is not an error.
fn err<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// What the fake server answers for one resource path.
#[derive(Clone)]
struct Route {
    /// Status code and body of a list (and of a watch, when not 200).
    status: u16,
    body: String,
    /// Watch events, one JSON document a line, sent once the test opens the gate.
    events: String,
}

impl Route {
    fn ok(list: &str) -> Route {
        Route {
            status: 200,
            body: recorded(list),
            events: String::new(),
        }
    }
}

/// The recorded cluster, with no watch events.
fn cluster() -> HashMap<&'static str, Route> {
    HashMap::from([
        ("/version", Route::ok("version.json")),
        (PODS, Route::ok("pods.json")),
        (SERVICES, Route::ok("services.json")),
        (SLICES, Route::ok("endpointslices.json")),
        (NODES, Route::ok("nodes.json")),
    ])
}

struct FakeApi {
    url: String,
    /// Request lines received ("GET /api/v1/pods?limit=500 HTTP/1.1").
    requests: Arc<Mutex<Vec<String>>>,
    gate: gate::Sender<bool>,
}

impl FakeApi {
    async fn start(routes: HashMap<&'static str, Route>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (gate, gate_rx) = gate::channel(false);
        let routes = Arc::new(routes);
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, routes.clone(), log.clone(), gate_rx.clone()));
            }
        });
        FakeApi {
            url,
            requests,
            gate,
        }
    }

    fn client(&self) -> Client {
        Client::try_from(Config::new(self.url.parse().unwrap())).unwrap()
    }

    /// Let the watches send their events.
    fn open_watches(&self) {
        self.gate.send_replace(true);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// One connection: HTTP/1.1 with keep-alive, GET only (all the watcher sends).
async fn serve(
    mut conn: TcpStream,
    routes: Arc<HashMap<&'static str, Route>>,
    log: Arc<Mutex<Vec<String>>>,
    mut gate: gate::Receiver<bool>,
) {
    let mut buf = Vec::new();
    loop {
        // The request head; GET requests have no body.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let line = head.lines().next().unwrap_or_default().to_string();
        log.lock().unwrap().push(line.clone());
        let target = line.split(' ').nth(1).unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let is_watch = query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");

        let Some(route) = routes.get(path) else {
            let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#;
            if respond(&mut conn, 404, body).await.is_err() {
                return;
            }
            continue;
        };
        if !is_watch || route.status != 200 {
            if respond(&mut conn, route.status, &route.body).await.is_err() {
                return;
            }
            continue;
        }
        // A watch: headers now, events (each its own chunk) when the gate opens, then the
        // connection is held open as the API server does until its timeout.
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Cache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n";
        if conn.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if !route.events.is_empty() {
            if gate.wait_for(|open| *open).await.is_err() {
                return;
            }
            for event in route.events.lines() {
                let chunk = format!("{:x}\r\n{event}\n\r\n", event.len() + 1);
                if conn.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        // Until the client goes away.
        let mut sink = [0u8; 64];
        while let Ok(n) = conn.read(&mut sink).await {
            if n == 0 {
                return;
            }
        }
        return;
    }
}

async fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await
}

/// The next [`Update::Replace`], and the status lines sent before it.
async fn next_replace(rx: &mut mpsc::Receiver<Update>) -> (Inventory, Vec<String>) {
    let mut statuses = Vec::new();
    loop {
        match timeout(PATIENCE, rx.recv()).await {
            Ok(Some(Update::Replace(inv))) => return (inv, statuses),
            Ok(Some(Update::Status(s))) => statuses.push(s),
            // The install is read once by the caller of `watch`, never by the watch.
            Ok(Some(Update::Cni(c))) => panic!("the watch sent a CNI install: {c:?}"),
            Ok(None) => panic!("watch ended; statuses: {statuses:?}"),
            Err(_) => panic!("no Replace within {PATIENCE:?}; statuses: {statuses:?}"),
        }
    }
}

/// A kubeconfig file for `server`, removed on drop.
struct TempKubeconfig(PathBuf);

impl TempKubeconfig {
    fn new(name: &str, server: &str) -> TempKubeconfig {
        let path = std::env::temp_dir().join(format!(
            "tracer-k8s-test-{}-{name}.yaml",
            std::process::id()
        ));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    \
             server: {server}\nusers:\n- name: tracer\n  user:\n    token: not-a-real-token\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: tracer\n\
             current-context: lab\n"
        );
        std::fs::write(&path, text).unwrap();
        TempKubeconfig(path)
    }
}

impl Drop for TempKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn initial_lists_give_the_same_inventory_as_the_snapshot_file() {
    let api = FakeApi::start(cluster()).await;
    // Through a kubeconfig, as a user would.
    let kubeconfig = TempKubeconfig::new("initial", &api.url);
    let client = connect(ApiSource::Kubeconfig(kubeconfig.0.clone()))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(watch(client, tx));

    let (inv, statuses) = next_replace(&mut rx).await;
    assert_eq!(statuses, ["API: 7 pods, 8 services, 3 nodes"]);
    // The lists were recorded from the objects of the snapshot fixture: same names.
    let (from_file, _) = snapshot::load(&testdata("cluster.json")).unwrap();
    assert_eq!(inv, from_file);
    // A few by hand: a dual-stack pod and its node, host-network pods left out, a backend
    // mapped to its service port, a node address.
    let p = &inv.pods_by_ip[&ip("fd00:244:0:2::23")];
    assert_eq!(
        pod_name(&inv, "10.244.2.23").unwrap(),
        "shop/checkout-6b8f7d9c4-lm3np"
    );
    assert_eq!(p.node.as_deref(), Some("node-c"));
    assert_eq!(pod_name(&inv, "10.0.0.11"), None);
    let backend = &inv.services_by_backend[&(ip("10.244.1.17"), 3000, 6)];
    assert_eq!((&*backend.name, backend.port), ("frontend", Some(80)));
    assert_eq!(&*inv.nodes_by_ip[&ip("203.0.113.11")], "node-b");

    // List, then watch from the list's resourceVersion, for each kind in all namespaces.
    let requests = api.requests();
    for path in [PODS, SERVICES, SLICES, NODES] {
        assert!(
            requests
                .iter()
                .any(|r| r.starts_with(&format!("GET {path}?")) && !r.contains("watch=true")),
            "no list of {path} in {requests:#?}"
        );
    }
    // The watches start right after the lists; give them a moment.
    timeout(PATIENCE, async {
        while api
            .requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
            < 4
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(api
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .all(|r| r.contains("resourceVersion=41804110")));
    task.abort();
}

#[tokio::test]
async fn a_pod_added_mid_run_gets_its_name() {
    let mut routes = cluster();
    routes.get_mut(PODS).unwrap().events = recorded("pods-watch.json");
    routes.get_mut(SLICES).unwrap().events = recorded("endpointslices-watch.json");
    let api = FakeApi::start(routes).await;
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(watch(api.client(), tx));

    let (first, _) = next_replace(&mut rx).await;
    assert_eq!(pod_name(&first, "10.244.0.53"), None);
    assert_eq!(pod_name(&first, "10.244.1.32").unwrap(), "cache/redis-1");

    // The pod is created (Pending, no IP), scheduled and started; redis-1 is deleted; the
    // checkout EndpointSlice gains the new pod.
    api.open_watches();
    let started = Instant::now();
    let last = loop {
        let (inv, statuses) = next_replace(&mut rx).await;
        assert!(statuses.is_empty(), "{statuses:?}");
        if inv.pods_by_ip.contains_key(&ip("10.244.0.53"))
            && inv
                .services_by_backend
                .contains_key(&(ip("10.244.0.53"), 8080, 6))
            && !inv.pods_by_ip.contains_key(&ip("10.244.1.32"))
        {
            break inv;
        }
        assert!(started.elapsed() < PATIENCE, "events never all applied");
    };
    for a in ["10.244.0.53", "fd00:244::53"] {
        assert_eq!(
            pod_name(&last, a).as_deref(),
            Some("shop/checkout-6b8f7d9c4-8wz4d"),
            "{a}"
        );
        assert_eq!(last.pods_by_ip[&ip(a)].node.as_deref(), Some("node-a"));
    }
    let backend = &last.services_by_backend[&(ip("10.244.0.53"), 8080, 6)];
    assert_eq!((&*backend.name, backend.port), ("checkout", Some(80)));
    // Everything else is as before.
    assert_eq!(last.counts(), (7, 8, 3));
    assert_eq!(
        pod_name(&last, "10.244.2.23").as_deref(),
        Some("shop/checkout-6b8f7d9c4-lm3np")
    );
    task.abort();
}

#[tokio::test]
async fn forbidden_pods_are_reported_once_and_the_other_kinds_are_used() {
    let mut routes = cluster();
    routes.insert(
        PODS,
        Route {
            status: 403,
            body: recorded("forbidden-pods.json"),
            events: String::new(),
        },
    );
    let api = FakeApi::start(routes).await;
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(watch(api.client(), tx));

    let (inv, statuses) = next_replace(&mut rx).await;
    let forbidden: Vec<&String> = statuses.iter().filter(|s| s.contains("403")).collect();
    assert_eq!(forbidden.len(), 1, "{statuses:#?}");
    let msg = forbidden[0];
    for needle in [
        "API: listing pods refused (403 Forbidden: pods is forbidden: User \"system:node:worker-1\"",
        "continuing without pod names",
        "kubelet credentials",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    assert!(statuses
        .iter()
        .any(|s| s == "API: 0 pods, 8 services, 3 nodes (not listed yet: pods)"));
    assert!(inv.pods_by_ip.is_empty());
    assert_eq!(inv.services_by_cluster_ip.len(), 19);
    // Fronts other than ClusterIPs come through the API too.
    assert_eq!(inv.services_by_external_ip.len(), 7);
    assert_eq!(inv.services_by_node_port.len(), 4);
    assert_eq!(&*inv.nodes_by_ip[&ip("10.0.0.10")], "node-a");

    // The watcher retries with backoff (0.8 s, then more); the refusal is not repeated.
    timeout(PATIENCE, async {
        while api
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/pods?"))
            .count()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the pods list was not retried");
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(u) = rx.try_recv() {
        assert!(
            !matches!(&u, Update::Status(s) if s.contains("403")),
            "repeated: {u:?}"
        );
    }
    task.abort();
}

#[tokio::test]
async fn a_closed_port_is_a_clear_error_without_hanging() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let kubeconfig = TempKubeconfig::new("closed", &url);
    let started = Instant::now();
    let msg = err(timeout(
        PATIENCE,
        connect(ApiSource::Kubeconfig(kubeconfig.0.clone())),
    )
    .await
    .expect("connect hung"));
    assert!(
        msg.starts_with(&format!("API server {url} (")) && msg.ends_with(": connection refused"),
        "{msg}"
    );
    assert!(msg.contains(&kubeconfig.0.display().to_string()), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_missing_kubeconfig_is_a_clear_error() {
    let e = err(connect(ApiSource::Kubeconfig("/nonexistent/kubeconfig".into())).await);
    assert_eq!(e, "kubeconfig /nonexistent/kubeconfig: no such file");
    let e = err(connect(ApiSource::KubeletConf("/nonexistent/kubelet.conf".into())).await);
    assert_eq!(
        e,
        "kubelet credentials /nonexistent/kubelet.conf: no such file"
    );
    // Of several candidates, every failure is named.
    let e = err(connect_any(&[
        ApiSource::Kubeconfig("/nonexistent/a".into()),
        ApiSource::KubeletConf("/nonexistent/b".into()),
    ])
    .await);
    assert_eq!(
        e,
        "kubeconfig /nonexistent/a: no such file; kubelet credentials /nonexistent/b: no such file"
    );
    assert!(err(connect_any(&[]).await).starts_with("no Kubernetes credentials found"));
}

#[tokio::test]
async fn a_broken_kubeconfig_says_what_is_wrong() {
    // Not YAML at all.
    let k = TempKubeconfig::new("garbage", "x");
    std::fs::write(&k.0, "{{{ not yaml").unwrap();
    let e = err(connect(ApiSource::Kubeconfig(k.0.clone())).await);
    assert!(
        e.starts_with(&format!("kubeconfig {}: ", k.0.display())),
        "{e}"
    );
    // A client certificate that is missing: the message names it, not the kubeconfig as missing.
    let k = TempKubeconfig::new("cert", "https://127.0.0.1:6443");
    let text = std::fs::read_to_string(&k.0).unwrap().replace(
        "token: not-a-real-token",
        "client-certificate: /nonexistent/pki/kubelet-client-current.pem\n    \
         client-key: /nonexistent/pki/kubelet-client-current.pem",
    );
    std::fs::write(&k.0, text).unwrap();
    let e = err(connect(ApiSource::KubeletConf(k.0.clone())).await);
    assert!(
        e.contains("/nonexistent/pki/kubelet-client-current.pem"),
        "{e}"
    );
    assert!(e.starts_with("kubelet credentials "), "{e}");
}

#[test]
fn sources_in_order_of_preference() {
    let kc = |p: &str| ApiSource::Kubeconfig(p.into());
    let kubelet = ApiSource::KubeletConf(KUBELET_CONF.into());
    let choose = |explicit: Option<&str>, vars: &[(&str, &str)], files: &[&str]| {
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        };
        let exists = |p: &Path| files.iter().any(|f| Path::new(f) == p);
        choose_source_with(explicit.map(Path::new), &env, &exists)
    };
    let everything = [
        ("KUBECONFIG", "/k/one"),
        ("HOME", "/root"),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ];
    let all_files = ["/root/.kube/config", KUBELET_CONF];

    // --kubeconfig alone: the user chose.
    assert_eq!(choose(Some("/x"), &everything, &all_files), [kc("/x")]);
    // KUBECONFIG hides ~/.kube/config, as with kubectl; the others remain fallbacks.
    assert_eq!(
        choose(None, &everything, &all_files),
        [kc("/k/one"), ApiSource::InCluster, kubelet.clone()]
    );
    // Several files in KUBECONFIG: kube merges them.
    assert_eq!(
        choose(None, &[("KUBECONFIG", "/k/one:/k/two")], &[]),
        [ApiSource::Default]
    );
    // ~/.kube/config only when it exists; an empty KUBECONFIG is unset.
    assert_eq!(
        choose(None, &[("KUBECONFIG", ""), ("HOME", "/root")], &all_files),
        [kc("/root/.kube/config"), kubelet.clone()]
    );
    assert_eq!(
        choose(None, &[("HOME", "/root")], &[KUBELET_CONF]),
        [kubelet]
    );
    // In a pod.
    assert_eq!(
        choose(None, &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")], &[]),
        [ApiSource::InCluster]
    );
    assert_eq!(choose(None, &[], &[]), []);
}

/// Tests that change the process environment take this first.
static ENV: Mutex<()> = Mutex::new(());

#[test]
fn sources_from_the_real_environment() {
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let saved = std::env::var_os("KUBECONFIG");
    std::env::set_var("KUBECONFIG", "/tmp/tracer-test-kubeconfig");
    let from_env = choose_source(None);
    let explicit = choose_source(Some(Path::new("/etc/tracer/kubeconfig")));
    match saved {
        Some(v) => std::env::set_var("KUBECONFIG", v),
        None => std::env::remove_var("KUBECONFIG"),
    }
    assert_eq!(
        from_env.first(),
        Some(&ApiSource::Kubeconfig("/tmp/tracer-test-kubeconfig".into()))
    );
    assert_eq!(
        explicit,
        [ApiSource::Kubeconfig("/etc/tracer/kubeconfig".into())]
    );
}

/// Re-deriving the inventory is linear: 10k pods (dual-stack), 2k services with a slice each,
/// 200 nodes. Prints the time (run with --nocapture; --release for production numbers).
#[test]
fn rebuilding_for_ten_thousand_pods() {
    let mut state = State::default();
    let mut apply = |kind: Kind, v: serde_json::Value| {
        let mut w = Warnings::default();
        let at = Item::new(kind.object_kind(), &v);
        let object = match kind {
            Kind::Pods => snapshot::pod(&at, &mut w).map(Object::Pod),
            Kind::Services => snapshot::service(&at, &mut w).map(Object::Service),
            Kind::EndpointSlices => snapshot::endpoint_slice(&at, &mut w).map(Object::Slice),
            Kind::Nodes => snapshot::node(&at, &mut w).map(Object::Node),
        };
        assert!(object.is_some() && w.finish().is_empty());
        let key = (
            String::new(),
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            v["metadata"]["name"].as_str().unwrap().to_string(),
        );
        state.apply(
            kind,
            Change::Apply {
                key,
                object,
                warnings: Vec::new(),
                init: false,
            },
        );
    };
    for i in 0..10_000u32 {
        let (a, b) = (i / 250, i % 250);
        apply(
            Kind::Pods,
            serde_json::json!({"metadata": {"namespace": format!("ns{}", i % 50), "name": format!("pod-{i}")},
                "spec": {"nodeName": format!("node-{}", i % 200)},
                "status": {"phase": "Running", "podIPs": [{"ip": format!("10.244.{a}.{b}")}, {"ip": format!("fd00:244:{a:x}::{b:x}")}]}}),
        );
    }
    for i in 0..2_000u32 {
        let ns = format!("ns{}", i % 50);
        apply(
            Kind::Services,
            serde_json::json!({"metadata": {"namespace": ns, "name": format!("svc-{i}")},
                "spec": {"clusterIPs": [format!("10.96.{}.{}", i / 250, i % 250)],
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        );
        let eps: Vec<_> = (0..5)
            .map(|j| {
                let p = (i * 5 + j) % 10_000;
                serde_json::json!({"addresses": [format!("10.244.{}.{}", p / 250, p % 250)]})
            })
            .collect();
        apply(
            Kind::EndpointSlices,
            serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
                "metadata": {"namespace": ns, "name": format!("svc-{i}-abcde"),
                             "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        );
    }
    for i in 0..200u32 {
        apply(
            Kind::Nodes,
            serde_json::json!({"metadata": {"name": format!("node-{i}")},
                "status": {"addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250)}]}}),
        );
    }
    let t = std::time::Instant::now();
    let inv = state.inventory();
    let took = t.elapsed();
    println!("inventory of 10k pods, 2k services, 2k slices, 200 nodes: {took:?}");
    assert_eq!(inv.counts(), (10_000, 2_000, 200));
    assert_eq!(inv.pods_by_ip.len(), 20_000);
    assert_eq!(inv.services_by_backend.len(), 10_000);
    // Generous: debug build, shared machine. Measured times are in the report.
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A kind that was refused and then allowed (RBAC fixed during the run) is announced.
#[test]
fn recovery_after_a_refusal_is_reported() {
    let mut state = State::default();
    let refused = Change::Error(Some("API: listing pods refused (...)".into()));
    assert_eq!(state.apply(Kind::Pods, Change::Init), Vec::<String>::new());
    assert_eq!(
        state.apply(Kind::Pods, refused),
        ["API: listing pods refused (...)"]
    );
    // Retried: not repeated.
    state.apply(Kind::Pods, Change::Init);
    let again = Change::Error(Some("API: listing pods refused (...)".into()));
    assert_eq!(state.apply(Kind::Pods, again), Vec::<String>::new());
    // Allowed now.
    state.apply(Kind::Pods, Change::Init);
    assert_eq!(
        state.apply(Kind::Pods, Change::InitDone),
        ["API: pods listed (0 with names)"]
    );
    // A later watch failure is reported once more, its recovery after a re-list too.
    state.apply(
        Kind::Pods,
        Change::Error(Some("API: watching pods failed".into())),
    );
    state.apply(Kind::Pods, Change::Init);
    assert_eq!(
        state.apply(Kind::Pods, Change::InitDone),
        ["API: pods listed again"]
    );
    // 410 Gone has no message.
    assert_eq!(
        state.apply(Kind::Pods, Change::Error(None)),
        Vec::<String>::new()
    );
}

#[test]
fn watcher_errors_as_status_lines() {
    use kube::core::Status;
    let watch_error = |code, reason: &str, msg: &str| {
        watcher::Error::WatchError(Status::failure(msg, reason).with_code(code).boxed())
    };
    // Expired resourceVersion: the watcher lists again by itself.
    assert_eq!(
        error_message(
            Kind::Pods,
            &watch_error(410, "Expired", "too old resource version")
        ),
        None
    );
    assert_eq!(
        error_message(
            Kind::Nodes,
            &watch_error(500, "InternalError", "etcd timeout")
        )
        .unwrap(),
        "API: watching nodes failed: 500 InternalError: etcd timeout; retrying"
    );
    // Refused for a service account: no kubelet hint.
    let list_error = watcher::Error::InitialListFailed(kube::Error::Api(
        Status::failure(
            "endpointslices.discovery.k8s.io is forbidden: User \
             \"system:serviceaccount:mtu:tracer\" cannot list resource \"endpointslices\"",
            "Forbidden",
        )
        .with_code(403)
        .boxed(),
    ));
    assert_eq!(
        error_message(Kind::EndpointSlices, &list_error).unwrap(),
        "API: listing endpointslices refused (403 Forbidden: endpointslices.discovery.k8s.io is \
         forbidden: User \"system:serviceaccount:mtu:tracer\" cannot list resource \
         \"endpointslices\"); continuing without service names by backend address"
    );
    // A body that was not a Status.
    let bare = watcher::Error::InitialListFailed(kube::Error::Api(
        Status::failure("", "").with_code(401).boxed(),
    ));
    assert_eq!(
        error_message(Kind::Services, &bare).unwrap(),
        "API: listing services: credentials rejected (401 Unauthorized); retrying"
    );
}
