//! Live terminal view: one aligned line per event, repeated flows folded so that a flood of drops
//! stays readable over a slow SSH link.
//!
//! ```text
//! 18:04:07.113 DROP        eth0    1500>1450  ip_forward+0x2a1     PKT_TOO_BIG   tcp 10.0.1.2:41234 → 10.0.2.2:6379  [vxlan 192.168.0.1→192.168.0.2 vni 1]
//! 18:04:07.113 ICMP-OUT    vxlan0  mtu 1450   frag-needed → 10.0.1.2  about tcp 10.0.1.2:41234 → 10.0.2.2:6379
//!              … 41 more like: DROP eth0 tcp 10.0.1.2:41234 → 10.0.2.2:6379 at ip_forward (folded)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;

use super::Sink;
use crate::event::fragments::DropPlace;
use crate::event::{Encap, Kind, Record};
use crate::time::hms_millis;

/// Events of one flow key printed per window before the rest are counted instead.
const SHOW_PER_KEY: u32 = 3;
/// Fold window, in event time: suppressed counts are reported once per window.
const WINDOW_NS: i128 = 1_000_000_000;
/// Flow keys remembered for folding; beyond this the least recently seen key is forgotten (its
/// pending count goes to the "other flows" line) so a scan or spoofed flood cannot grow memory.
const MAX_KEYS: usize = 4096;
/// Width of the time column, which fold lines leave blank.
const TIME_WIDTH: usize = 12;
const LABEL_WIDTH: usize = 11; // "OVERSIZE-TX"
const SIZE_WIDTH: usize = 10; // "65535>1450"
const LOCATION_WIDTH: usize = 20;
const REASON_WIDTH: usize = 13; // "NOT_SPECIFIED"
/// Interface names are at most 15 bytes (IFNAMSIZ - 1); the column grows up to that as longer
/// names show up, starting narrow so `eth0` lines are not mostly blanks.
const IFNAME_MIN_WIDTH: usize = 6;
const IFNAME_MAX_WIDTH: usize = 15;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

/// `--color`, set once by `main` (auto until then).
static COLOR: std::sync::OnceLock<crate::cli::ColorWhen> = std::sync::OnceLock::new();

/// What `--color` said, for [`want_color`].
pub fn set_color(when: crate::cli::ColorWhen) {
    let _ = COLOR.set(when);
}

/// Colour on standard output: as `--color` says; for `auto`, as the ecosystem decides
/// (anstream: a terminal, NO_COLOR (https://no-color.org), CLICOLOR, CLICOLOR_FORCE, TERM).
pub fn want_color() -> bool {
    use crate::cli::ColorWhen;
    match COLOR.get().copied().unwrap_or(ColorWhen::Auto) {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
        }
    }
}

/// End-of-run counts.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Events per [`Kind::as_str`] name.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Events the kernel could not queue (sum of `lost` records).
    pub lost: u64,
    /// With Kubernetes names enabled: events with a flow but no name for any of its ends.
    pub unattributed: Option<u64>,
    pub duration_s: f64,
}

impl Summary {
    /// Count one record.
    pub fn add(&mut self, rec: &Record) {
        if rec.kind == Kind::Lost {
            self.lost = self.lost.saturating_add(rec.lost.unwrap_or(0));
        } else {
            *self.by_kind.entry(rec.kind.as_str()).or_insert(0) += rec.events();
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.by_kind.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// `312 drop, 57 icmp_too_big_sent, 0 icmp_too_big_received, 4 oversize_tx, 18 tcp_retransmit,
    /// 3 pmtu_update; 0 lost; 12.0 s`
    pub fn line(&self) -> String {
        // Every kind in the one list's order; `lost` is counted apart.
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .filter(|&&k| k != Kind::Lost)
            .map(|&k| format!("{} {}", self.count(k), k.as_str()))
            .collect();
        let names = self
            .unattributed
            .map_or(String::new(), |n| format!("; {n} unattributed"));
        format!(
            "{}; {} lost{names}; {:.1} s",
            kinds.join(", "),
            self.lost,
            self.duration_s
        )
    }
}

/// What makes two events "the same" for folding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FoldKey {
    kind: Kind,
    ifname: Option<Arc<str>>,
    proto: Option<u8>,
    src: Option<IpAddr>,
    sport: Option<u16>,
    dst: Option<IpAddr>,
    dport: Option<u16>,
    reason: Option<Arc<str>>,
    location: Option<Arc<str>>,
}

impl FoldKey {
    fn of(rec: &Record) -> Self {
        FoldKey {
            kind: rec.kind,
            ifname: rec.device.ifname.clone(),
            proto: rec.flow.proto,
            src: rec.flow.src,
            sport: rec.flow.sport,
            dst: rec.flow.dst,
            dport: rec.flow.dport,
            reason: rec.drop.reason.clone(),
            location: rec.drop.location.clone(),
        }
    }
}

struct FoldEntry {
    /// Lines printed for this key since it was (re)created.
    shown: u32,
    /// Events not printed since the last fold line.
    suppressed: u64,
    /// Seen during the current window; keys idle for a whole window are forgotten, so a flow that
    /// comes back later is printed again.
    active: bool,
    /// Recency stamp, the key into `FoldTable::by_age`.
    stamp: u64,
    /// `DROP eth0 tcp 10.0.1.2:41234 → 10.0.2.2:6379`, for the fold line.
    what: String,
}

#[derive(Default)]
struct FoldTable {
    entries: HashMap<FoldKey, FoldEntry>,
    /// Recency order (stamp → key), oldest first, for eviction.
    by_age: BTreeMap<u64, FoldKey>,
    next_stamp: u64,
    /// Suppressed events of evicted keys.
    other: u64,
}

impl FoldTable {
    /// Count a record of `events` events; true when it should be printed.
    fn observe(&mut self, key: FoldKey, events: u64, what: impl FnOnce() -> String) -> bool {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(e) = self.entries.get_mut(&key) {
            if let Some(k) = self.by_age.remove(&e.stamp) {
                self.by_age.insert(stamp, k);
            }
            e.stamp = stamp;
            e.active = true;
            if e.shown < SHOW_PER_KEY {
                e.shown += 1;
                return true;
            }
            e.suppressed += events;
            return false;
        }
        if self.entries.len() >= MAX_KEYS {
            if let Some((_, old)) = self.by_age.pop_first() {
                if let Some(e) = self.entries.remove(&old) {
                    self.other = self.other.saturating_add(e.suppressed);
                }
            }
        }
        self.by_age.insert(stamp, key.clone());
        self.entries.insert(
            key,
            FoldEntry {
                shown: 1,
                suppressed: 0,
                active: true,
                stamp,
                what: what(),
            },
        );
        true
    }

