//! Drops: `skb:kfree_skb`. Preferred as `tp_btf` (typed arguments, no layout to guess); the
//! classic tracepoint is the fallback, read at offsets parsed from its tracefs `format` file.
//!
//! Default filter (everything else is discarded here, before any ring-buffer work):
//! reason PKT_TOO_BIG, or a location inside a known size-drop site (`ip_fragment`,
//! `ip_tunnel_xmit`, `__dev_forward_skb2`, ...: these free with NOT_SPECIFIED), or a packet
//! longer than its device's, route's or veth peer's MTU, or a dropped ICMP too-big message
//! (the PMTU signal eaten by a firewall). `--all-drops` keeps every drop.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{flags, EventKind, Hook, MAX_SIZE_DROP_SITES, NO_FIELD};

use crate::{config::conf, emit, kernel};

#[btf_tracepoint(function = "kfree_skb")]
pub fn drops_tp_btf(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    // The reason argument exists since 5.17; on older kernels the verifier never sees this
    // read because the branch is pruned on the constant.
    let reason: u32 = if conf!(tracepoints.kfree_skb_reason) != NO_FIELD {
        ctx.arg(2)
    } else {
        0
    };
    handle(skb, location, reason, Hook::DropsTpBtf);
    0
}

#[tracepoint]
pub fn drops_tracepoint(ctx: TracePointContext) -> i32 {
    let off_skb = conf!(tracepoints.kfree_skb_skbaddr);
    let off_loc = conf!(tracepoints.kfree_skb_location);
    let off_reason = conf!(tracepoints.kfree_skb_reason);
    let skb = kernel::tp_field::<usize>(&ctx, off_skb).unwrap_or(0) as *const u8;
    let location = kernel::tp_field::<u64>(&ctx, off_loc).unwrap_or(0);
    let reason = if off_reason != NO_FIELD {
        kernel::tp_field::<u32>(&ctx, off_reason).unwrap_or(0)
    } else {
        0
    };
    handle(skb, location, reason, Hook::DropsTracepoint);
    0
}

#[inline(always)]
fn at_size_drop_site(location: u64) -> bool {
    let count = conf!(size_drop_site_count);
    let mut i = 0;
    while i < MAX_SIZE_DROP_SITES {
        if (i as u32) < count {
            let start = conf!(size_drop_sites[i].start);
            let end = conf!(size_drop_sites[i].end);
            if location >= start && location < end {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn handle(skb: *const u8, location: u64, reason: u32, hook: Hook) {
    if skb.is_null() {
        return;
    }
    let mut matched = 0u16;
    let too_big = conf!(reason_pkt_too_big);
    if too_big != NO_FIELD && reason == too_big {
        matched |= flags::MATCH_REASON;
    }
    if at_size_drop_site(location) {
        matched |= flags::MATCH_LOCATION;
    }
    // Namespace first: on a busy host most drops belong to namespaces nobody asked about.
    let dev = kernel::skb_dev(skb);
    let netns = kernel::skb_netns(skb, dev);
    if !emit::netns_wanted(netns) {
        return;
    }
    let b = kernel::skb_basics_of(skb, dev, netns);
    // A veth hands its packets to its peer, whose MTU decides (`__dev_forward_skb`).
    let peer = kernel::veth_peer(b.dev);
    let peer_mtu = kernel::read::<u32>(peer, conf!(kernel.dev_mtu)).unwrap_or(0);
    // Only the MTU of where the packet was going counts: the route's output device or the veth
    // peer. A received packet may legitimately exceed its input device's MTU (GRO merges
    // segments), and GSO packets are segmented later, so neither says anything.
    let over = |mtu: u32| mtu != 0 && b.l3_len > mtu;
    if b.gso_size == 0 && (over(b.out_mtu) || over(peer_mtu)) {
        matched |= flags::MATCH_OVERSIZE;
    }
    if matched == 0 {
        if kernel::is_icmp_too_big(b.l3, kernel::l3_proto(skb)) {
            matched |= flags::MATCH_ICMP_TOO_BIG;
        }
    }
    if matched == 0 && conf!(all_drops) == 0 {
        return;
    }
    let Some(mut entry) = emit::reserve(EventKind::Drop, hook) else {
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.flags |= matched;
    ev.location = location;
    ev.reason = reason;
    kernel::fill_from_skb(ev, skb, &b);
    kernel::fill_peer(ev, peer, peer_mtu);
    entry.submit(0);
}
