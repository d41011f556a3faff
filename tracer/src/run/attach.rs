//! The attach-all step: the kernel's facts resolved (BTF offsets, tracepoint layouts, drop
//! reasons, size-drop sites), the programs loaded with them, and every hook attached, each
//! attempt reported whether it worked or not.
use std::collections::HashMap;

use anyhow::{Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    Ebpf, EbpfLoader,
};
use tracer_common::{names, Config, VethOffsets, MAX_SIZE_DROP_SITES};

use super::plan::Plan;
use crate::{
    hooks::{self, tc::LegacyTc, Attempt, HookedDevice, Names, Outcome},
    kernel::{btf, kallsyms::Kallsyms, tracefs},
    time,
};

/// Everything resolved before loading: printed in the start-up block.
pub struct KernelFacts {
    pub release: String,
    pub config: Config,
    pub names: Names,
    pub notes: Vec<String>,
}

impl KernelFacts {
    /// `all_drops`: `--all-drops`, which the kernel programs read from their config.
    pub fn read(all_drops: bool) -> Result<KernelFacts> {
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
        // Without it (kernels before 5.17) every drop is judged on the packet.
        if let Some(v) = reasons.value("NOT_SPECIFIED") {
            config.reason_not_specified = v;
        }
        config.all_drops = all_drops as u32;
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
        config.pmtu6 = hooks::pmtu6::offsets(&btf);
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
                interned: Default::default(),
                // Set by the run once it knows whether a pcapng sink is on.
                keep_packets: false,
            },
            notes,
        })
    }
}

/// Where the veth peer pointer lives on this kernel (see `VethOffsets`).
fn veth_offsets(btf: &btf::Btf<'static>, kallsyms: &Kallsyms) -> VethOffsets {
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
fn veth_module_peer(vmlinux: &btf::Btf<'static>) -> Option<u32> {
    let module =
        btf::Btf::from_split_file(std::path::Path::new("/sys/kernel/btf/veth"), vmlinux).ok()?;
    btf::field_offset(&module, "veth_priv", "peer")
        .ok()
        .flatten()
}

/// The loaded programs with their hooks attached.
pub struct Attached {
    // Before `ebpf`, so dropped first, also on an early return: netlink tc filters go before
    // their programs.
    pub legacy_tc: LegacyTc,
    pub ebpf: Ebpf,
    /// Every attempt, attached or not, for the start-up block and the metrics.
    pub report: Vec<Attempt>,
    /// The addresses of the devices the ingress hook is on (the start line's `addresses`).
    pub addresses: Vec<std::net::IpAddr>,
}

impl Attached {
    /// Whether the drop hook, without which there is nothing to trace, is attached.
    pub fn drops_attached(&self) -> bool {
        self.report
            .iter()
            .any(|a| a.concern == "drops" && a.outcome == Outcome::Attached)
    }

    /// The ring buffer of events and the per-hook counters of events it had no room for.
    pub fn take_ring(&mut self) -> Result<(RingBuf<MapData>, PerCpuArray<MapData, u64>)> {
        let ring = RingBuf::try_from(
            self.ebpf
                .take_map(names::EVENTS)
                .context("EVENTS map missing")?,
        )?;
        let lost = PerCpuArray::try_from(
            self.ebpf
                .take_map(names::LOST)
                .context("LOST map missing")?,
        )?;
        Ok((ring, lost))
    }

    /// The drop program's burst slots and its off switch ([`super::fold::KernelFolds`]).
    pub fn take_folds(&mut self) -> Result<super::fold::KernelFolds> {
        let slots = PerCpuArray::try_from(
            self.ebpf
                .take_map(names::FOLDS)
                .context("FOLDS map missing")?,
        )?;
        let off = aya::maps::Array::try_from(
            self.ebpf
                .take_map(names::FOLD_OFF)
                .context("FOLD_OFF map missing")?,
        )?;
        Ok(super::fold::KernelFolds::new(slots, off))
    }
}

/// Load the programs configured with `facts` and the plan, and attach every hook. A hook that
/// fails is an attempt in the report, not an error; the devices hooked go into `facts.names`
/// for naming tc events.
pub fn attach_all(
    object: &[u8],
    ringbuf_kib: u32,
    kernel_log: u8,
    plan: &Plan,
    facts: &mut KernelFacts,
) -> Result<Attached> {
    if plan.namespaces.named {
        facts.config.filter_netns = 1;
    }
    facts.config.wakeup_events = tracer_common::wakeup_batch(u64::from(ringbuf_kib) * 1024);
    for (slot, sel) in plan.devices.iter().enumerate() {
        facts.config.tc_netns[slot] = sel.netns.inode;
    }
    let loader = Loader {
        object,
        ringbuf_kib,
        kernel_log,
        plan,
    };
    let mut ebpf = loader.load(&facts.config)?;
    let (mut report, aya_btf) = attach_drops(&loader, &mut ebpf, facts, aya_btf()?)?;
    report.extend(hooks::icmp::attach(&mut ebpf));
    let mut legacy_tc = LegacyTc::default();
    let mut hooked: Vec<HookedDevice> = Vec::new();
    report.extend(hooks::transmit::attach(
        &mut ebpf,
        &plan.devices,
        &mut hooked,
        &mut legacy_tc,
    ));
    let mut received_on = Vec::new();
    report.extend(hooks::ingress::attach(
        &mut ebpf,
        &plan.devices,
        &mut received_on,
        &mut legacy_tc,
    ));
    let addresses = own_addresses(plan, &received_on);
    hooked.extend(received_on);
    report.extend(hooks::tcp::attach(&mut ebpf));
    report.extend(hooks::pmtu::attach(&mut ebpf, &aya_btf, &facts.config.pmtu));
    report.extend(hooks::pmtu6::attach(
        &mut ebpf,
        &aya_btf,
        &facts.config.pmtu6,
    ));
    // Attached: the run never needs it again.
    drop(aya_btf);
    release_freed_heap();
    hooks::log_verifier_costs(&ebpf);
    for dev in hooked {
        facts
            .names
            .devices
            .insert((dev.netns, dev.iface.ifindex), dev);
    }
    Ok(Attached {
        legacy_tc,
        ebpf,
        report,
        addresses,
    })
}

/// The addresses of the devices the ingress hook is attached to (the node's own underlay
/// addresses: where its peers send to), each read in its namespace; a namespace whose
/// addresses cannot be read adds none (said on stderr).
fn own_addresses(plan: &Plan, received_on: &[HookedDevice]) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for ns in plan.watched() {
        let ifindexes: Vec<u32> = received_on
            .iter()
            .filter(|d| d.netns == ns.inode)
            .map(|d| d.iface.ifindex)
            .collect();
        if ifindexes.is_empty() {
            continue;
        }
        let read = crate::netlink::addr::addresses;
        let found = if plan.namespaces.named {
            ns.enter(read)
        } else {
            read()
        };
        match found {
            Ok(all) => out.extend(
                all.into_iter()
                    .filter(|(i, _)| ifindexes.contains(i))
                    .map(|(_, a)| a),
            ),
            Err(e) => eprintln!("tracer: addresses of {}: {e:#}", ns.label),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// How the kernel object is loaded; once, or twice when the verifier refuses the first.
struct Loader<'a> {
    object: &'a [u8],
    ringbuf_kib: u32,
    /// `AYA_LOG_LEVEL` (`--kernel-log`): 0 leaves no log statement for the verifier to walk.
    kernel_log: u8,
    plan: &'a Plan,
}

impl Loader<'_> {
    /// The loader reads the kernel's BTF itself (aya 0.14's `EbpfLoader::new`) and lets it go
    /// when it returns.
    fn load(&self, config: &Config) -> Result<Ebpf> {
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, config, true)
            .override_global(aya_log::LEVEL, &self.kernel_log, true)
            .map_max_entries(names::EVENTS, self.ringbuf_kib * 1024)
            .load(self.object)
            .context("loading the kernel programs")?;
        if self.plan.namespaces.named {
            let mut filter: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
                ebpf.map_mut(names::NETNS_FILTER)
                    .context("NETNS_FILTER map missing")?,
            )?;
            for ns in self.plan.watched() {
                filter.insert(ns.inode, 1, 0)?;
            }
        }
        Ok(ebpf)
    }
}

