//! Network namespaces: resolving `--netns NAME|PATH`, and running a closure inside one.
//!
//! Only the calling thread switches (`setns(2)` is per thread), and it always switches back, so
//! the daemon keeps reading tracefs, BTF and kallsyms of the root namespace (`ip netns exec`
//! would remount /sys and hide them).
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// A network namespace the tracer watches.
#[derive(Clone, Debug)]
pub struct Netns {
    /// What the operator typed (`node-a`) or `root` for the tracer's own namespace.
    pub label: String,
    pub path: PathBuf,
    /// Inode number, as the kernel programs report it.
    pub inode: u32,
}

impl Netns {
    /// The namespace the tracer runs in.
    pub fn current() -> Result<Self> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let inode = inode_of(&path)?;
        Ok(Netns {
            label: "root".into(),
            path,
            inode,
        })
    }

    /// `NAME` (under /run/netns) or a path such as /proc/1234/ns/net.
    pub fn resolve(arg: &str) -> Result<Self> {
        if arg.is_empty() {
            bail!("--netns: empty namespace name");
        }
        let path = if arg.contains('/') {
            PathBuf::from(arg)
        } else {
            Path::new("/run/netns").join(arg)
        };
        let inode = inode_of(&path).with_context(|| {
            format!(
                "--netns {arg}: no network namespace at {} (names are looked up under /run/netns, as `ip netns list` shows them)",
                path.display()
            )
        })?;
        // A regular file that happens to exist is not a namespace: setns would fail later, so
        // check now and say so.
        let file = File::open(&path)
            .with_context(|| format!("--netns {arg}: cannot open {}", path.display()))?;
        // Remember where we are *before* switching: /proc/self/ns/net would then name the
        // namespace just entered (it is this thread's), and "going back" would go nowhere.
        let home = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        let ok = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if ok != 0 {
            bail!(
                "--netns {arg}: {} is not a network namespace",
                path.display()
            );
        }
        // Go back right away.
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            eprintln!("tracer: fatal: cannot return to its own network namespace");
            std::process::exit(70);
        }
        Ok(Netns {
            label: arg.to_string(),
            path,
            inode,
        })
    }

    /// Run `f` with the calling thread inside this namespace, then switch back (also on error).
    pub fn enter<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let home = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        let target = File::open(&self.path)
            .with_context(|| format!("open netns {}", self.path.display()))?;
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow!(std::io::Error::last_os_error()))
                .with_context(|| format!("setns into {}", self.label));
        }
        let result = f();
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // Continuing in the wrong namespace would attach to the wrong devices: stop now.
            // Links are file descriptors, so exiting detaches everything.
            eprintln!("tracer: fatal: cannot return to its own network namespace");
            std::process::exit(70);
        }
        result
    }
}

/// `--netns` resolved once for a whole command (`run` and `check` alike): the namespaces named,
/// each once (two paths to one namespace are one), or the caller's own when none is named.
#[derive(Clone, Debug)]
pub struct Namespaces {
    pub list: Vec<Netns>,
    /// Named with `--netns`. Otherwise `list` is the caller's own namespace alone, which is
    /// read in place: entering it would need CAP_SYS_ADMIN for nothing.
    pub named: bool,
}

impl Namespaces {
    pub fn resolve(args: &[String]) -> Result<Namespaces> {
        if args.is_empty() {
            return Ok(Namespaces {
                list: vec![Netns::current()?],
                named: false,
            });
        }
        let mut list: Vec<Netns> = Vec::new();
        for arg in args {
            let ns = Netns::resolve(arg)?;
            if !list.iter().any(|n| n.inode == ns.inode) {
                list.push(ns);
            }
        }
        Ok(Namespaces { list, named: true })
    }
}

fn inode_of(path: &Path) -> Result<u32> {
    let meta = std::fs::metadata(path)?;
    Ok(meta.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespace_has_an_inode() {
        let me = Netns::current().unwrap();
        let expected = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert_eq!(me.inode, expected);
    }

    #[test]
    fn unknown_name_is_a_clear_error() {
        let err = Netns::resolve("no-such-ns-for-tracer-test").unwrap_err();
        assert!(format!("{err:#}").contains("/run/netns/no-such-ns-for-tracer-test"));
    }

    #[test]
    fn resolving_a_namespace_leaves_the_thread_where_it_was() {
        // resolve() once "returned" to /proc/self/ns/net, which on the main thread names the
        // namespace just entered, so the daemon stayed in the last --netns (caught end to end
        // by tracer/tests/incident.rs, names_come_live_from_the_kubernetes_api_too; a test
        // thread cannot reproduce the main-thread case, this checks the invariant).
        let name = format!("tracer-ut-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add (tests run as root)");
        let before = Netns::current().unwrap().inode;
        let resolved = Netns::resolve(&name);
        let after = Netns::current().unwrap().inode;
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();
        let resolved = resolved.unwrap();
        assert_ne!(resolved.inode, before);
        assert_eq!(after, before);
    }

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let err = Netns::resolve("/etc/hostname").unwrap_err();
        assert!(
            format!("{err:#}").contains("not a network namespace"),
            "{err:#}"
        );
    }

    #[test]
    fn two_paths_to_one_namespace_are_watched_once() {
        let own = Netns::current().unwrap().inode;
        let args = [
            "/proc/self/ns/net".to_string(),
            "/proc/thread-self/ns/net".to_string(),
        ];
        let ns = Namespaces::resolve(&args).unwrap();
        assert!(ns.named);
        assert_eq!(ns.list.len(), 1);
        assert_eq!(ns.list[0].inode, own);
        assert_eq!(ns.list[0].label, "/proc/self/ns/net");
    }

    #[test]
    fn no_netns_named_is_the_callers_own() {
        let ns = Namespaces::resolve(&[]).unwrap();
        assert!(!ns.named);
        assert_eq!(ns.list.len(), 1);
        assert_eq!(ns.list[0].label, "root");
        assert_eq!(ns.list[0].inode, Netns::current().unwrap().inode);
    }
}
