//! Routes (RTM_GETROUTE): the routing tables of a namespace, the route cache's learned
//! exceptions (PMTU from ICMP, redirects), and single lookups (`ip route get`).
use std::net::IpAddr;

use anyhow::{Context as _, Result};

use super::{
    attr::{align4, attr_ip, attr_u32, attrs},
    socket::{route_request, NLM_F_DUMP},
};

/// `RT_TABLE_MAIN`: the table `ip route` shows.
pub const TABLE_MAIN: u32 = 254;
/// `RT_TABLE_LOCAL`: the kernel's own local and broadcast addresses.
pub const TABLE_LOCAL: u32 = 255;
/// `RTN_UNICAST`: a route to a gateway or a directly connected network.
pub const TYPE_UNICAST: u8 = 1;
/// `RTPROT_BIRD`: routes installed by BIRD (Calico's BGP daemon).
pub const PROTO_BIRD: u8 = 12;

const RTMSG_LEN: usize = 12;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTAX_LOCK: u16 = 1;
const RTAX_MTU: u16 = 2;
const RTM_F_CLONED: u32 = 0x200;

/// One route, or one learned exception of the route cache (`cloned`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Destination; `None` with `dst_len` 0 is the default route.
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    /// Next hop (`via`); for a multipath route, its first hop.
    pub gateway: Option<IpAddr>,
    /// Output device index (`dev`); for a multipath route, its first hop's.
    pub oif: Option<u32>,
    pub table: u32,
    /// `RTPROT_*`: who installed it (`proto kernel`, `boot`, `static`, `bird`, ...).
    pub protocol: u8,
    /// `RTN_*` (unicast, local, blackhole, ...).
    pub kind: u8,
    /// The `mtu` metric (set by `ip route ... mtu N`, Cilium, or learned from ICMP).
    pub mtu: Option<u32>,
    pub mtu_locked: bool,
    pub cloned: bool,
    pub v6: bool,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.dst_len == 0
    }
}

fn rtmsg(family: u8, dst_len: u8, flags: u32) -> Vec<u8> {
    let mut b = vec![0u8; RTMSG_LEN];
    b[0] = family;
    b[1] = dst_len;
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b
}

/// Every IPv4 and IPv6 route of the calling thread's namespace, of every table.
pub fn routes() -> Result<Vec<Route>> {
    // rtm_family AF_UNSPEC: both families in one dump.
    let msgs = route_request(
        "RTM_GETROUTE dump",
        RTM_GETROUTE,
        NLM_F_DUMP,
        &rtmsg(0, 0, 0),
        RTM_NEWROUTE,
    )?;
    Ok(msgs.iter().filter_map(|m| parse_route(m)).collect())
}

/// The route cache's learned exceptions of both families, but the `local` table's (`ip route
/// show cache`: PMTU learned from ICMP, redirects).
pub fn route_exceptions() -> Result<Vec<Route>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let msgs = route_request(
            "RTM_GETROUTE dump",
            RTM_GETROUTE,
            NLM_F_DUMP,
            &rtmsg(family, 0, RTM_F_CLONED),
            RTM_NEWROUTE,
        )?;
        out.extend(
            msgs.iter()
                .filter_map(|m| parse_route(m))
                .filter(|r| r.table != TABLE_LOCAL && r.cloned),
        );
    }
    Ok(out)
}

/// The route the kernel would use toward `dst` (`ip route get`), including a learned PMTU.
pub fn route_to(dst: IpAddr) -> Result<Route> {
    let (family, bytes, bits) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128),
    };
    let mut body = rtmsg(family, bits, 0);
    let alen = 4 + bytes.len();
    body.extend_from_slice(&(alen as u16).to_ne_bytes());
    body.extend_from_slice(&RTA_DST.to_ne_bytes());
    body.extend_from_slice(&bytes);
    body.resize(align4(body.len()), 0);
    let msgs = route_request("RTM_GETROUTE", RTM_GETROUTE, 0, &body, RTM_NEWROUTE)?;
    msgs.first()
        .and_then(|m| parse_route(m))
        .with_context(|| format!("no route to {dst}"))
}

/// One `rtmsg` and its attributes; `None` for families other than IPv4/IPv6 or a short message.
fn parse_route(body: &[u8]) -> Option<Route> {
    let hdr = body.get(..RTMSG_LEN)?;
    let family = i32::from(hdr[0]);
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return None;
    }
    let rtm_flags = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
    let mut route = Route {
        dst_len: hdr[1],
        table: u32::from(hdr[4]),
        protocol: hdr[5],
        kind: hdr[7],
        cloned: rtm_flags & RTM_F_CLONED != 0,
        v6: family == libc::AF_INET6,
        ..Route::default()
    };
    for (kind, value) in attrs(&body[RTMSG_LEN..]) {
        match kind {
            RTA_DST => route.dst = attr_ip(value),
            RTA_GATEWAY => route.gateway = attr_ip(value),
            // An IPv4 route through an IPv6 next hop (RFC 5549): family (u16) + address.
            RTA_VIA if value.len() > 2 => route.gateway = attr_ip(&value[2..]),
            RTA_OIF => route.oif = attr_u32(value),
            RTA_TABLE => route.table = attr_u32(value).unwrap_or(route.table),
            RTA_METRICS => {
                let mut lock = 0;
                for (mt, mv) in attrs(value) {
                    match mt {
                        RTAX_MTU => route.mtu = attr_u32(mv).filter(|&x| x > 0),
                        RTAX_LOCK => lock = attr_u32(mv).unwrap_or(0),
                        _ => {}
                    }
                }
                route.mtu_locked = lock & (1 << RTAX_MTU) != 0;
            }
            RTA_MULTIPATH => {
                // rtnexthop: len u16, flags u8, hops u8, ifindex i32, then its attributes.
                if let Some(hop) = value.get(..8) {
                    let hop_len = usize::from(u16::from_ne_bytes([hop[0], hop[1]]));
                    route.oif = route.oif.or(attr_u32(&hop[4..8]));
                    let hop_attrs = value.get(8..hop_len.max(8)).unwrap_or(&[]);
                    for (k, v) in attrs(hop_attrs) {
                        if k == RTA_GATEWAY {
                            route.gateway = route.gateway.or(attr_ip(v));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(route)
}

#[cfg(test)]
mod tests;
