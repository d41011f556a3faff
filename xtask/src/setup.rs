//! Idempotent installation of what a fresh machine (Debian 12, root) needs to build and test the
//! tracer. Each step checks first and prints one line saying what it found or did.
//! Facts behind the choices: shared notes `toolchain.md` and `blackholes.md`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::lab::display_cmd;

/// Debian packages: LLVM 22 for bpf-linker, network tools for the labs, servers for demos.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "nftables",
    "ethtool",
    "redis-server",
    "redis-tools",
    "bpftool",
    "iperf3",
    "tcpdump",
    "procps",
    "iputils-ping",
    // The lab's TCP sink and client are python3 one-liners.
    "python3",
    // Tests read the tracer's --pcap files with Wireshark's own reader (tshark, capinfos).
    "tshark",
    // `cargo xtask vm`: qemu (TCG) boots Debian kernel packages with a busybox initramfs.
    "qemu-system-x86",
    "busybox-static",
];

/// Answered up front so that the install never waits for a terminal: tshark's package asks
/// whether non-root users may capture ("no": the tests run as root); iperf3's asks whether to
/// start a daemon at boot ("no": the benchmark starts its own server in a lab namespace).
const DEBCONF_PRESEED: &str = "wireshark-common wireshark-common/install-setuid boolean false\n\
                               iperf3 iperf3/start_daemon boolean false\n";

/// The LLVM major that nightly rustc and bpf-linker must share.
pub const LLVM_MAJOR: u32 = 22;
pub const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn setup() -> Result<()> {
    apt_packages()?;
    stable_components()?;
    nightly_rust_src()?;
    nightly_llvm()?;
    bpf_linker()?;
    tracefs()?;
    vm_kernel_packages()?;
    kustomize();
    Ok(())
}

/// `kubectl kustomize` renders deploy/'s kustomize base and component in tests/deploy.rs. The
/// machine image brings kubectl (1.32, kustomize 5.5); Debian's own package (1.20, kustomize
/// 2.0) predates Components, and nothing newer is reachable offline: say so, do not fail here.
fn kustomize() {
    let version = Command::new("kubectl")
        .args(["version", "--client"])
        .stdin(Stdio::null())
        .output();
    match version {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let found = text
                .lines()
                .find(|l| l.starts_with("Kustomize Version"))
                .unwrap_or("kustomize version not shown");
            step(&format!("kubectl: found ({found})"));
        }
        _ => step(
            "kubectl: not found; tests/deploy.rs renders deploy/ with `kubectl kustomize` \
             (kustomize 3.7 or newer) and will fail without it",
        ),
    }
}

