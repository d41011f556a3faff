//! Packet header decoding: from the bytes the kernel captured (at most a few hundred, often cut
//! mid-header) to the pod flow, its tunnel header and any ICMP too-big message.
//!
//! Everything here reads through bounds-checked accessors ([`be16`], [`slice`], ...): the input
//! is whatever the kernel copied, possibly truncated or garbage, and a decoder must answer "not
//! known" (`None`) rather than guess or panic. A field is only reported when every byte it is made
//! of is present, and a flow is only reported when it cannot change with more bytes (e.g. a UDP
//! datagram whose destination port is not yet known might turn out to be VXLAN: no flow then).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::event::{Decoded, Encap, Flow, IcmpTooBig, Outer};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_DCCP: u8 = 33;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// VXLAN destination ports: IANA's, and the Linux kernel's/flannel's default.
pub const VXLAN_PORTS: [u16; 2] = [4789, 8472];
const VXLAN_HDR_LEN: usize = 8;
/// VXLAN flags byte: "I" = the VNI field is valid. Linux drops VXLAN packets without it, so a
/// datagram to a VXLAN port without it is not treated as VXLAN.
const VXLAN_FLAG_I: u8 = 0x08;

/// IPv6 extension headers skipped before giving up: real packets carry two or three at most.
const MAX_EXT_HEADERS: usize = 8;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;
/// An ICMP error's quoted packet starts after the 8-byte ICMP header.
const ICMP_HDR_LEN: usize = 8;

/// Decode bytes that start at the network header; `ethertype` says which (IPv4 0x0800 or IPv6
/// 0x86DD; anything else decodes to nothing).
pub fn decode(ethertype: u16, bytes: &[u8]) -> Decoded {
    decode_l3(
        ethertype,
        bytes,
        Budget {
            tunnels: 1,
            quote: true,
        },
    )
}

/// Decode a frame that starts at an Ethernet header (up to two VLAN tags are skipped).
pub fn decode_ethernet(bytes: &[u8]) -> Decoded {
    match ethernet_payload(bytes) {
        Some((ethertype, payload)) => decode(ethertype, payload),
        None => Decoded::default(),
    }
}

/// How many leading bytes of a packet that starts at its network header are headers: through
/// the innermost transport header, following one tunnel and one ICMP quote as [`decode`] does
/// (so a VXLAN packet keeps outer IP, UDP, VXLAN, inner Ethernet, inner IP and inner TCP, and an
/// ICMP too-big keeps the quoted packet's headers), never more than `bytes.len()`. What follows
/// is payload, left out of `--pcap` by default. Bytes that do not parse as IP are all kept: the
/// capture is headers-sized anyway ([`tracer_common::PACKET_CAPTURE`]).
pub fn headers_len(ethertype: u16, bytes: &[u8]) -> usize {
    l3_headers_len(
        ethertype,
        bytes,
        Budget {
            tunnels: 1,
            quote: true,
        },
    )
    .unwrap_or(bytes.len())
    .min(bytes.len())
}

fn l3_headers_len(ethertype: u16, b: &[u8], budget: Budget) -> Option<usize> {
    let ip = parse_ip(ethertype, b)?;
    let Some(proto) = ip.proto else {
        return Some(b.len()); // cut inside the extension headers: all of it is header
    };
    if !ip.has_l4 {
        return Some(ip.header_len); // a later fragment: the rest is payload
    }
    let l4 = ip.payload;
    // A nested packet whose headers cannot be told apart is kept whole (it is within the capture).
    let nested = |ethertype: u16, inner: &[u8], budget: Budget| {
        l3_headers_len(ethertype, inner, budget).unwrap_or(inner.len())
    };
    let inner_budget = Budget {
        tunnels: budget.tunnels.saturating_sub(1),
        quote: budget.quote,
    };
    let transport = match proto {
        IPPROTO_IPIP if budget.tunnels > 0 => nested(ETH_P_IP, l4, inner_budget),
        IPPROTO_IPV6 if budget.tunnels > 0 => nested(ETH_P_IPV6, l4, inner_budget),
        IPPROTO_UDP => {
            let vx = rest(l4, 8);
            let vxlan = budget.tunnels > 0
                && be16(l4, 2).is_some_and(|p| VXLAN_PORTS.contains(&p))
                && !(byte(vx, 0).is_some_and(|f| f & VXLAN_FLAG_I == 0)
                    && vx.len() >= VXLAN_HDR_LEN);
            if vxlan {
                let frame = rest(vx, VXLAN_HDR_LEN);
                8 + VXLAN_HDR_LEN
                    + match ethernet_payload(frame) {
                        Some((ethertype, inner)) => {
                            (frame.len() - inner.len()) + nested(ethertype, inner, inner_budget)
                        }
                        None => frame.len(),
                    }
            } else {
                8
            }
        }
        // Data offset in 32-bit words; what is not captured is clipped below.
        IPPROTO_TCP => byte(l4, 12).map_or(l4.len(), |d| usize::from(d >> 4).max(5) * 4),
        IPPROTO_DCCP => byte(l4, 4).map_or(l4.len(), |d| usize::from(d).max(3) * 4),
        IPPROTO_SCTP => 12,
        IPPROTO_UDPLITE => 8,
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == ip.v6 => {
            let too_big = match (byte(l4, 0), byte(l4, 1)) {
                (Some(ICMP_DEST_UNREACH), Some(ICMP_FRAG_NEEDED)) => proto == IPPROTO_ICMP,
                (Some(ICMPV6_PKT_TOOBIG), _) => proto == IPPROTO_ICMPV6,
                _ => false,
            };
            if too_big && budget.quote {
                let quote = rest(l4, ICMP_HDR_LEN);
                let family = if ip.v6 { ETH_P_IPV6 } else { ETH_P_IP };
                let quote_budget = Budget {
                    tunnels: budget.tunnels,
                    quote: false,
                };
                ICMP_HDR_LEN + nested(family, quote, quote_budget)
            } else {
                ICMP_HDR_LEN
            }
        }
        _ => 0,
    };
    Some(ip.header_len + transport)
}

