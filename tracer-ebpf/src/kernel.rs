//! Reads of kernel structs (`sk_buff`, `net_device`, `net`, `sock`) at offsets the daemon resolved
//! from the running kernel's BTF. Rust eBPF cannot emit CO-RE relocations, so offsets baked in at
//! build time would be wrong on other kernels (`net_device.mtu` is at 224 on 6.1, 56 on 6.18).
use aya_ebpf::{cty::c_void, helpers::generated::bpf_probe_read_kernel};
use tracer_common::{flags, Event, NO_FIELD, PACKET_CAPTURE};

use crate::config::conf;

/// `skb->network_header` when unset (`(u16)~0U`).
pub const HEADER_UNSET: u16 = 0xffff;

/// `T` at `base + offset`, or zero when that cannot be read. No branch on the outcome:
/// `bpf_probe_read_kernel` zeroes its destination when the read faults (a null `base` faults),
/// so the verifier has no extra path to walk per read. Older verifiers (6.1) multiply paths
/// quickly and refuse a program past 1M walked instructions.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, offset: u32) -> T {
    let mut value = core::mem::MaybeUninit::<T>::zeroed();
    // A constant: the verifier prunes whichever side this kernel does not need.
    if offset != NO_FIELD {
        read_into(value.as_mut_ptr(), base, offset);
    }
    unsafe { value.assume_init() }
}

/// Read `T` at `base + offset` straight into `dst` (zeroed when the read faults).
#[inline(always)]
pub fn read_into<T>(dst: *mut T, base: *const u8, offset: u32) {
    if offset == NO_FIELD {
        return;
    }
    unsafe {
        bpf_probe_read_kernel(
            dst as *mut c_void,
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset as usize) as *const c_void,
        );
    }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> *const u8 {
    read::<usize>(base, offset) as *const u8
}

/// The network namespace inode of a device, 0 if unknown.
#[inline(always)]
pub fn dev_netns(dev: *const u8) -> u32 {
    let net = read_ptr(dev, conf!(kernel.dev_nd_net));
    read::<u32>(net, conf!(kernel.net_inum))
}

/// The network namespace inode of a socket, 0 if unknown.
#[inline(always)]
pub fn sock_netns(sk: *const u8) -> u32 {
    let net = read_ptr(sk, conf!(kernel.sk_net));
    read::<u32>(net, conf!(kernel.net_inum))
}

/// What the drop filter needs before deciding to emit: cheap reads only.
pub struct SkbBasics {
    pub dev: *const u8,
    pub netns: u32,
    pub len: u32,
    pub l3_len: u32,
    pub mtu: u32,
    pub out_dev: *const u8,
    pub out_mtu: u32,
    pub gso_size: u16,
    /// Start of the network header in kernel memory, or null when unset.
    pub l3: *const u8,
}

#[inline(always)]
pub fn skb_basics(skb: *const u8) -> SkbBasics {
    let dev = skb_dev(skb);
    skb_basics_of::<false>(skb, dev, skb_netns(skb, dev))
}

/// The route's output device of a packet (`skb_dst(skb)->dev`), or null.
#[inline(always)]
fn skb_dst_dev<const TYPED: bool>(skb: *const u8) -> *const u8 {
    // The low bit of _skb_refdst is SKB_DST_NOREF. No dst: the read at null faults, null.
    let dst = (field::<usize, TYPED>(skb, conf!(kernel.skb_refdst)) & !1usize) as *const u8;
    read_ptr(dst, conf!(kernel.dst_dev))
}

/// The namespace of a packet: its device's, or for a locally generated packet that has no
/// device yet (dropped in the OUTPUT hook, say) its route's output device's.
#[inline(always)]
pub fn skb_netns(skb: *const u8, dev: *const u8) -> u32 {
    let netns = dev_netns(dev);
    if netns != 0 {
        return netns;
    }
    dev_netns(skb_dst_dev::<false>(skb))
}

/// `skb->dev`: read first so that the namespace filter can reject early.
#[inline(always)]
pub fn skb_dev(skb: *const u8) -> *const u8 {
    read_ptr(skb, conf!(kernel.skb_dev))
}

