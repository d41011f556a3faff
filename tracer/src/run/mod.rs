//! `tracer run`: resolve the kernel's facts and the command line, load and attach the
//! programs, stream events to the outputs until Ctrl-C / SIGTERM / `--duration`, then detach,
//! flush and summarise. Each step is its own file; this one reads them in order.
use anyhow::{bail, Context as _, Result};

use crate::{cli::RunArgs, hooks::devices::DeviceWatcher, time, verdict::Analyzer};

mod arrivals;
mod attach;
mod event_loop;
mod fanout;
pub mod fold;
mod names;
mod outputs;
pub mod plan;
mod prober;
mod ring;
mod startup;

use attach::KernelFacts;
use event_loop::{event_loop, Inputs, Stop};
use fanout::Fanout;
use outputs::Outputs;
use plan::Plan;
use ring::LostCounters;
use startup::{Startup, StaticAudit};

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

pub fn run(args: RunArgs, object: &[u8]) -> Result<()> {
    check_privileges()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let stop = {
        let _context = runtime.enter();
        Stop::listen()?
    };
    let mut facts = KernelFacts::read(args.all_drops)?;
    let plan = Plan::resolve(&args)?;
    plan.stamp_records();
    // Before attaching anything: a bad path or a taken port must fail before tracing starts.
    let outputs = Outputs::open(&args, &plan)?;
    facts.config.count_arrivals = (args.arrivals_interval > 0) as u32;
    facts.config.fold_drops = (!args.no_fold) as u32;
    facts.config.empty_programs = args.bench_empty_programs as u32;
    let mut attached = attach::attach_all(
        object,
        args.ringbuf_kib,
        args.kernel_log.mask(),
        &plan,
        &mut facts,
    )?;
    // After attaching: loading the programs reads the kernel's BTF twice in turn (aya, ~27 MiB
    // while it parses), the daemon's memory peak; a 10,000-pod snapshot is not alive then.
    let (name_sources, names_lines) = names::prepare(&args, &plan, &mut facts.names);
    facts.names.keep_packets = args.pcap.is_some();
    if let Some(h) = &outputs.hook_status {
        h.record(&attached.report);
    }
    let audit = StaticAudit::of(&plan);
    let (ring, lost) = attached.take_ring()?;
    let kernel_folds = attached.take_folds()?;
    let drops_attached = attached.drops_attached();
    // The kernel programs' diagnostics go through `log` to stderr, as the daemon's own do.
    let kernel_log = if args.kernel_log == crate::cli::KernelLog::Off {
        None
    } else {
        Some(aya_log::EbpfLogger::init(&mut attached.ebpf).context("the kernel programs' log")?)
    };
    let arrivals = if args.arrivals_interval > 0 {
        let reader = arrivals::ArrivalsReader::take(
            &mut attached.ebpf,
            facts.config.tc_netns,
            plan.labels(),
        )?;
        Some((
            reader,
            std::time::Duration::from_secs(args.arrivals_interval),
        ))
    } else {
        None
    };
    // Before the capabilities go: the prober's thread keeps what probing needs for itself.
    let prober = if args.no_probe {
        None
    } else {
        Some(prober::Prober::start(
            plan.watched().to_vec(),
            plan.namespaces.named,
        )?)
    };
    // Devices that appear later; then what is no longer needed goes (see privileges.rs).
    let (mut watcher, mut more) = DeviceWatcher::start(
        attached.ebpf,
        attached.legacy_tc,
        &plan.devices,
        &plan.iface_patterns,
    );
    more.insert(0, format!("hooks: {}", watcher.describe()));
    more.push(format!(
        "privileges: {}",
        crate::privileges::drop_after_attach(watcher.enters_other_namespaces())
    ));
    if prober.is_some() {
        more.push(
            "privileges: the prober thread alone keeps CAP_NET_RAW (raw ICMP socket) and \
             CAP_SYS_ADMIN (setns) to measure a path when only timing says packets die beyond \
             this node (--no-probe: never)"
                .to_string(),
        );
    }
    Startup {
        facts: &facts,
        plan: &plan,
        hooks: &attached.report,
        names: &names_lines,
        audit: &audit.startup,
        more: &more,
        log: &outputs.describe,
    }
    .print();
    if !drops_attached {
        bail!("the drop hook could not be attached (see above): nothing to trace");
    }

    let start = startup::start_line(
        &facts,
        &plan,
        &attached.report,
        audit.problems,
        attached.addresses.clone(),
        facts
            .names
            .inventory
            .as_ref()
            .and_then(|i| crate::fix::recognise(&i.cni_objects)),
    );
    let mut fanout = Fanout::new(
        outputs.sinks,
        Analyzer::new(),
        facts.names.inventory.is_some(),
    );
    fanout.start(&start);
    let inputs = Inputs {
        ring,
        ring_kib: args.ringbuf_kib,
        lost: LostCounters::new(lost),
        names: facts.names,
        name_sources,
        stop,
        prober,
        duration_s: args.duration,
        arrivals,
        kernel_log,
        fold_bursts: !args.no_fold,
        kernel_folds,
    };
    runtime.block_on(event_loop(inputs, &mut watcher, &mut fanout))?;
    // Detach before the summary so that "stopped" is true when it is printed.
    drop(watcher);
    let summary = fanout.close();
    eprintln!("summary: {}", summary.line());
    if let Ok(Some(p)) = outputs::log_file(&args) {
        eprintln!("event log: {}", p.display());
    }
    if let Some(p) = &args.pcap {
        eprintln!("packet capture: {}", p.display());
    }
    Ok(())
}

/// The wall clock in Unix ns, as the records carry it.
fn now_unix_ns() -> i128 {
    time::clock_offset_ns() + monotonic_ns()
}

fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}
