//! Node-local discovery on fixture trees shaped like a node's files (kubelet pod log
//! directories, /proc of pod processes under both cgroup drivers, CNI configs), and the route
//! selection on routes as Calico, flannel and plain static routing install them.

use std::{fs, net::IpAddr, path::PathBuf};

use super::*;
use crate::netlink::route::{Route, PROTO_BIRD, TABLE_MAIN, TYPE_UNICAST};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A pod's network namespace seen through fib_trie (address 10.212.1.2 on eth0 with the
/// Calico-style 169.254.1.1 gateway: a lab pod's /proc/PID/net/fib_trie on kernel 6.18).
const POD_FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 0.0.0.0/4 2 0 2
        |-- 0.0.0.0
           /0 universe UNICAST
        |-- 10.212.1.2
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 169.254.1.1
        /32 link UNICAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 0.0.0.0/4 2 0 2
        |-- 0.0.0.0
           /0 universe UNICAST
        |-- 10.212.1.2
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 169.254.1.1
        /32 link UNICAST
";

/// A node: uplink 10.33.44.116/24 and Calico's tunl0 address 10.212.1.1.
const NODE_FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.33.44.0/24 2 0 2
        +-- 10.33.44.0/25 2 0 2
           |-- 10.33.44.0
              /24 link UNICAST
           |-- 10.33.44.116
              /32 host LOCAL
        |-- 10.33.44.255
           /32 link BROADCAST
     |-- 10.212.1.1
        /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.1
              /32 host LOCAL
";

const POD_IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fd00021200010000000000000000002a 03 80 00 80     eth0
fe80000000000000a8c1abfffe000002 03 40 20 80     eth0
fd000212000100000000000000000bad 03 80 00 c8     eth0
";

const CALICO_CONFLIST: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "datastore_type": "kubernetes",
      "mtu": 1440,
      "ipam": { "type": "calico-ipam" },
      "policy": { "type": "k8s" },
      "kubernetes": { "kubeconfig": "/etc/cni/net.d/calico-kubeconfig" }
    },
    { "type": "bandwidth", "capabilities": { "bandwidth": true } },
    { "type": "portmap", "snat": true, "capabilities": { "portMappings": true } }
  ]
}"#;

const FLANNEL_CONFLIST: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

const POD_UID: &str = "6f1c2a3b-9d4e-4f5a-8b7c-0d1e2f3a4b5c";
const HOSTNET_UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const GONE_UID: &str = "11111111-2222-4333-8444-555555555555";

#[test]
fn pod_log_directories_name_namespace_pod_and_uid() {
    assert_eq!(
        parse_pod_dir(&format!("shop_order-api-7d9f8_{POD_UID}")),
        Some(PodDir {
            namespace: "shop".into(),
            name: "order-api-7d9f8".into(),
            uid: POD_UID.into(),
        })
    );
    // A static pod: its uid is the config hash.
    let d =
        parse_pod_dir("kube-system_kube-apiserver-cp-1_9b3e0f0c4f2d8a7e6b5c4d3e2f1a0b9c").unwrap();
    assert_eq!(d.name, "kube-apiserver-cp-1");
    for bad in [
        "shop_order-api",
        "shop_order_api_6f1c2a3b-9d4e-4f5a-8b7c-0d1e2f3a4b5c",
        "_x_6f1c2a3b-9d4e-4f5a-8b7c-0d1e2f3a4b5c",
        "shop_order-api_not-a-uid",
        "lost+found",
    ] {
        assert_eq!(parse_pod_dir(bad), None, "{bad}");
    }
}

