//! The incident as a miniature cluster (shared notes `incident.md`, `blackholes.md`).
//!
//! Two nodes whose uplink MTUs disagree (`old` 1500, `new` 1450, the new subnet's smaller MTU),
//! joined directly on one L2 link or through a router; a Calico-style overlay between them
//! (VXLAN `vxlan.calico` or IPIP `tunl0`) configured for 1500; routed pods with /32 addresses;
//! a kube-proxy-like ClusterIP (nftables DNAT) on the old node; real servers (redis-server and an
//! HTTP upload endpoint) in a pod on the new node; clients in a pod on the old node that talk to
//! the ClusterIP as the incident's applications did. Small requests work, large ones time out,
//! unless the pods' MTU is lowered to 1400 ([`Incident::apply_fix`]).
//!
//! Namespaces: `{prefix}-old`, `{prefix}-new`, `{prefix}-rtr` ([`Path::Router`] only),
//! `{prefix}-cli`, `{prefix}-srv`. Addresses are in 10.210.0.0/16 - 10.219.0.0/16, plus the
//! service 10.96.0.10 and the pods' gateway 169.254.1.1, and exist only inside these namespaces.
//! Files: `/run/{prefix}-lab.json` (the options, so that `cargo xtask lab clients|fix|status`
//! can find a kept lab again) and `/run/{prefix}-lab.{http,redis}.log` (server output).

use crate::lab::{self, Lab};
use anyhow::{anyhow, bail, Context, Result};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The ClusterIP of the lab's service (only the client's node knows it, as with kube-proxy).
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const HTTP_PORT: u16 = 8080;
pub const REDIS_PORT: u16 = 6379;
/// The incident's fix: Calico `veth_mtu` = 1450 − 50 (VXLAN overhead; safe for IPIP too).
pub const FIX_POD_MTU: u32 = 1400;
/// Size of the large HTTP POST and Redis SET of [`Incident::run_clients`].
pub const MIB: usize = 1 << 20;

const VXLAN_IF: &str = "vxlan.calico";
const VXLAN_VNI: u32 = 4096;
const VXLAN_PORT: u16 = 4789;
const IPIP_IF: &str = "tunl0";
const POD_IF: &str = "eth0";
const UPLINK_IF: &str = "eth0";
const ROUTER_OLD_IF: &str = "to-old";
const ROUTER_NEW_IF: &str = "to-new";
const CLIENT_HOST_IF: &str = "calicli";
const SERVER_HOST_IF: &str = "calisrv";
const POD_GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const OLD_POD_CIDR: &str = "10.212.1.0/24";
const NEW_POD_CIDR: &str = "10.212.2.0/24";
// Dual stack (`ipv6`): the pods' IPv6 addresses, blocks and service address, and the tunnel's.
const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x212, 1, 0, 0, 0, 0, 2);
const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x212, 2, 0, 0, 0, 0, 2);
const SERVICE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0xa);
const OLD_POD_CIDR6: &str = "fd00:212:1::/64";
const NEW_POD_CIDR6: &str = "fd00:212:2::/64";
const OLD_TUNNEL_IP6: &str = "fd00:213::1";
const NEW_TUNNEL_IP6: &str = "fd00:213::2";
/// The pods' IPv6 gateway: the host veth's link-local address (Calico uses one derived from
/// its ee:ee:ee:ee:ee:ee MAC).
const POD_GW6: &str = "fe80::1";
// IPv6 underlay (`ipv6_underlay`): the nodes' addresses on one link, or behind the router.
const OLD_NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 1);
const NEW_NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 2);
const OLD_NODE_IP6_ROUTED: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x211, 1, 0, 0, 0, 0, 2);
const NEW_NODE_IP6_ROUTED: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x211, 2, 0, 0, 0, 0, 2);
const ROUTER_OLD_IP6: &str = "fd00:211:1::1";
const ROUTER_NEW_IP6: &str = "fd00:211:2::1";
const KUBE_PROXY_TABLE: &str = "lab-kube-proxy";
const ICMP_FILTER_TABLE: &str = "lab-icmp-filter";
/// Values up to this size are passed to redis-cli as an argument, larger ones on stdin.
const REDIS_ARG_MAX: usize = 1024;
/// How long servers get to start listening.
const SERVER_START: Duration = Duration::from_secs(10);
const IPIP_MISSING: &str = "IPIP is not available on this kernel (CONFIG_NET_IPIP)";

/// How the two nodes are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Path {
    /// One veth between them: 1500 on the old node's end, 1450 on the new node's end.
    L2,
    /// Through a router namespace: a 1500 link to the old node, a 1450 link to the new node.
    Router,
}

/// The CNI's encapsulation between the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Overlay {
    /// `vxlan.calico`, VNI 4096, UDP 4789 (+50 bytes).
    Vxlan,
    /// `tunl0`, Calico's IPIP mode (+20 bytes); needs CONFIG_NET_IPIP.
    Ipip,
}

/// The DF bit of VXLAN's outer header (`ip link add ... type vxlan ... df ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OuterDf {
    /// Never set (the Linux default): oversized outer packets are fragmented.
    Unset,
    /// Always set.
    Set,
    /// Copied from the inner packet (set for TCP).
    Inherit,
}

macro_rules! str_enum {
    ($t:ty, $what:literal, $($v:ident => $s:literal),+) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $s),+
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => bail!(
                        concat!("unknown ", $what, " {:?} (expected one of: {})"),
                        s,
                        [$($s),+].join(", ")
                    ),
                }
            }
        }
    };
}
str_enum!(Path, "path", L2 => "l2", Router => "router");
str_enum!(Overlay, "overlay", Vxlan => "vxlan", Ipip => "ipip");
str_enum!(OuterDf, "outer DF mode", Unset => "unset", Set => "set", Inherit => "inherit");

/// What to build. The defaults are the incident: pods and tunnel configured for 1500 while the
/// new node's uplink has 1450.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentOptions {
    /// Namespace prefix (1-11 characters of `[A-Za-z0-9_.]`, see [`Lab::new`]).
    pub prefix: String,
    pub path: Path,
    pub overlay: Overlay,
    /// Only for [`Overlay::Vxlan`] (IPIP copies DF from the inner packet, like Calico's tunl0).
    pub outer_df: OuterDf,
    /// Drop ICMP frag-needed in the router's output hook and the old node's input hook.
    pub filter_icmp: bool,
    /// MTU of both pods' eth0 and their host-side veths.
    pub pod_mtu: u32,
    /// Uplink MTU of the old node (and the router's link to it).
    pub old_mtu: u32,
    /// Uplink MTU of the new node (and the router's link to it).
    pub new_mtu: u32,
    /// MTU of the tunnel device on both nodes.
    pub tunnel_mtu: u32,
    /// Dual-stack pods (IPv6 beside IPv4, over the same overlay and IPv4 underlay, with an IPv6
    /// ClusterIP): the clients then talk IPv6. VXLAN only (IPIP carries IPv4 alone).
    pub ipv6: bool,
    /// The nodes talk IPv6 on the underlay (fd00:210::/64, behind a router fd00:211:1::/64 and
    /// fd00:211:2::/64): VXLAN over IPv6 costs 70 bytes, not 50. VXLAN only.
    pub ipv6_underlay: bool,
}

impl Default for IncidentOptions {
    fn default() -> Self {
        IncidentOptions {
            prefix: "lab".into(),
            path: Path::L2,
            overlay: Overlay::Vxlan,
            outer_df: OuterDf::Unset,
            filter_icmp: false,
            pod_mtu: 1500,
            old_mtu: 1500,
            new_mtu: 1450,
            tunnel_mtu: 1500,
            ipv6: false,
            ipv6_underlay: false,
        }
    }
}

impl IncidentOptions {
    fn validate(&self) -> Result<()> {
        for (what, mtu) in [
            ("pod", self.pod_mtu),
            ("old node", self.old_mtu),
            ("new node", self.new_mtu),
            ("tunnel", self.tunnel_mtu),
        ] {
            check_mtu(what, mtu)?;
        }
        if (self.ipv6 || self.ipv6_underlay) && self.overlay != Overlay::Vxlan {
            bail!("IPv6 pods or underlay need the VXLAN overlay: IPIP carries IPv4 only");
        }
        Ok(())
    }

