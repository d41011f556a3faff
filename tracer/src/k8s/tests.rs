//! [`Inventory::attribute`] and [`Inventory::merge`] on the fixture cluster
//! (testdata/cluster.json): node-a 10.0.0.10, node-b 10.0.0.11 / 203.0.113.11, node-c 10.0.0.12;
//! shop/frontend pod 10.244.1.17 on node-b, shop/checkout pods 10.244.2.23 (node-c) and
//! 10.244.1.24 (node-b) behind ClusterIP 10.96.12.34 / fd00:96::1234 port 80 → 8080 ("http").

use std::{net::IpAddr, path::Path};

use super::*;
use crate::event::{Encap, Kind, Outer, Record};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn load(name: &str) -> Inventory {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/k8s/testdata")
        .join(name);
    let (inv, warnings) = snapshot::load(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    inv
}

fn flow(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
    FlowKey {
        proto: Some(proto),
        src: Some(ip(src)),
        sport: Some(sport),
        dst: Some(ip(dst)),
        dport: Some(dport),
        outer_src: None,
        outer_dst: None,
    }
}

/// A fixture pod as attribution names it, with its workload as its controller names it in
/// the fixture files.
fn pod(ns: &str, name: &str) -> Option<Arc<ObjectRef>> {
    let workload = match name {
        FRONTEND => "deployment/frontend",
        CHECKOUT_C | CHECKOUT_B => "deployment/checkout",
        "alertmanager-main-0" => "statefulset/alertmanager-main",
        other => panic!("no workload known for fixture pod {other}"),
    };
    Some(Arc::new(
        ObjectRef::new(Some(ns.into()), name.into()).with_workload(Some(workload.into())),
    ))
}

fn node(name: &str) -> Option<Arc<ObjectRef>> {
    Some(Arc::new(ObjectRef::new(None, name.into())))
}

/// A service of the fixture's `shop` namespace, by its port 80 named `http`.
fn shop_http(name: &str) -> Option<Arc<ServiceRef>> {
    Some(Arc::new(ServiceRef::new(
        "shop".into(),
        name.into(),
        Some(80),
        Some("http".into()),
    )))
}

fn checkout_http() -> Option<Arc<ServiceRef>> {
    shop_http("checkout")
}

const FRONTEND: &str = "frontend-7c9d8f6b5-x2x9k";
const CHECKOUT_C: &str = "checkout-6b8f7d9c4-lm3np";
const CHECKOUT_B: &str = "checkout-6b8f7d9c4-qq7rt";

#[test]
fn pre_dnat_pod_to_cluster_ip() {
    let inv = load("cluster.json");
    let a = inv.attribute(&flow(TCP, "10.244.1.17", 43512, "10.96.12.34", 80));
    assert_eq!(
        a,
        Attribution {
            src_pod: pod("shop", FRONTEND),
            dst_pod: None,
            service: checkout_http(),
            src_node: node("node-b"),
            // A ClusterIP is on no node.
            dst_node: None,
        }
    );
    // The same over IPv6.
    let a6 = inv.attribute(&flow(TCP, "fd00:244:0:1::17", 43512, "fd00:96::1234", 80));
    assert_eq!(a6, a);
}

#[test]
fn post_dnat_pod_to_backend_pod() {
    let inv = load("cluster.json");
    let a = inv.attribute(&flow(TCP, "10.244.1.17", 43512, "10.244.2.23", 8080));
    assert_eq!(
        a,
        Attribution {
            src_pod: pod("shop", FRONTEND),
            dst_pod: pod("shop", CHECKOUT_C),
            service: checkout_http(),
            src_node: node("node-b"),
            dst_node: node("node-c"),
        }
    );
    // The second port of the same backend names the other service port.
    let m = inv.attribute(&flow(TCP, "10.244.1.17", 43512, "10.244.2.23", 9090));
    assert_eq!(m.service.unwrap().port_name.as_deref(), Some("metrics"));
}

#[test]
fn encapsulated_flow_names_nodes_from_the_outer_header() {
    let inv = load("cluster.json");
    // Outer header by ExternalIP and InternalIP; the inner source is no known pod.
    let mut f = flow(TCP, "10.244.9.9", 43512, "10.244.2.23", 8080);
    f.outer_src = Some(ip("203.0.113.11"));
    f.outer_dst = Some(ip("10.0.0.12"));
    let a = inv.attribute(&f);
    assert_eq!(a.src_pod, None);
    assert_eq!(a.dst_pod, pod("shop", CHECKOUT_C));
    assert_eq!(a.service, checkout_http());
    assert_eq!(a.src_node, node("node-b"));
    assert_eq!(a.dst_node, node("node-c"));

    // The outer header is what the packet carried: it wins over the pod's recorded node.
    let mut f = flow(TCP, "10.244.1.17", 43512, "10.244.2.23", 8080);
    f.outer_src = Some(ip("10.0.0.10"));
    f.outer_dst = Some(ip("fd00:10::12"));
    let a = inv.attribute(&f);
    assert_eq!(a.src_node, node("node-a"));
    assert_eq!(a.dst_node, node("node-c"));

    // An outer address that is no known node falls back to the pod's node.
    f.outer_src = Some(ip("198.51.100.7"));
    assert_eq!(inv.attribute(&f).src_node, node("node-b"));
}

#[test]
fn reply_names_the_service_from_the_source() {
    let inv = load("cluster.json");
    // Backend → client (before reverse NAT), e.g. an ICMP too-big quoting the reply.
    let a = inv.attribute(&flow(TCP, "10.244.2.23", 8080, "10.244.1.17", 43512));
    assert_eq!(
        a,
        Attribution {
            src_pod: pod("shop", CHECKOUT_C),
            dst_pod: pod("shop", FRONTEND),
            service: checkout_http(),
            src_node: node("node-c"),
            dst_node: node("node-b"),
        }
    );
    // After reverse NAT the source is the ClusterIP.
    let a = inv.attribute(&flow(TCP, "10.96.12.34", 80, "10.244.1.17", 43512));
    assert_eq!(a.service, checkout_http());
    assert_eq!(a.src_node, None);
}

fn frontend_http() -> Option<Arc<ServiceRef>> {
    shop_http("frontend")
}

#[test]
fn node_port_on_a_known_node_address_names_the_service() {
    let inv = load("cluster.json");
    // An outside client to node-b's InternalIP, ExternalIP and IPv6 address, port 30080.
    for node_ip in ["10.0.0.11", "203.0.113.11", "fd00:10::11"] {
        let a = inv.attribute(&flow(TCP, "192.0.2.200", 50000, node_ip, 30080));
        assert_eq!(a.service, frontend_http(), "{node_ip}");
        assert_eq!(a.dst_node, node("node-b"), "{node_ip}");
    }
    // The reply, after reverse NAT: from the node port.
    let a = inv.attribute(&flow(TCP, "10.0.0.12", 30080, "192.0.2.200", 50000));
    assert_eq!(a.service, frontend_http());
    // The node port's protocol only: 31443 is https over TCP and quic over UDP.
    let tcp = inv.attribute(&flow(TCP, "192.0.2.200", 50000, "10.0.0.10", 31443));
    let udp = inv.attribute(&flow(UDP, "192.0.2.200", 50000, "10.0.0.10", 31443));
    assert_eq!(tcp.service.unwrap().port_name.as_deref(), Some("https"));
    assert_eq!(udp.service.unwrap().port_name.as_deref(), Some("quic"));
    assert_eq!(
        inv.attribute(&flow(UDP, "192.0.2.200", 50000, "10.0.0.11", 30080))
            .service,
        None
    );
    // The same port number on an address that is no known node (a pod, anything outside) is
    // just a port.
    for other in ["10.244.2.23", "198.51.100.99", "10.96.12.34"] {
        let a = inv.attribute(&flow(TCP, "192.0.2.200", 50000, other, 30080));
        assert_eq!(a.service, None, "{other}");
    }
}

#[test]
fn external_and_load_balancer_ips_name_the_service() {
    let inv = load("cluster.json");
    let a = inv.attribute(&flow(TCP, "10.244.1.17", 43512, "203.0.113.80", 80));
    assert_eq!(a.service, frontend_http());
    assert_eq!(a.dst_node, None);
    // The LoadBalancer's IPv6 ingress address; the service port, not the node port.
    let a = inv.attribute(&flow(TCP, "2001:db8:7::1", 443, "2001:db8:100::10", 443));
    let s = a.service.unwrap();
    assert_eq!(
        (
            s.namespace.as_ref(),
            s.name.as_ref(),
            s.port,
            s.port_name.as_deref()
        ),
        (
            "ingress-nginx",
            "ingress-nginx-controller",
            Some(443),
            Some("https")
        )
    );
    assert_eq!(
        inv.attribute(&flow(TCP, "2001:db8:7::1", 443, "2001:db8:100::10", 31443))
            .service,
        None,
        "a LoadBalancer address does not take node ports"
    );
    // The reply from the LoadBalancer address.
    let a = inv.attribute(&flow(TCP, "198.51.100.10", 80, "192.0.2.200", 50000));
    assert_eq!(&*a.service.unwrap().name, "ingress-nginx-controller");
}

#[test]
fn host_network_and_node_traffic_names_nodes() {
    let inv = load("cluster.json");
    // kube-proxy (host network on node-b) to the API server's endpoint on node-a.
    let a = inv.attribute(&flow(TCP, "10.0.0.11", 51234, "10.0.0.10", 6443));
    assert_eq!(a.src_pod, None);
    assert_eq!(a.dst_pod, None);
    assert_eq!(&*a.service.unwrap().name, "kubernetes");
    assert_eq!(a.src_node, node("node-b"));
    assert_eq!(a.dst_node, node("node-a"));
}

#[test]
fn protocol_matters_for_services() {
    let inv = load("cluster.json");
    let dns = inv.attribute(&flow(UDP, "10.244.1.17", 40000, "10.96.0.10", 53));
    assert_eq!(dns.service.unwrap().port_name.as_deref(), Some("dns"));
    let dns_tcp = inv.attribute(&flow(TCP, "10.244.1.17", 40000, "10.96.0.10", 53));
    assert_eq!(
        dns_tcp.service.unwrap().port_name.as_deref(),
        Some("dns-tcp")
    );
    // No UDP port 80 on checkout; no protocol (or no port) at all: no service, pods still named.
    assert_eq!(
        inv.attribute(&flow(UDP, "10.244.1.17", 40000, "10.96.12.34", 80))
            .service,
        None
    );
    let mut f = flow(TCP, "10.244.1.17", 43512, "10.244.2.23", 8080);
    f.proto = None;
    let a = inv.attribute(&f);
    assert_eq!(a.service, None);
    assert_eq!(a.dst_pod, pod("shop", CHECKOUT_C));
}

#[test]
fn unknown_addresses_give_nothing() {
    let inv = load("cluster.json");
    let a = inv.attribute(&flow(TCP, "172.16.5.5", 40000, "2001:db8::1", 443));
    assert_eq!(a, Attribution::default());
    assert_eq!(inv.attribute(&FlowKey::default()), Attribution::default());
    assert_eq!(
        Inventory::default().attribute(&flow(TCP, "10.244.1.17", 1, "10.96.12.34", 80)),
        Attribution::default()
    );
}

#[test]
fn flow_key_from_record() {
    let mut rec = Record::new(Kind::Drop, "tcx/egress", 0);
    assert_eq!(FlowKey::from_record(&rec), FlowKey::default());
    rec.flow.proto = Some(TCP);
    rec.flow.src = Some(ip("10.244.1.17"));
    rec.flow.sport = Some(43512);
    rec.flow.dst = Some(ip("10.244.2.23"));
    rec.flow.dport = Some(8080);
    rec.flow.outer = Some(Outer {
        src: ip("10.0.0.11"),
        dst: ip("10.0.0.12"),
        encap: Encap::Ipip,
        vni: None,
    });
    let mut want = flow(TCP, "10.244.1.17", 43512, "10.244.2.23", 8080);
    want.outer_src = Some(ip("10.0.0.11"));
    want.outer_dst = Some(ip("10.0.0.12"));
    assert_eq!(FlowKey::from_record(&rec), want);
}

#[test]
fn workloads_come_from_the_controllers_owner_references() {
    // Every pod of the recorded cluster, by its controller (those left out of the inventory,
    // terminated or on the host's network, too): a Deployment's ReplicaSet names the
    // Deployment, other controllers name themselves, a pod without one is its own.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/k8s/testdata/cluster.json");
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap();
            (name.to_string(), snapshot::workload(o, name))
        })
        .collect();
    found.sort();
    let want = [
        ("calico-node-8fq2z", "daemonset/calico-node"),
        ("checkout-6b8f7d9c4-lm3np", "deployment/checkout"),
        ("checkout-6b8f7d9c4-qq7rt", "deployment/checkout"),
        ("coredns-7c65d6cfc9-4xk2p", "deployment/coredns"),
        ("db-migrate-28411520-9kx7z", "job/db-migrate-28411520"),
        ("debug-shell", "pod/debug-shell"),
        ("frontend-7c9d8f6b5-tz5vd", "deployment/frontend"),
        ("frontend-7c9d8f6b5-x2x9k", "deployment/frontend"),
        ("kube-proxy-t7wq9", "daemonset/kube-proxy"),
        ("memcached-0", "statefulset/memcached"),
        ("redis-0", "statefulset/redis"),
        ("redis-1", "statefulset/redis"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, w)| (p.to_string(), w.to_string()))
        .collect();
    assert_eq!(found, want);
}

