//! `cargo xtask vm`: run the tracer's tests on other kernels, under qemu (TCG).
//!
//! For each kernel: the Debian package is fetched with `apt-get download` into
//! `<target>/vm/debs` and unpacked with `dpkg-deb -x` into `<target>/vm/kernels` (never
//! installed; both steps are skipped when already done and verified). Compressed modules are
//! decompressed and `busybox depmod` indexes them. A small initramfs (busybox from Debian's
//! busybox-static, the modules needed to mount 9p, and an init script) mounts this machine's root
//! read-only over virtio-9p, puts tmpfs on /tmp and /run, mounts proc, sys, tracefs, bpffs and
//! cgroup2, lets the kernel load further modules (veth, vxlan, ipip, nf_tables, sch_ingress...) from
//! the unpacked package, and runs a script with `chroot` into the host root. The host's binaries
//! (the test executables built beforehand, the tracer, ip, nft, redis-server, python3) therefore
//! run unchanged inside the VM at the same paths. The script's output comes back on the serial
//! console; a writable 9p share (`<target>/vm/runs/<kernel>`) receives the script and the console
//! log. Facts behind the choices: shared notes `blackholes.md` (booting Debian kernels under
//! qemu TCG) and `toolchain.md`.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The integration-test targets of `tracer` that `cargo xtask test` runs in each VM. `incident`
/// (7–8 min per kernel under TCG) is left to `cargo xtask vm`: the matrix must fit CI's 90 minutes
/// beside the host suite, and `ipip-tunl0` already replays the incident on Calico's tunnel.
pub const CI_TESTS: &[&str] = &["trace", "cli", "check"];

/// Kernels the runner knows how to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum KernelChoice {
    /// Debian 12's own kernel (linux-image-6.1.0-N-amd64, the newest N the package lists offer).
    #[value(name = "debian-6.1")]
    Debian61,
    /// Debian 12's newer 6.12 kernel (linux-image-6.12.N+deb12-amd64, from bookworm-security).
    #[value(name = "debian-6.12")]
    Debian612,
    /// The running kernel, if /boot has its image and /lib/modules its modules.
    #[value(name = "host")]
    Host,
}

impl KernelChoice {
    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Debian61 => "debian-6.1",
            KernelChoice::Debian612 => "debian-6.12",
            KernelChoice::Host => "host",
        }
    }

    /// Package names of this series look like `linux-image-{prefix}{N}{suffix}`.
    fn package_pattern(self) -> Option<(&'static str, &'static str)> {
        match self {
            // The generic flavour: the cloud flavour has no 9p at all (CONFIG_9P_FS unset).
            KernelChoice::Debian61 => Some(("linux-image-6.1.0-", "-amd64")),
            KernelChoice::Debian612 => Some(("linux-image-6.12.", "+deb12-amd64")),
            KernelChoice::Host => None,
        }
    }
}

/// A kernel ready to boot: its image and its (indexed, decompressed) modules directory.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub choice: KernelChoice,
    /// What it is, for the report: the package and version, or the host's image path.
    pub origin: String,
    /// `uname -r` of the kernel.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/<release>`.
    pub modules: PathBuf,
}

/// Where the runner keeps downloads, unpacked kernels, initramfs images and run directories.
pub fn cache_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("vm")
}

fn step(msg: &str) {
    println!("vm: {msg}");
}

/// The package and version `prepare` would fetch for a Debian series (`Host`: an error).
pub fn kernel_package(choice: KernelChoice) -> Result<(String, String)> {
    let (prefix, suffix) = choice
        .package_pattern()
        .with_context(|| format!("{} is not a package", choice.name()))?;
    newest_package(prefix, suffix)
}

/// Fetches (if needed) and prepares the kernel.
pub fn prepare(choice: KernelChoice, cache: &Path) -> Result<Kernel> {
    match choice.package_pattern() {
        Some((prefix, suffix)) => {
            let (package, version) = newest_package(prefix, suffix)?;
            let deb = download(&package, &version, &cache.join("debs"))?;
            let dir = cache
                .join("kernels")
                .join(format!("{package}_{}", version.replace(':', "%3a")));
            unpack(choice, &deb, &dir, &format!("{package} {version}"))
        }
        None => host_kernel(),
    }
}