    /// One flat JSON object (written by hand: xtask has no serde).
    fn to_json(&self) -> String {
        format!(
            "{{\"prefix\":\"{}\",\"path\":\"{}\",\"overlay\":\"{}\",\"outer_df\":\"{}\",\
             \"filter_icmp\":{},\"pod_mtu\":{},\"old_mtu\":{},\"new_mtu\":{},\"tunnel_mtu\":{},\
             \"ipv6\":{},\"ipv6_underlay\":{}}}\n",
            self.prefix,
            self.path,
            self.overlay,
            self.outer_df,
            self.filter_icmp,
            self.pod_mtu,
            self.old_mtu,
            self.new_mtu,
            self.tunnel_mtu,
            self.ipv6,
            self.ipv6_underlay
        )
    }

    /// Parses what [`IncidentOptions::to_json`] wrote (flat object, no nested values).
    fn from_json(text: &str) -> Result<IncidentOptions> {
        let body = text
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| anyhow!("not a JSON object"))?;
        let mut o = IncidentOptions {
            prefix: String::new(),
            ..IncidentOptions::default()
        };
        for pair in body.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once(':')
                .ok_or_else(|| anyhow!("bad member {pair:?}"))?;
            let key = key.trim().trim_matches('"');
            let value = value.trim().trim_matches('"');
            let mtu = || -> Result<u32> {
                value
                    .parse()
                    .with_context(|| format!("{key}: bad number {value:?}"))
            };
            match key {
                "prefix" => o.prefix = value.to_string(),
                "path" => o.path = value.parse()?,
                "overlay" => o.overlay = value.parse()?,
                "outer_df" => o.outer_df = value.parse()?,
                "filter_icmp" => {
                    o.filter_icmp = value
                        .parse()
                        .with_context(|| format!("filter_icmp: bad boolean {value:?}"))?
                }
                "pod_mtu" => o.pod_mtu = mtu()?,
                "old_mtu" => o.old_mtu = mtu()?,
                "new_mtu" => o.new_mtu = mtu()?,
                "tunnel_mtu" => o.tunnel_mtu = mtu()?,
                "ipv6" | "ipv6_underlay" => {
                    let b = value
                        .parse()
                        .with_context(|| format!("{key}: bad boolean {value:?}"))?;
                    if key == "ipv6" {
                        o.ipv6 = b;
                    } else {
                        o.ipv6_underlay = b;
                    }
                }
                _ => bail!("unknown key {key:?}"),
            }
        }
        if o.prefix.is_empty() {
            bail!("no prefix");
        }
        o.validate()?;
        Ok(o)
    }
}

fn check_mtu(what: &str, mtu: u32) -> Result<()> {
    // 576: every IPv4 host must take it; 9216 covers jumbo frames. Anything else is a typo here.
    if !(576..=9216).contains(&mtu) {
        bail!("{what} MTU {mtu} is out of range (576 to 9216)");
    }
    Ok(())
}

/// Outcome of one client run in the client pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResult {
    pub name: &'static str,
    /// The request completed and the answer was the expected one.
    pub ok: bool,
    /// No answer within the timeout (the client was killed, or gave up itself).
    pub timed_out: bool,
    pub elapsed: Duration,
    /// The client's own report (`ok 200 1048576`, `OK`, an error message) or why it was killed.
    pub detail: String,
}

impl fmt::Display for ClientResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        if self.ok {
            write!(f, "{:<24}ok ({secs:.2} s)", self.name)
        } else if self.timed_out {
            write!(f, "{:<24}TIMED OUT after {secs:.1} s", self.name)
        } else {
            write!(
                f,
                "{:<24}FAILED after {secs:.2} s: {}",
                self.name, self.detail
            )
        }
    }
}

/// Kills the servers (and reaps them) before the lab deletes the namespaces, and removes the
/// lab's files. Declared as the first field of [`Incident`] so that it drops first.
#[derive(Debug)]
struct Guard {
    prefix: String,
    servers: Vec<Child>,
    /// This process built the lab: remove its files on drop.
    owned: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.owned {
            remove_files(&self.prefix);
        }
    }
}

/// A running incident lab. Dropping it kills its servers and deletes its namespaces (also while
/// a test unwinds); [`Incident::keep`] leaves everything running.
#[derive(Debug)]
pub struct Incident {
    guard: Guard,
    pub lab: Lab,
    pub opts: IncidentOptions,
    pub old_node_ns: String,
    pub new_node_ns: String,
    pub router_ns: Option<String>,
    pub client_ns: String,
    pub server_ns: String,
    /// Each node's underlay link (`eth0`).
    pub old_uplink_if: String,
    pub new_uplink_if: String,
    /// The router's links toward the old and the new node ([`Path::Router`] only).
    pub router_old_if: Option<String>,
    pub router_new_if: Option<String>,
    /// `vxlan.calico` or `tunl0`, in both nodes.
    pub tunnel_if: String,
    /// Address of the tunnel device in each node.
    pub old_tunnel_ip: Ipv4Addr,
    pub new_tunnel_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    /// Underlay addresses of the nodes (the VXLAN local/remote, the IPIP next hops).
    pub old_node_ip: Ipv4Addr,
    pub new_node_ip: Ipv4Addr,
    /// The router's addresses on the old and the new node's subnet ([`Path::Router`] only).
    pub router_old_ip: Option<Ipv4Addr>,
    pub router_new_ip: Option<Ipv4Addr>,
    pub service_ip: Ipv4Addr,
    pub http_port: u16,
    pub redis_port: u16,
    /// Host-side veth of each pod (`cali...`, in its node).
    pub client_host_if: String,
    pub server_host_if: String,
    /// The interface inside each pod (`eth0`).
    pub pod_if: String,
    /// Pod CIDR of the old and the new node.
    pub old_pod_cidr: String,
    pub new_pod_cidr: String,
    /// The pods' default gateway, answered by proxy ARP on the host veth.
    pub pod_gw: Ipv4Addr,
    /// The pods' and the service's IPv6 addresses ([`IncidentOptions::ipv6`] only).
    pub client_ip6: Option<Ipv6Addr>,
    pub server_ip6: Option<Ipv6Addr>,
    pub service_ip6: Option<Ipv6Addr>,
    /// The nodes' IPv6 underlay addresses, the VXLAN's local and remote
    /// ([`IncidentOptions::ipv6_underlay`] only).
    pub old_node_ip6: Option<Ipv6Addr>,
    pub new_node_ip6: Option<Ipv6Addr>,
}