#[test]
fn a_replica_set_is_its_deployment_only_by_its_pod_template_hash() {
    let pod = |owners: serde_json::Value, labels: serde_json::Value| {
        serde_json::json!({
            "kind": "Pod",
            "metadata": {"namespace": "shop", "name": "p", "ownerReferences": owners, "labels": labels},
            "status": {"podIP": "10.244.9.9"}
        })
    };
    let rs = |name: &str, controller: bool| serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "controller": controller}]);
    let hash = serde_json::json!({"pod-template-hash": "5d8f"});
    let cases = [
        (pod(rs("web-5d8f", true), hash.clone()), "deployment/web"),
        // A ReplicaSet made by hand: no hash label, or one its name does not end with.
        (
            pod(rs("web-5d8f", true), serde_json::json!({})),
            "replicaset/web-5d8f",
        ),
        (
            pod(rs("web-77aa", true), hash.clone()),
            "replicaset/web-77aa",
        ),
        (pod(rs("5d8f", true), hash.clone()), "replicaset/5d8f"),
        // An owner that is not the controller restarts nothing.
        (pod(rs("web-5d8f", false), hash.clone()), "pod/p"),
        (pod(serde_json::json!([]), hash), "pod/p"),
    ];
    for (object, want) in cases {
        let list = serde_json::json!({"kind": "List", "items": [object]});
        let (inv, warnings) = snapshot::parse(&list.to_string()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let p = &inv.pods_by_ip[&ip("10.244.9.9")];
        assert_eq!(p.pod.workload.as_deref(), Some(want), "{object}");
    }
}

