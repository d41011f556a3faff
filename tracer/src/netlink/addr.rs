//! Device addresses (RTM_GETADDR).
use std::net::IpAddr;

use anyhow::Result;

use super::{
    attr::{attr_ip, attrs},
    socket::{route_request, NLM_F_DUMP},
};

/// `RTM_NEWADDR` / `RTM_GETADDR` and the `ifaddrmsg` attributes read (linux/if_addr.h).
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `RT_SCOPE_LINK`: IPv6 link-local and the like, never a node's address toward its peers.
const RT_SCOPE_LINK: u8 = 253;

/// The addresses of the calling thread's namespace's devices, as (ifindex, address), both
/// families; link- and host-scope addresses left out.
pub fn addresses() -> Result<Vec<(u32, IpAddr)>> {
    // ifaddrmsg with ifa_family AF_UNSPEC: every family.
    let header = [0u8; IFADDRMSG_LEN];
    let msgs = route_request("RTM_GETADDR", RTM_GETADDR, NLM_F_DUMP, &header, RTM_NEWADDR)?;
    Ok(msgs.iter().filter_map(|m| parse_address(m)).collect())
}

/// One `ifaddrmsg` and its attributes: the device's index and its own address (`IFA_LOCAL`
/// where given: on a point-to-point link `IFA_ADDRESS` is the far end's).
fn parse_address(body: &[u8]) -> Option<(u32, IpAddr)> {
    let hdr = body.get(..IFADDRMSG_LEN)?;
    let family = i32::from(hdr[0]);
    if (family != libc::AF_INET && family != libc::AF_INET6) || hdr[3] >= RT_SCOPE_LINK {
        return None;
    }
    let ifindex = u32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let (mut local, mut address) = (None, None);
    for (kind, value) in attrs(&body[IFADDRMSG_LEN..]) {
        match kind {
            IFA_LOCAL => local = attr_ip(value),
            IFA_ADDRESS => address = attr_ip(value),
            _ => {}
        }
    }
    Some((ifindex, local.or(address)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr::testing::attr;

    #[test]
    fn loopback_addresses_are_host_scope_and_left_out_and_messages_parse() {
        // `lo` holds 127.0.0.1 (scope host) in every namespace: never an underlay address.
        let all = addresses().unwrap();
        assert!(all.iter().all(|(_, a)| !a.is_loopback()), "{all:?}");
        let msg = |family: u8, scope: u8, attrs: &[Vec<u8>]| {
            let mut m = vec![family, 24, 0, scope];
            m.extend_from_slice(&7u32.to_ne_bytes());
            m.extend(attrs.concat());
            m
        };
        let ptp = msg(
            2,
            0,
            &[
                attr(IFA_ADDRESS, &[10, 0, 0, 9]),
                attr(IFA_LOCAL, &[10, 0, 0, 1]),
            ],
        );
        assert_eq!(parse_address(&ptp), Some((7, "10.0.0.1".parse().unwrap())));
        let v6 = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(
            parse_address(&msg(10, 0, &[attr(IFA_ADDRESS, &v6)])),
            Some((7, "2001:db8::2".parse().unwrap()))
        );
        let fe80 = "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(
            parse_address(&msg(10, 253, &[attr(IFA_ADDRESS, &fe80)])),
            None
        );
        assert_eq!(parse_address(&[2, 24, 0]), None);
    }
}
