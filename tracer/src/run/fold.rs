//! Folding bursts at the ring's edge: identical drops (same hook, place, reason, flow and sizes)
//! that follow each other within [`BURST_GAP_NS`] become one record with a `count`, after the
//! decode and before names, the analysis and the outputs — where a flood costs the daemon its
//! time. The first event of a burst is delivered at once (the stream stays live); the rest are
//! counted and delivered as one record when the burst ends, when something else about the same
//! sender comes, or at the next tick (so a flood that goes on gives a line a second, not one per
//! packet).
//!
//! What the verdict needs is kept exact:
//! - only drops and oversize transmits fold; retransmissions, ICMP and path-MTU events never do
//!   (their order and timing are the evidence);
//! - any such event of a sender (its protocol, address and port) first delivers that sender's
//!   folded drops and restarts its bursts, so the analysis sees a connection's events in order,
//!   and the drop of the packet an ICMP too-big was generated for (which follows the ICMP) is
//!   delivered on its own and pairs with it by `skb`;
//! - a sender's folded drops are delivered together, in the order their bursts started: a
//!   fragment's drop and its original's (two places, one packet) stay next to each other;
//! - a burst never spans a gap of [`BURST_GAP_NS`], far below the verdict's episode gap (150 ms):
//!   a record never hides the time structure the verdict reads.
//!
//! Every event is counted once: delivered alone (`count` 1) or in a folded record's `count`.
use std::net::IpAddr;

use aya::maps::{Array, MapData, PerCpuArray};
// FxHash: the map is looked up for every event (SipHash's DoS resistance buys nothing for keys
// the kernel wrote).
use rustc_hash::FxHashMap as HashMap;
use tracer_common::{Event, FoldSlot, Hook};

use crate::event::{Kind, Outer, Record};

/// Events of one kind closer than this to the one before are a burst.
pub const BURST_GAP_NS: u64 = 10_000_000;
/// Bursts followed at once, over all senders. Past it, new kinds of event are delivered one by
/// one (correct, only not cheaper).
const MAX_BURSTS: usize = 4096;

/// Who sent the packet: the analysis joins a connection's drops, retransmissions and ICMP by it
/// (its destination may differ before and after DNAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Sender {
    proto: Option<u8>,
    src: Option<IpAddr>,
    sport: Option<u16>,
}

impl Sender {
    fn of(rec: &Record) -> Sender {
        Sender {
            proto: rec.flow.proto,
            src: rec.flow.src,
            sport: rec.flow.sport,
        }
    }
}

/// Everything but the time and the packet's identity (`skb`, bytes): two events with equal keys
/// would print as the same line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BurstKey {
    kind: u8,
    hook: u8,
    flags: u16,
    netns: u32,
    ifindex: u32,
    location: u64,
    reason: u32,
    len: u32,
    l3_len: u32,
    mtu: u32,
    gso: (u16, u16),
    out: (u32, u32),
    peer: (u32, u32),
    dst: Option<IpAddr>,
    dport: Option<u16>,
    outer: Option<Outer>,
    icmp_mtu: Option<u32>,
}

impl BurstKey {
    fn of(ev: &Event, rec: &Record) -> BurstKey {
        BurstKey {
            kind: ev.kind,
            hook: ev.hook,
            flags: ev.flags,
            netns: ev.netns,
            ifindex: ev.ifindex,
            location: ev.location,
            reason: ev.reason,
            len: ev.len,
            l3_len: ev.l3_len,
            mtu: ev.mtu,
            gso: (ev.gso_size, ev.gso_segs),
            out: (ev.out_ifindex, ev.out_mtu),
            peer: (ev.peer_ifindex, ev.peer_mtu),
            dst: rec.flow.dst,
            dport: rec.flow.dport,
            outer: rec.flow.outer.clone(),
            icmp_mtu: rec.icmp.as_ref().and_then(|i| i.mtu),
        }
    }
}

/// One burst being followed.
struct Burst<K> {
    key: K,
    /// Kernel time of its last event.
    last_ns: u64,
    /// The last event folded, with `count` = events folded since the burst's first or the last
    /// delivery; `None` when none is waiting. Boxed: most bursts never fold, and a burst
    /// entry made per new sender stays small (a `Record` is ~550 bytes).
    folded: Option<Box<Record>>,
    /// An event came since the last tick.
    touched: bool,
}

