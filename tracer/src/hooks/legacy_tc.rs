//! tc through netlink, on kernels before TCX (6.6): what the tracer attached there, so that a
//! normal exit removes it. Such a filter is not a file descriptor: it outlives the process and
//! holds its program loaded until someone deletes it. A netlink request acts on the network
//! namespace of the thread that sends it, and aya's links detach in whatever namespace the
//! dropping thread is in (the tracer's own), so the filters in watched namespaces stayed. Each
//! filter is kept here with its namespace and deleted there, then the clsact qdiscs the tracer
//! added (only those: a qdisc that was already there belongs to someone else).
//!
//! A SIGKILL still leaves both behind (README, "Detaching"); they go with their devices.
use aya::programs::{links::Link as _, tc::SchedClassifierLink};

use crate::{netlink, netns::Netns};

/// `RTM_DELQDISC` (linux/rtnetlink.h).
const RTM_DELQDISC: u16 = 37;
/// `NLM_F_ACK`: answer with an acknowledgement, so that a failure is seen.
const NLM_F_ACK: u16 = 4;
/// The clsact qdisc's handle (`ffff:`) and parent (`TC_H_CLSACT`).
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TC_H_CLSACT: u32 = 0xffff_fff1;

/// Filters and qdiscs attached through netlink, removed on drop.
#[derive(Default)]
pub struct LegacyTc {
    filters: Vec<(Netns, SchedClassifierLink)>,
    /// (namespace, ifindex, name) of clsact qdiscs this tracer created.
    qdiscs: Vec<(Netns, u32, String)>,
}

impl LegacyTc {
    /// A filter attached in `netns`, now owned here (taken from its program).
    pub fn filter(&mut self, netns: &Netns, link: SchedClassifierLink) {
        self.filters.push((netns.clone(), link));
    }

    /// A clsact qdisc this tracer added to `ifindex` in `netns`.
    pub fn created_qdisc(&mut self, netns: &Netns, ifindex: u32, name: &str) {
        if !self
            .qdiscs
            .iter()
            .any(|(n, i, _)| n.inode == netns.inode && *i == ifindex)
        {
            self.qdiscs.push((netns.clone(), ifindex, name.to_string()));
        }
    }

    /// Delete everything, each in its namespace. Failures are reported on stderr: the device
    /// may be gone already (its filters and qdisc went with it), which is not worth more.
    pub fn remove_all(&mut self) {
        for (netns, link) in self.filters.drain(..) {
            if let Err(e) = netns.enter(|| Ok(link.detach()?)) {
                log::warn!("removing a tc filter in {}: {e:#}", netns.label);
            }
        }
        for (netns, ifindex, name) in self.qdiscs.drain(..) {
            if let Err(e) = netns.enter(|| Ok(delete_clsact(ifindex)?)) {
                eprintln!(
                    "tracer: could not remove the clsact qdisc it added to {name} in {}: {e:#}",
                    netns.label
                );
            }
        }
    }
}

impl Drop for LegacyTc {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// `tc qdisc del dev IFINDEX clsact` in the calling thread's namespace.
fn delete_clsact(ifindex: u32) -> std::io::Result<()> {
    let sock = netlink::Socket::open(libc::NETLINK_ROUTE)?;
    sock.set_receive_timeout(std::time::Duration::from_secs(2))?;
    sock.request(RTM_DELQDISC, NLM_F_ACK, &tcmsg(ifindex), 0)?;
    Ok(())
}

/// `struct tcmsg` for the clsact qdisc of `ifindex`: family, padding, ifindex, handle, parent,
/// info.
fn tcmsg(ifindex: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&CLSACT_HANDLE.to_ne_bytes());
    b.extend_from_slice(&TC_H_CLSACT.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A lab namespace (xtask::lab: deleted on drop, also when an assertion fails) holding a
    /// veth `eth0`: the lab, the namespace's name and eth0's ifindex.
    pub(in crate::hooks) fn lab_with_eth0(tag: &str) -> (xtask::lab::Lab, String, u32) {
        let mut lab = xtask::lab::Lab::new(&xtask::lab::Lab::unique_prefix(tag)).unwrap();
        let ns = lab
            .add_netns("t")
            .expect("ip netns add (tests run as root)");
        lab.ip(
            &ns,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            ],
        )
        .unwrap();
        let out = lab
            .exec_ok(&ns, &["cat", "/sys/class/net/eth0/ifindex"])
            .unwrap();
        let ifindex = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (lab, ns, ifindex)
    }

    #[test]
    fn tcmsg_names_the_clsact_qdisc_of_the_device() {
        let m = tcmsg(7);
        assert_eq!(m.len(), 20, "sizeof(struct tcmsg)");
        assert_eq!(&m[4..8], &7u32.to_ne_bytes());
        assert_eq!(&m[8..12], &0xffff_0000u32.to_ne_bytes());
        assert_eq!(&m[12..16], &0xffff_fff1u32.to_ne_bytes());
    }

    #[test]
    fn the_clsact_qdisc_is_deleted_in_its_namespace() {
        let (lab, ns, ifindex) = lab_with_eth0("ltc");
        lab.exec_ok(&ns, &["tc", "qdisc", "add", "dev", "eth0", "clsact"])
            .unwrap();
        let qdiscs = || {
            let out = lab
                .exec_ok(&ns, &["tc", "qdisc", "show", "dev", "eth0"])
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(qdiscs().contains("clsact"), "{}", qdiscs());
        let netns = Netns::resolve(&ns).unwrap();
        // From the tracer's own namespace, the device is not found: the bug this module fixes.
        netns.enter(|| Ok(delete_clsact(ifindex)?)).unwrap();
        assert!(!qdiscs().contains("clsact"), "{}", qdiscs());
        // Nothing left to delete: the failure is reported, not swallowed.
        assert!(netns.enter(|| Ok(delete_clsact(ifindex)?)).is_err());
    }
}
