//! The user halves of the kernel programs in `tracer-ebpf`, one module per hook: each attaches
//! its program(s) with the best method the running kernel allows (reporting what it chose and
//! why) and decodes its events into the shared [`Record`] model.
pub mod devices;
pub mod drops;
pub mod icmp;
pub mod ingress;
pub mod intern;
pub mod pmtu;
pub mod pmtu6;
pub mod select;
pub mod tc;
pub mod tcp;
pub mod transmit;

use std::{collections::HashMap, fmt};

use tracer_common::{flags, Event, EventKind, Hook};

use crate::{
    event::{Kind, MtuSource, Record},
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
    /// The concern (`drops`, `icmp-sent`, `tx`, `rx`, `tcp-retrans`, `pmtu-learned`).
    pub concern: &'static str,
    /// The method (`tp_btf/kfree_skb`, `tcx/egress eth0 @node-a`).
    pub method: String,
    pub outcome: Outcome,
}

impl Attempt {
    pub fn new(concern: &'static str, method: impl Into<String>, outcome: Outcome) -> Attempt {
        Attempt {
            concern,
            method: method.into(),
            outcome,
        }
    }
}

impl Outcome {
    /// `Attached`, or `Failed` with the error's whole chain.
    pub fn of(result: anyhow::Result<()>) -> Outcome {
        match result {
            Ok(()) => Outcome::Attached,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        }
    }

    /// A failure reworded by `explain` (one of the `explain_*` below).
    pub fn explained(self, explain: fn(&str) -> String) -> Outcome {
        match self {
            Outcome::Failed(why) => Outcome::Failed(explain(&why)),
            other => other,
        }
    }
}

/// Turn the kernel's terse kprobe refusals into what they mean.
pub fn explain_kprobe(err: &str) -> String {
    if err.contains("kprobe/type") || err.contains("event_source/devices/kprobe") {
        format!("kernel without kprobes (CONFIG_KPROBES off): {err}")
    } else {
        err.to_string()
    }
}

/// fentry refusals come back as a bare errno with an empty verifier log.
pub fn explain_fentry(err: &str) -> String {
    if err.contains("Operation not permitted") || err.contains("not supported") {
        format!("kernel refuses fentry (no BPF trampoline / ftrace attach blocked): {err}")
    } else {
        err.to_string()
    }
}

/// A program of the embedded object, by name.
fn program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} missing from the embedded object"))
}

/// Load program `prog_name` and attach it to the tracepoint `category:name`.
fn attach_tracepoint(
    ebpf: &mut aya::Ebpf,
    prog_name: &str,
    category: &str,
    name: &str,
) -> anyhow::Result<()> {
    let prog: &mut aya::programs::TracePoint = program(ebpf, prog_name)?.try_into()?;
    prog.load()?;
    prog.attach(category, name)?;
    Ok(())
}

