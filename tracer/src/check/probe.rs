//! The active path-MTU probe: ICMP echo requests of chosen sizes with DF set toward peer nodes,
//! from inside a node's namespace. The largest size that gets an answer is the path MTU that
//! node's tunnel packets meet, even where no router says so (an L2 mismatch drops silently).
//!
//! IPv6 peers get ICMPv6 echo requests the same way (IPv6 routers never fragment, so every
//! probe is a DF probe); their search never goes below [`IPV6_MIN_MTU`], which every IPv6 path
//! must carry: a peer that answers a small probe but not 1280 bytes is reported as such.
//!
//! Bounded by construction: at most [`MAX_ROUNDS`] rounds of at most [`NARROW_SIZES`] sizes per
//! peer, each lost size re-sent once, each wait at most `timeout`, and no round started once
//! `budget` would be exceeded. Peers are probed together, so the cost is per namespace.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    mtu::IPV6_MIN_MTU,
    netlink::{link::Link, route::route_to},
};

/// Rounds of a search: the first tries common MTUs, the next ones narrow the gap.
pub const MAX_ROUNDS: usize = 4;
/// Sizes per peer in the first round, and in each narrowing round: with 24, any gap up to the
/// 4000 → 8950 of jumbo paths closes to the byte within the rounds (the tests try them all).
pub const MAX_SIZES: usize = 16;
pub const NARROW_SIZES: usize = 24;
/// The reachability probe: small enough for any path.
pub const MIN_SIZE: u32 = 96;
/// MTUs met in practice (jumbo, cloud, PPPoE, tunnels, IPv6 minimum): the first round tries
/// these so that a typical path is found exactly in one or two rounds.
const COMMON: [u32; 15] = [
    576, 1280, 1400, 1420, 1430, 1440, 1450, 1460, 1480, 1492, 1500, 4000, 8950, 9000, 9001,
];
const MAGIC: &[u8; 8] = b"tracerck";
/// Linux receivers (veth, and most NIC drivers' buffers) take frames up to MTU + 4 bytes, room
/// for a VLAN tag, so across an L2 mismatch a probe of 1454 reaches a 1450 node. Sending that
/// much is not safe; the path MTU is then the known MTU just below.
pub const RX_SLACK: u32 = 4;

/// The path MTU for a largest answered size: the highest of `known` (devices' and common MTUs)
/// within [`RX_SLACK`] bytes below it, else the size itself.
pub fn snap_to_known(largest_ok: u32, known: &[u32]) -> u32 {
    known
        .iter()
        .chain(COMMON.iter())
        .copied()
        .filter(|&m| m <= largest_ok && largest_ok - m <= RX_SLACK)
        .max()
        .unwrap_or(largest_ok)
}

/// How a peer's probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    /// `path_mtu` is the largest size answered.
    Ok,
    /// Not even the smallest probe was answered (peer down, or ICMP echo filtered).
    NoReply,
    NoRoute,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub peer: IpAddr,
    /// Why this address was probed (`VXLAN remote of vxlan.calico`, `--peer`, ...).
    pub source: String,
    pub status: ProbeStatus,
    /// The device the route toward the peer leaves by, and its MTU (the largest size tried).
    pub via: Option<String>,
    pub local_mtu: Option<u32>,
    /// The path MTU: `largest_ok`, or the MTU of a device or a common MTU at most
    /// [`RX_SLACK`] bytes below it (see there).
    pub path_mtu: Option<u32>,
    /// Largest IP packet (bytes, headers included) that got an answer.
    pub largest_ok: Option<u32>,
    /// Smallest size that got no answer (twice), when one did not.
    pub smallest_lost: Option<u32>,
    /// `path_mtu` is exact (`smallest_lost` = `path_mtu` + 1, or the local MTU got through);
    /// false when the time budget ran out first: the path MTU is then between the two.
    pub exact: bool,
    /// An ICMP frag-needed (IPv6: packet too big) answered a probe: the MTU a router
    /// advertised, and the router.
    pub icmp_mtu: Option<u32>,
    pub icmp_from: Option<IpAddr>,
    pub sent: u32,
    pub elapsed_ms: u64,
    pub detail: Option<String>,
}

