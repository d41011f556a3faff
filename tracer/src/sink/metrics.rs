//! `--metrics ADDR`: Prometheus exposition of the run, served over HTTP (`GET /metrics`, the
//! OpenMetrics text format, which Prometheus scrapes natively).
//!
//! Label sets are bounded: events are counted by kind, drop reason, device, watched namespace
//! and Kubernetes namespace, never by address or pod; each family keeps at most
//! [`MAX_SERIES`] label sets and counts the rest under `other` labels (keeping the event's kind
//! or the verdict's severity), so a scan or a node with thousands of pod veths cannot grow the
//! exposition without bound.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Sink;
use crate::event::{Kind, Record};
use crate::hooks::{Attempt, Outcome};
use crate::verdict::{PathRef, Verdict};

/// Label sets per metric family at most; beyond, series are merged into `other` sets.
pub const MAX_SERIES: usize = 1000;
/// Port of `--metrics` given without a value, or with an address only.
pub const DEFAULT_PORT: u16 = 9464;
/// A connection's whole life: its request read and its response written within this.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests longer than this (headers included) are refused.
const MAX_REQUEST: usize = 8192;
/// Connections served at once (each its own thread); more are closed unanswered.
const MAX_CONNECTIONS: usize = 16;

type Labels = Vec<(&'static str, String)>;

/// A family with a bounded number of label sets.
struct Bounded<M> {
    family: Family<Labels, M>,
    seen: HashSet<Labels>,
}

impl<M: Default> Bounded<M> {
    fn new() -> Self {
        Bounded {
            family: Family::default(),
            seen: HashSet::new(),
        }
    }

    /// The labels to use: `labels` if known or there is room, else the first `keep` of them
    /// (a small closed set: kinds, severities) with every other value `other`.
    fn admit(&mut self, labels: Labels, keep: usize) -> Labels {
        if self.seen.contains(&labels) {
            return labels;
        }
        if self.seen.len() >= MAX_SERIES {
            return labels
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| (k, if i < keep { v } else { "other".into() }))
                .collect();
        }
        self.seen.insert(labels.clone());
        labels
    }
}

/// The metrics of one run. Counters are updated from the record stream (as a [`Sink`]); the
/// registry is shared with the HTTP thread that renders it.
pub struct Metrics {
    registry: Arc<Registry>,
    events: Bounded<Counter>,
    lost: Family<Labels, Counter>,
    hooks: Family<Labels, Gauge>,
    verdicts: Bounded<Gauge>,
    largest_passing: Bounded<Gauge>,
    recommended_mtu: Bounded<Gauge>,
    /// The verdict series currently set per path: replaced by the path's next verdict.
    current: HashMap<PathRef, Labels>,
    /// Watched namespace inode → its label.
    netns_labels: HashMap<u32, String>,
}

impl Metrics {
    pub fn new(netns_labels: HashMap<u32, String>) -> Self {
        let mut registry = Registry::default();
        let events = Bounded::<Counter>::new();
        let lost = Family::<Labels, Counter>::default();
        let hooks = Family::<Labels, Gauge>::default();
        let verdicts = Bounded::<Gauge>::new();
        let largest_passing = Bounded::<Gauge>::new();
        let recommended_mtu = Bounded::<Gauge>::new();
        // Every hook's loss counter exists from the start at 0, so that `rate()` and alerts
        // see a series before the first loss.
        for hook in (0..tracer_common::HOOK_COUNT as u8).filter_map(tracer_common::Hook::from_u8) {
            let _ = lost.get_or_create(&vec![("hook", hook.name().to_string())]);
        }
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("tracer_build", "The tracer's version (always 1)", info);
        registry.register(
            "tracer_events",
            "Events by kind, drop reason, device (ifname), watched network namespace (netns) and \
             Kubernetes namespace of the flow's pod or service (namespace); `other` beyond 1000 \
             label sets",
            events.family.clone(),
        );
        registry.register(
            "tracer_lost_events",
            "Events the kernel could not queue (ring buffer full), by hook",
            lost.clone(),
        );
        registry.register(
            "tracer_hook_attached",
            "1 when the hook attached, 0 when it was refused (skipped methods are not listed)",
            hooks.clone(),
        );
        registry.register(
            "tracer_verdict",
            "1 for each path's current verdict (severity, problem, nodes, overlay)",
            verdicts.family.clone(),
        );
        registry.register(
            "tracer_verdict_largest_passing_bytes",
            "Largest pod packet that passes end to end on the path, per its current verdict",
            largest_passing.family.clone(),
        );
        registry.register(
            "tracer_verdict_recommended_mtu_bytes",
            "The pod MTU the path's current verdict recommends",
            recommended_mtu.family.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            events,
            lost,
            hooks,
            verdicts,
            largest_passing,
            recommended_mtu,
            current: HashMap::new(),
            netns_labels,
        }
    }