/// The rest of [`skb_basics`] once the device and its namespace are known. Reads of absent
/// things (no device, no dst, no header) fault and give zero: no null checks, hence no paths.
/// `TYPED`: `skb` and `dev` are BTF-typed (a `tp_btf` argument and what was loaded from it).
#[inline(always)]
pub fn skb_basics_of<const TYPED: bool>(skb: *const u8, dev: *const u8, netns: u32) -> SkbBasics {
    let len = field::<u32, TYPED>(skb, conf!(kernel.skb_len));
    let head = field::<usize, TYPED>(skb, conf!(kernel.skb_head));
    let data = field::<usize, TYPED>(skb, conf!(kernel.skb_data));
    let nh = field::<u16, TYPED>(skb, conf!(kernel.skb_network_header));
    // Length from the network header on: skb->data may sit at L2 (transmit) or L3.
    let mut l3_len = len;
    let mut l3: *const u8 = core::ptr::null();
    if nh != HEADER_UNSET {
        l3 = head.wrapping_add(nh as usize) as *const u8;
        let data_off = data.wrapping_sub(head) as u32;
        l3_len = (len + data_off).saturating_sub(nh as u32);
    }
    // skb_shinfo(skb) = skb->head + skb->end on 64-bit kernels (end is an offset).
    let end = field::<u32, TYPED>(skb, conf!(kernel.skb_end));
    let shinfo = head.wrapping_add(end as usize) as *const u8;
    let out_dev = skb_dst_dev::<TYPED>(skb);
    SkbBasics {
        dev,
        netns,
        len,
        l3_len,
        mtu: field::<u32, TYPED>(dev, conf!(kernel.dev_mtu)),
        out_dev,
        out_mtu: read::<u32>(out_dev, conf!(kernel.dev_mtu)),
        gso_size: read::<u16>(shinfo, conf!(kernel.shinfo_gso_size)),
        l3,
    }
}

/// `skb->protocol` in host order (0x0800, 0x86dd, ...). `TYPED`: see [`field`].
#[inline(always)]
pub fn l3_proto<const TYPED: bool>(skb: *const u8) -> u16 {
    u16::from_be(field::<u16, TYPED>(skb, conf!(kernel.skb_protocol)))
}

/// Is the packet at `l3` an ICMP frag-needed / ICMPv6 packet-too-big? A dropped one is the
/// classic PMTU black hole: the message that would have fixed things never arrived.
#[inline(always)]
pub fn is_icmp_too_big(l3: *const u8, l3_proto: u16) -> bool {
    // One read of the header and the ICMP type and code where they usually are: a helper call
    // per read is what this costs every drop that names another cause.
    if l3_proto == 0x0800 {
        let h = read::<[u8; 24]>(l3, 0);
        if h[0] >> 4 != 4 || h[9] != 1 {
            return false;
        }
        let l4 = ((h[0] & 0x0f) as u32) * 4;
        if l4 == 20 {
            h[20] == 3 && h[21] == 4
        } else {
            read::<[u8; 2]>(l3, l4) == [3, 4]
        }
    } else if l3_proto == 0x86dd {
        let h = read::<[u8; 41]>(l3, 0);
        h[6] == 58 && h[40] == 2
    } else {
        false
    }
}

/// `T` at `base + offset` by a plain load, for a `base` the verifier knows by its BTF type (a
/// `tp_btf` argument, or a struct pointer loaded from one: the verifier types those too): it
/// checks the access against the struct at load time (the offset is a constant of `.rodata`)
/// and makes the load fault-safe, at the cost of a load instead of a helper call. Never for a
/// pointer made from a number (the route's tagged word, a private area past a struct).
#[inline(always)]
pub fn load_typed<T: Copy + Default>(base: *const u8, offset: u32) -> T {
    if offset == NO_FIELD {
        return T::default();
    }
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize) as *const T) }
}

/// A field of a struct the verifier knows by BTF when `TYPED` (see [`load_typed`]), else by a
/// helper call ([`read`]): one body for the `tp_btf` program and its classic fallback.
#[inline(always)]
pub fn field<T: Copy + Default, const TYPED: bool>(base: *const u8, offset: u32) -> T {
    if TYPED {
        load_typed::<T>(base, offset)
    } else {
        read::<T>(base, offset)
    }
}

/// `skb->dev` and the packet's namespace (see [`skb_netns`]) for an `sk_buff` typed by BTF: the
/// device and its namespace by plain loads; the route's device (a tagged word, not a typed
/// pointer) by helper calls, only when the packet has no device.
#[inline(always)]
pub fn typed_skb_dev_netns(skb: *const u8) -> (*const u8, u32) {
    let dev = load_typed::<usize>(skb, conf!(kernel.skb_dev)) as *const u8;
    let net = load_typed::<usize>(dev, conf!(kernel.dev_nd_net)) as *const u8;
    let netns = load_typed::<u32>(net, conf!(kernel.net_inum));
    if netns != 0 {
        return (dev, netns);
    }
    (dev, dev_netns(skb_dst_dev::<false>(skb)))
}

