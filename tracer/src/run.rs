//! `tracer run`: resolve the kernel's facts, load and attach the programs, stream events to the
//! sinks until Ctrl-C / SIGTERM / `--duration`, then detach, flush and summarise.
use std::{
    collections::HashMap,
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    EbpfLoader,
};
use tokio::io::unix::AsyncFd;
use tracer_common::{names, Config, Event, Hook, VethOffsets, HOOK_COUNT, MAX_SIZE_DROP_SITES};

use crate::{
    cli::RunArgs,
    event::{Kind, Record},
    hooks::{self, Attempt, HookedDevice, Names, Outcome},
    ifaces,
    kernel::{btf, kallsyms::Kallsyms, tracefs},
    netns::Netns,
    sink::{
        jsonl::JsonlSink,
        logfile::{check_writable, Rotation},
        metrics::{HookStatus, Metrics},
        pcap::PcapSink,
        terminal::{self, TerminalSink},
        Sink, Summary,
    },
    time,
    verdict::{Analyzer, Verdict},
};

/// Capabilities the tracer needs (`capabilities(7)` numbers), checked up front so that the
/// operator reads their names instead of a bare EPERM from the kernel.
pub const NEEDED_CAPS: [(u32, &str); 4] = [
    (39, "CAP_BPF"),
    (38, "CAP_PERFMON"),
    (12, "CAP_NET_ADMIN"),
    (21, "CAP_SYS_ADMIN"),
];

pub fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| cap_eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing capabilities: {} (run as root, e.g. `sudo tracer run`; in a pod: privileged, or add these capabilities)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Everything resolved before loading: printed in the start-up block.
struct KernelFacts {
    release: String,
    config: Config,
    names: Names,
    notes: Vec<String>,
    aya_btf: aya::Btf,
}

