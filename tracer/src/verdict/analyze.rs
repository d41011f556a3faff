//! The correlation: events in, verdicts out. Memory is per connection and per site, not per
//! event, so a long run stays small. This file observes (records into connection and site
//! state) and groups connections by path; `decide.rs` turns a path's state into its verdict,
//! `texts.rs` words it.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

// FxHash: these maps are looked up several times per event (SipHash was 8% of the pipeline).
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::stages::{Outcome, ShrinkCause, Stages};
use super::{Confidence, FlowSummary, PathRef, Problem, Severity, Verdict};
use crate::event::fragments::{is_fragmenter, SAME_PACKET_NS};
use crate::event::probe::Probe;
use crate::event::start::Start;
use crate::event::{Encap, Kind, Matched, MtuSource, ObjectRef, Outer, Record, ServiceRef};
use crate::mtu::Overlay;

mod decide;
mod texts;

use texts::problem_words;

/// Drops this far apart belong to different sending attempts.
const EPISODE_GAP_NS: i128 = 150_000_000;
/// How long a sender may take to act on an ICMP before its packets count as "still too big".
const ICMP_REACTION_NS: i128 = 50_000_000;
/// Connections a verdict lists (the counts cover all of them).
const MAX_FLOWS: usize = 10;
/// Connections tracked at most: a flood of distinct flows must not grow the daemon without
/// bound. Events of further connections are counted (`untracked_events`), not analysed.
const MAX_CONNS: usize = 65_536;
#[cfg(test)]
pub(super) const MAX_CONNS_FOR_TESTS: usize = MAX_CONNS;
/// Destinations with a learned path MTU kept at most.
const MAX_LEARNED: usize = 4_096;
/// Timeout retransmissions of full-size segments that make a black hole suspected without any
/// size event on this node.
const SUSPECT_TIMEOUTS: u32 = 3;

/// What the analysis derives from a record.
trait Observed {
    fn conn(&self) -> Option<ConnKey>;
    /// The packet's IP length as it was where the event happened.
    fn packet_len(&self) -> Option<u32>;
    /// The MTU an ICMP too-big advertises: its own field, or what the hook knew it would say.
    fn advertised_mtu(&self) -> Option<u32>;
    fn is_icmp_generator(&self) -> bool;
}

impl Observed for Record {
    fn conn(&self) -> Option<ConnKey> {
        Some(ConnKey {
            proto: self.flow.proto?,
            src: self.flow.src?,
            sport: self.flow.sport,
            dst: self.flow.dst?,
            dport: self.flow.dport,
        })
    }

    fn packet_len(&self) -> Option<u32> {
        self.size.l3_len.or(self.size.len)
    }

    fn advertised_mtu(&self) -> Option<u32> {
        self.icmp
            .as_ref()
            .and_then(|i| i.mtu)
            .or(match self.size.mtu_source {
                Some(MtuSource::Icmp) => self.size.mtu,
                _ => None,
            })
    }

    fn is_icmp_generator(&self) -> bool {
        self.hook.starts_with("kprobe/") || self.hook.starts_with("tracepoint/icmp")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ConnKey {
    proto: u8,
    src: IpAddr,
    sport: Option<u16>,
    dst: IpAddr,
    dport: Option<u16>,
}

/// Where packets die. Device and kernel function are interned ([`Interner`]): a site is looked
/// up for every drop, and must not cost an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SiteKey {
    netns: Option<u32>,
    device: Option<u32>,
    location: Option<u32>,
    limit: Option<u32>,
    overlay: Option<Encap>,
}

/// Small strings (device names, kernel functions) as numbers.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }

    fn name(&self, id: Option<u32>) -> Option<String> {
        id.and_then(|i| self.names.get(i as usize)).cloned()
    }
}

/// What the MTU that refused a packet is, formatted only for a new site.
#[derive(Clone, Copy, Debug)]
enum LimitSource<'a> {
    Peer(Option<&'a str>),
    Device(Option<&'a str>),
    Learned(Option<IpAddr>),
}

impl LimitSource<'_> {
    fn describe(self) -> String {
        match self {
            LimitSource::Peer(d) => format!("MTU of the receiving end {}", d.unwrap_or("?")),
            LimitSource::Device(d) => format!("MTU of {}", d.unwrap_or("?")),
            LimitSource::Learned(from) => format!(
                "path MTU learned from ICMP by {}",
                from.map_or("a router".to_string(), |f| f.to_string())
            ),
        }
    }
}

#[derive(Debug, Default)]
struct SiteAcc {
    reason: Option<String>,
    limit_source: Option<String>,
    packet_len: u32,
    overhead: u32,
    packets: u64,
    icmp_sent: u64,
    icmp_mtu: Option<u32>,
    conns: HashSet<ConnKey>,
}