impl ProbeResult {
    /// An IPv6 peer that answered the small probe but nothing of [`IPV6_MIN_MTU`] bytes or
    /// more: the path breaks IPv6 whatever the pods' MTU (`path_mtu` is then unknown).
    pub fn below_ipv6_minimum(&self) -> bool {
        self.peer.is_ipv6()
            && self.status == ProbeStatus::Ok
            && self.largest_ok.is_some_and(|ok| ok < IPV6_MIN_MTU)
    }
}

/// A peer to probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub addr: IpAddr,
    pub source: String,
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeLimits {
    /// How long a probe may go unanswered before it counts as lost.
    pub timeout: Duration,
    /// The whole probe, per namespace.
    pub budget: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            timeout: Duration::from_millis(300),
            budget: Duration::from_secs(3),
        }
    }
}

/// The smallest size the search narrows toward: IPv6 paths must carry [`IPV6_MIN_MTU`], so
/// below it there is nothing to measure (and senders never go there), only a broken path.
pub fn floor_for(peer: IpAddr) -> u32 {
    match peer {
        IpAddr::V4(_) => MIN_SIZE,
        IpAddr::V6(_) => IPV6_MIN_MTU,
    }
}

/// Sizes for the next round: `None` when the search is over. `floor` (see [`floor_for`]):
/// no size between [`MIN_SIZE`] (the reachability probe) and it is tried.
pub fn next_sizes(
    round: usize,
    max: u32,
    floor: u32,
    largest_ok: Option<u32>,
    smallest_lost: Option<u32>,
) -> Option<Vec<u32>> {
    if round == 0 {
        let mut v: Vec<u32> = std::iter::once(MIN_SIZE)
            .chain(
                COMMON
                    .iter()
                    .copied()
                    .filter(|&s| s > MIN_SIZE && s >= floor && s < max),
            )
            .chain(std::iter::once(max))
            .collect();
        v.dedup();
        if v.len() > MAX_SIZES {
            // Keep the smallest, the largest and the common sizes nearest the top.
            let tail = v.split_off(v.len() - (MAX_SIZES - 1));
            v.truncate(1);
            v.extend(tail);
        }
        return Some(v);
    }
    if round >= MAX_ROUNDS {
        return None;
    }
    // Only the reachability probe passed on an IPv6 path: nothing above the floor to narrow.
    let lo = largest_ok.filter(|&ok| ok >= floor)?;
    let hi = smallest_lost?;
    if hi <= lo + 1 {
        return None;
    }
    let gap = hi - lo - 1; // sizes strictly between
    let n = (gap as usize).min(NARROW_SIZES);
    Some(
        (1..=n)
            .map(|i| lo + ((gap as u64 + 1) * i as u64 / (n as u64 + 1)) as u32)
            .map(|s| s.clamp(lo + 1, hi - 1))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    )
}

struct PeerState {
    addr: IpAddr,
    /// The route's device, for a link-local IPv6 peer's scope.
    oif: u32,
    max: u32,
    ok: Option<u32>,
    lost: Option<u32>,
    result: ProbeResult,
}

impl PeerState {
    fn record_ok(&mut self, size: u32) {
        self.ok = Some(self.ok.map_or(size, |o| o.max(size)));
    }
    /// A loss below a size that got through is noise (a dropped reply), not the path.
    fn record_lost(&mut self, size: u32) {
        if self.ok.is_none_or(|o| size > o) {
            self.lost = Some(self.lost.map_or(size, |l| l.min(size)));
        }
    }
}

