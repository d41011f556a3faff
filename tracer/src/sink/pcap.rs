//! `--pcap FILE.pcapng`: the headers of every dropped, oversized and ICMP too-big packet, for
//! Wireshark/tshark. One interface block per device (`eth0@demo-old`), packets as captured by
//! the kernel from the network header on (link type RAW: IPv4 and IPv6 alike), and each packet's
//! comment saying what the tracer saw: kind, reason, location, MTU, pods, service, nodes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

use super::Sink;
use crate::event::ObjectRef;
use crate::event::{Encap, Kind, MtuSource, Record};

/// Interface blocks written at most; devices beyond share one `other` block, so that a run
/// without `--netns` over thousands of pod veths cannot grow the table without bound.
const MAX_INTERFACES: usize = 1024;
/// EPB flags, direction bits (pcapng spec, `epb_flags`).
const EPB_INBOUND: u32 = 0b01;
const EPB_OUTBOUND: u32 = 0b10;

pub struct PcapSink<W: Write> {
    out: PcapNgWriter<W>,
    /// (netns inode, ifindex) → interface id. `None` key = the shared overflow interface.
    interfaces: HashMap<Option<(u32, u32)>, u32>,
    /// Namespace inode → the label the operator gave (`demo-old`, `root`).
    netns_labels: HashMap<u32, String>,
    /// `None`: headers only (see [`crate::packet::headers_len`]); else at most this many bytes.
    snaplen: Option<u32>,
    /// A stream someone reads as it comes (`--pcap -` into `wireshark -k -i -`): flushed after
    /// every batch of events, not only when the buffer fills.
    live: bool,
}

impl PcapSink<BufWriter<File>> {
    /// Create (or truncate) the capture now, mode 0640, with its section header written, so a
    /// bad path fails before tracing starts and a run without packets still leaves a valid file.
    pub fn create(
        path: &Path,
        snaplen: Option<u32>,
        netns_labels: HashMap<u32, String>,
    ) -> anyhow::Result<Self> {
        let file = super::logfile::create_private(path)
            .with_context(|| format!("cannot create the capture {}", path.display()))?;
        Self::new(BufWriter::new(file), snaplen, netns_labels)
            .with_context(|| format!("cannot write the capture {}", path.display()))
    }
}

impl PcapSink<BufWriter<std::io::Stdout>> {
    /// The capture as a stream on standard output (`--pcap -`), its section header written now.
    pub fn stdout(
        snaplen: Option<u32>,
        netns_labels: HashMap<u32, String>,
    ) -> anyhow::Result<Self> {
        let mut sink = Self::new(BufWriter::new(std::io::stdout()), snaplen, netns_labels)
            .context("cannot write the capture to standard output")?;
        sink.live = true;
        Ok(sink)
    }
}

impl<W: Write> PcapSink<W> {
    pub fn new(
        out: W,
        snaplen: Option<u32>,
        netns_labels: HashMap<u32, String>,
    ) -> anyhow::Result<Self> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "tracer {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let out = PcapNgWriter::with_section_header(out, section)
            .context("cannot write the pcapng section header")?;
        Ok(PcapSink {
            out,
            interfaces: HashMap::new(),
            netns_labels,
            snaplen,
            live: false,
        })
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }

    fn netns_label(&self, netns: u32) -> String {
        self.netns_labels
            .get(&netns)
            .cloned()
            .unwrap_or_else(|| format!("netns:{netns}"))
    }

    /// The interface id of the record's device, writing its block the first time.
    fn interface(&mut self, rec: &Record) -> anyhow::Result<u32> {
        let mut key = Some((
            rec.device.netns.unwrap_or(0),
            rec.device.ifindex.unwrap_or(0),
        ));
        if !self.interfaces.contains_key(&key) && self.interfaces.len() >= MAX_INTERFACES - 1 {
            key = None;
        }
        if let Some(&id) = self.interfaces.get(&key) {
            return Ok(id);
        }
        let (name, description) = match key {
            Some((netns, ifindex)) => {
                let dev = rec
                    .device
                    .ifname
                    .as_deref()
                    .map_or_else(|| format!("if{ifindex}"), str::to_string);
                let label = self.netns_label(netns);
                (
                    format!("{dev}@{label}"),
                    format!(
                        "{dev} (ifindex {ifindex}) in network namespace {label} (inode {netns})"
                    ),
                )
            }
            None => (
                "other".to_string(),
                format!("devices beyond the first {MAX_INTERFACES}"),
            ),
        };
        let idb = InterfaceDescriptionBlock {
            // Packets start at the network header; RAW carries IPv4 and IPv6 alike.
            linktype: DataLink::RAW,
            snaplen: self
                .snaplen
                .unwrap_or(tracer_common::PACKET_CAPTURE as u32)
                .min(tracer_common::PACKET_CAPTURE as u32),
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(description)),
                InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
            ],
        };
        self.out
            .write_pcapng_block(idb)
            .context("cannot write to the capture")?;
        let id = self.interfaces.len() as u32;
        self.interfaces.insert(key, id);
        Ok(id)
    }
}