/// Load program `prog_name` and attach it as a kprobe on `function`.
fn attach_kprobe(ebpf: &mut aya::Ebpf, prog_name: &str, function: &str) -> anyhow::Result<()> {
    let prog: &mut aya::programs::KProbe = program(ebpf, prog_name)?.try_into()?;
    prog.load()?;
    prog.attach(function, 0)?;
    Ok(())
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

/// How much work each loaded program cost the verifier (`RUST_LOG=tracer=debug`): older
/// verifiers give up at 1M processed instructions, so this is the figure to watch.
pub fn log_verifier_costs(ebpf: &aya::Ebpf) {
    for (name, prog) in ebpf.programs() {
        // Programs never loaded (an unused tc copy, a refused fallback) have no info.
        let Ok(info) = prog.info() else { continue };
        log::debug!(
            "{name}: {} instructions verified, {} B translated",
            info.verified_instruction_count().unwrap_or(0),
            info.size_translated().unwrap_or(0)
        );
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
    /// Kubernetes names, when a source gave any.
    pub inventory: Option<crate::k8s::Inventory>,
    /// Original destinations of DNATed connections, for service names after DNAT.
    pub conntrack: Option<crate::k8s::conntrack::Conntrack>,
    /// Device names and drop locations already made, shared with the records that carry them.
    pub interned: intern::Interned,
    /// Keep the captured bytes in the record (`Record::packet`): only the pcapng sink reads
    /// them, and a copy per event costs an allocation when nothing does.
    pub keep_packets: bool,
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
    // Named in place: a record (~770 bytes) moved out of the Option and back was two copies
    // per event (issue 18).
    let mut rec = decode_unnamed(ev, names);
    if let Some(rec) = &mut rec {
        attribute(rec, names);
    }
    rec
}

/// [`decode`] without the Kubernetes names: what the event loop folds bursts by before naming
/// the records it keeps ([`attribute`]).
pub fn decode_unnamed(ev: &Event, names: &Names) -> Option<Record> {
    let kind = EventKind::from_u8(ev.kind)?;
    let hook = Hook::from_u8(ev.hook)?;
    let ts = ev.ts_ns as i128 + names.clock_offset_ns;
    // Filled where it is returned, not moved there at the end.
    let mut out = Some(Record::new(Kind::from_kernel(kind), hook.name(), ts));
    let rec = out.as_mut()?;
    rec.count = Some(1);
    fill_common(rec, ev, names);
    match kind {
        EventKind::Drop => drops::decode(rec, ev, names),
        EventKind::IcmpTooBigSent | EventKind::IcmpTooBigReceived => icmp::decode(rec, ev),
        EventKind::OversizeTx => transmit::decode(rec, ev),
        EventKind::TcpRetransmit => tcp::decode(rec, ev),
        EventKind::PmtuUpdate => match hook {
            Hook::Pmtu6UpdateFentry | Hook::Pmtu6UpdateKprobe => pmtu6::decode(rec, ev),
            _ => pmtu::decode(rec, ev),
        },
    }
    out
}

/// The Kubernetes names of a decoded record's flow, when a source of names is on.
pub fn attribute(rec: &mut Record, names: &Names) {
    if let Some(inventory) = &names.inventory {
        let conntrack = names.conntrack.as_ref();
        rec.names = inventory.attribute_with(&crate::k8s::FlowKey::from_record(rec), |f| {
            conntrack.and_then(|c| c.original_destination(f))
        });
    }
}

/// A NUL-terminated kernel `char[IFNAMSIZ]`.
pub fn c_name(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let raw = &raw[..end];
    (end > 0).then(|| match std::str::from_utf8(raw) {
        // Device names are ASCII: checked, not rebuilt.
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(raw).into_owned(),
    })
}

fn nonzero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

/// Fields every kind shares: device, namespace, sizes, packet headers.
fn fill_common(rec: &mut Record, ev: &Event, names: &Names) {
    rec.device.ifindex = nonzero(ev.ifindex);
    rec.device.ifname = names.interned.name(&ev.ifname);
    rec.device.netns = nonzero(ev.netns);
    if rec.device.ifname.is_none() {
        // tc programs know only the namespace and ifindex: name it from the devices we hooked.
        if let Some(dev) = names.device(ev.netns, ev.ifindex) {
            rec.device.ifname = Some(names.interned.name_of(&dev.iface.name));
        }
    }
    rec.size.len = nonzero(ev.len);
    rec.size.l3_len = nonzero(ev.l3_len);
    if ev.mtu != 0 {
        rec.size.mtu = Some(ev.mtu);
        rec.size.mtu_source = Some(if ev.flags & flags::MTU_ADVERTISED != 0 {
            MtuSource::Icmp
        } else {
            MtuSource::Device
        });
    }
    if ev.flags & flags::GSO != 0 {
        rec.size.gso_size = nonzero(ev.gso_size as u32);
        rec.size.gso_segs = nonzero(ev.gso_segs as u32);
    }
    if ev.flags & flags::HAS_OUT_DEV != 0 {
        rec.route.out_ifindex = nonzero(ev.out_ifindex);
        rec.route.out_ifname = names.interned.name(&ev.out_ifname);
        rec.route.out_mtu = nonzero(ev.out_mtu);
    }
    if ev.skb != 0 {
        rec.skb = Some(ev.skb);
    }
    if ev.flags & flags::HAS_PACKET != 0 {
        let n = (ev.cap_len as usize).min(ev.packet.len());
        let decoded = packet::decode(ev.l3_proto, &ev.packet[..n]);
        rec.set_decoded(&decoded);
        if rec.size.l3_len.is_none() {
            rec.size.l3_len = decoded.ip_len;
        }
        if names.keep_packets {
            rec.packet = Some(crate::event::Captured {
                ethertype: ev.l3_proto,
                bytes: ev.packet[..n].to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Matched, ifaces::Iface, kernel::btf};

    const KALLSYMS: &str = "ffffffff81e57040 t __dev_forward_skb2\n\
                            ffffffff81e571e0 T __dev_forward_skb\n\
                            ffffffff81ff7890 T ip_forward\n\
                            ffffffff81ff8000 T ip_forward_finish\n";

    fn names() -> Names {
        let vmlinux = btf::load_vmlinux().unwrap();
        Names {
            reasons: DropReasons::from_btf(&vmlinux).unwrap(),
            kallsyms: Kallsyms::parse(KALLSYMS),
            devices: HashMap::new(),
            clock_offset_ns: 1_000_000_000,
            inventory: None,
            conntrack: None,
            interned: Default::default(),
            keep_packets: true,
        }
    }

    /// A 1500-byte IPv4 ICMP echo header from 10.0.0.1 to 10.0.0.2.
    fn ipv4_icmp() -> [u8; 28] {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&1500u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20] = 8;
        p
    }

    fn event(kind: EventKind, hook: Hook) -> Event {
        let mut ev = Event::zeroed();
        ev.kind = kind as u8;
        ev.hook = hook as u8;
        ev.ts_ns = 5;
        let pkt = ipv4_icmp();
        ev.packet[..pkt.len()].copy_from_slice(&pkt);
        ev.cap_len = pkt.len() as u16;
        ev.l3_proto = 0x0800;
        ev.flags = flags::HAS_PACKET;
        ev.len = 1514;
        ev.l3_len = 1500;
        ev.ifindex = 7;
        ev.netns = 4026532000;
        ev.ifname[..4].copy_from_slice(b"vA\0\0");
        ev
    }

    #[test]
    fn a_veth_drop_is_judged_against_the_peer_mtu() {
        let names = names();
        let mut ev = event(EventKind::Drop, Hook::DropsTpBtf);
        ev.reason = names.reasons.value("NOT_SPECIFIED").unwrap();
        ev.location = 0xffffffff81e57040 + 0x87;
        ev.mtu = 1500;
        ev.flags |= flags::HAS_PEER_DEV | flags::MATCH_LOCATION | flags::MATCH_OVERSIZE;
        ev.peer_mtu = 1450;
        ev.peer_ifindex = 2;
        ev.peer_ifname[..2].copy_from_slice(b"vB");
        let rec = decode(&ev, &names).unwrap();
        assert_eq!(rec.kind, Kind::Drop);
        assert_eq!(rec.ts_unix_ns, 1_000_000_005);
        assert_eq!(rec.drop.reason.as_deref(), Some("NOT_SPECIFIED"));
        assert_eq!(
            rec.drop.location.as_deref(),
            Some("__dev_forward_skb2+0x87")
        );
        assert_eq!(
            rec.drop.matched,
            [Matched::Location, Matched::Oversize].into()
        );
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1450), Some(MtuSource::Peer))
        );
        assert_eq!(rec.route.peer_ifname.as_deref(), Some("vB"));
        assert_eq!(rec.device.ifname.as_deref(), Some("vA"));
        assert_eq!(rec.flow.proto, Some(1));
        assert_eq!(rec.flow.src.unwrap().to_string(), "10.0.0.1");
        assert_eq!(rec.flow.dst.unwrap().to_string(), "10.0.0.2");
        // The captured bytes ride along for --pcap (exactly cap_len of them), not in the JSON.
        let captured = rec.packet.as_ref().unwrap();
        assert_eq!(captured.ethertype, 0x0800);
        assert_eq!(captured.bytes, ipv4_icmp());
        let json = serde_json::to_value(&rec).unwrap();
        assert!(json.get("packet").is_none(), "{json}");
    }

    #[test]
    fn a_forwarding_drop_is_judged_against_the_route_mtu() {
        let names = names();
        let mut ev = event(EventKind::Drop, Hook::DropsTracepoint);
        ev.reason = names.reasons.value("PKT_TOO_BIG").unwrap();
        ev.location = 0xffffffff81ff7890 + 0x2c0;
        ev.mtu = 1500;
        ev.flags |= flags::HAS_OUT_DEV | flags::MATCH_REASON;
        ev.out_mtu = 1450;
        ev.out_ifindex = 3;
        ev.out_ifname[..2].copy_from_slice(b"r1");
        let rec = decode(&ev, &names).unwrap();
        assert_eq!(rec.hook, "tracepoint/skb/kfree_skb");
        assert_eq!(rec.drop.reason.as_deref(), Some("PKT_TOO_BIG"));
        assert_eq!(rec.drop.location.as_deref(), Some("ip_forward+0x2c0"));
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1450), Some(MtuSource::Route))
        );
        assert_eq!(rec.route.out_ifname.as_deref(), Some("r1"));
        assert_eq!(rec.drop.matched, [Matched::Reason].into());
    }

    #[test]
    fn a_drop_that_fits_its_device_keeps_the_device_mtu() {
        let names = names();
        let mut ev = event(EventKind::Drop, Hook::DropsTpBtf);
        ev.reason = names.reasons.value("NETFILTER_DROP").unwrap();
        ev.l3_len = 600;
        ev.mtu = 1500;
        ev.flags |= flags::HAS_OUT_DEV;
        ev.out_mtu = 1450;
        let rec = decode(&ev, &names).unwrap();
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1500), Some(MtuSource::Device))
        );
        assert!(rec.drop.matched.is_empty());
        // An address outside every known symbol is shown raw, not guessed.
        assert_eq!(rec.drop.location.as_deref(), Some("0x0"));
    }

    #[test]
    fn icmp_generation_without_kprobe_infers_the_mtu_from_the_route() {
        let names = names();
        let mut ev = event(EventKind::IcmpTooBigSent, Hook::IcmpSendTracepoint);
        ev.aux1 = 3;
        ev.aux2 = 4;
        ev.mtu = 1500;
        ev.flags |= flags::HAS_OUT_DEV;
        ev.out_mtu = 1450;
        let rec = decode(&ev, &names).unwrap();
        let icmp = rec.icmp.as_ref().unwrap();
        assert_eq!(
            icmp.mtu, None,
            "the tracepoint does not see the advertised MTU"
        );
        assert_eq!(icmp.from, None);
        assert_eq!(icmp.to.to_string(), "10.0.0.1");
        assert_eq!((icmp.icmp_type, icmp.code), (3, 4));
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1450), Some(MtuSource::Route))
        );
    }

    #[test]
    fn icmp_generation_with_kprobe_reports_the_advertised_mtu() {
        let names = names();
        let mut ev = event(EventKind::IcmpTooBigSent, Hook::IcmpSendKprobe);
        ev.aux1 = 3;
        ev.aux2 = 4;
        ev.mtu = 1430;
        ev.flags |= flags::MTU_ADVERTISED;
        let rec = decode(&ev, &names).unwrap();
        assert_eq!(rec.icmp.as_ref().unwrap().mtu, Some(1430));
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1430), Some(MtuSource::Icmp))
        );
    }

    #[test]
    fn tc_events_are_named_from_the_hooked_devices_of_their_namespace() {
        let mut names = names();
        let dev = |netns: u32, name: &str| HookedDevice {
            netns,
            netns_label: "x".into(),
            iface: Iface {
                name: name.into(),
                ifindex: 2,
                mtu: 1450,
                driver: None,
                link_type: 1,
            },
        };
        // Two namespaces, same ifindex: the namespace decides.
        names.devices.insert((11, 2), dev(11, "eth0"));
        names.devices.insert((22, 2), dev(22, "uplink"));
        let mut ev = event(EventKind::OversizeTx, Hook::TxTc);
        ev.ifname = [0; 16];
        ev.ifindex = 2;
        ev.netns = 22;
        ev.mtu = 1450;
        let rec = decode(&ev, &names).unwrap();
        assert_eq!(rec.device.ifname.as_deref(), Some("uplink"));
        assert_eq!(rec.kind, Kind::OversizeTx);
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1450), Some(MtuSource::Device))
        );
    }

    #[test]
    fn unknown_kinds_are_not_decoded() {
        let names = names();
        let mut ev = event(EventKind::Drop, Hook::DropsTpBtf);
        ev.kind = 200;
        assert!(decode(&ev, &names).is_none());
        ev.kind = EventKind::Drop as u8;
        ev.hook = 99;
        assert!(decode(&ev, &names).is_none());
    }
}
