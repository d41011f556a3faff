//! tc (TCX) egress on tunnel devices and uplinks: packets larger than the device MTU
//! (GSO-aware: a GSO packet counts only if one of its segments would not fit) and ICMP too-big
//! messages leaving, with the MTU they advertise (decoded by the daemon from the packet).
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::generated::bpf_check_mtu, programs::TcContext,
    EbpfContext as _,
};
use tracer_common::{flags, EventKind, Hook, MAX_TC_NETNS};

use crate::{config::conf, emit, packet};

/// `BPF_MTU_CHK_SEGS`: check each GSO segment instead of the whole super-packet.
const BPF_MTU_CHK_SEGS: u64 = 1;

emit::tc_program_copies!(tx:
    tx_tc_0 = 0, tx_tc_1 = 1, tx_tc_2 = 2, tx_tc_3 = 3,
    tx_tc_4 = 4, tx_tc_5 = 5, tx_tc_6 = 6, tx_tc_7 = 7,
);

#[inline(always)]
fn tx(ctx: &TcContext, slot: usize) -> i32 {
    let mut mtu: u32 = 0;
    // ifindex 0 = the device the packet is on. Non-zero = does not fit (frag needed / segment
    // too big); `mtu` comes back as the device MTU either way.
    let verdict = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu, 0, BPF_MTU_CHK_SEGS) };
    if verdict > 0 {
        report(ctx, slot, EventKind::OversizeTx, mtu);
    } else if packet::is_icmp_too_big(ctx) {
        report(ctx, slot, EventKind::IcmpTooBigSent, mtu);
    }
    // Observe only: never change the packet's fate.
    TC_ACT_UNSPEC
}

#[inline(always)]
pub fn report(ctx: &TcContext, slot: usize, kind: EventKind, dev_mtu: u32) {
    let hook = if matches!(kind, EventKind::IcmpTooBigReceived) {
        Hook::RxTc
    } else {
        Hook::TxTc
    };
    let Some(mut entry) = emit::reserve(kind, hook) else {
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    if slot < MAX_TC_NETNS {
        ev.netns = conf!(tc_netns[slot]);
    }
    let skb = unsafe { &*ctx.skb.skb };
    ev.ifindex = skb.ifindex;
    ev.len = skb.len;
    ev.mtu = dev_mtu;
    ev.gso_size = skb.gso_size as u16;
    ev.gso_segs = skb.gso_segs as u16;
    if skb.gso_size != 0 {
        ev.flags |= flags::GSO;
    }
    ev.l3_proto = u16::from_be(skb.protocol as u16);
    let got = packet::capture(ctx, &mut ev.packet);
    if got > 0 {
        ev.flags |= flags::HAS_PACKET;
        ev.cap_len = got;
    }
    emit::submit(entry);
}