/// Probe `peers` from the calling thread's namespace. `links` gives device names and MTUs.
pub fn probe(peers: &[Peer], links: &[Link], limits: ProbeLimits) -> Vec<ProbeResult> {
    let start = Instant::now();
    let mut states: Vec<PeerState> = Vec::new();
    let mut done: Vec<ProbeResult> = Vec::new();
    for p in peers {
        let mut r = ProbeResult {
            peer: p.addr,
            source: p.source.clone(),
            status: ProbeStatus::Skipped,
            via: None,
            local_mtu: None,
            path_mtu: None,
            largest_ok: None,
            smallest_lost: None,
            exact: false,
            icmp_mtu: None,
            icmp_from: None,
            sent: 0,
            elapsed_ms: 0,
            detail: None,
        };
        match route_to(p.addr) {
            Ok(route) => {
                let dev = route
                    .oif
                    .and_then(|i| links.iter().find(|l| l.ifindex == i));
                match dev {
                    Some(l) if l.name == "lo" => {
                        r.detail = Some("a local address of this namespace".into());
                        done.push(r);
                    }
                    Some(l) => {
                        r.via = Some(l.name.clone());
                        r.local_mtu = Some(l.mtu);
                        states.push(PeerState {
                            addr: p.addr,
                            oif: l.ifindex,
                            max: l.mtu.min(65535),
                            ok: None,
                            lost: None,
                            result: r,
                        });
                    }
                    None => {
                        r.status = ProbeStatus::NoRoute;
                        r.detail = Some("route without an output device".into());
                        done.push(r);
                    }
                }
            }
            Err(e) => {
                r.status = ProbeStatus::NoRoute;
                r.detail = Some(format!("{e:#}"));
                done.push(r);
            }
        }
    }
    // One raw socket per family in use; a family whose socket fails leaves its peers unprobed.
    let mut socks: Vec<RawIcmp> = Vec::new();
    for v6 in [false, true] {
        if !states.iter().any(|s| s.addr.is_ipv6() == v6) {
            continue;
        }
        match RawIcmp::open(v6) {
            Ok(s) => socks.push(s),
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::PermissionDenied {
                    "needs CAP_NET_RAW (run as root)".to_string()
                } else {
                    format!("raw ICMP{} socket: {e}", if v6 { "v6" } else { "" })
                };
                let (failed, kept): (Vec<_>, Vec<_>) =
                    states.into_iter().partition(|s| s.addr.is_ipv6() == v6);
                states = kept;
                for mut s in failed {
                    s.result.detail = Some(why.clone());
                    done.push(s.result);
                }
            }
        }
    }
    if states.is_empty() {
        return done;
    }
    let mut seq: u16 = 0;
    for round in 0..MAX_ROUNDS {
        // A round costs at most two waits (the sizes, then the lost ones again).
        if start.elapsed() + 2 * limits.timeout > limits.budget {
            break;
        }
        let mut outstanding: HashMap<u16, (usize, u32)> = HashMap::new();
        let mut plans: Vec<(usize, u32)> = Vec::new();
        for (i, s) in states.iter().enumerate() {
            if round > 0 && s.ok.is_none() {
                continue; // unreachable: no point narrowing
            }
            if let Some(sizes) = next_sizes(round, s.max, floor_for(s.addr), s.ok, s.lost) {
                plans.extend(sizes.into_iter().map(|sz| (i, sz)));
            }
        }
        if plans.is_empty() {
            break;
        }
        for attempt in 0..2 {
            let to_send: Vec<(usize, u32)> = if attempt == 0 {
                plans.clone()
            } else {
                outstanding.drain().map(|(_, v)| v).collect()
            };
            if to_send.is_empty() {
                break;
            }
            for (i, size) in to_send {
                seq = seq.wrapping_add(1);
                let st = &mut states[i];
                let Some(sock) = socks.iter().find(|k| k.v6 == st.addr.is_ipv6()) else {
                    continue; // not reached: peers without a socket left `states` above
                };
                st.result.sent += 1;
                match sock.send_echo(st.addr, st.oif, size, seq) {
                    Ok(()) => {
                        outstanding.insert(seq, (i, size));
                    }
                    // Bigger than the local device: lost without leaving.
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => st.record_lost(size),
                    Err(e) => {
                        st.result.detail = Some(format!("send: {e}"));
                        st.record_lost(size);
                    }
                }
            }
            let deadline = Instant::now() + limits.timeout;
            while !outstanding.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match recv(&socks, left) {
                    Some(Reply::Echo { from, seq, len }) => {
                        if let Some(&(i, size)) = outstanding.get(&seq) {
                            if states[i].addr == from && len == size {
                                outstanding.remove(&seq);
                                states[i].record_ok(size);
                            }
                        }
                    }
                    Some(Reply::TooBig { from, seq, mtu }) => {
                        if let Some((i, size)) = outstanding.remove(&seq) {
                            let st = &mut states[i];
                            st.result.icmp_mtu = Some(mtu);
                            st.result.icmp_from = Some(from);
                            st.record_lost(size);
                        }
                    }
                    None => {}
                }
            }
        }
        for (_, (i, size)) in outstanding {
            states[i].record_lost(size);
        }
    }
    let elapsed = start.elapsed().as_millis() as u64;
    let known: Vec<u32> = links.iter().map(|l| l.mtu).collect();
    for mut s in states {
        let r = &mut s.result;
        r.elapsed_ms = elapsed;
        r.smallest_lost = s.lost;
        match s.ok {
            // IPv6 senders never go below 1280, so neither does the search: only the
            // reachability probe passed, and no path MTU is claimed.
            Some(ok) if s.addr.is_ipv6() && ok < IPV6_MIN_MTU => {
                r.status = ProbeStatus::Ok;
                r.largest_ok = Some(ok);
                r.detail = Some(format!(
                    "{ok} B answered but {} B did not: the path carries less than IPv6's minimum of {IPV6_MIN_MTU}",
                    s.lost.unwrap_or(IPV6_MIN_MTU)
                ));
            }
            Some(ok) => {
                r.status = ProbeStatus::Ok;
                r.largest_ok = Some(ok);
                r.path_mtu = Some(snap_to_known(ok, &known));
                r.exact = ok == s.max || s.lost == Some(ok + 1);
            }
            None => {
                r.status = ProbeStatus::NoReply;
                r.detail.get_or_insert_with(|| {
                    format!(
                        "no answer to ICMP{} echo, even of {MIN_SIZE} bytes (peer down or echo filtered)",
                        if s.addr.is_ipv6() { "v6" } else { "" }
                    )
                });
            }
        }
        done.push(s.result);
    }
    done
}

