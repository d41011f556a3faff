//! The far end's view (issue 17, `kind: "arrivals"`): once per `--arrivals-interval` and once
//! more at the stop, the window of what the ingress programs counted per device and peer
//! (`tracer-ebpf/src/ingress.rs`) is closed and written, one line per (device, peer, local
//! address) that received anything, at most [`MAX_LINES_PER_WINDOW`] of them.
//!
//! Closing a window without losing counts: the kernel keys every count by the window it was
//! made in (`ARRIVAL_GENERATION`, a one-element array). The daemon moves that on first, waits
//! for programs still running with the old value to finish ([`GRACE`]), then reads and deletes
//! every key of an older window, summed over the CPUs. A program that read the old window just
//! before the move and writes after the read made a new key of that old window: it is read with
//! the next window (late, not lost).
use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, MapData, PerCpuHashMap},
    Ebpf,
};
use tracer_common::{names, ArrivalCounts, ArrivalKey, ARRIVAL_CLASSES, MAX_TC_NETNS};

use crate::{
    event::arrivals::{Arrivals, ArrivalsLine, KIND, MAX_LINES_PER_WINDOW},
    hooks::{HookedDevice, Names},
};

/// How long after moving the window on the old one is read. The ingress programs run in
/// softirq context to completion in well under a microsecond; this leaves them three orders of
/// magnitude more, and costs the event loop 10 ms per window.
const GRACE: Duration = Duration::from_millis(10);

/// The kernel's arrival counts, read once per window.
pub struct ArrivalsReader {
    counts: PerCpuHashMap<MapData, ArrivalKey, ArrivalCounts>,
    generation: Array<MapData, u32>,
    current: u32,
    /// Network namespace inode of each tc program slot (`Config::tc_netns`).
    slots: [u32; MAX_TC_NETNS],
    /// Namespace labels by inode, as the run names them.
    labels: HashMap<u32, String>,
    /// A failed read was said once.
    failed: bool,
}

impl ArrivalsReader {
    /// Take the arrivals maps out of `ebpf` (before the link watcher takes `ebpf` itself).
    pub fn take(
        ebpf: &mut Ebpf,
        slots: [u32; MAX_TC_NETNS],
        labels: HashMap<u32, String>,
    ) -> Result<ArrivalsReader> {
        let counts = PerCpuHashMap::try_from(
            ebpf.take_map(names::ARRIVALS)
                .context("ARRIVALS map missing")?,
        )?;
        let generation = Array::try_from(
            ebpf.take_map(names::ARRIVAL_GENERATION)
                .context("ARRIVAL_GENERATION map missing")?,
        )?;
        Ok(ArrivalsReader {
            counts,
            generation,
            current: 0,
            slots,
            labels,
            failed: false,
        })
    }

    /// Close the window: count into a new one, then read and delete what the ones before hold,
    /// as lines stamped `now_unix_ns` (the window's end).
    pub fn close_window(&mut self, names: &Names, now_unix_ns: i128) -> Vec<ArrivalsLine> {
        let next = self.current.wrapping_add(1);
        if let Err(e) = self.generation.set(0, next, 0) {
            self.fail(&format!("cannot move the window on: {e}"));
            return Vec::new();
        }
        self.current = next;
        std::thread::sleep(GRACE);
        // Keys first, then each read and deleted: deleting while walking would restart the walk.
        let keys: Vec<ArrivalKey> = self
            .counts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation != next)
            .collect();
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            match self.counts.get(&key, 0) {
                Ok(per_cpu) => entries.push((key, per_cpu.iter().copied().collect::<Vec<_>>())),
                Err(e) => self.fail(&format!("cannot read a count: {e}")),
            }
            let _ = self.counts.remove(&key);
        }
        let window = Window {
            slots: &self.slots,
            labels: &self.labels,
            devices: &names.devices,
            clock_offset_ns: names.clock_offset_ns,
            now_unix_ns,
        };
        window.lines(&entries)
    }

    fn fail(&mut self, what: &str) {
        if !self.failed {
            eprintln!("tracer: arrivals: {what} (said once)");
            self.failed = true;
        }
    }
}

/// What turns the kernel's keys into lines.
struct Window<'a> {
    slots: &'a [u32; MAX_TC_NETNS],
    labels: &'a HashMap<u32, String>,
    devices: &'a HashMap<(u32, u32), HookedDevice>,
    clock_offset_ns: i128,
    now_unix_ns: i128,
}

/// One line's counts, summed over CPUs (and over late keys of older windows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sum {
    packets: u64,
    bytes: u64,
    max_len: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    classes: [u64; ARRIVAL_CLASSES],
}

impl Sum {
    fn add(&mut self, c: &ArrivalCounts) {
        if c.packets == 0 {
            // A CPU that never counted under this key (its slot is zero).
            return;
        }
        self.packets += c.packets;
        self.bytes += c.bytes;
        self.max_len = self.max_len.max(c.max_len);
        self.first_ns = Some(self.first_ns.map_or(c.first_ns, |f| f.min(c.first_ns)));
        self.last_ns = self.last_ns.max(c.last_ns);
        for (total, n) in self.classes.iter_mut().zip(c.classes) {
            *total += n;
        }
    }

