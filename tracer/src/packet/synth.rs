//! Packet builders: headers with correct lengths, checksums left at zero. For the decoder's
//! tests, the benchmarks and the fuzzers' seeds: never used on the datapath.
//!
//! Addresses are given as text and must parse (these builders are for fixed test inputs).
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ETH_P_8021Q, VXLAN_FLAG_I};

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// IPv4 header (+ `options`, a multiple of 4 bytes) followed by `payload`.
pub fn ipv4_opts(src: &str, dst: &str, proto: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hl = 20 + options.len();
    let total = (hl + payload.len()) as u16;
    let mut p = vec![0x40 | (hl / 4) as u8, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]); // id, DF, ttl
    p.extend_from_slice(&v4(src).octets());
    p.extend_from_slice(&v4(dst).octets());
    p.extend_from_slice(options);
    p.extend_from_slice(payload);
    p
}
pub fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_opts(src, dst, proto, &[], payload)
}
pub fn ipv6(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&v6(src).octets());
    p.extend_from_slice(&v6(dst).octets());
    p.extend_from_slice(payload);
    p
}
/// TCP header (20 bytes) + `data` bytes of payload.
pub fn tcp(sport: u16, dport: u16, data: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    p.resize(20 + data, 0xab);
    p
}
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}
pub fn ethernet(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if let Some(tag) = vlan {
        p.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        p.extend_from_slice(&tag.to_be_bytes());
    }
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    p
}
pub fn vxlan(vni: u32, inner_frame: &[u8]) -> Vec<u8> {
    let mut p = vec![VXLAN_FLAG_I, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(inner_frame);
    p
}
/// ICMP(v6) message: type, code, the 4 "rest of header" bytes, then the quote/body.
pub fn icmp(ty: u8, code: u8, rest_of_header: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut p = vec![ty, code, 0, 0];
    p.extend_from_slice(&rest_of_header);
    p.extend_from_slice(body);
    p
}
pub fn frag_needed(mtu: u16, quote: &[u8]) -> Vec<u8> {
    let m = mtu.to_be_bytes();
    icmp(3, 4, [0, 0, m[0], m[1]], quote)
}