/// How much nesting is left. Only one tunnel level is unwrapped, and only one ICMP quote is
/// followed, which bounds the work at three IP headers (ICMP → quoted outer → quoted inner) and
/// keeps a crafted packet from nesting us deeper.
#[derive(Clone, Copy)]
struct Budget {
    tunnels: u8,
    quote: bool,
}

// ---- bounds-checked readers -------------------------------------------------------------------

fn byte(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    array::<2>(b, at).map(u16::from_be_bytes)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    array::<4>(b, at).map(u32::from_be_bytes)
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// `b[from..]`, or empty when `from` is past the end.
fn rest(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or(&[])
}

// ---- link layer -------------------------------------------------------------------------------

/// Ethertype and payload of an Ethernet frame, skipping up to two VLAN tags (802.1ad + 802.1Q).
fn ethernet_payload(frame: &[u8]) -> Option<(u16, &[u8])> {
    let mut ethertype = be16(frame, 12)?;
    let mut at = 14;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(frame, at + 2)?;
        at += 4;
    }
    Some((ethertype, rest(frame, at)))
}

// ---- network layer ----------------------------------------------------------------------------

/// What the IP header says, with the payload cut to what both the header and the capture allow.
struct IpHeader<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// Transport protocol after IPv6 extension headers; `None` when those were cut off.
    proto: Option<u8>,
    /// Whether this packet carries the transport header: false for non-first fragments.
    has_l4: bool,
    payload: &'a [u8],
    /// Where `payload` starts in the bytes parsed: the IP header and any extension headers.
    header_len: usize,
    /// Total length as the header says (IPv6: payload length + 40).
    total_len: u32,
    v6: bool,
}

fn parse_ip(ethertype: u16, b: &[u8]) -> Option<IpHeader<'_>> {
    match ethertype {
        ETH_P_IP => parse_ipv4(b),
        ETH_P_IPV6 => parse_ipv6(b),
        _ => None,
    }
}

fn parse_ipv4(b: &[u8]) -> Option<IpHeader<'_>> {
    let ver_ihl = byte(b, 0)?;
    let hdr_len = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || hdr_len < 20 {
        return None;
    }
    let total_len = be16(b, 2)?;
    let frag = be16(b, 6)?;
    let proto = byte(b, 9)?;
    let src = Ipv4Addr::from(array::<4>(b, 12)?);
    let dst = Ipv4Addr::from(array::<4>(b, 16)?);
    // The header's length bounds the payload (Ethernet padding follows short packets), except
    // when it is smaller than the header itself: BIG TCP (GSO packets over 64 KiB) sets 0.
    let end = if usize::from(total_len) >= hdr_len {
        usize::from(total_len).min(b.len())
    } else {
        b.len()
    };
    Some(IpHeader {
        src: src.into(),
        dst: dst.into(),
        proto: Some(proto),
        // Only the fragment at offset 0 starts with the transport header.
        has_l4: frag & 0x1fff == 0,
        payload: b.get(hdr_len..end).unwrap_or(&[]),
        header_len: hdr_len,
        total_len: u32::from(total_len),
        v6: false,
    })
}