/// The bursts of every sender, and how many there are. `K` tells events apart: [`BurstKey`] for
/// kernel events; the tests also fold recorded logs by their lines.
pub struct Folds<K = BurstKey> {
    by_sender: HashMap<Sender, Vec<Burst<K>>>,
    bursts: usize,
    /// Off (`--no-fold`): every event is delivered as it comes.
    on: bool,
}

impl Folds<BurstKey> {
    /// Take a decoded kernel event: `deliver` is called with what should go on now, in order —
    /// waiting folded records first, then the event itself unless it was folded.
    pub fn admit(&mut self, ev: &Event, rec: Record, deliver: impl FnMut(Record)) {
        let key = matches!(rec.kind, Kind::Drop | Kind::OversizeTx).then(|| BurstKey::of(ev, &rec));
        self.admit_keyed(key, ev.ts_ns, rec, deliver);
    }
}

impl<K: Eq> Folds<K> {
    pub fn new(on: bool) -> Folds<K> {
        Folds {
            by_sender: HashMap::default(),
            bursts: 0,
            on,
        }
    }

    /// [`Folds::admit`] with the event's key (`None`: a kind that never folds) and kernel time.
    fn admit_keyed(
        &mut self,
        key: Option<K>,
        ts_ns: u64,
        rec: Record,
        mut deliver: impl FnMut(Record),
    ) {
        if !self.on {
            deliver(rec);
            return;
        }
        let sender = Sender::of(&rec);
        let Some(key) = key else {
            self.restart(sender, &mut deliver);
            deliver(rec);
            return;
        };
        // Past the bound a new sender gets no entry at all: a flood of ever new senders (random
        // source ports) must not grow the map for a tick.
        if self.bursts >= MAX_BURSTS && !self.by_sender.contains_key(&sender) {
            deliver(rec);
            return;
        }
        let bursts = self.by_sender.entry(sender).or_default();
        match bursts.iter().position(|b| b.key == key) {
            Some(i) => {
                let b = &mut bursts[i];
                b.touched = true;
                let gap = ts_ns.wrapping_sub(b.last_ns);
                if ts_ns >= b.last_ns && gap < BURST_GAP_NS {
                    b.last_ns = ts_ns;
                    let count = b.folded.as_ref().map_or(0, |r| r.events()) + rec.events();
                    let slot = match &mut b.folded {
                        Some(slot) => {
                            **slot = rec;
                            slot
                        }
                        None => b.folded.insert(Box::new(rec)),
                    };
                    slot.count = Some(count);
                    return;
                }
                // The burst ended: what the sender has waiting goes first, then a new burst
                // starts with this event.
                b.last_ns = ts_ns;
                for b in bursts.iter_mut() {
                    if let Some(r) = b.folded.take() {
                        deliver(*r);
                    }
                }
                deliver(rec);
            }
            None => {
                if self.bursts < MAX_BURSTS {
                    self.bursts += 1;
                    bursts.push(Burst {
                        key,
                        last_ns: ts_ns,
                        folded: None,
                        touched: true,
                    });
                }
                deliver(rec);
            }
        }
    }

    /// Once a second: deliver every folded record, and forget bursts that saw no event since
    /// the tick before.
    pub fn tick(&mut self, mut deliver: impl FnMut(Record)) {
        let mut forgotten = 0;
        self.by_sender.retain(|_, bursts| {
            for b in bursts.iter_mut() {
                if let Some(r) = b.folded.take() {
                    deliver(*r);
                }
            }
            let before = bursts.len();
            bursts.retain_mut(|b| std::mem::replace(&mut b.touched, false));
            forgotten += before - bursts.len();
            !bursts.is_empty()
        });
        self.bursts -= forgotten;
    }

    /// The run ends: deliver every folded record.
    pub fn finish(&mut self, mut deliver: impl FnMut(Record)) {
        for (_, bursts) in self.by_sender.drain() {
            for b in bursts {
                if let Some(r) = b.folded {
                    deliver(*r);
                }
            }
        }
        self.bursts = 0;
    }

    /// Something other than a drop about `sender`: its folded drops go first, and its next drops
    /// start new bursts (delivered at once).
    fn restart(&mut self, sender: Sender, deliver: &mut impl FnMut(Record)) {
        if let Some(bursts) = self.by_sender.remove(&sender) {
            self.bursts -= bursts.len();
            for b in bursts {
                if let Some(r) = b.folded {
                    deliver(*r);
                }
            }
        }
    }
}

