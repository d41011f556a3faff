//! tc (TCX) ingress on uplinks: ICMP too-big arriving from the underlay (a router telling this
//! node that its packets are too big), decoded by the daemon down to the quoted pod flow; and
//! what arrived from each peer (the far end's view): per window, device and outer (source,
//! destination), the packets, bytes, largest and a size histogram, counted in the per-CPU
//! `ARRIVALS` map that the daemon reads once per window (`tracer/src/run/arrivals.rs`). Both
//! come from one copy of the outer IP header's first bytes.
use core::mem::MaybeUninit;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use tracer_common::{arrival_class, ArrivalCounts, ArrivalKey, EventKind};

use crate::{
    config::conf,
    emit,
    maps::{ARRIVALS, ARRIVAL_GENERATION},
    packet::{self, ETH_P_IP, ETH_P_IPV6, IPV4_WINDOW, IPV6_WINDOW},
    transmit,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

emit::tc_program_copies!(rx:
    rx_tc_0 = 0, rx_tc_1 = 1, rx_tc_2 = 2, rx_tc_3 = 3,
    rx_tc_4 = 4, rx_tc_5 = 5, rx_tc_6 = 6, rx_tc_7 = 7,
);

#[inline(always)]
fn rx(ctx: &TcContext, slot: usize) -> i32 {
    let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    if conf!(count_arrivals) == 0 {
        // `--arrivals-interval 0`: the ICMP check alone, as before arrivals were counted.
        if packet::is_icmp_too_big(ctx) {
            transmit::report(ctx, slot, EventKind::IcmpTooBigReceived, 0);
        }
        return TC_ACT_UNSPEC;
    }
    let too_big = if ethertype == ETH_P_IP {
        let mut h = MaybeUninit::<[u8; IPV4_WINDOW]>::uninit();
        if packet::load(ctx, 0, &mut h) {
            let h = unsafe { h.assume_init_ref() };
            count_ipv4(ctx, slot, h);
            packet::ipv4_payload(ctx, 0, h).is_some_and(|p| packet::carries_too_big(ctx, &p))
        } else {
            // Shorter than the window (a bare header): counted, and too short for an ICMP.
            let mut h = MaybeUninit::<[u8; 20]>::uninit();
            if packet::load(ctx, 0, &mut h) {
                count_ipv4(ctx, slot, unsafe { h.assume_init_ref() });
            }
            false
        }
    } else if ethertype == ETH_P_IPV6 {
        let mut h = MaybeUninit::<[u8; IPV6_WINDOW]>::uninit();
        if packet::load(ctx, 0, &mut h) {
            let h = unsafe { h.assume_init_ref() };
            count_ipv6(ctx, slot, h);
            packet::ipv6_payload(0, h).is_some_and(|p| packet::carries_too_big(ctx, &p))
        } else {
            let mut h = MaybeUninit::<[u8; 40]>::uninit();
            if packet::load(ctx, 0, &mut h) {
                count_ipv6(ctx, slot, unsafe { h.assume_init_ref() });
            }
            false
        }
    } else {
        // Not IP: nothing to count, and no ICMP.
        false
    };
    if too_big {
        // The device MTU is not what an arriving ICMP is about: the daemon takes the MTU from
        // the message itself.
        transmit::report(ctx, slot, EventKind::IcmpTooBigReceived, 0);
    }
    TC_ACT_UNSPEC
}

/// Count an IPv4 packet whose header starts `h` (at least 20 bytes).
#[inline(always)]
fn count_ipv4<const N: usize>(ctx: &TcContext, slot: usize, h: &[u8; N]) {
    const { assert!(N >= 20) };
    if h[0] >> 4 != 4 {
        return;
    }
    let word = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let key = key(ctx, slot, AF_INET, [word(12), 0, 0, 0], [word(16), 0, 0, 0]);
    count(ctx, &key, u16::from_be_bytes([h[2], h[3]]) as u32);
}

/// Count an IPv6 packet whose header starts `h` (at least 40 bytes). Its size is the fixed
/// header and the payload length.
#[inline(always)]
fn count_ipv6<const N: usize>(ctx: &TcContext, slot: usize, h: &[u8; N]) {
    const { assert!(N >= 40) };
    if h[0] >> 4 != 6 {
        return;
    }
    let word = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let key = key(
        ctx,
        slot,
        AF_INET6,
        [word(8), word(12), word(16), word(20)],
        [word(24), word(28), word(32), word(36)],
    );
    count(ctx, &key, 40 + u16::from_be_bytes([h[4], h[5]]) as u32);
}

/// The key of this packet: the current window, this program copy's namespace slot, the
/// device, the addresses (as words, network byte order). Every byte is written (the kernel
/// hashes all 48), word by word: zeroing the address arrays as arrays compiled to calls of a
/// byte-loop `memset` (see `emit.rs`, `zero_event`).
#[inline(always)]
fn key(
    ctx: &TcContext,
    slot: usize,
    family: u32,
    src: [u32; 4],
    dst: [u32; 4],
) -> MaybeUninit<ArrivalKey> {
    // A read of the generation that races with the daemon's flip counts this packet in the
    // window before: its key is then written after the daemon read that window, and is read
    // with the next one (late, not lost: the daemon reads every key not of the current window).
    let generation = ARRIVAL_GENERATION
        .get_ptr(0)
        .map_or(0, |g| unsafe { core::ptr::read_volatile(g) });
    const _: () = assert!(core::mem::size_of::<ArrivalKey>() == 12 * 4);
    let mut key = MaybeUninit::<ArrivalKey>::uninit();
    let words = key.as_mut_ptr() as *mut u32;
    let head = [
        generation,
        slot as u32,
        unsafe { (*ctx.skb.skb).ifindex },
        family,
    ];
    let mut i = 0;
    while i < 4 {
        // Volatile: LLVM would otherwise fold the stores back into a memset call.
        unsafe {
            core::ptr::write_volatile(words.add(i), head[i]);
            core::ptr::write_volatile(words.add(4 + i), src[i]);
            core::ptr::write_volatile(words.add(8 + i), dst[i]);
        }
        i += 1;
    }
    key
}

/// Add one arrival of `ip_len` bytes (the IP total length) to this CPU's counts under `key`.
///
/// A GSO packet (GRO merged what arrived, or a local sender's TSO packet crossed a veth) stands
/// for `gso_segs` packets of `gso_size` payload each but the last: it counts as that many, each
/// of the size of the super-packet less all but one segment's payload. That is exact when the
/// last segment is full (bulk transfer) and never more than the largest segment otherwise, so
/// a size is never claimed that did not arrive; bytes likewise count each segment's headers
/// as far as they are known. A packet beyond 64 KiB (BIG TCP: IP length 0) counts as one.
#[inline(always)]
fn count(ctx: &TcContext, key: &MaybeUninit<ArrivalKey>, ip_len: u32) {
    // SAFETY: `key` wrote every word.
    let key = unsafe { key.assume_init_ref() };
    let skb = unsafe { &*ctx.skb.skb };
    let mut packets: u64 = 1;
    let mut len = ip_len as u64;
    let mut bytes = ip_len as u64;
    let (segs, seg_size) = (skb.gso_segs as u64, skb.gso_size as u64);
    if segs > 1 && seg_size > 0 {
        let rest = (segs - 1) * seg_size;
        if len > rest {
            len -= rest;
            packets = segs;
            // Each further segment repeats the headers: `len - seg_size` of them at least.
            bytes += (segs - 1) * len.saturating_sub(seg_size);
        }
    }
    let class = arrival_class(len as u32) & 7;
    // The coarse clock (the last tick's time, CLOCK_MONOTONIC's base): a precise read was ~30
    // ns of ~90 per packet, and an arrival window's first and last times need no more than a
    // tick's precision.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(c) = ARRIVALS.get_ptr_mut(key) {
        // This CPU's slot of the key: no other writer, plain adds. A key another CPU created
        // starts at zero here.
        let c = unsafe { &mut *c };
        if c.packets == 0 {
            c.first_ns = now;
        }
        c.packets += packets;
        c.bytes += bytes;
        if len > c.max_len {
            c.max_len = len;
        }
        c.last_ns = now;
        c.classes[class] += packets;
    } else {
        // Built word by word in place, for the same reason as the key.
        let mut fresh = MaybeUninit::<ArrivalCounts>::uninit();
        let words = fresh.as_mut_ptr() as *mut u64;
        let head = [packets, bytes, len, now, now];
        const CLASSES_AT: usize = 5;
        const _: () = assert!(core::mem::size_of::<ArrivalCounts>() == 8 * (CLASSES_AT + 8));
        let mut i = 0;
        while i < CLASSES_AT + 8 {
            let v = if i < CLASSES_AT {
                head[i]
            } else if i - CLASSES_AT == class {
                packets
            } else {
                0
            };
            unsafe { core::ptr::write_volatile(words.add(i), v) };
            i += 1;
        }
        // BPF_ANY: when another CPU created the key meanwhile, this updates this CPU's slot
        // of it (per-CPU LRU hash), so nothing is overwritten. Fails only without memory.
        if ARRIVALS
            .insert(key, unsafe { fresh.assume_init_ref() }, 0)
            .is_err()
        {
            aya_log_ebpf::warn!(
                ctx,
                target: tracer_common::KERNEL_LOG_TARGET,
                "arrivals: the map refused a new key; this packet is not counted"
            );
        }
    }
}
