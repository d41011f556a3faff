//! Just enough header parsing in the kernel to decide whether a packet is an ICMP too-big
//! message (plain, inside IPIP, or inside VXLAN), so that only those cross the ring buffer. The
//! full decoding (flows, quoted packets, MTU) happens in the daemon on the captured bytes.
use aya_ebpf::EbpfContext as _;
use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET,
    helpers::generated::bpf_skb_load_bytes_relative, programs::TcContext,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_ICMPV6: u8 = 58;
const VXLAN_PORTS: [u16; 2] = [4789, 8472];

/// Load `N` bytes at `offset` from the network header.
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.as_ptr() as *const _,
            offset,
            buf.as_mut_ptr() as *mut _,
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    if ret == 0 {
        Some(buf)
    } else {
        None
    }
}

/// ICMP type/code at `offset`: IPv4 frag-needed or ICMPv6 packet-too-big?
#[inline(always)]
fn too_big_at(ctx: &TcContext, offset: u32, v6: bool) -> bool {
    match load::<2>(ctx, offset) {
        Some([t, c]) => {
            if v6 {
                t == 2
            } else {
                t == 3 && c == 4
            }
        }
        None => false,
    }
}

/// Is the packet at `offset` (an IP header) an ICMP too-big, looking inside one tunnel layer
/// when `depth` allows?
#[inline(always)]
fn ip_is_too_big(ctx: &TcContext, offset: u32, ethertype: u16, depth: u32) -> bool {
    if ethertype == ETH_P_IP {
        let Some(h) = load::<20>(ctx, offset) else {
            return false;
        };
        if h[0] >> 4 != 4 {
            return false;
        }
        let l4 = offset + ((h[0] & 0x0f) as u32) * 4;
        let proto = h[9];
        if proto == IPPROTO_ICMP {
            return too_big_at(ctx, l4, false);
        }
        if depth == 0 {
            return false;
        }
        if proto == IPPROTO_IPIP {
            return inner_ip_is_too_big(ctx, l4, ETH_P_IP);
        }
        if proto == IPPROTO_IPV6 {
            return inner_ip_is_too_big(ctx, l4, ETH_P_IPV6);
        }
        if proto == IPPROTO_UDP {
            return vxlan_is_too_big(ctx, l4);
        }
        false
    } else if ethertype == ETH_P_IPV6 {
        let Some(h) = load::<8>(ctx, offset) else {
            return false;
        };
        let next = h[6];
        let l4 = offset + 40;
        if next == IPPROTO_ICMPV6 {
            return too_big_at(ctx, l4, true);
        }
        if depth == 0 {
            return false;
        }
        if next == IPPROTO_IPIP {
            return inner_ip_is_too_big(ctx, l4, ETH_P_IP);
        }
        if next == IPPROTO_IPV6 {
            return inner_ip_is_too_big(ctx, l4, ETH_P_IPV6);
        }
        if next == IPPROTO_UDP {
            return vxlan_is_too_big(ctx, l4);
        }
        false
    } else {
        false
    }
}

/// One level deep only: the verifier needs bounded work and nested tunnels are not the case here.
#[inline(always)]
fn inner_ip_is_too_big(ctx: &TcContext, offset: u32, ethertype: u16) -> bool {
    if ethertype == ETH_P_IP {
        let Some(h) = load::<20>(ctx, offset) else {
            return false;
        };
        h[0] >> 4 == 4
            && h[9] == IPPROTO_ICMP
            && too_big_at(ctx, offset + ((h[0] & 0x0f) as u32) * 4, false)
    } else {
        let Some(h) = load::<8>(ctx, offset) else {
            return false;
        };
        h[0] >> 4 == 6 && h[6] == IPPROTO_ICMPV6 && too_big_at(ctx, offset + 40, true)
    }
}

#[inline(always)]
fn vxlan_is_too_big(ctx: &TcContext, udp: u32) -> bool {
    let Some(u) = load::<4>(ctx, udp) else {
        return false;
    };
    let dport = u16::from_be_bytes([u[2], u[3]]);
    if dport != VXLAN_PORTS[0] && dport != VXLAN_PORTS[1] {
        return false;
    }
    // UDP (8) + VXLAN (8) + inner Ethernet (14).
    let inner_eth = udp + 16;
    let Some(t) = load::<2>(ctx, inner_eth + 12) else {
        return false;
    };
    let ethertype = u16::from_be_bytes(t);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return false;
    }
    inner_ip_is_too_big(ctx, inner_eth + 14, ethertype)
}

/// Is this tc packet an ICMP too-big message (plain or in one tunnel layer)?
#[inline(always)]
pub fn is_icmp_too_big(ctx: &TcContext) -> bool {
    let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    ip_is_too_big(ctx, 0, ethertype, 1)
}

/// Copy up to `out.len()` bytes from the network header into `out`; returns how many.
#[inline(always)]
pub fn capture(ctx: &TcContext, out: &mut [u8; tracer_common::PACKET_CAPTURE]) -> u16 {
    // Try the whole window, then smaller ones for short packets (the helper fails rather than
    // copying a partial range).
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
    try_len!(tracer_common::PACKET_CAPTURE as u32);
    try_len!(128);
    try_len!(96);
    try_len!(64);
    try_len!(40);
    try_len!(20);
    0
}
