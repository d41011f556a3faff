//! The event ABI shared by the tracer's kernel programs (`tracer-ebpf`) and its daemon (`tracer`).
//!
//! Everything here is `#[repr(C)]`, fixed-size and free of pointers so that the kernel side can write
//! it into the ring buffer and the user side can read it back byte for byte. Changing a layout is an
//! ABI change: both crates are built together, so there is no versioning beyond that.
#![no_std]

/// What a kernel program observed. The daemon maps these onto the JSONL `kind` strings.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A packet freed as dropped (`skb:kfree_skb`).
    Drop = 1,
    /// The kernel generated an ICMP "fragmentation needed" / ICMPv6 "packet too big".
    IcmpTooBigSent = 2,
    /// An ICMP too-big arrived on a hooked device.
    IcmpTooBigReceived = 3,
    /// A packet larger than its device's MTU left through a hooked device.
    OversizeTx = 4,
    /// TCP retransmitted a segment (`tcp:tcp_retransmit_skb`).
    TcpRetransmit = 5,
    /// The kernel recorded a smaller path MTU toward a destination (`__ip_rt_update_pmtu` for
    /// IPv4, `__ip6_rt_update_pmtu` for IPv6): an ICMP too-big reached a stack that acted on it
    /// (a socket's, a tunnel's, a router's).
    PmtuUpdate = 6,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Drop,
            2 => Self::IcmpTooBigSent,
            3 => Self::IcmpTooBigReceived,
            4 => Self::OversizeTx,
            5 => Self::TcpRetransmit,
            6 => Self::PmtuUpdate,
            _ => return None,
        })
    }
}

/// Which kernel program produced an event: the same program can serve several attach methods.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    DropsTpBtf = 0,
    DropsTracepoint = 1,
    IcmpSendTracepoint = 2,
    TxTc = 3,
    RxTc = 4,
    TcpRetransmitTracepoint = 5,
    IcmpSendKprobe = 6,
    Icmp6SendKprobe = 7,
    PmtuUpdateFentry = 8,
    PmtuUpdateKprobe = 9,
    Pmtu6UpdateFentry = 10,
    Pmtu6UpdateKprobe = 11,
}

/// Number of [`Hook`] values: the size of the per-CPU lost-event counter array.
pub const HOOK_COUNT: u32 = 12;

impl Hook {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::DropsTpBtf,
            1 => Self::DropsTracepoint,
            2 => Self::IcmpSendTracepoint,
            3 => Self::TxTc,
            4 => Self::RxTc,
            5 => Self::TcpRetransmitTracepoint,
            6 => Self::IcmpSendKprobe,
            7 => Self::Icmp6SendKprobe,
            8 => Self::PmtuUpdateFentry,
            9 => Self::PmtuUpdateKprobe,
            10 => Self::Pmtu6UpdateFentry,
            11 => Self::Pmtu6UpdateKprobe,
            _ => return None,
        })
    }

    /// The attach method as the operator sees it (`tp_btf/kfree_skb`, `tc/egress`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::DropsTpBtf => "tp_btf/kfree_skb",
            Self::DropsTracepoint => "tracepoint/skb/kfree_skb",
            Self::IcmpSendTracepoint => "tracepoint/icmp/icmp_send",
            Self::TxTc => "tcx/egress",
            Self::RxTc => "tcx/ingress",
            Self::TcpRetransmitTracepoint => "tracepoint/tcp/tcp_retransmit_skb",
            Self::IcmpSendKprobe => "kprobe/__icmp_send",
            Self::Icmp6SendKprobe => "kprobe/icmp6_send",
            Self::PmtuUpdateFentry => "fentry/__ip_rt_update_pmtu",
            Self::PmtuUpdateKprobe => "kprobe/__ip_rt_update_pmtu",
            Self::Pmtu6UpdateFentry => "fentry/__ip6_rt_update_pmtu",
            Self::Pmtu6UpdateKprobe => "kprobe/__ip6_rt_update_pmtu",
        }
    }
}

/// How many bytes of the packet, from its network header on, an event carries. Enough for
/// eth + IPv6 + UDP + VXLAN + inner eth + IPv6 + TCP (14+40+8+8+14+40+20 = 144) with room to spare;
/// headers only, never a meaningful amount of payload.
pub const PACKET_CAPTURE: usize = 176;

pub const IFNAMSIZ: usize = 16;

