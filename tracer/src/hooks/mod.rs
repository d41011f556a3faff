//! The user halves of the kernel programs in `tracer-ebpf`, one module per hook: each attaches
//! its program(s) with the best method the running kernel allows (reporting what it chose and
//! why) and decodes its events into the shared [`Record`] model.
pub mod drops;
pub mod icmp;
pub mod ingress;
pub mod tcp;
pub mod transmit;

use std::{collections::HashMap, fmt};

use tracer_common::{flags, Event, EventKind, Hook};

use crate::{
    event::{Kind, Record},
    ifaces::Iface,
    kernel::{btf::DropReasons, kallsyms::Kallsyms},
    packet,
};

/// How one attach attempt went: printed at start-up so nothing runs silently without a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Attached,
    /// Tried and refused by the kernel; the text is the kernel's (or aya's) reason.
    Failed(String),
    /// Not tried, e.g. a better method already attached or nothing to attach to.
    Skipped(String),
}

/// One line of the attach report.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The concern (`drops`, `icmp-sent`, `tx`, `rx`, `tcp-retrans`).
    pub concern: &'static str,
    /// The method (`tp_btf/kfree_skb`, `tcx/egress eth0 @node-a`).
    pub method: String,
    pub outcome: Outcome,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Attached => write!(f, "{:<12} {} ✔", self.concern, self.method),
            Outcome::Failed(why) => write!(f, "{:<12} {} ✘ {}", self.concern, self.method, why),
            Outcome::Skipped(why) => write!(f, "{:<12} {} – {}", self.concern, self.method, why),
        }
    }
}

/// A hooked device, for naming tc events (tc programs see only an ifindex).
#[derive(Clone, Debug)]
pub struct HookedDevice {
    pub netns: u32,
    pub netns_label: String,
    pub iface: Iface,
}

/// What decoding needs to turn kernel numbers into names.
pub struct Names {
    pub reasons: DropReasons,
    pub kallsyms: Kallsyms,
    /// (netns inode, ifindex) → the hooked device.
    pub devices: HashMap<(u32, u32), HookedDevice>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, to turn `bpf_ktime_get_ns()` into wall time.
    pub clock_offset_ns: i128,
}

impl Names {
    /// The hooked device with this index in this namespace.
    pub fn device(&self, netns: u32, ifindex: u32) -> Option<&HookedDevice> {
        self.devices.get(&(netns, ifindex))
    }
}

/// Decode one raw kernel event. `None` only for events this build does not know (never
/// produced by its own kernel programs).
pub fn decode(ev: &Event, names: &Names) -> Option<Record> {
    let kind = EventKind::from_u8(ev.kind)?;
    let hook = Hook::from_u8(ev.hook)?;
    let ts = ev.ts_ns as i128 + names.clock_offset_ns;
    let mut rec = Record::new(map_kind(kind), hook.name(), ts);
    fill_common(&mut rec, ev, names);
    match kind {
        EventKind::Drop => drops::decode(&mut rec, ev, names),
        EventKind::IcmpTooBigSent | EventKind::IcmpTooBigReceived => icmp::decode(&mut rec, ev),
        EventKind::OversizeTx => transmit::decode(&mut rec, ev),
        EventKind::TcpRetransmit => tcp::decode(&mut rec, ev),
    }
    Some(rec)
}

fn map_kind(kind: EventKind) -> Kind {
    match kind {
        EventKind::Drop => Kind::Drop,
        EventKind::IcmpTooBigSent => Kind::IcmpTooBigSent,
        EventKind::IcmpTooBigReceived => Kind::IcmpTooBigReceived,
        EventKind::OversizeTx => Kind::OversizeTx,
        EventKind::TcpRetransmit => Kind::TcpRetransmit,
    }
}

/// A NUL-terminated kernel `char[IFNAMSIZ]`.
pub fn c_name(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).into_owned())
}

fn nonzero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

/// Fields every kind shares: device, namespace, sizes, packet headers.
fn fill_common(rec: &mut Record, ev: &Event, names: &Names) {
    rec.ifindex = nonzero(ev.ifindex);
    rec.ifname = c_name(&ev.ifname);
    rec.netns = nonzero(ev.netns);
    if rec.ifname.is_none() {
        // tc programs know only the namespace and ifindex: name it from the devices we hooked.
        if let Some(dev) = names.device(ev.netns, ev.ifindex) {
            rec.ifname = Some(dev.iface.name.clone());
        }
    }
    rec.len = nonzero(ev.len);
    rec.l3_len = nonzero(ev.l3_len);
    if ev.mtu != 0 {
        rec.mtu = Some(ev.mtu);
        rec.mtu_source = Some(if ev.flags & flags::MTU_ADVERTISED != 0 {
            "icmp"
        } else {
            "device"
        });
    }
    if ev.flags & flags::GSO != 0 {
        rec.gso_size = nonzero(ev.gso_size as u32);
        rec.gso_segs = nonzero(ev.gso_segs as u32);
    }
    if ev.flags & flags::HAS_OUT_DEV != 0 {
        rec.out_ifindex = nonzero(ev.out_ifindex);
        rec.out_ifname = c_name(&ev.out_ifname);
        rec.out_mtu = nonzero(ev.out_mtu);
    }
    if ev.skb != 0 {
        rec.skb = Some(format!("{:#x}", ev.skb));
    }
    if ev.flags & flags::HAS_PACKET != 0 {
        let n = (ev.cap_len as usize).min(ev.packet.len());
        let decoded = packet::decode(ev.l3_proto, &ev.packet[..n]);
        rec.set_decoded(&decoded);
        if rec.l3_len.is_none() {
            rec.l3_len = decoded.ip_len;
        }
    }
}