enum Reply {
    Echo { from: IpAddr, seq: u16, len: u32 },
    TooBig { from: IpAddr, seq: u16, mtu: u32 },
}

struct RawIcmp {
    fd: OwnedFd,
    id: u16,
    v6: bool,
}

/// `ICMP6_FILTER` (RFC 3542), level `IPPROTO_ICMPV6`: a bit set per ICMPv6 type blocks it.
const ICMP6_FILTER: i32 = 1;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const IPV6_HEADER: usize = 40;

impl RawIcmp {
    fn open(v6: bool) -> io::Result<RawIcmp> {
        let (family, proto) = if v6 {
            (libc::AF_INET6, libc::IPPROTO_ICMPV6)
        } else {
            (libc::AF_INET, libc::IPPROTO_ICMP)
        };
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                proto,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if v6 {
            // Never fragment locally, and ignore the PMTU this namespace learned: the probe is
            // there to measure it. Sizes up to the device's MTU leave whole.
            setsockopt(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )?;
            // Only echo replies and packet-too-big reach this socket. (The kernel fills in the
            // ICMPv6 checksum of raw ICMPv6 sockets itself.)
            let mut block = [u32::MAX; 8];
            for t in [ICMP6_ECHO_REPLY, ICMP6_PACKET_TOO_BIG] {
                block[usize::from(t >> 5)] &= !(1u32 << (t & 31));
            }
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_ICMPV6,
                    ICMP6_FILTER,
                    block.as_ptr().cast(),
                    std::mem::size_of_val(&block) as u32,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        } else {
            // DF on, but ignore the PMTU this namespace learned: the probe is there to measure it.
            setsockopt(
                &fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )?;
            // Only echo replies and destination-unreachable reach this socket.
            const ICMP_FILTER: i32 = 1;
            let pass = (1u32 << 0) | (1u32 << 3);
            setsockopt(&fd, libc::SOL_RAW, ICMP_FILTER, !pass as i32)?;
        }
        // Every raw ICMP socket of the namespace sees every reply: the id (and the payload's
        // magic) tell ours apart from a concurrent ping or a second audit.
        let id = (std::process::id() as u16) ^ (fd.as_raw_fd() as u16).rotate_left(8);
        Ok(RawIcmp { fd, id, v6 })
    }

