//! A routed path in either IP family, for verdicts on paths without an overlay: client —1500—
//! router —1500— server, where the router's route onward can be limited (a smaller hop beyond
//! it, as a WAN link or a VPN would be). The router then refuses larger packets and says so
//! with an ICMP frag-needed / ICMPv6 packet too big — unless that is suppressed, as a firewall
//! that drops ICMP does: the classic path-MTU black hole, the one IPv6 depends on most (routers
//! never fragment IPv6). A real redis-server listens in the server namespace.
//!
//! The onward limit is the router's *route* MTU, not its link's: a smaller link at the server
//! would advertise a smaller MSS in the server's SYN-ACK and TCP would never send anything too
//! big. Addresses: 10.207.1.0/24 and 10.207.2.0/24, fd00:207:1::/64 and fd00:207:2::/64.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::incident::{redis_argv, run_client, ClientResult};
use crate::lab::Lab;

/// The path's IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The port redis-server listens on.
pub const REDIS_PORT: u16 = 6379;

/// A [`Lab`] with the routed path in it (dropping it removes everything, servers too).
pub struct RoutedPath {
    pub lab: Lab,
    pub family: Family,
    pub client_ns: String,
    pub router_ns: String,
    pub server_ns: String,
    pub client_ip: IpAddr,
    pub server_ip: IpAddr,
}

impl RoutedPath {
    /// Builds the path in a new lab named `prefix`, every link at 1500, the router forwarding.
    pub fn up(prefix: &str, family: Family) -> Result<RoutedPath> {
        let mut lab = Lab::new(prefix)?;
        let (cli, rtr, srv) = (
            lab.add_netns("cli")?,
            lab.add_netns("rtr")?,
            lab.add_netns("srv")?,
        );
        if family == Family::V6 {
            for ns in [&cli, &rtr, &srv] {
                // Before any link exists: addresses usable at once, without duplicate address
                // detection's wait.
                lab.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")?;
                lab.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")?;
            }
        }
        lab.add_veth(&cli, "eth0", 1500, &rtr, "to-cli", 1500)?;
        lab.add_veth(&rtr, "to-srv", 1500, &srv, "eth0", 1500)?;
        let addr = |net: u8, host: u8| -> String {
            match family {
                Family::V4 => format!("10.207.{net}.{host}"),
                Family::V6 => format!("fd00:207:{net}::{host}"),
            }
        };
        let plen = if family == Family::V4 { 24 } else { 64 };
        let fam = if family == Family::V4 { "-4" } else { "-6" };
        for (ns, dev, a) in [
            (&cli, "eth0", addr(1, 2)),
            (&rtr, "to-cli", addr(1, 1)),
            (&rtr, "to-srv", addr(2, 1)),
            (&srv, "eth0", addr(2, 2)),
        ] {
            let cidr = format!("{a}/{plen}");
            let mut args = vec![fam, "addr", "add", &cidr, "dev", dev];
            if family == Family::V6 {
                args.push("nodad");
            }
            lab.ip(ns, &args)?;
        }
        lab.ip(&cli, &[fam, "route", "add", "default", "via", &addr(1, 1)])?;
        lab.ip(&srv, &[fam, "route", "add", "default", "via", &addr(2, 1)])?;
        match family {
            Family::V4 => lab.sysctl(&rtr, "net.ipv4.ip_forward", "1")?,
            Family::V6 => lab.sysctl(&rtr, "net.ipv6.conf.all.forwarding", "1")?,
        }
        for (ns, dev) in [(&cli, "eth0"), (&rtr, "to-cli"), (&rtr, "to-srv")] {
            lab.disable_offloads(ns, dev)?;
        }
        let path = RoutedPath {
            client_ip: addr(1, 2).parse()?,
            server_ip: addr(2, 2).parse()?,
            lab,
            family,
            client_ns: cli,
            router_ns: rtr,
            server_ns: srv,
        };
        path.wait_reachable()?;
        Ok(path)
    }

    /// The router's route to the server's subnet limited to `mtu` (the smaller hop beyond it).
    pub fn limit_onward(&self, mtu: u32) -> Result<()> {
        limit_onward(&self.lab, &self.router_ns, self.family, mtu)
    }

    /// The router's ICMP frag-needed / packet too big dropped as it leaves (a firewall).
    pub fn suppress_too_big(&self) -> Result<()> {
        self.lab.nft(
            &self.router_ns,
            "table inet routed_path_filter {\n\
               chain output {\n\
                 type filter hook output priority 0;\n\
                 icmp type destination-unreachable icmp code frag-needed drop\n\
                 icmpv6 type packet-too-big drop\n\
               }\n\
             }\n",
        )
    }

    /// Starts redis-server in the server namespace and waits until it answers.
    pub fn start_redis(&self) -> Result<()> {
        let ip = self.server_ip.to_string();
        let port = REDIS_PORT.to_string();
        let argv = redis_argv(std::slice::from_ref(&ip), REDIS_PORT)?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // Killed with the lab's namespaces. Its output goes nowhere: a closed pipe would kill it
        // at its first log line.
        let mut cmd = self.lab.command(&self.server_ns, &argv)?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().context("starting redis-server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = self.lab.exec(
                &self.client_ns,
                &["redis-cli", "-h", &ip, "-p", &port, "PING"],
            )?;
            if String::from_utf8_lossy(&pong.stdout).trim() == "PONG" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on {ip}:{port} did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cli SET k <bytes × 'v'>` from the client (the value on stdin), killed at `timeout`.
    pub fn redis_set(&self, bytes: usize, timeout: Duration) -> Result<ClientResult> {
        let (ip, port) = (self.server_ip.to_string(), REDIS_PORT.to_string());
        let argv = ["redis-cli", "-h", &ip, "-p", &port, "-x", "SET", "k"];
        run_client(
            &self.lab,
            &self.client_ns,
            "Redis SET",
            &argv,
            Some(vec![b'v'; bytes]),
            timeout,
            |out| out == "OK",
        )
    }

    /// Neighbour discovery and the router's forwarding settle before the first test packet.
    fn wait_reachable(&self) -> Result<()> {
        let ip = self.server_ip.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ping = self
                .lab
                .exec(&self.client_ns, &["ping", "-c", "1", "-W", "1", &ip])?;
            if ping.status.success() {
                return Ok(());
            }
        }
        bail!("{ip} is not reachable from {} within 10 s", self.client_ns)
    }
}

/// The router's route to the server's subnet limited to `mtu` (the smaller hop beyond it), in
/// the lab's `router_ns`: [`RoutedPath::limit_onward`] for a path taken apart.
pub fn limit_onward(lab: &Lab, router_ns: &str, family: Family, mtu: u32) -> Result<()> {
    // The kernel's own subnet route, same key (IPv6 prefix routes have metric 256).
    let (fam, net, metric) = match family {
        Family::V4 => ("-4", "10.207.2.0/24", "0"),
        Family::V6 => ("-6", "fd00:207:2::/64", "256"),
    };
    let mtu = mtu.to_string();
    let route = [net, "dev", "to-srv", "metric", metric, "mtu", mtu.as_str()];
    let replace: Vec<&str> = [fam, "route", "replace"]
        .iter()
        .chain(&route)
        .copied()
        .collect();
    lab.ip(router_ns, &replace)?;
    let out = lab.ip(router_ns, &[fam, "route", "show", net])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.lines().count() != 1 || !text.contains(&format!("mtu {mtu}")) {
        bail!("the router's route to {net} is not the one limited to {mtu}: {text}");
    }
    Ok(())
}
