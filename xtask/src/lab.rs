//! Network-namespace scenarios that reproduce MTU incidents on one machine.
//!
//! Used by the tracer's integration tests (as a dev-dependency) and by `cargo xtask demo`/`lab`.
//! Everything is done by shelling out to `ip` (iproute2), `ethtool` and `sysctl` (through
//! `ip netns exec`), so no extra crates are needed. All addresses are in 10.200.0.0/16 -
//! 10.209.0.0/16 and only exist inside the namespaces a [`Lab`] creates.
//!
//! Links are created with `ip -n NS link add ... peer ... netns OTHER`, so both veth ends are born
//! inside their namespaces: nothing is ever created in the root namespace, and interface names
//! (`eth0`, `vxlan0`, ...) only need to be unique per namespace.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest prefix accepted by [`Lab::new`]: prefix + "-" + a 3-character role stays within 15
/// characters, the kernel's interface-name limit, should anyone derive link names from it.
pub const MAX_PREFIX_LEN: usize = 11;

/// Separates the owner pid from the counter in [`Lab::unique_prefix`] names.
const PID_SEP: char = '_';

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A set of network namespaces (and, if any, root-namespace links) owned by one test or demo.
///
/// Dropping it kills every process still running in its namespaces and deletes them, also while
/// a test unwinds from a panic. Use [`Lab::keep`] to leave them in place (`cargo xtask lab up`).
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    host_links: Vec<String>,
    keep: bool,
}

impl Lab {
    /// Starts an empty lab whose namespaces are named `{prefix}-{role}`.
    ///
    /// `prefix` must be 1..=11 characters of `[A-Za-z0-9_.]` (`-` is reserved as the role
    /// separator). Leftovers of an earlier run with exactly this prefix (a crashed test) are
    /// deleted first, so the prefix must not be shared with a lab that is still in use.
    pub fn new(prefix: &str) -> Result<Lab> {
        validate_prefix(prefix)?;
        remove_prefix(prefix)?;
        Ok(Lab {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
            host_links: Vec::new(),
            keep: false,
        })
    }

    /// A prefix unique to this process and call: `{family}{pid base 36}_{counter base 36}`,
    /// e.g. `trt1x2k_0`. [`cleanup_stale`] recognises the pid and spares labs of live processes.
    pub fn unique_prefix(family: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(
            "{family}{}{PID_SEP}{}",
            base36(std::process::id().into()),
            base36(n.into())
        )
    }

