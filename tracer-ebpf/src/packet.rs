//! Just enough header parsing in the kernel to decide whether a packet is an ICMP too-big
//! message (plain, inside IPIP, or inside VXLAN), so that only those cross the ring buffer. The
//! full decoding (flows, quoted packets, MTU) happens in the daemon on the captured bytes.
use core::mem::MaybeUninit;

use aya_ebpf::EbpfContext as _;
use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET,
    helpers::generated::bpf_skb_load_bytes_relative, programs::TcContext,
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_ICMPV6: u8 = 58;
const VXLAN_PORTS: [u16; 2] = [4789, 8472];
/// Bytes copied at once from an IP header: the fixed header and the payload's first 4 bytes.
pub const IPV4_WINDOW: usize = 20 + 4;
pub const IPV6_WINDOW: usize = 40 + 4;

/// Copy `N` bytes at `offset` from the network header into `buf`; false when the packet's linear
/// part is shorter. `buf` starts uninitialised: the helper writes all of it either way (zeroes
/// on failure), so there is nothing to clear first. Zeroing a stack buffer before every copy
/// compiled to a call of a byte-loop `memset` subprogram on every packet.
#[inline(always)]
pub fn load<const N: usize>(ctx: &TcContext, offset: u32, buf: &mut MaybeUninit<[u8; N]>) -> bool {
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.as_ptr() as *const _,
            offset,
            buf.as_mut_ptr() as *mut _,
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    ret == 0
}

/// What an IP header carries: its protocol, where its payload starts, and the payload's first
/// four bytes (ICMP type and code; UDP ports).
pub struct Payload {
    proto: u8,
    offset: u32,
    head: [u8; 4],
}

impl Payload {
    /// ICMPv4 "fragmentation needed" or ICMPv6 "packet too big".
    #[inline(always)]
    fn is_too_big(&self) -> bool {
        (self.proto == IPPROTO_ICMP && self.head[0] == 3 && self.head[1] == 4)
            || (self.proto == IPPROTO_ICMPV6 && self.head[0] == 2)
    }
}

/// The payload of the IPv4 header whose first bytes (header and payload start, one copy) are
/// `h`, found at `offset`.
#[inline(always)]
pub fn ipv4_payload(ctx: &TcContext, offset: u32, h: &[u8; IPV4_WINDOW]) -> Option<Payload> {
    if h[0] >> 4 != 4 {
        return None;
    }
    let header_len = ((h[0] & 0x0f) as u32) * 4;
    let mut head = [h[20], h[21], h[22], h[23]];
    if header_len != 20 {
        // IP options (rare): the payload starts past the window.
        let mut more = MaybeUninit::<[u8; 4]>::uninit();
        if !load(ctx, offset + header_len, &mut more) {
            return None;
        }
        head = unsafe { more.assume_init() };
    }
    Some(Payload {
        proto: h[9],
        offset: offset + header_len,
        head,
    })
}

/// The payload of the IP header at `offset`. The windows are shorter than any ICMP too-big
/// (≥ 36 bytes of IPv4, ≥ 48 of IPv6), so a packet too short for them cannot be one.
#[inline(always)]
fn ip_payload(ctx: &TcContext, offset: u32, ethertype: u16) -> Option<Payload> {
    if ethertype == ETH_P_IP {
        let mut h = MaybeUninit::<[u8; IPV4_WINDOW]>::uninit();
        if !load(ctx, offset, &mut h) {
            return None;
        }
        ipv4_payload(ctx, offset, unsafe { h.assume_init_ref() })
    } else if ethertype == ETH_P_IPV6 {
        let mut h = MaybeUninit::<[u8; IPV6_WINDOW]>::uninit();
        if !load(ctx, offset, &mut h) {
            return None;
        }
        ipv6_payload(offset, unsafe { h.assume_init_ref() })
    } else {
        None
    }
}

/// The payload of the IPv6 header whose first bytes are `h`, found at `offset`.
#[inline(always)]
pub fn ipv6_payload(offset: u32, h: &[u8; IPV6_WINDOW]) -> Option<Payload> {
    if h[0] >> 4 != 6 {
        return None;
    }
    Some(Payload {
        proto: h[6],
        offset: offset + 40,
        head: [h[40], h[41], h[42], h[43]],
    })
}