/// `Event::flags` bits.
pub mod flags {
    /// `packet` holds bytes from the network header on (`proto` says which family).
    pub const HAS_PACKET: u16 = 1 << 0;
    /// `flow` was filled from tracepoint fields (no packet bytes needed).
    pub const HAS_FLOW: u16 = 1 << 1;
    /// The packet is a GSO super-packet (`gso_size` segments).
    pub const GSO: u16 = 1 << 2;
    /// The drop matched because its reason is PKT_TOO_BIG.
    pub const MATCH_REASON: u16 = 1 << 3;
    /// The drop matched because its location is a known size-drop site.
    pub const MATCH_LOCATION: u16 = 1 << 4;
    /// The drop matched because the packet is longer than its device's MTU.
    pub const MATCH_OVERSIZE: u16 = 1 << 5;
    /// `mtu` is the MTU advertised by an ICMP message rather than a device's.
    pub const MTU_ADVERTISED: u16 = 1 << 6;
    /// `out_*` describe the route's output device (`skb_dst(skb)->dev`).
    pub const HAS_OUT_DEV: u16 = 1 << 7;
    /// `peer_*` describe the veth peer of the packet's device.
    pub const HAS_PEER_DEV: u16 = 1 << 8;
    /// The dropped packet is itself an ICMP too-big message (a firewall ate the PMTU signal).
    pub const MATCH_ICMP_TOO_BIG: u16 = 1 << 9;
    /// TCP retransmits: `aux2` holds the segment's first sequence number.
    pub const HAS_TCP_SEQ: u16 = 1 << 10;
}

/// A flow given directly by a tracepoint (tcp_retransmit_skb, icmp_send): addresses in network
/// byte order, IPv4 in the first 4 bytes; ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlow {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// IP protocol number (6 = TCP).
    pub proto: u8,
    pub _pad: u8,
}

/// One event, as written into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC; the daemon converts it to wall time.
    pub ts_ns: u64,
    /// Kernel address of the `sk_buff`: joins events about the same packet (drop + ICMP).
    pub skb: u64,
    /// Drops: the kernel text address that freed the packet.
    pub location: u64,
    pub kind: u8,
    pub hook: u8,
    pub flags: u16,
    /// Drops: `enum skb_drop_reason` value of the running kernel (names come from its BTF).
    pub reason: u32,
    pub ifindex: u32,
    /// Network namespace inode of the device (or socket), as in `/proc/<pid>/ns/net`.
    pub netns: u32,
    /// Length of the packet as the kernel holds it (`skb->len`).
    pub len: u32,
    /// Length from the network header on (IP total length as the stack sees it).
    pub l3_len: u32,
    /// Device MTU, or the MTU an ICMP advertises (flag MTU_ADVERTISED); 0 = unknown.
    pub mtu: u32,
    pub gso_size: u16,
    pub gso_segs: u16,
    pub out_ifindex: u32,
    pub out_mtu: u32,
    /// Ethertype of `packet` (host order): 0x0800 or 0x86dd.
    pub l3_proto: u16,
    /// Bytes of `packet` that are valid.
    pub cap_len: u16,
    /// TCP retransmits: socket state; ICMP hooks: type; path-MTU updates: the route's path MTU
    /// before the update (0 = none learned yet).
    pub aux1: u32,
    /// ICMP hooks: code; TCP retransmits: the segment's sequence number (flag HAS_TCP_SEQ).
    pub aux2: u32,
    pub ifname: [u8; IFNAMSIZ],
    pub out_ifname: [u8; IFNAMSIZ],
    /// veth devices: the peer that receives what this end sends (its MTU is the one that
    /// decides in `__dev_forward_skb`).
    pub peer_ifindex: u32,
    pub peer_mtu: u32,
    pub peer_ifname: [u8; IFNAMSIZ],
    pub flow: RawFlow,
    pub packet: [u8; PACKET_CAPTURE],
    /// Drops: the CPU the event came from, and its burst there ([`FoldSlot`]).
    pub cpu: u32,
    pub burst: u32,
    /// Drops: how many drops the kernel folded into the CPU's previous burst (`burst - 1`),
    /// identical to its first event, and the time of the last of them.
    pub prev_folded: u32,
    pub prev_last_ns: u64,
}

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            ts_ns: 0,
            skb: 0,
            location: 0,
            kind: 0,
            hook: 0,
            flags: 0,
            reason: 0,
            ifindex: 0,
            netns: 0,
            len: 0,
            l3_len: 0,
            mtu: 0,
            gso_size: 0,
            gso_segs: 0,
            out_ifindex: 0,
            out_mtu: 0,
            l3_proto: 0,
            cap_len: 0,
            aux1: 0,
            aux2: 0,
            ifname: [0; IFNAMSIZ],
            out_ifname: [0; IFNAMSIZ],
            peer_ifindex: 0,
            peer_mtu: 0,
            peer_ifname: [0; IFNAMSIZ],
            flow: RawFlow {
                saddr: [0; 16],
                daddr: [0; 16],
                sport: 0,
                dport: 0,
                family: 0,
                proto: 0,
                _pad: 0,
            },
            packet: [0; PACKET_CAPTURE],
            cpu: 0,
            burst: 0,
            prev_folded: 0,
            prev_last_ns: 0,
        }
    }
}