#[test]
fn cgroup_paths_of_both_drivers_give_the_pod_uid() {
    let uid_ = POD_UID.replace('-', "_");
    let cases = [
        // systemd driver, cgroup v2, containerd.
        format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-4f1e2d.scope\n"),
        // systemd driver, guaranteed QoS (no QoS level in the path).
        format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-4f1e2d.scope\n"),
        // cgroupfs driver, cgroup v1 hybrid: the pod shows in several hierarchies.
        format!("12:pids:/kubepods/besteffort/pod{POD_UID}/0123abcd\n11:memory:/kubepods/besteffort/pod{POD_UID}/0123abcd\n0::/\n"),
        // cgroupfs driver, guaranteed.
        format!("0::/kubepods/pod{POD_UID}/0123abcd\n"),
        // Nested under a test prefix, as the integration test does.
        format!("0::/t123kubepods.slice/t123kubepods-besteffort.slice/t123kubepods-besteffort-pod{uid_}.slice\n"),
    ];
    for c in &cases {
        assert_eq!(pod_uid_in_cgroup(c).as_deref(), Some(POD_UID), "{c}");
    }
    for not_a_pod in [
        "0::/system.slice/containerd.service\n",
        "0::/kubepods.slice/kubepods-burstable.slice\n",
        "0::/user.slice/user-0.slice/session-3.scope\n",
        "4:memory:/process_api/e58dd8659f437aa244c451b6ae02e570\n",
        "garbage without colons\n",
        "",
    ] {
        assert_eq!(pod_uid_in_cgroup(not_a_pod), None, "{not_a_pod:?}");
    }
}

#[test]
fn fib_trie_gives_the_local_addresses_without_loopback() {
    assert_eq!(parse_fib_trie_local(POD_FIB_TRIE), [ip("10.212.1.2")]);
    assert_eq!(
        parse_fib_trie_local(NODE_FIB_TRIE),
        [ip("10.33.44.116"), ip("10.212.1.1")]
    );
    assert!(parse_fib_trie_local("not a trie\n/32 host LOCAL\n").is_empty());
}

#[test]
fn if_inet6_gives_global_addresses_only() {
    // Loopback (scope host), link-local, and a DAD-failed address are left out.
    assert_eq!(
        parse_if_inet6_global(POD_IF_INET6)
            .into_iter()
            .map(IpAddr::V6)
            .collect::<Vec<_>>(),
        [ip("fd00:212:1::2a")]
    );
    assert!(parse_if_inet6_global("short line\nzz 01 80 00 80 eth0\n").is_empty());
}