#[derive(Clone, Debug, Default)]
struct ConnAcc {
    // Shared with the records (a connection's names are taken from its first event).
    src_pod: Option<Arc<ObjectRef>>,
    dst_pod: Option<Arc<ObjectRef>>,
    service: Option<Arc<ServiceRef>>,
    src_node: Option<Arc<str>>,
    dst_node: Option<Arc<str>>,
    /// Overlay and outer endpoints, from any encapsulated event of the connection.
    overlay: Option<(Encap, bool)>,
    outer_src: Option<IpAddr>,
    outer_dst: Option<IpAddr>,
    dropped: u64,
    largest_failed: Option<u32>,
    smallest_failed: Option<u32>,
    first_ns: Option<i128>,
    last_ns: Option<i128>,
    episodes: u64,
    /// Largest pod packet that died in the current attempt and in the one before it.
    episode_max: u32,
    prev_episode_max: u32,
    /// Attempts in which packets at least as large as in the attempt before died again: the
    /// sender is not shrinking (path-MTU discovery that works makes each attempt smaller).
    repeat_episodes: u64,
    repeat_counted: bool,
    last_drop_ns: Option<i128>,
    /// Drops of a size the sender had been told (ICMP) did not fit, after it had time to act.
    drops_after_told: u64,
    /// Smallest MTU an ICMP too-big told this connection's sender (pod or node), and when.
    told_mtu: Option<u32>,
    /// When the smallest MTU told so far was told: the sender is judged from then on.
    told_at_ns: Option<i128>,
    icmp_received: u64,
    icmp_dropped: u64,
    oversize_tx: u64,
    retransmits: u64,
    size_reduced: bool,
    /// The sending socket's namespace and destination (as the socket sees it, before any
    /// DNAT), from its retransmissions: where its stack would record a path MTU.
    sender: Option<(u32, IpAddr)>,
    /// The connection's last size event: to count a fragment and its original once. Kept
    /// here, not in a map of its own: one lookup per drop instead of two (issue 18).
    last_drop: Option<LastDrop>,
}

/// Path-MTU updates one namespace recorded for one (source, destination).
#[derive(Clone, Debug)]
struct Learned {
    netns: Option<u32>,
    mtu: u32,
    count: u64,
}

/// Namespaces that learned per (source, destination), at most: a flow key is seen by its
/// sender and the tunnels and routers on its way, a handful.
const MAX_LEARNERS: usize = 8;

/// Where ICMP too-big messages died: (netns, kernel function, drop reason).
type IcmpDropPlace = (Option<u32>, String, String);

impl ConnAcc {
    /// A pod packet of `inner` bytes died in the current attempt.
    fn note_episode_size(&mut self, inner: u32) {
        self.episode_max = self.episode_max.max(inner);
        if self.episodes >= 2 && !self.repeat_counted && self.episode_max >= self.prev_episode_max {
            self.repeat_episodes += 1;
            self.repeat_counted = true;
        }
    }
}

/// The last drop seen per connection: to count a fragment and its original once.
#[derive(Clone, Debug)]
struct LastDrop {
    ts_ns: i128,
    /// The connection's smallest failed size before this drop: if it was a fragment, the
    /// original that follows replaces its (smaller, not a real packet's) size.
    smallest_before: Option<u32>,
    netns: Option<u32>,
    device: Option<u32>,
    site: SiteKey,
}

/// Correlates events into [`Verdict`]s. Feed it with [`Analyzer::observe`].
#[derive(Debug, Default)]
pub struct Analyzer {
    netns_names: HashMap<u32, String>,
    sites: BTreeMap<SiteKey, SiteAcc>,
    strings: Interner,
    conns: HashMap<ConnKey, ConnAcc>,
    /// (proto, src, sport) → connection with size events: joins a pod's retransmissions
    /// (addressed to a ClusterIP) with the drops of the same packets after DNAT.
    by_source: HashMap<(u8, IpAddr, u16), ConnKey>,
    /// Path MTUs routers announced: destination (outer) address → (MTU, router).
    learned_pmtu: HashMap<IpAddr, (u32, Option<IpAddr>)>,
    /// Path-MTU updates (`pmtu_update`) per (source, destination) and namespace: a sender's
    /// stack, or a tunnel or router on the way (the kernel's flow key has no ports).
    learned: HashMap<(IpAddr, IpAddr), Vec<Learned>>,
    /// Whether path-MTU learning could be seen, per family (IPv4, IPv6): `Some(true)` from the
    /// run's hooks, or once a log shows a `pmtu_update` of that family; only then may a missing
    /// update mean the ICMP never reached a sender of that family.
    pmtu_hook: [Option<bool>; 2],
    /// ICMP generated for a packet, by skb, until the drop of that packet names its site.
    pending_icmp: HashMap<u64, (i128, Option<u32>)>,
    /// Where ICMP too-big messages were dropped: (netns, location, reason) → (count, MTU).
    icmp_eaten: BTreeMap<IcmpDropPlace, (u64, Option<u32>)>,
    icmp_sent_unmatched: u64,
    lost: u64,
    first_ns: Option<i128>,
    last_ns: Option<i128>,
    /// Paths whose problem was printed live, with the MTU it recommended then and whether it
    /// had a ready change: printed again only when a measurement brings a number (a probe's
    /// answer comes seconds after the timing) or the CNI's objects bring the change.
    announced: HashMap<PathRef, (Option<u32>, bool)>,
    /// The configuration audit's problems (arithmetic), given by the run.
    audit: Vec<String>,
    /// The CNI install the run recognised (what a verdict's change patches).
    cni: Option<crate::fix::CniInstall>,
    /// Events not analysed because [`MAX_CONNS`] connections were already tracked.
    untracked: u64,
    /// Each sending socket's stages (told, shrank, progressing or stuck again), by (protocol,
    /// source, source port): the sender's own view, whatever DNAT did to the destination.
    senders: HashMap<(u8, IpAddr, u16), Stages>,
    /// The end of what was watched, when later than the last event: the run's stop (a log's
    /// final verdict line). Silence after a shrink counts as progress only if watched.
    watched_until: Option<i128>,
    /// What the run could not see (its start line's blind spots).
    blind_spots: Vec<String>,
    /// The nodes whose start lines were read: a verdict names its node when there is one.
    nodes: std::collections::BTreeSet<String>,
    /// Path-MTU probes the run made (`probe` lines), the newest per (namespace, address).
    probes: Vec<Probe>,
    /// The probes the verdicts of the last [`Analyzer::live`] ask for, until taken.
    wants: Vec<ProbeWant>,
    /// When probes ran, toward which address: (address, start, end); a probe under way (live,
    /// before its `probe` line) ends at `i128::MAX`.
    probe_windows: Vec<(IpAddr, i128, i128)>,
    /// Something was observed since the last [`Analyzer::live`]: only then is it worth
    /// recomputing the verdicts.
    dirty: bool,
}