/// Words of a [`FoldSlot`] key: what makes two drops the same (reason, place, namespace,
/// device, length, IPv4 addresses, protocol and ports or ICMP type).
pub const FOLD_KEY_WORDS: usize = 6;

/// The drop program's burst on one CPU (`tracer-ebpf/src/fold.rs`): drops identical to the
/// burst's first (which was sent) are only counted here. The next drop sent from the CPU
/// carries the count (`Event::prev_folded`); the daemon reads what is left after detaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldSlot {
    /// Zero: no burst to fold into.
    pub key: [u64; FOLD_KEY_WORDS],
    pub first_ns: u64,
    pub last_ns: u64,
    /// Drops folded into the burst since its first was sent.
    pub folded: u32,
    /// Bursts started on this CPU: the burst of the last event sent.
    pub burst: u32,
}

/// The `log` target of the kernel programs' aya-log records (`--kernel-log`).
pub const KERNEL_LOG_TARGET: &str = "tracer-ebpf";

/// Sentinel for "this kernel has no such field": the kernel program then skips the read.
pub const NO_FIELD: u32 = u32::MAX;

/// Kernel struct field offsets, resolved by the daemon from the running kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) because Rust eBPF cannot carry CO-RE relocations.
/// Every value is a byte offset inside its struct, or [`NO_FIELD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_end: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_refdst: u32,
    pub shinfo_gso_size: u32,
    pub shinfo_gso_segs: u32,
    pub dst_dev: u32,
    pub dev_name: u32,
    pub dev_ifindex: u32,
    pub dev_mtu: u32,
    /// `net_device.nd_net` (a `possible_net_t` holding `struct net *`).
    pub dev_nd_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    /// `sock_common.skc_net` (via `sock.__sk_common`).
    pub sk_net: u32,
    /// A TCP segment's first sequence number: `sk_buff.cb` + `tcp_skb_cb.seq`.
    pub skb_tcp_seq: u32,
}

impl KernelOffsets {
    pub const fn unresolved() -> Self {
        Self {
            skb_len: NO_FIELD,
            skb_dev: NO_FIELD,
            skb_head: NO_FIELD,
            skb_data: NO_FIELD,
            skb_end: NO_FIELD,
            skb_network_header: NO_FIELD,
            skb_protocol: NO_FIELD,
            skb_refdst: NO_FIELD,
            shinfo_gso_size: NO_FIELD,
            shinfo_gso_segs: NO_FIELD,
            dst_dev: NO_FIELD,
            dev_name: NO_FIELD,
            dev_ifindex: NO_FIELD,
            dev_mtu: NO_FIELD,
            dev_nd_net: NO_FIELD,
            net_inum: NO_FIELD,
            sk_net: NO_FIELD,
            skb_tcp_seq: NO_FIELD,
        }
    }
}

/// Byte offsets of classic tracepoint fields, parsed from tracefs `format` files: layouts move
/// between kernels (`skb:kfree_skb` gained `rx_sk` in 6.11).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub kfree_skb_skbaddr: u32,
    pub kfree_skb_location: u32,
    /// [`NO_FIELD`] on kernels without drop reasons (before 5.17).
    pub kfree_skb_reason: u32,
    pub icmp_send_skbaddr: u32,
    pub icmp_send_type: u32,
    pub icmp_send_code: u32,
    pub icmp_send_saddr: u32,
    pub icmp_send_daddr: u32,
    pub icmp_send_sport: u32,
    pub icmp_send_dport: u32,
    pub tcp_rtx_skaddr: u32,
    pub tcp_rtx_skbaddr: u32,
    pub tcp_rtx_state: u32,
    pub tcp_rtx_sport: u32,
    pub tcp_rtx_dport: u32,
    pub tcp_rtx_family: u32,
    pub tcp_rtx_saddr: u32,
    pub tcp_rtx_daddr: u32,
    pub tcp_rtx_saddr_v6: u32,
    pub tcp_rtx_daddr_v6: u32,
}