impl Incident {
    /// Builds the lab described by `opts` and starts its servers (waiting until they listen).
    /// Leftovers of an earlier lab with the same prefix are removed first.
    pub fn up(opts: IncidentOptions) -> Result<Incident> {
        opts.validate()?;
        // Fail before building anything if a tool is missing.
        for (tool, package) in [
            ("nft", "nftables"),
            ("ethtool", "ethtool"),
            ("redis-cli", "redis-tools"),
        ] {
            if lab::find_program(tool).is_none() {
                bail!(
                    "{tool} not found: install the Debian package {package} (`cargo xtask setup`)"
                );
            }
        }
        redis_server()?;
        python3()?;

        let mut lab = Lab::new(&opts.prefix)?;
        remove_files(&opts.prefix);
        for role in roles(opts.path) {
            let ns = lab.add_netns(role)?;
            if opts.ipv6 || opts.ipv6_underlay {
                // Before any link exists: addresses usable at once, without duplicate address
                // detection's wait.
                lab.sysctl(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
                lab.sysctl(&ns, "net.ipv6.conf.default.accept_dad", "0")?;
            }
        }
        let guard = Guard {
            prefix: opts.prefix.clone(),
            servers: Vec::new(),
            owned: true,
        };
        let mut inc = Incident::layout(guard, lab, opts);
        inc.build_underlay()?;
        inc.build_overlay()?;
        inc.build_pods()?;
        inc.build_service()?;
        if inc.opts.filter_icmp {
            inc.build_icmp_filter()?;
        }
        inc.save_options(&inc.opts)?;
        inc.start_servers()?;
        Ok(inc)
    }

    /// The lab kept running under `prefix` (by `cargo xtask lab up`), from its options file.
    /// Dropping the result leaves the lab alone.
    pub fn attach(prefix: &str) -> Result<Incident> {
        let opts = load_options(prefix)?;
        let lab = Lab::attach(prefix)?;
        let guard = Guard {
            prefix: prefix.to_string(),
            servers: Vec::new(),
            owned: false,
        };
        let inc = Incident::layout(guard, lab, opts);
        let have = inc.lab.namespaces();
        if let Some(missing) = inc.namespaces().into_iter().find(|ns| !have.contains(ns)) {
            bail!("lab {prefix} is incomplete: namespace {missing} is missing (run `cargo xtask lab up` again)");
        }
        Ok(inc)
    }

    /// Names and addresses: a function of the options only, so that [`Incident::attach`] finds
    /// the same ones again.
    fn layout(guard: Guard, lab: Lab, opts: IncidentOptions) -> Incident {
        let ns = |role: &str| format!("{}-{role}", opts.prefix);
        let routed = opts.path == Path::Router;
        let (old_node_ip, new_node_ip) = if routed {
            (Ipv4Addr::new(10, 211, 1, 2), Ipv4Addr::new(10, 211, 2, 2))
        } else {
            (Ipv4Addr::new(10, 210, 0, 1), Ipv4Addr::new(10, 210, 0, 2))
        };
        let (tunnel_if, old_tunnel_ip, new_tunnel_ip) = match opts.overlay {
            Overlay::Vxlan => (
                VXLAN_IF,
                Ipv4Addr::new(10, 213, 0, 1),
                Ipv4Addr::new(10, 213, 0, 2),
            ),
            // Calico gives tunl0 an address of the node's own pod block.
            Overlay::Ipip => (
                IPIP_IF,
                Ipv4Addr::new(10, 212, 1, 1),
                Ipv4Addr::new(10, 212, 2, 1),
            ),
        };
        Incident {
            old_node_ns: ns("old"),
            new_node_ns: ns("new"),
            router_ns: routed.then(|| ns("rtr")),
            client_ns: ns("cli"),
            server_ns: ns("srv"),
            old_uplink_if: UPLINK_IF.into(),
            new_uplink_if: UPLINK_IF.into(),
            router_old_if: routed.then(|| ROUTER_OLD_IF.into()),
            router_new_if: routed.then(|| ROUTER_NEW_IF.into()),
            tunnel_if: tunnel_if.into(),
            old_tunnel_ip,
            new_tunnel_ip,
            client_ip: Ipv4Addr::new(10, 212, 1, 2),
            server_ip: Ipv4Addr::new(10, 212, 2, 2),
            old_node_ip,
            new_node_ip,
            router_old_ip: routed.then_some(Ipv4Addr::new(10, 211, 1, 1)),
            router_new_ip: routed.then_some(Ipv4Addr::new(10, 211, 2, 1)),
            service_ip: SERVICE_IP,
            http_port: HTTP_PORT,
            redis_port: REDIS_PORT,
            client_host_if: CLIENT_HOST_IF.into(),
            server_host_if: SERVER_HOST_IF.into(),
            pod_if: POD_IF.into(),
            old_pod_cidr: OLD_POD_CIDR.into(),
            new_pod_cidr: NEW_POD_CIDR.into(),
            pod_gw: POD_GW,
            client_ip6: opts.ipv6.then_some(CLIENT_IP6),
            server_ip6: opts.ipv6.then_some(SERVER_IP6),
            service_ip6: opts.ipv6.then_some(SERVICE_IP6),
            old_node_ip6: opts.ipv6_underlay.then_some(if routed {
                OLD_NODE_IP6_ROUTED
            } else {
                OLD_NODE_IP6
            }),
            new_node_ip6: opts.ipv6_underlay.then_some(if routed {
                NEW_NODE_IP6_ROUTED
            } else {
                NEW_NODE_IP6
            }),
            guard,
            lab,
            opts,
        }
    }

    /// The client pod's address the clients use: IPv6 in a dual-stack lab.
    pub fn client_addr(&self) -> IpAddr {
        self.client_ip6.map_or(self.client_ip.into(), IpAddr::V6)
    }

    /// The server pod's address the clients reach (after DNAT): IPv6 in a dual-stack lab.
    pub fn server_addr(&self) -> IpAddr {
        self.server_ip6.map_or(self.server_ip.into(), IpAddr::V6)
    }

    /// The ClusterIP the clients dial: IPv6 in a dual-stack lab.
    pub fn service_addr(&self) -> IpAddr {
        self.service_ip6.map_or(self.service_ip.into(), IpAddr::V6)
    }

    /// The nodes' underlay addresses the tunnel uses (old, new): IPv6 with `ipv6_underlay`.
    pub fn node_addrs(&self) -> (IpAddr, IpAddr) {
        match (self.old_node_ip6, self.new_node_ip6) {
            (Some(o), Some(n)) => (o.into(), n.into()),
            _ => (self.old_node_ip.into(), self.new_node_ip.into()),
        }
    }

    /// Every namespace of the lab: the nodes, the router if any, the pods.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.old_node_ns.clone(), self.new_node_ns.clone()];
        v.extend(self.router_ns.clone());
        v.push(self.client_ns.clone());
        v.push(self.server_ns.clone());
        v
    }

    /// Leaves the lab and its servers running (for `cargo xtask lab up`); [`down`] removes it.
    pub fn keep(self) {
        let Incident { mut guard, lab, .. } = self;
        // Dropping a `Child` does not kill it; the servers stay up in their namespace.
        guard.servers.clear();
        guard.owned = false;
        lab.keep();
    }