impl Analyzer {
    pub fn new() -> Analyzer {
        Analyzer::default()
    }

    /// Names for network namespaces (`lab-rtr`, `host`), used in the sites' descriptions.
    pub fn name_netns(&mut self, inode: u32, name: impl Into<String>) {
        self.netns_names.insert(inode, name.into());
    }

    /// The static MTU audit's problems at start: the verdicts quote them as configuration
    /// evidence (and a healthy run says the configuration is still wrong).
    pub fn set_audit(&mut self, problems: Vec<String>) {
        self.audit = problems;
    }

    /// What the run watched and could not see: its start line, given live by the run and read
    /// back by `tracer report`, so both know the same.
    pub fn apply_start(&mut self, start: &Start) {
        for ns in &start.namespaces {
            self.name_netns(ns.inode, ns.name.clone());
        }
        self.set_audit(start.audit.clone());
        self.pmtu_hook = learning_seen(start);
        self.blind_spots = start.blind_spots.clone();
        self.nodes.extend(start.node.clone());
        self.cni = start.cni.clone();
    }

    /// The CNI install, learned after the start (the live API's `cni` line).
    pub fn set_cni(&mut self, install: crate::fix::CniInstall) {
        self.cni = Some(install);
        // A live problem announced without its ready change gets it now.
        self.dirty = true;
    }

    /// The node the evidence comes from, when it is one (logs of several nodes: none yet).
    fn node(&self) -> Option<String> {
        match self.nodes.len() {
            1 => self.nodes.first().cloned(),
            _ => None,
        }
    }

    /// A path-MTU probe the run made (live, or a `probe` line of a log).
    pub fn apply_probe(&mut self, probe: &Probe) {
        self.dirty = true;
        if let (Some(to), Some(end)) = (probe.to, crate::time::parse_rfc3339(&probe.ts)) {
            let start = end - i128::from(probe.elapsed_ms) * 1_000_000;
            self.probe_windows
                .retain(|(t, _, e)| !(*t == to && *e == i128::MAX));
            if self.probe_windows.len() < 2 * MAX_PROBES {
                self.probe_windows.push((to, start, end));
            }
        }
        self.probes
            .retain(|p| (p.netns, p.to) != (probe.netns, probe.to));
        if self.probes.len() < MAX_PROBES {
            self.probes.push(probe.clone());
        }
    }

    /// A probe toward `to` starts now (live): its own echo requests, which the hops it measures
    /// may drop, are not evidence about the pods' traffic.
    pub fn probing(&mut self, to: IpAddr, now_unix_ns: i128) {
        if self.probe_windows.len() < 2 * MAX_PROBES {
            self.probe_windows.push((to, now_unix_ns, i128::MAX));
        }
    }

    /// Whether `k` is a probe's own traffic: ICMP toward a probed address, every event of it
    /// inside that probe's time (a second's margin either side).
    fn is_probe_traffic(&self, k: &ConnKey, c: &ConnAcc) -> bool {
        const MARGIN: i128 = 1_000_000_000;
        if !matches!(k.proto, 1 | 58) || k.sport.is_some() {
            return false;
        }
        let (Some(first), Some(last)) = (c.first_ns, c.last_ns) else {
            return false;
        };
        self.probe_windows.iter().any(|(to, start, end)| {
            k.dst == *to && first >= start - MARGIN && last <= end.saturating_add(MARGIN)
        })
    }

    /// Where a measurement would settle a verdict that timing alone made: a black hole beyond
    /// this node, suspected, or got around by TCP probing, and not yet measured. Each want is
    /// the namespaces to probe from (the sender's, then the node's where its packets were
    /// seen) and a pod address the sender already sends to. Computed by [`Analyzer::live`] from
    /// the verdicts it computes anyway (only after new events), taken once.
    pub fn probes_wanted(&mut self) -> Vec<ProbeWant> {
        std::mem::take(&mut self.wants)
    }

    /// The wants of `verdicts`, one per address.
    fn wants_of(&self, verdicts: &[Verdict]) -> Vec<ProbeWant> {
        let mut wants: Vec<ProbeWant> = Vec::new();
        for v in verdicts {
            if v.confidence != Confidence::Inferred || v.recommended_mtu.is_some() {
                continue;
            }
            let Some(want) = self.want_for(v) else {
                continue;
            };
            if !wants.iter().any(|w| w.to == want.to) {
                wants.push(want);
            }
        }
        wants
    }