/// Is the packet an ICMP too-big, read from the `sk_buff` alone (its protocol and network
/// header): the few reads a drop with an unrelated reason pays. `TYPED`: see [`field`]; the
/// packet bytes are one helper call either way.
#[inline(always)]
pub fn skb_is_icmp_too_big<const TYPED: bool>(skb: *const u8) -> bool {
    let proto = l3_proto::<TYPED>(skb);
    if proto != 0x0800 && proto != 0x86dd {
        return false;
    }
    let nh = field::<u16, TYPED>(skb, conf!(kernel.skb_network_header));
    if nh == HEADER_UNSET {
        return false;
    }
    let head = field::<usize, TYPED>(skb, conf!(kernel.skb_head));
    is_icmp_too_big(head.wrapping_add(nh as usize) as *const u8, proto)
}

/// If `dev` is a veth, fill the `peer_*` fields of `ev` from its peer (the device that receives
/// what `dev` sends, whose MTU decides in `__dev_forward_skb`).
#[inline(always)]
pub fn fill_veth_peer<const TYPED: bool>(ev: &mut Event, dev: *const u8) {
    let xmit = conf!(veth.xmit_addr);
    let priv_off = conf!(veth.netdev_priv);
    // Constants: this whole function is pruned on kernels without a veth to look at.
    if xmit == 0 || priv_off == NO_FIELD {
        return;
    }
    let ops = field::<usize, TYPED>(dev, conf!(veth.dev_netdev_ops)) as *const u8;
    if field::<u64, TYPED>(ops, conf!(veth.ops_ndo_start_xmit)) != xmit {
        return;
    }
    let peer = read_ptr(dev.wrapping_add(priv_off as usize), conf!(veth.priv_peer));
    ev.flags |= flags::HAS_PEER_DEV;
    read_into(&mut ev.peer_mtu, peer, conf!(kernel.dev_mtu));
    read_into(&mut ev.peer_ifindex, peer, conf!(kernel.dev_ifindex));
    read_into(&mut ev.peer_ifname, peer, conf!(kernel.dev_name));
}

/// Fill device, size and packet-header fields of `ev` from an `sk_buff`.
#[inline(always)]
pub fn fill_from_skb<const TYPED: bool>(ev: &mut Event, skb: *const u8, b: &SkbBasics) {
    ev.skb = skb as u64;
    ev.netns = b.netns;
    ev.len = b.len;
    ev.l3_len = b.l3_len;
    ev.mtu = b.mtu;
    ev.gso_size = b.gso_size;
    if b.gso_size != 0 {
        ev.flags |= flags::GSO;
    }
    ev.ifindex = field::<u32, TYPED>(b.dev, conf!(kernel.dev_ifindex));
    read_into(&mut ev.ifname, b.dev, conf!(kernel.dev_name));
    if !b.out_dev.is_null() {
        ev.flags |= flags::HAS_OUT_DEV;
        ev.out_mtu = b.out_mtu;
        read_into(&mut ev.out_ifindex, b.out_dev, conf!(kernel.dev_ifindex));
        read_into(&mut ev.out_ifname, b.out_dev, conf!(kernel.dev_name));
    }
    // The network header was located by skb_basics: no second read of head/network_header.
    ev.l3_proto = l3_proto::<TYPED>(skb);
    let src = b.l3;
    // Constant-size reads keep the verifier simple; a short linear area makes the big read
    // fail, so fall back to smaller ones (headers of a tunnel packet need ~100 bytes). No
    // header (null `src`): both reads fault, nothing is captured.
    let want = if b.l3_len < PACKET_CAPTURE as u32 {
        b.l3_len as u16
    } else {
        PACKET_CAPTURE as u16
    };
    let dst = ev.packet.as_mut_ptr();
    let got = unsafe {
        if bpf_probe_read_kernel(dst as *mut _, PACKET_CAPTURE as u32, src as *const _) == 0 {
            PACKET_CAPTURE as u16
        } else if bpf_probe_read_kernel(dst as *mut _, 64, src as *const _) == 0 {
            64
        } else {
            0
        }
    };
    if got > 0 {
        ev.flags |= flags::HAS_PACKET;
        ev.cap_len = if want < got { want } else { got };
    }
}

/// Read a classic tracepoint field at an offset parsed from its tracefs `format` file.
#[inline(always)]
pub fn tp_field<T>(ctx: &aya_ebpf::programs::TracePointContext, offset: u32) -> Option<T> {
    if offset == NO_FIELD {
        return None;
    }
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}