fn parse_ipv6(b: &[u8]) -> Option<IpHeader<'_>> {
    if byte(b, 0)? >> 4 != 6 {
        return None;
    }
    let payload_len = be16(b, 4)?;
    let mut next = byte(b, 6)?;
    let src = Ipv6Addr::from(array::<16>(b, 8)?);
    let dst = Ipv6Addr::from(array::<16>(b, 24)?);
    // Payload length 0 means a jumbogram (BIG TCP): the capture is the only bound then.
    let end = if payload_len == 0 {
        b.len()
    } else {
        (40 + usize::from(payload_len)).min(b.len())
    };
    let body = b.get(40..end).unwrap_or(&[]);
    let mut at = 0usize;
    let mut has_l4 = true;
    let mut proto = None;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                (usize::from(byte(body, at + 1).unwrap_or(0)) + 1) * 8
            }
            IPPROTO_FRAGMENT => {
                if let Some(off) = be16(body, at + 2) {
                    has_l4 = off >> 3 == 0;
                }
                8
            }
            IPPROTO_AH => (usize::from(byte(body, at + 1).unwrap_or(0)) + 2) * 4,
            _ => {
                proto = Some(next);
                break;
            }
        };
        // The whole extension header must be there, or the next one cannot be found.
        if body.len() < at + len {
            break;
        }
        let Some(following) = byte(body, at) else {
            break;
        };
        next = following;
        at += len;
        if !has_l4 {
            // Non-first fragment: what follows is the middle of some payload, but its protocol
            // is the fragment header's next header.
            proto = Some(next);
            break;
        }
    }
    Some(IpHeader {
        src: src.into(),
        dst: dst.into(),
        proto,
        has_l4,
        payload: rest(body, at),
        header_len: 40 + at,
        total_len: u32::from(payload_len) + 40,
        v6: true,
    })
}

fn flow(ip: &IpHeader<'_>, proto: u8, sport: Option<u16>, dport: Option<u16>) -> Flow {
    Flow {
        proto,
        src: ip.src,
        sport,
        dst: ip.dst,
        dport,
    }
}