    /// The probe that would measure `v`'s path: from its stuck senders toward the pod they
    /// send to (an address after any DNAT: a drop or an ICMP named it).
    fn want_for(&self, v: &Verdict) -> Option<ProbeWant> {
        // A flow the verdict is about (stuck, or got through only by TCP probing) whose
        // destination is a pod, not a service's virtual address (which answers no ping): one
        // named without a service, or seen after DNAT (its drops and ICMP name the backend).
        let flow = v
            .flows
            .iter()
            .filter(|f| {
                f.stuck
                    || v.problem == Problem::ProbingRecovered
                    // Suspected from timeouts at full size: a measurement settles it.
                    || (v.problem == Problem::SuspectedBlackHole && f.timeout_retransmits > 0)
            })
            .find(|f| {
                f.service.is_none()
                    || f.dropped > 0
                    || self
                        .conns
                        .get(&flow_key(f))
                        .is_some_and(|c| c.icmp_received > 0)
            })?;
        let c = self.conns.get(&flow_key(flow))?;
        let mut from: Vec<u32> = Vec::new();
        from.extend(c.sender.map(|(ns, _)| ns));
        from.extend(v.sites.iter().filter_map(|s| s.netns));
        from.dedup();
        (!from.is_empty()).then(|| ProbeWant {
            from,
            to: flow.dst,
            why: format!("{} toward {}", problem_words(v.problem), flow.dst),
        })
    }

    /// What a verdict could not see: said where its evidence is thin (timing alone, or no
    /// evidence at all), so that "not seen" is not read as "not there".
    fn not_seen(&self, confidence: Confidence, problem: Problem) -> Vec<String> {
        let thin = confidence == Confidence::Inferred
            || matches!(problem, Problem::None | Problem::Unconfirmed);
        if !thin {
            return Vec::new();
        }
        let mut out = Vec::new();
        if confidence == Confidence::Inferred {
            out.push(
                "packets that die outside the watched namespaces (a router, the far node) are \
                 not seen: this is inferred from the senders' retransmissions"
                    .to_string(),
            );
        }
        out.extend(self.blind_spots.iter().cloned());
        out
    }

    /// Whether the path-MTU hooks (`__ip_rt_update_pmtu`, `__ip6_rt_update_pmtu`) are both
    /// attached in this run (the start line's `pmtu_hook`).
    pub fn set_pmtu_hook(&mut self, attached: bool) {
        self.pmtu_hook = [Some(attached); 2];
    }

    /// Whether a missing path-MTU update for a sender at `src` means something: its family's
    /// learning hook was attached.
    pub(super) fn learning_seen(&self, src: IpAddr) -> bool {
        self.pmtu_hook[usize::from(src.is_ipv6())] == Some(true)
    }

    /// Take one event into account: live from the daemon, or read back from a log.
    pub fn observe_record(&mut self, o: &Record) {
        let kind = o.kind;
        self.dirty = true;
        if kind != Kind::Lost {
            self.first_ns = Some(self.first_ns.map_or(o.ts_unix_ns, |f| f.min(o.ts_unix_ns)));
            self.last_ns = Some(self.last_ns.map_or(o.ts_unix_ns, |l| l.max(o.ts_unix_ns)));
        }
        // Path-MTU updates make no connection (their own map is bounded).
        if !matches!(kind, Kind::Lost | Kind::PmtuUpdate) && self.conns.len() >= MAX_CONNS {
            // As the handlers look connections up: size events by their own 5-tuple, the
            // others also through the source port they share with one.
            let known = o.conn().is_some_and(|k| match kind {
                Kind::Drop | Kind::OversizeTx => self.conns.contains_key(&k),
                _ => self.conns.contains_key(&self.resolve(k)),
            });
            if !known {
                self.untracked = self.untracked.saturating_add(o.events());
                return;
            }
        }
        match kind {
            Kind::Lost => self.lost = self.lost.saturating_add(o.lost.unwrap_or(0)),
            Kind::Drop if o.matched(Matched::IcmpTooBig) || o.icmp.as_ref().is_some() => {
                self.icmp_drop(o)
            }
            Kind::Drop if o.drop.matched.iter().any(Matched::is_size) => self.size_event(o, kind),
            Kind::Drop => {}
            Kind::OversizeTx => self.size_event(o, kind),
            Kind::IcmpTooBigSent => self.icmp_sent(o),
            Kind::IcmpTooBigReceived => self.icmp_received(o),
            Kind::TcpRetransmit => self.retransmit(o),
            Kind::PmtuUpdate => self.pmtu_update(o),
        }
    }

    fn conn_mut(&mut self, key: ConnKey, o: &Record) -> &mut ConnAcc {
        let c = self.conns.entry(key).or_default();
        c.first_ns = Some(c.first_ns.map_or(o.ts_unix_ns, |f| f.min(o.ts_unix_ns)));
        c.last_ns = Some(c.last_ns.map_or(o.ts_unix_ns, |l| l.max(o.ts_unix_ns)));
        if c.src_pod.is_none() {
            c.src_pod = o.names.src_pod.as_ref().cloned();
        }
        if c.dst_pod.is_none() {
            c.dst_pod = o.names.dst_pod.as_ref().cloned();
        }
        if c.service.is_none() {
            c.service = o.names.service.as_ref().cloned();
        }
        if c.src_node.is_none() {
            c.src_node = o.names.src_node.as_ref().map(|n| n.name.clone());
        }
        if c.dst_node.is_none() {
            c.dst_node = o.names.dst_node.as_ref().map(|n| n.name.clone());
        }
        if let Some(outer) = o.flow.outer.as_ref() {
            c.overlay = Some((outer.encap, outer.src.is_ipv6()));
            c.outer_src = Some(outer.src);
            c.outer_dst = Some(outer.dst);
        }
        c
    }

