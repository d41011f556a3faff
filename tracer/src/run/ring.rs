//! Reading the kernel→daemon ring buffer into the fan-out, and counting what never reached it:
//! events the kernel had no room for (its per-CPU `LOST` counters) and events still queued
//! when the run stops.
use aya::maps::{MapData, PerCpuArray, RingBuf};
use tracer_common::{Event, HOOK_COUNT};

use super::{
    fanout::Fanout,
    fold::{Folded, Folds, KernelFolds},
    now_unix_ns,
};
use crate::event::Record;
use crate::hooks::{self, Names};

/// Where events leave the ring: the kernel's folded drops unfolded into counted records, then
/// bursts folded at the edge.
pub struct Edge {
    pub folds: Folds,
    pub kernel: KernelFolds,
}

impl Edge {
    /// One event from the ring, after what the kernel folded before it on its CPU.
    pub fn take(&mut self, ev: &Event, names: &Names, fanout: &mut Fanout) {
        if let Some(folded) = self.kernel.before(ev) {
            self.take_folded(folded, names, fanout);
        }
        if let Some(rec) = hooks::decode_unnamed(ev, names) {
            self.folds.admit(ev, rec, |rec| deliver(rec, names, fanout));
        }
    }

    fn take_folded(&mut self, folded: Folded, names: &Names, fanout: &mut Fanout) {
        match folded {
            Folded::Events(ev, n) => {
                if let Some(mut rec) = hooks::decode_unnamed(&ev, names) {
                    rec.count = Some(u64::from(n));
                    self.folds
                        .admit(&ev, rec, |rec| deliver(rec, names, fanout));
                }
            }
            Folded::Lost(hook, n) => fanout.lost(hook, u64::from(n), now_unix_ns()),
        }
    }

    /// The run stops: every count the kernel's `slots` hold that no event brought, then what
    /// the edge holds.
    pub fn finish(
        &mut self,
        slots: &[tracer_common::FoldSlot],
        names: &Names,
        fanout: &mut Fanout,
    ) {
        for folded in self.kernel.finish(slots) {
            self.take_folded(folded, names, fanout);
        }
        self.folds.finish(|rec| deliver(rec, names, fanout));
    }
}

/// Read at most `limit` events through the [`Edge`]; whether there may be more.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    limit: usize,
    names: &Names,
    edge: &mut Edge,
    fanout: &mut Fanout,
) -> bool {
    let mut more = true;
    for _ in 0..limit {
        let Some(item) = ring.next() else {
            more = false;
            break;
        };
        let Some(ev) = read_event(&item) else {
            continue;
        };
        drop(item);
        edge.take(&ev, names, fanout);
    }
    fanout.batch_end();
    more
}

/// Name a record the folding let through, and hand it to the outputs.
pub fn deliver(mut rec: Record, names: &Names, fanout: &mut Fanout) {
    hooks::attribute(&mut rec, names);
    fanout.deliver(&rec);
}

/// Read up to `limit` queued events without decoding them and report them as `lost`, per
/// hook: unread at the stop is lost, and lost is counted, never silent.
pub fn discard_as_lost(ring: &mut RingBuf<MapData>, limit: usize, fanout: &mut Fanout) {
    let mut per_hook = [0u64; HOOK_COUNT as usize];
    for _ in 0..limit {
        let Some(item) = ring.next() else { break };
        if let Some(n) = read_event(&item).and_then(|ev| per_hook.get_mut(ev.hook as usize)) {
            *n += 1;
        }
    }
    let now = now_unix_ns();
    for (hook, n) in per_hook.iter().enumerate() {
        if *n > 0 {
            fanout.lost(hook as u8, *n, now);
        }
    }
}

/// One ring item as the kernel programs wrote it; `None` for an item too short to be one.
fn read_event(item: &[u8]) -> Option<Event> {
    if item.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the kernel programs write whole `Event`s; read unaligned to be safe.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) })
}

/// The kernel's per-CPU, per-hook counters of events the ring had no room for.
pub struct LostCounters {
    map: PerCpuArray<MapData, u64>,
    /// Per hook, the total already reported.
    seen: [u64; HOOK_COUNT as usize],
}

impl LostCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> LostCounters {
        LostCounters {
            map,
            seen: [0; HOOK_COUNT as usize],
        }
    }

    /// Turn growth of the counters into `lost` records, one per hook that lost some.
    pub fn report(&mut self, fanout: &mut Fanout) {
        for hook in 0..HOOK_COUNT {
            let Ok(values) = self.map.get(&hook, 0) else {
                continue;
            };
            let total: u64 = values.iter().sum();
            let delta = total.saturating_sub(self.seen[hook as usize]);
            if delta == 0 {
                continue;
            }
            self.seen[hook as usize] = total;
            fanout.lost(hook as u8, delta, now_unix_ns());
        }
    }
}
