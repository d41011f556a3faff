//! Builds the kernel programs (`tracer-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker, so that `cargo build` of the daemon always embeds a fresh object.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-ebpf");
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