/// The drop program's folds (`tracer-ebpf/src/fold.rs`): a CPU's burst is its first event, sent,
/// then drops counted in the CPU's slot; the count comes with the next drop the CPU sends
/// (`Event::prev_folded`) or, at the stop, from the slot. Here the count becomes the burst's
/// first event again, at its last drop's time, with `count` — or `lost`, when that first event
/// never reached the daemon.
pub struct KernelFolds {
    slots: Option<PerCpuArray<MapData, FoldSlot>>,
    off: Option<Array<MapData, u32>>,
    /// Per CPU: the first event of the burst it is in, and the last burst whose count came.
    cpus: Vec<CpuBursts>,
}

#[derive(Default)]
struct CpuBursts {
    first: Option<Box<Event>>,
    closed: u32,
}

/// Drops the kernel folded, as the daemon hands them on.
pub enum Folded {
    /// The burst's first event at its last drop's time, standing for `count` drops.
    Events(Box<Event>, u32),
    /// `count` drops of a burst whose first event was lost in the ring (hook number).
    Lost(u8, u32),
}

impl KernelFolds {
    pub fn new(slots: PerCpuArray<MapData, FoldSlot>, off: Array<MapData, u32>) -> KernelFolds {
        KernelFolds {
            slots: Some(slots),
            off: Some(off),
            cpus: Vec::new(),
        }
    }

    /// Without the maps (tests of what the events carry).
    #[cfg(test)]
    pub fn detached() -> KernelFolds {
        KernelFolds {
            slots: None,
            off: None,
            cpus: Vec::new(),
        }
    }

    /// A sent drop: the drops folded into its CPU's burst before it, if any.
    pub fn before(&mut self, ev: &Event) -> Option<Folded> {
        if ev.kind != tracer_common::EventKind::Drop as u8 || ev.burst == 0 {
            return None;
        }
        let cpu = ev.cpu as usize;
        if cpu >= 4096 {
            return None;
        }
        if self.cpus.len() <= cpu {
            self.cpus.resize_with(cpu + 1, CpuBursts::default);
        }
        let c = &mut self.cpus[cpu];
        let closing = ev.burst.wrapping_sub(1);
        let folded = (ev.prev_folded > 0)
            .then(|| c.close(closing, ev.prev_folded, ev.prev_last_ns, ev.hook));
        c.first = Some(Box::new(*ev));
        folded
    }

    /// The run stops: no drop folds from now on (what the slots hold is then final).
    pub fn stop_folding(&mut self) {
        if let Some(off) = self.off.as_mut() {
            if let Err(e) = off.set(0, 1, 0) {
                eprintln!("tracer: could not stop the kernel's folding: {e}");
            }
        }
    }