/// The running kernel, when it exists as files (it does not on every machine: some boot a
/// kernel that is not in /boot).
fn host_kernel() -> Result<Kernel> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read /proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    let modules = PathBuf::from(format!("/lib/modules/{release}"));
    if !vmlinuz.is_file() {
        bail!(
            "the running kernel {release} is not available as a file ({} does not exist; this \
             machine boots a kernel it does not carry): use another kernel, e.g. --kernel \
             debian-6.12",
            vmlinuz.display()
        );
    }
    if !modules.join("modules.dep").is_file() {
        bail!(
            "the running kernel's modules are not at {} (no modules.dep)",
            modules.display()
        );
    }
    Ok(Kernel {
        choice: KernelChoice::Host,
        origin: vmlinuz.display().to_string(),
        release,
        vmlinuz,
        modules,
    })
}

/// The package of the series with the highest number, and its candidate version, from the local
/// package lists (`apt-cache`; no registry query beyond what `apt-get update` fetched).
fn newest_package(prefix: &str, suffix: &str) -> Result<(String, String)> {
    let out = capture(Command::new("apt-cache").args(["pkgnames", prefix]))?;
    let package = pick_newest(out.lines(), prefix, suffix).with_context(|| {
        format!(
            "no package {prefix}N{suffix} in the package lists (run `apt-get update`; is this \
             Debian 12 with bookworm-security?)"
        )
    })?;
    let policy = capture(Command::new("apt-cache").args(["policy", &package]))?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .with_context(|| format!("`apt-cache policy {package}` shows no candidate version"))?
        .to_string();
    Ok((package, version))
}

/// Among `names`, the `{prefix}{N}{suffix}` with the highest N (N made of digits and dots,
/// compared number by number): `6.1.0-56` beats `6.1.0-9`, `6.12.117` beats `6.12.99`.
fn pick_newest<'a>(
    names: impl Iterator<Item = &'a str>,
    prefix: &str,
    suffix: &str,
) -> Option<String> {
    names
        .filter_map(|n| {
            let mid = n.trim().strip_prefix(prefix)?.strip_suffix(suffix)?;
            let key: Option<Vec<u64>> = mid.split('.').map(|p| p.parse().ok()).collect();
            Some((key?, n.trim().to_string()))
        })
        .max()
        .map(|(_, n)| n)
}

/// `apt-get download PACKAGE=VERSION` into `dir`, unless a verified copy is there already.
fn download(package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // apt-get names the file PACKAGE_VERSION_ARCH.deb, with the epoch's ':' as %3a.
    let file = dir.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if file.is_file() && deb_is(&file, package, version).is_ok() {
        step(&format!("{package} {version}: already downloaded"));
        return Ok(file);
    }
    step(&format!("{package} {version}: apt-get download"));
    run_quiet(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(dir),
    )?;
    if !file.is_file() {
        bail!(
            "apt-get download {package}={version} finished, but {} is not there",
            file.display()
        );
    }
    deb_is(&file, package, version)?;
    Ok(file)
}

/// The .deb's control fields name this package and version (a truncated or different file fails).
fn deb_is(deb: &Path, package: &str, version: &str) -> Result<()> {
    let out = capture(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .args(["Package", "Version"]),
    )?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let (p, v) = (field("Package"), field("Version"));
    if p != package || v != version {
        bail!(
            "{} is package {p:?} version {v:?}, expected {package:?} {version:?}",
            deb.display()
        );
    }
    Ok(())
}