    fn merge(&mut self, o: &Sum) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.max_len = self.max_len.max(o.max_len);
        self.first_ns = match (self.first_ns, o.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = self.last_ns.max(o.last_ns);
        for (total, n) in self.classes.iter_mut().zip(o.classes) {
            *total += n;
        }
    }
}

/// Where a line's packets arrived and between whom.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Place {
    netns: u32,
    device: String,
    peer: Option<IpAddr>,
    local: Option<IpAddr>,
}

impl Window<'_> {
    /// One line per place that received anything, the busiest [`MAX_LINES_PER_WINDOW`] in
    /// place order, then one line summing the rest.
    fn lines(&self, entries: &[(ArrivalKey, Vec<ArrivalCounts>)]) -> Vec<ArrivalsLine> {
        let mut sums: HashMap<Place, Sum> = HashMap::new();
        for (key, per_cpu) in entries {
            let mut sum = Sum::default();
            for c in per_cpu {
                sum.add(c);
            }
            if sum.packets == 0 {
                continue;
            }
            sums.entry(self.place(key)).or_default().merge(&sum);
        }
        let mut busiest: Vec<(Place, Sum)> = sums.into_iter().collect();
        busiest.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then_with(|| a.0.cmp(&b.0)));
        let rest = busiest.split_off(busiest.len().min(MAX_LINES_PER_WINDOW));
        busiest.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<ArrivalsLine> = busiest.iter().map(|(p, s)| self.line(p, s, 0)).collect();
        if let Some((first, _)) = rest.first() {
            let mut total = Sum::default();
            for (_, s) in &rest {
                total.merge(s);
            }
            let shared = |f: &dyn Fn(&Place) -> bool| rest.iter().all(|(p, _)| f(p));
            let place = Place {
                netns: if shared(&|p| p.netns == first.netns) {
                    first.netns
                } else {
                    0
                },
                device: if shared(&|p| p.netns == first.netns && p.device == first.device) {
                    first.device.clone()
                } else {
                    String::new()
                },
                peer: None,
                local: None,
            };
            out.push(self.line(&place, &total, rest.len() as u64));
        }
        out
    }

    fn place(&self, key: &ArrivalKey) -> Place {
        let netns = self.slots.get(key.slot as usize).copied().unwrap_or(0);
        let device = self
            .devices
            .get(&(netns, key.ifindex))
            .map_or_else(|| format!("if{}", key.ifindex), |d| d.iface.name.clone());
        Place {
            netns,
            device,
            peer: address(key.family, &key.src),
            local: address(key.family, &key.dst),
        }
    }

    fn line(&self, place: &Place, sum: &Sum, left_out: u64) -> ArrivalsLine {
        let wall = |ktime: u64| crate::time::rfc3339_nanos(ktime as i128 + self.clock_offset_ns);
        let arrivals = Arrivals {
            ts: crate::time::rfc3339_nanos(self.now_unix_ns),
            kind: KIND.into(),
            node: crate::event::node::current().map(|n| n.to_string()),
            netns: place.netns,
            netns_name: self.labels.get(&place.netns).cloned(),
            device: place.device.clone(),
            peer: place.peer,
            local: place.local,
            first_ts: wall(sum.first_ns.unwrap_or(sum.last_ns)),
            last_ts: wall(sum.last_ns),
            packets: sum.packets,
            bytes: sum.bytes,
            max_len: u32::try_from(sum.max_len).unwrap_or(u32::MAX),
            sizes: Arrivals::classes(&sum.classes),
        };
        ArrivalsLine { arrivals, left_out }
    }
}

