//! TCP retransmissions (`tcp:tcp_retransmit_skb`): a sender re-sending full-size segments while
//! small ones get through is the visible side of an MTU black hole.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{flags, EventKind, Hook, NO_FIELD};

use crate::{config::conf, emit, kernel};

const AF_INET6: u16 = 10;

#[tracepoint]
pub fn tcp_retransmit_tracepoint(ctx: TracePointContext) -> i32 {
    if emit::empty_programs() {
        return 0;
    }
    let sk = kernel::tp_field::<usize>(&ctx, conf!(tracepoints.tcp_rtx_skaddr)).unwrap_or(0)
        as *const u8;
    let netns = kernel::sock_netns(sk);
    if !emit::netns_wanted(netns) {
        return 0;
    }
    let Some(mut entry) = emit::reserve(EventKind::TcpRetransmit, Hook::TcpRetransmitTracepoint)
    else {
        return 0;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.netns = netns;
    let read_u16 = |off: u32| -> u16 {
        if off == NO_FIELD {
            return 0;
        }
        kernel::tp_field::<u16>(&ctx, off).unwrap_or(0)
    };
    let family = read_u16(conf!(tracepoints.tcp_rtx_family));
    ev.flow.family = family;
    ev.flow.proto = 6;
    ev.flow.sport = read_u16(conf!(tracepoints.tcp_rtx_sport));
    ev.flow.dport = read_u16(conf!(tracepoints.tcp_rtx_dport));
    if family == AF_INET6 {
        if let Some(a) = kernel::tp_field::<[u8; 16]>(&ctx, conf!(tracepoints.tcp_rtx_saddr_v6)) {
            ev.flow.saddr = a;
        }
        if let Some(a) = kernel::tp_field::<[u8; 16]>(&ctx, conf!(tracepoints.tcp_rtx_daddr_v6)) {
            ev.flow.daddr = a;
        }
    } else {
        if let Some(a) = kernel::tp_field::<[u8; 4]>(&ctx, conf!(tracepoints.tcp_rtx_saddr)) {
            ev.flow.saddr[..4].copy_from_slice(&a);
        }
        if let Some(a) = kernel::tp_field::<[u8; 4]>(&ctx, conf!(tracepoints.tcp_rtx_daddr)) {
            ev.flow.daddr[..4].copy_from_slice(&a);
        }
    }
    ev.flags |= flags::HAS_FLOW;
    let state_off = conf!(tracepoints.tcp_rtx_state);
    if state_off != NO_FIELD {
        ev.aux1 = kernel::tp_field::<i32>(&ctx, state_off).unwrap_or(0) as u32;
    }
    // The retransmitted segment's size (with GSO, several MSS at once).
    let skb = kernel::tp_field::<usize>(&ctx, conf!(tracepoints.tcp_rtx_skbaddr)).unwrap_or(0)
        as *const u8;
    if !skb.is_null() {
        let b = kernel::skb_basics(skb);
        ev.skb = skb as u64;
        ev.len = b.len;
        ev.gso_size = b.gso_size;
        // The same sequence number re-sent at timeouts: nothing acknowledged in between.
        if conf!(kernel.skb_tcp_seq) != NO_FIELD {
            ev.aux2 = kernel::read::<u32>(skb, conf!(kernel.skb_tcp_seq));
            ev.flags |= flags::HAS_TCP_SEQ;
        }
    }
    emit::submit(entry);
    0
}
