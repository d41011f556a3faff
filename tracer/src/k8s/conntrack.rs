//! Service names from conntrack: the original destination (ClusterIP, external IP, node port)
//! of a connection whose packets are seen after DNAT, when the backend's address alone does not
//! name the service (no EndpointSlices: a snapshot without them, node-local facts; stale ones).
//!
//! The tables are read with [`crate::netlink::conntrack::dump`] (the netlink layer owns the
//! socket and the ctnetlink messages).
//!
//! [`Conntrack`] keeps the NATed connections of the watched namespaces in memory for per-event
//! lookups ([`Conntrack::original_destination`]: no netlink call per event). A background thread
//! dumps the tables again when a lookup missed, at most once per [`MIN_REFRESH`]: nothing is
//! dumped while every event is named otherwise or none comes. A flow that a dump begun after
//! its first miss did not hold is not NATed (conntrack knew it before its packets were seen):
//! its later events do not ask again. Without that, one busy connection that is not NATed
//! (most are not) kept the tables dumped every second, each dump walking the kernel's whole
//! conntrack hash under its locks, in contention with the packets' own `nf_conntrack_in`.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, RwLock, Weak,
    },
    thread::Thread,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use super::FlowKey;
use crate::{
    netlink::conntrack::{dump_each, Entry, Tuple},
    netns::Netns,
};

/// At most this many NATed connections are kept (all namespaces together); further ones in a
/// dump are not stored, and their packets' services are named from EndpointSlices only (the
/// overflow is reported once). ~100 bytes each: a few MB at most.
pub const MAX_ENTRIES: usize = 65_536;

/// The tables are dumped at most this often.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Flows remembered as missed (~50 bytes each); when full, the memory starts over (at worst one
/// more dump per flow).
pub const MAX_MISSES: usize = 8_192;

/// The flow's tuple when it has every part (only those can be in a dump).
fn tuple_of(flow: &FlowKey) -> Option<Tuple> {
    Some(Tuple {
        proto: flow.proto?,
        src: flow.src?,
        sport: flow.sport?,
        dst: flow.dst?,
        dport: flow.dport?,
    })
}

/// The NATed connections, keyed by the tuple their packets carry after DNAT (the reply tuple
/// reversed: client → backend, or the SNAT address → backend for masqueraded node-port
/// traffic), each with its original destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatTable {
    map: HashMap<Tuple, (IpAddr, u16, u8)>,
    /// NATed entries not stored because the table was full.
    pub overflow: usize,
}

