//! Folding floods of identical drops in the kernel: a drop identical to the last one this CPU
//! sent (same reason, place, namespace, device, length, IPv4 addresses, protocol and ports or
//! ICMP type), within [`BURST_GAP_NS`] of the one before and [`BURST_MAX_NS`] of the burst's
//! first, is only counted in the CPU's [`FoldSlot`] — decided on a few reads, before the event
//! is read in full, so a flood costs neither the ring nor the daemon. The next drop the CPU sends
//! carries the count (`Event::prev_folded`), and the daemon reads what is left after detaching:
//! every drop is counted once.
//!
//! Only what cannot change a verdict's reading folds here: IPv4 UDP (not to a VXLAN port) and
//! ICMP. TCP is the verdict's evidence in its order with retransmissions, and encapsulated
//! packets carry pod flows the outer header cannot tell apart: those fold in the daemon, at the
//! ring's edge, where their order is kept (`tracer/src/run/fold.rs`). An ICMP too-big the kernel
//! generates ends the CPU's burst ([`end_burst`]): the drop of the packet it was for comes next
//! and is sent on its own, to pair with it by `skb`.
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use tracer_common::{Event, FOLD_KEY_WORDS};

use crate::{
    config::conf,
    kernel,
    maps::{DRAFT_LEVEL, FOLDS, FOLD_OFF},
};

/// Drops closer than this to the one before are a burst (as the daemon's).
const BURST_GAP_NS: u64 = 10_000_000;
/// A burst that goes on is sent again after this long: a flood is a line a second.
const BURST_MAX_NS: u64 = 1_000_000_000;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
const VXLAN_PORTS: [u16; 2] = [4789, 8472];

/// What makes a drop foldable and the same as another: `None` when it must not fold.
#[inline(always)]
pub fn key(
    skb: *const u8,
    dev: *const u8,
    netns: u32,
    location: u64,
    reason: u32,
) -> Option<[u64; FOLD_KEY_WORDS]> {
    if conf!(fold_drops) == 0 || kernel::l3_proto::<true>(skb) != 0x0800 {
        return None;
    }
    let nh = kernel::field::<u16, true>(skb, conf!(kernel.skb_network_header));
    if nh == kernel::HEADER_UNSET {
        return None;
    }
    let head = kernel::field::<usize, true>(skb, conf!(kernel.skb_head));
    let h: [u8; 24] = kernel::read(head.wrapping_add(nh as usize) as *const u8, 0);
    // IPv4 without options: the transport header's first bytes are in the copy.
    if h[0] != 0x45 {
        return None;
    }
    let proto = h[9];
    let transport = match proto {
        IPPROTO_UDP => {
            let dport = u16::from_be_bytes([h[22], h[23]]);
            if dport == VXLAN_PORTS[0] || dport == VXLAN_PORTS[1] {
                return None;
            }
            u32::from_ne_bytes([h[20], h[21], h[22], h[23]])
        }
        // Type and code: an echo's identifier and checksum change with every packet.
        IPPROTO_ICMP => u32::from_ne_bytes([h[20], h[21], 0, 0]),
        _ => return None,
    };
    let word = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]) as u64;
    let len = kernel::field::<u32, true>(skb, conf!(kernel.skb_len));
    let ifindex = if dev.is_null() {
        0
    } else {
        kernel::field::<u32, true>(dev, conf!(kernel.dev_ifindex))
    };
    Some([
        // Never zero: zero is "no burst".
        1 | (reason as u64) << 32,
        location,
        (netns as u64) << 32 | ifindex as u64,
        (len as u64) << 32 | proto as u64,
        word(12) << 32 | word(16),
        transport as u64,
    ])
}

/// Fold this drop into the CPU's burst if it is one more of it: true when it was (then the
/// program is done with it). Only the outermost drop program of a CPU folds: a nested one
/// could interleave with the slot's update.
#[inline(always)]
pub fn folded(key: &Option<[u64; FOLD_KEY_WORDS]>) -> bool {
    let Some(key) = key else { return false };
    let outermost = DRAFT_LEVEL.get_ptr(0).is_some_and(|l| unsafe { *l } == 0);
    if FOLD_OFF.get(0).is_some_and(|&off| off != 0) {
        return false;
    }
    let Some(slot) = FOLDS.get_ptr_mut(0) else {
        return false;
    };
    if !outermost {
        return false;
    }
    let s = unsafe { &mut *slot };
    let mut i = 0;
    while i < FOLD_KEY_WORDS {
        if s.key[i] != key[i] {
            return false;
        }
        i += 1;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(s.last_ns) >= BURST_GAP_NS || now.wrapping_sub(s.first_ns) >= BURST_MAX_NS {
        return false;
    }
    s.folded += 1;
    s.last_ns = now;
    true
}

/// The drop in `ev` is about to be sent: it starts the CPU's next burst (one that folds when
/// `key` is some), and carries the count of the burst before. Only from the outermost drop
/// program of the CPU (its draft is the first): a nested one, which interrupted this update,
/// would lose a count; it sends its event outside the bookkeeping (`burst` 0).
#[inline(always)]
pub fn start_burst(ev: &mut Event, key: &Option<[u64; FOLD_KEY_WORDS]>) {
    if conf!(fold_drops) == 0 || !DRAFT_LEVEL.get_ptr(0).is_some_and(|l| unsafe { *l } == 1) {
        return;
    }
    let Some(slot) = FOLDS.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *slot };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.prev_folded = s.folded;
    ev.prev_last_ns = s.last_ns;
    s.burst = s.burst.wrapping_add(1);
    ev.burst = s.burst;
    s.folded = 0;
    s.first_ns = ev.ts_ns;
    s.last_ns = ev.ts_ns;
    let mut i = 0;
    while i < FOLD_KEY_WORDS {
        s.key[i] = match key {
            Some(k) => k[i],
            None => 0,
        };
        i += 1;
    }
}

/// Something else happened on this CPU that the next drop must not be folded across (an ICMP
/// too-big generated for it): its count stays, for the next drop sent to carry.
#[inline(always)]
pub fn end_burst() {
    if let Some(slot) = FOLDS.get_ptr_mut(0) {
        unsafe { (*slot).key[0] = 0 };
    }
}