    /// What `kubectl get pods,services,endpointslices,nodes -A -o json` would print for this
    /// lab if it were a cluster: nodes `worker-116` (old subnet) and `worker-208` (new), the
    /// client pod `shop/order-api-…` and the server pod `cache/storage-0`, the service
    /// `cache/storage` (ports `http` 8080, `redis` 6379) with its EndpointSlice, and a
    /// host-network `calico-node` pod per node (whose IP is the node's, so it must not name
    /// packets). Given to the tracer with `--k8s-snapshot`.
    pub fn k8s_snapshot(&self) -> String {
        let node = |name: &str, ip: Ipv4Addr, ip6: Option<Ipv6Addr>| {
            // Dual stack: an InternalIP per family.
            let v6 = ip6.map_or(String::new(), |a| {
                format!(r#",{{"type":"InternalIP","address":"{a}"}}"#)
            });
            format!(
                r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}"}}}},"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}{v6},{{"type":"Hostname","address":"{name}"}}]}}}}"#
            )
        };
        // `owner`: the controller's kind and name, as the API lists it in `ownerReferences`
        // (a Deployment's pods are its ReplicaSet's, with the `pod-template-hash` label).
        let pod = |ns: &str,
                   name: &str,
                   node: &str,
                   (ip, ip6): (Ipv4Addr, Option<Ipv6Addr>),
                   host_network: bool,
                   (kind, owner): (&str, &str)| {
            // Dual stack: podIP is the first of podIPs.
            let v6 = ip6.map_or(String::new(), |a| format!(r#",{{"ip":"{a}"}}"#));
            let labels = match owner.rsplit_once('-') {
                Some((_, hash)) if kind == "ReplicaSet" => {
                    format!(r#","labels":{{"pod-template-hash":"{hash}"}}"#)
                }
                _ => String::new(),
            };
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"namespace":"{ns}","name":"{name}","uid":"{ns}-{name}"{labels},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"{kind}","name":"{owner}","uid":"{owner}-uid","controller":true,"blockOwnerDeletion":true}}]}},"spec":{{"nodeName":"{node}","hostNetwork":{host_network}}},"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}{v6}]}}}}"#
            )
        };
        let calico_node = ("DaemonSet", "calico-node");
        let (svc_ns, svc) = ("cache", "storage");
        let slice = |family: &str, suffix: &str, ip: IpAddr| {
            format!(
                r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"namespace":"{svc_ns}","name":"{svc}-{suffix}","labels":{{"kubernetes.io/service-name":"{svc}"}}}},"addressType":"{family}","endpoints":[{{"addresses":["{ip}"],"conditions":{{"ready":true}},"nodeName":"worker-208","targetRef":{{"kind":"Pod","namespace":"{svc_ns}","name":"storage-0"}}}}],"ports":[{{"name":"http","protocol":"TCP","port":{http}}},{{"name":"redis","protocol":"TCP","port":{redis}}}]}}"#,
                http = self.http_port,
                redis = self.redis_port
            )
        };
        let items = [
            node("worker-116", self.old_node_ip, self.old_node_ip6),
            node("worker-208", self.new_node_ip, self.new_node_ip6),
            pod(
                "kube-system",
                "calico-node-a1",
                "worker-116",
                (self.old_node_ip, None),
                true,
                calico_node,
            ),
            pod(
                "kube-system",
                "calico-node-b2",
                "worker-208",
                (self.new_node_ip, None),
                true,
                calico_node,
            ),
            pod(
                "shop",
                "order-api-7d9f8",
                "worker-116",
                (self.client_ip, self.client_ip6),
                false,
                ("ReplicaSet", "order-api-7d9f8"),
            ),
            pod(
                svc_ns,
                "storage-0",
                "worker-208",
                (self.server_ip, self.server_ip6),
                false,
                ("StatefulSet", "storage"),
            ),
            format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"namespace":"{svc_ns}","name":"{svc}"}},"spec":{{"type":"ClusterIP","clusterIP":"{ip}","clusterIPs":["{ip}"{ip6}],"ipFamilies":[{families}],"ports":[{{"name":"http","protocol":"TCP","port":{http},"targetPort":{http}}},{{"name":"redis","protocol":"TCP","port":{redis},"targetPort":{redis}}}]}}}}"#,
                ip = self.service_ip,
                ip6 = self
                    .service_ip6
                    .map_or(String::new(), |a| format!(r#","{a}""#)),
                families = if self.opts.ipv6 {
                    r#""IPv4","IPv6""#
                } else {
                    r#""IPv4""#
                },
                http = self.http_port,
                redis = self.redis_port
            ),
            // One EndpointSlice per family, as the EndpointSlice controller makes them.
            slice("IPv4", "x7k2p", self.server_ip.into()),
            // The lab's CNI as a manifest install of Calico would configure it: `veth_mtu` set
            // to the pods' MTU (the incident's misconfiguration), which the tracer's fix
            // patches (`tracer::fix`).
            format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"namespace":"kube-system","name":"calico-config"}},"data":{{"typha_service_name":"none","calico_backend":"vxlan","veth_mtu":"{mtu}"}}}}"#,
                mtu = self.opts.pod_mtu
            ),
        ];
        let mut items = items.to_vec();
        items.extend(
            self.server_ip6
                .map(|a| slice("IPv6", "v6m4q", IpAddr::V6(a))),
        );
        format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"metadata\":{{\"resourceVersion\":\"\"}},\"items\":[\n{}\n]}}\n",
            items.join(",\n")
        )
    }

    /// `tracer run --netns ...` for all of the lab's namespaces.
    pub fn trace_command(&self) -> String {
        let mut cmd = String::from("tracer run");
        for ns in self.namespaces() {
            cmd.push_str(" --netns ");
            cmd.push_str(&ns);
        }
        cmd
    }

    /// One line per node, router, pod and the service, with addresses and the MTUs the kernel
    /// reports now (so after [`Incident::apply_fix`] too), then the command to trace it.
    pub fn describe(&self) -> Result<String> {
        let l = &self.lab;
        let tunnel = match self.opts.overlay {
            Overlay::Vxlan => format!(
                "VXLAN {} (VNI {VXLAN_VNI}, UDP {VXLAN_PORT}, outer DF {})",
                self.tunnel_if, self.opts.outer_df
            ),
            Overlay::Ipip => format!(
                "IPIP {} (outer DF copied from the inner packet)",
                self.tunnel_if
            ),
        };
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        for (role, ns, ip, tip, cidr) in [
            (
                "node old",
                &self.old_node_ns,
                self.old_node_ip,
                self.old_tunnel_ip,
                &self.old_pod_cidr,
            ),
            (
                "node new",
                &self.new_node_ns,
                self.new_node_ip,
                self.new_tunnel_ip,
                &self.new_pod_cidr,
            ),
        ] {
            line(format!(
                "{role:<11}{ns:<14}{UPLINK_IF} {ip}/24 mtu {}, {tunnel} {tip} mtu {}, pod CIDR {cidr}",
                l.link_mtu(ns, UPLINK_IF)?,
                l.link_mtu(ns, &self.tunnel_if)?,
            ));
        }
        if let (Some(ns), Some(a_if), Some(b_if), Some(a_ip), Some(b_ip)) = (
            &self.router_ns,
            &self.router_old_if,
            &self.router_new_if,
            self.router_old_ip,
            self.router_new_ip,
        ) {
            line(format!(
                "{:<11}{ns:<14}{a_if} {a_ip}/24 mtu {}, {b_if} {b_ip}/24 mtu {}, ip_forward on",
                "router",
                l.link_mtu(ns, a_if)?,
                l.link_mtu(ns, b_if)?,
            ));
        }
        for (role, ns, ip, node, host_if, extra) in [
            (
                "pod client",
                &self.client_ns,
                self.client_ip,
                &self.old_node_ns,
                &self.client_host_if,
                String::new(),
            ),
            (
                "pod server",
                &self.server_ns,
                self.server_ip,
                &self.new_node_ns,
                &self.server_host_if,
                format!(
                    ", HTTP :{}, redis-server :{}",
                    self.http_port, self.redis_port
                ),
            ),
        ] {
            line(format!(
                "{role:<11}{ns:<14}{} {ip}/32 mtu {} (host side {host_if} mtu {} in {node}), gateway {}{extra}",
                self.pod_if,
                l.link_mtu(ns, &self.pod_if)?,
                l.link_mtu(node, host_if)?,
                self.pod_gw,
            ));
        }
        line(format!(
            "{:<11}{:<14}ClusterIP {sip}:{} -> {}:{} (http), {sip}:{} -> {}:{} (redis): nft table ip {KUBE_PROXY_TABLE}",
            "service",
            self.old_node_ns,
            self.http_port,
            self.server_ip,
            self.http_port,
            self.redis_port,
            self.server_ip,
            self.redis_port,
            sip = self.service_ip,
        ));
        if let (Some(o), Some(n)) = (self.old_node_ip6, self.new_node_ip6) {
            line(format!(
                "{:<11}nodes {o} and {n} on eth0: VXLAN runs over IPv6 (70 B)",
                "underlay6"
            ));
        }
        if let (Some(c), Some(sv), Some(sip)) = (self.client_ip6, self.server_ip6, self.service_ip6)
        {
            line(format!(
                "{:<11}pods {c}/128 and {sv}/128 (gateway {POD_GW6}), tunnels {OLD_TUNNEL_IP6} and \
                 {NEW_TUNNEL_IP6}, ClusterIP [{sip}] -> [{sv}] (nft table ip6 {KUBE_PROXY_TABLE}): \
                 the clients talk IPv6",
                "ipv6"
            ));
        }
        if self.opts.filter_icmp {
            let mut hooks = vec![format!("{} input", self.old_node_ns)];
            if let Some(r) = &self.router_ns {
                hooks.push(format!("{r} output"));
            }
            line(format!(
                "{:<11}ICMP frag-needed dropped in {} (nft table ip {ICMP_FILTER_TABLE})",
                "filter",
                hooks.join(" and ")
            ));
        }
        line(format!("trace it:  {}", self.trace_command()));
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Building

    fn build_underlay(&self) -> Result<()> {
        let l = &self.lab;
        let (old, new, o) = (&self.old_node_ns, &self.new_node_ns, &self.opts);
        match (&self.router_ns, self.router_old_ip, self.router_new_ip) {
            (Some(rtr), Some(r_old), Some(r_new)) => {
                l.add_veth(old, UPLINK_IF, o.old_mtu, rtr, ROUTER_OLD_IF, o.old_mtu)?;
                l.add_veth(rtr, ROUTER_NEW_IF, o.new_mtu, new, UPLINK_IF, o.new_mtu)?;
                l.add_addr(rtr, ROUTER_OLD_IF, &format!("{r_old}/24"))?;
                l.add_addr(rtr, ROUTER_NEW_IF, &format!("{r_new}/24"))?;
                l.sysctl(rtr, "net.ipv4.ip_forward", "1")?;
                l.disable_offloads(rtr, ROUTER_OLD_IF)?;
                l.disable_offloads(rtr, ROUTER_NEW_IF)?;
                l.add_addr(old, UPLINK_IF, &format!("{}/24", self.old_node_ip))?;
                l.add_addr(new, UPLINK_IF, &format!("{}/24", self.new_node_ip))?;
                // Only the other subnet via the router: nodes without a default route, so a
                // stray packet cannot leave the lab's addresses.
                l.ip(
                    old,
                    &["route", "add", "10.211.2.0/24", "via", &r_old.to_string()],
                )?;
                l.ip(
                    new,
                    &["route", "add", "10.211.1.0/24", "via", &r_new.to_string()],
                )?;
            }
            _ => {
                l.add_veth(old, UPLINK_IF, o.old_mtu, new, UPLINK_IF, o.new_mtu)?;
                l.add_addr(old, UPLINK_IF, &format!("{}/24", self.old_node_ip))?;
                l.add_addr(new, UPLINK_IF, &format!("{}/24", self.new_node_ip))?;
            }
        }
        if let (Some(o6), Some(n6)) = (self.old_node_ip6, self.new_node_ip6) {
            self.build_underlay6(o6, n6)?;
        }
        for ns in [old, new] {
            // veth skips its MTU check for GSO packets: without this a real NIC's drop is hidden.
            l.disable_offloads(ns, UPLINK_IF)?;
            l.sysctl(ns, "net.ipv4.ip_forward", "1")?;
            // Proxy ARP answers only for an address routed out of another device; real nodes
            // have a default route for that, these have none, so route the gateway to lo.
            l.ip(ns, &["route", "add", &format!("{POD_GW}/32"), "dev", "lo"])?;
        }
        Ok(())
    }

    /// The nodes' IPv6 underlay beside the IPv4 one: on the same link, or each on its side of
    /// the router (which forwards IPv6 too), with only the other node's subnet routed.
    fn build_underlay6(&self, old6: Ipv6Addr, new6: Ipv6Addr) -> Result<()> {
        let l = &self.lab;
        let (old, new) = (&self.old_node_ns, &self.new_node_ns);
        let add = |ns: &str, dev: &str, a: &str| -> Result<()> {
            l.ip(
                ns,
                &["-6", "addr", "add", &format!("{a}/64"), "dev", dev, "nodad"],
            )?;
            Ok(())
        };
        add(old, UPLINK_IF, &old6.to_string())?;
        add(new, UPLINK_IF, &new6.to_string())?;
        if let Some(rtr) = &self.router_ns {
            add(rtr, ROUTER_OLD_IF, ROUTER_OLD_IP6)?;
            add(rtr, ROUTER_NEW_IF, ROUTER_NEW_IP6)?;
            l.sysctl(rtr, "net.ipv6.conf.all.forwarding", "1")?;
            l.ip(
                old,
                &[
                    "-6",
                    "route",
                    "add",
                    "fd00:211:2::/64",
                    "via",
                    ROUTER_OLD_IP6,
                ],
            )?;
            l.ip(
                new,
                &[
                    "-6",
                    "route",
                    "add",
                    "fd00:211:1::/64",
                    "via",
                    ROUTER_NEW_IP6,
                ],
            )?;
        }
        Ok(())
    }

    fn build_overlay(&self) -> Result<()> {
        let nodes = [
            (
                &self.old_node_ns,
                self.old_node_ip,
                self.new_node_ip,
                self.old_tunnel_ip,
                self.new_tunnel_ip,
                &self.new_pod_cidr,
            ),
            (
                &self.new_node_ns,
                self.new_node_ip,
                self.old_node_ip,
                self.new_tunnel_ip,
                self.old_tunnel_ip,
                &self.old_pod_cidr,
            ),
        ];
        for (ns, local, remote, tip, peer_tip, peer_pods) in nodes {
            match self.opts.overlay {
                Overlay::Vxlan => self.add_vxlan(ns, local, remote, tip, peer_tip, peer_pods)?,
                Overlay::Ipip => self.add_ipip(ns, tip, remote, peer_pods)?,
            }
        }
        Ok(())
    }

    fn add_vxlan(
        &self,
        ns: &str,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        tip: Ipv4Addr,
        peer_tip: Ipv4Addr,
        peer_pods: &str,
    ) -> Result<()> {
        let l = &self.lab;
        // Over an IPv6 underlay, its addresses are the tunnel's ends.
        let (local, remote): (IpAddr, IpAddr) = match (self.old_node_ip6, self.new_node_ip6) {
            (Some(o), Some(n)) if ns == self.old_node_ns => (o.into(), n.into()),
            (Some(o), Some(n)) => (n.into(), o.into()),
            _ => (local.into(), remote.into()),
        };
        // No `dev`: with a lower device the kernel caps the VXLAN MTU at lower MTU − 50, and
        // the point is Calico's misconfigured 1500 (set_mtu_up checks that it took).
        l.ip(
            ns,
            &[
                "link",
                "add",
                VXLAN_IF,
                "type",
                "vxlan",
                "id",
                &VXLAN_VNI.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
                "local",
                &local.to_string(),
                "remote",
                &remote.to_string(),
                "nolearning",
                "df",
                self.opts.outer_df.as_str(),
            ],
        )?;
        l.set_mtu_up(ns, VXLAN_IF, self.opts.tunnel_mtu)?;
        l.add_addr(ns, VXLAN_IF, &format!("{tip}/24"))?;
        if self.opts.ipv6 {
            // IPv6 pod frames over the same VXLAN (an IPv4 underlay): the tunnel's own IPv6
            // address, the other node's IPv6 pod block through it.
            let (tip6, peer_tip6, peer_pods6) = if ns == self.old_node_ns {
                (OLD_TUNNEL_IP6, NEW_TUNNEL_IP6, NEW_POD_CIDR6)
            } else {
                (NEW_TUNNEL_IP6, OLD_TUNNEL_IP6, OLD_POD_CIDR6)
            };
            l.sysctl(ns, "net.ipv6.conf.all.forwarding", "1")?;
            let cidr = format!("{tip6}/64");
            l.ip(ns, &["-6", "addr", "add", &cidr, "dev", VXLAN_IF, "nodad"])?;
            l.ip(
                ns,
                &[
                    "-6", "route", "add", peer_pods6, "via", peer_tip6, "dev", VXLAN_IF,
                ],
            )?;
        }
        l.ip(
            ns,
            &[
                "route",
                "add",
                peer_pods,
                "via",
                &peer_tip.to_string(),
                "dev",
                VXLAN_IF,
            ],
        )?;
        Ok(())
    }

    fn add_ipip(&self, ns: &str, tip: Ipv4Addr, remote: Ipv4Addr, peer_pods: &str) -> Result<()> {
        let l = &self.lab;
        // Calico uses the fallback device tunl0 (remote any, local any, nopmtudisc: the outer DF
        // is copied from the inner packet). Once the ipip module is loaded every namespace has
        // one, so "exists" is fine; on a kernel without IPIP the link type is unknown.
        let created = l.ip(ns, &["link", "add", IPIP_IF, "type", "ipip", "nopmtudisc"]);
        if let Err(e) = created {
            if l.ip(ns, &["link", "show", "dev", IPIP_IF]).is_err() {
                return Err(e.context(IPIP_MISSING));
            }
        }
        l.set_mtu_up(ns, IPIP_IF, self.opts.tunnel_mtu)?;
        l.add_addr(ns, IPIP_IF, &format!("{tip}/32"))?;
        l.ip(
            ns,
            &[
                "route",
                "add",
                peer_pods,
                "via",
                &remote.to_string(),
                "dev",
                IPIP_IF,
                "onlink",
            ],
        )?;
        Ok(())
    }

    fn build_pods(&self) -> Result<()> {
        let l = &self.lab;
        let mtu = self.opts.pod_mtu;
        for (node, pod, host_if, ip) in [
            (
                &self.old_node_ns,
                &self.client_ns,
                &self.client_host_if,
                self.client_ip,
            ),
            (
                &self.new_node_ns,
                &self.server_ns,
                &self.server_host_if,
                self.server_ip,
            ),
        ] {
            l.add_calico_pod(node, host_if, pod, &self.pod_if, ip, self.pod_gw, mtu)?;
            if self.opts.ipv6 {
                self.add_pod_ip6(node, host_if, pod)?;
            }
            // Pod TCP then sends MSS-sized segments: the result does not depend on GSO.
            l.disable_offloads(node, host_if)?;
            l.disable_offloads(pod, &self.pod_if)?;
        }
        Ok(())
    }

    /// The pod's IPv6 address, Calico-style: a /128 route to it on the node, its default route
    /// via the host veth's link-local address.
    fn add_pod_ip6(&self, node: &str, host_if: &str, pod: &str) -> Result<()> {
        let l = &self.lab;
        let ip = if pod == self.client_ns {
            CLIENT_IP6
        } else {
            SERVER_IP6
        };
        let host = format!("{ip}/128");
        l.ip(
            node,
            &[
                "-6",
                "addr",
                "add",
                &format!("{POD_GW6}/64"),
                "dev",
                host_if,
                "nodad",
            ],
        )?;
        l.ip(node, &["-6", "route", "add", &host, "dev", host_if])?;
        l.ip(
            pod,
            &["-6", "addr", "add", &host, "dev", &self.pod_if, "nodad"],
        )?;
        l.ip(
            pod,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                POD_GW6,
                "dev",
                &self.pod_if,
            ],
        )?;
        Ok(())
    }

    /// kube-proxy's ClusterIP in nftables: DNAT in prerouting (pods) and output (the node).
    fn build_service(&self) -> Result<()> {
        let mut rules = String::new();
        for port in [self.http_port, self.redis_port] {
            rules.push_str(&format!(
                "\t\tip daddr {} tcp dport {port} dnat to {}:{port}\n",
                self.service_ip, self.server_ip
            ));
        }
        let ruleset = format!(
            "table ip {KUBE_PROXY_TABLE} {{\n\
             \tchain prerouting {{\n\t\ttype nat hook prerouting priority -100; policy accept;\n{rules}\t}}\n\
             \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{rules}\t}}\n\
             }}\n"
        );
        self.lab.nft(&self.old_node_ns, &ruleset)?;
        if let (Some(svc), Some(backend)) = (self.service_ip6, self.server_ip6) {
            let mut rules = String::new();
            for port in [self.http_port, self.redis_port] {
                rules.push_str(&format!(
                    "\t\tip6 daddr {svc} tcp dport {port} dnat to [{backend}]:{port}\n"
                ));
            }
            let ruleset = format!(
                "table ip6 {KUBE_PROXY_TABLE} {{\n\
                 \tchain prerouting {{\n\t\ttype nat hook prerouting priority -100; policy accept;\n{rules}\t}}\n\
                 \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{rules}\t}}\n\
                 }}\n"
            );
            self.lab.nft(&self.old_node_ns, &ruleset)?;
        }
        Ok(())
    }

    /// The classic PMTUD black hole: a firewall dropping ICMP frag-needed.
    fn build_icmp_filter(&self) -> Result<()> {
        let table = |hook: &str| {
            format!(
                "table ip {ICMP_FILTER_TABLE} {{\n\tchain {hook} {{\n\
                 \t\ttype filter hook {hook} priority 0; policy accept;\n\
                 \t\ticmp type destination-unreachable icmp code frag-needed counter drop\n\t}}\n}}\n"
            )
        };
        self.lab.nft(&self.old_node_ns, &table("input"))?;
        if let Some(rtr) = &self.router_ns {
            self.lab.nft(rtr, &table("output"))?;
        }
        if self.opts.ipv6_underlay {
            // Over an IPv6 underlay the router's message is an ICMPv6 packet too big.
            let table6 = |hook: &str| {
                format!(
                    "table ip6 {ICMP_FILTER_TABLE} {{\n\tchain {hook} {{\n\
                     \t\ttype filter hook {hook} priority 0; policy accept;\n\
                     \t\ticmpv6 type packet-too-big counter drop\n\t}}\n}}\n"
                )
            };
            self.lab.nft(&self.old_node_ns, &table6("input"))?;
            if let Some(rtr) = &self.router_ns {
                self.lab.nft(rtr, &table6("output"))?;
            }
        }
        Ok(())
    }

    fn save_options(&self, opts: &IncidentOptions) -> Result<()> {
        let path = options_path(&opts.prefix);
        std::fs::write(&path, opts.to_json()).with_context(|| format!("writing {}", path.display()))
    }

    // -----------------------------------------------------------------------------------------
    // Servers

    fn start_servers(&mut self) -> Result<()> {
        let py = python3()?;
        let http_port = self.http_port.to_string();
        let mut ips = vec![self.server_ip.to_string()];
        ips.extend(self.server_ip6.map(|a| a.to_string()));
        let redis = redis_argv(&ips, self.redis_port)?;
        // Dual stack: one HTTP socket for both families (`::` accepts IPv4 too).
        let ip = if self.opts.ipv6 {
            "::".to_string()
        } else {
            self.server_ip.to_string()
        };
        let redis: Vec<&str> = redis.iter().map(String::as_str).collect();
        self.start_server("redis", &redis, self.redis_port)?;
        self.start_server(
            "http",
            &[&py.to_string_lossy(), "-c", HTTP_SERVER, &ip, &http_port],
            self.http_port,
        )
    }

    /// Starts `argv` in the server pod (output to `/run/{prefix}-lab.{name}.log`: a kept lab's
    /// servers outlive this process, so no pipes) and waits until it accepts connections.
    fn start_server(&mut self, name: &str, argv: &[&str], port: u16) -> Result<()> {
        let log = log_path(&self.opts.prefix, name);
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.lab.command(&self.server_ns, argv)?;
        cmd.stdout(file.try_clone()?)
            .stderr(file)
            .current_dir("/tmp");
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} server"))?;
        // In the guard first, so that it is killed whatever happens next.
        self.guard.servers.push(child);
        let addr = SocketAddr::V4(SocketAddrV4::new(self.server_ip, port));
        let deadline = Instant::now() + SERVER_START;
        loop {
            if let Some(child) = self.guard.servers.last_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the {name} server exited ({status}) before listening on {addr}: {}",
                        read_tail(&log)
                    );
                }
            }
            if tcp_probe(&self.server_ns, addr, Duration::from_millis(200))? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {name} server did not listen on {addr} within {} s: {}",
                    SERVER_START.as_secs(),
                    read_tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Clients

    /// The incident's applications, in order: HTTP GET /small, HTTP POST 1 MiB, Redis SET small
    /// (`SET k v`), Redis SET 1 MiB, all to the ClusterIP from the client pod, each bounded by
    /// `timeout`. A timeout is a result, not an error.
    pub fn run_clients(&self, timeout: Duration) -> Result<Vec<ClientResult>> {
        Ok(vec![
            self.http_get_small(timeout)?,
            self.http_post(MIB, timeout)?,
            self.redis_set(1, timeout)?,
            self.redis_set(MIB, timeout)?,
        ])
    }

    /// `GET http://10.96.0.10:8080/small` (python urllib) from the client pod.
    pub fn http_get_small(&self, timeout: Duration) -> Result<ClientResult> {
        let url = format!(
            "http://{}/small",
            SocketAddr::new(self.service_addr(), self.http_port)
        );
        let py = python3()?;
        let secs = secs_arg(timeout)?;
        self.run_client(
            "HTTP GET /small",
            &[&py.to_string_lossy(), "-c", HTTP_CLIENT, &url, "-1", &secs],
            None,
            timeout,
            |out| out == "ok 200 small ok",
        )
    }

    /// `POST http://10.96.0.10:8080/upload` with `bytes` bytes (python urllib); ok when the
    /// server answers 200 with the byte count.
    pub fn http_post(&self, bytes: usize, timeout: Duration) -> Result<ClientResult> {
        let url = format!(
            "http://{}/upload",
            SocketAddr::new(self.service_addr(), self.http_port)
        );
        let py = python3()?;
        let secs = secs_arg(timeout)?;
        let name = match bytes {
            MIB => "HTTP POST 1 MiB",
            0..=REDIS_ARG_MAX => "HTTP POST small",
            _ => "HTTP POST",
        };
        let want = format!("ok 200 {bytes}");
        self.run_client(
            name,
            &[
                &py.to_string_lossy(),
                "-c",
                HTTP_CLIENT,
                &url,
                &bytes.to_string(),
                &secs,
            ],
            None,
            timeout,
            |out| out == want,
        )
    }

    /// `redis-cli -h 10.96.0.10 -p 6379 SET k <value>` with a `bytes`-byte value (`v` for 1;
    /// values over 1 KiB go through stdin with `-x`); ok when Redis answers `OK`.
    pub fn redis_set(&self, bytes: usize, timeout: Duration) -> Result<ClientResult> {
        secs_arg(timeout)?;
        let (host, port) = (self.service_addr().to_string(), self.redis_port.to_string());
        let name = match bytes {
            MIB => "Redis SET 1 MiB",
            0..=REDIS_ARG_MAX => "Redis SET small",
            _ => "Redis SET",
        };
        let base = ["redis-cli", "-h", &host, "-p", &port];
        if bytes <= REDIS_ARG_MAX {
            let value = "v".repeat(bytes);
            let argv: Vec<&str> = base.iter().copied().chain(["SET", "k", &value]).collect();
            self.run_client(name, &argv, None, timeout, |out| out == "OK")
        } else {
            let argv: Vec<&str> = base.iter().copied().chain(["-x", "SET", "k"]).collect();
            self.run_client(name, &argv, Some(vec![b'v'; bytes]), timeout, |out| {
                out == "OK"
            })
        }
    }

    /// Runs `argv` in the client pod, killing it at `timeout`; `ok` judges its trimmed stdout.
    fn run_client(
        &self,
        name: &'static str,
        argv: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<ClientResult> {
        run_client(&self.lab, &self.client_ns, name, argv, stdin, timeout, ok)
    }

    // -----------------------------------------------------------------------------------------
    // The fix

    /// The incident's fix: both pods' eth0 and their host-side veths get `pod_mtu` (1400 =
    /// 1450 − 50), and every namespace's route cache is flushed so that path MTUs learned before
    /// do not mask the result. Existing connections keep their old MSS: new ones are needed.
    /// The options file of the lab (if any) records the new pod MTU.
    pub fn apply_fix(&self, pod_mtu: u32) -> Result<()> {
        check_mtu("pod", pod_mtu)?;
        let l = &self.lab;
        for (node, host_if, pod) in [
            (&self.old_node_ns, &self.client_host_if, &self.client_ns),
            (&self.new_node_ns, &self.server_host_if, &self.server_ns),
        ] {
            l.set_mtu_up(node, host_if, pod_mtu)?;
            l.set_mtu_up(pod, &self.pod_if, pod_mtu)?;
        }
        for ns in self.namespaces() {
            l.ip(&ns, &["route", "flush", "cache"])?;
            if self.opts.ipv6 || self.opts.ipv6_underlay {
                l.ip(&ns, &["-6", "route", "flush", "cache"])?;
            }
        }
        if options_path(&self.opts.prefix).is_file() {
            let mut opts = self.opts.clone();
            opts.pod_mtu = pod_mtu;
            self.save_options(&opts)?;
        }
        Ok(())
    }

    /// Whether the servers accept connections (probed inside the server pod).
    pub fn servers_listening(&self) -> Result<Vec<(&'static str, SocketAddr, bool)>> {
        let mut v = Vec::new();
        for (name, port) in [("http", self.http_port), ("redis", self.redis_port)] {
            let addr = SocketAddr::V4(SocketAddrV4::new(self.server_ip, port));
            v.push((
                name,
                addr,
                tcp_probe(&self.server_ns, addr, Duration::from_millis(300))?,
            ));
        }
        Ok(v)
    }
}