    /// An echo request of `size` bytes of IP packet (header included) to `dst`; `oif` scopes a
    /// link-local IPv6 destination.
    fn send_echo(&self, dst: IpAddr, oif: u32, size: u32, seq: u16) -> io::Result<()> {
        let header = if self.v6 { IPV6_HEADER as u32 } else { 20 };
        let icmp_len = size.saturating_sub(header).max(8 + MAGIC.len() as u32) as usize;
        let mut pkt = vec![0u8; icmp_len];
        pkt[0] = if self.v6 { ICMP6_ECHO_REQUEST } else { 8 };
        pkt[4..6].copy_from_slice(&self.id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..16].copy_from_slice(MAGIC);
        for (i, b) in pkt[16..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let n = match dst {
            IpAddr::V4(dst) => {
                let sum = checksum(&pkt);
                pkt[2..4].copy_from_slice(&sum.to_be_bytes());
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(dst.octets()),
                    },
                    sin_zero: [0; 8],
                };
                unsafe {
                    libc::sendto(
                        self.fd.as_raw_fd(),
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                }
            }
            IpAddr::V6(dst) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as u16,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: dst.octets(),
                    },
                    sin6_scope_id: if dst.is_unicast_link_local() { oif } else { 0 },
                };
                unsafe {
                    libc::sendto(
                        self.fd.as_raw_fd(),
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as u32,
                    )
                }
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read one packet already waiting; `None` for a foreign one.
    fn read(&self) -> Option<Reply> {
        let mut buf = [0u8; 65536];
        // SAFETY: all-zero is a valid sockaddr_in6; the kernel writes at most its size.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut sa_len = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut sa_len,
            )
        };
        if n <= 0 {
            return None;
        }
        let pkt = &buf[..n as usize];
        if self.v6 {
            // Raw ICMPv6 sockets hand over the ICMPv6 message alone; the sender is the address.
            parse_reply6(pkt, Ipv6Addr::from(sa.sin6_addr.s6_addr), self.id)
        } else {
            parse_reply(pkt, self.id)
        }
    }
}

/// One packet of interest from any of `socks`, waiting at most `wait`; `None` on timeout or a
/// foreign packet.
fn recv(socks: &[RawIcmp], wait: Duration) -> Option<Reply> {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
    if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) } <= 0 {
        return None;
    }
    let ready = pfds.iter().position(|p| p.revents & libc::POLLIN != 0)?;
    socks[ready].read()
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An ICMPv6 message as a raw ICMPv6 socket hands it over (no IPv6 header), from `from`: our
/// echo reply, or a packet-too-big quoting one of our echo requests. The echo's IP size is the
/// message plus a bare IPv6 header (the probes carry no extension headers).
fn parse_reply6(icmp: &[u8], from: Ipv6Addr, id: u16) -> Option<Reply> {
    let head = icmp.get(..8)?;
    let from = IpAddr::V6(from);
    match (head[0], head[1]) {
        (ICMP6_ECHO_REPLY, 0) => {
            let ours =
                u16::from_be_bytes([head[4], head[5]]) == id && icmp.get(8..16) == Some(&MAGIC[..]);
            ours.then(|| Reply::Echo {
                from,
                seq: u16::from_be_bytes([head[6], head[7]]),
                len: (icmp.len() + IPV6_HEADER) as u32,
            })
        }
        (ICMP6_PACKET_TOO_BIG, 0) => {
            let mtu = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            // The invoking packet: our IPv6 header (next header ICMPv6), then our echo request.
            let inner = &icmp[8..];
            let ip = inner.get(..IPV6_HEADER)?;
            if ip[0] >> 4 != 6 || i32::from(ip[6]) != libc::IPPROTO_ICMPV6 {
                return None;
            }
            let echo = inner.get(IPV6_HEADER..IPV6_HEADER + 8)?;
            let ours =
                echo[0] == ICMP6_ECHO_REQUEST && u16::from_be_bytes([echo[4], echo[5]]) == id;
            ours.then(|| Reply::TooBig {
                from,
                seq: u16::from_be_bytes([echo[6], echo[7]]),
                mtu,
            })
        }
        _ => None,
    }
}