impl TracepointOffsets {
    pub const fn unresolved() -> Self {
        Self {
            kfree_skb_skbaddr: NO_FIELD,
            kfree_skb_location: NO_FIELD,
            kfree_skb_reason: NO_FIELD,
            icmp_send_skbaddr: NO_FIELD,
            icmp_send_type: NO_FIELD,
            icmp_send_code: NO_FIELD,
            icmp_send_saddr: NO_FIELD,
            icmp_send_daddr: NO_FIELD,
            icmp_send_sport: NO_FIELD,
            icmp_send_dport: NO_FIELD,
            tcp_rtx_skaddr: NO_FIELD,
            tcp_rtx_skbaddr: NO_FIELD,
            tcp_rtx_state: NO_FIELD,
            tcp_rtx_sport: NO_FIELD,
            tcp_rtx_dport: NO_FIELD,
            tcp_rtx_family: NO_FIELD,
            tcp_rtx_saddr: NO_FIELD,
            tcp_rtx_daddr: NO_FIELD,
            tcp_rtx_saddr_v6: NO_FIELD,
            tcp_rtx_daddr_v6: NO_FIELD,
        }
    }
}

/// A kernel text range `[start, end)`: one size-drop site such as `ip_fragment`, from kallsyms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextRange {
    pub start: u64,
    pub end: u64,
}

/// How to find the peer of a veth device: `netdev_priv(dev)` holds `struct veth_priv`, whose
/// `peer` is the other end. A device is a veth when its `ndo_start_xmit` is `veth_xmit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VethOffsets {
    /// Address of `veth_xmit` from kallsyms; 0 = veth unknown on this kernel (skip).
    pub xmit_addr: u64,
    pub dev_netdev_ops: u32,
    pub ops_ndo_start_xmit: u32,
    /// `ALIGN(sizeof(struct net_device), NETDEV_ALIGN)`.
    pub netdev_priv: u32,
    pub priv_peer: u32,
}

impl VethOffsets {
    pub const fn unresolved() -> Self {
        Self {
            xmit_addr: 0,
            dev_netdev_ops: NO_FIELD,
            ops_ndo_start_xmit: NO_FIELD,
            netdev_priv: NO_FIELD,
            priv_peer: NO_FIELD,
        }
    }
}

/// Where `__ip_rt_update_pmtu(struct rtable *rt, struct flowi4 *fl4, u32 mtu)` finds what it
/// is about: the route's current path MTU and the flow (a socket's 5-tuple, or the quoted
/// packet's addresses when no socket is involved).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmtuOffsets {
    /// `rtable.rt_pmtu` is a 31-bit bitfield: the aligned 32-bit word holding it, and its shift.
    pub rt_pmtu_word: u32,
    pub rt_pmtu_shift: u32,
    /// `rtable.dst.dev` (the route's output device).
    pub rt_dev: u32,
    pub fl4_saddr: u32,
    pub fl4_daddr: u32,
    /// `flowi4.uli.ports`: `dport` then `sport`, network order.
    pub fl4_ports: u32,
    /// `flowi4.__fl_common.flowic_proto`.
    pub fl4_proto: u32,
    pub _pad: u32,
}

impl PmtuOffsets {
    pub const fn unresolved() -> Self {
        Self {
            rt_pmtu_word: NO_FIELD,
            rt_pmtu_shift: 0,
            rt_dev: NO_FIELD,
            fl4_saddr: NO_FIELD,
            fl4_daddr: NO_FIELD,
            fl4_ports: NO_FIELD,
            fl4_proto: NO_FIELD,
            _pad: 0,
        }
    }
}

/// Where `__ip6_rt_update_pmtu(struct dst_entry *dst, const struct sock *sk, const struct
/// ipv6hdr *iph, u32 mtu, bool confirm_neigh)` finds the route's MTU and the flow: the quoted
/// packet's header when the ICMP named one (`iph`, wire format), else the socket's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pmtu6Offsets {
    /// `dst_entry.dev` (the route's output device).
    pub dst_dev: u32,
    /// `dst_entry._metrics`: a pointer to the route's `u32` metrics, flags in its low 2 bits.
    pub dst_metrics: u32,
    /// `sock.__sk_common.skc_v6_daddr` and `skc_v6_rcv_saddr`.
    pub sk_daddr: u32,
    pub sk_saddr: u32,
    /// `sock.sk_protocol` (a plain `u16` since 5.6).
    pub sk_protocol: u32,
    pub _pad: u32,
}

