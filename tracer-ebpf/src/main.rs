//! The tracer's kernel programs. One module per hook, mirrored by `tracer/src/hooks/`:
//! - [`drops`]: packets freed as dropped (`skb:kfree_skb`),
//! - [`icmp`]: the kernel generating ICMP "fragmentation needed" / "packet too big",
//! - [`transmit`]: tc egress on tunnel devices and uplinks (oversized packets, ICMP leaving),
//! - [`ingress`]: tc ingress on uplinks (ICMP too-big arriving from the underlay),
//! - [`tcp`]: TCP retransmissions (the sender's side of a black hole),
//! - [`pmtu`]: the kernel recording a smaller path MTU (an ICMP too-big that arrived).
//!
//! Everything the programs read from kernel structs goes through [`kernel`], whose offsets come
//! from the running kernel's BTF at load time ([`config`]); nothing is baked in at build time.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod config;
#[cfg(target_arch = "bpf")]
mod drops;
#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod fold;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod ingress;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod pmtu;
#[cfg(target_arch = "bpf")]
mod pmtu6;
#[cfg(target_arch = "bpf")]
mod tcp;
#[cfg(target_arch = "bpf")]
mod transmit;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach here; this only satisfies the compiler.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
