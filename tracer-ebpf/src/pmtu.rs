//! The kernel recording a smaller IPv4 path MTU: `__ip_rt_update_pmtu(rt, fl4, mtu)`. Every
//! learner goes through it: a socket acting on an ICMP frag-needed (TCP via
//! `tcp_v4_mtu_reduced`, UDP, ping), a tunnel learning from the underlay (`ipip_err`), a
//! forwarding node lowering the inner route's MTU (`tnl_update_pmtu`). It tells "the ICMP reached
//! the sender's stack and it shrank" from "it never arrived". The flow key has protocol and
//! addresses (no ports: the kernel builds it with none); the namespace says who learned.
//!
//! fentry where the kernel allows it, else a kprobe: the same handler either way. Only updates
//! that lower the route's MTU are reported: tunnels call this for every packet they send.
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::{flags, Event, EventKind, Hook};

use crate::{config::conf, emit, kernel};

const AF_INET: u16 = 2;

#[fentry(function = "__ip_rt_update_pmtu")]
pub fn pmtu_update_fentry(ctx: FEntryContext) -> i32 {
    if emit::empty_programs() {
        return 0;
    }
    let rt: *const u8 = ctx.arg(0);
    let fl4: *const u8 = ctx.arg(1);
    let mtu: u32 = ctx.arg(2);
    handle(rt, fl4, mtu, Hook::PmtuUpdateFentry);
    0
}

#[kprobe]
pub fn pmtu_update_kprobe(ctx: ProbeContext) -> u32 {
    if emit::empty_programs() {
        return 0;
    }
    let rt: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let fl4: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    let mtu: u32 = ctx.arg(2).unwrap_or(0);
    handle(rt, fl4, mtu, Hook::PmtuUpdateKprobe);
    0
}

#[inline(always)]
fn handle(rt: *const u8, fl4: *const u8, mtu: u32, hook: Hook) {
    let dev = kernel::read_ptr(rt, conf!(pmtu.rt_dev));
    let netns = kernel::dev_netns(dev);
    if !emit::netns_wanted(netns) {
        return;
    }
    // The route's MTU now, as `ipv4_mtu()` sees it: a learned path MTU, else the device's
    // (a route's own `mtu` metric is not read: an update between it and the device's MTU is
    // reported although the kernel ignores it).
    let word = kernel::read::<u32>(rt, conf!(pmtu.rt_pmtu_word));
    let old_pmtu = (word >> (conf!(pmtu.rt_pmtu_shift) & 31)) & 0x7fff_ffff;
    let dev_mtu = kernel::read::<u32>(dev, conf!(kernel.dev_mtu));
    let current = if old_pmtu != 0 { old_pmtu } else { dev_mtu };
    if mtu == 0 || mtu >= current {
        return;
    }
    let Some(mut entry) = reserve_update(hook, netns, dev, mtu, old_pmtu, dev_mtu) else {
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.flow.family = AF_INET;
    let saddr = kernel::read::<[u8; 4]>(fl4, conf!(pmtu.fl4_saddr));
    ev.flow.saddr[..4].copy_from_slice(&saddr);
    let daddr = kernel::read::<[u8; 4]>(fl4, conf!(pmtu.fl4_daddr));
    ev.flow.daddr[..4].copy_from_slice(&daddr);
    let ports = kernel::read::<[u8; 4]>(fl4, conf!(pmtu.fl4_ports));
    ev.flow.dport = u16::from_be_bytes([ports[0], ports[1]]);
    ev.flow.sport = u16::from_be_bytes([ports[2], ports[3]]);
    ev.flow.proto = kernel::read::<u8>(fl4, conf!(pmtu.fl4_proto));
    emit::submit(entry);
}

/// The `pmtu_update` event of either family up to its flow: the learner's namespace, the new
/// and the old path MTU, the route's device and the device's MTU.
#[inline(always)]
pub(crate) fn reserve_update(
    hook: Hook,
    netns: u32,
    dev: *const u8,
    mtu: u32,
    old_pmtu: u32,
    dev_mtu: u32,
) -> Option<RingBufEntry<Event>> {
    let mut entry = emit::reserve(EventKind::PmtuUpdate, hook)?;
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.netns = netns;
    ev.mtu = mtu;
    ev.aux1 = old_pmtu;
    ev.flags |= flags::HAS_OUT_DEV | flags::HAS_FLOW;
    ev.out_mtu = dev_mtu;
    ev.out_ifindex = kernel::read::<u32>(dev, conf!(kernel.dev_ifindex));
    // Reads zero their destination on a fault: no branch for the verifier to walk.
    kernel::read_into(&mut ev.out_ifname, dev, conf!(kernel.dev_name));
    Some(entry)
}