impl Pmtu6Offsets {
    pub const fn unresolved() -> Self {
        Self {
            dst_dev: NO_FIELD,
            dst_metrics: NO_FIELD,
            sk_daddr: NO_FIELD,
            sk_saddr: NO_FIELD,
            sk_protocol: NO_FIELD,
            _pad: 0,
        }
    }
}

/// How many network namespaces can have tc hooks at once. tc programs see only an ifindex,
/// and namespaces reuse indexes, so each namespace gets its own copy of the tc programs whose
/// slot says which namespace it serves.
pub const MAX_TC_NETNS: usize = 8;

/// Upper edges (inclusive, IP total length) of the size classes the ingress hook counts arrivals
/// in, per peer; one more class holds what is larger (see the daemon's `event/arrivals.rs`).
pub const ARRIVAL_SIZE_EDGES: [u32; 7] = [576, 1280, 1400, 1450, 1480, 1500, 9000];

/// How many size classes arrivals are counted in: one per edge and one above the last.
pub const ARRIVAL_CLASSES: usize = ARRIVAL_SIZE_EDGES.len() + 1;

/// Entries of the arrivals map (all CPUs share the keys; each has its own counts): at most
/// this many (window generation, device, peer, local address) at once. Per CPU ~4096 × 104 B.
pub const MAX_ARRIVAL_KEYS: u32 = 4096;

/// What the ingress programs count arrivals under: one window (`generation`, the value of the
/// one-element `ARRIVAL_GENERATION` array when the packet was seen), one tc program copy
/// (`slot`: its namespace, `Config::tc_netns`), one device, one outer source and destination.
/// Addresses in network byte order, IPv4 in the first 4 bytes and the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ArrivalKey {
    pub generation: u32,
    pub slot: u32,
    pub ifindex: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// One CPU's counts under an [`ArrivalKey`] (the daemon sums the CPUs). Sizes are IP total
/// lengths; times `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC as of the last tick: a tick's
/// precision, enough for a window's ends) of the first and last arrival this CPU counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArrivalCounts {
    pub packets: u64,
    pub bytes: u64,
    pub max_len: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Packets per size class ([`ARRIVAL_SIZE_EDGES`], inclusive upper edges).
    pub classes: [u64; ARRIVAL_CLASSES],
}

/// The size class of an IP packet of `len` bytes: the first edge it does not exceed.
#[inline(always)]
pub const fn arrival_class(len: u32) -> usize {
    let e = ARRIVAL_SIZE_EDGES;
    // Written out rather than looped: constants the eBPF side compiles to a compare chain.
    if len <= e[0] {
        0
    } else if len <= e[1] {
        1
    } else if len <= e[2] {
        2
    } else if len <= e[3] {
        3
    } else if len <= e[4] {
        4
    } else if len <= e[5] {
        5
    } else if len <= e[6] {
        6
    } else {
        7
    }
}

/// How many size-drop sites the drop filter can hold.
pub const MAX_SIZE_DROP_SITES: usize = 16;

/// Run-time configuration of the kernel programs, written into their `.rodata` at load time so
/// that the verifier sees constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub kernel: KernelOffsets,
    pub tracepoints: TracepointOffsets,
    /// `SKB_DROP_REASON_PKT_TOO_BIG` on the running kernel, [`NO_FIELD`] if it has none.
    pub reason_pkt_too_big: u32,
    /// `SKB_DROP_REASON_NOT_SPECIFIED` (what the size-drop sites other than forwarding free
    /// with), [`NO_FIELD`] on kernels without drop reasons. Any other reason names a cause that
    /// is not size, and the drop program decides on it before reading the packet.
    pub reason_not_specified: u32,
    /// Non-zero: emit every drop, not only size drops (`--all-drops`).
    pub all_drops: u32,
    /// Non-zero: only report events whose network namespace is in the `NETNS_FILTER` map.
    pub filter_netns: u32,
    pub size_drop_site_count: u32,
    /// Non-zero: the ingress programs count arrivals per peer (`--arrivals-interval` not 0).
    pub count_arrivals: u32,
    /// Events waiting in the ring per wake-up of the reader: a power of two (see
    /// [`wakeup_batch`]).
    pub wakeup_events: u32,
    /// Non-zero: the drop program folds floods of identical drops (not with `--no-fold`).
    pub fold_drops: u32,
    /// Non-zero: every program returns at once, its body pruned by the verifier
    /// (`--bench-empty-programs`, benchmarks only): what the hooks cost with nothing done in them.
    pub empty_programs: u32,
    pub size_drop_sites: [TextRange; MAX_SIZE_DROP_SITES],
    pub veth: VethOffsets,
    /// Network namespace inode served by the tc program copy of each slot.
    pub tc_netns: [u32; MAX_TC_NETNS],
    pub pmtu: PmtuOffsets,
    pub pmtu6: Pmtu6Offsets,
}