/// `dpkg-deb -x` into `dir`, decompress the modules and index them; a stamp file marks a complete
/// job, so an interrupted one is redone from scratch.
fn unpack(choice: KernelChoice, deb: &Path, dir: &Path, origin: &str) -> Result<Kernel> {
    let stamp = dir.join(".xtask-unpacked");
    if !stamp.is_file() {
        step(&format!("{origin}: unpacking into {}", dir.display()));
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        fs::create_dir_all(dir)?;
        run_quiet(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))?;
    }
    let (release, vmlinuz) = find_vmlinuz(&dir.join("boot"))?;
    let modules = dir.join("lib/modules").join(&release);
    if !modules.join("kernel").is_dir() {
        bail!(
            "{origin}: {} has no kernel/ directory: not a kernel image package with modules",
            modules.display()
        );
    }
    if !stamp.is_file() {
        let n = decompress_modules(&modules)?;
        if n > 0 {
            step(&format!("{origin}: decompressed {n} modules"));
        }
        // busybox's depmod writes the modules.dep/modules.alias its own modprobe reads in the VM.
        run_quiet(
            Command::new("busybox")
                .arg("depmod")
                .arg("-b")
                .arg(dir)
                .arg(&release),
        )?;
        fs::write(&stamp, format!("{origin}\n"))?;
    } else {
        step(&format!("{origin}: already unpacked"));
    }
    Ok(Kernel {
        choice,
        origin: origin.to_string(),
        release,
        vmlinuz,
        modules,
    })
}

/// The one `vmlinuz-RELEASE` in `boot`.
fn find_vmlinuz(boot: &Path) -> Result<(String, PathBuf)> {
    let mut found = Vec::new();
    for e in fs::read_dir(boot).with_context(|| format!("cannot read {}", boot.display()))? {
        let e = e?;
        if let Some(rel) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            found.push((rel.to_string(), e.path()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no vmlinuz-* in {}", boot.display()),
        _ => bail!("several vmlinuz-* in {}: {found:?}", boot.display()),
    }
}

/// Debian 6.12 ships `.ko.xz` modules; busybox's modprobe loads plain `.ko` files, so decompress
/// them once here. Returns how many were decompressed.
fn decompress_modules(modules: &Path) -> Result<usize> {
    let mut xz = Vec::new();
    let mut zst = Vec::new();
    walk(&modules.join("kernel"), &mut |p| {
        let name = p.to_string_lossy();
        if name.ends_with(".ko.xz") {
            xz.push(p.to_path_buf());
        } else if name.ends_with(".ko.zst") {
            zst.push(p.to_path_buf());
        }
    })?;
    for chunk in xz.chunks(500) {
        run_quiet(Command::new("xz").args(["-d", "-f"]).args(chunk))?;
    }
    for chunk in zst.chunks(500) {
        run_quiet(
            Command::new("zstd")
                .args(["-d", "-q", "-f", "--rm"])
                .args(chunk),
        )?;
    }
    Ok(xz.len() + zst.len())
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), f)?;
        } else if t.is_file() {
            f(&e.path());
        }
    }
    Ok(())
}

/// Modules the init script loads before it can mount the host root.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
/// Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";

/// The modules (paths relative to the modules dir) `names` need, dependencies included, from
/// busybox depmod's `modules.dep` (`kernel/a/b.ko: kernel/c.ko kernel/d.ko`). Built-in ones
/// (absent from modules.dep) need nothing.
fn module_closure(modules_dep: &str, names: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in modules_dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let stem = Path::new(module)
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".ko"))
            .unwrap_or("");
        // modprobe treats '-' and '_' alike in module names.
        if names
            .iter()
            .any(|n| n.replace('-', "_") == stem.replace('-', "_"))
        {
            out.insert(module.trim().to_string());
            out.extend(deps.split_whitespace().map(str::to_string));
        }
    }
    out
}

/// The VM's PID 1. Settings come from the kernel command line (the kernel passes unknown
/// `NAME=value` words to init as environment variables).
const INIT: &str = r#"#!/bin/busybox sh
# PID 1 of a `cargo xtask vm` VM (xtask/src/vm.rs). Prints "xtask-vm: status N" last.
/bin/busybox --install -s /bin
export PATH=/bin
die() {
    echo "xtask-vm: init failed: $*"
    echo "xtask-vm: status 125"
    sync
    poweroff -f
}
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev ||
    die "cannot mount proc, sys, dev"