impl NatTable {
    /// Add the entries whose destination was translated (the reply does not come from where
    /// the client sent), up to `limit` in all.
    pub fn add(&mut self, entries: impl IntoIterator<Item = Entry>, limit: usize) {
        for e in entries {
            if e.reply.src == e.orig.dst && e.reply.sport == e.orig.dport {
                continue;
            }
            let key = e.reply.reversed();
            if self.map.len() >= limit && !self.map.contains_key(&key) {
                self.overflow += 1;
                continue;
            }
            self.map
                .insert(key, (e.orig.dst, e.orig.dport, e.orig.proto));
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The original destination (address, port, protocol) of the connection `flow` belongs
    /// to, seen in either direction after DNAT: client → backend, or backend → client before
    /// the reply is translated back.
    pub fn get(&self, flow: &FlowKey) -> Option<(IpAddr, u16, u8)> {
        let t = tuple_of(flow)?;
        self.map
            .get(&t)
            .or_else(|| self.map.get(&t.reversed()))
            .copied()
    }
}

/// The conntrack view of the watched namespaces, refreshed in the background on demand.
/// Dropping it stops the refresher (within [`MIN_REFRESH`]).
pub struct Conntrack {
    shared: Arc<Shared>,
    /// Flows that missed, with [`Shared::refreshes`] at their first miss.
    misses: Mutex<FxHashMap<Tuple, u64>>,
}

struct Shared {
    table: RwLock<NatTable>,
    /// A lookup missed since the last dump.
    wanted: AtomicBool,
    refresher: OnceLock<Thread>,
    /// Dumps done (tests wait on it: `wanted` alone cannot tell "not yet" from "done").
    refreshes: AtomicU64,
}

impl Conntrack {
    /// Start the refresher for `namespaces` (the tracer's own when empty). Tables are merged:
    /// a connection DNATed on one node keeps its tuple when seen in another watched namespace.
    /// Problems (no conntrack netlink support, a namespace gone) are printed once as `names:`
    /// lines; tracing never depends on them.
    pub fn start(namespaces: Vec<Netns>) -> Conntrack {
        let shared = Arc::new(Shared {
            table: RwLock::new(NatTable::default()),
            wanted: AtomicBool::new(false),
            refresher: OnceLock::new(),
            refreshes: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&shared);
        match std::thread::Builder::new()
            .name("conntrack".into())
            .spawn(move || refresher(weak, namespaces))
        {
            Ok(handle) => {
                let _ = shared.refresher.set(handle.thread().clone());
            }
            Err(e) => {
                eprintln!("names: conntrack refresher not started ({e}); services after DNAT are named from EndpointSlices only")
            }
        }
        Conntrack {
            shared,
            misses: Mutex::default(),
        }
    }

    /// The connection's original destination, from the last dump. A miss asks the refresher
    /// for a new dump (it may be a connection newer than the dump), until a dump begun after
    /// the flow's first miss has also missed it.
    pub fn original_destination(&self, flow: &FlowKey) -> Option<(IpAddr, u16, u8)> {
        let found = self.shared.table.read().ok()?.get(flow);
        // Only a flow with a whole tuple can be in a dump.
        if found.is_none() {
            if let Some(tuple) = tuple_of(flow) {
                if self.dump_may_find(tuple) && !self.shared.wanted.swap(true, Ordering::Relaxed) {
                    if let Some(t) = self.shared.refresher.get() {
                        t.unpark();
                    }
                }
            }
        }
        found
    }

    /// Whether a new dump could still hold `tuple`, which missed. Dumps are counted as they
    /// finish: one finishing after the first miss may have begun before it, the one after
    /// began later.
    fn dump_may_find(&self, tuple: Tuple) -> bool {
        let done = self.shared.refreshes.load(Ordering::Relaxed);
        let Ok(mut misses) = self.misses.lock() else {
            return true;
        };
        if misses.len() >= MAX_MISSES && !misses.contains_key(&tuple) {
            misses.clear();
        }
        let first = *misses.entry(tuple).or_insert(done);
        done < first + 2
    }

    /// NATed connections currently known.
    pub fn len(&self) -> usize {
        self.shared.table.read().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refresher(weak: Weak<Shared>, namespaces: Vec<Netns>) {
    // Least privilege: dumping conntrack needs CAP_NET_ADMIN, entering namespaces
    // CAP_SYS_ADMIN; nothing else (capabilities are per thread, see privileges.rs).
    use crate::privileges::{keep_only, CAP_NET_ADMIN, CAP_SYS_ADMIN};
    let _ = keep_only(&[CAP_NET_ADMIN, CAP_SYS_ADMIN]);
    let mut last: Option<Instant> = None;
    let mut failing: HashSet<String> = HashSet::new();
    let mut overflow_reported = false;
    loop {
        std::thread::park_timeout(MIN_REFRESH);
        if let Some(wait) = last.and_then(|l| MIN_REFRESH.checked_sub(l.elapsed())) {
            std::thread::sleep(wait);
        }
        let Some(shared) = weak.upgrade() else { return };
        if !shared.wanted.swap(false, Ordering::Relaxed) {
            continue;
        }
        last = Some(Instant::now());
        let mut table = NatTable::default();
        let mut dumps = Vec::new();
        // Each entry goes into the bounded table as it is read: a node's table of any size
        // costs what the table keeps.
        if namespaces.is_empty() {
            let result = dump_each(|e| table.add([e], MAX_ENTRIES));
            dumps.push(("root".to_string(), result));
        }
        for ns in &namespaces {
            let result = ns.enter(|| dump_each(|e| table.add([e], MAX_ENTRIES)));
            dumps.push((ns.label.clone(), result));
        }
        for (label, result) in dumps {
            match result {
                Ok(()) => {
                    failing.remove(&label);
                }
                Err(e) => {
                    if failing.insert(label.clone()) {
                        eprintln!(
                            "names: conntrack of netns {label} unreadable ({e:#}); services \
                             after DNAT there are named from EndpointSlices only"
                        );
                    }
                }
            }
        }
        if table.overflow > 0 && !overflow_reported {
            overflow_reported = true;
            eprintln!(
                "names: conntrack: more than {MAX_ENTRIES} NATed connections, {} not kept; \
                 their services are named from EndpointSlices only",
                table.overflow
            );
        }
        let stored = match shared.table.write() {
            Ok(mut t) => {
                *t = table;
                true
            }
            // A panic while holding the lock (none is expected): lookups return nothing.
            Err(_) => false,
        };
        if !stored {
            return;
        }
        shared.refreshes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
