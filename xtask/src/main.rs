//! `cargo xtask setup|build|test|demo|lab`: the project's tasks in one place.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xtask::incident::{self, Incident, IncidentOptions, OuterDf, Overlay, Path as LabPath};
use xtask::setup::{run_streamed, setup};

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
    /// Setup, then `cargo build --release -p tracer`.
    Build,
    /// Setup, then fmt, clippy and the whole test suite (serially: tests share tracepoints).
    Test,
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
    /// The incident lab for manual use: namespaces lab-old, lab-new, lab-rtr (--path router),
    /// lab-cli (client pod), lab-srv (server pod with redis-server and an HTTP endpoint).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
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
        Cmd::Test => {
            setup()?;
            test()
        }
        Cmd::Demo { log, no_build } => {
            if !no_build {
                setup()?;
                build()?;
            }
            xtask::demo::run(&target_dir().join("release/tracer"), &log)
        }
        Cmd::Lab { action } => lab_cmd(action),
    }
}

/// The workspace root: xtask's parent directory.
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn cargo(args: &[&str]) -> Result<()> {
    run_streamed(Command::new("cargo").args(args).current_dir(root()))
}

fn build() -> Result<()> {
    cargo(&["build", "--release", "-p", "tracer"])
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
    // One closing line for the whole suite (cargo prints one per test binary).
    println!("tests: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    Ok(())
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

/// `test result: ok. 87 passed; 0 failed; 0 ignored; ...` → (87, 0).
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
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
    use super::parse_test_result;

    #[test]
    fn test_result_lines_are_counted() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 87 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 7.81s"
            ),
            Some((87, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured"),
            Some((4, 1))
        );
        assert_eq!(parse_test_result("running 5 tests"), None);
    }
}
