//! Netlink attributes (`rtattr` / `nlattr`): the walk over a message's attributes and the few
//! value types the tracer reads. Untrusted bytes: a walk stops at the first malformed attribute.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Messages and attributes are padded to 4 bytes.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// `(type, value)` of each attribute in `data`, the nested/byte-order flag bits stripped from
/// the type; stops at the first malformed one.
pub fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        v.push((ty, &data[4..len]));
        data = &data[align4(len).min(data.len())..];
    }
    v
}

pub fn attr_u32(v: &[u8]) -> Option<u32> {
    v.get(0..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// A big-endian `u16` (ports in ctnetlink tuples, unlike netlink's own fields).
pub fn attr_be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address attribute.
pub fn attr_ip(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

/// A NUL-terminated string attribute (device names, link kinds); invalid UTF-8 is replaced.
pub fn attr_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// Builders of messages as the kernel lays them out, for the parsers' tests.
#[cfg(test)]
pub mod testing {
    use super::align4;
    use crate::netlink::socket::NLMSG_HDR_LEN;

    const NLA_F_NESTED: u16 = 0x8000;
    const NLM_F_MULTI: u16 = 2;

    /// One attribute, padded.
    pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(((4 + value.len()) as u16).to_ne_bytes());
        a.extend(kind.to_ne_bytes());
        a.extend(value);
        a.resize(align4(a.len()), 0);
        a
    }

    /// A nested attribute holding `parts`, flagged as the kernel flags it.
    pub fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | NLA_F_NESTED, &parts.concat())
    }

    /// One message of a dump (`NLM_F_MULTI`), padded.
    pub fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((NLMSG_HDR_LEN + body.len()) as u32).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend(NLM_F_MULTI.to_ne_bytes());
        m.extend(1u32.to_ne_bytes()); // seq
        m.extend(0u32.to_ne_bytes()); // pid: the kernel
        m.extend(body);
        m.resize(align4(m.len()), 0);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::attr, *};

    #[test]
    fn attributes_are_walked_with_padding_and_stop_at_garbage() {
        // IFLA_MTU = 1450, then a 5-byte name padded to 8.
        let mut b = [attr(4, &1450u32.to_ne_bytes()), attr(3, b"eth0\0")].concat();
        let a = attrs(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(attr_u32(a[0].1), Some(1450));
        assert_eq!(attr_string(a[1].1), "eth0");
        // A length running past the buffer stops the walk instead of panicking.
        b[8] = 200;
        assert_eq!(attrs(&b).len(), 1);
        // The nested flag is not part of the type.
        let n = testing::nested(4, &[attr(1, &[1, 2])]);
        assert_eq!(attrs(&n)[0].0, 4);
        assert_eq!(attr_ip(&[10, 0, 0, 1]), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(attr_ip(&[1, 2, 3]), None);
        assert_eq!(attr_be16(&[0x1f, 0x90]), Some(8080));
        assert_eq!(attr_be16(&[1]), None);
    }
}