/// An address as the kernel keyed it (network byte order, IPv4 in the first 4 bytes).
fn address(family: u32, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        2 => Some(IpAddr::from([raw[0], raw[1], raw[2], raw[3]])),
        10 => Some(IpAddr::from(*raw)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ifaces::Iface;

    const NS: u32 = 4026532175;

    fn key(generation: u32, src: [u8; 4], dst: [u8; 4]) -> ArrivalKey {
        let mut k = ArrivalKey {
            generation,
            slot: 1,
            ifindex: 2,
            family: 2,
            ..ArrivalKey::default()
        };
        k.src[..4].copy_from_slice(&src);
        k.dst[..4].copy_from_slice(&dst);
        k
    }

    fn counts(packets: u64, max_len: u64, first_ns: u64, last_ns: u64) -> ArrivalCounts {
        let mut c = ArrivalCounts {
            packets,
            bytes: packets * max_len,
            max_len,
            first_ns,
            last_ns,
            classes: [0; ARRIVAL_CLASSES],
        };
        c.classes[tracer_common::arrival_class(max_len as u32)] = packets;
        c
    }

    /// What a window needs to know of the run: namespace slot 1 is `lab-new`, whose `eth0`
    /// (ifindex 2) is hooked.
    struct Run {
        slots: [u32; MAX_TC_NETNS],
        labels: HashMap<u32, String>,
        devices: HashMap<(u32, u32), HookedDevice>,
    }

    impl Run {
        fn new() -> Run {
            let mut slots = [0; MAX_TC_NETNS];
            slots[1] = NS;
            let eth0 = HookedDevice {
                netns: NS,
                netns_label: "lab-new".into(),
                iface: Iface {
                    name: "eth0".into(),
                    ifindex: 2,
                    mtu: 1450,
                    driver: Some("veth".into()),
                    link_type: 1,
                },
            };
            Run {
                slots,
                labels: HashMap::from([(NS, "lab-new".to_string())]),
                devices: HashMap::from([((NS, 2), eth0)]),
            }
        }

        fn window(&self) -> Window<'_> {
            Window {
                slots: &self.slots,
                labels: &self.labels,
                devices: &self.devices,
                clock_offset_ns: 1_700_000_000_000_000_000,
                now_unix_ns: 1_700_000_060_000_000_000,
            }
        }
    }

    #[test]
    fn cpus_and_late_keys_sum_into_one_line_per_peer() {
        let run = Run::new();
        let w = run.window();
        let (a, b, me) = ([10, 0, 0, 1], [10, 0, 0, 3], [10, 0, 0, 2]);
        let zero = ArrivalCounts::default();
        let entries = vec![
            // Peer a on two CPUs (the third never counted it), and a late key of an older
            // window: one line.
            (
                key(1, a, me),
                vec![counts(3, 1000, 50, 90), zero, counts(2, 1500, 40, 70)],
            ),
            (key(0, a, me), vec![counts(1, 1400, 30, 30), zero, zero]),
            // Peer b: all CPUs zero (an evicted-then-recreated slot): no line.
            (key(1, b, me), vec![zero, zero, zero]),
        ];
        let lines = w.lines(&entries);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].left_out, 0);
        let l = &lines[0].arrivals;
        assert_eq!(l.kind, "arrivals");
        assert_eq!(
            (l.netns, l.netns_name.as_deref(), l.device.as_str()),
            (NS, Some("lab-new"), "eth0")
        );
        assert_eq!(l.peer, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(l.local, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(l.packets, 6);
        assert_eq!(l.bytes, 3 * 1000 + 2 * 1500 + 1400);
        assert_eq!(l.max_len, 1500);
        // 1000 ≤ 1280, 1400 ≤ 1400, 1500 ≤ 1500.
        let per_class: Vec<u64> = l.sizes.iter().map(|c| c.packets).collect();
        assert_eq!(per_class, [0, 3, 1, 0, 0, 2, 0, 0]);
        assert_eq!(l.sizes[5].le, Some(1500));
        assert_eq!(l.sizes[7].le, None);
        // Earliest first, latest last, over CPUs and keys; the window's end as ts.
        assert_eq!(l.first_ts, "2023-11-14T22:13:20.000000030Z");
        assert_eq!(l.last_ts, "2023-11-14T22:13:20.000000090Z");
        assert_eq!(l.ts, "2023-11-14T22:14:20.000000000Z");
    }

    #[test]
    fn a_window_writes_the_busiest_peers_and_sums_the_rest() {
        let run = Run::new();
        let w = run.window();
        let peers = MAX_LINES_PER_WINDOW + 10;
        let entries: Vec<_> = (0..peers)
            .map(|i| {
                let src = [10, 1, (i / 250) as u8, (i % 250) as u8];
                // Peer i sent i + 1 packets: the 10 quietest are left out.
                (
                    key(1, src, [10, 0, 0, 2]),
                    vec![counts(i as u64 + 1, 100, 5, 9)],
                )
            })
            .collect();
        let lines = w.lines(&entries);
        assert_eq!(lines.len(), MAX_LINES_PER_WINDOW + 1);
        assert_eq!(lines.last().unwrap().left_out, 10);
        let last = &lines.last().unwrap().arrivals;
        assert_eq!((last.peer, last.local), (None, None));
        assert_eq!(last.device, "eth0");
        assert_eq!(last.packets, (1..=10).sum::<u64>());
        assert!(lines[..MAX_LINES_PER_WINDOW]
            .iter()
            .all(|l| l.left_out == 0 && l.arrivals.packets > 10));
        // Every packet is in some line.
        let total: u64 = lines.iter().map(|l| l.arrivals.packets).sum();
        assert_eq!(total, (1..=peers as u64).sum::<u64>());
        // An unknown device is named by its index.
        let mut k = key(1, [10, 0, 0, 1], [10, 0, 0, 2]);
        k.ifindex = 9;
        let lines = w.lines(&[(k, vec![counts(1, 60, 1, 1)])]);
        assert_eq!(lines[0].arrivals.device, "if9");
    }

    #[test]
    fn addresses_read_back_in_both_families() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(address(2, &raw), Some("192.0.2.7".parse().unwrap()));
        let v6: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(address(10, &v6.octets()), Some(IpAddr::V6(v6)));
        assert_eq!(address(0, &raw), None);
    }
}
