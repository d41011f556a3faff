//! Files of the node the tracer runs on. In a DaemonSet pod the node's filesystem is mounted
//! somewhere (`/host`); `--host-root` says where, and every node-local file is read through
//! [`HostRoot::path`].
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoot(PathBuf);

impl Default for HostRoot {
    fn default() -> Self {
        HostRoot(PathBuf::from("/"))
    }
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        HostRoot(root.into())
    }

    /// `absolute` (a path as the node sees it, e.g. `/etc/cni/net.d`) under the root.
    pub fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let rel = absolute
            .as_ref()
            .strip_prefix("/")
            .unwrap_or(absolute.as_ref());
        self.0.join(rel)
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// The node's /proc: `<root>/proc` when something is mounted or placed there, else the
    /// tracer's own /proc. A container usually gets the node's processes through
    /// `hostPID: true` rather than a second procfs mount, and a hostPath mount of `/` shows
    /// `<root>/proc` as an empty directory.
    pub fn proc(&self) -> PathBuf {
        let under_root = self.path("/proc");
        let populated = std::fs::read_dir(&under_root).is_ok_and(|mut d| d.next().is_some());
        if populated {
            under_root
        } else {
            PathBuf::from("/proc")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_land_under_the_root() {
        let h = HostRoot::new("/host");
        assert_eq!(
            h.path("/etc/cni/net.d"),
            PathBuf::from("/host/etc/cni/net.d")
        );
        assert_eq!(h.path("var/log/pods"), PathBuf::from("/host/var/log/pods"));
        assert_eq!(
            HostRoot::default().path("/run/flannel/subnet.env"),
            PathBuf::from("/run/flannel/subnet.env")
        );
    }

    #[test]
    fn proc_falls_back_to_the_tracers_own_when_the_root_has_none() {
        let root = std::env::temp_dir().join(format!("tracer-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let h = HostRoot::new(&root);
        assert_eq!(h.proc(), PathBuf::from("/proc"), "empty mount point");
        std::fs::create_dir_all(root.join("proc/1")).unwrap();
        assert_eq!(h.proc(), root.join("proc"));
        assert_eq!(HostRoot::default().proc(), PathBuf::from("/proc"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