    /// Pending fold lines (oldest key first), resetting the counts. With `end_window`, also
    /// forget keys that saw no event during the window that ends.
    fn drain(&mut self, end_window: bool) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for key in self.by_age.values() {
            if let Some(e) = self.entries.get_mut(key) {
                if e.suppressed > 0 {
                    out.push((e.suppressed, e.what.clone()));
                    e.suppressed = 0;
                }
            }
        }
        if end_window {
            let entries = &mut self.entries;
            self.by_age.retain(|_, key| {
                let keep = entries.get(key).is_some_and(|e| e.active);
                if keep {
                    if let Some(e) = entries.get_mut(key) {
                        e.active = false;
                    }
                } else {
                    entries.remove(key);
                }
                keep
            });
        }
        if self.other > 0 {
            out.push((self.other, String::new()));
            self.other = 0;
        }
        out
    }
}

pub struct TerminalSink<W: Write> {
    out: W,
    color: bool,
    folds: FoldTable,
    /// Event time the current fold window started at.
    window_start: Option<i128>,
    ifname_width: usize,
    /// The last drop seen, printed or folded: the fragmenter's drop of the same packet right
    /// after it is not a second packet.
    last_drop: Option<DropPlace>,
    /// A drop's line held until the next output: the original's drop may follow and join it.
    held: Option<String>,
}

impl<W: Write> TerminalSink<W> {
    /// `color`: ANSI colours on; decide with [`want_color`].
    pub fn new(out: W, color: bool) -> Self {
        TerminalSink {
            out,
            color,
            folds: FoldTable::default(),
            window_start: None,
            ifname_width: IFNAME_MIN_WIDTH,
            last_drop: None,
            held: None,
        }
    }