# The boot modules this kernel has as modules (built-in ones are left out by the host).
for m in $(cat /boot-modules); do
    modprobe "$m" || die "modprobe $m"
done
O=trans=virtio,version=9p2000.L,msize=262144
R=/newroot
# The run's own host paths under /tmp (a checkout or build there, as CI may have) stay visible
# through the VM's tmpfs on /tmp: bound aside before it is mounted, bound back after.
keep_tmp_paths_aside() {
    i=0
    for p in $(echo "$XTASK_VM_KEEP" | tr ':' ' '); do
        mkdir -p /keep/$i && mount --bind "$R$p" /keep/$i || return 1
        i=$((i + 1))
    done
}
put_tmp_paths_back() {
    i=0
    for p in $(echo "$XTASK_VM_KEEP" | tr ':' ' '); do
        mkdir -p "$R$p" && mount --bind /keep/$i "$R$p" || return 1
        i=$((i + 1))
    done
}
mount -t 9p -o "$O,ro,cache=loose" hostroot $R || die "cannot mount the host root over 9p"
# The kernel's own module requests (ip link add ... type vxlan, nft, tc) run /bin/modprobe in
# this initramfs (the root of PID 1), which reads the unpacked package's modules.
mount --bind "$R$XTASK_VM_MODULES" "/lib/modules/$(uname -r)" || die "cannot bind the modules"
echo /bin/modprobe >/proc/sys/kernel/modprobe
mount -t proc proc $R/proc &&
    mount -t sysfs sysfs $R/sys &&
    mount -t devtmpfs devtmpfs $R/dev &&
    mkdir -p $R/dev/pts $R/dev/shm &&
    mount -t devpts devpts $R/dev/pts &&
    mount -t tmpfs tmpfs $R/dev/shm &&
    keep_tmp_paths_aside &&
    mount -t tmpfs -o mode=1777 tmpfs $R/tmp &&
    put_tmp_paths_back &&
    mount -t tmpfs -o mode=755 tmpfs $R/run &&
    mount -t tracefs tracefs $R/sys/kernel/tracing &&
    mount -t debugfs debugfs $R/sys/kernel/debug &&
    mount -t bpf bpf $R/sys/fs/bpf &&
    mount -t cgroup2 cgroup2 $R/sys/fs/cgroup ||
    die "cannot mount the API file systems in the host root"
mkdir -p $R/run/xtask-vm && mount -t 9p -o "$O" results $R/run/xtask-vm ||
    die "cannot mount the results share"
ip link set lo up
hostname xtask-vm
echo "xtask-vm: booted $(uname -r) in $(cut -d' ' -f1 /proc/uptime) s"
chroot $R /bin/sh /run/xtask-vm/run.sh
echo "xtask-vm: status $?"
sync
poweroff -f
"#;