    /// A `Lab` over the namespaces `{prefix}-*` that already exist (a lab left running with
    /// [`Lab::keep`], e.g. by `cargo xtask lab up`), so that another process can use its
    /// helpers on them. It is kept: dropping it deletes and kills nothing.
    pub fn attach(prefix: &str) -> Result<Lab> {
        validate_prefix(prefix)?;
        let own = format!("{prefix}-");
        let namespaces: Vec<String> = list_netns()?
            .into_iter()
            .filter(|ns| ns.starts_with(&own))
            .collect();
        if namespaces.is_empty() {
            bail!("no namespaces {own}* exist: is the lab up?");
        }
        Ok(Lab {
            prefix: prefix.to_string(),
            namespaces,
            host_links: Vec::new(),
            keep: true,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full `ip netns` names of the namespaces created so far, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Leaves the namespaces in place when the `Lab` is dropped (for manual use).
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Creates namespace `{prefix}-{role}` with `lo` up and returns its full name.
    pub fn add_netns(&mut self, role: &str) -> Result<String> {
        if role.is_empty() || !role.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("invalid namespace role {role:?}: use ASCII letters and digits");
        }
        let name = format!("{}-{role}", self.prefix);
        if self.namespaces.contains(&name) {
            bail!("namespace {name} already exists in this lab");
        }
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        // Recorded before configuring it, so that Drop removes it even if the next step fails.
        self.namespaces.push(name.clone());
        self.ip(&name, &["link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Records a root-namespace link to be deleted on Drop (for callers that create one).
    pub fn track_host_link(&mut self, ifname: &str) {
        self.host_links.push(ifname.to_string());
    }

    /// Runs `ip -n NS ARGS...`, failing (with the command and its stderr) on a non-zero exit.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<Output> {
        self.check_ns(ns)?;
        run_ok(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// Creates a veth pair: `if_a` (MTU `mtu_a`) in `ns_a`, `if_b` (MTU `mtu_b`) in `ns_b`, both up.
    pub fn add_veth(
        &self,
        ns_a: &str,
        if_a: &str,
        mtu_a: u32,
        ns_b: &str,
        if_b: &str,
        mtu_b: u32,
    ) -> Result<()> {
        self.check_ns(ns_b)?;
        self.ip(
            ns_a,
            &[
                "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
            ],
        )?;
        self.set_mtu_up(ns_a, if_a, mtu_a)?;
        self.set_mtu_up(ns_b, if_b, mtu_b)
    }

    /// Sets a link's MTU, brings it up, and checks that the kernel kept the MTU.
    pub fn set_mtu_up(&self, ns: &str, ifname: &str, mtu: u32) -> Result<()> {
        self.ip(
            ns,
            &["link", "set", "dev", ifname, "mtu", &mtu.to_string(), "up"],
        )?;
        let got = self.link_mtu(ns, ifname)?;
        if got != mtu {
            bail!("{ns}/{ifname}: asked for MTU {mtu}, the kernel set {got}");
        }
        Ok(())
    }

    /// The MTU of `ifname` in `ns`, as `ip link show` reports it.
    pub fn link_mtu(&self, ns: &str, ifname: &str) -> Result<u32> {
        let out = self.ip(ns, &["-o", "link", "show", "dev", ifname])?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_mtu(&text).ok_or_else(|| anyhow!("no MTU in `ip link show` of {ns}/{ifname}: {text}"))
    }

    /// Adds `addr` (CIDR notation) to `ifname` in `ns`.
    pub fn add_addr(&self, ns: &str, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(ns, &["addr", "add", cidr, "dev", ifname])?;
        Ok(())
    }

    /// `sysctl -w key=value` inside `ns` (net.* sysctls are per namespace).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        self.exec_ok(ns, &["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Turns GSO/TSO/GRO off so that frames on the wire are really MTU-sized: veth skips its
    /// MTU check for GSO packets, which would hide the mismatch a real NIC enforces.
    pub fn disable_offloads(&self, ns: &str, ifname: &str) -> Result<()> {
        self.exec_ok(
            ns,
            &[
                "ethtool", "-K", ifname, "gso", "off", "tso", "off", "gro", "off",
            ],
        )?;
        Ok(())
    }

    /// A `Command` that runs `argv` inside `ns` (`ip netns exec NS ARGV...`).
    pub fn command(&self, ns: &str, argv: &[&str]) -> Result<Command> {
        self.check_ns(ns)?;
        let Some(program) = argv.first() else {
            bail!("empty command for namespace {ns}");
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(&argv[1..])
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs `argv` inside `ns` and returns its output whatever its exit status; fails only if it
    /// could not be started.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Result<Output> {
        let mut cmd = self.command(ns, argv)?;
        cmd.output()
            .with_context(|| format!("running `{}`", display_cmd(&cmd)))
    }

    /// Like [`Lab::exec`], but a non-zero exit status is an error naming the command.
    pub fn exec_ok(&self, ns: &str, argv: &[&str]) -> Result<Output> {
        run_ok(&mut self.command(ns, argv)?)
    }

    /// Loads an nftables ruleset (a file's text: `table … { … }` blocks or `add …` commands)
    /// inside `ns`, through `nft -f -`. The tables go with the namespace.
    pub fn nft(&self, ns: &str, ruleset: &str) -> Result<()> {
        use std::io::Write as _;
        let mut cmd = self.command(ns, &["nft", "-f", "-"])?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            // Small enough for the pipe buffer; dropping stdin sends EOF.
            stdin
                .write_all(ruleset.as_bytes())
                .context("writing to nft")?;
        }
        let out = child.wait_with_output().context("waiting for nft")?;
        if !out.status.success() {
            bail!(
                "nft in {ns} failed ({}): {}\nruleset:\n{ruleset}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts `argv` inside `ns` in the background (stdin null, stdout and stderr piped: read
    /// or drop them). Whatever still runs in the lab's namespaces is killed when the lab drops.
    pub fn spawn(&self, ns: &str, argv: &[&str]) -> Result<Child> {
        let mut cmd = self.command(ns, argv)?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn()
            .with_context(|| format!("starting `{}`", display_cmd(&cmd)))
    }

    /// A Calico-style routed pod: a veth `host_if` (in `node`) ↔ `pod_if` (in `pod`), the pod's
    /// /32 address, a /32 route to it on the node, and the pod's default route via `gw`, which
    /// the node answers by proxy ARP (as Calico's 169.254.1.1).
    #[allow(clippy::too_many_arguments)]
    pub fn add_calico_pod(
        &self,
        node: &str,
        host_if: &str,
        pod: &str,
        pod_if: &str,
        ip: Ipv4Addr,
        gw: Ipv4Addr,
        mtu: u32,
    ) -> Result<()> {
        self.add_veth(node, host_if, mtu, pod, pod_if, mtu)?;
        self.sysctl(node, &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
        // As Calico does: proxy ARP otherwise answers after a random delay of up to 0.8 s,
        // enough to lose a pod's first 1-second ping.
        self.sysctl(node, &format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0")?;
        let host_route = format!("{ip}/32");
        self.ip(
            node,
            &["route", "add", &host_route, "dev", host_if, "scope", "link"],
        )?;
        self.add_addr(pod, pod_if, &host_route)?;
        let gw = gw.to_string();
        self.ip(pod, &["route", "add", &gw, "dev", pod_if, "scope", "link"])?;
        self.ip(pod, &["route", "add", "default", "via", &gw, "dev", pod_if])?;
        Ok(())
    }

    /// Inode of the namespace (`stat /run/netns/NAME`): the number the kernel reports as the
    /// netns id (`/proc/PID/ns/net` -> `net:[INODE]`, `net->ns.inum`).
    pub fn netns_inode(ns: &str) -> Result<u64> {
        if ns.is_empty() || ns.contains('/') {
            bail!("invalid namespace name {ns:?}");
        }
        let path = Path::new("/run/netns").join(ns);
        let meta = std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        Ok(meta.ino())
    }

    fn check_ns(&self, ns: &str) -> Result<()> {
        if self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            bail!(
                "namespace {ns:?} is not part of lab {} (it has {:?})",
                self.prefix,
                self.namespaces
            )
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for link in &self.host_links {
            // Best effort: the link may already be gone with its peer's namespace.
            let _ = Command::new("ip")
                .args(["link", "del", "dev", link])
                .stderr(Stdio::null())
                .status();
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = delete_netns(ns) {
                eprintln!("lab: cleaning up {ns}: {e:#}");
            }
        }
    }
}

/// Kills what runs in `ns` (a process keeps a deleted namespace and its links alive), waits
/// until each is gone (SIGKILL is delivered when the process next runs: on a loaded machine
/// it was still running when `down` returned), and deletes the namespace.
fn delete_netns(ns: &str) -> Result<()> {
    let mut killed = Vec::new();
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in killed {
        // Gone, or a zombie (dead; its parent reaps it).
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    run_ok(Command::new("ip").args(["netns", "del", ns]))?;
    Ok(())
}

/// Names of all `ip netns` namespaces.
pub fn list_netns() -> Result<Vec<String>> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        // Lines look like "name (id: 3)" or just "name".
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Deletes the namespaces `{prefix}-*` (one lab's, e.g. `cargo xtask lab down`); returns them.
pub fn remove_prefix(prefix: &str) -> Result<Vec<String>> {
    validate_prefix(prefix)?;
    let own = format!("{prefix}-");
    let mut removed = Vec::new();
    for ns in list_netns()? {
        if ns.starts_with(&own) {
            delete_netns(&ns)?;
            removed.push(ns);
        }
    }
    Ok(removed)
}

/// Deletes leftovers of crashed runs: every namespace whose name starts with `family`, except
/// those of labs made by [`Lab::unique_prefix`] whose owner process is still alive (tests of one
/// binary run in parallel threads; their labs are not stale). Returns the deleted names.
pub fn cleanup_stale(family: &str) -> Result<Vec<String>> {
    if family.is_empty() || family.contains('/') {
        bail!("invalid prefix family {family:?}");
    }
    let mut removed = Vec::new();
    for ns in list_netns()? {
        let Some(rest) = ns.strip_prefix(family) else {
            continue;
        };
        if let Some(pid) = owner_pid(rest) {
            if Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
        }
        delete_netns(&ns)?;
        removed.push(ns);
    }
    Ok(removed)
}

/// The owner pid encoded by [`Lab::unique_prefix`] in `rest` (the name after the family).
fn owner_pid(rest: &str) -> Option<u64> {
    let (pid, tail) = rest.split_once(PID_SEP)?;
    if !tail.contains('-') {
        return None;
    }
    u64::from_str_radix(pid, 36).ok()
}

fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        bail!("lab prefix {prefix:?} must be 1 to {MAX_PREFIX_LEN} characters long");
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        bail!("lab prefix {prefix:?} may only contain ASCII letters, digits, '_' and '.'");
    }
    Ok(())
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn parse_mtu(ip_link_line: &str) -> Option<u32> {
    let mut words = ip_link_line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// `program arg...` for error messages.
pub fn display_cmd(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion, capturing output; a non-zero exit is an error naming the command.
fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", display_cmd(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display_cmd(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Searches `PATH` for `name`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Debian's python3 when present: starts faster than a pyenv shim and does not depend on the
/// caller's PATH.
fn python3() -> Result<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        return Ok(system.to_path_buf());
    }
    find_program("python3").ok_or_else(|| anyhow!("python3 not found (run `cargo xtask setup`)"))
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// client —veth 1500/1500— router —veth 1450/1450— server. The router drops DF packets over
/// 1450 bytes in `ip_forward` (PKT_TOO_BIG) and answers with ICMP frag-needed (mtu 1450).
#[derive(Debug, Clone)]
pub struct RoutedMtuHop {
    pub client_ns: String,
    pub router_ns: String,
    pub server_ns: String,
    /// `eth0` in the client namespace (MTU 1500).
    pub client_if: String,
    /// Router's link toward the client (MTU 1500).
    pub router_client_if: String,
    /// Router's link toward the server (MTU 1450).
    pub router_server_if: String,
    /// `eth0` in the server namespace (MTU 1450).
    pub server_if: String,
    pub client_ip: Ipv4Addr,
    /// Client's gateway: the router's address on the client link.
    pub client_gw: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    /// Server's gateway: the router's address on the server link.
    pub server_gw: Ipv4Addr,
    pub client_mtu: u32,
    /// MTU of the router—server link: the path MTU the router reports.
    pub hop_mtu: u32,
}

/// Builds [`RoutedMtuHop`] in a new lab named `prefix`.
pub fn routed_mtu_hop(prefix: &str) -> Result<(Lab, RoutedMtuHop)> {
    let mut lab = Lab::new(prefix)?;
    let s = RoutedMtuHop {
        client_ns: lab.add_netns("cli")?,
        router_ns: lab.add_netns("rtr")?,
        server_ns: lab.add_netns("srv")?,
        client_if: "eth0".into(),
        router_client_if: "to-cli".into(),
        router_server_if: "to-srv".into(),
        server_if: "eth0".into(),
        client_ip: Ipv4Addr::new(10, 201, 1, 2),
        client_gw: Ipv4Addr::new(10, 201, 1, 1),
        server_ip: Ipv4Addr::new(10, 201, 2, 2),
        server_gw: Ipv4Addr::new(10, 201, 2, 1),
        client_mtu: 1500,
        hop_mtu: 1450,
    };
    let (c, r, sv) = (&s.client_ns, &s.router_ns, &s.server_ns);
    lab.add_veth(c, &s.client_if, 1500, r, &s.router_client_if, 1500)?;
    lab.add_veth(r, &s.router_server_if, 1450, sv, &s.server_if, 1450)?;
    lab.add_addr(c, &s.client_if, &format!("{}/24", s.client_ip))?;
    lab.add_addr(r, &s.router_client_if, &format!("{}/24", s.client_gw))?;
    lab.add_addr(r, &s.router_server_if, &format!("{}/24", s.server_gw))?;
    lab.add_addr(sv, &s.server_if, &format!("{}/24", s.server_ip))?;
    lab.ip(
        c,
        &["route", "add", "default", "via", &s.client_gw.to_string()],
    )?;
    lab.ip(
        sv,
        &["route", "add", "default", "via", &s.server_gw.to_string()],
    )?;
    lab.sysctl(r, "net.ipv4.ip_forward", "1")?;
    lab.disable_offloads(c, &s.client_if)?;
    lab.disable_offloads(r, &s.router_client_if)?;
    lab.disable_offloads(r, &s.router_server_if)?;
    Ok((lab, s))
}

/// Two namespaces on one veth pair whose ends disagree: 1500 in `a`, 1450 in `b`. Frames from
/// `a` over 1450 (+ L2 header) are dropped silently in `b`'s veth receive path
/// (`__dev_forward_skb2`, NOT_SPECIFIED) and counted as `a`'s TX drops. Note that TCP between
/// them works: each side advertises its MSS, so use DF pings or UDP to hit the drop.
#[derive(Debug, Clone)]
pub struct VethMismatch {
    pub a_ns: String,
    pub b_ns: String,
    /// `eth0` in `a` (MTU 1500).
    pub a_if: String,
    /// `eth0` in `b` (MTU 1450).
    pub b_if: String,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    pub a_mtu: u32,
    pub b_mtu: u32,
}

/// Builds [`VethMismatch`] in a new lab named `prefix`.
pub fn veth_mismatch(prefix: &str) -> Result<(Lab, VethMismatch)> {
    let mut lab = Lab::new(prefix)?;
    let s = VethMismatch {
        a_ns: lab.add_netns("a")?,
        b_ns: lab.add_netns("b")?,
        a_if: "eth0".into(),
        b_if: "eth0".into(),
        a_ip: Ipv4Addr::new(10, 202, 0, 1),
        b_ip: Ipv4Addr::new(10, 202, 0, 2),
        a_mtu: 1500,
        b_mtu: 1450,
    };
    lab.add_veth(&s.a_ns, &s.a_if, s.a_mtu, &s.b_ns, &s.b_if, s.b_mtu)?;
    lab.add_addr(&s.a_ns, &s.a_if, &format!("{}/24", s.a_ip))?;
    lab.add_addr(&s.b_ns, &s.b_if, &format!("{}/24", s.b_ip))?;
    lab.disable_offloads(&s.a_ns, &s.a_if)?;
    lab.disable_offloads(&s.b_ns, &s.b_if)?;
    Ok((lab, s))
}

/// The incident in small. Two nodes on an underlay veth (n1 1500, n2 1450), each with a VXLAN
/// device of MTU 1500 (the misconfiguration: 1450 − 50 would fit), and one Calico-style pod per
/// node (pod MTU 1500, /32 route to the host veth, gateway 169.254.1.1 by proxy ARP). A full-size
/// pod packet becomes a 1550-byte outer packet; n1 fragments it to 1500 (outer DF unset, the
/// Linux default) and n2's 1450 veth drops those frames (`__dev_forward_skb2`). Small requests
/// and handshakes pass; large uploads from pod1 to pod2 hang.
#[derive(Debug, Clone)]
pub struct VxlanMismatch {
    pub node1_ns: String,
    pub node2_ns: String,
    pub pod1_ns: String,
    pub pod2_ns: String,
    /// Underlay link in each node (`eth0`).
    pub node1_underlay_if: String,
    pub node2_underlay_if: String,
    pub node1_underlay_ip: Ipv4Addr,
    pub node2_underlay_ip: Ipv4Addr,
    pub node1_underlay_mtu: u32,
    pub node2_underlay_mtu: u32,
    /// VXLAN device in each node (`vxlan0`).
    pub vxlan_if: String,
    pub vxlan_id: u32,
    pub vxlan_port: u16,
    pub vxlan_mtu: u32,
    pub node1_overlay_ip: Ipv4Addr,
    pub node2_overlay_ip: Ipv4Addr,
    /// Host-side veth of each pod, in its node (`cali1`, `cali2`).
    pub pod1_host_if: String,
    pub pod2_host_if: String,
    /// Interface inside each pod (`eth0`).
    pub pod_if: String,
    pub pod_mtu: u32,
    pub pod1_ip: Ipv4Addr,
    pub pod2_ip: Ipv4Addr,
    /// Pod CIDR of each node.
    pub pod1_cidr: String,
    pub pod2_cidr: String,
    /// The pods' default gateway, answered by proxy ARP on the host veth.
    pub pod_gw: Ipv4Addr,
}

/// Builds [`VxlanMismatch`] in a new lab named `prefix`.
pub fn vxlan_mismatch(prefix: &str) -> Result<(Lab, VxlanMismatch)> {
    let mut lab = Lab::new(prefix)?;
    let s = VxlanMismatch {
        node1_ns: lab.add_netns("n1")?,
        node2_ns: lab.add_netns("n2")?,
        pod1_ns: lab.add_netns("p1")?,
        pod2_ns: lab.add_netns("p2")?,
        node1_underlay_if: "eth0".into(),
        node2_underlay_if: "eth0".into(),
        node1_underlay_ip: Ipv4Addr::new(10, 203, 0, 1),
        node2_underlay_ip: Ipv4Addr::new(10, 203, 0, 2),
        node1_underlay_mtu: 1500,
        node2_underlay_mtu: 1450,
        vxlan_if: "vxlan0".into(),
        vxlan_id: 42,
        vxlan_port: 4789,
        vxlan_mtu: 1500,
        node1_overlay_ip: Ipv4Addr::new(10, 204, 0, 1),
        node2_overlay_ip: Ipv4Addr::new(10, 204, 0, 2),
        pod1_host_if: "cali1".into(),
        pod2_host_if: "cali2".into(),
        pod_if: "eth0".into(),
        pod_mtu: 1500,
        pod1_ip: Ipv4Addr::new(10, 205, 1, 2),
        pod2_ip: Ipv4Addr::new(10, 205, 2, 2),
        pod1_cidr: "10.205.1.0/24".into(),
        pod2_cidr: "10.205.2.0/24".into(),
        pod_gw: Ipv4Addr::new(169, 254, 1, 1),
    };

    // Underlay: the L2 MTU mismatch between the old and the new node.
    lab.add_veth(
        &s.node1_ns,
        &s.node1_underlay_if,
        s.node1_underlay_mtu,
        &s.node2_ns,
        &s.node2_underlay_if,
        s.node2_underlay_mtu,
    )?;
    let nodes = [
        (
            &s.node1_ns,
            &s.node1_underlay_if,
            s.node1_underlay_ip,
            s.node2_underlay_ip,
            s.node1_overlay_ip,
            s.node2_overlay_ip,
            &s.pod2_cidr,
        ),
        (
            &s.node2_ns,
            &s.node2_underlay_if,
            s.node2_underlay_ip,
            s.node1_underlay_ip,
            s.node2_overlay_ip,
            s.node1_overlay_ip,
            &s.pod1_cidr,
        ),
    ];
    for (ns, underlay, local, remote, overlay, peer_overlay, peer_pods) in nodes {
        lab.add_addr(ns, underlay, &format!("{local}/24"))?;
        lab.disable_offloads(ns, underlay)?;
        lab.sysctl(ns, "net.ipv4.ip_forward", "1")?;
        // No `dev`: with a lower device the kernel caps the VXLAN MTU at lower MTU − 50, and the
        // point here is the misconfigured 1500 (set_mtu_up checks that it took).
        lab.ip(
            ns,
            &[
                "link",
                "add",
                &s.vxlan_if,
                "type",
                "vxlan",
                "id",
                &s.vxlan_id.to_string(),
                "dstport",
                &s.vxlan_port.to_string(),
                "local",
                &local.to_string(),
                "remote",
                &remote.to_string(),
                "nolearning",
            ],
        )?;
        lab.set_mtu_up(ns, &s.vxlan_if, s.vxlan_mtu)?;
        lab.add_addr(ns, &s.vxlan_if, &format!("{overlay}/24"))?;
        lab.ip(
            ns,
            &[
                "route",
                "add",
                peer_pods,
                "via",
                &peer_overlay.to_string(),
                "dev",
                &s.vxlan_if,
            ],
        )?;
        // Proxy ARP only answers for an address the node routes out of another device; real
        // nodes have a default route for that, these have none, so route the gateway to lo.
        lab.ip(
            ns,
            &["route", "add", &format!("{}/32", s.pod_gw), "dev", "lo"],
        )?;
    }

    let pods = [
        (&s.node1_ns, &s.pod1_ns, &s.pod1_host_if, s.pod1_ip),
        (&s.node2_ns, &s.pod2_ns, &s.pod2_host_if, s.pod2_ip),
    ];
    for (node, pod, host_if, ip) in pods {
        lab.add_calico_pod(node, host_if, pod, &s.pod_if, ip, s.pod_gw, s.pod_mtu)?;
    }
    Ok((lab, s))
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// Outcome of [`tcp_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadResult {
    /// The server received all bytes and its reply reached the client in time.
    pub completed: bool,
    /// The client gave up at the timeout (connect, send or waiting for the reply).
    pub timed_out: bool,
    /// Bytes the server reported having received (0 when no reply arrived).
    pub bytes_received: u64,
    pub elapsed: Duration,
    /// The client's last line: `ok N`, `timeout`, or `error ...`.
    pub detail: String,
}

const SINK_SERVER: &str = r#"
import socket, sys
ip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(1)
print("ready", flush=True)
s.settimeout(timeout)
c, _ = s.accept()
c.settimeout(timeout)
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.sendall(str(n).encode())
c.close()
print("received", n, flush=True)
"#;

const UPLOAD_CLIENT: &str = r#"
import socket, sys, time
ip, port, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + t
def left():
    return max(end - time.monotonic(), 0.001)
try:
    s = socket.create_connection((ip, port), timeout=t)
    chunk = b"x" * min(max(n, 1), 65536)
    todo = n
    while todo > 0:
        s.settimeout(left())
        todo -= s.send(chunk[:min(todo, len(chunk))])
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        s.settimeout(left())
        d = s.recv(64)
        if not d:
            break
        got += d
    print("ok", got.decode() or "0", flush=True)
except socket.timeout:
    print("timeout", flush=True)
    sys.exit(3)
except OSError as e:
    print("error", e, flush=True)
    sys.exit(4)
"#;

/// Sends `bytes` bytes over TCP from `client_ns` to a sink listening on `server_ip:port` in
/// `server_ns`, which answers with the count it received. Gives up after `timeout`.
///
/// A timeout or a refused connection is a result (`completed == false`), not an error; errors
/// are reserved for what prevents the test itself (bad arguments, no python3, sink not starting).
pub fn tcp_upload(
    lab: &Lab,
    client_ns: &str,
    server_ns: &str,
    server_ip: Ipv4Addr,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> Result<UploadResult> {
    if port == 0 {
        bail!("tcp_upload: port must not be 0");
    }
    if timeout.is_zero() {
        bail!("tcp_upload: timeout must be positive");
    }
    let py = python3()?;
    let py = py.to_string_lossy();
    let (ip, port_s) = (server_ip.to_string(), port.to_string());
    // The sink outlives the client's deadline a little so that it never closes first.
    let sink_timeout = format!("{:.3}", timeout.as_secs_f64() + 2.0);
    let mut server = lab.spawn(
        server_ns,
        &[&py, "-c", SINK_SERVER, &ip, &port_s, &sink_timeout],
    )?;
    let result = upload_with_server(
        &mut server,
        lab,
        client_ns,
        &py,
        &ip,
        &port_s,
        bytes,
        timeout,
    );
    let _ = server.kill();
    let _ = server.wait();
    result
}

#[allow(clippy::too_many_arguments)]
fn upload_with_server(
    server: &mut Child,
    lab: &Lab,
    client_ns: &str,
    py: &str,
    ip: &str,
    port: &str,
    bytes: u64,
    timeout: Duration,
) -> Result<UploadResult> {
    // Wait for the sink's "ready" (it listens before printing it).
    let stdout = server.stdout.take().context("sink stdout not captured")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    if ready.trim() != "ready" {
        let _ = server.kill();
        let mut err = String::new();
        if let Some(e) = server.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut BufReader::new(e), &mut err);
        }
        bail!("TCP sink on {ip}:{port} did not start: {}", err.trim());
    }

    let start = Instant::now();
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let mut client = lab.spawn(
        client_ns,
        &[py, "-c", UPLOAD_CLIENT, ip, port, &bytes.to_string(), &secs],
    )?;
    // The client enforces the timeout itself; this is a backstop should it hang anyway.
    let deadline = start + timeout + Duration::from_secs(3);
    let mut killed = false;
    while client.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = client.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = client.wait_with_output()?;
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let detail = stdout.lines().last().unwrap_or_default().trim().to_string();
    let bytes_received = detail
        .strip_prefix("ok ")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if detail.is_empty() && !killed {
        bail!(
            "upload client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(UploadResult {
        completed: detail.starts_with("ok ") && bytes_received == bytes,
        timed_out: killed || detail == "timeout",
        bytes_received,
        elapsed,
        detail: if killed {
            "killed after timeout".into()
        } else {
            detail
        },
    })
}

/// Outcome of [`ping_df`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingResult {
    /// ping exited 0: at least one reply (ping's own rule).
    pub success: bool,
    pub transmitted: u32,
    pub received: u32,
    /// ping's stdout and stderr, for assertion messages.
    pub output: String,
}

/// `ping -M do -s SIZE -c COUNT -W 1 DST` inside `ns`: ICMP echo with DF set and `size` bytes of
/// payload (IP packet = size + 28). Unreachable or too-big is a result, not an error.
pub fn ping_df(lab: &Lab, ns: &str, dst: Ipv4Addr, size: u32, count: u32) -> Result<PingResult> {
    if size > 65507 {
        bail!("ping_df: size {size} exceeds the largest ICMP payload (65507)");
    }
    if count == 0 {
        bail!("ping_df: count must be at least 1");
    }
    if find_program("ping").is_none() {
        bail!("ping not found: run `cargo xtask setup` (installs iputils-ping)");
    }
    let (size, count, dst) = (size.to_string(), count.to_string(), dst.to_string());
    let out = lab.exec(
        ns,
        &[
            "ping", "-n", "-M", "do", "-s", &size, "-c", &count, "-W", "1", &dst,
        ],
    )?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (transmitted, received) = parse_ping_counts(&output).unwrap_or((0, 0));
    Ok(PingResult {
        success: out.status.success(),
        transmitted,
        received,
        output,
    })
}

/// Parses "N packets transmitted, M received" from ping's summary.
fn parse_ping_counts(output: &str) -> Option<(u32, u32)> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let tx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let rx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some((tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a/b").is_err());
        assert!(validate_prefix("a-b").is_err());
        assert!(validate_prefix("toolongprefix").is_err());
        assert!(validate_prefix("lab").is_ok());
        assert!(Lab::new("bad/name").is_err());
    }

    #[test]
    fn unique_prefixes_fit_and_encode_the_pid() {
        let a = Lab::unique_prefix("trt");
        let b = Lab::unique_prefix("trt");
        assert_ne!(a, b);
        assert!(a.len() + "-cli".len() <= 15, "{a}");
        validate_prefix(&a).unwrap();
        let rest = format!("{}-cli", a.strip_prefix("trt").unwrap());
        assert_eq!(owner_pid(&rest), Some(u64::from(std::process::id())));
        assert_eq!(owner_pid("lab-n1"), None);
    }

    #[test]
    fn base36_round_trips() {
        for n in [0u64, 1, 35, 36, 4_194_304, 60_466_175] {
            assert_eq!(u64::from_str_radix(&base36(n), 36).unwrap(), n);
        }
    }

    #[test]
    fn parses_ip_link_and_ping() {
        let l = "5: vxlan0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UNKNOWN";
        assert_eq!(parse_mtu(l), Some(1500));
        assert_eq!(parse_mtu("nothing"), None);
        let p = "--- 10.0.0.1 ping statistics ---\n3 packets transmitted, 2 received, +1 errors, 33% packet loss, time 2003ms\n";
        assert_eq!(parse_ping_counts(p), Some((3, 2)));
        assert_eq!(parse_ping_counts("garbage"), None);
    }
}
