//! The record's `node`: the Kubernetes node this tracer runs on. It is a fact of the process,
//! resolved once at start (`run::plan`, the one place that decides it) and stamped by
//! [`super::Record::new`] on every record of the run, the `lost` records made outside the
//! decoder included.

use std::sync::{Arc, OnceLock};

static NODE: OnceLock<Arc<str>> = OnceLock::new();

/// Set the node of this run's records. Only the first call counts: the node does not change.
pub fn set(name: &str) {
    let _ = NODE.set(Arc::from(name));
}

/// The node set for this run; `None` before [`set`] (and in unit tests, which never set it, so
/// their records stay comparable).
pub fn current() -> Option<Arc<str>> {
    NODE.get().cloned()
}