/// Builds (or reuses) the kernel's initramfs: a newc cpio archive, uncompressed.
pub fn initramfs(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("initramfs");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{}.cpio", kernel.choice.name(), kernel.release));
    let dep = fs::read_to_string(kernel.modules.join("modules.dep"))
        .with_context(|| format!("cannot read {}/modules.dep", kernel.modules.display()))?;
    let needed = module_closure(&dep, BOOT_MODULES);
    let builtin = fs::read_to_string(kernel.modules.join("modules.builtin")).unwrap_or_default();
    let mut to_load = Vec::new();
    for m in BOOT_MODULES {
        let file = format!("/{m}.ko");
        if needed.iter().any(|n| n.ends_with(&file)) {
            to_load.push(*m);
        } else if !builtin.lines().any(|l| l.ends_with(&file)) {
            bail!(
                "{}: module {m} is neither built in nor in modules.dep: this kernel cannot mount \
                 the host root over 9p",
                kernel.origin
            );
        }
    }
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    // init's stdio: without /dev/console in the archive the kernel gives it none.
    cpio.char_dev("dev/console", 5, 1);
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file(
        "boot-modules",
        0o644,
        format!("{}\n", to_load.join(" ")).as_bytes(),
    );
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX}: install busybox-static (cargo xtask setup)")
    })?;
    cpio.file("bin/busybox", 0o755, &busybox);
    let mdir = format!("lib/modules/{}", kernel.release);
    cpio.dir(&mdir);
    for f in ["modules.dep", "modules.alias", "modules.symbols"] {
        if let Ok(data) = fs::read(kernel.modules.join(f)) {
            cpio.file(&format!("{mdir}/{f}"), 0o644, &data);
        }
    }
    for m in &needed {
        let data =
            fs::read(kernel.modules.join(m)).with_context(|| format!("cannot read module {m}"))?;
        let mut parent = String::new();
        for part in Path::new(m).parent().into_iter().flat_map(|p| p.iter()) {
            parent.push('/');
            parent.push_str(&part.to_string_lossy());
            cpio.dir(&format!("{mdir}{parent}"));
        }
        cpio.file(&format!("{mdir}/{m}"), 0o644, &data);
    }
    let bytes = cpio.finish();
    fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize as u32,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        if self.dirs.insert(name.to_string()) {
            self.entry(name, 0o040755, (0, 0), &[]);
        }
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// One step the VM runs: a name for the report and a shell command line.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
}