#[test]
fn merge_newer_data_wins_and_older_entries_stay() {
    let cluster = load("cluster.json");
    let monitoring = load("podlist.json");

    let mut merged = cluster.clone();
    merged.merge(monitoring.clone());
    // 10.244.1.17 was shop/frontend's; the newer snapshot gives it to alertmanager.
    let p = &merged.pods_by_ip[&ip("10.244.1.17")];
    assert_eq!(p.pod, pod("monitoring", "alertmanager-main-0").unwrap());
    assert_eq!(p.node.as_deref(), Some("node-b"));
    // Added by the newer source.
    assert!(merged.pods_by_ip.contains_key(&ip("10.244.2.50")));
    // Kept from the older one.
    assert_eq!(
        merged.pods_by_ip[&ip("10.244.2.23")].pod,
        pod("shop", CHECKOUT_C).unwrap()
    );
    assert_eq!(
        merged.services_by_cluster_ip,
        cluster.services_by_cluster_ip
    );
    assert_eq!(merged.nodes_by_ip, cluster.nodes_by_ip);
    // Both of frontend's addresses moved to alertmanager, so frontend is gone: 7 - 1 + 2 pods.
    assert_eq!(
        &*merged.pods_by_ip[&ip("fd00:244:0:1::17")].pod.name,
        "alertmanager-main-0"
    );
    assert_eq!(merged.counts(), (8, 8, 3));

    // The other order: the cluster file is newer, so frontend keeps its address.
    let mut merged = monitoring.clone();
    merged.merge(cluster.clone());
    assert_eq!(
        merged.pods_by_ip[&ip("10.244.1.17")].pod,
        pod("shop", FRONTEND).unwrap()
    );

    // Merging into nothing gives the other; merging nothing changes nothing.
    let mut empty = Inventory::default();
    assert!(empty.is_empty());
    empty.merge(cluster.clone());
    assert_eq!(empty, cluster);
    let mut same = cluster.clone();
    same.merge(Inventory::default());
    assert_eq!(same, cluster);
}

