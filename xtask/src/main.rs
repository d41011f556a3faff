//! `cargo xtask setup|build|test|demo|lab`: the project's tasks in one place.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xtask::lab::{self, Lab, VxlanMismatch};
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
    /// Build, then trace the VXLAN MTU-mismatch lab while a small and a large upload run.
    Demo {
        /// Where the tracer writes its JSON-lines event log.
        #[arg(long, default_value = "tracer-demo-events.jsonl")]
        log: PathBuf,
        /// Use the tracer binary already built (skip setup and build).
        #[arg(long)]
        no_build: bool,
    },
    /// The vxlan_mismatch scenario for manual use (namespaces lab-n1, lab-n2, lab-p1, lab-p2).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Create it (replacing an existing one) and leave it running.
    Up,
    /// Delete it.
    Down,
    /// Show its namespaces, links and addresses.
    Status,
}

/// Fixed prefix of `cargo xtask lab`.
const MANUAL_LAB: &str = "lab";
/// Prefix of the demo's lab (Lab::new replaces leftovers of an interrupted demo).
const DEMO_LAB: &str = "demo";

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
            demo(&log)
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

fn demo(log: &Path) -> Result<()> {
    let tracer = target_dir().join("release/tracer");
    if !tracer.is_file() {
        bail!("{} not found after the build", tracer.display());
    }
    let log = std::env::current_dir()?.join(log);
    let t = Instant::now();
    let (lab, s) = lab::vxlan_mismatch(DEMO_LAB)?;
    println!(
        "demo: lab up in {:.1} s: pod {} ({}) on node {} (underlay MTU {}) -> pod {} ({}) on node {} \
         (underlay MTU {}), VXLAN MTU {} on both",
        t.elapsed().as_secs_f64(),
        s.pod1_ns,
        s.pod1_ip,
        s.node1_ns,
        s.node1_underlay_mtu,
        s.pod2_ns,
        s.pod2_ip,
        s.node2_ns,
        s.node2_underlay_mtu,
        s.vxlan_mtu
    );

    let mut child = Command::new(&tracer)
        .args([
            "run",
            "--netns",
            &s.node1_ns,
            "--netns",
            &s.node2_ns,
            "--netns",
            &s.pod1_ns,
            "--netns",
            &s.pod2_ns,
            "--log",
        ])
        .arg(&log)
        .args(["--duration", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.display()))?;
    let result = demo_traffic(&lab, &s, &mut child);
    stop_tracer(&mut child);
    drop(lab);
    println!("demo: lab torn down");
    result?;
    if log.is_file() {
        println!("demo: events logged to {}", log.display());
    } else {
        println!("demo: the tracer wrote no log at {}", log.display());
    }
    Ok(())
}

fn demo_traffic(lab: &Lab, s: &VxlanMismatch, tracer: &mut Child) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    forward_lines(tracer.stdout.take(), tx.clone());
    forward_lines(tracer.stderr.take(), tx);
    // The tracer says "tracing" once its programs are attached; 3 s is plenty otherwise.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("tracing") => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if let Some(status) = tracer.try_wait()? {
        bail!("the tracer exited early ({status})");
    }
    let timeout = Duration::from_secs(5);
    for (what, bytes, port) in [("small", 1000, 8080), ("large", 200_000, 8081)] {
        let r = lab::tcp_upload(lab, &s.pod1_ns, &s.pod2_ns, s.pod2_ip, port, bytes, timeout)?;
        let verdict = if r.completed {
            "ok"
        } else if r.timed_out {
            "TIMED OUT"
        } else {
            "FAILED"
        };
        println!(
            "{what} upload: {verdict} ({bytes} bytes, {:.1} s, {})",
            r.elapsed.as_secs_f64(),
            r.detail
        );
    }
    Ok(())
}

/// Copies a child's output lines to our stdout (prefixed) and to `tx`.
fn forward_lines<R: Read + Send + 'static>(pipe: Option<R>, tx: mpsc::Sender<String>) {
    let Some(pipe) = pipe else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            println!("[tracer] {line}");
            let _ = tx.send(line);
        }
    });
}

/// SIGINT (the tracer flushes its log on it), then SIGKILL if it does not stop within 5 s.
fn stop_tracer(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    match child.try_wait() {
        Ok(Some(status)) => println!("demo: tracer stopped ({status})"),
        _ => {
            eprintln!("demo: tracer ignored SIGINT for 5 s: killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lab_cmd(action: LabAction) -> Result<()> {
    match action {
        LabAction::Up => {
            let t = Instant::now();
            let (lab, s) = lab::vxlan_mismatch(MANUAL_LAB)?;
            lab.keep();
            println!("lab up in {:.1} s:", t.elapsed().as_secs_f64());
            println!("{s:#?}");
            println!(
                "try: ip netns exec {} ping -M do -s 1472 -c 2 {}",
                s.pod1_ns, s.pod2_ip
            );
            Ok(())
        }
        LabAction::Down => {
            let removed = lab::remove_prefix(MANUAL_LAB)?;
            if removed.is_empty() {
                println!("lab: nothing to remove");
            } else {
                println!("lab: removed {}", removed.join(" "));
            }
            Ok(())
        }
        LabAction::Status => {
            let own = format!("{MANUAL_LAB}-");
            let names: Vec<String> = lab::list_netns()?
                .into_iter()
                .filter(|n| n.starts_with(&own))
                .collect();
            if names.is_empty() {
                println!("lab: down");
                return Ok(());
            }
            for ns in names {
                println!("== {ns} (netns inode {})", Lab::netns_inode(&ns)?);
                run_streamed(Command::new("ip").args(["-n", &ns, "-br", "link"]))?;
                run_streamed(Command::new("ip").args(["-n", &ns, "-br", "addr"]))?;
                run_streamed(Command::new("ip").args(["-n", &ns, "route"]))?;
            }
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
