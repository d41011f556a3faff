//! Least privilege: once its programs are loaded and attached, the daemon gives up the
//! capabilities it no longer needs, so that a compromised or confused tracer on a node in
//! trouble cannot load new programs, read kernel memory through perf, or act as root beyond
//! what its link watcher and conntrack reader still do.
//!
//! Capabilities are per thread in Linux: [`keep_only`] changes the calling thread (and the
//! threads it starts afterwards). The daemon calls it on its main thread after attaching, and
//! the helper threads started earlier (metrics server, conntrack refresher) call it themselves.
use std::io;

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The name of a capability the tracer deals with (`CAP_<number>` for the others).
pub fn name(cap: u32) -> String {
    match cap {
        CAP_NET_ADMIN => "CAP_NET_ADMIN".into(),
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN".into(),
        CAP_PERFMON => "CAP_PERFMON".into(),
        CAP_BPF => "CAP_BPF".into(),
        n => format!("CAP_{n}"),
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

fn capget() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data structs, as capget(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn bits(lo: u32, hi: u32) -> u64 {
    (hi as u64) << 32 | lo as u64
}

/// The calling thread's effective set, as a bit mask.
pub fn effective() -> io::Result<u64> {
    let d = capget()?;
    Ok(bits(d[0].effective, d[1].effective))
}

/// Reduce the calling thread to `keep` (those of them it has): effective and permitted become
/// `keep`, the inheritable and ambient sets are emptied, and everything else leaves the
/// bounding set, so that no later exec can regain it. Returns the capabilities kept.
pub fn keep_only(keep: &[u32]) -> io::Result<Vec<u32>> {
    let current = capget()?;
    let permitted = bits(current[0].permitted, current[1].permitted);
    let kept: Vec<u32> = keep
        .iter()
        .copied()
        .filter(|c| permitted & (1u64 << c) != 0)
        .collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    for cap in 0..=last_cap() {
        if !kept.contains(&cap) {
            // SAFETY: plain prctl; EINVAL for a number the kernel does not know is harmless.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mask: u64 = kept.iter().fold(0, |m, c| m | 1u64 << c);
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data structs, as capset(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(kept)
}

/// What the daemon still needs once everything is attached, and why (for the start-up block):
///
/// - `CAP_NET_ADMIN`: the link watcher attaches tc programs to devices that appear later, and
///   the conntrack reader dumps conntrack tables;
/// - `CAP_SYS_ADMIN`, only when other namespaces are watched: `setns(2)` into them (the link
///   watcher attaches inside the device's namespace);
/// - `CAP_BPF`, only on kernels before 6.5, where every `bpf(2)` command (reading the lost
///   counters, creating links) needs it while unprivileged BPF is disabled.
pub fn needed_after_attach(other_namespaces: bool) -> Vec<(u32, &'static str)> {
    let mut keep = vec![(CAP_NET_ADMIN, "attach tc hooks to new devices")];
    if other_namespaces {
        keep.push((CAP_SYS_ADMIN, "enter the watched namespaces (setns)"));
    }
    let old_bpf_checks = aya::util::KernelVersion::current()
        .map(|v| v < aya::util::KernelVersion::new(6, 5, 0))
        .unwrap_or(true);
    if old_bpf_checks {
        keep.push((CAP_BPF, "bpf(2) map reads before kernel 6.5"));
    }
    keep
}

/// Drop what the running daemon no longer needs (see [`needed_after_attach`]); the start-up
/// block's `privileges:` line.
pub fn drop_after_attach(other_namespaces: bool) -> String {
    let needed = needed_after_attach(other_namespaces);
    let keep: Vec<u32> = needed.iter().map(|(c, _)| *c).collect();
    match keep_only(&keep) {
        Ok(kept) => {
            let list: Vec<String> = needed
                .iter()
                .filter(|(c, _)| kept.contains(c))
                .map(|(c, why)| format!("{} ({why})", name(*c)))
                .collect();
            format!(
                "dropped all capabilities but {}",
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            )
        }
        Err(e) => format!("could not drop capabilities ({e}); running with those it started with"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_only_what_it_asked_for_and_cannot_regain_the_rest() {
        // In a thread of its own: capabilities are per thread, the test harness keeps its own.
        std::thread::spawn(|| {
            let before = effective().unwrap();
            assert!(
                before & (1 << CAP_NET_ADMIN) != 0,
                "the unit tests run as root"
            );
            let kept = keep_only(&[CAP_NET_ADMIN]).unwrap();
            assert_eq!(kept, vec![CAP_NET_ADMIN]);
            assert_eq!(effective().unwrap(), 1 << CAP_NET_ADMIN);
            // Asking for more than is left keeps only what is left.
            let kept = keep_only(&[CAP_NET_ADMIN, CAP_SYS_ADMIN]).unwrap();
            assert_eq!(kept, vec![CAP_NET_ADMIN]);
            // CAP_SYS_ADMIN is gone for good: setns now fails.
            let own = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&own), libc::CLONE_NEWNET) };
            assert_eq!(r, -1, "setns without CAP_SYS_ADMIN");
        })
        .join()
        .unwrap();
        // The harness thread was not touched.
        assert!(effective().unwrap() & (1 << CAP_SYS_ADMIN) != 0);
    }
}
