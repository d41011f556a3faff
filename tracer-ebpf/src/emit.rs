//! Reserving events in the ring buffer, and counting the ones that do not fit.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    maps::ring_buf::RingBufEntry,
};
use tracer_common::{Event, Hook};

use crate::{
    config::conf,
    maps::{DRAFTS, DRAFT_LEVEL, DRAFT_LEVELS, EVENTS, LOST, NETNS_FILTER},
};

/// Hand a reserved event to the daemon (every program's way out: see [`wakeup_flags`]).
#[inline(always)]
pub fn submit(entry: RingBufEntry<Event>) {
    entry.submit(wakeup_flags());
}

/// Bytes one event takes in the ring: the record header (`BPF_RINGBUF_HDR_SZ`, 8) and the event,
/// rounded up to 8.
const RECORD_BYTES: u64 = (core::mem::size_of::<Event>() as u64 + 8 + 7) & !7;

/// Submit flags: wake the reader once per batch of waiting events (`Config::wakeup_events`, a
/// power of two chosen for the ring's size: `tracer_common::wakeup_batch`). Waking it is an
/// interrupt-work item per event: on a VM a self-IPI (an exit), ~10 µs measured per
/// retransmission event. Not at every event past the first batch: under a flood the reader is
/// always behind, and a wake-up per event was most of what a reported drop cost (~3.6 µs). A
/// batch boundary that two CPUs step over at once is caught at the next one; events below a
/// batch are found by the daemon's poll (`run/event_loop.rs`, `RING_POLL`, 100 ms), so an event
/// waits at most that long.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let batch = conf!(wakeup_events) as u64;
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64) / RECORD_BYTES;
    if waiting >= batch && waiting & batch.wrapping_sub(1) == 0 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Reserve and initialise an event; `None` (and one more lost event for `hook`) when the ring
/// buffer is full.
#[inline(always)]
pub fn reserve(kind: tracer_common::EventKind, hook: Hook) -> Option<RingBufEntry<Event>> {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            unsafe {
                zero_event(ev);
                (*ev).ts_ns = bpf_ktime_get_ns();
                (*ev).kind = kind as u8;
                (*ev).hook = hook as u8;
            }
            Some(entry)
        }
        None => {
            count_lost(hook);
            None
        }
    }
}

/// An event built in per-CPU map memory before the program decides whether to report it, then
/// copied into the ring buffer ([`Draft::send`]). Why not in the ring buffer itself: most drops are
/// not reported, and reserving for each would cost ring-buffer work on every drop. Why not on the
/// stack: the verifier tracks every stack value and every branch that refined it, and an older
/// one (6.1) walked the drop program's combinations of null devices, headers and veth peers past
/// its 1M-instruction limit. Values stored in map memory are not tracked, so decisions taken on
/// what the draft holds let those paths merge.
pub struct Draft {
    ev: *mut Event,
    level: *mut u32,
    hook: Hook,
}

impl Draft {
    /// A zeroed, stamped draft for this CPU's nesting level; `None` past [`DRAFT_LEVELS`].
    #[inline(always)]
    pub fn begin(kind: tracer_common::EventKind, hook: Hook) -> Option<Draft> {
        let level = DRAFT_LEVEL.get_ptr_mut(0)?;
        // A program interrupting this one between the read and the write leaves the level as
        // it found it before this one resumes.
        let current = unsafe { *level };
        if current >= DRAFT_LEVELS {
            return None;
        }
        let ev = DRAFTS.get_ptr_mut(current)?;
        unsafe {
            *level = current + 1;
            zero_event(ev);
            (*ev).ts_ns = bpf_ktime_get_ns();
            (*ev).kind = kind as u8;
            (*ev).hook = hook as u8;
        }
        Some(Draft { ev, level, hook })
    }

    #[inline(always)]
    pub fn event(&mut self) -> &mut Event {
        unsafe { &mut *self.ev }
    }

    /// Copy the draft into the ring buffer (counted as lost when it does not fit, with the
    /// folded drops whose count it carried: `fold.rs`).
    #[inline(always)]
    pub fn send(self) {
        let ev = unsafe { &*self.ev };
        if EVENTS.output::<Event>(ev, wakeup_flags()).is_err() {
            count_lost_n(self.hook, 1 + ev.prev_folded as u64);
        }
    }
}

impl Drop for Draft {
    #[inline(always)]
    fn drop(&mut self) {
        unsafe { *self.level -= 1 };
    }
}

/// Zero a reserved event with straight-line 8-byte stores. `ptr::write_bytes` compiles to a call
/// of compiler-builtins' `memset` (a loop), which the 6.1 verifier re-walks at every call site
/// and state: every program then exceeded its 1M-instruction budget there.
#[inline(always)]
unsafe fn zero_event(ev: *mut Event) {
    const WORDS: usize = core::mem::size_of::<Event>() / 8;
    const _: () = assert!(core::mem::size_of::<Event>() % 8 == 0);
    let words = ev as *mut u64;
    let mut i = 0;
    while i < WORDS {
        // Volatile: LLVM would otherwise fold the stores back into a memset call.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

#[inline(always)]
pub fn count_lost(hook: Hook) {
    count_lost_n(hook, 1);
}

#[inline(always)]
fn count_lost_n(hook: Hook, n: u64) {
    if let Some(counter) = LOST.get_ptr_mut(hook as u32) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *counter += n };
    }
}

/// Benchmarks only (`--bench-empty-programs`): the program returns at once; the verifier sees
/// the constant and prunes the rest, so what remains is the hook's own cost.
#[inline(always)]
pub fn empty_programs() -> bool {
    conf!(empty_programs) != 0
}

/// With `--netns`, only namespaces in the filter map are reported.
#[inline(always)]
pub fn netns_wanted(netns: u32) -> bool {
    if conf!(filter_netns) == 0 {
        return true;
    }
    unsafe { NETNS_FILTER.get(netns).is_some() }
}

/// Define one copy of a tc program per namespace slot (`MAX_TC_NETNS` of them): tc programs see
/// only an ifindex and namespaces reuse indexes, so the copy attached in a namespace stamps its
/// events with that namespace (`Config::tc_netns[slot]`).
macro_rules! tc_program_copies {
    ($handler:ident: $($name:ident = $slot:literal),+ $(,)?) => {
        $(
            #[aya_ebpf::macros::classifier]
            pub fn $name(ctx: aya_ebpf::programs::TcContext) -> i32 {
                if $crate::emit::empty_programs() {
                    return aya_ebpf::bindings::TC_ACT_UNSPEC;
                }
                $handler(&ctx, $slot)
            }
        )+
    };
}
pub(crate) use tc_program_copies;