#[test]
fn node_ports_and_external_ips_alone_count_merge_and_are_not_empty() {
    let cluster = load("cluster.json");
    let only = Inventory {
        services_by_external_ip: cluster.services_by_external_ip.clone(),
        ..Default::default()
    };
    assert!(!only.is_empty());
    // frontend and ingress-nginx-controller.
    assert_eq!(only.counts(), (0, 2, 0));
    let ports = Inventory {
        services_by_node_port: cluster.services_by_node_port.clone(),
        ..Default::default()
    };
    assert!(!ports.is_empty());
    assert_eq!(ports.counts(), (0, 2, 0));
    // Without node addresses a node port names nothing (the conservative rule).
    assert_eq!(
        ports
            .attribute(&flow(TCP, "192.0.2.200", 1, "10.0.0.11", 30080))
            .service,
        None
    );
    // Node-local facts (node addresses) merged with the API's node ports: now it does.
    let mut merged = Inventory {
        nodes_by_ip: [(ip("10.0.0.11"), "node-b".into())].into_iter().collect(),
        ..Default::default()
    };
    merged.merge(ports);
    merged.merge(only);
    assert_eq!(
        merged
            .attribute(&flow(TCP, "192.0.2.200", 1, "10.0.0.11", 30080))
            .service,
        frontend_http()
    );
    assert_eq!(
        merged.services_by_external_ip,
        cluster.services_by_external_ip
    );
    // A newer source's answer for the same node port wins.
    let mut newer = Inventory::default();
    newer
        .services_by_node_port
        .insert((30080, TCP), checkout_http().unwrap());
    merged.merge(newer);
    assert_eq!(
        merged.services_by_node_port[&(30080, TCP)],
        checkout_http().unwrap()
    );
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

#[test]
fn prefixes_clear_host_bits_and_match_their_family_only() {
    assert_eq!(prefix("10.244.1.77/24").to_string(), "10.244.1.0/24");
    assert!(prefix("10.244.1.0/24").contains(ip("10.244.1.255")));
    assert!(!prefix("10.244.1.0/24").contains(ip("10.244.2.0")));
    assert!(prefix("0.0.0.0/0").contains(ip("192.0.2.1")));
    assert!(!prefix("0.0.0.0/0").contains(ip("::1")));
    assert!(prefix("fd00:244::/32").contains(ip("fd00:244:ffff::1")));
    assert!(prefix("10.0.0.1/32").contains(ip("10.0.0.1")));
    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0",
        "x/8",
        "10.0.0.0/-1",
    ] {
        assert!(bad.parse::<Prefix>().is_err(), "{bad}");
    }
}

