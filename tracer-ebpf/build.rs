//! Rebuild the kernel programs when bpf-linker changes: a swapped linker does not otherwise
//! invalidate the object (see docs/kernels.md, "Toolchain").
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found: {err}"),
    }
}
