//! Builds the kernel programs (`tracer-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker, so that `cargo build` of the daemon always embeds a fresh object.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not baked in when it is compiled: cargo reuses a compiled build
    // script across checkouts that share a target directory (git worktrees).
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../tracer-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .context("tracer-ebpf directory missing")?;
    let root = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