    /// Print the held drop line, if any.
    fn release(&mut self) -> anyhow::Result<()> {
        match self.held.take() {
            Some(line) => writeln!(self.out, "{line}").context("cannot write to the terminal"),
            None => Ok(()),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Print the end-of-run summary line (after any pending fold lines). Output errors are
    /// ignored: this runs at exit, when the terminal may be gone and nothing is left to do.
    pub fn summary(&mut self, counts: &Summary) {
        let _ = self.release();
        let _ = self.write_folds(false);
        let line = format!("{} {}", self.paint(BOLD, "summary:"), counts.line());
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Start a new fold window when `now` is a window past its start (or the clock went back).
    fn roll_window(&mut self, now: i128) -> anyhow::Result<()> {
        match self.window_start {
            None => self.window_start = Some(now),
            // A record folded at the ring's edge carries its burst's last time, up to a tick
            // behind the others: only a larger step back is the clock going back.
            Some(start) if now.saturating_sub(start) >= WINDOW_NS || now < start - WINDOW_NS => {
                self.write_folds(true)?;
                self.window_start = Some(now);
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn write_folds(&mut self, end_window: bool) -> anyhow::Result<()> {
        self.release()?;
        for (n, what) in self.folds.drain(end_window) {
            let text = if what.is_empty() {
                format!("… {n} more from other flows (folded)")
            } else {
                format!("… {n} more like: {what} (folded)")
            };
            let line = format!("{:TIME_WIDTH$} {}", "", self.paint(DIM, &text));
            writeln!(self.out, "{line}").context("cannot write to the terminal")?;
        }
        Ok(())
    }

    fn ifname(&mut self, rec: &Record) -> String {
        let name = match (&rec.device.ifname, rec.device.ifindex) {
            (Some(n), _) => n.to_string(),
            (None, Some(i)) => format!("if{i}"),
            (None, None) => "-".to_string(),
        };
        self.ifname_width = self
            .ifname_width
            .max(name.chars().count())
            .min(IFNAME_MAX_WIDTH);
        name
    }

    /// The event's line, without the trailing newline.
    fn line(&mut self, rec: &Record) -> String {
        let (label, label_color) = label(rec.kind);
        let time = hms_millis(rec.ts_unix_ns);
        let label = self.paint(label_color, &format!("{label:LABEL_WIDTH$}"));
        if rec.kind == Kind::Lost {
            let n = rec.lost.map_or("some".to_string(), |n| n.to_string());
            return format!("{time} {label} {n} events lost (ring buffer full)");
        }
        let ifname = self.ifname(rec);
        let ifname = format!("{ifname:w$}", w = self.ifname_width);
        let (size, over) = size_column(rec);
        let size = format!("{size:SIZE_WIDTH$}");
        let size = if over { self.paint(RED, &size) } else { size };
        let flow = flow_text(rec);
        let mut rest = match rec.kind {
            Kind::Drop => {
                let location = rec.drop.location.as_deref().unwrap_or("-");
                let reason = match (&rec.drop.reason, rec.drop.reason_code) {
                    (Some(r), _) => r.to_string(),
                    (None, Some(c)) => format!("reason {c}"),
                    (None, None) => "-".to_string(),
                };
                let reason = format!("{reason:REASON_WIDTH$}");
                let reason = if rec.drop.reason.as_deref() == Some("PKT_TOO_BIG") {
                    self.paint(BOLD, &reason)
                } else {
                    reason
                };
                format!("{location:LOCATION_WIDTH$} {reason} {flow}")
            }
            Kind::IcmpTooBigSent | Kind::IcmpTooBigReceived => icmp_text(rec, &flow),
            Kind::TcpRetransmit => match &rec.tcp_state {
                Some(state) => format!("{flow}  {state}"),
                None => flow,
            },
            Kind::OversizeTx => match (rec.size.gso_size, rec.size.gso_segs) {
                (Some(size), Some(segs)) => format!("{flow}  gso {segs}×{size}"),
                (Some(size), None) => format!("{flow}  gso {size}"),
                _ => flow,
            },
            // The learner: a socket (ports), else a tunnel or router for a destination.
            Kind::PmtuUpdate => format!("{flow}  path MTU learned"),
            Kind::Lost => String::new(), // handled above
        };
        if let Some(o) = &rec.flow.outer {
            let encap = match o.encap {
                Encap::Ipip => "ipip",
                Encap::Vxlan => "vxlan",
            };
            let vni = o.vni.map_or(String::new(), |v| format!(" vni {v}"));
            rest.push_str(&format!("  [{encap} {}→{}{vni}]", o.src, o.dst));
        }
        // The route's output device matters when the drop happened before it (e.g. tunl0 → eth0).
        if let Some(out) = rec
            .route
            .out_ifname
            .as_deref()
            .filter(|o| rec.device.ifname.as_deref() != Some(o))
        {
            let mtu = rec
                .route
                .out_mtu
                .map_or(String::new(), |m| format!(" mtu {m}"));
            rest.push_str(&format!("  out {out}{mtu}"));
        }
        if let Some(peer) = rec.route.peer_ifname.as_deref() {
            let mtu = rec
                .route
                .peer_mtu
                .map_or(String::new(), |m| format!(" mtu {m}"));
            rest.push_str(&format!("  peer {peer}{mtu}"));
        }
        if let Some(names) = names_text(rec) {
            rest.push_str(&format!("  = {}", self.paint(CYAN, &names)));
        }
        if rec.events() > 1 {
            rest.push_str(&format!("  ×{}", rec.events()));
        }
        let line = format!("{time} {label} {ifname} {size} {rest}");
        line.trim_end().to_string()
    }
}

/// Terminal label and its colour.
fn label(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Drop => ("DROP", RED),
        Kind::IcmpTooBigSent => ("ICMP-OUT", YELLOW),
        Kind::IcmpTooBigReceived => ("ICMP-IN", CYAN),
        Kind::OversizeTx => ("OVERSIZE-TX", MAGENTA),
        Kind::TcpRetransmit => ("RETRANS", YELLOW),
        Kind::PmtuUpdate => ("PMTU", GREEN),
        Kind::Lost => ("LOST", RED),
    }
}

/// `1520>1450` when the packet exceeds the MTU (flagged true), `1400≤1450` when it fits,
/// `1448 B` or `mtu 1450` when only one is known. ICMP events show the advertised MTU.
fn size_column(rec: &Record) -> (String, bool) {
    if matches!(
        rec.kind,
        Kind::IcmpTooBigSent | Kind::IcmpTooBigReceived | Kind::PmtuUpdate
    ) {
        let mtu = rec.icmp.as_ref().and_then(|i| i.mtu).or(rec.size.mtu);
        return (
            mtu.map_or("mtu ?".to_string(), |m| format!("mtu {m}")),
            false,
        );
    }
    // l3_len compares with the MTU; skb->len may include the Ethernet header.
    let size = rec.size.l3_len.or(rec.size.len);
    // A veth drop fails on the peer's MTU, not the MTU of the device the event names.
    match (
        size,
        rec.route.peer_mtu.or(rec.size.mtu).or(rec.route.out_mtu),
    ) {
        (Some(s), Some(m)) if s > m => (format!("{s}>{m}"), true),
        (Some(s), Some(m)) => (format!("{s}≤{m}"), false),
        (Some(s), None) => (format!("{s} B"), false),
        (None, Some(m)) => (format!("mtu {m}"), false),
        (None, None) => (String::new(), false),
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => format!("proto {p}"),
    }
}

fn endpoint(addr: Option<IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".to_string(),
    }
}

/// `tcp 10.0.1.2:41234 → 10.0.2.2:6379`, or `-` when the packet could not be decoded.
/// The flow in Kubernetes terms, when names are known:
/// `shop/order-api@worker-116 → svc cache/storage:8080 → cache/storage-0@worker-208`.
fn names_text(rec: &Record) -> Option<String> {
    if !rec.has_names() {
        return None;
    }
    type Name = Option<std::sync::Arc<crate::event::ObjectRef>>;
    let end = |pod: &Name, node: &Name| {
        let pod = pod.as_ref().map(|p| match &p.namespace {
            Some(ns) => format!("{ns}/{}", p.name),
            None => p.name.to_string(),
        });
        match (pod, node) {
            (Some(p), Some(n)) => Some(format!("{p}@{}", n.name)),
            (Some(p), None) => Some(p),
            (None, Some(n)) => Some(format!("node {}", n.name)),
            (None, None) => None,
        }
    };
    let src = end(&rec.names.src_pod, &rec.names.src_node).unwrap_or_else(|| "?".to_string());
    let dst = end(&rec.names.dst_pod, &rec.names.dst_node);
    Some(match (&rec.names.service, dst) {
        (Some(svc), dst) => {
            let port = svc.port.map_or(String::new(), |p| format!(":{p}"));
            let via = format!("svc {}/{}{port}", svc.namespace, svc.name);
            match dst {
                Some(d) => format!("{src} → {via} → {d}"),
                None => format!("{src} → {via}"),
            }
        }
        (None, Some(d)) => format!("{src} → {d}"),
        (None, None) => format!("{src} → ?"),
    })
}

fn flow_text(rec: &Record) -> String {
    if rec.flow.src.is_none() && rec.flow.dst.is_none() {
        return "-".to_string();
    }
    let proto = rec.flow.proto.map_or("?".to_string(), proto_name);
    format!(
        "{proto} {} → {}",
        endpoint(rec.flow.src, rec.flow.sport),
        endpoint(rec.flow.dst, rec.flow.dport)
    )
}

/// `frag-needed → 10.0.1.2  about tcp ...` (sent) / `frag-needed from 10.0.0.254 → 10.0.1.2  about ...`
/// (received). Without the ICMP message itself (a kprobe sees only the refused packet and the
/// MTU), the message goes to the refused packet's source.
fn icmp_text(rec: &Record, flow: &str) -> String {
    let v6 = rec
        .icmp
        .as_ref()
        .map(|i| i.to.is_ipv6())
        .or(rec.flow.src.map(|s| s.is_ipv6()))
        .unwrap_or(false);
    let what = match &rec.icmp {
        Some(i) if !v6 && (i.icmp_type, i.code) != (3, 4) => {
            format!("icmp {}/{}", i.icmp_type, i.code)
        }
        Some(i) if v6 && i.icmp_type != 2 => format!("icmpv6 {}/{}", i.icmp_type, i.code),
        _ if v6 => "pkt-too-big".to_string(),
        _ => "frag-needed".to_string(),
    };
    let route = match (&rec.icmp, rec.kind) {
        (Some(i), Kind::IcmpTooBigReceived) => match i.from {
            Some(from) => format!("from {from} → {}", i.to),
            None => format!("→ {}", i.to),
        },
        (Some(i), _) => format!("→ {}", i.to),
        (None, _) => rec.flow.src.map_or(String::new(), |s| format!("→ {s}")),
    };
    if flow == "-" {
        format!("{what} {route}")
    } else {
        format!("{what} {route}  about {flow}")
    }
}

impl<W: Write> Sink for TerminalSink<W> {
    fn emit(&mut self, rec: &Record) -> anyhow::Result<()> {
        // The original of a packet whose fragment just died: the same packet, one line (its
        // fold, when the fragment's line was folded, already counts it).
        if let Some(before) = self.last_drop.take() {
            if before.original_follows(rec) {
                if let Some(line) = self.held.take() {
                    let len = rec.size.l3_len.or(rec.size.len).unwrap_or(0);
                    let at = rec.drop.location.as_deref().unwrap_or("-");
                    writeln!(self.out, "{line}  + original {len} B at {at}")
                        .context("cannot write to the terminal")?;
                }
                return Ok(());
            }
        }
        self.last_drop = DropPlace::of(rec);
        self.release()?;
        self.roll_window(rec.ts_unix_ns)?;
        // Lost-event reports are rare and always matter: never folded.
        if rec.kind != Kind::Lost {
            let (label, _) = label(rec.kind);
            let key = FoldKey::of(rec);
            let print = self.folds.observe(key, rec.events(), || {
                let ifname = rec.device.ifname.as_deref().unwrap_or("-");
                // Drops of one flow at two places (a fragment at the veth, the whole packet in
                // ip_do_fragment) fold apart: name the place without its offset.
                match rec
                    .drop
                    .location
                    .as_deref()
                    .and_then(|l| l.split('+').next())
                {
                    Some(at) => format!("{label} {ifname} {} at {at}", flow_text(rec)),
                    None => format!("{label} {ifname} {}", flow_text(rec)),
                }
            });
            if !print {
                return Ok(());
            }
        }
        let line = self.line(rec);
        if rec.kind == Kind::Drop {
            self.held = Some(line);
            return Ok(());
        }
        writeln!(self.out, "{line}").context("cannot write to the terminal")
    }

    /// Prints the pending fold lines (keeping flows that are still folded, folded) and flushes.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.write_folds(false)?;
        self.out.flush().context("cannot write to the terminal")
    }

    fn batch_end(&mut self) -> anyhow::Result<()> {
        self.release()
    }

    fn tick(&mut self, now_unix_ns: i128) -> anyhow::Result<()> {
        self.release()?;
        self.roll_window(now_unix_ns)?;
        self.out.flush().context("cannot write to the terminal")
    }

    /// A probe the run made, in one line.
    fn probe(&mut self, p: &crate::event::probe::Probe) -> anyhow::Result<()> {
        self.write_folds(false)?;
        let to = p.to.map_or("?".to_string(), |a| a.to_string());
        let found = match (p.path_mtu, p.exact) {
            (Some(m), true) => format!("path MTU {m}"),
            (Some(m), false) => format!("path MTU at least {m}"),
            (None, _) => p.status.replace('_', " "),
        };
        writeln!(
            self.out,
            "PROBE       from {} to {to}: {found} ({} probes, {} ms; {})",
            p.netns_name, p.sent, p.elapsed_ms, p.why
        )
        .context("cannot write to the terminal")?;
        self.out.flush().context("cannot write to the terminal")
    }

    /// The verdict block, after the folded lines it sums up; the header in colour.
    fn verdict(&mut self, v: &crate::verdict::Verdict) -> anyhow::Result<()> {
        self.write_folds(false)?;
        let colour = match v.severity {
            crate::verdict::Severity::Problem => RED,
            crate::verdict::Severity::Suspected | crate::verdict::Severity::Info => YELLOW,
            crate::verdict::Severity::Ok => GREEN,
        };
        for (i, line) in crate::verdict::render(v).into_iter().enumerate() {
            let line = if i == 0 {
                self.paint(colour, &line)
            } else {
                line
            };
            writeln!(self.out, "{line}").context("cannot write to the terminal")?;
        }
        self.out.flush().context("cannot write to the terminal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IcmpTooBig, MtuSource, Outer};

    const T0: i128 = 1_795_630_181_123_456_789; // 2026-11-25T18:09:41.123Z
    const MS: i128 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn with_flow(mut r: Record, sport: u16) -> Record {
        r.flow.proto = Some(6);
        r.flow.src = Some(ip("10.0.1.2"));
        r.flow.sport = Some(sport);
        r.flow.dst = Some(ip("10.0.2.2"));
        r.flow.dport = Some(6379);
        r
    }

    fn drop_rec(ts: i128, sport: u16) -> Record {
        let mut r = with_flow(Record::new(Kind::Drop, "tp_btf/kfree_skb", ts), sport);
        r.device.ifname = Some("eth0".into());
        r.size.len = Some(1514);
        r.size.l3_len = Some(1500);
        r.size.mtu = Some(1450);
        r.drop.reason = Some("PKT_TOO_BIG".into());
        r.drop.location = Some("ip_forward+0x2a1".into());
        r.flow.outer = Some(Outer {
            src: ip("192.168.0.1"),
            dst: ip("192.168.0.2"),
            encap: Encap::Vxlan,
            vni: None,
        });
        r
    }

    fn render(recs: &[Record], color: bool) -> String {
        let mut s = TerminalSink::new(Vec::new(), color);
        for r in recs {
            s.emit(r).unwrap();
        }
        s.flush().unwrap();
        String::from_utf8(s.into_inner()).unwrap()
    }

    #[test]
    fn drop_line() {
        let out = render(&[drop_rec(T0, 41234)], false);
        assert_eq!(
            out,
            "18:09:41.123 DROP        eth0   1500>1450  ip_forward+0x2a1     PKT_TOO_BIG   \
             tcp 10.0.1.2:41234 → 10.0.2.2:6379  [vxlan 192.168.0.1→192.168.0.2]\n"
        );
    }

    #[test]
    fn icmp_lines() {
        let mut sent = with_flow(
            Record::new(Kind::IcmpTooBigSent, "kprobe/__icmp_send", T0),
            41234,
        );
        sent.device.ifname = Some("vxlan0".into());
        sent.size.mtu = Some(1450);
        let out = render(&[sent], false);
        assert!(out.starts_with("18:09:41.123 ICMP-OUT    vxlan0 mtu 1450   frag-needed → 10.0.1.2  about tcp 10.0.1.2:41234 → 10.0.2.2:6379"), "{out}");

        let mut recv = with_flow(Record::new(Kind::IcmpTooBigReceived, "xdp", T0), 41234);
        recv.device.ifname = Some("eth0".into());
        recv.icmp = Some(IcmpTooBig {
            from: Some(ip("10.0.0.254")),
            to: ip("10.0.1.2"),
            icmp_type: 3,
            code: 4,
            mtu: Some(1400),
        });
        let out = render(&[recv], false);
        for want in [
            "ICMP-IN",
            "eth0",
            "mtu 1400",
            "frag-needed from 10.0.0.254 → 10.0.1.2",
            "about tcp 10.0.1.2:41234",
        ] {
            assert!(out.contains(want), "{want} in {out}");
        }
    }

    #[test]
    fn pmtu_line_shows_the_learned_mtu_and_the_routes_device() {
        let mut r = with_flow(
            Record::new(Kind::PmtuUpdate, "fentry/__ip_rt_update_pmtu", T0),
            0,
        );
        r.flow.sport = None;
        r.flow.dport = None;
        r.size.mtu = Some(1430);
        r.size.mtu_source = Some(MtuSource::Pmtu);
        r.route.out_ifname = Some("eth0".into());
        r.route.out_mtu = Some(1500);
        let out = render(&[r], false);
        for want in [
            "PMTU",
            "mtu 1430",
            "10.0.1.2 → 10.0.2.2",
            "path MTU learned",
            "out eth0 mtu 1500",
        ] {
            assert!(out.contains(want), "{want} in {out}");
        }
    }

    #[test]
    fn other_kinds() {
        let mut tx = with_flow(Record::new(Kind::OversizeTx, "tcx/egress", T0), 1);
        tx.device.ifname = Some("tunl0".into());
        tx.size.l3_len = Some(1520);
        tx.size.mtu = Some(1450);
        let mut rt = with_flow(
            Record::new(Kind::TcpRetransmit, "tp/tcp_retransmit_skb", T0),
            2,
        );
        rt.device.ifname = Some("cali1a2b3c4d5e6".into());
        rt.size.len = Some(1448);
        rt.tcp_state = Some("TCP_ESTABLISHED".into());
        let mut lost = Record::new(Kind::Lost, "ringbuf", T0);
        lost.lost = Some(41);
        let out = render(&[tx, rt, lost], false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("OVERSIZE-TX tunl0") && lines[0].contains("1520>1450"),
            "{out}"
        );
        assert!(
            lines[1].contains("RETRANS     cali1a2b3c4d5e6 1448 B"),
            "{out}"
        );
        assert!(
            lines[1].contains("tcp 10.0.1.2:2 → 10.0.2.2:6379  TCP_ESTABLISHED"),
            "{out}"
        );
        assert_eq!(
            lines[2],
            "18:09:41.123 LOST        41 events lost (ring buffer full)"
        );
    }

    #[test]
    fn veth_drop_compares_with_the_peer_mtu() {
        let mut r = drop_rec(T0, 1);
        r.device.ifname = Some("cali1a2b".into());
        r.size.mtu = Some(1500);
        r.route.peer_ifname = Some("eth0".into());
        r.route.peer_mtu = Some(1450);
        let out = render(&[r], false);
        assert!(
            out.contains(" 1500>1450 ") && out.contains("peer eth0 mtu 1450"),
            "{out}"
        );
    }

    #[test]
    fn ipv6_ports_are_bracketed() {
        let mut r = drop_rec(T0, 1);
        r.flow.src = Some(ip("fd00::1"));
        r.flow.dst = Some(ip("fd00::2"));
        assert!(render(&[r], false).contains("tcp [fd00::1]:1 → [fd00::2]:6379"));
    }

    #[test]
    fn undecoded_packet_still_prints() {
        let r = Record::new(Kind::Drop, "tp_btf/kfree_skb", T0);
        assert_eq!(
            render(&[r], false),
            "18:09:41.123 DROP        -                 -                    -             -\n"
        );
    }

    #[test]
    fn folding_identical_drops() {
        let recs: Vec<Record> = (0..100).map(|_| drop_rec(T0, 41234)).collect();
        let out = render(&recs, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[..3].iter().all(|l| l.contains("DROP")));
        assert_eq!(
            lines[3],
            "             … 97 more like: DROP eth0 tcp 10.0.1.2:41234 → 10.0.2.2:6379 at ip_forward (folded)"
        );
    }

    #[test]
    fn a_line_folded_upstream_shows_its_count_and_the_folds_add_it() {
        // The ring's edge folded 500 drops into the second record, 250 into the fourth.
        let mut recs: Vec<Record> = (0..5).map(|_| drop_rec(T0, 41234)).collect();
        recs[1].count = Some(500);
        recs[3].count = Some(250);
        let out = render(&recs, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(!lines[0].contains('×'), "{out}");
        assert!(lines[1].ends_with("×500"), "{out}");
        // Not shown: the fourth (250) and the fifth (1).
        assert!(
            out.contains("… 251 more like: DROP eth0 tcp 10.0.1.2:41234"),
            "{out}"
        );
        let mut sum = Summary::default();
        recs.iter().for_each(|r| sum.add(r));
        assert_eq!(sum.count(Kind::Drop), 753);
    }

    #[test]
    fn different_flows_are_not_folded_together() {
        let recs: Vec<Record> = (0..10)
            .flat_map(|_| [drop_rec(T0, 1), drop_rec(T0, 2)])
            .collect();
        let out = render(&recs, false);
        assert_eq!(
            out.lines()
                .filter(|l| l.contains(":1 →") && !l.contains('…'))
                .count(),
            3
        );
        assert_eq!(
            out.lines()
                .filter(|l| l.contains(":2 →") && !l.contains('…'))
                .count(),
            3
        );
        assert!(out.contains("… 7 more like: DROP eth0 tcp 10.0.1.2:1 →"));
        assert!(out.contains("… 7 more like: DROP eth0 tcp 10.0.1.2:2 →"));
    }

    #[test]
    fn fold_lines_come_every_second_of_event_time() {
        let mut s = TerminalSink::new(Vec::new(), false);
        // A flood over 2.5 s, 1 event per 10 ms.
        for i in 0..250 {
            s.emit(&drop_rec(T0 + i * 10 * MS, 7)).unwrap();
        }
        let out = String::from_utf8(s.get_ref().clone()).unwrap();
        let folds: Vec<&str> = out.lines().filter(|l| l.contains('…')).collect();
        // Windows roll at events 100 and 200: 97 then 100 suppressed; the still-active flow stays
        // folded (no new "first 3" lines).
        assert_eq!(folds.len(), 2, "{out}");
        assert!(folds[0].contains("… 97 more"), "{out}");
        assert!(folds[1].contains("… 100 more"), "{out}");
        assert_eq!(out.lines().filter(|l| !l.contains('…')).count(), 3);
        // After a quiet window the flow is forgotten, and printed again when it returns.
        s.tick(T0 + 5_000 * MS).unwrap();
        s.tick(T0 + 7_000 * MS).unwrap();
        s.emit(&drop_rec(T0 + 8_000 * MS, 7)).unwrap();
        // A drop's line waits for the next output (its original's drop may join it): the next
        // tick prints it.
        s.tick(T0 + 8_000 * MS).unwrap();
        let out = String::from_utf8(s.into_inner()).unwrap();
        assert!(
            out.lines()
                .nth_back(0)
                .unwrap()
                .starts_with("18:09:49.123 DROP"),
            "{out}"
        );
    }

    /// A veth drops the first fragment, then `ip_do_fragment` drops the original: one packet.
    fn fragment_then_original(ts: i128, gap: i128) -> [Record; 2] {
        let mut frag = drop_rec(ts, 9);
        frag.drop.location = Some("__dev_forward_skb2+0x87".into());
        frag.size.l3_len = Some(1448);
        frag.device.netns = Some(7);
        frag.device.ifindex = Some(2);
        let mut orig = frag.clone();
        orig.ts_unix_ns = ts + gap;
        orig.drop.location = Some("ip_do_fragment+0x5a2".into());
        orig.size.l3_len = Some(1500);
        [frag, orig]
    }

    #[test]
    fn a_fragment_and_its_original_are_one_line_with_both_places() {
        let out = render(&fragment_then_original(T0, 20_000), false);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("__dev_forward_skb2+0x87"), "{out}");
        assert!(
            out.trim_end()
                .ends_with("  + original 1500 B at ip_do_fragment+0x5a2"),
            "{out}"
        );
        // Further apart than one packet's two drops: two lines.
        let out = render(&fragment_then_original(T0, 5 * MS), false);
        assert_eq!(out.lines().count(), 2, "{out}");
        // Another flow's original does not join.
        let [frag, mut orig] = fragment_then_original(T0, 20_000);
        orig.flow.sport = Some(10);
        assert_eq!(render(&[frag, orig], false).lines().count(), 2);
    }

    #[test]
    fn a_folded_fragment_takes_its_original_with_it() {
        let recs: Vec<Record> = (0..20)
            .flat_map(|i| fragment_then_original(T0 + i * MS, 20_000))
            .collect();
        let out = render(&recs, false);
        // The first three packets printed (one line each), the rest folded as one kind of line:
        // no separate lines or folds for the fragmenter's drops.
        assert_eq!(
            out.lines().filter(|l| l.contains("+ original")).count(),
            3,
            "{out}"
        );
        assert!(
            !out.lines()
                .any(|l| l.starts_with("18:") && l.contains("ip_do_fragment+0x5a2  ")),
            "{out}"
        );
        assert!(!out.contains("at ip_do_fragment (folded)"), "{out}");
        assert!(out.contains("… 17 more like: DROP eth0 tcp 10.0.1.2:9 → 10.0.2.2:6379 at __dev_forward_skb2 (folded)"), "{out}");
    }

    #[test]
    fn fold_table_is_bounded() {
        let mut s = TerminalSink::new(std::io::sink(), false);
        for round in 0..5 {
            for port in 0..(MAX_KEYS as u16 + 100) {
                s.emit(&drop_rec(T0 + round, port)).unwrap();
            }
        }
        assert!(s.folds.entries.len() <= MAX_KEYS);
        assert_eq!(s.folds.entries.len(), s.folds.by_age.len());
    }

    #[test]
    fn evicted_counts_go_to_other() {
        let mut t = FoldTable::default();
        let key = |p| FoldKey::of(&drop_rec(T0, p));
        for _ in 0..10 {
            t.observe(key(0), 1, String::new);
        }
        for p in 1..=MAX_KEYS as u16 {
            t.observe(key(p), 1, String::new);
        }
        let lines = t.drain(false);
        assert_eq!(lines, vec![(7, String::new())]);
    }

    #[test]
    fn colour_only_when_asked() {
        let mut lost = Record::new(Kind::Lost, "ringbuf", T0);
        lost.lost = Some(1);
        let recs: Vec<Record> = (0..5).map(|_| drop_rec(T0, 1)).chain([lost]).collect();
        let plain = render(&recs, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let mut s = TerminalSink::new(Vec::new(), false);
        s.summary(&Summary::default());
        assert!(!String::from_utf8(s.into_inner()).unwrap().contains('\x1b'));
        let coloured = render(&recs, true);
        assert!(coloured.contains(RED) && coloured.contains(RESET));
    }

    #[test]
    fn summary_line() {
        let mut sum = Summary {
            duration_s: 12.0,
            ..Summary::default()
        };
        for _ in 0..312 {
            sum.add(&drop_rec(T0, 1));
        }
        let mut lost = Record::new(Kind::Lost, "ringbuf", T0);
        lost.lost = Some(5);
        sum.add(&lost);
        sum.add(&Record::new(Kind::TcpRetransmit, "tp", T0));
        let mut s = TerminalSink::new(Vec::new(), false);
        s.summary(&sum);
        assert_eq!(
            String::from_utf8(s.into_inner()).unwrap(),
            "summary: 312 drop, 0 icmp_too_big_sent, 0 icmp_too_big_received, 0 oversize_tx, \
             1 tcp_retransmit, 0 pmtu_update; 5 lost; 12.0 s\n"
        );
    }

    #[test]
    fn kubernetes_names_follow_the_flow() {
        use crate::event::{ObjectRef, ServiceRef};
        let obj = |ns: Option<&str>, name: &str| ObjectRef::new(ns.map(Into::into), name.into());
        let mut rec = Record::new(Kind::Drop, "tp_btf/kfree_skb", T0);
        assert_eq!(names_text(&rec), None);
        rec.names.src_pod = Some(Arc::new(obj(Some("shop"), "order-api")));
        rec.names.src_node = Some(Arc::new(obj(None, "worker-116")));
        rec.names.service = Some(Arc::new(ServiceRef::new(
            "cache".into(),
            "storage".into(),
            Some(6379),
            Some("redis".into()),
        )));
        assert_eq!(
            names_text(&rec).as_deref(),
            Some("shop/order-api@worker-116 → svc cache/storage:6379")
        );
        rec.names.dst_pod = Some(Arc::new(obj(Some("cache"), "storage-0")));
        rec.names.dst_node = Some(Arc::new(obj(None, "worker-208")));
        assert_eq!(
            names_text(&rec).as_deref(),
            Some("shop/order-api@worker-116 → svc cache/storage:6379 → cache/storage-0@worker-208")
        );
        rec.names.service = None;
        rec.names.src_pod = None;
        assert_eq!(
            names_text(&rec).as_deref(),
            Some("node worker-116 → cache/storage-0@worker-208")
        );
    }
}