/// `ns/name`, or `name` for cluster-scoped objects (nodes).
fn object(o: &ObjectRef) -> String {
    match &o.namespace {
        Some(ns) => format!("{ns}/{}", o.name),
        None => o.name.to_string(),
    }
}

/// `a -> b`, `a -> ?`, `? -> b`, or nothing when neither is known.
fn pair(a: Option<&ObjectRef>, b: Option<&ObjectRef>) -> Option<String> {
    match (a, b) {
        (None, None) => None,
        _ => Some(format!(
            "{} -> {}",
            a.map_or("?".into(), object),
            b.map_or("?".into(), object)
        )),
    }
}

/// The packet's comment: what the tracer knows about it, `key: value` pairs joined by `; `.
pub fn comment(rec: &Record, device: &str) -> String {
    let mut c = format!("tracer {}", rec.kind.as_str());
    if rec.events() > 1 {
        // A burst folded at the ring's edge: this packet is its last.
        let _ = write!(c, "; count: {} (the last of a burst)", rec.events());
    }
    if let Some(r) = &rec.drop.reason {
        let _ = write!(c, "; reason: {r}");
    }
    if let Some(l) = &rec.drop.location {
        let _ = write!(c, "; location: {l}");
    }
    if !rec.drop.matched.is_empty() {
        let _ = write!(
            c,
            "; matched: {}",
            rec.drop
                .matched
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let _ = write!(c, "; device: {device}");
    if let Some(len) = rec.size.l3_len {
        let _ = write!(c, "; size: {len} B");
    }
    if let Some(mtu) = rec.size.mtu {
        let _ = write!(c, "; mtu: {mtu}");
        match rec.size.mtu_source {
            Some(MtuSource::Peer) => {
                let peer = rec.route.peer_ifname.as_deref().unwrap_or("?");
                let _ = write!(c, " (veth peer {peer})");
            }
            Some(MtuSource::Route) => {
                let out = rec.route.out_ifname.as_deref().unwrap_or("?");
                let _ = write!(c, " (route via {out})");
            }
            Some(source) => {
                let _ = write!(c, " ({})", source.as_str());
            }
            None => {}
        }
    }
    if let Some(icmp) = &rec.icmp {
        let _ = write!(
            c,
            "; icmp: type {} code {} to {}{}",
            icmp.icmp_type,
            icmp.code,
            icmp.to,
            icmp.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default()
        );
    }
    if let (Some(proto), Some(src), Some(dst)) = (rec.flow.proto, rec.flow.src, rec.flow.dst) {
        let name = match proto {
            1 => "icmp".to_string(),
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            58 => "icmpv6".to_string(),
            p => format!("proto {p}"),
        };
        let end = |a: std::net::IpAddr, p: Option<u16>| match p {
            Some(p) if a.is_ipv6() => format!("[{a}]:{p}"),
            Some(p) => format!("{a}:{p}"),
            None => a.to_string(),
        };
        let _ = write!(
            c,
            "; flow: {name} {} -> {}",
            end(src, rec.flow.sport),
            end(dst, rec.flow.dport)
        );
    }
    if let Some(o) = &rec.flow.outer {
        let encap = match o.encap {
            Encap::Vxlan => "vxlan",
            Encap::Ipip => "ipip",
        };
        let _ = write!(c, "; outer: {encap} {} -> {}", o.src, o.dst);
        if let Some(vni) = o.vni {
            let _ = write!(c, " vni {vni}");
        }
    }
    if let Some(p) = pair(rec.names.src_pod.as_deref(), rec.names.dst_pod.as_deref()) {
        let _ = write!(c, "; pods: {p}");
    }
    if let Some(s) = &rec.names.service {
        let _ = write!(c, "; service: {}/{}", s.namespace, s.name);
        if let Some(port) = s.port {
            let _ = write!(c, ":{port}");
        }
    }
    if let Some(n) = pair(rec.names.src_node.as_deref(), rec.names.dst_node.as_deref()) {
        let _ = write!(c, "; nodes: {n}");
    }
    c
}

impl<W: Write> Sink for PcapSink<W> {
    fn emit(&mut self, rec: &Record) -> anyhow::Result<()> {
        // Only the packets the issue is about: retransmissions carry no packet bytes anyway.
        if matches!(
            rec.kind,
            Kind::TcpRetransmit | Kind::PmtuUpdate | Kind::Lost
        ) {
            return Ok(());
        }
        let Some(captured) = &rec.packet else {
            return Ok(());
        };
        let keep = match self.snaplen {
            None => crate::packet::headers_len(captured.ethertype, &captured.bytes),
            Some(n) => n as usize,
        }
        .min(captured.bytes.len());
        let interface_id = self.interface(rec)?;
        let device = match rec.device.netns {
            Some(ns) => format!(
                "{}@{}",
                rec.device.ifname.as_deref().unwrap_or("?"),
                self.netns_label(ns)
            ),
            None => rec.device.ifname.as_deref().unwrap_or("?").to_string(),
        };
        let mut options = vec![EnhancedPacketOption::Common(CommonOption::Comment(
            Cow::Owned(comment(rec, &device)),
        ))];
        match &*rec.hook {
            "tcx/egress" => options.push(EnhancedPacketOption::Flags(EPB_OUTBOUND)),
            "tcx/ingress" => options.push(EnhancedPacketOption::Flags(EPB_INBOUND)),
            _ => {}
        }
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(u64::try_from(rec.ts_unix_ns).unwrap_or(0)),
            // The packet's real length from its network header, as the kernel measured it.
            original_len: rec
                .size
                .l3_len
                .unwrap_or(captured.bytes.len() as u32)
                .max(keep as u32),
            data: Cow::Borrowed(&captured.bytes[..keep]),
            options,
        };
        self.out
            .write_pcapng_block(epb)
            .context("cannot write to the capture")?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out
            .get_mut()
            .flush()
            .context("cannot flush the capture")
    }

    fn batch_end(&mut self) -> anyhow::Result<()> {
        if self.live {
            self.flush()?;
        }
        Ok(())
    }

    fn verdict(&mut self, _v: &crate::verdict::Verdict) -> anyhow::Result<()> {
        // Verdicts are about flows, not packets: they go to the log and the terminal.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Captured, Matched, ServiceRef};
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::sync::Arc;

    /// A 1550-byte VXLAN packet as the kernel captures it (176 bytes): outer IPv4, UDP 4789,
    /// VXLAN, inner Ethernet, inner IPv4, TCP, then payload bytes 0xAB.
    fn vxlan_capture() -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&59192u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[12] = 5 << 4;
        let mut inner = vec![0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 6, 0, 0];
        inner.extend_from_slice(&[10, 212, 1, 2, 10, 212, 2, 2]);
        inner.extend_from_slice(&tcp);
        let mut eth = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        eth.extend_from_slice(&inner);
        let mut vx = vec![0x08, 0, 0, 0, 0, 0x10, 0, 0];
        vx.extend_from_slice(&eth);
        let mut udp = vec![0xc3, 0x50, 0x12, 0xb5, 0x05, 0xfa, 0, 0];
        udp.extend_from_slice(&vx);
        let mut outer = vec![0x45, 0, 0x06, 0x0e, 0, 0, 0, 0, 64, 17, 0, 0];
        outer.extend_from_slice(&[10, 210, 0, 1, 10, 210, 0, 2]);
        outer.extend_from_slice(&udp);
        outer.resize(tracer_common::PACKET_CAPTURE, 0xAB);
        outer
    }

    fn named(ns: Option<&str>, name: &str) -> Option<Arc<ObjectRef>> {
        Some(Arc::new(ObjectRef::new(ns.map(Into::into), name.into())))
    }

    fn drop_record() -> Record {
        let mut r = Record::new(Kind::Drop, "tp_btf/kfree_skb", 1_795_630_181_123_456_789);
        r.device.ifname = Some("eth0".into());
        r.device.ifindex = Some(2);
        r.device.netns = Some(4026532178);
        r.size.l3_len = Some(1550);
        r.size.mtu = Some(1450);
        r.size.mtu_source = Some(MtuSource::Peer);
        r.route.peer_ifname = Some("eth0".into());
        r.drop.reason = Some("NOT_SPECIFIED".into());
        r.drop.location = Some("__dev_forward_skb2+0x87".into());
        r.drop.matched = [Matched::Location, Matched::Oversize].into();
        let bytes = vxlan_capture();
        r.set_decoded(&crate::packet::decode(0x0800, &bytes));
        r.packet = Some(Captured {
            ethertype: 0x0800,
            bytes,
        });
        r.names.src_pod = named(Some("shop"), "order-api-7d9f8");
        r.names.dst_pod = named(Some("cache"), "storage-0");
        r.names.service = Some(Arc::new(ServiceRef::new(
            "cache".into(),
            "storage".into(),
            Some(8080),
            None,
        )));
        r.names.src_node = named(None, "worker-116");
        r.names.dst_node = named(None, "worker-208");
        r
    }

    fn labels() -> HashMap<u32, String> {
        HashMap::from([(4026532178, "demo-old".to_string())])
    }

    struct Read {
        interfaces: Vec<(String, u32)>,
        packets: Vec<Packet>,
    }

    /// (interface id, timestamp ns, original length, data, comments, flags)
    type Packet = (u32, u128, u32, Vec<u8>, Vec<String>, Option<u32>);

    /// Parse a capture back with the crate's reader.
    fn read(bytes: &[u8]) -> Read {
        let mut reader = PcapNgReader::new(bytes).unwrap();
        let mut out = Read {
            interfaces: Vec::new(),
            packets: Vec::new(),
        };
        while let Some(block) = reader.next_block() {
            match block.unwrap().0 {
                Block::InterfaceDescription(idb) => {
                    assert_eq!(idb.linktype, DataLink::RAW);
                    let name = idb
                        .options
                        .iter()
                        .find_map(|o| match o {
                            InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                            _ => None,
                        })
                        .unwrap();
                    out.interfaces.push((name, idb.snaplen));
                }
                Block::EnhancedPacket(epb) => {
                    let comments = epb
                        .options
                        .iter()
                        .filter_map(|o| match o {
                            EnhancedPacketOption::Common(CommonOption::Comment(c)) => {
                                Some(c.to_string())
                            }
                            _ => None,
                        })
                        .collect();
                    let flags = epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Flags(f) => Some(*f),
                        _ => None,
                    });
                    out.packets.push((
                        epb.interface_id,
                        epb.timestamp.as_nanos(),
                        epb.original_len,
                        epb.data.to_vec(),
                        comments,
                        flags,
                    ));
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn headers_only_one_interface_per_device_and_a_comment_per_packet() {
        let mut sink = PcapSink::new(Vec::new(), None, labels()).unwrap();
        let drop = drop_record();
        sink.emit(&drop).unwrap();
        sink.emit(&drop).unwrap();
        // Another device in another (unlabelled) namespace, leaving by tc egress.
        let mut tx = drop_record();
        tx.kind = Kind::OversizeTx;
        tx.hook = "tcx/egress".into();
        tx.device.netns = Some(4026532999);
        tx.device.ifname = Some("vxlan.calico".into());
        tx.device.ifindex = Some(5);
        tx.drop.reason = None;
        tx.drop.location = None;
        sink.emit(&tx).unwrap();
        // No packet bytes, or a retransmission: nothing to write.
        let mut bare = drop_record();
        bare.packet = None;
        sink.emit(&bare).unwrap();
        let mut rtx = drop_record();
        rtx.kind = Kind::TcpRetransmit;
        sink.emit(&rtx).unwrap();
        sink.flush().unwrap();
        let got = read(&sink.into_inner());

        assert_eq!(
            got.interfaces,
            [
                ("eth0@demo-old".to_string(), 176),
                ("vxlan.calico@netns:4026532999".to_string(), 176)
            ]
        );
        assert_eq!(got.packets.len(), 3);
        let (iface, ts, orig, data, comments, flags) = &got.packets[0];
        assert_eq!(*iface, 0);
        assert_eq!(*ts, 1_795_630_181_123_456_789, "nanosecond timestamps");
        assert_eq!(*orig, 1550);
        // Outer IPv4 + UDP + VXLAN + inner Ethernet + inner IPv4 + TCP; no payload byte.
        assert_eq!(data.len(), 20 + 8 + 8 + 14 + 20 + 20);
        assert_eq!(data[..], vxlan_capture()[..data.len()]);
        assert!(!data.contains(&0xAB));
        assert_eq!(flags, &None);
        assert_eq!(comments.len(), 1);
        assert_eq!(
            comments[0],
            "tracer drop; reason: NOT_SPECIFIED; location: __dev_forward_skb2+0x87; \
             matched: location,oversize; device: eth0@demo-old; size: 1550 B; \
             mtu: 1450 (veth peer eth0); flow: tcp 10.212.1.2:59192 -> 10.212.2.2:8080; \
             outer: vxlan 10.210.0.1 -> 10.210.0.2 vni 4096; \
             pods: shop/order-api-7d9f8 -> cache/storage-0; service: cache/storage:8080; \
             nodes: worker-116 -> worker-208"
        );
        assert_eq!(got.packets[1].0, 0, "same device, same interface");
        let (iface, _, _, _, comments, flags) = &got.packets[2];
        assert_eq!(*iface, 1);
        assert_eq!(*flags, Some(EPB_OUTBOUND));
        assert!(
            comments[0].starts_with("tracer oversize_tx; matched"),
            "{comments:?}"
        );
    }

    #[test]
    fn snaplen_keeps_more_but_never_more_than_captured() {
        let mut sink = PcapSink::new(Vec::new(), Some(100), labels()).unwrap();
        sink.emit(&drop_record()).unwrap();
        let mut big = PcapSink::new(Vec::new(), Some(9000), labels()).unwrap();
        big.emit(&drop_record()).unwrap();
        let got = read(&sink.into_inner());
        assert_eq!(got.interfaces[0].1, 100);
        assert_eq!(got.packets[0].3.len(), 100);
        let got = read(&big.into_inner());
        assert_eq!(got.interfaces[0].1, 176);
        assert_eq!(got.packets[0].3.len(), 176);
        assert_eq!(got.packets[0].2, 1550);
    }

    #[test]
    fn interfaces_are_bounded() {
        let mut sink = PcapSink::new(Vec::new(), None, labels()).unwrap();
        let mut r = drop_record();
        for i in 0..(MAX_INTERFACES as u32 + 10) {
            r.device.ifindex = Some(1000 + i);
            sink.emit(&r).unwrap();
        }
        let got = read(&sink.into_inner());
        assert_eq!(got.interfaces.len(), MAX_INTERFACES);
        assert_eq!(got.interfaces.last().unwrap().0, "other");
        assert_eq!(got.packets.len(), MAX_INTERFACES + 10);
        assert!(got.packets.iter().all(|p| (p.0 as usize) < MAX_INTERFACES));
    }

    /// Wireshark's own reader agrees: tshark decodes the RAW packets down to the inner TCP
    /// header and shows the comments; capinfos counts the packets and interfaces.
    #[test]
    fn tshark_reads_it() {
        let path = std::env::temp_dir().join(format!("tracer-pcap-{}.pcapng", std::process::id()));
        let mut sink = PcapSink::create(&path, None, labels()).unwrap();
        sink.emit(&drop_record()).unwrap();
        sink.flush().unwrap();
        drop(sink);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o640);
        let run = |cmd: &str, args: &[&str]| {
            let out = std::process::Command::new(cmd)
                .args(args)
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("{cmd} (cargo xtask setup installs tshark): {e}"));
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let fields = run(
            "tshark",
            &[
                "-T",
                "fields",
                "-e",
                "frame.comment",
                "-e",
                "vxlan.vni",
                "-e",
                "tcp.dstport",
                "-e",
                "frame.interface_name",
                "-r",
            ],
        );
        let info = run("capinfos", &["-c", "-I"]);
        std::fs::remove_file(&path).unwrap();
        let cols: Vec<&str> = fields.trim_end().split('\t').collect();
        assert_eq!(cols.len(), 4, "{fields}");
        assert!(
            cols[0].contains("location: __dev_forward_skb2+0x87"),
            "{fields}"
        );
        assert!(cols[0].contains("pods: shop/order-api-7d9f8"), "{fields}");
        assert_eq!(cols[1], "4096", "{fields}");
        assert_eq!(cols[2], "8080", "{fields}");
        assert_eq!(cols[3], "eth0@demo-old", "{fields}");
        assert!(info.contains("Number of packets:   1"), "{info}");
        assert!(info.contains("eth0@demo-old"), "{info}");
    }
}