/// Removes the lab kept under `prefix`: kills everything running in its namespaces (the
/// servers included), deletes them and its files. Returns the deleted namespaces (none is fine).
pub fn down(prefix: &str) -> Result<Vec<String>> {
    let removed = lab::remove_prefix(prefix)?;
    remove_files(prefix);
    Ok(removed)
}

/// A report on the lab under `prefix`: what it is, its servers, and each namespace's links,
/// addresses and routes.
pub fn status(prefix: &str) -> Result<String> {
    let own = format!("{prefix}-");
    let names: Vec<String> = lab::list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(&own))
        .collect();
    if names.is_empty() {
        return Ok(format!("lab {prefix}: down\n"));
    }
    let mut out = String::new();
    match Incident::attach(prefix) {
        Ok(inc) => {
            out.push_str(&inc.describe()?);
            for (name, addr, up) in inc.servers_listening()? {
                let state = if up { "listening" } else { "NOT listening" };
                out.push_str(&format!("{:<11}{name} on {addr}: {state}\n", "server"));
            }
        }
        Err(e) => out.push_str(&format!("lab {prefix}: not an incident lab ({e:#})\n")),
    }
    for ns in names {
        out.push_str(&format!(
            "== {ns} (netns inode {})\n",
            Lab::netns_inode(&ns)?
        ));
        for args in [&["-br", "link"][..], &["-br", "addr"], &["route"]] {
            let o = std::process::Command::new("ip")
                .args(["-n", &ns])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .context("running ip")?;
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    Ok(out)
}

fn roles(path: Path) -> Vec<&'static str> {
    match path {
        Path::L2 => vec!["old", "new", "cli", "srv"],
        Path::Router => vec!["old", "new", "rtr", "cli", "srv"],
    }
}