    /// A packet died (or could not be sent) for its size.
    fn size_event(&mut self, o: &Record, kind: Kind) {
        let Some(key) = o.conn() else { return };
        let Some(len) = o.packet_len() else { return };
        let (overlay, overhead) = overlay_of(o.flow.outer.as_ref());
        let (limit, limit_source) = self.limit_of(o, len);
        let device = o.device.ifname.as_deref().map(|d| self.strings.id(d));
        // A fragment dropped and then the original it was cut from: one packet.
        let (prev, smallest_before) = match self.conns.get(&key) {
            Some(c) => (c.last_drop.clone(), c.smallest_failed),
            None => (None, None),
        };
        let prev_site = prev.as_ref().map(|p| p.site);
        if let Some(prev) = prev {
            if o.ts_unix_ns - prev.ts_ns <= SAME_PACKET_NS
                && prev.netns == o.device.netns
                && prev.device == device
                && o.drop.location.as_deref().is_some_and(is_fragmenter)
            {
                let site = prev.site;
                let smallest_before = prev.smallest_before;
                if let Some(s) = self.sites.get_mut(&site) {
                    s.packet_len = s.packet_len.max(len);
                }
                let c = self.conn_mut(key, o);
                let inner = len.saturating_sub(overhead);
                c.largest_failed = Some(c.largest_failed.map_or(inner, |l| l.max(inner)));
                c.smallest_failed = Some(smallest_before.map_or(inner, |l| l.min(inner)));
                c.note_episode_size(inner);
                return;
            }
        }
        let location = match kind {
            Kind::OversizeTx => Some("transmit"),
            _ => o.drop.location.as_deref().map(symbol),
        };
        let site_key = SiteKey {
            netns: o.device.netns,
            device,
            location: location.map(|l| self.strings.id(l)),
            limit,
            overlay,
        };
        let site = self.sites.entry(site_key).or_default();
        site.packets += o.events();
        site.packet_len = site.packet_len.max(len);
        site.overhead = overhead;
        // A connection's drops mostly repeat at one site: when its last one was here, it is in
        // the site's set already (sites are never removed), and hashing it again is wasted.
        if prev_site != Some(site_key) {
            site.conns.insert(key);
        }
        if site.reason.is_none() {
            site.reason = o.drop.reason.as_deref().map(str::to_string);
        }
        if site.limit_source.is_none() {
            site.limit_source = limit_source.map(LimitSource::describe);
        }
        if let Some((_, mtu)) = o.skb.and_then(|skb| self.pending_icmp.remove(&skb)) {
            site.icmp_sent += 1;
            if let Some(m) = mtu.or(limit) {
                site.icmp_mtu = Some(site.icmp_mtu.map_or(m, |s| s.min(m)));
            }
        }
        if let (Some(p), Some(sport)) = (o.flow.proto, o.flow.sport) {
            self.by_source.insert((p, key.src, sport), key);
        }
        let ts = o.ts_unix_ns;
        if let Some(st) = self.sender_mut(key) {
            st.refused(len.saturating_sub(overhead));
        }
        let c = self.conn_mut(key, o);
        c.last_drop = Some(LastDrop {
            ts_ns: o.ts_unix_ns,
            smallest_before,
            netns: o.device.netns,
            device,
            site: site_key,
        });
        if kind == Kind::OversizeTx {
            c.oversize_tx += o.events();
        }
        c.dropped += o.events();
        let inner = len.saturating_sub(overhead);
        c.largest_failed = Some(c.largest_failed.map_or(inner, |l| l.max(inner)));
        c.smallest_failed = Some(c.smallest_failed.map_or(inner, |l| l.min(inner)));
        if c.last_drop_ns.is_none_or(|l| ts - l >= EPISODE_GAP_NS) {
            c.episodes += 1;
            c.prev_episode_max = c.episode_max;
            c.episode_max = 0;
            c.repeat_counted = false;
        }
        c.note_episode_size(inner);
        c.last_drop_ns = Some(ts);
        if let (Some(told), Some(at)) = (c.told_mtu, c.told_at_ns) {
            if ts - at > ICMP_REACTION_NS && inner > told.saturating_sub(overhead).max(1) {
                c.drops_after_told += o.events();
            }
        }
    }

