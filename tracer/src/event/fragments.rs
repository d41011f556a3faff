//! A packet the kernel fragments can die twice: a fragment is dropped (a veth whose peer is
//! smaller), then the fragmenter drops the original it was cut from. Both drops are one
//! packet: the verdict counts it once and the terminal prints it on one line.
use std::net::IpAddr;

use super::{Kind, Record};

/// The original's drop follows its fragment's within this.
pub const SAME_PACKET_NS: i128 = 100_000;

/// Kernel functions that drop the original when sending one of its fragments failed.
pub fn is_fragmenter(location: &str) -> bool {
    let s = location.split('+').next().unwrap_or(location);
    s.starts_with("ip_do_fragment") || s.starts_with("ip_fragment") || s == "ip6_fragment"
}

/// Where and when a drop happened, and to which flow: enough to recognise the original's drop
/// that follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropPlace {
    ts_ns: i128,
    netns: Option<u32>,
    ifindex: Option<u32>,
    flow: FlowKey,
}

/// Protocol, source, source port, destination, destination port, as the record has them.
type FlowKey = (
    Option<u8>,
    Option<IpAddr>,
    Option<u16>,
    Option<IpAddr>,
    Option<u16>,
);

impl DropPlace {
    /// The place of a drop record (none for other kinds).
    pub fn of(rec: &Record) -> Option<DropPlace> {
        (rec.kind == Kind::Drop).then_some(DropPlace {
            ts_ns: rec.ts_unix_ns,
            netns: rec.device.netns,
            ifindex: rec.device.ifindex,
            flow: (
                rec.flow.proto,
                rec.flow.src,
                rec.flow.sport,
                rec.flow.dst,
                rec.flow.dport,
            ),
        })
    }

    /// Whether `next` is the fragmenter dropping the original of the packet dropped here.
    pub fn original_follows(&self, next: &Record) -> bool {
        let Some(n) = DropPlace::of(next) else {
            return false;
        };
        next.drop.location.as_deref().is_some_and(is_fragmenter)
            && (0..=SAME_PACKET_NS).contains(&(n.ts_ns - self.ts_ns))
            && (n.netns, n.ifindex, n.flow) == (self.netns, self.ifindex, self.flow)
    }
}