    /// After [`KernelFolds::stop_folding`] and a read of the ring: what each CPU's slot holds.
    /// Read the ring once more before [`KernelFolds::finish`]: a drop sent between the two reads
    /// carries its CPU's count (and the slot no longer does), one sent after the second is not
    /// read, and its count is the slot's. Each burst's count is taken once either way.
    pub fn read_slots(&self) -> Vec<FoldSlot> {
        self.slots
            .as_ref()
            .and_then(|slots| slots.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The counts of `slots` (per CPU, [`KernelFolds::read_slots`]) no event brought.
    pub fn finish(&mut self, slots: &[FoldSlot]) -> Vec<Folded> {
        let mut out = Vec::new();
        for (cpu, slot) in slots.iter().enumerate() {
            if slot.folded == 0 || slot.burst == 0 {
                continue;
            }
            if self.cpus.len() <= cpu {
                self.cpus.resize_with(cpu + 1, CpuBursts::default);
            }
            let c = &mut self.cpus[cpu];
            // An event already brought this burst's count (or a later one's).
            if (slot.burst.wrapping_sub(c.closed) as i32) <= 0 {
                continue;
            }
            out.push(c.close(
                slot.burst,
                slot.folded,
                slot.last_ns,
                Hook::DropsTpBtf as u8,
            ));
        }
        out
    }
}

impl CpuBursts {
    /// The count of `burst` came: `n` drops, the last at `last_ns`.
    fn close(&mut self, burst: u32, n: u32, last_ns: u64, hook: u8) -> Folded {
        self.closed = burst;
        match self.first.take() {
            Some(mut first) if first.burst == burst => {
                first.ts_ns = last_ns;
                first.prev_folded = 0;
                Folded::Events(first, n)
            }
            _ => Folded::Lost(hook, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{EventKind, Hook};

    const MS: u64 = 1_000_000;

    /// A drop of a 1550-byte packet of `sport` → 10.0.0.2:80 at `ts_ns`, with its record.
    fn drop(ts_ns: u64, sport: u16, location: u64) -> (Event, Record) {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::Drop as u8;
        ev.hook = Hook::DropsTpBtf as u8;
        ev.ts_ns = ts_ns;
        ev.location = location;
        ev.len = 1550;
        ev.l3_len = 1550;
        ev.netns = 7;
        let mut rec = Record::new(Kind::Drop, "tp_btf/kfree_skb", ts_ns as i128);
        rec.count = Some(1);
        rec.flow.proto = Some(6);
        rec.flow.src = Some("10.0.0.1".parse().unwrap());
        rec.flow.sport = Some(sport);
        rec.flow.dst = Some("10.0.0.2".parse().unwrap());
        rec.flow.dport = Some(80);
        rec.skb = Some(ts_ns);
        (ev, rec)
    }

    fn other(kind: EventKind, k: Kind, ts_ns: u64, sport: u16) -> (Event, Record) {
        let (mut ev, mut rec) = drop(ts_ns, sport, 0);
        ev.kind = kind as u8;
        rec.kind = k;
        (ev, rec)
    }

    /// (kind, count, ts) of what was delivered.
    type Seen = Vec<(Kind, u64, i128)>;

    fn admit(folds: &mut Folds, seen: &mut Seen, (ev, rec): (Event, Record)) {
        folds.admit(&ev, rec, |r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
    }

    fn total(seen: &Seen) -> u64 {
        seen.iter().map(|s| s.1).sum()
    }

    #[test]
    fn a_flood_is_its_first_event_then_one_record_a_tick_and_every_event_is_counted() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        for i in 0..10_000 {
            admit(&mut folds, &mut seen, drop(i * 10_000, 40000, 0x81));
        }
        assert_eq!(seen, [(Kind::Drop, 1, 0)], "only the first comes at once");
        folds.tick(|r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
        assert_eq!(
            seen[1],
            (Kind::Drop, 9_999, 9_999 * 10_000),
            "the rest, at the last's time"
        );
        for i in 10_000..10_010 {
            admit(&mut folds, &mut seen, drop(i * 10_000, 40000, 0x81));
        }
        assert_eq!(
            seen.len(),
            2,
            "the flood goes on: still folded after the tick"
        );
        folds.finish(|r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
        assert_eq!(seen.len(), 3);
        assert_eq!(total(&seen), 10_010);
    }

    #[test]
    fn events_further_apart_than_a_burst_are_each_delivered() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        // A sender retrying at timeouts: 200 ms, 400 ms, 800 ms.
        for ts in [0, 200 * MS, 600 * MS, 1400 * MS] {
            admit(&mut folds, &mut seen, drop(ts, 40000, 0x81));
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|s| s.1 == 1));
    }

    #[test]
    fn a_burst_that_ends_is_delivered_before_the_event_that_ends_it() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        for ts in [0, MS, 2 * MS, 3 * MS] {
            admit(&mut folds, &mut seen, drop(ts, 40000, 0x81));
        }
        admit(&mut folds, &mut seen, drop(500 * MS, 40000, 0x81));
        assert_eq!(
            seen,
            [
                (Kind::Drop, 1, 0),
                (Kind::Drop, 3, 3 * MS as i128),
                (Kind::Drop, 1, 500 * MS as i128)
            ]
        );
    }

    #[test]
    fn a_retransmission_or_an_icmp_of_the_sender_comes_after_its_folded_drops() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        for ts in [0, MS, 2 * MS] {
            admit(&mut folds, &mut seen, drop(ts, 40000, 0x81));
        }
        // Another sender's drops stay folded.
        for ts in [0, MS] {
            admit(&mut folds, &mut seen, drop(ts, 40001, 0x81));
        }
        let icmp = other(
            EventKind::IcmpTooBigSent,
            Kind::IcmpTooBigSent,
            3 * MS,
            40000,
        );
        admit(&mut folds, &mut seen, icmp);
        // The packet the ICMP was for: on its own, to pair with it.
        admit(&mut folds, &mut seen, drop(3 * MS, 40000, 0x81));
        let retransmit = other(EventKind::TcpRetransmit, Kind::TcpRetransmit, 4 * MS, 40000);
        admit(&mut folds, &mut seen, retransmit);
        assert_eq!(
            seen,
            [
                (Kind::Drop, 1, 0),
                (Kind::Drop, 1, 0),
                (Kind::Drop, 2, 2 * MS as i128),
                (Kind::IcmpTooBigSent, 1, 3 * MS as i128),
                (Kind::Drop, 1, 3 * MS as i128),
                (Kind::TcpRetransmit, 1, 4 * MS as i128),
            ]
        );
        folds.finish(|r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
        assert_eq!(seen.last(), Some(&(Kind::Drop, 1, MS as i128)));
        assert_eq!(total(&seen), 8);
    }

    #[test]
    fn a_fragment_and_its_original_fold_apart_and_are_delivered_together() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        let mut locations = Vec::new();
        // Each packet: its first fragment dropped at the veth, then the original where it was
        // cut. Two places, two bursts, one sender.
        for i in 0..5 {
            for location in [0x81, 0x99] {
                let (ev, rec) = drop(i * MS, 40000, location);
                folds.admit(&ev, rec, |r| {
                    locations.push(ev.location);
                    seen.push((r.kind, r.events(), r.ts_unix_ns))
                });
            }
        }
        assert_eq!(seen.len(), 2, "the first of each at once");
        folds.admit(
            &drop(300 * MS, 40000, 0x81).0,
            drop(300 * MS, 40000, 0x81).1,
            |r| seen.push((r.kind, r.events(), r.ts_unix_ns)),
        );
        assert_eq!(
            &seen[2..],
            [
                (Kind::Drop, 4, 4 * MS as i128),
                (Kind::Drop, 4, 4 * MS as i128),
                (Kind::Drop, 1, 300 * MS as i128),
            ],
            "both bursts of the sender, next to each other, before the new event"
        );
    }

    /// The key of a recorded event: its line without time, packet identity and count.
    fn line_key(line: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["ts", "skb", "tcp_seq", "count"] {
            v.as_object_mut().unwrap().remove(field);
        }
        v.to_string()
    }

    /// Fold a recorded log as the daemon would have (ticks by the events' clock); its lines
    /// other than events stay where they were. (lines of events in, out).
    fn fold_log(text: &str) -> (String, usize, usize) {
        let mut out = Vec::new();
        let write = |out: &mut Vec<u8>, r: Record| {
            crate::sink::json::write_record(out, &r);
            out.push(b'\n');
        };
        let mut folds: Folds<String> = Folds::new(true);
        let mut next_tick = None;
        let mut events = 0;
        for line in text.lines() {
            let rec = match Record::from_line(line.as_bytes()) {
                Ok(rec) if rec.kind != Kind::Lost => rec,
                _ => {
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                    continue;
                }
            };
            events += 1;
            let ts = rec.ts_unix_ns as u64;
            let tick = *next_tick.get_or_insert(ts + 1_000 * MS);
            if ts >= tick {
                folds.tick(|r| write(&mut out, r));
                next_tick = Some(ts + 1_000 * MS);
            }
            let key = matches!(rec.kind, Kind::Drop | Kind::OversizeTx).then(|| line_key(line));
            folds.admit_keyed(key, ts, rec, |r| write(&mut out, r));
        }
        folds.finish(|r| write(&mut out, r));
        let out = String::from_utf8(out).unwrap();
        let folded = out
            .lines()
            .filter(|l| Record::from_line(l.as_bytes()).is_ok_and(|r| r.kind != Kind::Lost))
            .count();
        (out, events, folded)
    }

    /// What the folding keeps exact, on the incidents recorded in the lab: every verdict of
    /// every log is the same folded as it was line by line.
    #[test]
    fn recorded_incidents_give_the_same_verdicts_folded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/verdict/testdata");
        let tmp = std::env::temp_dir().join(format!("tracer-fold-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let (mut lines_in, mut lines_out) = (0, 0);
        let mut logs = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            let (folded, events, lines) = fold_log(&std::fs::read_to_string(&path).unwrap());
            let folded_path = tmp.join(path.file_name().unwrap());
            std::fs::write(&folded_path, folded).unwrap();
            let (stats, verdicts) = crate::report::report(&path).unwrap();
            let (folded_stats, folded_verdicts) = crate::report::report(&folded_path).unwrap();
            assert_eq!(stats.events, folded_stats.events, "{}", path.display());
            assert_eq!(verdicts, folded_verdicts, "{}", path.display());
            lines_in += events;
            lines_out += lines;
            logs += 1;
        }
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(logs >= 10, "only {logs} recorded logs");
        println!("{logs} logs: {lines_in} event lines, {lines_out} folded");
        assert!(
            lines_out < lines_in,
            "nothing folded: the test proves nothing"
        );
    }

    /// A drop the kernel sent from `cpu` as the first of burst `burst`, after `prev` drops folded
    /// into the burst before (the last at `prev_last_ns`).
    fn sent(cpu: u32, burst: u32, prev: u32, prev_last_ns: u64) -> Event {
        let (mut ev, _) = drop(burst as u64 * MS, 40000, 0x81);
        ev.cpu = cpu;
        ev.burst = burst;
        ev.prev_folded = prev;
        ev.prev_last_ns = prev_last_ns;
        ev
    }

    #[test]
    fn the_kernels_count_comes_back_as_the_bursts_first_event_at_its_last_time() {
        let mut k = KernelFolds::detached();
        assert!(k.before(&sent(1, 1, 0, 0)).is_none());
        // Another CPU's bursts are its own.
        assert!(k.before(&sent(0, 7, 0, 0)).is_none());
        match k.before(&sent(1, 2, 41, 77)) {
            Some(Folded::Events(first, n)) => {
                assert_eq!((first.cpu, first.burst, n, first.ts_ns), (1, 1, 41, 77));
            }
            _ => panic!("burst 1's count"),
        }
        // Burst 3's first never came (lost in the ring): its count is lost, and said so.
        assert!(k.before(&sent(1, 4, 0, 0)).is_none());
        match k.before(&sent(1, 5, 9, 99)) {
            Some(Folded::Events(first, 9)) => assert_eq!(first.burst, 4),
            _ => panic!("burst 4's count"),
        }
        match k.before(&sent(0, 9, 3, 5)) {
            Some(Folded::Lost(_, 3)) => {}
            _ => panic!("burst 8 of CPU 0 never came"),
        }
        // Events outside the bookkeeping (nested programs, other kinds) change nothing.
        assert!(k.before(&sent(1, 0, 5, 5)).is_none());
        let mut other = sent(1, 6, 5, 5);
        other.kind = tracer_common::EventKind::TcpRetransmit as u8;
        assert!(k.before(&other).is_none());
    }

    #[test]
    fn off_every_event_is_delivered_as_it_comes() {
        let mut folds = Folds::new(false);
        let mut seen = Seen::new();
        for i in 0..100 {
            admit(&mut folds, &mut seen, drop(i * 1000, 40000, 0x81));
        }
        folds.tick(|r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
        assert_eq!(seen.len(), 100);
        assert!(seen.iter().all(|s| s.1 == 1));
    }

    #[test]
    fn different_sizes_places_and_kinds_do_not_fold_together() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        admit(&mut folds, &mut seen, drop(0, 40000, 0x81));
        let (mut ev, rec) = drop(MS, 40000, 0x81);
        ev.l3_len = 1400;
        admit(&mut folds, &mut seen, (ev, rec));
        admit(&mut folds, &mut seen, drop(2 * MS, 40000, 0x82));
        let (mut ev, mut rec) = drop(3 * MS, 40000, 0x81);
        ev.kind = EventKind::OversizeTx as u8;
        rec.kind = Kind::OversizeTx;
        admit(&mut folds, &mut seen, (ev, rec));
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn idle_bursts_are_forgotten_and_the_bound_holds() {
        let mut folds = Folds::new(true);
        let mut seen = Seen::new();
        for port in 0..(MAX_BURSTS as u16 + 10) {
            admit(&mut folds, &mut seen, drop(0, port, 0x81));
            admit(&mut folds, &mut seen, drop(MS, port, 0x81));
        }
        assert_eq!(folds.bursts, MAX_BURSTS);
        assert_eq!(folds.by_sender.len(), MAX_BURSTS, "no entry past the bound");
        // Past the bound, events are delivered one by one: still all counted.
        folds.tick(|r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
        assert_eq!(total(&seen), 2 * (MAX_BURSTS as u64 + 10));
        folds.tick(|r| seen.push((r.kind, r.events(), r.ts_unix_ns)));
        assert_eq!(folds.bursts, 0, "nothing came for a whole tick");
        assert!(folds.by_sender.is_empty());
    }
}