/// The top directories under `/tmp` that the steps run in or run from: the VM puts its own tmpfs
/// on `/tmp`, which would hide a checkout or a build there (CI may clone into /tmp).
fn tmp_paths_to_keep(steps: &[Step]) -> Result<Vec<String>> {
    let mut keep = BTreeSet::new();
    let paths = steps
        .iter()
        .flat_map(|st| std::iter::once(st.cwd.clone()).chain(st.argv.iter().map(PathBuf::from)));
    for path in paths {
        let mut parts = path.components();
        let (Some(std::path::Component::RootDir), Some(top), Some(sub)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if top.as_os_str() != "tmp" {
            continue;
        }
        let dir = format!("/tmp/{}", sub.as_os_str().to_string_lossy());
        if dir.contains(|c: char| c.is_whitespace() || c == ':') {
            bail!(
                "{dir}: a path under /tmp with a space or ':' cannot be passed to the VM; move it"
            );
        }
        keep.insert(dir);
    }
    Ok(keep.into_iter().collect())
}

/// What one VM run gave.
#[derive(Debug, Default)]
pub struct Outcome {
    pub kernel: String,
    pub uname: Option<String>,
    pub boot_secs: Option<f64>,
    pub elapsed: Duration,
    /// The run script's exit status (None: the VM never said).
    pub status: Option<i32>,
    /// Per step: name, exit status, seconds.
    pub steps: Vec<(String, i32, f64)>,
    /// The tracer's start-up block (`hooks:` lines).
    pub hooks: Vec<String>,
    /// What each program cost the verifier (the tracer's debug lines `NAME: N instructions
    /// verified, M B translated`).
    pub verifier: Vec<String>,
    pub passed: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// Why the run is not trustworthy beyond failed tests (timeout, panic, init failure).
    pub trouble: Vec<String>,
}

/// Shell words, single-quoted.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The script the VM runs (in the host root): each step framed by markers the host parses.
fn run_script(steps: &[Step]) -> String {
    let mut s = String::from(
        "# Written by `cargo xtask vm` (xtask/src/vm.rs); runs inside the VM, chrooted into the \
         host root.\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
         TERM=dumb NO_COLOR=1 RUST_BACKTRACE=1 TRACER_TEST_SLOW=1\n\
         echo \"xtask-vm: uname $(uname -r)\"\n\
         worst=0\n",
    );
    for st in steps {
        let argv: Vec<String> = st.argv.iter().map(|a| sh_quote(a)).collect();
        let _ = write!(
            s,
            "echo 'xtask-vm: step {name}'\n\
             t0=$(cut -d' ' -f1 /proc/uptime)\n\
             (cd {cwd} && exec {cmd}) </dev/null 2>&1\n\
             rc=$?\n\
             echo \"xtask-vm: step {name} exit $rc after $(awk -v a=$t0 '{{print $1 - a}}' /proc/uptime) s\"\n\
             [ $rc -ne 0 ] && worst=$rc\n",
            name = st.name,
            cwd = sh_quote(&st.cwd.to_string_lossy()),
            cmd = argv.join(" "),
        );
    }
    s.push_str("exit $worst\n");
    s
}

/// qemu settings.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

/// Boots `kernel` and runs `steps`; console lines are echoed prefixed with the kernel's name.
pub fn boot(
    kernel: &Kernel,
    initrd: &Path,
    run_dir: &Path,
    steps: &[Step],
    cfg: &VmConfig,
) -> Result<Outcome> {
    if run_dir.exists() {
        fs::remove_dir_all(run_dir)?;
    }
    fs::create_dir_all(run_dir)?;
    fs::write(run_dir.join("run.sh"), run_script(steps))?;
    let modules = kernel
        .modules
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", kernel.modules.display()))?;
    let keep = tmp_paths_to_keep(steps)?;
    let append = format!(
        "console=ttyS0 panic=-1 loglevel=4 XTASK_VM_MODULES={} XTASK_VM_KEEP={}",
        modules.display(),
        keep.join(":")
    );
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-nographic", "-no-reboot"])
        .args(["-nic", "none"])
        .args(["-m", &cfg.memory_mib.to_string()])
        .args(["-smp", &cfg.cpus.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=results,security_model=none",
            run_dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .context("cannot run qemu-system-x86_64 (install qemu-system-x86: cargo xtask setup)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });
    let name = kernel.choice.name();
    let mut log = fs::File::create(run_dir.join("console.log"))?;
    let mut out = Outcome {
        kernel: format!("{name} ({})", kernel.origin),
        ..Outcome::default()
    };
    let deadline = start + cfg.timeout;
    let mut parser = ConsoleParser::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("[{name}] {line}");
                let _ = writeln!(log, "{line}");
                parser.line(&line, &mut out);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                out.trouble.push(format!(
                    "timed out after {} s: qemu killed",
                    cfg.timeout.as_secs()
                ));
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    out.elapsed = start.elapsed();
    if out.status.is_none() && out.trouble.is_empty() {
        out.trouble.push(format!(
            "the VM ended without reporting a status (qemu {status}); see {}",
            run_dir.join("console.log").display()
        ));
    }
    Ok(out)
}

/// Reads the console: markers from init and the run script, cargo test's lines, the tracer's
/// start-up hook lines, kernel panics.
#[derive(Default)]
struct ConsoleParser {
    in_hooks: bool,
}

impl ConsoleParser {
    fn line(&mut self, line: &str, out: &mut Outcome) {
        // A marker may follow firmware output on the same console line (SeaBIOS clears the
        // screen with escape sequences and no newline).
        if let Some(rest) = line
            .find("xtask-vm: ")
            .map(|i| &line[i + "xtask-vm: ".len()..])
        {
            if let Some(u) = rest.strip_prefix("uname ") {
                out.uname = Some(u.trim().to_string());
            } else if let Some(s) = rest.strip_prefix("status ") {
                out.status = s.trim().parse().ok();
            } else if let Some(b) = rest.strip_prefix("booted ") {
                out.boot_secs = b
                    .split_whitespace()
                    .rev()
                    .nth(1)
                    .and_then(|s| s.parse().ok());
            } else if let Some(f) = rest.strip_prefix("init failed: ") {
                out.trouble.push(format!("init failed: {f}"));
            } else if let Some(s) = rest.strip_prefix("step ") {
                // "NAME exit RC after SECS s"
                let w: Vec<&str> = s.split_whitespace().collect();
                if let [name, "exit", rc, "after", secs, "s"] = w[..] {
                    out.steps.push((
                        name.to_string(),
                        rc.parse().unwrap_or(-1),
                        secs.parse().unwrap_or(0.0),
                    ));
                }
            }
            return;
        }
        if line == "hooks:" {
            self.in_hooks = true;
            return;
        }
        if self.in_hooks {
            if line.starts_with("  ") {
                if !out.hooks.iter().any(|h| h == line) {
                    out.hooks.push(line.to_string());
                }
                return;
            }
            self.in_hooks = false;
        }
        if let Some(cost) = line
            .split_once("tracer::hooks] ")
            .map(|(_, c)| c)
            .filter(|c| c.contains(" instructions verified"))
        {
            if !out.verifier.iter().any(|v| v == cost) {
                out.verifier.push(cost.to_string());
            }
            return;
        }
        if let Some((p, f)) = crate::parse_test_result(line) {
            out.passed += p;
            out.failed += f;
        } else if let Some(t) = line
            .strip_prefix("test ")
            .and_then(|t| t.strip_suffix(" ... FAILED"))
        {
            out.failures.push(t.to_string());
        } else if line.contains("Kernel panic") {
            out.trouble.push(line.trim().to_string());
        }
    }
}

impl Outcome {
    /// Passed: the script exited 0, every test that ran passed, nothing went wrong around them.
    pub fn ok(&self) -> bool {
        self.status == Some(0) && self.failed == 0 && self.trouble.is_empty()
    }

    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {}",
            self.kernel,
            if self.ok() { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(
            s,
            "  uname {}, booted in {}, whole run {:.0} s",
            self.uname.as_deref().unwrap_or("?"),
            self.boot_secs
                .map(|b| format!("{b:.1} s"))
                .unwrap_or_else(|| "?".into()),
            self.elapsed.as_secs_f64()
        );
        if !self.hooks.is_empty() {
            let _ = writeln!(s, "  hooks:");
            for h in &self.hooks {
                let _ = writeln!(s, "  {h}");
            }
        }
        if !self.verifier.is_empty() {
            let _ = writeln!(s, "  verifier (start-up):");
            for v in &self.verifier {
                let _ = writeln!(s, "    {v}");
            }
        }
        for (name, rc, secs) in &self.steps {
            let _ = writeln!(s, "  step {name}: exit {rc} ({secs:.0} s)");
        }
        let _ = writeln!(s, "  tests: {} passed, {} failed", self.passed, self.failed);
        for f in &self.failures {
            let _ = writeln!(s, "    FAILED {f}");
        }
        for t in &self.trouble {
            let _ = writeln!(s, "  trouble: {t}");
        }
        s
    }
}

/// Runs `cmd`, capturing its output; a failure shows it.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    capture(cmd).map(|_| ())
}

fn capture(cmd: &mut Command) -> Result<String> {
    let shown = crate::lab::display_cmd(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        return Err(anyhow!(
            "`{shown}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_tmp_are_kept_visible_in_the_vm() {
        let step = |cwd: &str, argv: &[&str]| Step {
            name: "t".into(),
            cwd: cwd.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
        };
        let steps = [
            step("/tmp/ci-clone/tracer", &["/work/target/debug/trace", "--x"]),
            step("/tmp/ci-clone", &["/tmp/build/release/xtask", "vm-guest"]),
            step("/work/main", &["/usr/bin/tmp", "tmp/x"]),
        ];
        assert_eq!(
            tmp_paths_to_keep(&steps).unwrap(),
            vec!["/tmp/build".to_string(), "/tmp/ci-clone".to_string()]
        );
        assert!(tmp_paths_to_keep(&[step("/tmp/a b/c", &[])]).is_err());
    }

    #[test]
    fn newest_package_compares_numbers_not_strings() {
        let names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-47-amd64",
        ];
        assert_eq!(
            pick_newest(names.into_iter(), "linux-image-6.1.0-", "-amd64").as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let names = [
            "linux-image-6.12.99+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.117+deb12-rt-amd64",
        ];
        assert_eq!(
            pick_newest(names.into_iter(), "linux-image-6.12.", "+deb12-amd64").as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(pick_newest([].into_iter(), "a", "b"), None);
    }

    #[test]
    fn module_closure_follows_dependencies() {
        let dep = "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n\
                   kernel/net/9p/9pnet.ko:\n\
                   kernel/net/ipv4/ipip.ko: kernel/net/ipv4/ip_tunnel.ko\n\
                   kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko\n";
        let got = module_closure(dep, &["9p", "virtio-pci"]);
        let want: BTreeSet<String> = [
            "kernel/fs/9p/9p.ko",
            "kernel/net/9p/9pnet.ko",
            "kernel/fs/netfs/netfs.ko",
            "kernel/drivers/virtio/virtio_pci.ko",
            "kernel/drivers/virtio/virtio.ko",
        ]
        .map(String::from)
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.dir("bin");
        c.file("init", 0o755, b"#!x\n");
        c.char_dev("dev/console", 5, 1);
        let out = c.finish();
        assert!(out.len().is_multiple_of(4));
        // The directory once, then init, console and the trailer: four headers.
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("070701").count(), 4);
        assert!(text.contains("TRAILER!!!"));
        // init's header: mode 0o100755 = 0x81ed, size 4, namesize 5 ("init\0").
        let at = text.find("init\0").unwrap();
        let hdr = &text[at - 110..at];
        assert_eq!(&hdr[14..22], "000081ed");
        assert_eq!(&hdr[54..62], "00000004");
        assert_eq!(&hdr[94..102], "00000005");
        assert_eq!(&text[at + 6..at + 10], "#!x\n");
        // The console: mode 0o020600 = 0x2180, rdev 5:1.
        let at = text.find("dev/console\0").unwrap();
        let hdr = &text[at - 110..at];
        assert_eq!(&hdr[14..22], "00002180");
        assert_eq!(&hdr[78..86], "00000005");
        assert_eq!(&hdr[86..94], "00000001");
    }

    #[test]
    fn console_markers_test_results_and_hooks_are_read() {
        let mut p = ConsoleParser::default();
        let mut o = Outcome::default();
        for l in [
            "\x1b[2J\x1b[0mkxtask-vm: booted 6.1.0-56-amd64 in 7.91 s",
            "xtask-vm: uname 6.1.0-56-amd64",
            "hooks:",
            "  drops        tp_btf/kfree_skb ✔",
            "  icmp-sent    kprobe/__icmp_send ✔",
            "[2026-11-25T23:30:00Z DEBUG tracer::hooks] drops_tp_btf: 1016 instructions verified, 6160 B translated",
            "blind: nothing",
            "test routed_hop ... FAILED",
            "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured",
            "xtask-vm: step trace exit 101 after 93.5 s",
            "xtask-vm: status 101",
        ] {
            p.line(l, &mut o);
        }
        assert_eq!(o.uname.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(o.boot_secs, Some(7.91));
        assert_eq!(o.hooks.len(), 2);
        assert_eq!(
            o.verifier,
            ["drops_tp_btf: 1016 instructions verified, 6160 B translated"]
        );
        assert_eq!((o.passed, o.failed), (4, 1));
        assert_eq!(o.failures, ["routed_hop"]);
        assert_eq!(o.steps, [("trace".to_string(), 101, 93.5)]);
        assert_eq!(o.status, Some(101));
        assert!(!o.ok());
    }

    #[test]
    fn run_script_quotes_arguments() {
        let s = run_script(&[Step {
            name: "trace".into(),
            cwd: "/work/x y".into(),
            argv: vec!["/bin/t".into(), "--test-threads=1".into(), "a b".into()],
        }]);
        assert!(s.contains("(cd '/work/x y' && exec /bin/t --test-threads=1 'a b')"));
        assert!(s.contains("echo 'xtask-vm: step trace'"));
    }
}