#[test]
fn a_pod_cidr_names_the_node_of_an_unknown_pod_address() {
    // Node-local routes: node-c's block (whose route target node-c's address is known from
    // the cluster's nodes) and a wider one through an address no source names.
    let mut inv = load("cluster.json");
    inv.node_by_pod_cidr = vec![
        (prefix("10.244.0.0/16"), ip("10.0.0.99")),
        (prefix("10.244.2.0/24"), ip("10.0.0.12")),
    ];
    let a = inv.attribute(&flow(TCP, "10.244.1.17", 40000, "10.244.2.200", 9000));
    assert_eq!(a.src_pod, pod("shop", "frontend-7c9d8f6b5-x2x9k"));
    assert_eq!(a.src_node, node("node-b"));
    assert_eq!(a.dst_pod, None);
    assert_eq!(
        a.dst_node,
        node("node-c"),
        "longest prefix, named by its address"
    );
    let a = inv.attribute(&flow(TCP, "10.244.1.17", 40000, "10.244.7.1", 9000));
    assert_eq!(a.dst_node, node("10.0.0.99"), "no name known: the address");
    // A known pod's node and an outer address still come first.
    let a = inv.attribute(&flow(TCP, "10.244.1.17", 40000, "10.244.2.23", 8080));
    assert_eq!(a.dst_node, node("node-c"));
    let mut outer = flow(TCP, "10.244.1.17", 40000, "10.244.9.9", 8080);
    outer.outer_dst = Some(ip("10.0.0.10"));
    assert_eq!(inv.attribute(&outer).dst_node, node("node-a"));
    // Other families are not matched by IPv4 prefixes.
    let a = inv.attribute(&flow(TCP, "fd00:244:0:1::17", 1, "fd00:1::1", 2));
    assert_eq!(a.dst_node, None);
}

