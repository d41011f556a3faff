//! The record's `node`: the Kubernetes node this tracer runs on. It is a fact of the process,
//! resolved once at start and stamped by [`super::Record::new`] on every record of the run,
//! the `lost` records made outside the decoder included.

use std::path::Path;
use std::sync::{Arc, OnceLock};

static NODE: OnceLock<Arc<str>> = OnceLock::new();

/// Set the node of this run's records. Only the first call counts: the node does not change.
fn set_node(name: &str) {
    let _ = NODE.set(Arc::from(name));
}

/// Resolve this run's node ([`resolve`], from the environment) and stamp it on its records.
pub fn init(host_root: &Path) {
    let from_env = std::env::var("NODE_NAME").ok();
    if let Some(name) = resolve(from_env.as_deref(), host_root) {
        set_node(&name);
    }
}

/// The node set for this run; `None` before [`set_node`] (and in unit tests, which never set
/// it, so their records stay comparable).
pub(super) fn current() -> Option<Arc<str>> {
    NODE.get().cloned()
}

/// The node's name: `NODE_NAME` (the DaemonSet sets it from `spec.nodeName`), else the
/// hostname lowercased as the kubelet names its node by default: `/etc/hostname` under
/// `host_root` when the node's filesystem is mounted elsewhere, else this host's hostname.
fn resolve(node_name: Option<&str>, host_root: &Path) -> Option<String> {
    if let Some(n) = node_name.map(str::trim).filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let hostname = if host_root != Path::new("/") {
        std::fs::read_to_string(host_root.join("etc/hostname")).ok()
    } else {
        gethostname()
    };
    hostname
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

fn gethostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_first_then_the_hostname_under_the_host_root_then_this_hosts() {
        let dir = std::env::temp_dir().join(format!("tracer-node-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/hostname"), "Worker-116\n").unwrap();
        assert_eq!(
            resolve(Some(" worker-208 "), &dir).as_deref(),
            Some("worker-208")
        );
        assert_eq!(resolve(Some(""), &dir).as_deref(), Some("worker-116"));
        assert_eq!(resolve(None, &dir).as_deref(), Some("worker-116"));
        std::fs::write(dir.join("etc/hostname"), "\n").unwrap();
        assert_eq!(resolve(None, &dir), None);
        let own = gethostname().unwrap().trim().to_ascii_lowercase();
        assert_eq!(
            resolve(None, Path::new("/")),
            Some(own).filter(|h| !h.is_empty())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
