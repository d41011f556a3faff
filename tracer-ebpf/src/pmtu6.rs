//! The kernel recording a smaller IPv6 path MTU: `__ip6_rt_update_pmtu(dst, sk, iph, mtu,
//! confirm_neigh)`, the IPv6 twin of `pmtu.rs`. Every IPv6 learner goes through it: a socket
//! acting on a packet too big (TCP via `inet6_csk_update_pmtu` with its socket; UDP, ping and
//! raw via `ip6_update_pmtu` with the quoted header), a tunnel or forwarding node lowering a
//! route (`skb_dst_update_pmtu`). `rt6_do_update_pmtu`, which stores the value, is static and
//! inlined on some kernels; this function is not on 6.1, 6.12 and 6.18, and it has the flow.
//!
//! fentry where the kernel allows it, else a kprobe: the same handler either way. Only updates
//! that lower the route's MTU are reported, as the kernel itself only acts on those.
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::Hook;

use crate::{config::conf, emit, kernel, pmtu};

const AF_INET6: u16 = 10;
/// `IPV6_MIN_MTU`: the kernel ignores anything below it.
const IPV6_MIN_MTU: u32 = 1280;
/// `DST_METRICS_FLAGS`: the low bits of `dst_entry._metrics` are flags, not address.
const DST_METRICS_FLAGS: usize = 0x3;
/// `RTAX_MTU - 1`: the MTU's index in the metrics array (`u32` each).
const METRIC_MTU_OFFSET: u32 = 4;
/// `struct ipv6hdr` (wire format): next header, source, destination.
const IP6H_NEXTHDR: u32 = 6;
const IP6H_SADDR: u32 = 8;
const IP6H_DADDR: u32 = 24;

#[fentry(function = "__ip6_rt_update_pmtu")]
pub fn pmtu6_update_fentry(ctx: FEntryContext) -> i32 {
    if emit::empty_programs() {
        return 0;
    }
    let dst: *const u8 = ctx.arg(0);
    let sk: *const u8 = ctx.arg(1);
    let iph: *const u8 = ctx.arg(2);
    let mtu: u32 = ctx.arg(3);
    handle(dst, sk, iph, mtu, Hook::Pmtu6UpdateFentry);
    0
}

#[kprobe]
pub fn pmtu6_update_kprobe(ctx: ProbeContext) -> u32 {
    if emit::empty_programs() {
        return 0;
    }
    let dst: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let sk: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    let iph: *const u8 = ctx.arg(2).unwrap_or(core::ptr::null());
    let mtu: u32 = ctx.arg(3).unwrap_or(0);
    handle(dst, sk, iph, mtu, Hook::Pmtu6UpdateKprobe);
    0
}

#[inline(always)]
fn handle(dst: *const u8, sk: *const u8, iph: *const u8, mtu: u32, hook: Hook) {
    if mtu < IPV6_MIN_MTU {
        return;
    }
    let dev = kernel::read_ptr(dst, conf!(pmtu6.dst_dev));
    let netns = kernel::dev_netns(dev);
    if !emit::netns_wanted(netns) {
        return;
    }
    // The route's MTU now, as `ip6_mtu()` sees it: its MTU metric (a learned path MTU or a
    // configured `mtu`), else the device's (the kernel reads `idev->cnf.mtu6`, which follows
    // the device's MTU unless set apart).
    let metrics = kernel::read::<usize>(dst, conf!(pmtu6.dst_metrics)) & !DST_METRICS_FLAGS;
    let old_pmtu = kernel::read::<u32>(metrics as *const u8, METRIC_MTU_OFFSET);
    let dev_mtu = kernel::read::<u32>(dev, conf!(kernel.dev_mtu));
    let current = if old_pmtu != 0 { old_pmtu } else { dev_mtu };
    if mtu >= current {
        return;
    }
    let Some(mut entry) = pmtu::reserve_update(hook, netns, dev, mtu, old_pmtu, dev_mtu) else {
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.flow.family = AF_INET6;
    // As the kernel chooses: the quoted header when there is one, else the socket.
    if !iph.is_null() {
        kernel::read_into(&mut ev.flow.saddr, iph, IP6H_SADDR);
        kernel::read_into(&mut ev.flow.daddr, iph, IP6H_DADDR);
        ev.flow.proto = kernel::read::<u8>(iph, IP6H_NEXTHDR);
    } else {
        kernel::read_into(&mut ev.flow.saddr, sk, conf!(pmtu6.sk_saddr));
        kernel::read_into(&mut ev.flow.daddr, sk, conf!(pmtu6.sk_daddr));
        ev.flow.proto = kernel::read::<u16>(sk, conf!(pmtu6.sk_protocol)) as u8;
    }
    emit::submit(entry);
}
