//! Active confirmation (issue 16): when only timing says that packets die beyond this node
//! (a black hole further on, suspected, or got around by TCP probing), a bounded DF probe
//! measures what passes, from the sender's namespace toward the pod it already sends to:
//! `tracer check`'s probe (at most 4 rounds within 3 s, each size re-sent once).
//!
//! One thread probes, one probe at a time, each address at most once per [`PROBE_EVERY`]. It is
//! started before the run drops its capabilities and keeps for itself only CAP_NET_RAW (the raw
//! ICMP socket) and CAP_SYS_ADMIN (entering the namespace); results come back over a channel
//! to the event loop, which logs them as `probe` lines and gives them to the analyzer.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::event::probe::{Probe, KIND};
use crate::netns::Netns;
use crate::verdict::ProbeWant;
use crate::{
    check::probe,
    netlink::link::{links, Link},
};

/// The same address is probed again only after this long.
pub const PROBE_EVERY: Duration = Duration::from_secs(300);
/// Requests waiting at most: more wants than this are dropped (asked again later).
const MAX_PENDING: usize = 4;

struct Request {
    from: Vec<Netns>,
    to: IpAddr,
    why: String,
}

pub struct Prober {
    requests: mpsc::Sender<Request>,
    results: UnboundedReceiver<Probe>,
    pending: Arc<AtomicUsize>,
    asked: HashMap<IpAddr, Instant>,
    watched: Vec<Netns>,
}

impl Prober {
    /// Start the probing thread. `enter`: the watched namespaces were named (`--netns`); the
    /// tracer's own is probed in place.
    pub fn start(watched: Vec<Netns>, enter: bool) -> Result<Prober> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (results, outbox) = unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let busy = pending.clone();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                // Only what probing needs, for this thread alone (capabilities are per
                // thread); the run goes on once they are dropped.
                let _ = ready_tx.send(crate::privileges::keep_only(&[
                    crate::privileges::CAP_NET_RAW,
                    crate::privileges::CAP_SYS_ADMIN,
                ]));
                serve(inbox, results, busy, enter)
            })
            .context("spawn the prober thread")?;
        // As for the main thread: a failure to drop is said, not fatal.
        if let Err(e) = ready
            .recv()
            .context("the prober thread ended at its start")?
        {
            eprintln!(
                "privileges: the prober thread could not drop capabilities ({e}); it keeps \
                 those it started with"
            );
        }
        Ok(Prober {
            requests,
            results: outbox,
            pending,
            asked: HashMap::new(),
            watched,
        })
    }

    /// Ask for the probes the analyzer wants, within the limits; the addresses asked.
    pub fn ask(&mut self, wants: Vec<ProbeWant>) -> Vec<IpAddr> {
        let mut asked = Vec::new();
        for w in wants {
            if self.pending.load(Ordering::Relaxed) >= MAX_PENDING {
                break;
            }
            if self
                .asked
                .get(&w.to)
                .is_some_and(|t| t.elapsed() < PROBE_EVERY)
            {
                continue;
            }
            let from: Vec<Netns> = w
                .from
                .iter()
                .filter_map(|inode| self.watched.iter().find(|n| n.inode == *inode).cloned())
                .collect();
            if from.is_empty() {
                continue;
            }
            self.asked.insert(w.to, Instant::now());
            self.pending.fetch_add(1, Ordering::Relaxed);
            let sent = self.requests.send(Request {
                from,
                to: w.to,
                why: w.why,
            });
            if sent.is_err() {
                // The thread is gone (it failed to start probing): nothing more to ask.
                self.pending.fetch_sub(1, Ordering::Relaxed);
                break;
            }
            asked.push(w.to);
        }
        asked
    }

    /// The next probe result.
    pub async fn next(&mut self) -> Option<Probe> {
        self.results.recv().await
    }
}

fn serve(
    inbox: mpsc::Receiver<Request>,
    results: UnboundedSender<Probe>,
    pending: Arc<AtomicUsize>,
    enter: bool,
) {
    while let Ok(req) = inbox.recv() {
        let line = measure(&req, enter);
        pending.fetch_sub(1, Ordering::Relaxed);
        if results.send(line).is_err() {
            return;
        }
    }
}

/// Probe `req.to` from the first of its namespaces that can be entered.
fn measure(req: &Request, enter: bool) -> Probe {
    let mut failure = String::new();
    for ns in &req.from {
        let run = || -> Result<(probe::ProbeResult, Vec<Link>)> {
            let links = links().context("listing devices (netlink)")?;
            let peer = probe::Peer {
                addr: req.to,
                source: req.why.clone(),
            };
            let mut found = probe::probe(&[peer], &links, probe::ProbeLimits::default());
            let r = found.pop().context("the probe gave no result")?;
            Ok((r, links))
        };
        let got = if enter { ns.enter(run) } else { run() };
        match got {
            Ok((r, links)) => return line(ns, req, &r, &links),
            Err(e) => failure = format!("{}: {e:#}", ns.label),
        }
    }
    Probe {
        ts: crate::time::rfc3339_nanos(super::now_unix_ns()),
        kind: KIND.into(),
        node: crate::event::node::current().map(|n| n.to_string()),
        netns: req.from.first().map_or(0, |n| n.inode),
        netns_name: req.from.first().map_or(String::new(), |n| n.label.clone()),
        to: Some(req.to),
        why: req.why.clone(),
        status: "skipped".into(),
        detail: Some(failure),
        ..Probe::default()
    }
}

fn line(ns: &Netns, req: &Request, r: &probe::ProbeResult, links: &[Link]) -> Probe {
    let status = serde_json::to_value(r.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let via_tunnel = r.via.as_deref().is_some_and(|via| {
        links
            .iter()
            .any(|l| l.name == via && l.kind.as_deref().is_some_and(is_tunnel_kind))
    });
    Probe {
        ts: crate::time::rfc3339_nanos(super::now_unix_ns()),
        kind: KIND.into(),
        node: crate::event::node::current().map(|n| n.to_string()),
        netns: ns.inode,
        netns_name: ns.label.clone(),
        to: Some(req.to),
        why: req.why.clone(),
        status,
        via: r.via.clone(),
        local_mtu: r.local_mtu,
        via_tunnel,
        largest_ok: r.largest_ok,
        smallest_lost: r.smallest_lost,
        path_mtu: r.path_mtu,
        exact: r.exact,
        sent: r.sent,
        elapsed_ms: r.elapsed_ms,
        detail: r.detail.clone(),
    }
}

fn is_tunnel_kind(kind: &str) -> bool {
    matches!(
        kind,
        "vxlan" | "ipip" | "sit" | "geneve" | "gre" | "wireguard"
    )
}