fn options_path(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/{prefix}-lab.json"))
}

fn log_path(prefix: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/run/{prefix}-lab.{name}.log"))
}

fn remove_files(prefix: &str) {
    for path in [
        options_path(prefix),
        log_path(prefix, "http"),
        log_path(prefix, "redis"),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

fn load_options(prefix: &str) -> Result<IncidentOptions> {
    let path = options_path(prefix);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no incident lab options at {} (run `cargo xtask lab up`)",
            path.display()
        )
    })?;
    let opts =
        IncidentOptions::from_json(&text).with_context(|| format!("parsing {}", path.display()))?;
    if opts.prefix != prefix {
        bail!(
            "{} is for prefix {:?}, not {prefix:?}",
            path.display(),
            opts.prefix
        );
    }
    Ok(opts)
}

/// Tries a TCP connection to `addr` from inside `ns`: a thread joins the namespace (setns only
/// affects the calling thread) so that no process has to be started per attempt.
fn tcp_probe(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<bool> {
    let path = std::path::Path::new("/run/netns").join(ns);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let probe = std::thread::spawn(move || -> std::io::Result<bool> {
        // SAFETY: setns(2) on a valid fd (`file` lives until the end of this closure); it
        // switches only this short-lived thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpStream::connect_timeout(&addr, timeout).is_ok())
    });
    probe
        .join()
        .map_err(|_| anyhow!("the TCP probe thread panicked"))?
        .with_context(|| format!("entering namespace {ns}"))
}

/// Runs `argv` in `ns` (a client), killing it at `timeout`; `ok` judges its trimmed stdout.
/// `stdin`, when given, is written from a thread: a client stuck on a black hole must not block
/// the caller.
pub fn run_client(
    lab: &Lab,
    ns: &str,
    name: &'static str,
    argv: &[&str],
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<ClientResult> {
    let mut cmd = lab.command(ns, argv)?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting client {name:?}"))?;
    // Threads for the pipes: a client stuck on a black hole must not block us, nor we it.
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
            // Fails with EPIPE when the client is killed: that is expected.
            let _ = pipe.write_all(&data);
        })),
        _ => None,
    };
    let stdout = read_in_thread(child.stdout.take());
    let stderr = read_in_thread(child.stderr.take());
    // None: a timeout too large to add never expires.
    let deadline = start.checked_add(timeout);
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            killed = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    if let Some(w) = writer {
        let _ = w.join();
    }
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let out = out.trim();
    let succeeded = !killed && status.success() && ok(out);
    // The python clients print "timeout ..." when their own socket timeout fires first.
    let timed_out = killed || out.starts_with("timeout");
    let detail = if killed {
        format!(
            "no answer within {:.1} s: killed{}",
            timeout.as_secs_f64(),
            if out.is_empty() {
                String::new()
            } else {
                format!(" ({out})")
            }
        )
    } else if succeeded || err.trim().is_empty() {
        out.to_string()
    } else {
        format!("{out} {}", err.trim()).trim().to_string()
    };
    Ok(ClientResult {
        name,
        ok: succeeded,
        timed_out: timed_out && !succeeded,
        elapsed,
        detail,
    })
}