#[test]
fn merged_pod_cidrs_keep_one_entry_per_prefix_and_count_as_nodes() {
    let mut base = Inventory {
        node_by_pod_cidr: vec![
            (prefix("10.212.2.0/26"), ip("10.0.0.2")),
            (prefix("10.212.3.0/26"), ip("10.0.0.3")),
        ],
        ..Default::default()
    };
    assert!(!base.is_empty());
    assert_eq!(base.counts(), (0, 0, 2));
    base.nodes_by_ip.insert(ip("10.0.0.3"), "worker-3".into());
    assert_eq!(base.counts(), (0, 0, 2), "worker-3 is one node, not two");
    base.merge(Inventory {
        node_by_pod_cidr: vec![(prefix("10.212.2.0/26"), ip("10.0.0.22"))],
        ..Default::default()
    });
    assert_eq!(base.node_by_pod_cidr.len(), 2);
    let a = base.attribute(&FlowKey {
        dst: Some(ip("10.212.2.5")),
        ..Default::default()
    });
    assert_eq!(a.dst_node, node("10.0.0.22"), "the newer source wins");
    let a = base.attribute(&FlowKey {
        dst: Some(ip("10.212.3.5")),
        ..Default::default()
    });
    assert_eq!(a.dst_node, node("worker-3"));
}

#[test]
fn conntrack_original_destination_names_the_service_after_dnat() {
    let mut inv = load("cluster.json");
    let post_dnat = flow(TCP, "10.244.1.17", 43512, "10.244.2.23", 8080);
    let cluster_ip = |_: &FlowKey| Some((ip("10.96.12.34"), 80, TCP));
    // No EndpointSlices (a snapshot without them): only conntrack names the service.
    inv.services_by_backend.clear();
    assert_eq!(inv.attribute(&post_dnat).service, None);
    let a = inv.attribute_with(&post_dnat, cluster_ip);
    assert_eq!(a.service, checkout_http());
    assert_eq!(a.dst_pod, pod("shop", CHECKOUT_C));
    // The reply before reverse NAT: the table answers for both directions, the inventory
    // only asks.
    let reply = flow(TCP, "10.244.2.23", 8080, "10.244.1.17", 43512);
    assert_eq!(
        inv.attribute_with(&reply, cluster_ip).service,
        checkout_http()
    );
    // Through a node port on node-b, masqueraded: the original destination is a node address.
    let via_node_port = flow(TCP, "10.0.0.11", 61000, "10.244.1.17", 3000);
    let a = inv.attribute_with(&via_node_port, |_| Some((ip("203.0.113.11"), 30080, TCP)));
    assert_eq!(a.service, frontend_http());

    // Stale slices: the backend's address was given to another service's pod; what the kernel
    // translated wins.
    let mut stale = load("cluster.json");
    stale.services_by_backend.insert(
        (ip("10.244.2.23"), 8080, TCP),
        Arc::new(ServiceRef::new("old".into(), "gone".into(), Some(80), None)),
    );
    assert_eq!(&*stale.attribute(&post_dnat).service.unwrap().name, "gone");
    assert_eq!(
        stale.attribute_with(&post_dnat, cluster_ip).service,
        checkout_http()
    );
    // An original destination that is no service (plain traffic, or an unknown one) falls
    // through to the backend.
    let a = stale.attribute_with(&post_dnat, |_| Some((ip("192.0.2.9"), 80, TCP)));
    assert_eq!(&*a.service.unwrap().name, "gone");

    // Before DNAT the destination names the service: conntrack is not asked.
    let pre_dnat = flow(TCP, "10.244.1.17", 43512, "10.96.12.34", 80);
    let a = inv.attribute_with(&pre_dnat, |_| {
        panic!("asked although the ClusterIP answers")
    });
    assert_eq!(a.service, checkout_http());
}
