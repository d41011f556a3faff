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
}