    /// Where the attach report goes once the hooks are attached (after this sink was created
    /// and handed to the run).
    pub fn hook_status(&self) -> HookStatus {
        HookStatus(self.hooks.clone())
    }

    /// The exposition, as served.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// Bind `addr` now (a taken port fails before anything is attached) and serve the
    /// exposition from a thread of its own until the process exits.
    pub fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} for --metrics"))?;
        let bound = listener.local_addr()?;
        let registry = self.registry.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                // Serving a bound socket needs no capability (see privileges.rs).
                let _ = crate::privileges::keep_only(&[]);
                let busy = Arc::new(AtomicUsize::new(0));
                for mut stream in listener.incoming().flatten() {
                    // A connection per thread, each with a deadline: a client that trickles its
                    // request (or never sends one) holds only its own thread, never the next
                    // scrape or the liveness probe. Beyond the cap a connection is closed at
                    // once: scrapes come seconds apart, so that many at a time is an attack.
                    if busy.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        continue;
                    }
                    busy.fetch_add(1, Ordering::Relaxed);
                    let (registry, mine) = (registry.clone(), busy.clone());
                    let served = std::thread::Builder::new()
                        .name("metrics-conn".into())
                        .spawn(move || {
                            let deadline = Instant::now() + IO_TIMEOUT;
                            // A client's failure is its own.
                            let _ = answer(&mut stream, &registry, deadline);
                            linger(&mut stream, deadline);
                            mine.fetch_sub(1, Ordering::Relaxed);
                        });
                    if served.is_err() {
                        busy.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            })
            .context("cannot start the metrics thread")?;
        Ok(bound)
    }

    fn namespace_of(rec: &Record) -> String {
        rec.names
            .src_pod
            .as_ref()
            .and_then(|p| p.namespace.as_deref())
            .or_else(|| rec.names.service.as_ref().map(|s| &*s.namespace))
            .or_else(|| {
                rec.names
                    .dst_pod
                    .as_ref()
                    .and_then(|p| p.namespace.as_deref())
            })
            .unwrap_or_default()
            .to_string()
    }

    fn path_labels(p: &PathRef) -> Labels {
        vec![
            ("src_node", p.src_node.clone().unwrap_or_default()),
            ("dst_node", p.dst_node.clone().unwrap_or_default()),
            (
                "overlay",
                p.overlay
                    .map(|o| match o {
                        crate::event::Encap::Vxlan => "vxlan",
                        crate::event::Encap::Ipip => "ipip",
                    })
                    .unwrap_or("")
                    .to_string(),
            ),
        ]
    }
}

/// `tracer_hook_attached`, filled after attaching.
pub struct HookStatus(Family<Labels, Gauge>);

