//! Drops: `skb:kfree_skb`. Preferred as `tp_btf` (typed arguments, no layout to guess); the
//! classic tracepoint is the fallback, read at offsets parsed from its tracefs `format` file.
//!
//! Default filter (everything else is discarded here, before any ring-buffer work):
//! reason PKT_TOO_BIG, or a location inside a known size-drop site (`ip_fragment`,
//! `ip_tunnel_xmit`, `__dev_forward_skb2`, ...: these free with NOT_SPECIFIED), or a packet
//! longer than its route's or veth peer's MTU freed with NOT_SPECIFIED, or a dropped ICMP
//! too-big message under any reason (the PMTU signal eaten by a firewall). A drop whose reason
//! names another cause is judged on a few reads (is it an ICMP too-big?) and left there.
//! `--all-drops` keeps every drop.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::{trace, warn};
use tracer_common::{
    flags, Event, EventKind, Hook, KERNEL_LOG_TARGET, MAX_SIZE_DROP_SITES, NO_FIELD,
};

use crate::{config::conf, emit, fold, kernel};

#[btf_tracepoint(function = "kfree_skb")]
pub fn drops_tp_btf(ctx: BtfTracePointContext) -> i32 {
    if emit::empty_programs() {
        return 0;
    }
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    // The reason argument exists since 5.17; on older kernels the verifier never sees this
    // read because the branch is pruned on the constant.
    let reason: u32 = if conf!(tracepoints.kfree_skb_reason) != NO_FIELD {
        ctx.arg(2)
    } else {
        0
    };
    handle::<true, _>(&ctx, skb, location, reason, Hook::DropsTpBtf);
    0
}

#[tracepoint]
pub fn drops_tracepoint(ctx: TracePointContext) -> i32 {
    if emit::empty_programs() {
        return 0;
    }
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
    handle::<false, _>(&ctx, skb, location, reason, Hook::DropsTracepoint);
    0
}

/// Is `location` inside one of the known size-drop sites? One unsigned comparison per site, on a
/// difference: `location` itself gets no refined range for the verifier to tell apart.
#[inline(always)]
fn at_size_drop_site(location: u64) -> bool {
    let count = conf!(size_drop_site_count);
    let mut i = 0;
    while i < MAX_SIZE_DROP_SITES {
        if (i as u32) < count {
            let start = conf!(size_drop_sites[i].start);
            let end = conf!(size_drop_sites[i].end);
            if location.wrapping_sub(start) < end.wrapping_sub(start) {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// A field of the draft as stored in map memory (volatile: not the register it was computed in,
/// whose range the verifier knows from the branches that produced it).
macro_rules! stored {
    ($ev:ident . $field:ident) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($ev.$field)) }
    };
}

/// Why a drop is reported (`flags::MATCH_*`), judged on what the draft holds.
#[inline(always)]
fn matches(ev: &Event, l3: *const u8) -> u16 {
    let mut matched = 0u16;
    let too_big = conf!(reason_pkt_too_big);
    if too_big != NO_FIELD && stored!(ev.reason) == too_big {
        matched |= flags::MATCH_REASON;
    }
    if at_size_drop_site(stored!(ev.location)) {
        matched |= flags::MATCH_LOCATION;
    }
    // Only the MTU of where the packet was going counts: the route's output device or the veth
    // peer. A received packet may legitimately exceed its input device's MTU (GRO merges
    // segments), and GSO packets are segmented later, so neither says anything.
    // And only when the kernel names no other cause (a firewall dropping a large packet).
    let l3_len = stored!(ev.l3_len);
    let over = |mtu: u32| mtu != 0 && l3_len > mtu;
    if !names_another_cause(stored!(ev.reason))
        && stored!(ev.gso_size) == 0
        && (over(stored!(ev.out_mtu)) || over(stored!(ev.peer_mtu)))
    {
        matched |= flags::MATCH_OVERSIZE;
    }
    if matched == 0 && kernel::is_icmp_too_big(l3, stored!(ev.l3_proto)) {
        matched |= flags::MATCH_ICMP_TOO_BIG;
    }
    matched
}

/// Does the kernel name a cause for this drop that is not size (a policy, no socket, a full
/// queue, ...)? Size drops free with PKT_TOO_BIG (forwarding) or NOT_SPECIFIED (tunnels,
/// fragmentation, veth, bridge); kernels without reasons (a constant) name nothing.
#[inline(always)]
fn names_another_cause(reason: u32) -> bool {
    let not_specified = conf!(reason_not_specified);
    not_specified != NO_FIELD && reason != not_specified && reason != conf!(reason_pkt_too_big)
}

/// `TYPED`: `skb` is a BTF-typed argument (`tp_btf`), whose fields plain loads may read.
#[inline(always)]
fn handle<const TYPED: bool, C: EbpfContext>(
    ctx: &C,
    skb: *const u8,
    location: u64,
    reason: u32,
    hook: Hook,
) {
    if skb.is_null() {
        return;
    }
    // Decide early, on what costs nothing: most drops on a busy node (policies, closed ports,
    // full queues) name another cause, and such a drop matters only when it is an ICMP too-big
    // (the PMTU signal eaten on the way). A few reads answer that; the full event is read only
    // for drops that may be about size.
    let unrelated =
        conf!(all_drops) == 0 && names_another_cause(reason) && !at_size_drop_site(location);
    let filtered = conf!(filter_netns) != 0;
    // Whether to leave it here: unrelated and not an ICMP too-big.
    let leave = || {
        let left = unrelated && !kernel::skb_is_icmp_too_big::<TYPED>(skb);
        if left {
            trace!(
                ctx,
                target: KERNEL_LOG_TARGET,
                "drop left in the kernel: reason {} names another cause",
                reason
            );
        }
        left
    };
    if !filtered && leave() {
        return;
    }
    // With a namespace filter, the namespace first (three reads): on a busy host most drops
    // belong to namespaces nobody asked about.
    let (dev, netns) = if TYPED {
        kernel::typed_skb_dev_netns(skb)
    } else {
        let dev = kernel::skb_dev(skb);
        (dev, kernel::skb_netns(skb, dev))
    };
    if !emit::netns_wanted(netns) {
        return;
    }
    if filtered && leave() {
        return;
    }
    // One more of the flood this CPU is in? Counted, and nothing more to read.
    let fold_key = if TYPED {
        fold::key(skb, dev, netns, location, reason)
    } else {
        None
    };
    if fold::folded(&fold_key) {
        return;
    }
    let Some(mut draft) = emit::Draft::begin(EventKind::Drop, hook) else {
        // Drop programs nested deeper than the drafts: lost, and counted so.
        emit::count_lost(hook);
        warn!(
            ctx,
            target: KERNEL_LOG_TARGET,
            "drop program nested past its drafts on this CPU: event counted as lost"
        );
        return;
    };
    let ev = draft.event();
    ev.location = location;
    ev.reason = reason;
    let b = kernel::skb_basics_of::<TYPED>(skb, dev, netns);
    kernel::fill_from_skb::<TYPED>(ev, skb, &b);
    // A veth hands its packets to its peer, whose MTU decides (`__dev_forward_skb`).
    kernel::fill_veth_peer::<TYPED>(ev, b.dev);
    let matched = matches(ev, b.l3);
    if matched == 0 && conf!(all_drops) == 0 {
        return;
    }
    ev.flags |= matched;
    fold::start_burst(ev, &fold_key);
    draft.send();
}