fn kernel_facts(args: &RunArgs) -> Result<KernelFacts> {
    tracefs::root().context("tracefs is needed for the tracepoints")?;
    let btf = btf::load_vmlinux()?;
    let mut config = Config::unresolved();
    config.kernel = btf::kernel_offsets(&btf)?;
    let (tp, mut notes) = tracefs::tracepoint_offsets()?;
    config.tracepoints = tp;
    let reasons = btf::DropReasons::from_btf(&btf)?;
    if let Some(v) = reasons.value("PKT_TOO_BIG") {
        config.reason_pkt_too_big = v;
    } else {
        notes.push(
            "no PKT_TOO_BIG drop reason on this kernel: size drops are found by location and size"
                .into(),
        );
    }
    config.all_drops = args.all_drops as u32;
    let kallsyms = Kallsyms::load()?;
    let sites = kallsyms.size_drop_sites();
    config.size_drop_site_count = sites.len().min(MAX_SIZE_DROP_SITES) as u32;
    for (slot, (_, range)) in config.size_drop_sites.iter_mut().zip(&sites) {
        *slot = *range;
    }
    if sites.is_empty() {
        notes.push("no size-drop sites found in kallsyms".into());
    }
    config.veth = veth_offsets(&btf, &kallsyms);
    config.pmtu = hooks::pmtu::offsets(&btf);
    // One parsed copy of the kernel's BTF at a time (~30 and ~12 MiB): the peak memory (issue 7).
    drop(btf);
    let aya_btf = aya::Btf::from_sys_fs().context("aya could not read /sys/kernel/btf/vmlinux")?;
    if config.veth.xmit_addr == 0 {
        notes.push(
            "veth peers unknown (no veth_xmit/veth_priv): veth drops show the sending end's MTU"
                .into(),
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Ok(KernelFacts {
        release,
        config,
        names: Names {
            reasons,
            kallsyms,
            devices: HashMap::new(),
            clock_offset_ns: time::clock_offset_ns(),
            inventory: None,
            conntrack: None,
        },
        notes,
        aya_btf,
    })
}

/// Where the veth peer pointer lives on this kernel (see `VethOffsets`).
fn veth_offsets(btf: &btf_rs::Btf, kallsyms: &Kallsyms) -> VethOffsets {
    let mut v = VethOffsets::unresolved();
    let Some(xmit) = kallsyms.function_range("veth_xmit") else {
        return v;
    };
    let field = |s: &str, f: &str| btf::field_offset(btf, s, f).ok().flatten();
    let (Some(ops), Some(xmit_off), Some(peer), Some(size)) = (
        field("net_device", "netdev_ops"),
        field("net_device_ops", "ndo_start_xmit"),
        field("veth_priv", "peer").or_else(|| veth_module_peer(btf)),
        btf::struct_size(btf, "net_device").ok().flatten(),
    ) else {
        return v;
    };
    // netdev_priv(dev) = dev + ALIGN(sizeof(struct net_device), NETDEV_ALIGN = 32).
    v.netdev_priv = (size + 31) & !31;
    v.dev_netdev_ops = ops;
    v.ops_ndo_start_xmit = xmit_off;
    v.priv_peer = peer;
    v.xmit_addr = xmit.start;
    v
}

/// Where veth is a module (Debian, RHEL kernels), `struct veth_priv` is described by the
/// module's split BTF, not vmlinux's. `None` when veth is built in or not loaded.
fn veth_module_peer(vmlinux: &btf_rs::Btf) -> Option<u32> {
    let module = btf_rs::Btf::from_split_file("/sys/kernel/btf/veth", vmlinux).ok()?;
    btf::field_offset(&module, "veth_priv", "peer")
        .ok()
        .flatten()
}

/// A watched namespace, its interfaces and its default-route devices.
type Watched = (Netns, Vec<ifaces::Iface>, Vec<String>);

/// The namespaces to watch, with their interfaces and default-route devices.
fn watched_namespaces(args: &RunArgs) -> Result<Vec<Watched>> {
    let list = if args.netns.is_empty() {
        vec![Netns::current()?]
    } else {
        let mut v = Vec::new();
        for arg in &args.netns {
            let ns = Netns::resolve(arg)?;
            if !v.iter().any(|n: &Netns| n.inode == ns.inode) {
                v.push(ns);
            }
        }
        v
    };
    let mut out = Vec::new();
    for ns in list {
        let (ifs, defaults) =
            ns.enter(|| Ok((ifaces::list()?, ifaces::default_route_devices())))?;
        out.push((ns, ifs, defaults));
    }
    Ok(out)
}

/// Human output: the start-up block and summary go to stderr, the event stream to stdout
/// (stderr when the JSONL log is stdout).
struct Output {
    log_to_stdout: bool,
}

impl Output {
    fn info(&self, line: &str) {
        eprintln!("{line}");
    }
}

pub fn run(args: RunArgs, object: &[u8]) -> Result<()> {
    check_privileges()?;
    let out = Output {
        log_to_stdout: args.log.as_deref().is_some_and(|p| p.as_os_str() == "-"),
    };
    let mut facts = kernel_facts(&args)?;
    let namespaces = watched_namespaces(&args)?;
    let mut names_desc = load_names(&args, &namespaces, &mut facts.names);
    let snapshot_inventory = facts.names.inventory.clone();
    let api_sources = if args.no_k8s_api {
        Vec::new()
    } else {
        crate::k8s::api::choose_source(args.kubeconfig.as_deref())
    };
    if api_sources.is_empty() {
        names_desc.push(if args.no_k8s_api {
            "Kubernetes API off (--no-k8s-api)".to_string()
        } else {
            "no Kubernetes API credentials (--kubeconfig, KUBECONFIG, ~/.kube/config, in-cluster, \
             /etc/kubernetes/kubelet.conf)"
                .to_string()
        });
    } else {
        let list: Vec<String> = api_sources.iter().map(|s| s.to_string()).collect();
        names_desc.push(format!(
            "Kubernetes API: connecting ({}), in the background",
            list.join(", ")
        ));
        // Names are expected: count what stays unnamed.
        facts.names.inventory.get_or_insert_with(Default::default);
    }
    if names_desc.is_empty() {
        names_desc.push(
            "none (--k8s-snapshot FILE or --kubeconfig FILE to name pods, services and nodes)"
                .into(),
        );
    } else if facts.names.inventory.is_some() {
        // Services after DNAT by their conntrack entries, dumped only when a lookup misses.
        let watched = namespaces.iter().map(|(n, _, _)| n.clone()).collect();
        facts.names.conntrack = Some(crate::k8s::conntrack::Conntrack::start(watched));
        names_desc
            .push("conntrack of the watched namespaces, on demand (services after DNAT)".into());
    }
    let selections = hooks::select::select(&namespaces, &args.ifaces)?;

    // Open the outputs before attaching anything: a bad path or a taken port must fail before
    // tracing starts.
    let (mut sinks, log_desc, hook_status) = open_outputs(&args, &namespaces)?;
    if out.log_to_stdout {
        sinks.push(Box::new(TerminalSink::new(std::io::stderr(), false)));
    } else {
        sinks.push(Box::new(TerminalSink::new(
            std::io::stdout(),
            terminal::want_color(),
        )));
    }

    if !args.netns.is_empty() {
        facts.config.filter_netns = 1;
    }
    for (slot, sel) in selections.iter().enumerate() {
        facts.config.tc_netns[slot] = sel.netns.inode;
    }
    let load = |config: &Config| -> Result<aya::Ebpf> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&facts.aya_btf))
            .override_global(names::CONFIG, config, true)
            .map_max_entries(names::EVENTS, args.ringbuf_kib * 1024)
            .load(object)
            .context("loading the kernel programs")?;
        if !args.netns.is_empty() {
            let mut filter: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
                ebpf.map_mut(names::NETNS_FILTER)
                    .context("NETNS_FILTER map missing")?,
            )?;
            for (ns, _, _) in &namespaces {
                filter.insert(ns.inode, 1, 0)?;
            }
        }
        Ok(ebpf)
    };
    let mut ebpf = load(&facts.config)?;
    let mut report: Vec<Attempt> = Vec::new();
    let mut hooked: Vec<HookedDevice> = Vec::new();
    let mut drops = hooks::drops::attach(&mut ebpf, &facts.aya_btf);
    let drops_attached = |r: &[Attempt]| r.iter().any(|a| a.outcome == Outcome::Attached);
    if !drops_attached(&drops) && facts.config.veth.xmit_addr != 0 {
        // Older verifiers (6.1) give up on the drop program once its veth-peer path is enabled
        // ("program is too large"): load it again without that path rather than trace nothing.
        let mut config = facts.config;
        config.veth = VethOffsets::unresolved();
        ebpf = load(&config)?;
        let retry = hooks::drops::attach(&mut ebpf, &facts.aya_btf);
        if drops_attached(&retry) {
            facts.config = config;
            facts.notes.push(
                "veth peers unknown: this kernel's verifier refused the drop program's veth-peer \
                 path; veth drops show the sending end's MTU"
                    .into(),
            );
            drops = retry;
        }
    }
    report.extend(drops);
    report.extend(hooks::icmp::attach(&mut ebpf));
    // Declared after `ebpf`: dropped first, also on an early return (filters go before programs).
    let mut legacy_tc = hooks::tc::LegacyTc::default();
    report.extend(hooks::transmit::attach(
        &mut ebpf,
        &selections,
        &mut hooked,
        &mut legacy_tc,
    ));
    report.extend(hooks::ingress::attach(
        &mut ebpf,
        &selections,
        &mut hooked,
        &mut legacy_tc,
    ));
    report.extend(hooks::tcp::attach(&mut ebpf));
    report.extend(hooks::pmtu::attach(
        &mut ebpf,
        &facts.aya_btf,
        &facts.config.pmtu,
    ));
    hooks::log_verifier_costs(&ebpf);
    for dev in hooked {
        facts
            .names
            .devices
            .insert((dev.netns, dev.iface.ifindex), dev);
    }

    if let Some(h) = &hook_status {
        h.record(&report);
    }
    let audit = static_audit(&args);
    let ring = RingBuf::try_from(ebpf.take_map(names::EVENTS).context("EVENTS map missing")?)?;
    let lost = PerCpuArray::try_from(ebpf.take_map(names::LOST).context("LOST map missing")?)?;
    // Devices that appear later; then what is no longer needed goes (see privileges.rs).
    let (mut watcher, mut more) =
        hooks::devices::DeviceWatcher::start(ebpf, legacy_tc, &selections, &args.ifaces);
    more.insert(0, format!("hooks: {}", watcher.describe()));
    more.push(format!(
        "privileges: {}",
        crate::privileges::drop_after_attach(watcher.enters_other_namespaces())
    ));
    print_startup(
        &out,
        &facts,
        &namespaces,
        &report,
        &log_desc,
        &names_desc,
        &audit.startup,
        &more,
    );
    let drops_ok = report
        .iter()
        .any(|a| a.concern == "drops" && a.outcome == Outcome::Attached);
    if !drops_ok {
        bail!("the drop hook could not be attached (see above): nothing to trace");
    }

    let mut analyzer = Analyzer::new();
    analyzer.set_audit(audit.problems);
    analyzer.set_pmtu_hook(hooks::pmtu::blind_spot(&report).is_none());
    for (ns, _, _) in &namespaces {
        analyzer.name_netns(ns.inode, ns.label.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let summary = runtime.block_on(event_loop(
        &args,
        ring,
        lost,
        &mut facts.names,
        NameSources {
            snapshot: snapshot_inventory,
            api: api_sources,
        },
        &mut sinks,
        &mut analyzer,
        &mut watcher,
    ))?;
    // Detach before the summary so that "stopped" is true when it is printed.
    drop(watcher);
    for sink in &mut sinks {
        if let Err(e) = sink.flush() {
            out.info(&format!("tracer: flushing output failed: {e:#}"));
        }
    }
    out.info(&format!("summary: {}", summary.line()));
    if let Some(p) = args.log.as_ref().filter(|p| p.as_os_str() != "-") {
        out.info(&format!("event log: {}", p.display()));
    }
    if let Some(p) = &args.pcap {
        out.info(&format!("packet capture: {}", p.display()));
    }
    Ok(())
}

/// The sinks, the start-up block's `log:` text, and where the attach report goes for metrics.
type Outputs = (Vec<Box<dyn Sink>>, String, Option<HookStatus>);

/// The event log, the capture and the metrics endpoint, as asked, with the start-up block's
/// `log:` text. Every file is checked for writability and the port bound before any file is
/// truncated, so a start that fails on one output leaves an earlier run's files alone.
fn open_outputs(args: &RunArgs, namespaces: &[Watched]) -> Result<Outputs> {
    let log_file = args.log.as_ref().filter(|p| p.as_os_str() != "-");
    if let Some(p) = log_file {
        check_writable(p)
            .with_context(|| format!("cannot create the event log {}", p.display()))?;
    }
    if let Some(p) = &args.pcap {
        check_writable(p).with_context(|| format!("cannot create the capture {}", p.display()))?;
    }
    let labels: HashMap<u32, String> = namespaces
        .iter()
        .map(|(n, _, _)| (n.inode, n.label.clone()))
        .collect();
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut desc = Vec::new();
    let mut hook_status = None;
    if let Some(addr) = args.metrics {
        let metrics = Metrics::new(labels.clone());
        let bound = metrics.serve(addr)?;
        desc.push(format!("metrics at http://{bound}/metrics"));
        hook_status = Some(metrics.hook_status());
        sinks.push(Box::new(metrics));
    }
    match &args.log {
        None => desc.insert(0, "none (--log FILE to keep one)".to_string()),
        Some(p) if p.as_os_str() == "-" => {
            sinks.push(Box::new(JsonlSink::stdout()));
            desc.insert(0, "stdout".to_string());
        }
        Some(p) => {
            let rotation = (args.log_max_size > 0).then_some(Rotation {
                max_bytes: args.log_max_size,
                keep: args.log_keep,
            });
            sinks.push(Box::new(JsonlSink::create_rotating(p, rotation)?));
            desc.insert(0, p.display().to_string());
        }
    }
    if let Some(p) = &args.pcap {
        sinks.push(Box::new(PcapSink::create(p, args.snaplen, labels)?));
        desc.push(format!("packet headers to {}", p.display()));
    }
    Ok((sinks, desc.join(", "), hook_status))
}

// The start-up block is one report of many parts.
#[allow(clippy::too_many_arguments)]
fn print_startup(
    out: &Output,
    facts: &KernelFacts,
    namespaces: &[Watched],
    report: &[Attempt],
    log_desc: &str,
    names_desc: &[String],
    audit: &[String],
    more: &[String],
) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    out.info(&format!(
        "tracer {} on {} (kernel {}, BTF ok, {} drop reasons, PKT_TOO_BIG={})",
        env!("CARGO_PKG_VERSION"),
        host.trim(),
        facts.release,
        facts.names.reasons.len(),
        facts
            .names
            .reasons
            .value("PKT_TOO_BIG")
            .map_or("none".to_string(), |v| v.to_string()),
    ));
    let ns: Vec<String> = namespaces
        .iter()
        .map(|(n, _, _)| format!("{} (netns {})", n.label, n.inode))
        .collect();
    out.info(&format!("watching: {}", ns.join(", ")));
    out.info("hooks:");
    for a in report {
        out.info(&format!("  {a}"));
    }
    let blind = blind_spots(report);
    if blind.is_empty() {
        out.info("blind: none");
    } else {
        for b in blind {
            out.info(&format!("blind: {b}"));
        }
    }
    for n in &facts.notes {
        out.info(&format!("note: {n}"));
    }
    for line in names_desc {
        out.info(&format!("names: {line}"));
    }
    for line in audit {
        out.info(&format!("audit: {line}"));
    }
    for line in more {
        out.info(line);
    }
    out.info(&format!("log: {log_desc}"));
    out.info("tracing… (Ctrl-C to stop)");
    let _ = std::io::stderr().flush();
}

