//! The kernel generating ICMP "fragmentation needed" (IPv4 type 3 code 4) or ICMPv6 "packet too
//! big" (type 2). The kprobes on `__icmp_send` / `icmp6_send` also see the advertised MTU; the
//! `icmp:icmp_send` tracepoint (6.10+, and 6.1.y/6.6.y backports) is the fallback without it.
//! In both cases the event carries the offending packet's headers, read from its `sk_buff`.
use aya_ebpf::{
    macros::{kprobe, tracepoint},
    programs::{ProbeContext, TracePointContext},
};
use tracer_common::{flags, EventKind, Hook, NO_FIELD};

use crate::{config::conf, emit, fold, kernel};

const ICMP_DEST_UNREACH: i32 = 3;
const ICMP_FRAG_NEEDED: i32 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;

#[tracepoint]
pub fn icmp_send_tracepoint(ctx: TracePointContext) -> i32 {
    if emit::empty_programs() {
        return 0;
    }
    let off_type = conf!(tracepoints.icmp_send_type);
    let off_code = conf!(tracepoints.icmp_send_code);
    if off_type == NO_FIELD || off_code == NO_FIELD {
        return 0;
    }
    let icmp_type = kernel::tp_field::<i32>(&ctx, off_type).unwrap_or(0);
    let code = kernel::tp_field::<i32>(&ctx, off_code).unwrap_or(0);
    if icmp_type != ICMP_DEST_UNREACH || code != ICMP_FRAG_NEEDED {
        return 0;
    }
    let skb = kernel::tp_field::<usize>(&ctx, conf!(tracepoints.icmp_send_skbaddr)).unwrap_or(0)
        as *const u8;
    emit_too_big(
        skb,
        icmp_type as u32,
        code as u32,
        0,
        Hook::IcmpSendTracepoint,
    );
    0
}

#[kprobe]
pub fn icmp_send_kprobe(ctx: ProbeContext) -> u32 {
    if emit::empty_programs() {
        return 0;
    }
    let skb: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let icmp_type: i32 = ctx.arg(1).unwrap_or(0);
    let code: i32 = ctx.arg(2).unwrap_or(0);
    if icmp_type != ICMP_DEST_UNREACH || code != ICMP_FRAG_NEEDED {
        return 0;
    }
    // `info` is the next-hop MTU in network byte order.
    let info: u32 = ctx.arg(3).unwrap_or(0);
    emit_too_big(
        skb,
        icmp_type as u32,
        code as u32,
        u32::from_be(info),
        Hook::IcmpSendKprobe,
    );
    0
}

#[kprobe]
pub fn icmp6_send_kprobe(ctx: ProbeContext) -> u32 {
    if emit::empty_programs() {
        return 0;
    }
    let skb: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let icmp_type: u8 = ctx.arg(1).unwrap_or(0);
    let code: u8 = ctx.arg(2).unwrap_or(0);
    if icmp_type != ICMPV6_PKT_TOOBIG {
        return 0;
    }
    // For ICMPv6 `info` is the MTU in host byte order.
    let info: u32 = ctx.arg(3).unwrap_or(0);
    emit_too_big(
        skb,
        icmp_type as u32,
        code as u32,
        info,
        Hook::Icmp6SendKprobe,
    );
    0
}

#[inline(always)]
fn emit_too_big(skb: *const u8, icmp_type: u32, code: u32, mtu: u32, hook: Hook) {
    if skb.is_null() {
        return;
    }
    let b = kernel::skb_basics(skb);
    if !emit::netns_wanted(b.netns) {
        return;
    }
    // The drop of this packet comes next on this CPU: on its own, to pair with this event.
    fold::end_burst();
    let Some(mut entry) = emit::reserve(EventKind::IcmpTooBigSent, hook) else {
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    kernel::fill_from_skb::<false>(ev, skb, &b);
    ev.aux1 = icmp_type;
    ev.aux2 = code;
    if mtu != 0 {
        ev.mtu = mtu;
        ev.flags |= flags::MTU_ADVERTISED;
    }
    emit::submit(entry);
}
