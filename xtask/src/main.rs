//! `cargo xtask setup|build|test|demo|lab`: the project's tasks in one place.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xtask::incident::{self, Incident, IncidentOptions, OuterDf, Overlay, Path as LabPath};
use xtask::parse_test_result;
use xtask::setup::{run_streamed, setup};
use xtask::{vm, vm_scenario};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Project tasks for the tracer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine needs (apt packages, rust-src, bpf-linker, tracefs).
    Setup,
    /// Setup, then `cargo build --release -p tracer`, and its man pages and shell completions
    /// next to it (target/release/man, target/release/completions).
    Build,
    /// Setup, then fmt, clippy and the whole test suite (serially: tests share tracepoints),
    /// then the kernel matrix (`vm --release` on debian-6.1 and debian-6.12).
    Test {
        /// Skip the kernel matrix (quick local runs; CI runs it).
        #[arg(long)]
        no_vm: bool,
    },
    /// Build, bring up the incident lab misconfigured, trace it while the clients run (small
    /// requests pass, large ones time out), apply the fix, run them again.
    Demo {
        /// Where the tracer writes its JSON-lines event log.
        #[arg(long, default_value = "tracer-demo-events.jsonl")]
        log: PathBuf,
        /// Use the tracer binary already built (skip setup and build).
        #[arg(long)]
        no_build: bool,
    },
    /// Build, then measure loss at a 200,000/s burst, the pipeline (criterion), start-up, peak
    /// memory and the datapath overhead (iperf3 through the lab's overlay, tracer attached vs
    /// not); print the ratios to issue 7's targets.
    Bench {
        /// Seconds, not minutes: fail only on a gross regression (run by `cargo xtask test`).
        #[arg(long)]
        smoke: bool,
        /// Run only this step (repeatable); all of them by default.
        #[arg(long = "step", value_enum)]
        steps: Vec<xtask::bench::Step>,
        /// Datapath and unrelated: rounds of A N E F F E N A (A without the tracer, N with it on
        /// the nodes, E on every lab namespace, F N's hooks with empty programs) and of A D O X E
        /// F G G F E X O D A.
        #[arg(long, default_value_t = 4)]
        rounds: u32,
        /// Datapath: seconds of each iperf3 run (TCP, then UDP).
        #[arg(long, default_value_t = 5)]
        secs: u32,
        /// Datapath: one more argument for `tracer run` in the attached runs (repeatable), e.g.
        /// `--tracer-arg=--iface --tracer-arg=lo` to attribute the cost.
        #[arg(long = "tracer-arg", allow_hyphen_values = true)]
        tracer_args: Vec<String>,
    },
    /// The incident lab for manual use: namespaces lab-old, lab-new, lab-rtr (--path router),
    /// lab-cli (client pod), lab-srv (server pod with redis-server and an HTTP endpoint).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Run the tracer's integration tests on other kernels: Debian kernel packages (downloaded
    /// with apt-get, unpacked, never installed) booted under qemu (TCG) with this machine's root
    /// mounted read-only. Prints per kernel the hooks the tracer attached and the test results.
    Vm(VmArgs),
    /// Inside a `cargo xtask vm` VM: run one scenario against the tracer and assert its outcome.
    #[command(hide = true)]
    VmGuest {
        #[arg(value_enum)]
        scenario: vm_scenario::Scenario,
        /// The tracer binary to run.
        #[arg(long)]
        tracer: PathBuf,
    },
}

#[derive(clap::Args)]
struct VmArgs {
    /// Kernels to boot, one VM each (repeat the option). Default: debian-6.1 and debian-6.12.
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<vm::KernelChoice>,
    /// The integration-test targets of `tracer` to run (tracer/tests/NAME.rs), comma-separated
    /// (`none` for none).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "trace,incident,cli,check"
    )]
    tests: Vec<String>,
    /// Scenarios asserted inside the VM after the tests (`none` for none), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "ipip-tunl0")]
    scenarios: Vec<String>,
    /// Build the tests and the tracer with `--release` (TCG runs user space 10-20 times slower
    /// than the host; the optimised tracer starts within the tests' time limits).
    #[arg(long)]
    release: bool,
    /// Give up on a VM after this many seconds (TCG is slow: one lab scenario takes about a minute).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Memory of each VM, MiB.
    #[arg(long, default_value_t = 3072)]
    memory: u32,
    /// Skip `cargo xtask setup` (the test binaries are still brought up to date).
    #[arg(long)]
    no_setup: bool,
    /// Passed to every test binary (test name filters, `--exact`...).
    #[arg(last = true)]
    test_args: Vec<String>,
}