/// Load the Kubernetes names: node-local facts, then the snapshot over them (it knows more).
/// A broken source is reported and skipped: names help, but the trace must go on without them.
fn load_names(args: &RunArgs, namespaces: &[Watched], names: &mut Names) -> Vec<String> {
    let mut lines = Vec::new();
    if !args.no_node_local {
        lines.extend(node_local_names(args, namespaces, names));
    }
    let Some(path) = &args.k8s_snapshot else {
        return lines;
    };
    match crate::k8s::snapshot::load(path) {
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

/// What the static MTU audit (`tracer check` without its probe) says about the watched
/// namespaces: start-up lines, and the problems' arithmetic for the verdicts.
struct StaticAudit {
    startup: Vec<String>,
    problems: Vec<String>,
}

fn static_audit(args: &RunArgs) -> StaticAudit {
    let host = crate::host::HostRoot::new(&args.host_root);
    match crate::check::audit_static(&args.netns, &host) {
        Ok(a) => {
            let problems: Vec<String> = a
                .problems()
                .map(|f| format!("{}: {}", f.location, f.arithmetic))
                .collect();
            let warnings = a.findings.len() - problems.len();
            let mut startup = if problems.is_empty() {
                vec![format!(
                    "MTUs consistent (devices, routes, CNI; `tracer check` also probes paths){}",
                    if warnings > 0 {
                        format!(", {warnings} warning(s)")
                    } else {
                        String::new()
                    }
                )]
            } else {
                problems.iter().map(|p| format!("PROBLEM {p}")).collect()
            };
            if let (false, Some(m)) = (problems.is_empty(), a.recommended_pod_mtu) {
                startup.push(format!("largest pod MTU that fits every limit seen: {m}"));
            }
            StaticAudit { startup, problems }
        }
        Err(e) => StaticAudit {
            startup: vec![format!("unavailable: {e:#}")],
            problems: Vec::new(),
        },
    }
}

/// Names from the node itself (`k8s::node_local`), read once at start: the lowest precedence.
fn node_local_names(args: &RunArgs, namespaces: &[Watched], names: &mut Names) -> Vec<String> {
    let watched: Vec<Netns> = namespaces.iter().map(|(n, _, _)| n.clone()).collect();
    let host = crate::host::HostRoot::new(&args.host_root);
    let found = crate::k8s::node_local::discover(&host, &watched);
    let mut lines = vec![format!("node-local: {}", found.summary())];
    lines.extend(found.warnings.iter().map(|w| format!("node-local: {w}")));
    if !found.inventory.is_empty() {
        names.inventory = Some(found.inventory);
    }
    lines
}

/// What the operator cannot see with the hooks that attached, in their terms.
fn blind_spots(report: &[Attempt]) -> Vec<String> {
    let ok = |method: &str| {
        report
            .iter()
            .any(|a| a.method.starts_with(method) && a.outcome == Outcome::Attached)
    };
    let mut out = Vec::new();
    if !ok("kprobe/__icmp_send") {
        if ok("tracepoint/icmp/icmp_send") {
            out.push("advertised MTU of kernel-generated ICMP (no kprobes): taken from ICMP packets leaving hooked devices instead".to_string());
        } else {
            out.push(
                "kernel-generated ICMP frag-needed: only seen leaving hooked devices".to_string(),
            );
        }
    }
    if !ok("kprobe/icmp6_send") {
        out.push(
            "kernel-generated ICMPv6 packet-too-big: only seen leaving hooked devices".to_string(),
        );
    }
    if !ok("tcx/egress") && !ok("tc/egress") {
        out.push(
            "oversized transmissions and ICMP leaving devices (no tc egress hook)".to_string(),
        );
    }
    if !ok("tcx/ingress") && !ok("tc/ingress") {
        out.push("ICMP too-big arriving from the underlay (no tc ingress hook)".to_string());
    }
    if !ok("tracepoint/tcp") {
        out.push("TCP retransmissions".to_string());
    }
    out.extend(hooks::pmtu::blind_spot(report));
    out
}

/// Where Kubernetes names come from during the run.
struct NameSources {
    /// What node-local facts and `--k8s-snapshot` gave (the base the API's view is merged over).
    snapshot: Option<crate::k8s::Inventory>,
    /// API credentials to try, in order; empty = no API.
    api: Vec<crate::k8s::api::ApiSource>,
}

/// Connect to the API and stream its view; failures become status lines, never errors:
/// names help, but the trace goes on without them.
async fn api_names(
    sources: Vec<crate::k8s::api::ApiSource>,
    tx: tokio::sync::mpsc::Sender<crate::k8s::api::Update>,
) {
    use crate::k8s::api::{self, Update};
    match api::connect_any(&sources).await {
        Ok((source, client)) => {
            let _ = tx
                .send(Update::Status(format!(
                    "Kubernetes API: connected via {source}"
                )))
                .await;
            if let Err(e) = api::watch(client, tx.clone()).await {
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

// Everything the loop feeds or is fed by, taken apart so that each is borrowed separately.
#[allow(clippy::too_many_arguments)]
async fn event_loop(
    args: &RunArgs,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    names: &mut Names,
    sources: NameSources,
    sinks: &mut [Box<dyn Sink>],
    analyzer: &mut Analyzer,
    watcher: &mut hooks::devices::DeviceWatcher,
) -> Result<Summary> {
    if let Err(e) = watcher.register() {
        eprintln!("hooks: link watcher off: {e}");
    }
    let (api_tx, mut api_rx) = tokio::sync::mpsc::channel(16);
    let mut api_open = !sources.api.is_empty();
    if api_open {
        tokio::spawn(api_names(sources.api, api_tx));
    } else {
        drop(api_tx);
    }
    use tokio::signal::unix::{signal, SignalKind};
    let started = Instant::now();
    let mut summary = Summary::default();
    if names.inventory.is_some() {
        summary.unattributed = Some(0);
    }
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    // SAFETY: the ring buffer map owns its fd and keeps it open until the AsyncFd drops it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {}", e.into_parts().1))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ring_poll = tokio::time::interval(RING_POLL);
    ring_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost_seen = [0u64; HOOK_COUNT as usize];
    let mut sink_failed = vec![false; sinks.len()];
    // Test knob: hold the reader back so that a test can overflow the ring buffer on purpose
    // and check that every lost event is counted.
    if let Some(ms) = std::env::var("TRACER_TEST_READER_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    loop {
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // In this order: a stop is seen at the first look after it came, even while the
            // ring is never empty.
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until_deadline => break,
            update = api_rx.recv(), if api_open => match update {
                Some(crate::k8s::api::Update::Replace(api_view)) => {
                    // The API's view is newer than the snapshot file: it wins where both know.
                    let mut combined = sources.snapshot.clone().unwrap_or_default();
                    combined.merge(api_view);
                    names.inventory = Some(combined);
                }
                Some(crate::k8s::api::Update::Status(line)) => eprintln!("names: {line}"),
                None => api_open = false,
            },
            _ = tick.tick() => {
                report_lost(&lost, &mut lost_seen, sinks, &mut sink_failed, &mut summary, analyzer);
                let now = time::clock_offset_ns() + monotonic_ns();
                for (i, sink) in sinks.iter_mut().enumerate() {
                    if let Err(e) = sink.tick(now) {
                        sink_error(i, &e, &mut sink_failed);
                    }
                }
                for v in analyzer.live(now) {
                    emit_verdict(&v, sinks, &mut sink_failed);
                }
            }
            i = watcher.ready() => {
                for line in watcher.handle(i, &mut names.devices) {
                    eprintln!("{line}");
                }
            }
            _ = ring_poll.tick() => {
                // Events below the kernel's wake-up batch; a backlog left here wakes the
                // reader with the next event, or is read at the next poll.
                drain(ring.get_mut(), DRAIN_BATCH, names, sinks, &mut sink_failed, &mut summary, analyzer);
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                // A bounded batch: under a flood the ring refills as fast as it is read, and
                // signals, ticks and the link watcher must still get their turn.
                let more = drain(guard.get_inner_mut(), DRAIN_BATCH, names, sinks, &mut sink_failed, &mut summary, analyzer);
                if more {
                    // Hand the thread back to the runtime: it polls its drivers (signals,
                    // timers, sockets) only when the loop yields, which a full ring never does.
                    drop(guard);
                    tokio::task::yield_now().await;
                } else {
                    guard.clear_ready();
                }
            }
        }
    }
    // Whatever the kernel queued before we stopped still belongs to the run: at most a ring's
    // worth, decoded for a moment and then counted as lost, so that a flood that goes on
    // cannot hold the stop (Ctrl-C answers within a second).
    let ring_events = (args.ringbuf_kib as usize * 1024) / std::mem::size_of::<Event>() + 1;
    let stop_deadline = Instant::now() + STOP_DRAIN_TIME;
    let mut left = ring_events;
    while left > 0 && Instant::now() < stop_deadline {
        let batch = left.min(256);
        left -= batch;
        if !drain(
            ring.get_mut(),
            batch,
            names,
            sinks,
            &mut sink_failed,
            &mut summary,
            analyzer,
        ) {
            left = 0;
        }
    }
    discard_as_lost(
        ring.get_mut(),
        left,
        sinks,
        &mut sink_failed,
        &mut summary,
        analyzer,
    );
    report_lost(
        &lost,
        &mut lost_seen,
        sinks,
        &mut sink_failed,
        &mut summary,
        analyzer,
    );
    summary.duration_s = started.elapsed().as_secs_f64();
    // The answer: what the evidence of the whole run says.
    let now = time::clock_offset_ns() + monotonic_ns();
    for v in analyzer.verdicts(now, Some(summary.duration_s)) {
        emit_verdict(&v, sinks, &mut sink_failed);
    }
    Ok(summary)
}

fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Events read from the ring before the event loop looks at its other sources again.
const DRAIN_BATCH: usize = 256;
/// How long a stop keeps decoding what is still queued before counting the rest as lost.
const STOP_DRAIN_TIME: Duration = Duration::from_millis(100);
/// How often the ring is read without being woken: the kernel programs wake the reader only
/// once a batch is waiting (`tracer-ebpf/src/emit.rs`, `WAKEUP_EVENTS`), so a lone event waits
/// at most this long. Each poll is a timer wake-up of the daemon (~90 µs of CPU on this VM
/// kind): at 10 ms the idle daemon used ~0.9% of a core, at 100 ms ~0.1%.
const RING_POLL: Duration = Duration::from_millis(100);

/// Read up to `limit` queued events without decoding them and report them as `lost`, per
/// hook: unread at the stop is lost, and lost is counted, never silent.
fn discard_as_lost(
    ring: &mut RingBuf<MapData>,
    limit: usize,
    sinks: &mut [Box<dyn Sink>],
    failed: &mut [bool],
    summary: &mut Summary,
    analyzer: &mut Analyzer,
) {
    let mut per_hook = [0u64; HOOK_COUNT as usize];
    for _ in 0..limit {
        let Some(item) = ring.next() else { break };
        if item.len() >= std::mem::size_of::<Event>() {
            // SAFETY: as in `drain`.
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            if let Some(n) = per_hook.get_mut(ev.hook as usize) {
                *n += 1;
            }
        }
    }
    let ts = time::clock_offset_ns() + monotonic_ns();
    for (hook, n) in per_hook.iter().enumerate() {
        if *n > 0 {
            let hook_name = Hook::from_u8(hook as u8).map_or("unknown", Hook::name);
            let mut rec = Record::new(Kind::Lost, hook_name, ts);
            rec.lost = Some(*n);
            deliver(&rec, sinks, failed, summary, analyzer);
        }
    }
}

/// Read at most `limit` events; whether there may be more.
fn drain(
    ring: &mut RingBuf<MapData>,
    limit: usize,
    names: &Names,
    sinks: &mut [Box<dyn Sink>],
    failed: &mut [bool],
    summary: &mut Summary,
    analyzer: &mut Analyzer,
) -> bool {
    for _ in 0..limit {
        let Some(item) = ring.next() else {
            return false;
        };
        if item.len() < std::mem::size_of::<Event>() {
            continue;
        }
        // SAFETY: the kernel programs write whole `Event`s; read unaligned to be safe.
        let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
        drop(item);
        if let Some(rec) = hooks::decode(&ev, names) {
            deliver(&rec, sinks, failed, summary, analyzer);
        }
    }
    true
}

fn deliver(
    rec: &Record,
    sinks: &mut [Box<dyn Sink>],
    failed: &mut [bool],
    summary: &mut Summary,
    analyzer: &mut Analyzer,
) {
    summary.add(rec);
    analyzer.observe_record(rec);
    if let Some(n) = summary.unattributed.as_mut() {
        if rec.src.is_some() && !rec.has_names() {
            *n += 1;
        }
    }
    for (i, sink) in sinks.iter_mut().enumerate() {
        if failed[i] {
            continue;
        }
        if let Err(e) = sink.emit(rec) {
            sink_error(i, &e, failed);
        }
    }
}

fn emit_verdict(v: &Verdict, sinks: &mut [Box<dyn Sink>], failed: &mut [bool]) {
    for (i, sink) in sinks.iter_mut().enumerate() {
        if failed[i] {
            continue;
        }
        if let Err(e) = sink.verdict(v) {
            sink_error(i, &e, failed);
        }
    }
}

/// A sink that fails (disk full, closed pipe) is reported once and skipped; tracing goes on
/// into the others.
fn sink_error(i: usize, e: &anyhow::Error, failed: &mut [bool]) {
    if !failed[i] {
        eprintln!("tracer: output failed, continuing without it: {e:#}");
        failed[i] = true;
    }
}

/// Turn growth of the per-CPU lost counters into `lost` events, one per hook that lost some.
fn report_lost(
    lost: &PerCpuArray<MapData, u64>,
    seen: &mut [u64; HOOK_COUNT as usize],
    sinks: &mut [Box<dyn Sink>],
    failed: &mut [bool],
    summary: &mut Summary,
    analyzer: &mut Analyzer,
) {
    for hook in 0..HOOK_COUNT {
        let Ok(values) = lost.get(&hook, 0) else {
            continue;
        };
        let total: u64 = values.iter().sum();
        let delta = total.saturating_sub(seen[hook as usize]);
        if delta == 0 {
            continue;
        }
        seen[hook as usize] = total;
        let ts = time::clock_offset_ns() + monotonic_ns();
        let hook_name = Hook::from_u8(hook as u8).map_or("unknown", Hook::name);
        let mut rec = Record::new(Kind::Lost, hook_name, ts);
        rec.lost = Some(delta);
        deliver(&rec, sinks, failed, summary, analyzer);
    }
}
