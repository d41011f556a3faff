//! Reads of kernel structs (`sk_buff`, `net_device`, `net`, `sock`) at offsets the daemon resolved
//! from the running kernel's BTF. Rust eBPF cannot emit CO-RE relocations, so offsets baked in at
//! build time would be wrong on other kernels (`net_device.mtu` is at 224 on 6.1, 56 on 6.18).
use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::{flags, Event, IFNAMSIZ, NO_FIELD, PACKET_CAPTURE};

use crate::config::conf;

/// `skb->network_header` when unset (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

#[inline(always)]
pub fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == NO_FIELD {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> *const u8 {
    read::<usize>(base, offset).unwrap_or(0) as *const u8
}

/// The network namespace inode of a device, 0 if unknown.
#[inline(always)]
pub fn dev_netns(dev: *const u8) -> u32 {
    let net = read_ptr(dev, conf!(kernel.dev_nd_net));
    read::<u32>(net, conf!(kernel.net_inum)).unwrap_or(0)
}

/// The network namespace inode of a socket, 0 if unknown.
#[inline(always)]
pub fn sock_netns(sk: *const u8) -> u32 {
    let net = read_ptr(sk, conf!(kernel.sk_net));
    read::<u32>(net, conf!(kernel.net_inum)).unwrap_or(0)
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
    skb_basics_of(skb, dev, skb_netns(skb, dev))
}

/// The namespace of a packet: its device's, or for a locally generated packet that has no
/// device yet (dropped in the OUTPUT hook, say) its route's output device's.
#[inline(always)]
pub fn skb_netns(skb: *const u8, dev: *const u8) -> u32 {
    if !dev.is_null() {
        return dev_netns(dev);
    }
    let refdst = read::<usize>(skb, conf!(kernel.skb_refdst)).unwrap_or(0);
    let dst = (refdst & !1usize) as *const u8;
    dev_netns(read_ptr(dst, conf!(kernel.dst_dev)))
}

/// `skb->dev`: read first so that the namespace filter can reject early.
#[inline(always)]
pub fn skb_dev(skb: *const u8) -> *const u8 {
    read_ptr(skb, conf!(kernel.skb_dev))
}

/// The rest of [`skb_basics`] once the device and its namespace are known.
#[inline(always)]
pub fn skb_basics_of(skb: *const u8, dev: *const u8, netns: u32) -> SkbBasics {
    let len = read::<u32>(skb, conf!(kernel.skb_len)).unwrap_or(0);
    let head = read::<usize>(skb, conf!(kernel.skb_head)).unwrap_or(0);
    let data = read::<usize>(skb, conf!(kernel.skb_data)).unwrap_or(0);
    let nh = read::<u16>(skb, conf!(kernel.skb_network_header)).unwrap_or(HEADER_UNSET);
    // Length from the network header on: skb->data may sit at L2 (transmit) or L3.
    let mut l3_len = len;
    if nh != HEADER_UNSET && data >= head {
        let data_off = (data - head) as u32;
        let nh = nh as u32;
        l3_len = (len + data_off).saturating_sub(nh);
    }
    let end = read::<u32>(skb, conf!(kernel.skb_end)).unwrap_or(0);
    let mut gso_size = 0;
    if head != 0 && end != 0 {
        // skb_shinfo(skb) = skb->head + skb->end on 64-bit kernels (end is an offset).
        let shinfo = (head + end as usize) as *const u8;
        gso_size = read::<u16>(shinfo, conf!(kernel.shinfo_gso_size)).unwrap_or(0);
    }
    let mut out_dev: *const u8 = core::ptr::null();
    let refdst = read::<usize>(skb, conf!(kernel.skb_refdst)).unwrap_or(0);
    // The low bit of _skb_refdst is SKB_DST_NOREF.
    let dst = (refdst & !1usize) as *const u8;
    if !dst.is_null() {
        out_dev = read_ptr(dst, conf!(kernel.dst_dev));
    }
    SkbBasics {
        dev,
        netns,
        len,
        l3_len,
        mtu: read::<u32>(dev, conf!(kernel.dev_mtu)).unwrap_or(0),
        out_dev,
        out_mtu: read::<u32>(out_dev, conf!(kernel.dev_mtu)).unwrap_or(0),
        gso_size,
        l3: if head != 0 && nh != HEADER_UNSET {
            (head + nh as usize) as *const u8
        } else {
            core::ptr::null()
        },
    }
}

/// `skb->protocol` in host order (0x0800, 0x86dd, ...).
#[inline(always)]
pub fn l3_proto(skb: *const u8) -> u16 {
    u16::from_be(read::<u16>(skb, conf!(kernel.skb_protocol)).unwrap_or(0))
}

/// Is the packet at `l3` an ICMP frag-needed / ICMPv6 packet-too-big? A dropped one is the
/// classic PMTU black hole: the message that would have fixed things never arrived.
#[inline(always)]
pub fn is_icmp_too_big(l3: *const u8, l3_proto: u16) -> bool {
    if l3.is_null() {
        return false;
    }
    if l3_proto == 0x0800 {
        let Some(vihl) = read::<u8>(l3, 0) else {
            return false;
        };
        if vihl >> 4 != 4 || read::<u8>(l3, 9) != Some(1) {
            return false;
        }
        let l4 = ((vihl & 0x0f) as u32) * 4;
        read::<[u8; 2]>(l3, l4) == Some([3, 4])
    } else if l3_proto == 0x86dd {
        read::<u8>(l3, 6) == Some(58) && read::<u8>(l3, 40) == Some(2)
    } else {
        false
    }
}

/// The veth peer of `dev` (the device that receives what `dev` sends), or null.
#[inline(always)]
pub fn veth_peer(dev: *const u8) -> *const u8 {
    let xmit = conf!(veth.xmit_addr);
    if xmit == 0 || dev.is_null() {
        return core::ptr::null();
    }
    let ops = read_ptr(dev, conf!(veth.dev_netdev_ops));
    if read::<u64>(ops, conf!(veth.ops_ndo_start_xmit)) != Some(xmit) {
        return core::ptr::null();
    }
    let priv_off = conf!(veth.netdev_priv);
    if priv_off == NO_FIELD {
        return core::ptr::null();
    }
    let priv_ = dev.wrapping_add(priv_off as usize);
    read_ptr(priv_, conf!(veth.priv_peer))
}

/// Fill the `peer_*` fields of `ev` from a veth peer.
#[inline(always)]
pub fn fill_peer(ev: &mut Event, peer: *const u8, peer_mtu: u32) {
    if peer.is_null() {
        return;
    }
    ev.flags |= flags::HAS_PEER_DEV;
    ev.peer_mtu = peer_mtu;
    ev.peer_ifindex = read::<u32>(peer, conf!(kernel.dev_ifindex)).unwrap_or(0);
    if let Some(name) = read::<[u8; IFNAMSIZ]>(peer, conf!(kernel.dev_name)) {
        ev.peer_ifname = name;
    }
}

/// Fill device, size and packet-header fields of `ev` from an `sk_buff`.
#[inline(always)]
pub fn fill_from_skb(ev: &mut Event, skb: *const u8, b: &SkbBasics) {
    ev.skb = skb as u64;
    ev.netns = b.netns;
    ev.len = b.len;
    ev.l3_len = b.l3_len;
    ev.mtu = b.mtu;
    ev.gso_size = b.gso_size;
    if b.gso_size != 0 {
        ev.flags |= flags::GSO;
    }
    if !b.dev.is_null() {
        ev.ifindex = read::<u32>(b.dev, conf!(kernel.dev_ifindex)).unwrap_or(0);
        if let Some(name) = read::<[u8; IFNAMSIZ]>(b.dev, conf!(kernel.dev_name)) {
            ev.ifname = name;
        }
    }
    if !b.out_dev.is_null() {
        ev.flags |= flags::HAS_OUT_DEV;
        ev.out_mtu = b.out_mtu;
        ev.out_ifindex = read::<u32>(b.out_dev, conf!(kernel.dev_ifindex)).unwrap_or(0);
        if let Some(name) = read::<[u8; IFNAMSIZ]>(b.out_dev, conf!(kernel.dev_name)) {
            ev.out_ifname = name;
        }
    }
    // The network header was located by skb_basics: no second read of head/network_header.
    ev.l3_proto = l3_proto(skb);
    let src = b.l3;
    if src.is_null() {
        return;
    }
    // Constant-size reads keep the verifier simple; a short linear area makes the big read
    // fail, so fall back to smaller ones (headers of a tunnel packet need ~100 bytes).
    let want = if b.l3_len < PACKET_CAPTURE as u32 {
        b.l3_len as u16
    } else {
        PACKET_CAPTURE as u16
    };
    let dst = ev.packet.as_mut_ptr();
    let got = unsafe {
        if aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst as *mut _,
            PACKET_CAPTURE as u32,
            src as *const _,
        ) == 0
        {
            PACKET_CAPTURE as u16
        } else if aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst as *mut _,
            64,
            src as *const _,
        ) == 0
        {
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