    /// The MTU that refused a packet of `len` bytes, and what it is.
    fn limit_of<'a>(&self, o: &'a Record, len: u32) -> (Option<u32>, Option<LimitSource<'a>>) {
        if let Some(m) = o.route.peer_mtu.filter(|&m| m < len) {
            return (
                Some(m),
                Some(LimitSource::Peer(o.route.peer_ifname.as_deref())),
            );
        }
        if let Some(m) = o.route.out_mtu.filter(|&m| m < len) {
            return (
                Some(m),
                Some(LimitSource::Device(o.route.out_ifname.as_deref())),
            );
        }
        if let Some(m) = o
            .size
            .mtu
            .filter(|&m| m < len && o.size.mtu_source != Some(MtuSource::Icmp))
        {
            return (
                Some(m),
                Some(LimitSource::Device(o.device.ifname.as_deref())),
            );
        }
        // It fitted every device: a path MTU learned from a router's ICMP refused it.
        let toward = o.flow.outer.as_ref().map(|x| x.dst).or(o.flow.dst);
        if let Some((m, from)) = toward.and_then(|d| self.learned_pmtu.get(&d)) {
            return (Some(*m), Some(LimitSource::Learned(*from)));
        }
        (None, None)
    }

    fn icmp_sent(&mut self, o: &Record) {
        let Some(key) = o.conn() else { return };
        let mtu = o.advertised_mtu();
        if o.is_icmp_generator() {
            if let Some(skb) = o.skb {
                // Bounded: entries are removed by their drop; a flood without drops is capped.
                if self.pending_icmp.len() < 4096 {
                    self.pending_icmp.insert(skb, (o.ts_unix_ns, mtu));
                } else {
                    self.icmp_sent_unmatched += 1;
                }
            } else {
                self.icmp_sent_unmatched += 1;
            }
        }
        self.told(key, o, mtu);
    }

    fn icmp_received(&mut self, o: &Record) {
        let Some(key) = o.conn() else { return };
        let mtu = o.advertised_mtu();
        if let (Some(m), Some(icmp)) = (mtu, o.icmp.as_ref()) {
            // The router's ICMP is about the packet as it saw it: the outer one when
            // encapsulated. The node now caps packets toward that address at `m`.
            let toward = o.flow.outer.as_ref().map(|x| x.dst).or(o.flow.dst);
            if let Some(d) = toward.filter(|d| {
                self.learned_pmtu.len() < MAX_LEARNED || self.learned_pmtu.contains_key(d)
            }) {
                let e = self.learned_pmtu.entry(d).or_insert((m, icmp.from));
                if m < e.0 {
                    *e = (m, icmp.from);
                }
            }
        }
        let key = self.resolve(key);
        self.conn_mut(key, o).icmp_received += 1;
        self.told(key, o, mtu);
    }

    /// An ICMP too-big reached (or was generated for) the sender of `key`.
    fn told(&mut self, key: ConnKey, o: &Record, mtu: Option<u32>) {
        let ts = o.ts_unix_ns;
        if let (Some(m), Some(st)) = (mtu, self.sender_mut(key)) {
            st.told(ts, m);
        }
        let key = self.resolve(key);
        let c = self.conn_mut(key, o);
        if let Some(m) = mtu {
            if c.told_mtu.is_none_or(|t| m < t) {
                c.told_mtu = Some(m);
                c.told_at_ns = Some(ts);
            }
        }
    }

    /// A stack recorded a smaller path MTU for (source, destination): the sender's own (its
    /// namespace is the one its retransmissions come from), or a tunnel's or router's.
    fn pmtu_update(&mut self, o: &Record) {
        let (Some(mtu), Some(src), Some(dst)) = (o.size.mtu, o.flow.src, o.flow.dst) else {
            return;
        };
        self.pmtu_hook[usize::from(src.is_ipv6())].get_or_insert(true);
        if self.learned.len() >= MAX_LEARNED && !self.learned.contains_key(&(src, dst)) {
            return;
        }
        let learners = self.learned.entry((src, dst)).or_default();
        if let Some(l) = learners.iter_mut().find(|l| l.netns == o.device.netns) {
            l.mtu = l.mtu.min(mtu);
            l.count += 1;
        } else if learners.len() < MAX_LEARNERS {
            learners.push(Learned {
                netns: o.device.netns,
                mtu,
                count: 1,
            });
        }
        // Also a limit toward that address for drops that fitted every device; a router that
        // announced it (ICMP received) stays named.
        if self.learned_pmtu.len() < MAX_LEARNED || self.learned_pmtu.contains_key(&dst) {
            let l = self.learned_pmtu.entry(dst).or_insert((mtu, None));
            if mtu < l.0 {
                *l = (mtu, None);
            }
        }
    }

    /// The smallest path MTU the sender of `c` recorded, if its stack recorded one.
    fn learned_by_sender(&self, k: &ConnKey, c: &ConnAcc) -> Option<u32> {
        let (netns, dst) = c.sender?;
        self.learned
            .get(&(k.src, dst))?
            .iter()
            .find(|l| l.netns == Some(netns))
            .map(|l| l.mtu)
    }

    fn icmp_drop(&mut self, o: &Record) {
        let entry = self
            .icmp_eaten
            .entry((
                o.device.netns,
                o.drop
                    .location
                    .as_deref()
                    .map(symbol)
                    .unwrap_or("?")
                    .to_string(),
                o.drop.reason.as_deref().unwrap_or("?").to_string(),
            ))
            .or_insert((0, None));
        entry.0 += o.events();
        if let Some(m) = o.icmp.as_ref().and_then(|i| i.mtu) {
            entry.1 = Some(m);
        }
        if let Some(key) = o.conn() {
            let key = self.resolve(key);
            self.conn_mut(key, o).icmp_dropped += o.events();
        }
    }

    fn retransmit(&mut self, o: &Record) {
        let Some(key) = o.conn() else { return };
        let key = self.resolve(key);
        let ts = o.ts_unix_ns;
        let len = o.size.len.unwrap_or(0);
        let sender = o.device.netns.zip(o.flow.dst);
        // The sender's stages judge sizes and timeouts against the segment it uses now.
        let shrank = match self.sender_mut(key) {
            Some(st) => {
                st.retransmit(ts, len, o.size.gso_size, o.tcp_seq);
                st.shrank_after_icmp()
            }
            None => false,
        };
        let c = self.conn_mut(key, o);
        c.retransmits += 1;
        if c.sender.is_none() {
            c.sender = sender;
        }
        c.size_reduced |= shrank;
    }

    /// The stages of the socket that sent `key`'s packets (bounded like the connections).
    fn sender_mut(&mut self, key: ConnKey) -> Option<&mut Stages> {
        let id = (key.proto, key.src, key.sport?);
        if self.senders.len() >= MAX_CONNS && !self.senders.contains_key(&id) {
            return None;
        }
        Some(self.senders.entry(id).or_default())
    }

    fn sender(&self, key: &ConnKey) -> Option<&Stages> {
        self.senders.get(&(key.proto, key.src, key.sport?))
    }

    /// Where `key`'s sender stands at `now`.
    fn outcome(&self, key: &ConnKey, now: i128) -> Outcome {
        let end = self.watched_until.map_or(now, |w| w.max(now));
        self.sender(key)
            .map_or(Outcome::Quiet, |st| st.outcome(end))
    }

    /// The end of what was watched (a log's final verdict line: the run's stop).
    pub fn watched_until(&mut self, ts_unix_ns: i128) {
        self.watched_until = Some(self.watched_until.map_or(ts_unix_ns, |w| w.max(ts_unix_ns)));
    }

    /// The connection events about `key` belong to: itself, or the connection with size
    /// events from the same source port (the same TCP connection before/after DNAT).
    fn resolve(&self, key: ConnKey) -> ConnKey {
        if self.conns.contains_key(&key) {
            return key;
        }
        key.sport
            .and_then(|sp| self.by_source.get(&(key.proto, key.src, sp)))
            .copied()
            .unwrap_or(key)
    }

    /// First and last event time seen (Unix ns).
    pub fn span(&self) -> Option<(i128, i128)> {
        Some((self.first_ns?, self.last_ns?))
    }

    /// Verdicts that became strong since the last call, to print live: once per path, and once
    /// more when a measurement gives it the MTU to set.
    pub fn live(&mut self, now_unix_ns: i128) -> Vec<Verdict> {
        let mut out = Vec::new();
        if !std::mem::take(&mut self.dirty) {
            return out;
        }
        // One computation for both: what to print, and what to measure.
        let verdicts = self.verdicts(now_unix_ns, None);
        self.wants = self.wants_of(&verdicts);
        for mut v in verdicts {
            if v.severity != Severity::Problem {
                continue;
            }
            // Again once a number or a ready change becomes known (a probe measured the path,
            // the API's CNI objects arrived after the problem was first printed).
            let news = match self.announced.get(&v.path) {
                None => true,
                Some(&(mtu, changed)) => {
                    (mtu.is_none() && v.recommended_mtu.is_some())
                        || (!changed && v.change.is_some())
                }
            };
            if news {
                self.announced
                    .insert(v.path.clone(), (v.recommended_mtu, v.change.is_some()));
                v.stage = "live";
                out.push(v);
            }
        }
        out
    }

    /// The verdicts on everything seen so far (the end-of-run answer). `observed_s`: the run's
    /// length when known (else the span of the events).
    pub fn verdicts(&self, now_unix_ns: i128, observed_s: Option<f64>) -> Vec<Verdict> {
        let observed_s = observed_s.unwrap_or_else(|| match (self.first_ns, self.last_ns) {
            (Some(f), Some(l)) => (l - f) as f64 / 1e9,
            _ => 0.0,
        });
        let conns = self.merged_conns();
        let conns: Vec<&(ConnKey, ConnAcc)> = conns
            .iter()
            .filter(|(k, c)| !self.is_probe_traffic(k, c))
            .collect();
        let sized = |c: &ConnAcc| c.dropped > 0 || c.icmp_received > 0 || c.icmp_dropped > 0;
        // A socket with no size event of its own (it started at a size its stack had already
        // learned, or nothing on this node saw its packets) goes with a connection of the same
        // socket's namespace and destination that has one: the same path, one verdict.
        let sized_path: BTreeMap<(u32, IpAddr), PathRef> = conns
            .iter()
            .filter(|(_, c)| sized(c))
            .filter_map(|(_, c)| Some((c.sender?, path_of(c))))
            .collect();
        let interesting: Vec<&(ConnKey, ConnAcc)> = conns
            .into_iter()
            .filter(|(k, c)| {
                sized(c)
                    || match self.outcome(k, now_unix_ns) {
                        Outcome::StuckAtFirstSize { .. } => {
                            // Without a size event of its own, only a clear backoff is
                            // suspect; on a path where others met one, being stuck (two
                            // backed-off timeouts) is enough. A client that gives up after a
                            // few seconds leaves no time for a third.
                            c.sender.is_some_and(|s| sized_path.contains_key(&s))
                                || self.sender(k).map_or(0, Stages::total_timeouts)
                                    >= SUSPECT_TIMEOUTS
                        }
                        Outcome::StuckAfterShrink { .. } => true,
                        Outcome::Progressing { last } => last.cause == ShrinkCause::Probing,
                        _ => false,
                    }
            })
            .collect();
        // Group connections by path.
        let mut paths: BTreeMap<PathRef, Vec<(ConnKey, &ConnAcc)>> = BTreeMap::new();
        for (k, c) in interesting {
            let path = match c.sender.and_then(|s| sized_path.get(&s)) {
                Some(p) if !sized(c) => p.clone(),
                _ => path_of(c),
            };
            paths.entry(path).or_default().push((*k, c));
        }
        let mut out: Vec<Verdict> = paths
            .into_iter()
            .map(|(path, conns)| self.verdict_for(path, &conns, now_unix_ns, observed_s))
            .collect();
        out.sort_by_key(|v| std::cmp::Reverse(v.severity));
        if out.is_empty() {
            out.push(self.healthy(now_unix_ns, observed_s));
        }
        out
    }

    /// Connections with retransmissions folded into the connection with size events from the
    /// same source port (a retransmission seen before the first drop could not be joined live).
    fn merged_conns(&self) -> Vec<(ConnKey, ConnAcc)> {
        let mut by_source: BTreeMap<(u8, IpAddr, Option<u16>), Vec<&ConnKey>> = BTreeMap::new();
        for k in self.conns.keys() {
            by_source
                .entry((k.proto, k.src, k.sport))
                .or_default()
                .push(k);
        }
        let mut out = Vec::new();
        for keys in by_source.values_mut() {
            // The same answer live and from a log: a fixed order whatever the map's.
            keys.sort();
            let main = keys
                .iter()
                .find(|k| self.conns[**k].dropped > 0)
                .copied()
                .filter(|_| keys[0].sport.is_some());
            let Some(main) = main else {
                for k in keys {
                    out.push((**k, self.conns[*k].clone()));
                }
                continue;
            };
            let mut acc = self.conns[main].clone();
            for k in keys.iter().filter(|k| **k != main) {
                let other = &self.conns[*k];
                if other.dropped > 0 {
                    out.push((**k, other.clone()));
                    continue;
                }
                acc.first_ns = match (acc.first_ns, other.first_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                acc.last_ns = acc.last_ns.max(other.last_ns);
                acc.retransmits += other.retransmits;
                acc.size_reduced |= other.size_reduced;
                acc.icmp_received += other.icmp_received;
                acc.icmp_dropped += other.icmp_dropped;
                acc.sender = acc.sender.or(other.sender);
                if acc.service.is_none() {
                    acc.service = other.service.clone();
                }
            }
            out.push((*main, acc));
        }
        out
    }
}

