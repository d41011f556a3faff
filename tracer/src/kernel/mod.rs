//! What the daemon learns about the running kernel before it loads the kernel programs.
//!
//! Rust eBPF cannot carry CO-RE relocations, so everything layout-dependent is resolved here, at
//! run time, from the kernel's own descriptions of itself:
//! - [`btf`]: struct field offsets and drop-reason names from `/sys/kernel/btf/vmlinux`;
//! - [`tracefs`]: classic tracepoint field offsets from tracefs `format` files;
//! - [`kallsyms`]: text symbols from `/proc/kallsyms`, to name drop locations and to find the
//!   functions that drop packets for being too big.

pub mod btf;
pub mod kallsyms;
pub mod tracefs;