#[test]
fn cni_configs_give_the_plugin_and_its_mtu() {
    assert_eq!(
        parse_cni(CALICO_CONFLIST),
        Ok(("calico".into(), Some(1440)))
    );
    assert_eq!(parse_cni(FLANNEL_CONFLIST), Ok(("flannel".into(), None)));
    assert_eq!(
        parse_cni(r#"{"cniVersion":"0.4.0","name":"bridge","type":"bridge","mtu":1400}"#),
        Ok(("bridge".into(), Some(1400)))
    );
    // Calico's template before the installer substitutes the MTU is not JSON; a quoted MTU
    // is not a number.
    assert!(parse_cni(r#"{"plugins":[{"type":"calico","mtu":__CNI_MTU__}]}"#).is_err());
    assert_eq!(
        parse_cni(r#"{"plugins":[{"type":"calico","mtu":"1440"}]}"#),
        Ok(("calico".into(), None))
    );
    assert!(parse_cni(r#"{"plugins":[]}"#)
        .unwrap_err()
        .contains("plugins"));
    assert!(parse_cni(r#"{"name":"x"}"#).unwrap_err().contains("type"));
    assert!(parse_cni("[1,2]").is_err());
}

#[test]
fn flannel_subnet_env_gives_the_cluster_pod_networks() {
    let env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n\
               FLANNEL_IPMASQ=true\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\n";
    let nets = parse_flannel_env(env);
    assert_eq!(nets.len(), 2);
    assert_eq!(nets[0].to_string(), "10.244.0.0/16");
    assert_eq!(nets[1].to_string(), "fd00:10:244::/56");
    assert!(parse_flannel_env("FLANNEL_NETWORK=garbage\n").is_empty());
}

fn iface(name: &str, ifindex: u32, driver: Option<&str>, link_type: u16) -> ifaces::Iface {
    ifaces::Iface {
        name: name.into(),
        ifindex,
        mtu: 1500,
        driver: driver.map(str::to_string),
        link_type,
    }
}

fn route(dst: &str, len: u8, via: Option<&str>, oif: u32, protocol: u8) -> Route {
    Route {
        dst: Some(ip(dst)),
        dst_len: len,
        gateway: via.map(ip),
        oif: Some(oif),
        table: TABLE_MAIN,
        protocol,
        kind: TYPE_UNICAST,
        ..Route::default()
    }
}

#[test]
fn only_routes_an_overlay_or_cni_installs_are_pod_cidrs() {
    let ifs = [
        iface("eth0", 2, Some("virtio_net"), 1),
        iface("tunl0", 3, Some("ipip"), 768),
        iface("vxlan.calico", 4, Some("vxlan"), 1),
        iface("cali1234", 5, Some("veth"), 1),
    ];
    let flannel = ["10.244.0.0/16".parse().unwrap()];
    let mut routes = vec![
        // Calico IPIP, Calico VXLAN, Calico BGP (proto bird), flannel host-gw.
        route("10.212.2.0", 26, Some("10.0.0.2"), 3, 3),
        route("10.212.3.0", 26, Some("10.212.3.0"), 4, 3),
        route("10.212.4.0", 26, Some("10.0.0.4"), 2, PROTO_BIRD),
        route("10.244.1.0", 24, Some("10.168.0.3"), 2, 3),
        // Not pods: the default route, a static route to another subnet, a local pod's
        // /32 without gateway, and a tunnel route in another table.
        route("0.0.0.0", 0, Some("10.0.0.1"), 2, 3),
        route("192.168.50.0", 24, Some("10.0.0.254"), 2, 4),
        route("10.212.1.5", 32, None, 5, 3),
    ];
    let mut other_table = route("10.212.9.0", 26, Some("10.0.0.9"), 3, 3);
    other_table.table = 255;
    routes.push(other_table);
    let found: Vec<(String, IpAddr)> = remote_pod_cidrs(&routes, &ifs, &flannel)
        .into_iter()
        .map(|(p, via)| (p.to_string(), via))
        .collect();
    assert_eq!(
        found,
        [
            ("10.212.2.0/26".to_string(), ip("10.0.0.2")),
            ("10.212.3.0/26".to_string(), ip("10.212.3.0")),
            ("10.212.4.0/26".to_string(), ip("10.0.0.4")),
            ("10.244.1.0/24".to_string(), ip("10.168.0.3")),
        ]
    );
    // Without flannel's network, its host-gw route is indistinguishable from a static one.
    assert_eq!(remote_pod_cidrs(&routes, &ifs, &[]).len(), 3);
}

/// A fixture node root, removed on drop.
struct Fixture(PathBuf);

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!("tracer-nl-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Fixture(root)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn dir(&self, rel: &str) {
        fs::create_dir_all(self.0.join(rel)).unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A node `worker-116`: PID 1 in the host namespace; pod shop/order-api-7d9f8 (systemd
/// driver) with its own namespace; a host-network pod (cgroupfs driver) whose process shares
/// PID 1's namespace (a hard link: the same inode); a pod that ended (logs only); a stray
/// directory; a broken CNI config sorted before Calico's.
fn node_fixture(tag: &str) -> Fixture {
    let f = Fixture::new(tag);
    f.dir(&format!("var/log/pods/shop_order-api-7d9f8_{POD_UID}/app"));
    f.dir(&format!(
        "var/log/pods/kube-system_kube-proxy-x2x9q_{HOSTNET_UID}/kube-proxy"
    ));
    f.dir(&format!("var/log/pods/shop_batch-28391_{GONE_UID}/job"));
    f.dir("var/log/pods/not-a-pod");
    f.write("proc/sys/kernel/hostname", "Worker-116\n");
    let host_ns = f.write("proc/1/ns/net", "");
    f.write("proc/1/cgroup", "0::/init.scope\n");
    f.write("proc/1/net/fib_trie", NODE_FIB_TRIE);
    f.write("proc/1/net/if_inet6", "");
    let uid_ = POD_UID.replace('-', "_");
    f.write(
        "proc/4242/cgroup",
        &format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-aa.scope\n"),
    );
    f.write("proc/4242/ns/net", "");
    f.write("proc/4242/net/fib_trie", POD_FIB_TRIE);
    f.write("proc/4242/net/if_inet6", POD_IF_INET6);
    // A second process of the same pod: the first one readable is enough.
    f.write(
        "proc/4250/cgroup",
        &format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-bb.scope\n"),
    );
    f.write(
        "proc/977/cgroup",
        &format!("0::/kubepods/burstable/pod{HOSTNET_UID}/cc\n"),
    );
    fs::create_dir_all(f.0.join("proc/977/ns")).unwrap();
    fs::hard_link(&host_ns, f.0.join("proc/977/ns/net")).unwrap();
    f.write("proc/977/net/fib_trie", NODE_FIB_TRIE);
    f.write("etc/cni/net.d/05-broken.conflist", "{\"plugins\": [");
    f.write("etc/cni/net.d/10-calico.conflist", CALICO_CONFLIST);
    f.write("etc/cni/net.d/calico-kubeconfig", "apiVersion: v1\n");
    f
}

#[test]
fn a_node_tree_gives_local_pods_node_addresses_and_the_cni() {
    let f = node_fixture("tree");
    let d = discover(&HostRoot::new(&f.0), &[]);
    let pod = |s: &str| d.inventory.pods_by_ip.get(&ip(s)).cloned();
    let order_api = Some(PodInfo {
        pod: std::sync::Arc::new(ObjectRef::new(
            Some("shop".into()),
            "order-api-7d9f8".into(),
        )),
        node: Some("worker-116".into()),
    });
    assert_eq!(pod("10.212.1.2"), order_api);
    assert_eq!(pod("fd00:212:1::2a"), order_api);
    assert_eq!(
        d.inventory.pods_by_ip.len(),
        2,
        "{:?}",
        d.inventory.pods_by_ip
    );
    // The host-network pod's addresses are the node's, named as the node.
    assert_eq!(
        d.inventory
            .nodes_by_ip
            .get(&ip("10.33.44.116"))
            .map(AsRef::as_ref),
        Some("worker-116")
    );
    assert_eq!(
        d.inventory
            .nodes_by_ip
            .get(&ip("10.212.1.1"))
            .map(AsRef::as_ref),
        Some("worker-116")
    );
    assert_eq!(d.inventory.nodes_by_ip.len(), 2);
    assert_eq!(d.node.as_deref(), Some("worker-116"));
    assert_eq!(
        (d.local_pods, d.host_network_pods, d.not_running),
        (1, 1, 1)
    );
    assert_eq!(
        d.cni.as_deref(),
        Some("calico (10-calico.conflist, mtu 1440)")
    );
    let warnings = d.warnings.join("\n");
    assert!(
        warnings.contains("05-broken.conflist: not a usable CNI config"),
        "{warnings}"
    );
    assert!(warnings.contains("not-a-pod"), "{warnings}");
    assert_eq!(d.warnings.len(), 2, "{warnings}");
    assert_eq!(
        d.summary(),
        "CNI calico (10-calico.conflist, mtu 1440), node worker-116: 1 local pods \
         (1 host-network, 1 not running skipped), 0 remote pod CIDRs"
    );
}

#[test]
fn a_bare_root_gives_warnings_not_errors() {
    let f = Fixture::new("bare");
    // Something under proc so that it is used instead of the real /proc.
    f.write("proc/sys/kernel/hostname", "\n");
    let d = discover(&HostRoot::new(&f.0), &[]);
    assert!(d.inventory.is_empty());
    // A machine that is no node: its own addresses are not named either.
    f.write("proc/sys/kernel/hostname", "laptop\n");
    f.write("proc/1/net/fib_trie", NODE_FIB_TRIE);
    let d = discover(&HostRoot::new(&f.0), &[]);
    assert_eq!(d.node.as_deref(), Some("laptop"));
    assert!(d.inventory.is_empty(), "{:?}", d.inventory);
    f.dir("var/log/pods");
    let d = discover(&HostRoot::new(&f.0), &[]);
    assert_eq!(d.inventory.nodes_by_ip.len(), 2, "a node without pods yet");
    f.write("proc/sys/kernel/hostname", "\n");
    fs::remove_dir(f.0.join("var/log/pods")).unwrap();
    let d = discover(&HostRoot::new(&f.0), &[]);
    assert_eq!(d.cni, None);
    let warnings = d.warnings.join("\n");
    assert!(warnings.contains("no hostname"), "{warnings}");
    assert!(warnings.contains("var/log/pods unreadable"), "{warnings}");
    assert!(d
        .summary()
        .starts_with("no CNI config, node (hostname unknown): 0 local pods"));
}

#[test]
fn flannel_host_gw_routes_of_a_real_namespace_become_pod_cidrs() {
    // The routes are read from a real namespace (netlink), flannel's network from the root.
    let f = Fixture::new("flannel");
    f.write("proc/sys/kernel/hostname", "node-a\n");
    f.write("run/flannel/subnet.env", "FLANNEL_NETWORK=10.244.0.0/16\n");
    f.write("etc/cni/net.d/10-flannel.conflist", FLANNEL_CONFLIST);
    // A lab namespace (xtask::lab): deleted on drop, also when an assertion fails.
    let mut lab = xtask::lab::Lab::new(&xtask::lab::Lab::unique_prefix("unl")).unwrap();
    let name = lab
        .add_netns("t")
        .expect("ip netns add (tests run as root)");
    for args in [
        // No dummy driver on every kernel: a veth pair inside the namespace.
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ][..],
        &["link", "set", "peer0", "up"],
        &["link", "set", "eth0", "up"],
        &["addr", "add", "10.168.0.2/24", "dev", "eth0"],
        &[
            "route",
            "add",
            "10.244.1.0/24",
            "via",
            "10.168.0.3",
            "dev",
            "eth0",
        ],
        &[
            "route",
            "add",
            "10.244.2.0/24",
            "via",
            "10.168.0.4",
            "dev",
            "eth0",
        ],
        &[
            "route",
            "add",
            "default",
            "via",
            "10.168.0.1",
            "dev",
            "eth0",
        ],
        &[
            "route",
            "add",
            "172.16.0.0/12",
            "via",
            "10.168.0.254",
            "dev",
            "eth0",
        ],
    ] {
        lab.ip(&name, args).unwrap();
    }
    let ns = Netns::resolve(&name).unwrap();
    let d = discover(&HostRoot::new(&f.0), &[ns]);
    let cidrs: Vec<String> = d
        .inventory
        .node_by_pod_cidr
        .iter()
        .map(|(p, via)| format!("{p} via {via}"))
        .collect();
    assert_eq!(
        cidrs,
        [
            "10.244.1.0/24 via 10.168.0.3",
            "10.244.2.0/24 via 10.168.0.4"
        ]
    );
    assert!(
        d.summary()
            .starts_with("CNI flannel (10-flannel.conflist), node node-a: 0 local pods"),
        "{}",
        d.summary()
    );
    assert!(d.summary().ends_with(
        "2 remote pod CIDRs: 10.244.1.0/24 via 10.168.0.3, 10.244.2.0/24 via 10.168.0.4"
    ));
    // And an address there is attributed to that node (its address: no API, no other name).
    let attr = d.inventory.attribute(&crate::k8s::FlowKey {
        dst: Some(ip("10.244.2.77")),
        ..Default::default()
    });
    assert_eq!(
        attr.dst_node.map(|n| n.name.clone()).as_deref(),
        Some("10.168.0.4")
    );
    assert_eq!(attr.dst_pod, None);
}