/// A path-MTU probe a verdict asks for (see [`Analyzer::probes_wanted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeWant {
    /// Network namespaces to probe from, by preference (inodes).
    pub from: Vec<u32>,
    pub to: IpAddr,
    pub why: String,
}

/// Probes kept at most (one per namespace and address).
const MAX_PROBES: usize = 64;

fn flow_key(f: &FlowSummary) -> ConnKey {
    ConnKey {
        proto: f.proto,
        src: f.src,
        sport: f.sport,
        dst: f.dst,
        dport: f.dport,
    }
}

fn path_of(c: &ConnAcc) -> PathRef {
    let (overlay, overhead) = match c.overlay {
        Some((e, v6)) => (Some(e), overlay_kind(e).overhead(v6)),
        None => (None, 0),
    };
    PathRef {
        src_node: c
            .src_node
            .as_deref()
            .map(String::from)
            .or_else(|| c.outer_src.map(|a| a.to_string())),
        dst_node: c
            .dst_node
            .as_deref()
            .map(String::from)
            .or_else(|| c.outer_dst.map(|a| a.to_string())),
        overlay,
        overhead,
    }
}

fn overlay_kind(e: Encap) -> Overlay {
    match e {
        Encap::Ipip => Overlay::Ipip,
        Encap::Vxlan => Overlay::Vxlan,
    }
}

fn overlay_of(outer: Option<&Outer>) -> (Option<Encap>, u32) {
    match outer {
        Some(o) => (
            Some(o.encap),
            overlay_kind(o.encap).overhead(o.src.is_ipv6()),
        ),
        None => (None, 0),
    }
}

/// `ip_forward+0x2c0` → `ip_forward`.
fn symbol(location: &str) -> &str {
    location.split('+').next().unwrap_or(location)
}

/// Which families' path-MTU learning a run could see, from its start line's hooks. The
/// `pmtu_hook` flag alone cannot say: it means both families since the IPv6 hook exists, and
/// IPv4 alone in logs written before, which have no `pmtu6-learned` hook line.
fn learning_seen(start: &Start) -> [Option<bool>; 2] {
    let attached = |concern: &str| {
        start
            .hooks
            .iter()
            .any(|h| h.concern == concern && h.outcome == "attached")
    };
    if start.hooks.is_empty() {
        // A start line without its hooks (hand-written or cut): only the flag, and only what
        // it has always meant, IPv4.
        return [Some(start.pmtu_hook), Some(false)];
    }
    [
        Some(attached(crate::hooks::pmtu::CONCERN)),
        Some(attached(crate::hooks::pmtu6::CONCERN)),
    ]
}