fn read_in_thread<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The last lines of a server log, for error messages.
fn read_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        tail
    }
}

fn secs_arg(timeout: Duration) -> Result<String> {
    if timeout.is_zero() {
        bail!("client timeout must be positive");
    }
    Ok(format!("{:.3}", timeout.as_secs_f64()))
}

/// redis-server in the foreground on `ips` and `port`, a cache that writes nothing to disk.
pub fn redis_argv(ips: &[String], port: u16) -> Result<Vec<String>> {
    let server = redis_server()?.to_string_lossy().into_owned();
    let bind = ["--bind".to_string()]
        .into_iter()
        .chain(ips.iter().cloned());
    let args = [
        "--port",
        &port.to_string(),
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    .map(String::from);
    Ok([server].into_iter().chain(bind).chain(args).collect())
}

fn redis_server() -> Result<PathBuf> {
    let debian = PathBuf::from("/usr/bin/redis-server");
    if debian.is_file() {
        return Ok(debian);
    }
    lab::find_program("redis-server").ok_or_else(|| {
        anyhow!(
            "redis-server not found: install the Debian package redis-server (`cargo xtask setup`)"
        )
    })
}

/// Debian's python3 first: it starts faster than a pyenv shim and does not depend on PATH.
fn python3() -> Result<PathBuf> {
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.is_file() {
        return Ok(debian);
    }
    lab::find_program("python3")
        .ok_or_else(|| anyhow!("python3 not found: install the Debian package python3"))
}

/// The server pod's HTTP endpoint: GET /small, POST /upload (answers the byte count).
const HTTP_SERVER: &str = r#"
import socket, socketserver, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ip, port = sys.argv[1], int(sys.argv[2])
class Handler(BaseHTTPRequestHandler):
    timeout = 60  # a black-holed upload must not hold its thread forever
    def log_message(self, *args):
        pass
    def reply(self, code, body):
        body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/small":
            self.reply(200, "small ok\n")
        else:
            self.reply(404, "not found\n")
    def do_POST(self):
        if self.path != "/upload":
            self.close_connection = True
            self.reply(404, "not found\n")
            return
        want = int(self.headers.get("Content-Length") or 0)
        got = 0
        while got < want:
            data = self.rfile.read(min(65536, want - got))
            if not data:
                break
            got += len(data)
        self.reply(200 if got == want else 400, "%d\n" % got)
class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def server_bind(self):
        # HTTPServer's own server_bind calls getfqdn(), a DNS lookup: slow without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
if ":" in ip:
    Server.address_family = socket.AF_INET6
Server((ip, port), Handler).serve_forever()
"#;

/// The client pod's HTTP client: argv url, bytes (-1: GET), timeout. Prints `ok STATUS BODY`,
/// `timeout ...` (exit 3) or `error ...` (exit 4).
const HTTP_CLIENT: &str = r#"
import sys, urllib.error, urllib.request
url, n, t = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
# No proxies from the environment: the ClusterIP is only reachable directly.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
if n < 0:
    req = urllib.request.Request(url)
else:
    req = urllib.request.Request(url, data=b"x" * n, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
try:
    with opener.open(req, timeout=t) as r:
        print("ok", r.status, r.read().decode().strip(), flush=True)
except urllib.error.HTTPError as e:
    print("error HTTP", e.code, flush=True)
    sys.exit(4)
except urllib.error.URLError as e:
    if isinstance(e.reason, TimeoutError):
        print("timeout", e.reason, flush=True)
        sys.exit(3)
    print("error", e.reason, flush=True)
    sys.exit(4)
except TimeoutError as e:
    print("timeout", e, flush=True)
    sys.exit(3)
except OSError as e:
    print("error", e, flush=True)
    sys.exit(4)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_json() {
        let o = IncidentOptions {
            prefix: "x1_2".into(),
            path: Path::Router,
            overlay: Overlay::Ipip,
            outer_df: OuterDf::Inherit,
            filter_icmp: true,
            pod_mtu: 1400,
            ..IncidentOptions::default()
        };
        assert_eq!(IncidentOptions::from_json(&o.to_json()).unwrap(), o);
        let d = IncidentOptions::default();
        assert_eq!(IncidentOptions::from_json(&d.to_json()).unwrap(), d);
        let v6 = IncidentOptions {
            ipv6: true,
            ipv6_underlay: true,
            ..IncidentOptions::default()
        };
        assert_eq!(IncidentOptions::from_json(&v6.to_json()).unwrap(), v6);
        // Options files of earlier versions have no `ipv6`: IPv4 only.
        let old = d
            .to_json()
            .replace(",\"ipv6\":false", "")
            .replace(",\"ipv6_underlay\":false", "");
        assert!(!old.contains("ipv6"), "{old}");
        assert_eq!(IncidentOptions::from_json(&old).unwrap(), d);
        assert!(IncidentOptions::from_json("").is_err());
        assert!(IncidentOptions::from_json("{\"prefix\":\"a\",\"path\":\"bus\"}").is_err());
        assert!(IncidentOptions::from_json("{\"prefix\":\"a\",\"pod_mtu\":\"-1\"}").is_err());
        assert!(IncidentOptions::from_json("{\"path\":\"l2\"}").is_err());
    }

    #[test]
    fn enums_parse_and_print() {
        for p in [Path::L2, Path::Router] {
            assert_eq!(p.to_string().parse::<Path>().unwrap(), p);
        }
        assert_eq!("inherit".parse::<OuterDf>().unwrap(), OuterDf::Inherit);
        assert!("vxlan6".parse::<Overlay>().is_err());
    }

    #[test]
    fn client_results_display_like_the_applications() {
        let mut r = ClientResult {
            name: "HTTP POST 1 MiB",
            ok: false,
            timed_out: true,
            elapsed: Duration::from_millis(5012),
            detail: String::new(),
        };
        assert_eq!(
            r.to_string(),
            "HTTP POST 1 MiB         TIMED OUT after 5.0 s"
        );
        r.ok = true;
        r.timed_out = false;
        r.elapsed = Duration::from_millis(12);
        assert_eq!(r.to_string(), "HTTP POST 1 MiB         ok (0.01 s)");
    }

    #[test]
    fn bad_options_are_rejected_before_anything_is_built() {
        let o = IncidentOptions {
            pod_mtu: 70000,
            ..IncidentOptions::default()
        };
        assert!(Incident::up(o).is_err());
        let o = IncidentOptions {
            overlay: Overlay::Ipip,
            ipv6: true,
            ..IncidentOptions::default()
        };
        let e = Incident::up(o).unwrap_err();
        assert!(e.to_string().contains("VXLAN"), "{e:#}");
        assert!(secs_arg(Duration::ZERO).is_err());
    }
}