fn decode_l3(ethertype: u16, bytes: &[u8], budget: Budget) -> Decoded {
    let Some(ip) = parse_ip(ethertype, bytes) else {
        return Decoded::default();
    };
    let mut d = Decoded {
        ip_len: Some(ip.total_len),
        ..Decoded::default()
    };
    let Some(proto) = ip.proto else {
        return d; // extension headers cut off: addresses alone are not a flow
    };
    let tunnel_inner = match proto {
        IPPROTO_IPIP => Some(ETH_P_IP),
        IPPROTO_IPV6 => Some(ETH_P_IPV6),
        _ => None,
    };
    if let Some(inner) = tunnel_inner.filter(|_| budget.tunnels > 0) {
        // IPIP / SIT / ip6tnl: the flow is the inner packet's, addresses above it are the nodes'.
        let outer = Outer {
            src: ip.src,
            dst: ip.dst,
            encap: Encap::Ipip,
            vni: None,
        };
        if ip.has_l4 {
            unwrap_tunnel(&mut d, outer, inner, ip.payload, budget);
        } else {
            d.outer = Some(outer); // non-first fragment of the outer packet: no inner header
        }
        return d;
    }
    if !ip.has_l4 {
        d.flow = Some(flow(&ip, proto, None, None));
        return d;
    }
    let l4 = ip.payload;
    match proto {
        IPPROTO_UDP => {
            // Without the destination port we cannot tell VXLAN from plain UDP: no flow yet.
            let (Some(sport), Some(dport)) = (be16(l4, 0), be16(l4, 2)) else {
                return d;
            };
            if budget.tunnels > 0 && VXLAN_PORTS.contains(&dport) {
                let vx = rest(l4, 8);
                // A complete VXLAN header without the I flag is some other UDP service on that
                // port; an incomplete one is presumed VXLAN (the port says so) but yields no flow.
                let not_vxlan =
                    byte(vx, 0).is_some_and(|f| f & VXLAN_FLAG_I == 0) && vx.len() >= VXLAN_HDR_LEN;
                if !not_vxlan {
                    decode_vxlan(&mut d, &ip, vx, budget);
                    return d;
                }
            }
            d.flow = Some(flow(&ip, proto, Some(sport), Some(dport)));
        }
        IPPROTO_TCP | IPPROTO_SCTP | IPPROTO_DCCP | IPPROTO_UDPLITE => {
            // Ports lead all of these headers; take each one that is fully there.
            d.flow = Some(flow(&ip, proto, be16(l4, 0), be16(l4, 2)));
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == ip.v6 => {
            decode_icmp(&mut d, &ip, proto, l4, budget);
        }
        _ => d.flow = Some(flow(&ip, proto, None, None)),
    }
    d
}

/// Fill `d` from the inner packet of a tunnel whose outer header is `outer`.
fn unwrap_tunnel(d: &mut Decoded, outer: Outer, ethertype: u16, inner: &[u8], budget: Budget) {
    let inner = decode_l3(
        ethertype,
        inner,
        Budget {
            tunnels: budget.tunnels.saturating_sub(1),
            quote: budget.quote,
        },
    );
    // The inner decode has no tunnel budget left, so it has no `outer` of its own to lose.
    d.flow = inner.flow;
    d.icmp = inner.icmp;
    d.outer = Some(outer);
}

fn decode_vxlan(d: &mut Decoded, ip: &IpHeader<'_>, vx: &[u8], budget: Budget) {
    let outer = Outer {
        src: ip.src,
        dst: ip.dst,
        encap: Encap::Vxlan,
        // The VNI is the top 24 bits of the second word.
        vni: be32(vx, 4).map(|w| w >> 8),
    };
    match ethernet_payload(rest(vx, VXLAN_HDR_LEN)) {
        Some((ethertype, inner)) => unwrap_tunnel(d, outer, ethertype, inner, budget),
        None => d.outer = Some(outer),
    }
}

fn decode_icmp(d: &mut Decoded, ip: &IpHeader<'_>, proto: u8, icmp: &[u8], budget: Budget) {
    if !budget.quote {
        // Inside a quote, any ICMP message is just the flow it is; quotes are not followed twice.
        d.flow = Some(flow(ip, proto, None, None));
        return;
    }
    let (Some(ty), Some(code)) = (byte(icmp, 0), byte(icmp, 1)) else {
        // Type unknown: it could be a too-big message, whose flow is the quoted packet's.
        return;
    };
    let (too_big, mtu) = if proto == IPPROTO_ICMP {
        (
            ty == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED,
            be16(icmp, 6).map(u32::from),
        )
    } else {
        (ty == ICMPV6_PKT_TOOBIG, be32(icmp, 4))
    };
    if !too_big {
        // Any other ICMP message: the flow is the message itself.
        d.flow = Some(flow(ip, proto, None, None));
        return;
    }
    d.icmp = Some(IcmpTooBig {
        from: Some(ip.src),
        to: ip.dst,
        icmp_type: ty,
        code,
        // Routers predating RFC 1191 send 0: "unknown", not an MTU of zero.
        mtu: mtu.filter(|&m| m != 0),
    });
    // The quote is the head of the packet that did not fit, in the same IP family; decode it
    // like any packet (so an IPIP/VXLAN quote yields its pod flow and tunnel), but no deeper quote.
    let quoted = decode_l3(
        if ip.v6 { ETH_P_IPV6 } else { ETH_P_IP },
        rest(icmp, ICMP_HDR_LEN),
        Budget {
            tunnels: budget.tunnels,
            quote: false,
        },
    );
    d.flow = quoted.flow;
    d.outer = quoted.outer;
}

pub mod synth;

#[cfg(test)]
mod tests {
    use super::*;

    use super::synth::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp_flow(src: &str, sport: u16, dst: &str, dport: u16) -> Option<Flow> {
        Some(Flow {
            proto: 6,
            src: ip(src),
            sport: Some(sport),
            dst: ip(dst),
            dport: Some(dport),
        })
    }

    // ---- samples: (name, ethertype, bytes), reused by the truncation and fuzz tests ----

    fn pod_tcp_v4() -> Vec<u8> {
        ipv4("10.0.1.2", "10.0.2.2", 6, &tcp(41234, 6379, 1460))
    }
    fn ipip_v4() -> Vec<u8> {
        ipv4("192.168.0.1", "192.168.0.2", 4, &pod_tcp_v4())
    }
    fn vxlan_v4(port: u16, vni: u32) -> Vec<u8> {
        let frame = ethernet(ETH_P_IP, None, &pod_tcp_v4());
        ipv4(
            "192.168.0.1",
            "192.168.0.2",
            17,
            &udp(51000, port, &vxlan(vni, &frame)),
        )
    }
    fn pod_tcp_v6() -> Vec<u8> {
        ipv6("fd00::1:2", "fd00::2:2", 6, &tcp(41234, 443, 1200))
    }
    fn ipv6_ext() -> Vec<u8> {
        // hop-by-hop (8) → routing (24: len 2) → dest-opts (8) → AH (16: len 2) → TCP
        let mut ext = vec![43, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[60, 2, 0, 0]);
        ext.resize(8 + 24, 0);
        ext.extend_from_slice(&[51, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[6, 2, 0, 0]);
        ext.resize(8 + 24 + 8 + 16, 0x11);
        ext.extend_from_slice(&tcp(5555, 80, 100));
        ipv6("2001:db8::1", "2001:db8::2", 0, &ext)
    }
    fn samples() -> Vec<(&'static str, u16, Vec<u8>)> {
        let quote_tcp = pod_tcp_v4()[..20 + 28].to_vec(); // Linux quotes more, RFC 792 at least 8 B
        let quote_ipip = ipip_v4()[..20 + 20 + 20].to_vec();
        let vxlan_over_v6 = ipv6(
            "fd00::a",
            "fd00::b",
            17,
            &udp(
                40000,
                4789,
                &vxlan(7, &ethernet(ETH_P_IP, Some(100), &pod_tcp_v4())),
            ),
        );
        let too_big_v6 = ipv6(
            "fd00::ff",
            "fd00::1:2",
            58,
            &icmp(2, 0, 1280u32.to_be_bytes(), &pod_tcp_v6()[..1232]),
        );
        vec![
            ("tcp v4", ETH_P_IP, pod_tcp_v4()),
            (
                "tcp v4 options",
                ETH_P_IP,
                ipv4_opts(
                    "10.0.1.2",
                    "10.0.2.2",
                    6,
                    &[1, 1, 1, 0, 7, 4, 0, 0],
                    &tcp(1, 2, 3),
                ),
            ),
            ("tcp v6", ETH_P_IPV6, pod_tcp_v6()),
            ("v6 ext headers", ETH_P_IPV6, ipv6_ext()),
            ("ipip", ETH_P_IP, ipip_v4()),
            ("vxlan 4789", ETH_P_IP, vxlan_v4(4789, 1)),
            ("vxlan 8472", ETH_P_IP, vxlan_v4(8472, 0x00ab_cdef)),
            ("vxlan over v6", ETH_P_IPV6, vxlan_over_v6),
            (
                "frag-needed tcp",
                ETH_P_IP,
                ipv4("10.0.0.254", "10.0.1.2", 1, &frag_needed(1430, &quote_tcp)),
            ),
            (
                "frag-needed ipip",
                ETH_P_IP,
                ipv4(
                    "192.168.0.254",
                    "192.168.0.1",
                    1,
                    &frag_needed(1430, &quote_ipip),
                ),
            ),
            ("too-big v6", ETH_P_IPV6, too_big_v6),
            (
                "echo",
                ETH_P_IP,
                ipv4(
                    "10.0.1.2",
                    "10.0.2.2",
                    1,
                    &icmp(8, 0, [0, 1, 0, 1], &[0; 56]),
                ),
            ),
            (
                "udp dns",
                ETH_P_IP,
                ipv4("10.0.1.2", "10.96.0.10", 17, &udp(5353, 53, &[1; 30])),
            ),
        ]
    }

    // ---- plain packets ----

    #[test]
    fn headers_len_stops_after_the_innermost_transport_header() {
        let payload = [0xAAu8; 60];
        // Plain TCP (20-byte header, no options) over IPv4 with options (24).
        let mut seg = tcp(41234, 6379, 0);
        seg.extend_from_slice(&payload);
        let p = ipv4_opts("10.0.1.2", "10.0.2.2", 6, &[1, 1, 1, 1], &seg);
        assert_eq!(headers_len(ETH_P_IP, &p), 24 + 20);
        // TCP options count as header (data offset 8 words = 32 bytes).
        let mut opts = tcp(1, 2, 0);
        opts[12] = 8 << 4;
        opts.extend_from_slice(&[1u8; 12]);
        opts.extend_from_slice(&payload);
        assert_eq!(
            headers_len(ETH_P_IP, &ipv4("10.0.1.2", "10.0.2.2", 6, &opts)),
            52
        );
        // VXLAN: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 + inner IPv4 20 + TCP 20.
        let inner = ipv4("10.0.1.2", "10.0.2.2", 6, &seg);
        let vx = ipv4(
            "192.168.0.1",
            "192.168.0.2",
            17,
            &udp(50000, 4789, &vxlan(1, &ethernet(ETH_P_IP, None, &inner))),
        );
        assert_eq!(headers_len(ETH_P_IP, &vx), 20 + 8 + 8 + 14 + 20 + 20);
        // With a VLAN tag on the inner frame, over IPv6.
        let vx6 = ipv6(
            "fd00::1",
            "fd00::2",
            17,
            &udp(50000, 8472, &vxlan(1, &ethernet(ETH_P_IP, Some(5), &inner))),
        );
        assert_eq!(headers_len(ETH_P_IPV6, &vx6), 40 + 8 + 8 + 18 + 20 + 20);
        // IPIP: outer 20 + inner 20 + TCP 20.
        let ipip = ipv4("192.168.0.1", "192.168.0.2", 4, &inner);
        assert_eq!(headers_len(ETH_P_IP, &ipip), 60);
        // Plain UDP: 8 bytes of header, whatever follows.
        let u = ipv4("10.0.1.2", "10.0.2.2", 17, &udp(53, 5353, &payload));
        assert_eq!(headers_len(ETH_P_IP, &u), 28);
        // ICMP too-big: ICMP header + the quoted packet's headers (not its payload).
        let fnd = ipv4("10.0.0.1", "10.0.1.2", 1, &frag_needed(1450, &inner));
        assert_eq!(headers_len(ETH_P_IP, &fnd), 20 + 8 + 20 + 20);
        // Any other ICMP: its 8-byte header.
        let echo = ipv4("10.0.0.1", "10.0.0.2", 1, &icmp(8, 0, [0; 4], &payload));
        assert_eq!(headers_len(ETH_P_IP, &echo), 28);
        // A later fragment: only the IP header is header.
        let mut frag = ipv4("10.0.1.2", "10.0.2.2", 6, &payload);
        frag[6..8].copy_from_slice(&185u16.to_be_bytes());
        assert_eq!(headers_len(ETH_P_IP, &frag), 20);
        // IPv6 extension headers are header.
        assert!(headers_len(ETH_P_IPV6, &ipv6_ext()) > 40);
        // Not IP: kept as captured.
        assert_eq!(headers_len(0x0806, &payload), payload.len());
    }

    #[test]
    fn headers_len_never_exceeds_the_capture() {
        for (name, ethertype, bytes) in samples() {
            for n in 0..=bytes.len() {
                let h = headers_len(ethertype, &bytes[..n]);
                assert!(h <= n, "{name}[..{n}]: {h}");
            }
        }
    }

    #[test]
    fn plain_ipv4_tcp() {
        let d = decode(ETH_P_IP, &pod_tcp_v4());
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        assert_eq!(d.outer, None);
        assert_eq!(d.icmp, None);
        assert_eq!(d.ip_len, Some(1500));
    }

    #[test]
    fn ipv4_with_options() {
        let p = ipv4_opts(
            "10.0.1.2",
            "10.0.2.2",
            6,
            &[1, 1, 1, 0, 7, 4, 0, 0],
            &tcp(1, 2, 3),
        );
        let d = decode(ETH_P_IP, &p);
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 1, "10.0.2.2", 2));
        assert_eq!(d.ip_len, Some(28 + 23));
    }

    #[test]
    fn trailing_padding_is_not_payload() {
        // A UDP packet to a VXLAN port padded by Ethernet: the padding must not be decoded as a
        // VXLAN header, because the IP total length ends the packet before it.
        let mut p = ipv4("10.0.1.2", "10.0.2.2", 17, &udp(1, 4789, &[]));
        p.extend_from_slice(&[VXLAN_FLAG_I, 0, 0, 0, 0, 0, 1, 0]);
        let d = decode(ETH_P_IP, &p);
        assert_eq!(d.outer.as_ref().map(|o| o.vni), Some(None));
        assert_eq!(d.flow, None);
    }

    #[test]
    fn ipv4_fragments() {
        let mut first = ipv4("10.0.1.2", "10.0.2.2", 17, &udp(1000, 53, &[0; 100]));
        first[6] = 0x20; // MF, offset 0: the first fragment has the UDP header
        assert_eq!(decode(ETH_P_IP, &first).flow.unwrap().dport, Some(53));
        let mut later = first.clone();
        later[6] = 0x00;
        later[7] = 0xb9; // offset 185 * 8: bytes there are data, not ports
        let f = decode(ETH_P_IP, &later).flow.unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, None, None));
        assert_eq!(f.dst, ip("10.0.2.2"));
    }

    #[test]
    fn ipv6_tcp() {
        let d = decode(ETH_P_IPV6, &pod_tcp_v6());
        assert_eq!(d.flow, tcp_flow("fd00::1:2", 41234, "fd00::2:2", 443));
        assert_eq!(d.ip_len, Some(40 + 1220));
    }

    #[test]
    fn ipv6_extension_headers() {
        let d = decode(ETH_P_IPV6, &ipv6_ext());
        assert_eq!(d.flow, tcp_flow("2001:db8::1", 5555, "2001:db8::2", 80));
    }

    #[test]
    fn ipv6_fragments() {
        let frag = |offset_units: u16| {
            let mut ext = vec![17, 0];
            ext.extend_from_slice(&(offset_units << 3).to_be_bytes());
            ext.extend_from_slice(&[0, 0, 0, 9]);
            ext.extend_from_slice(&udp(7, 8, &[0; 16]));
            ipv6("fd00::1", "fd00::2", 44, &ext)
        };
        let f = decode(ETH_P_IPV6, &frag(0)).flow.unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, Some(7), Some(8)));
        let f = decode(ETH_P_IPV6, &frag(100)).flow.unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, None, None));
    }

    #[test]
    fn wrong_ethertype_or_version() {
        assert_eq!(decode(0x0806, &pod_tcp_v4()), Decoded::default());
        assert_eq!(decode(ETH_P_IPV6, &pod_tcp_v4()), Decoded::default());
        assert_eq!(decode(ETH_P_IP, &pod_tcp_v6()), Decoded::default());
    }

    // ---- tunnels ----

    #[test]
    fn ipip_v4_in_v4() {
        let d = decode(ETH_P_IP, &ipip_v4());
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        let o = d.outer.unwrap();
        assert_eq!((o.src, o.dst), (ip("192.168.0.1"), ip("192.168.0.2")));
        assert_eq!((o.encap, o.vni), (Encap::Ipip, None));
        assert_eq!(d.ip_len, Some(1520));
    }

    #[test]
    fn ipip_nesting_stops_after_one_level() {
        let twice = ipv4("1.1.1.1", "2.2.2.2", 4, &ipip_v4());
        let d = decode(ETH_P_IP, &twice);
        let f = d.flow.unwrap();
        assert_eq!(
            (f.proto, f.src, f.dst),
            (4, ip("192.168.0.1"), ip("192.168.0.2"))
        );
        assert_eq!(d.outer.unwrap().src, ip("1.1.1.1"));
    }

    #[test]
    fn ipv6_in_ipv4_and_ipv4_in_ipv6() {
        let d = decode(
            ETH_P_IP,
            &ipv4("192.168.0.1", "192.168.0.2", 41, &pod_tcp_v6()),
        );
        assert_eq!(d.flow, tcp_flow("fd00::1:2", 41234, "fd00::2:2", 443));
        assert_eq!(d.outer.unwrap().encap, Encap::Ipip);
        let d = decode(ETH_P_IPV6, &ipv6("fd00::a", "fd00::b", 4, &pod_tcp_v4()));
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        assert_eq!(d.outer.unwrap().src, ip("fd00::a"));
    }

    #[test]
    fn vxlan_both_ports() {
        for (port, vni) in [(4789u16, 1u32), (8472, 0x00ab_cdef)] {
            let d = decode(ETH_P_IP, &vxlan_v4(port, vni));
            assert_eq!(
                d.flow,
                tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379),
                "{port}"
            );
            assert_eq!(
                d.outer,
                Some(Outer {
                    src: ip("192.168.0.1"),
                    dst: ip("192.168.0.2"),
                    encap: Encap::Vxlan,
                    vni: Some(vni),
                })
            );
            assert_eq!(d.ip_len, Some(1500 + 14 + 8 + 8 + 20));
        }
    }

    #[test]
    fn vxlan_over_ipv6_with_vlan_tag() {
        let (_, et, p) = samples()
            .into_iter()
            .find(|s| s.0 == "vxlan over v6")
            .unwrap();
        let d = decode(et, &p);
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        let o = d.outer.unwrap();
        assert_eq!(
            (o.src, o.encap, o.vni),
            (ip("fd00::a"), Encap::Vxlan, Some(7))
        );
    }

    #[test]
    fn udp_to_vxlan_port_without_i_flag_is_plain_udp() {
        let mut payload = vxlan(1, &ethernet(ETH_P_IP, None, &pod_tcp_v4()));
        payload[0] = 0;
        let d = decode(
            ETH_P_IP,
            &ipv4("10.0.0.1", "10.0.0.2", 17, &udp(9, 8472, &payload)),
        );
        let f = d.flow.unwrap();
        assert_eq!((f.proto, f.dport), (17, Some(8472)));
        assert_eq!(d.outer, None);
    }

    #[test]
    fn vxlan_carrying_arp_has_outer_but_no_flow() {
        let frame = ethernet(0x0806, None, &[0; 28]);
        let p = ipv4(
            "192.168.0.1",
            "192.168.0.2",
            17,
            &udp(1, 4789, &vxlan(3, &frame)),
        );
        let d = decode(ETH_P_IP, &p);
        assert_eq!(d.flow, None);
        assert_eq!(d.outer.unwrap().vni, Some(3));
    }

    // ---- ICMP ----

    #[test]
    fn frag_needed_quoting_tcp() {
        let quote = &pod_tcp_v4()[..48];
        let p = ipv4("10.0.0.254", "10.0.1.2", 1, &frag_needed(1430, quote));
        let d = decode(ETH_P_IP, &p);
        assert_eq!(
            d.icmp,
            Some(IcmpTooBig {
                from: Some(ip("10.0.0.254")),
                to: ip("10.0.1.2"),
                icmp_type: 3,
                code: 4,
                mtu: Some(1430),
            })
        );
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        assert_eq!(d.outer, None);
        assert_eq!(d.ip_len, Some(20 + 8 + 48));
    }

    #[test]
    fn frag_needed_quoting_ipip() {
        let quote = &ipip_v4()[..60];
        let p = ipv4("192.168.0.254", "192.168.0.1", 1, &frag_needed(1430, quote));
        let d = decode(ETH_P_IP, &p);
        assert_eq!(d.icmp.unwrap().mtu, Some(1430));
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        let o = d.outer.unwrap();
        assert_eq!(
            (o.src, o.dst, o.encap),
            (ip("192.168.0.1"), ip("192.168.0.2"), Encap::Ipip)
        );
    }

    #[test]
    fn frag_needed_with_short_quote_keeps_ports() {
        // RFC 792 minimum: IP header + 8 bytes, enough for both ports.
        let quote = &pod_tcp_v4()[..28];
        let d = decode(
            ETH_P_IP,
            &ipv4("10.0.0.254", "10.0.1.2", 1, &frag_needed(0, quote)),
        );
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        assert_eq!(d.icmp.unwrap().mtu, None, "mtu 0 means unknown");
    }

    #[test]
    fn icmpv6_packet_too_big() {
        let (_, et, p) = samples().into_iter().find(|s| s.0 == "too-big v6").unwrap();
        let d = decode(et, &p);
        let i = d.icmp.unwrap();
        assert_eq!((i.icmp_type, i.code, i.mtu), (2, 0, Some(1280)));
        assert_eq!((i.from, i.to), (Some(ip("fd00::ff")), ip("fd00::1:2")));
        assert_eq!(d.flow, tcp_flow("fd00::1:2", 41234, "fd00::2:2", 443));
        assert_eq!(d.ip_len, Some(1280));
    }

    #[test]
    fn other_icmp_is_its_own_flow() {
        let p = ipv4("10.0.1.2", "10.0.2.2", 1, &icmp(8, 0, [0; 4], &[0; 8]));
        let d = decode(ETH_P_IP, &p);
        let f = d.flow.unwrap();
        assert_eq!(
            (f.proto, f.sport, f.dport, f.src),
            (1, None, None, ip("10.0.1.2"))
        );
        assert_eq!(d.icmp, None);
        // Destination unreachable with another code is not "too big".
        let p = ipv4(
            "10.0.0.1",
            "10.0.1.2",
            1,
            &icmp(3, 1, [0; 4], &pod_tcp_v4()[..28]),
        );
        assert_eq!(decode(ETH_P_IP, &p).flow.unwrap().proto, 1);
    }

    #[test]
    fn tunnelled_frag_needed() {
        // A frag-needed on its way back to a pod through IPIP: the message, its quoted pod flow,
        // and the tunnel carrying it.
        let msg = ipv4(
            "10.0.0.254",
            "10.0.1.2",
            1,
            &frag_needed(1400, &pod_tcp_v4()[..48]),
        );
        let d = decode(ETH_P_IP, &ipv4("192.168.0.2", "192.168.0.1", 4, &msg));
        assert_eq!(d.icmp.unwrap().mtu, Some(1400));
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        assert_eq!(d.outer.unwrap().src, ip("192.168.0.2"));
    }

    #[test]
    fn ethernet_frames() {
        let d = decode_ethernet(&ethernet(ETH_P_IP, None, &pod_tcp_v4()));
        assert_eq!(d.flow, tcp_flow("10.0.1.2", 41234, "10.0.2.2", 6379));
        let d = decode_ethernet(&ethernet(ETH_P_IPV6, Some(42), &pod_tcp_v6()));
        assert_eq!(d.flow.unwrap().dport, Some(443));
        assert_eq!(decode_ethernet(&[0; 13]), Decoded::default());
    }

    // ---- robustness ----

    /// `part` (from a prefix) may know less than `full`, never something different.
    fn assert_consistent(name: &str, n: usize, part: &Decoded, full: &Decoded) {
        let ctx = format!("{name} cut at {n}: {part:?} vs {full:?}");
        let sub = |a: Option<u16>, b: Option<u16>| a.is_none() || a == b;
        if let Some(p) = &part.flow {
            let f = full.flow.as_ref().expect(&ctx);
            assert_eq!((p.proto, p.src, p.dst), (f.proto, f.src, f.dst), "{ctx}");
            assert!(sub(p.sport, f.sport) && sub(p.dport, f.dport), "{ctx}");
        }
        if let Some(p) = &part.outer {
            let f = full.outer.as_ref().expect(&ctx);
            assert_eq!((p.src, p.dst, p.encap), (f.src, f.dst, f.encap), "{ctx}");
            assert!(p.vni.is_none() || p.vni == f.vni, "{ctx}");
        }
        if let Some(p) = &part.icmp {
            let f = full.icmp.as_ref().expect(&ctx);
            assert_eq!(
                (p.from, p.to, p.icmp_type, p.code),
                (f.from, f.to, f.icmp_type, f.code)
            );
            assert!(p.mtu.is_none() || p.mtu == f.mtu, "{ctx}");
        }
        assert!(part.ip_len.is_none() || part.ip_len == full.ip_len, "{ctx}");
    }

    #[test]
    fn truncated_at_every_length() {
        for (name, et, p) in samples() {
            let full = decode(et, &p);
            assert!(full.flow.is_some(), "{name} decodes fully");
            for n in 0..p.len() {
                assert_consistent(name, n, &decode(et, &p[..n]), &full);
                let frame = ethernet(et, None, &p);
                let partial = decode_ethernet(&frame[..n.min(frame.len())]);
                assert_consistent(name, n, &partial, &full);
            }
        }
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let samples = samples();
        for i in 0..10_000 {
            let len = (rng.next() % 200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Give the decoder plausible first bytes half the time, so that random bytes reach
            // the deeper parsers and not just the version check.
            if i % 2 == 0 && !b.is_empty() {
                b[0] = if i % 4 == 0 {
                    0x45 + (rng.next() % 3) as u8
                } else {
                    0x60
                };
            }
            let et = if b.first().is_some_and(|v| v >> 4 == 6) {
                ETH_P_IPV6
            } else {
                ETH_P_IP
            };
            let _ = decode(et, &b);
            let _ = decode_ethernet(&b);
            // And mutate real samples: a few random bytes changed, random cut.
            let (_, et, s) = &samples[i % samples.len()];
            let mut m = s.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % m.len();
                m[at] = rng.next() as u8;
            }
            let cut = (rng.next() as usize) % (m.len() + 1);
            let _ = decode(*et, &m[..cut]);
        }
    }
}
