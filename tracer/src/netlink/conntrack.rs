//! The conntrack table (NETLINK_NETFILTER, ctnetlink): `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`,
//! and the original and reply tuples of each entry. What the tracer does with them (service
//! names after DNAT) is `k8s::conntrack`'s.
use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    attr::{attr_be16, attr_ip, attrs},
    socket::{Socket, NLM_F_DUMP},
};

const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
/// Message types carry their subsystem in the high byte.
const CT_NEW: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW;
const CT_GET: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// One direction of a connection with ports (TCP, UDP, SCTP, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Tuple {
    /// The other direction of the same connection.
    pub fn reversed(self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// A conntrack entry: what the client sent (`orig`) and what the answer looks like (`reply`;
/// after DNAT its source is the backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
}

/// The conntrack entries of the calling thread's network namespace (both families). Entries
/// without ports (ICMP, GRE) are left out.
pub fn dump() -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    dump_each(|e| entries.push(e))?;
    Ok(entries)
}

/// [`dump`] handing each entry to `each` as it is read: what the caller keeps (a bounded
/// table) is all the dump costs, however large the kernel's table is.
pub fn dump_each(mut each: impl FnMut(Entry)) -> Result<()> {
    let sock = Socket::open(libc::NETLINK_NETFILTER).context("netlink socket")?;
    // The kernel always answers a dump; a bound on the wait keeps a surprise from stopping a
    // background refresher for good.
    sock.set_receive_timeout(Duration::from_secs(5))?;
    // nfgenmsg: family AF_UNSPEC (IPv4 and IPv6 in one dump), version 0, res_id 0.
    let nfgenmsg = [0u8; NFGENMSG_LEN];
    sock.request_each(CT_GET, NLM_F_DUMP, &nfgenmsg, CT_NEW, |m| {
        if let Some(e) = parse_entry(m) {
            each(e)
        }
    })
    .context("netlink: IPCTNL_MSG_CT_GET dump")
}

/// One `IPCTNL_MSG_CT_NEW` payload (nfgenmsg, then attributes): its two tuples, or `None`
/// when either is missing or has no ports.
fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let (mut orig, mut reply) = (None, None);
    for (kind, value) in attrs(payload.get(NFGENMSG_LEN..)?) {
        match kind {
            CTA_TUPLE_ORIG => orig = parse_tuple(value),
            CTA_TUPLE_REPLY => reply = parse_tuple(value),
            _ => {}
        }
    }
    Some(Entry {
        orig: orig?,
        reply: reply?,
    })
}

fn parse_tuple(nested: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for (kind, value) in attrs(nested) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v) in attrs(value) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = attr_ip(v),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = attr_ip(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attrs(value) {
                    match k {
                        CTA_PROTO_NUM => proto = v.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = attr_be16(v),
                        CTA_PROTO_DST_PORT => dport = attr_be16(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        proto: proto?,
        src: src?,
        sport: sport?,
        dst: dst?,
        dport: dport?,
    })
}

#[cfg(test)]
pub(crate) mod tests;