impl HookStatus {
    /// Record how each hook attach went (the start-up block's `hooks:` lines).
    pub fn record(&self, report: &[Attempt]) {
        for a in report {
            let v = match a.outcome {
                Outcome::Attached => 1,
                Outcome::Failed(_) => 0,
                Outcome::Skipped(_) => continue,
            };
            self.0
                .get_or_create(&vec![
                    ("concern", a.concern.to_string()),
                    ("method", a.method.clone()),
                ])
                .set(v);
        }
    }
}

fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

impl Sink for Metrics {
    fn emit(&mut self, rec: &Record) -> anyhow::Result<()> {
        if rec.kind == Kind::Lost {
            self.lost
                .get_or_create(&vec![("hook", rec.hook.to_string())])
                .inc_by(rec.lost.unwrap_or(0));
            return Ok(());
        }
        let netns = rec
            .device
            .netns
            .map(|n| {
                self.netns_labels
                    .get(&n)
                    .cloned()
                    .unwrap_or_else(|| format!("netns:{n}"))
            })
            .unwrap_or_default();
        let labels = self.events.admit(
            vec![
                ("kind", rec.kind.as_str().to_string()),
                (
                    "reason",
                    rec.drop.reason.as_deref().unwrap_or_default().to_string(),
                ),
                (
                    "device",
                    rec.device.ifname.as_deref().unwrap_or_default().to_string(),
                ),
                ("netns", netns),
                ("namespace", Self::namespace_of(rec)),
            ],
            1,
        );
        self.events
            .family
            .get_or_create(&labels)
            .inc_by(rec.events());
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn verdict(&mut self, v: &Verdict) -> anyhow::Result<()> {
        let path = Self::path_labels(&v.path);
        if let Some(old) = self.current.remove(&v.path) {
            self.verdicts.family.remove(&old);
        }
        let mut labels = vec![
            ("severity", enum_name(&v.severity)),
            ("problem", enum_name(&v.problem)),
        ];
        labels.extend(path.iter().cloned());
        let labels = self.verdicts.admit(labels, 2);
        self.verdicts.family.get_or_create(&labels).set(1);
        self.current.insert(v.path.clone(), labels);
        for (family, value) in [
            (&mut self.largest_passing, v.largest_passing),
            (&mut self.recommended_mtu, v.recommended_mtu),
        ] {
            let labels = family.admit(path.clone(), 0);
            match value {
                Some(b) => {
                    family.family.get_or_create(&labels).set(i64::from(b));
                }
                None => {
                    family.family.remove(&labels);
                }
            }
        }
        Ok(())
    }
}

/// The serde name of a verdict enum (`problem`, `mtu_black_hole`): the log's words.
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(String::from))
        .unwrap_or_default()
}

/// What is left of `deadline`, as a socket timeout (never zero: that would mean none).
fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// Answer one HTTP/1.x request: `GET /metrics` gets the exposition, anything else a
/// 404/405/400/431. One request per connection, read and answered before `deadline` (a
/// request trickled a byte at a time gets no more time than a fast one).
fn answer(stream: &mut TcpStream, registry: &Registry, deadline: Instant) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            stream.set_write_timeout(Some(left(deadline)?))?;
            return respond(stream, "431 Request Header Fields Too Large", "", b"");
        }
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream.set_write_timeout(Some(left(deadline)?))?;
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return respond(stream, "400 Bad Request", "text/plain", b"bad request\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = render(registry);
            respond(
                stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body.as_bytes(),
            )
        }
        (_, "/metrics") => respond(stream, "405 Method Not Allowed", "text/plain", b""),
        _ => respond(
            stream,
            "404 Not Found",
            "text/plain",
            b"tracer: metrics are at /metrics\n",
        ),
    }
}