/// An IPv4 packet as a raw ICMP socket hands it over: our echo reply, or a frag-needed about
/// one of our echo requests.
fn parse_reply(pkt: &[u8], id: u16) -> Option<Reply> {
    let ihl = (*pkt.first()? as usize & 0x0f) * 4;
    if pkt.len() < ihl + 8 || pkt[0] >> 4 != 4 {
        return None;
    }
    let total = u16::from_be_bytes([pkt[2], pkt[3]]) as u32;
    let from = IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]));
    let icmp = &pkt[ihl..];
    match (icmp[0], icmp[1]) {
        (0, 0) => {
            let ours =
                u16::from_be_bytes([icmp[4], icmp[5]]) == id && icmp.get(8..16) == Some(&MAGIC[..]);
            ours.then(|| Reply::Echo {
                from,
                seq: u16::from_be_bytes([icmp[6], icmp[7]]),
                len: total,
            })
        }
        (3, 4) => {
            let mtu = u16::from_be_bytes([icmp[6], icmp[7]]) as u32;
            let inner = &icmp[8..];
            let iihl = (*inner.first()? as usize & 0x0f) * 4;
            let echo = inner.get(iihl..iihl + 8)?;
            let ours = echo[0] == 8 && u16::from_be_bytes([echo[4], echo[5]]) == id;
            ours.then(|| Reply::TooBig {
                from,
                seq: u16::from_be_bytes([echo[6], echo[7]]),
                mtu,
            })
        }
        _ => None,
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_round_brackets_the_common_mtus() {
        let s = next_sizes(0, 1500, MIN_SIZE, None, None).unwrap();
        assert_eq!(s.first(), Some(&MIN_SIZE));
        assert_eq!(s.last(), Some(&1500));
        assert!(s.contains(&1450) && s.contains(&1430) && s.contains(&1280));
        assert!(s.len() <= MAX_SIZES);
        let jumbo = next_sizes(0, 9001, MIN_SIZE, None, None).unwrap();
        assert_eq!(jumbo.len(), MAX_SIZES);
        assert_eq!((jumbo[0], *jumbo.last().unwrap()), (MIN_SIZE, 9001));
        assert!(jumbo.contains(&1500) && jumbo.contains(&9000));
    }

    #[test]
    fn later_rounds_narrow_to_the_exact_size() {
        // 1450 answered, 1460 lost: the next round tries every size in between.
        let s = next_sizes(1, 1500, MIN_SIZE, Some(1450), Some(1460)).unwrap();
        assert_eq!(s, (1451..=1459).collect::<Vec<_>>());
        // A wide gap is split evenly, never touching the ends.
        let s = next_sizes(1, 1500, MIN_SIZE, Some(96), Some(576)).unwrap();
        assert_eq!(s.len(), NARROW_SIZES);
        assert!(s.iter().all(|&x| x > 96 && x < 576));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        // Done: exact, nothing answered, the local MTU passed, or out of rounds.
        assert_eq!(next_sizes(1, 1500, MIN_SIZE, Some(1450), Some(1451)), None);
        assert_eq!(next_sizes(1, 1500, MIN_SIZE, None, Some(96)), None);
        assert_eq!(next_sizes(1, 1500, MIN_SIZE, Some(1500), None), None);
        assert_eq!(
            next_sizes(MAX_ROUNDS, 1500, MIN_SIZE, Some(96), Some(1500)),
            None
        );
    }

    /// The search against a path that carries `path` bytes: (largest ok, smallest lost, every
    /// size sent).
    fn simulate(max: u32, floor: u32, path: u32) -> (Option<u32>, Option<u32>, Vec<u32>) {
        let (mut ok, mut lost, mut sent) = (None::<u32>, None::<u32>, Vec::new());
        for round in 0..MAX_ROUNDS {
            let Some(sizes) = next_sizes(round, max, floor, ok, lost) else {
                break;
            };
            for s in sizes {
                sent.push(s);
                if s <= path {
                    ok = Some(ok.map_or(s, |o| o.max(s)));
                } else {
                    lost = Some(lost.map_or(s, |l| l.min(s)));
                }
            }
        }
        (ok, lost, sent)
    }

    #[test]
    fn any_path_mtu_is_found_within_the_rounds() {
        // Simulate the search against every path MTU between the minimum and 9001.
        for max in [1450u32, 1500, 9001] {
            for path in (MIN_SIZE..=max).step_by(7).chain([max, 1280, 1449]) {
                let (ok, lost, _) = simulate(max, MIN_SIZE, path);
                assert_eq!(ok, Some(path.min(max)), "max {max} path {path}");
                assert!(
                    path >= max || lost == Some(path + 1),
                    "max {max} path {path}: lost {lost:?}"
                );
            }
        }
    }

    #[test]
    fn ipv6_search_stays_at_or_above_1280() {
        let floor = floor_for("fd00::2".parse().unwrap());
        assert_eq!(floor, IPV6_MIN_MTU);
        assert_eq!(floor_for("10.0.0.2".parse().unwrap()), MIN_SIZE);
        let first = next_sizes(0, 1500, floor, None, None).unwrap();
        assert_eq!(
            first,
            vec![96, 1280, 1400, 1420, 1430, 1440, 1450, 1460, 1480, 1492, 1500]
        );
        // Every IPv6 path MTU from the minimum up is found to the byte, and nothing between
        // the reachability probe and 1280 is ever sent.
        for max in [1500u32, 9000] {
            for path in (IPV6_MIN_MTU..=max).step_by(3).chain([1400, 1401, max]) {
                let (ok, lost, sent) = simulate(max, floor, path);
                assert_eq!(ok, Some(path.min(max)), "max {max} path {path}");
                assert!(
                    path >= max || lost == Some(path + 1),
                    "path {path}: {lost:?}"
                );
                assert!(
                    sent.iter().all(|&s| s == MIN_SIZE || s >= IPV6_MIN_MTU),
                    "path {path}: {sent:?}"
                );
            }
        }
        // A path below 1280: the small probe passes, 1280 does not, and no narrowing follows.
        let (ok, lost, sent) = simulate(1500, floor, 1200);
        assert_eq!((ok, lost), (Some(MIN_SIZE), Some(IPV6_MIN_MTU)));
        assert_eq!(sent, first);
        // The same path over IPv4 is narrowed down to its MTU.
        assert_eq!(simulate(1500, MIN_SIZE, 1200).0, Some(1200));
    }

    #[test]
    fn replies_are_matched_by_id_and_magic() {
        let mut echo = vec![
            0x45, 0, 0x05, 0xaa, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        echo.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        echo.extend_from_slice(MAGIC);
        match parse_reply(&echo, 0x1234) {
            Some(Reply::Echo { from, seq, len }) => {
                assert_eq!(from, "10.0.0.2".parse::<IpAddr>().unwrap());
                assert_eq!((seq, len), (7, 1450));
            }
            _ => panic!("our echo reply not recognised"),
        }
        assert!(parse_reply(&echo, 0x9999).is_none(), "someone else's ping");
        assert!(parse_reply(&echo[..10], 0x1234).is_none(), "truncated");
        // A router's frag-needed (mtu 1450) quoting our request.
        let mut tb = vec![
            0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 10, 211, 1, 1, 10, 211, 1, 2,
        ];
        tb.extend_from_slice(&[3, 4, 0, 0, 0, 0, 0x05, 0xaa]);
        tb.extend_from_slice(&[0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 1, 0, 0]);
        tb.extend_from_slice(&[10, 211, 1, 2, 10, 211, 2, 2]);
        tb.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 9]);
        match parse_reply(&tb, 0x1234) {
            Some(Reply::TooBig { from, seq, mtu }) => {
                assert_eq!(from, "10.211.1.1".parse::<IpAddr>().unwrap());
                assert_eq!((seq, mtu), (9, 1450));
            }
            _ => panic!("frag-needed not recognised"),
        }
    }

    /// An IPv6 header of `len` payload bytes, next header `next`, from `src` to `dst`.
    fn ipv6_header(len: u16, next: u8, src: &str, dst: &str) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        h.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        h
    }

    #[test]
    fn ipv6_replies_are_matched_by_id_and_magic() {
        let peer: Ipv6Addr = "fd00:203::2".parse().unwrap();
        // Our echo reply of a 1400-byte probe: 1360 bytes of ICMPv6 after the 40-byte header.
        let mut echo = vec![ICMP6_ECHO_REPLY, 0, 0xab, 0xcd, 0x12, 0x34, 0, 7];
        echo.extend_from_slice(MAGIC);
        echo.resize(1360, 0x5a);
        match parse_reply6(&echo, peer, 0x1234) {
            Some(Reply::Echo { from, seq, len }) => {
                assert_eq!(from, IpAddr::V6(peer));
                assert_eq!((seq, len), (7, 1400));
            }
            _ => panic!("our echo reply not recognised"),
        }
        assert!(
            parse_reply6(&echo, peer, 0x9999).is_none(),
            "someone else's ping"
        );
        assert!(
            parse_reply6(&echo[..6], peer, 0x1234).is_none(),
            "truncated"
        );
        let mut plain = echo.clone();
        plain[8..16].copy_from_slice(b"notours!");
        assert!(parse_reply6(&plain, peer, 0x1234).is_none(), "no magic");
        // An echo *request* (a ping toward us) is not a reply.
        let mut req = echo.clone();
        req[0] = ICMP6_ECHO_REQUEST;
        assert!(parse_reply6(&req, peer, 0x1234).is_none());

        // A router's packet-too-big (MTU 1400) quoting our 1500-byte request.
        let router: Ipv6Addr = "fd00:202::1".parse().unwrap();
        let mut tb = vec![ICMP6_PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x78];
        tb.extend(ipv6_header(1460, 58, "fd00:201::2", "fd00:203::2"));
        tb.extend_from_slice(&[ICMP6_ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 9]);
        tb.extend_from_slice(MAGIC);
        match parse_reply6(&tb, router, 0x1234) {
            Some(Reply::TooBig { from, seq, mtu }) => {
                assert_eq!(from, IpAddr::V6(router));
                assert_eq!((seq, mtu), (9, 1400));
            }
            _ => panic!("packet too big not recognised"),
        }
        // The MTU field is 32 bits: a jumbo hop's value is read whole.
        let mut big = tb.clone();
        big[4..8].copy_from_slice(&70000u32.to_be_bytes());
        assert!(matches!(
            parse_reply6(&big, router, 0x1234),
            Some(Reply::TooBig { mtu: 70000, .. })
        ));
        // About someone else's echo, about a UDP packet, or cut inside the quoted header: not ours.
        assert!(parse_reply6(&tb, router, 0x4321).is_none());
        let mut udp = tb.clone();
        udp[8 + 6] = 17;
        assert!(parse_reply6(&udp, router, 0x1234).is_none());
        assert!(parse_reply6(&tb[..8 + 30], router, 0x1234).is_none());
        assert!(parse_reply6(&tb[..8 + 44], router, 0x1234).is_none());
        // Another code of type 2 does not exist; a destination unreachable is not too-big.
        let mut unreach = tb.clone();
        unreach[0] = 1;
        assert!(parse_reply6(&unreach, router, 0x1234).is_none());
    }

    #[test]
    fn an_ipv6_peer_answering_only_the_small_probe_is_below_the_minimum() {
        let mut r = ProbeResult {
            peer: "fd00::2".parse().unwrap(),
            source: "--peer".into(),
            status: ProbeStatus::Ok,
            via: Some("eth0".into()),
            local_mtu: Some(1500),
            path_mtu: None,
            largest_ok: Some(MIN_SIZE),
            smallest_lost: Some(IPV6_MIN_MTU),
            exact: false,
            icmp_mtu: None,
            icmp_from: None,
            sent: 22,
            elapsed_ms: 700,
            detail: None,
        };
        assert!(r.below_ipv6_minimum());
        r.largest_ok = Some(IPV6_MIN_MTU);
        assert!(!r.below_ipv6_minimum());
        // IPv4 paths below 1280 are ordinary paths.
        r.largest_ok = Some(MIN_SIZE);
        r.peer = "10.0.0.2".parse().unwrap();
        assert!(!r.below_ipv6_minimum());
        r.peer = "fd00::2".parse().unwrap();
        r.status = ProbeStatus::NoReply;
        assert!(!r.below_ipv6_minimum());
    }

    #[test]
    fn receiver_slack_snaps_to_the_mtu_below() {
        // The lab's 1500 → 1450 veth lets 1454 through.
        assert_eq!(snap_to_known(1454, &[]), 1450);
        assert_eq!(snap_to_known(1450, &[]), 1450);
        // An uncommon MTU of a device seen in the namespace.
        assert_eq!(snap_to_known(1439, &[1437, 65536]), 1437);
        // The highest candidate wins: 1441 is within reach of 1437 and of the common 1440.
        assert_eq!(snap_to_known(1441, &[1437]), 1440);
        // Nothing known within 4 bytes: the measurement stands.
        assert_eq!(snap_to_known(1445, &[1437]), 1445);
        assert_eq!(snap_to_known(1500, &[1500]), 1500);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071's example bytes sum to 0xddf2 (one's complement: 0x220d).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // A packet with its checksum filled in sums to zero.
        let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3];
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&p), 0);
    }
}