/// The frame inside VXLAN whose UDP header is at `udp`: an ICMP too-big? One copy reaches from
/// the inner Ethernet type through an inner IPv4 header (IPv6 needs a second).
#[inline(always)]
fn vxlan_is_too_big(ctx: &TcContext, udp: u32) -> bool {
    // UDP (8) + VXLAN (8) + inner Ethernet addresses (12).
    let ethertype_at = udp + 28;
    let mut w = MaybeUninit::<[u8; 2 + IPV4_WINDOW]>::uninit();
    if !load(ctx, ethertype_at, &mut w) {
        return false;
    }
    let w = unsafe { w.assume_init_ref() };
    let ethertype = u16::from_be_bytes([w[0], w[1]]);
    let inner = if ethertype == ETH_P_IP {
        let h: &[u8; IPV4_WINDOW] = unsafe { &*(w.as_ptr().add(2) as *const [u8; IPV4_WINDOW]) };
        ipv4_payload(ctx, ethertype_at + 2, h)
    } else if ethertype == ETH_P_IPV6 {
        ip_payload(ctx, ethertype_at + 2, ETH_P_IPV6)
    } else {
        None
    };
    inner.is_some_and(|p| p.is_too_big())
}

/// Is this tc packet an ICMP too-big message (plain, or inside one layer of IPIP, IPv6-in-IP
/// or VXLAN)? Every packet on a hooked device asks, so the common answer (no) costs one copy of
/// the IP header's first bytes; tunnels cost one or two more. One level deep only: the
/// verifier needs bounded work and nested tunnels are not the case here.
#[inline(always)]
pub fn is_icmp_too_big(ctx: &TcContext) -> bool {
    let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    ip_payload(ctx, 0, ethertype).is_some_and(|outer| carries_too_big(ctx, &outer))
}

/// Is the packet whose outer IP payload is `outer` an ICMP too-big (see [`is_icmp_too_big`],
/// for a caller that has the outer header's window already).
#[inline(always)]
pub fn carries_too_big(ctx: &TcContext, outer: &Payload) -> bool {
    if outer.is_too_big() {
        return true;
    }
    let inner = match outer.proto {
        IPPROTO_IPIP => ip_payload(ctx, outer.offset, ETH_P_IP),
        IPPROTO_IPV6 => ip_payload(ctx, outer.offset, ETH_P_IPV6),
        IPPROTO_UDP => {
            let dport = u16::from_be_bytes([outer.head[2], outer.head[3]]);
            return (dport == VXLAN_PORTS[0] || dport == VXLAN_PORTS[1])
                && vxlan_is_too_big(ctx, outer.offset);
        }
        _ => None,
    };
    inner.is_some_and(|p| p.is_too_big())
}

/// Copy up to `out.len()` bytes from the network header into `out`; returns how many.
#[inline(always)]
pub fn capture(ctx: &TcContext, out: &mut [u8; tracer_common::PACKET_CAPTURE]) -> u16 {
    // Try the whole window, then smaller ones for short packets (the helper fails rather than
    // copying a partial range; a variable length would need bounds the 6.1 verifier loses).
    // Steps of 16 bytes: a short too-big message inside VXLAN over IPv6 has its MTU field
    // ~30 bytes before its end, which coarser steps cut off.
    const _: () = assert!(tracer_common::PACKET_CAPTURE == 176);
    macro_rules! try_len {
        ($n:expr) => {
            let ret = unsafe {
                bpf_skb_load_bytes_relative(
                    ctx.as_ptr() as *const _,
                    0,
                    out.as_mut_ptr() as *mut _,
                    $n,
                    BPF_HDR_START_NET,
                )
            };
            if ret == 0 {
                return $n as u16;
            }
        };
    }
    try_len!(176);
    try_len!(160);
    try_len!(144);
    try_len!(128);
    try_len!(112);
    try_len!(96);
    try_len!(80);
    try_len!(64);
    try_len!(48);
    try_len!(32);
    try_len!(20);
    0
}
