//! Traffic control: removing the clsact qdisc the tracer added (RTM_DELQDISC). Attaching and
//! detaching the BPF filters themselves is aya's (`aya::programs::tc`), which speaks its own
//! netlink for them; only the qdisc removal is left to the tracer, because aya adds a clsact
//! qdisc but has no call to delete one.
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::socket::Socket;

/// `RTM_DELQDISC` (linux/rtnetlink.h).
const RTM_DELQDISC: u16 = 37;
/// `NLM_F_ACK`: answer with an acknowledgement, so that a failure is seen.
const NLM_F_ACK: u16 = 4;
/// The clsact qdisc's handle (`ffff:`) and parent (`TC_H_CLSACT`).
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TC_H_CLSACT: u32 = 0xffff_fff1;

/// `tc qdisc del dev IFINDEX clsact` in the calling thread's namespace.
pub fn delete_clsact(ifindex: u32) -> Result<()> {
    let sock = Socket::open(libc::NETLINK_ROUTE).context("netlink socket")?;
    sock.set_receive_timeout(Duration::from_secs(2))?;
    sock.request(RTM_DELQDISC, NLM_F_ACK, &tcmsg(ifindex), 0)
        .context("netlink: RTM_DELQDISC")?;
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
mod tests {
    use super::*;

    #[test]
    fn tcmsg_names_the_clsact_qdisc_of_the_device() {
        let m = tcmsg(7);
        assert_eq!(m.len(), 20, "sizeof(struct tcmsg)");
        assert_eq!(&m[4..8], &7u32.to_ne_bytes());
        assert_eq!(&m[8..12], &0xffff_0000u32.to_ne_bytes());
        assert_eq!(&m[12..16], &0xffff_fff1u32.to_ne_bytes());
    }
}