/// The reader is woken once per this many waiting events, for a ring of `ring_bytes`: a
/// wake-up is an interrupt-work item (on a VM a self-IPI, ~10 µs), so the larger the batch the
/// less a flood pays per event (256: a reported drop under a flood ~1,155 → ~713 ns, bpf_stats), but a batch must come
/// well before the ring is full (a quarter of it) or only the reader's poll would drain it.
pub const fn wakeup_batch(ring_bytes: u64) -> u32 {
    let record = (core::mem::size_of::<Event>() as u64 + 8 + 7) & !7;
    let quarter = ring_bytes / record / 4;
    let mut batch = 256;
    while batch > 1 && batch > quarter {
        batch /= 2;
    }
    batch as u32
}

impl Config {
    pub const fn unresolved() -> Self {
        Self {
            kernel: KernelOffsets::unresolved(),
            tracepoints: TracepointOffsets::unresolved(),
            reason_pkt_too_big: NO_FIELD,
            reason_not_specified: NO_FIELD,
            all_drops: 0,
            filter_netns: 0,
            size_drop_site_count: 0,
            count_arrivals: 0,
            wakeup_events: 32,
            fold_drops: 0,
            empty_programs: 0,
            size_drop_sites: [TextRange { start: 0, end: 0 }; MAX_SIZE_DROP_SITES],
            veth: VethOffsets::unresolved(),
            tc_netns: [0; MAX_TC_NETNS],
            pmtu: PmtuOffsets::unresolved(),
            pmtu6: Pmtu6Offsets::unresolved(),
        }
    }
}

/// Names of the maps and globals both sides agree on.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const NETNS_FILTER: &str = "NETNS_FILTER";
    pub const CONFIG: &str = "TRACER_CONFIG";
    pub const ARRIVALS: &str = "ARRIVALS";
    pub const ARRIVAL_GENERATION: &str = "ARRIVAL_GENERATION";
    pub const FOLDS: &str = "FOLDS";
    pub const FOLD_OFF: &str = "FOLD_OFF";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding-dependent invariants, any bit pattern valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::RawFlow {}
    unsafe impl aya::Pod for super::ArrivalKey {}
    unsafe impl aya::Pod for super::ArrivalCounts {}
    unsafe impl aya::Pod for super::FoldSlot {}
}

// The ring buffer hands out 8-byte aligned slots; both sides rely on this exact size.
const _: () = assert!(core::mem::size_of::<Event>() == 368);
const _: () = assert!(core::mem::size_of::<Config>().is_multiple_of(8));
// No padding in the map's key and value: every byte the kernel hashes is written.
const _: () = assert!(core::mem::size_of::<ArrivalKey>() == 48);
const _: () = assert!(core::mem::size_of::<ArrivalCounts>() == 8 * (5 + ARRIVAL_CLASSES));
const _: () = assert!(ARRIVAL_CLASSES == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_up_batch_is_a_power_of_two_well_inside_the_ring() {
        // The smallest ring (64 KiB) holds 182 events: a batch of 32, under a quarter.
        assert_eq!(wakeup_batch(64 * 1024), 32);
        // The default (4 MiB) and larger: capped at 256.
        assert_eq!(wakeup_batch(4 << 20), 256);
        assert_eq!(wakeup_batch(1 << 30), 256);
        for kib in [64u64, 128, 256, 512, 1024, 4096, 1 << 20] {
            let b = wakeup_batch(kib * 1024) as u64;
            assert!(b.is_power_of_two(), "{kib} KiB: {b}");
            let record = (core::mem::size_of::<Event>() as u64 + 15) & !7;
            assert!(4 * b * record <= kib * 1024, "{kib} KiB: {b}");
        }
    }
}