/// The kernel packages `cargo xtask vm` fetches (`apt-get download`, at its first run) must be
/// in the package lists; `apt-get update` once if they are not (a fresh image's lists may be
/// empty or stale).
fn vm_kernel_packages() -> Result<()> {
    let choices = [
        crate::vm::KernelChoice::Debian61,
        crate::vm::KernelChoice::Debian612,
    ];
    let lookup = || -> Result<Vec<String>> {
        choices
            .iter()
            .map(|c| crate::vm::kernel_package(*c).map(|(p, v)| format!("{p} {v}")))
            .collect()
    };
    let found = match lookup() {
        Ok(found) => found,
        Err(e) => {
            step(&format!("vm kernels: {e:#}; apt-get update"));
            run_streamed(
                Command::new("apt-get")
                    .arg("update")
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            lookup()?
        }
    };
    step(&format!(
        "vm kernels: in the package lists: {}",
        found.join(", ")
    ));
    Ok(())
}

fn step(msg: &str) {
    println!("setup: {msg}");
}

fn apt_packages() -> Result<()> {
    let missing = missing_apt_packages(APT_PACKAGES)?;
    if missing.is_empty() {
        step(&format!("apt packages: all {} present", APT_PACKAGES.len()));
        return Ok(());
    }
    step(&format!("apt packages: installing {}", missing.join(" ")));
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "apt packages missing ({}), and installing them needs root",
            missing.join(" ")
        );
    }
    preseed_debconf()?;
    run_streamed(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_streamed(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = missing_apt_packages(APT_PACKAGES)?;
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

fn preseed_debconf() -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run debconf-set-selections")?;
    child
        .stdin
        .take()
        .context("debconf-set-selections stdin")?
        .write_all(DEBCONF_PRESEED.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("debconf-set-selections failed: {status}");
    }
    Ok(())
}

/// Packages whose dpkg status is not "install ok installed" (unknown or removed ones included).
fn missing_apt_packages(pkgs: &[&str]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for pkg in pkgs {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .stdin(Stdio::null())
            .output()
            .context("cannot run dpkg-query (is this a Debian machine?)")?;
        // dpkg-query exits 1 for unknown packages: that just means "missing".
        if String::from_utf8_lossy(&out.stdout).trim() != "install ok installed" {
            missing.push(pkg.to_string());
        }
    }
    Ok(missing)
}

/// `cargo xtask test` runs `cargo fmt` and `cargo clippy` on the default (stable) toolchain.
fn stable_components() -> Result<()> {
    let have = |sub: &str| {
        Command::new("cargo")
            .args([sub, "--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if have("fmt") && have("clippy") {
        step("rustfmt and clippy: present");
        return Ok(());
    }
    step("rustfmt and clippy: installing");
    run_streamed(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

fn nightly_rust_src() -> Result<()> {
    let out =
        capture(Command::new("rustup").args(["+nightly", "component", "list", "--installed"]))
            .context(
            "the `nightly` toolchain is needed for the eBPF crate; it comes with this machine's \
             image and cannot be downloaded here",
        )?;
    // Lines are "rust-src" (no host triple: it is target independent) or "NAME-TRIPLE".
    if out.lines().any(|l| l.trim() == "rust-src") {
        step("nightly rust-src: present");
        return Ok(());
    }
    step("nightly rust-src: installing");
    run_streamed(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// nightly's LLVM must match bpf-linker's; updating nightly would break that (and needs a
/// download this workplace does not allow), so only check.
fn nightly_llvm() -> Result<()> {
    let out = capture(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .map(str::trim)
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse nightly LLVM version {version:?}"))?;
    if major != LLVM_MAJOR {
        bail!(
            "nightly rustc uses LLVM {version}, but bpf-linker is built against LLVM {LLVM_MAJOR}: \
             eBPF objects would not link. Use a nightly with LLVM {LLVM_MAJOR} (do not \
             `rustup update nightly`)."
        );
    }
    step(&format!("nightly LLVM: {version} (major {LLVM_MAJOR}, ok)"));
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let current = bpf_linker_version();
    if current.as_deref() == Some(BPF_LINKER_VERSION) {
        step(&format!("bpf-linker: {BPF_LINKER_VERSION} present"));
        return Ok(());
    }
    step(&format!(
        "bpf-linker: {} -> installing {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})",
        current.as_deref().unwrap_or("not installed")
    ));
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        bail!("{LLVM_PREFIX}/bin/llvm-config is missing: install llvm-22-dev first");
    }
    // The default feature (llvm-23) builds but then fails every link; without LLVM_PREFIX the
    // build script finds Debian's default LLVM 14 (see the toolchain note).
    run_streamed(
        Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )?;
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {}
        other => bail!(
            "bpf-linker installed, but `bpf-linker --version` says {:?}: is cargo's bin \
             directory (~/.cargo/bin) on PATH?",
            other
        ),
    }
    if current.is_some() {
        // cargo does not notice a changed linker: the stale eBPF object would be reused.
        step("bpf-linker changed: touch tracer-ebpf/src to rebuild the eBPF object");
    }
    Ok(())
}

/// "bpf-linker 0.13.0" -> "0.13.0"; None when it is not installed or does not run.
fn bpf_linker_version() -> Option<String> {
    let out = capture(Command::new("bpf-linker").arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_string)
}

fn tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        step(&format!("tracefs: mounted at {TRACEFS}"));
        return Ok(());
    }
    step(&format!("tracefs: mounting at {TRACEFS}"));
    run_streamed(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
    if !Path::new(TRACEFS).join("events").is_dir() {
        bail!("mounted tracefs at {TRACEFS}, but {TRACEFS}/events is still missing");
    }
    Ok(())
}

/// Runs `cmd` with its output streamed to ours; a failure names the command.
pub fn run_streamed(cmd: &mut Command) -> Result<()> {
    let shown = display_cmd(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; a failure names the command and shows its stderr.
fn capture(cmd: &mut Command) -> Result<String> {
    let shown = display_cmd(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