impl VmArgs {
    /// What `cargo xtask test` runs in the VMs: both kernels, every integration-test target
    /// the matrix supports, the VM-only scenarios, in release (TCG is slow).
    fn for_ci() -> VmArgs {
        VmArgs {
            kernels: Vec::new(),
            tests: vm::CI_TESTS.iter().map(|t| t.to_string()).collect(),
            scenarios: vec!["ipip-tunl0".into()],
            release: true,
            timeout: 1800,
            memory: 3072,
            no_setup: true,
            test_args: Vec::new(),
        }
    }
}

#[derive(Subcommand)]
enum LabAction {
    /// Build it (replacing an existing one), start its servers and leave it running.
    Up(LabUpArgs),
    /// Delete it and kill its servers.
    Down,
    /// Show what it is, whether its servers listen, and its namespaces' links and routes.
    Status,
    /// Run the incident's four clients in the client pod against the ClusterIP.
    Clients {
        /// Give up on each client after this many seconds.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Apply the fix: set both pods' MTU and flush the route caches.
    Fix {
        /// The pods' new MTU (1400 = the new nodes' 1450 − 50 bytes of VXLAN).
        #[arg(long, default_value_t = incident::FIX_POD_MTU)]
        pod_mtu: u32,
    },
}

#[derive(clap::Args)]
struct LabUpArgs {
    /// How the nodes are joined: one L2 link (1500/1450) or a router (1500 | 1450).
    #[arg(long, value_enum, default_value_t = LabPath::L2)]
    path: LabPath,
    /// The CNI's encapsulation between the nodes.
    #[arg(long, value_enum, default_value_t = Overlay::Vxlan)]
    overlay: Overlay,
    /// VXLAN's outer DF bit.
    #[arg(long, value_enum, default_value_t = OuterDf::Unset)]
    outer_df: OuterDf,
    /// Drop ICMP frag-needed (router output, old node input): the classic PMTUD black hole.
    #[arg(long)]
    filter_icmp: bool,
    /// Dual-stack pods (IPv6 over the same VXLAN and IPv4 underlay, an IPv6 ClusterIP): the
    /// clients talk IPv6.
    #[arg(long)]
    ipv6: bool,
    /// The nodes talk IPv6 on the underlay: VXLAN over IPv6 (70 B of overhead, not 50).
    #[arg(long)]
    ipv6_underlay: bool,
    /// The pods' MTU (1500: the incident's misconfiguration; 1400: the fix).
    #[arg(long, default_value_t = 1500)]
    pod_mtu: u32,
    /// The overlay device's MTU on both nodes (1500: configured for the old subnet; 1450: sized
    /// for the old node's own uplink, as auto-detection would, which behind a router shows the
    /// router's PMTU black hole).
    #[arg(long, default_value_t = 1500)]
    tunnel_mtu: u32,
}

/// Fixed prefix of `cargo xtask lab`.
const MANUAL_LAB: &str = "lab";

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Build => {
            setup()?;
            build()
        }
        Cmd::Test { no_vm } => {
            setup()?;
            test()?;
            if no_vm {
                println!("kernel matrix skipped (--no-vm)");
                return Ok(());
            }
            vm_cmd(VmArgs::for_ci())
        }
        Cmd::Demo { log, no_build } => {
            if !no_build {
                setup()?;
                build()?;
            }
            xtask::demo::run(&target_dir().join("release/tracer"), &log)
        }
        Cmd::Bench {
            smoke,
            steps,
            rounds,
            secs,
            tracer_args,
        } => {
            setup()?;
            build()?;
            let tracer = target_dir().join("release/tracer");
            if smoke {
                xtask::bench::smoke(&root(), &target_dir(), &tracer)
            } else {
                let plan = xtask::bench::datapath::Plan {
                    rounds,
                    secs,
                    tracer_args: &tracer_args,
                };
                xtask::bench::run(&root(), &target_dir(), &tracer, &steps, plan)
            }
        }
        Cmd::Lab { action } => lab_cmd(action),
        Cmd::Vm(args) => vm_cmd(args),
        Cmd::VmGuest { scenario, tracer } => vm_scenario::run(scenario, &tracer),
    }
}