/// Attach the drop hook, reloading without the veth-peer path when the verifier refuses it.
/// Takes and gives back the BTF the programs attach with, so that it is not alive while a reload
/// reads its own (see [`aya_btf`]).
fn attach_drops(
    loader: &Loader,
    ebpf: &mut Ebpf,
    facts: &mut KernelFacts,
    btf: aya::Btf,
) -> Result<(Vec<Attempt>, aya::Btf)> {
    let drops = hooks::drops::attach(ebpf, &btf);
    let attached = |r: &[Attempt]| r.iter().any(|a| a.outcome == Outcome::Attached);
    if attached(&drops) || facts.config.veth.xmit_addr == 0 {
        return Ok((drops, btf));
    }
    // Older verifiers (6.1) give up on the drop program once its veth-peer path is enabled
    // ("program is too large"): load it again without that path rather than trace nothing.
    let mut config = facts.config;
    config.veth = VethOffsets::unresolved();
    drop(btf);
    *ebpf = loader.load(&config)?;
    let btf = aya_btf()?;
    let retry = hooks::drops::attach(ebpf, &btf);
    if !attached(&retry) {
        return Ok((drops, btf));
    }
    facts.config = config;
    facts.notes.push(
        "veth peers unknown: this kernel's verifier refused the drop program's veth-peer \
         path; veth drops show the sending end's MTU"
            .into(),
    );
    Ok((retry, btf))
}

/// aya's parse of the kernel's BTF, which names the tp_btf and fentry targets to the kernel
/// (`BtfTracePoint::load`, `FEntry::load` want it). ~12 MiB, so parsed only once the programs
/// are loaded: `EbpfLoader::new` parses its own copy, and the two alive together were the
/// daemon's memory peak (issue 18). The tracer's own reading (`KernelFacts::read`) is gone too.
fn aya_btf() -> Result<aya::Btf> {
    aya::Btf::from_sys_fs().context("aya could not read /sys/kernel/btf/vmlinux")
}

/// Gives the pages of freed heap back to the kernel. The BTF parses leave ~20 MiB of free heap
/// pinned below what loading the programs allocated after them; glibc returns only the top of
/// its heap by itself, so without this the run kept them resident (issue 18).
fn release_freed_heap() {
    // SAFETY: malloc_trim only walks glibc's own free lists; no pointer is handed over.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