/// Close after the response without a reset: closing with unread request bytes (an oversized
/// request) would make the kernel send RST, and the client could lose the response.
fn linger(stream: &mut TcpStream, deadline: Instant) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let mut budget: usize = 64 * 1024;
    while budget > 0 {
        let Ok(t) = left(deadline) else { break };
        if stream.set_read_timeout(Some(t)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// `--metrics` values: `PORT` (on 127.0.0.1), `IP` (port 9464), `IP:PORT`, `[IPv6]:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    Err(format!(
        "`{s}` is not an address to listen on (PORT, IP, IP:PORT or [IPv6]:PORT)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ObjectRef;

    fn drop_in(device: &str, ns: Option<&str>) -> Record {
        let mut r = Record::new(Kind::Drop, "tp_btf/kfree_skb", 1);
        r.device.ifname = Some(device.into());
        r.device.netns = Some(4026532178);
        r.drop.reason = Some("PKT_TOO_BIG".into());
        r.names.src_pod = ns.map(|n| ObjectRef::new(Some(n.into()), "p".into()).into());
        r
    }

    fn metrics() -> Metrics {
        Metrics::new(HashMap::from([(4026532178, "demo-old".to_string())]))
    }

    /// The value of the sample line that starts with `series` (name and labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn events_are_counted_by_bounded_labels() {
        let mut m = metrics();
        for _ in 0..3 {
            m.emit(&drop_in("eth0", Some("shop"))).unwrap();
        }
        // A line folded from a burst counts as the events it stands for.
        let mut folded = drop_in("eth1", None);
        folded.count = Some(40);
        m.emit(&folded).unwrap();
        let mut lost = Record::new(Kind::Lost, "tcx/egress", 2);
        lost.lost = Some(7);
        m.emit(&lost).unwrap();
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"tracer_events_total{kind="drop",reason="PKT_TOO_BIG",device="eth0",netns="demo-old",namespace="shop"}"#
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"tracer_events_total{kind="drop",reason="PKT_TOO_BIG",device="eth1",netns="demo-old",namespace=""}"#
            ),
            Some(40.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"tracer_lost_events_total{hook="tcx/egress"}"#),
            Some(7.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"tracer_lost_events_total{hook="tp_btf/kfree_skb"}"#
            ),
            Some(0.0),
            "zero before any loss"
        );
        assert!(text.contains("# TYPE tracer_events counter"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // A flood of devices: series stop at the bound, the rest counted under `other`.
        for i in 0..(MAX_SERIES + 50) {
            m.emit(&drop_in(&format!("cali{i}"), None)).unwrap();
        }
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("tracer_events_total{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1);
        let other = sample(
            &text,
            r#"tracer_events_total{kind="drop",reason="other",device="other",netns="other",namespace="other"}"#,
        );
        // 2 series existed; MAX_SERIES - 2 new ones were admitted; the rest are `other`.
        assert_eq!(other, Some((MAX_SERIES + 50 - (MAX_SERIES - 2)) as f64));
    }

    #[test]
    fn hooks_and_verdicts() {
        let mut m = metrics();
        m.hook_status().record(&[
            Attempt {
                concern: "drops",
                method: "tp_btf/kfree_skb".into(),
                outcome: Outcome::Attached,
            },
            Attempt {
                concern: "icmp-sent",
                method: "kprobe/__icmp_send".into(),
                outcome: Outcome::Failed("no kprobes".into()),
            },
            Attempt {
                concern: "drops",
                method: "tracepoint/skb/kfree_skb".into(),
                outcome: Outcome::Skipped("not needed".into()),
            },
        ]);
        let mut v = Verdict {
            ts: String::new(),
            kind: "verdict",
            stage: "live",
            severity: crate::verdict::Severity::Problem,
            problem: crate::verdict::Problem::MtuBlackHole,
            summary: String::new(),
            path: PathRef {
                src_node: Some("worker-116".into()),
                dst_node: Some("worker-208".into()),
                overlay: Some(crate::event::Encap::Vxlan),
                overhead: 50,
            },
            sites: Vec::new(),
            flows: Vec::new(),
            evidence: Default::default(),
            path_mtu: Some(1450),
            largest_passing: Some(1400),
            recommended_mtu: Some(1400),
            fix: None,
            stopgap: None,
            first_ts: None,
            last_ts: None,
            observed_s: 1.0,
            audit: Vec::new(),
            confidence: crate::verdict::Confidence::Observed,
            not_seen: Vec::new(),
            node: None,
            dies_at: None,
            nodes: Vec::new(),
            clock_skew_s: None,
            change: None,
        };
        m.verdict(&v).unwrap();
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"tracer_hook_attached{concern="drops",method="tp_btf/kfree_skb"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"tracer_hook_attached{concern="icmp-sent",method="kprobe/__icmp_send"}"#
            ),
            Some(0.0)
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("tracer_hook_attached") && l.contains("tracepoint/skb")),
            "skipped methods are not listed: {text}"
        );
        let path = r#"src_node="worker-116",dst_node="worker-208",overlay="vxlan""#;
        assert_eq!(
            sample(
                &text,
                &format!(r#"tracer_verdict{{severity="problem",problem="mtu_black_hole",{path}}}"#)
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("tracer_verdict_largest_passing_bytes{{{path}}}")
            ),
            Some(1400.0)
        );
        // The path's next verdict replaces the first: one current verdict per path.
        v.severity = crate::verdict::Severity::Info;
        v.problem = crate::verdict::Problem::PmtudRecovered;
        v.recommended_mtu = None;
        m.verdict(&v).unwrap();
        let text = m.render();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("tracer_verdict{"))
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains(r#"tracer_verdict{severity="info",problem="pmtud_recovered""#));
        assert!(
            !text.contains("tracer_verdict_recommended_mtu_bytes{"),
            "{text}"
        );
    }

    #[test]
    fn served_over_http() {
        let mut m = metrics();
        m.emit(&drop_in("eth0", Some("shop"))).unwrap();
        let addr = m.serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: application/openmetrics-text"),
            "{ok}"
        );
        assert!(ok.contains(r#"device="eth0""#), "{ok}");
        // Counters keep counting between scrapes.
        m.emit(&drop_in("eth0", Some("shop"))).unwrap();
        let again = get("GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(again.contains(r#"namespace="shop"} 2"#), "{again}");
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get("nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(get(&big).starts_with("HTTP/1.1 431"));
        // The port is taken now: a second server says which address it could not use.
        let err = metrics().serve(addr).unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }

    /// A client that trickles its request a byte at a time (or sends nothing) holds its own
    /// connection only: a scrape beside it is answered at once, and the trickler is cut off
    /// at the deadline however steadily it sends.
    #[test]
    fn a_slow_client_does_not_hold_the_endpoint() {
        let m = metrics();
        let addr = m.serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let started = std::time::Instant::now();
        let trickler = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            // One byte every 200 ms, never the end of the head: without a deadline this holds
            // the connection as long as it likes.
            for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
                if s.write_all(&[*b]).is_err() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            started.elapsed()
        });
        let idle = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        let answered = started.elapsed();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a scrape beside a slow client took {:?}",
            t.elapsed()
        );
        // The trickler is cut off near the deadline, not after its 12 s of bytes, and after
        // the scrape was answered (one connection at a time would have served it first).
        let cut = trickler.join().unwrap();
        assert!(
            cut < IO_TIMEOUT + Duration::from_secs(3),
            "cut after {cut:?}"
        );
        assert!(
            answered < cut,
            "answered at {answered:?}, trickler cut at {cut:?}"
        );
        drop(idle);
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9100"), Ok("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            parse_addr("0.0.0.0:9464"),
            Ok("0.0.0.0:9464".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert_eq!(parse_addr("10.1.2.3"), Ok("10.1.2.3:9464".parse().unwrap()));
        assert_eq!(parse_addr("::"), Ok("[::]:9464".parse().unwrap()));
        assert!(parse_addr("localhost:9")
            .unwrap_err()
            .contains("localhost:9"));
        assert!(parse_addr("70000").is_err());
    }
}