/// `cargo test -p tracer --tests --no-run`: the integration-test executables by target name.
fn build_test_binaries(names: &[String], release: bool) -> Result<Vec<(String, PathBuf)>> {
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    let shown = format!(
        "cargo test -p tracer --tests --no-run{}",
        if release { " --release" } else { "" }
    );
    println!("vm: {shown}");
    let out = Command::new("cargo")
        .args(["test", "-p", "tracer", "--tests", "--no-run"])
        .args(profile)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    let mut chosen = Vec::new();
    for want in names.iter().filter(|n| n.as_str() != "none") {
        match found.iter().find(|(n, _)| n == want) {
            Some(f) => chosen.push(f.clone()),
            None => bail!(
                "no integration test target {want:?} in tracer (have: {})",
                found
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(chosen)
}

fn vm_cmd(args: VmArgs) -> Result<()> {
    let mut kernels = args.kernels.clone();
    if kernels.is_empty() {
        kernels = vec![vm::KernelChoice::Debian61, vm::KernelChoice::Debian612];
    }
    let mut seen = Vec::new();
    kernels.retain(|k| {
        let new = !seen.contains(k);
        seen.push(*k);
        new
    });
    if !args.no_setup {
        setup()?;
    }
    let tests = build_test_binaries(&args.tests, args.release)?;
    let scenarios = args
        .scenarios
        .iter()
        .filter(|s| s.as_str() != "none")
        .map(|s| {
            <vm_scenario::Scenario as clap::ValueEnum>::from_str(s, false)
                .map_err(|_| anyhow::anyhow!("unknown scenario {s:?} (known: ipip-tunl0, none)"))
        })
        .collect::<Result<Vec<_>>>()?;
    let tracer = target_dir().join(if args.release {
        "release/tracer"
    } else {
        "debug/tracer"
    });
    if !tracer.is_file() {
        bail!("{} is missing after the test build", tracer.display());
    }
    let tracer_dir = root().join("tracer");
    // The start-up report, with veth loaded as on a Kubernetes node (the drop program reads veth
    // peers only when the module is there), and what each program cost the verifier.
    let mut steps = vec![vm::Step {
        name: "hooks".into(),
        cwd: tracer_dir.clone(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "ip link add xtvm-veth0 type veth peer name xtvm-veth1 && ip link del xtvm-veth0; \
                 RUST_LOG=tracer=debug exec {} run --duration 1",
                tracer.display()
            ),
        ],
    }];
    for (name, exe) in &tests {
        let mut argv = vec![exe.display().to_string(), "--test-threads=1".into()];
        argv.extend(args.test_args.iter().cloned());
        steps.push(vm::Step {
            name: name.clone(),
            cwd: tracer_dir.clone(),
            argv,
        });
    }
    let xtask_exe = running_exe()?;
    for sc in scenarios {
        steps.push(vm::Step {
            name: sc.name().into(),
            cwd: root(),
            argv: vec![
                xtask_exe.display().to_string(),
                "vm-guest".into(),
                sc.name().into(),
                "--tracer".into(),
                tracer.display().to_string(),
            ],
        });
    }
    let cache = vm::cache_dir(&target_dir());
    let cfg = vm::VmConfig {
        memory_mib: args.memory,
        cpus: 2,
        timeout: Duration::from_secs(args.timeout),
    };
    let mut reports = Vec::new();
    let mut ok = true;
    for choice in kernels {
        let result = vm::prepare(choice, &cache).and_then(|kernel| {
            let initrd = vm::initramfs(&kernel, &cache)?;
            let run_dir = cache.join("runs").join(choice.name());
            vm::boot(&kernel, &initrd, &run_dir, &steps, &cfg)
        });
        match result {
            Ok(outcome) => {
                ok &= outcome.ok();
                reports.push(outcome.report());
            }
            Err(e) => {
                ok = false;
                reports.push(format!("{}: FAILED: {e:#}\n", choice.name()));
            }
        }
    }
    println!();
    println!("vm: kernel matrix");
    for r in &reports {
        print!("{r}");
    }
    if !ok {
        bail!("the kernel matrix failed");
    }
    Ok(())
}

/// The workspace root: xtask's parent directory.
/// This xtask's executable as a path the VM can run. `cargo test --workspace` rebuilds it at the
/// same path while `cargo xtask test` runs, and Linux then names the running one "… (deleted)":
/// the rebuilt file, from the same sources, is the one to run.
fn running_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the xtask executable")?;
    let name = exe.to_string_lossy();
    Ok(match name.strip_suffix(" (deleted)") {
        Some(rebuilt) if Path::new(rebuilt).exists() => PathBuf::from(rebuilt),
        _ => exe,
    })
}

fn root() -> PathBuf {
    // `cargo run` (the `cargo xtask` alias) sets it for this checkout; the compiled-in path is
    // the one of the checkout that built this binary, which cargo may reuse for another
    // checkout sharing the target directory (git worktrees).
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map_or_else(|| manifest.clone(), Path::to_path_buf)
}

fn cargo(args: &[&str]) -> Result<()> {
    run_streamed(Command::new("cargo").args(args).current_dir(root()))
}

fn build() -> Result<()> {
    cargo(&["build", "--release", "-p", "tracer"])?;
    docs_for_shells()
}

/// Next to the release binary: its man pages (`man/tracer.1`, `man/tracer-run.1`, …) and its
/// shell completions (`completions/tracer.bash`, `_tracer`, `tracer.fish`), generated by the
/// binary itself from its command definition (clap_mangen, clap_complete).
fn docs_for_shells() -> Result<()> {
    let release = target_dir().join("release");
    let tracer = release.join("tracer");
    let man = release.join("man");
    let status = std::process::Command::new(&tracer)
        .arg("manpages")
        .arg(&man)
        .status()
        .context("running the tracer to write its man pages")?;
    if !status.success() {
        bail!("tracer manpages {}: {status}", man.display());
    }
    let completions = release.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "tracer.bash"),
        ("zsh", "_tracer"),
        ("fish", "tracer.fish"),
    ] {
        let out = std::process::Command::new(&tracer)
            .args(["completion", shell])
            .output()
            .context("running the tracer for its completions")?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("tracer completion {shell}: {}", out.status);
        }
        std::fs::write(completions.join(file), &out.stdout)?;
    }
    Ok(())
}

fn test() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    // At the workspace root, clippy covers the default members (not tracer-ebpf, a BPF crate).
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    let (passed, failed) = cargo_test_counted(&[
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--",
        "--test-threads=1",
    ])?;
    // The benchmarks' smoke run: a collapse of the pipeline or a lost event fails too.
    let smoke = if failed == 0 {
        build().and_then(|()| {
            xtask::bench::smoke(&root(), &target_dir(), &target_dir().join("release/tracer"))
        })
    } else {
        Ok(())
    };
    // One closing line for the whole suite (cargo prints one per test binary).
    println!("tests: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    smoke.context("cargo xtask bench --smoke")
}

/// Run `cargo test`, echoing its stdout, and add up its `test result:` lines.
fn cargo_test_counted(args: &[&str]) -> Result<(u64, u64)> {
    let mut child = Command::new("cargo")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

fn lab_cmd(action: LabAction) -> Result<()> {
    match action {
        LabAction::Up(args) => {
            let t = Instant::now();
            let inc = Incident::up(IncidentOptions {
                prefix: MANUAL_LAB.into(),
                path: args.path,
                overlay: args.overlay,
                outer_df: args.outer_df,
                filter_icmp: args.filter_icmp,
                pod_mtu: args.pod_mtu,
                tunnel_mtu: args.tunnel_mtu,
                ipv6: args.ipv6,
                ipv6_underlay: args.ipv6_underlay,
                ..IncidentOptions::default()
            })?;
            println!("lab up in {:.1} s:", t.elapsed().as_secs_f64());
            print!("{}", inc.describe()?);
            println!("clients:   cargo xtask lab clients   (fix: cargo xtask lab fix)");
            inc.keep();
            Ok(())
        }
        LabAction::Down => {
            let removed = incident::down(MANUAL_LAB)?;
            if removed.is_empty() {
                println!("lab: nothing to remove");
            } else {
                println!("lab: removed {}", removed.join(" "));
            }
            Ok(())
        }
        LabAction::Status => {
            print!("{}", incident::status(MANUAL_LAB)?);
            Ok(())
        }
        LabAction::Clients { timeout } => {
            let timeout = Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero())
                .with_context(|| {
                    format!("--timeout {timeout}: expected a positive number of seconds")
                })?;
            let inc = Incident::attach(MANUAL_LAB)?;
            for r in inc.run_clients(timeout)? {
                println!("{r}");
            }
            Ok(())
        }
        LabAction::Fix { pod_mtu } => {
            let inc = Incident::attach(MANUAL_LAB)?;
            inc.apply_fix(pod_mtu)?;
            println!("lab: pod MTU set to {pod_mtu} on both pods, route caches flushed");
            print!("{}", inc.describe()?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::Parser;
    use std::path::Path;
    use xtask::docs::{doc_commands, doc_files};

    /// How many `cargo xtask` invocations the README and docs/ held when this test was written.
    const AT_LEAST: usize = 12;

    /// Every `cargo xtask …` command the README and `docs/*.md` show parses (issue 19); the
    /// rules for what counts as a command are in `xtask/src/docs.rs`.
    #[test]
    fn every_xtask_command_in_the_docs_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let commands = doc_commands(&doc_files(&root), &["cargo", "xtask"]);
        let failures: Vec<String> = commands
            .iter()
            .filter_map(|c| {
                let argv = std::iter::once("cargo xtask".to_string()).chain(c.args.iter().cloned());
                Cli::try_parse_from(argv).err().map(|e| {
                    format!(
                        "{}:{}: `{}`:\n{}",
                        c.file.display(),
                        c.line,
                        c.text,
                        e.render()
                    )
                })
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(
            commands.len() >= AT_LEAST,
            "found {} cargo xtask commands in README.md and docs/, expected at least {AT_LEAST}: {commands:#?}",
            commands.len()
        );
    }
}
