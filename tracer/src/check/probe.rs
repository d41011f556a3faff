//! The active path-MTU probe: ICMP echo requests of chosen sizes with DF set toward peer nodes,
//! from inside a node's namespace. The largest size that gets an answer is the path MTU that
//! node's tunnel packets meet, even where no router says so (an L2 mismatch drops silently).
//!
//! Bounded by construction: at most [`MAX_ROUNDS`] rounds of at most [`NARROW_SIZES`] sizes per
//! peer, each lost size re-sent once, each wait at most `timeout`, and no round started once
//! `budget` would be exceeded. Peers are probed together, so the cost is per namespace.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::netlink::{link::Link, route::route_to};

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
    /// An ICMP frag-needed answered a probe: the MTU a router advertised, and the router.
    pub icmp_mtu: Option<u32>,
    pub icmp_from: Option<IpAddr>,
    pub sent: u32,
    pub elapsed_ms: u64,
    pub detail: Option<String>,
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

/// Sizes for the next round: `None` when the search is over.
pub fn next_sizes(
    round: usize,
    max: u32,
    largest_ok: Option<u32>,
    smallest_lost: Option<u32>,
) -> Option<Vec<u32>> {
    if round == 0 {
        let mut v: Vec<u32> = std::iter::once(MIN_SIZE)
            .chain(COMMON.iter().copied().filter(|&s| s > MIN_SIZE && s < max))
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
    let lo = largest_ok?;
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
    addr: Ipv4Addr,
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
        let IpAddr::V4(v4) = p.addr else {
            r.detail = Some("IPv6 peers are not probed yet".into());
            done.push(r);
            continue;
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
                            addr: v4,
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
    if states.is_empty() {
        return done;
    }
    let sock = match RawIcmp::open() {
        Ok(s) => s,
        Err(e) => {
            let why = if e.kind() == io::ErrorKind::PermissionDenied {
                "needs CAP_NET_RAW (run as root)".to_string()
            } else {
                format!("raw ICMP socket: {e}")
            };
            for mut s in states {
                s.result.detail = Some(why.clone());
                done.push(s.result);
            }
            return done;
        }
    };
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
            if let Some(sizes) = next_sizes(round, s.max, s.ok, s.lost) {
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
                st.result.sent += 1;
                match sock.send_echo(st.addr, size, seq) {
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
                match sock.recv(left) {
                    Some(Reply::Echo { from, seq, len }) => {
                        if let Some(&(i, size)) = outstanding.get(&seq) {
                            if IpAddr::V4(states[i].addr) == from && len == size {
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
                        "no answer to ICMP echo, even of {MIN_SIZE} bytes (peer down or echo filtered)"
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
}

impl RawIcmp {
    fn open() -> io::Result<RawIcmp> {
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
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
        // Every raw ICMP socket of the namespace sees every reply: the id (and the payload's
        // magic) tell ours apart from a concurrent ping or a second audit.
        let id = (std::process::id() as u16) ^ (fd.as_raw_fd() as u16).rotate_left(8);
        Ok(RawIcmp { fd, id })
    }

    fn send_echo(&self, dst: Ipv4Addr, size: u32, seq: u16) -> io::Result<()> {
        let icmp_len = size.saturating_sub(20).max(8 + MAGIC.len() as u32) as usize;
        let mut pkt = vec![0u8; icmp_len];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&self.id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..16].copy_from_slice(MAGIC);
        for (i, b) in pkt[16..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let addr = SocketAddrV4::new(dst, 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One packet of interest, waiting at most `wait`; `None` on timeout or a foreign packet.
    fn recv(&self, wait: Duration) -> Option<Reply> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return None;
        }
        let mut buf = [0u8; 65536];
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return None;
        }
        parse_reply(&buf[..n as usize], self.id)
    }
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
        let s = next_sizes(0, 1500, None, None).unwrap();
        assert_eq!(s.first(), Some(&MIN_SIZE));
        assert_eq!(s.last(), Some(&1500));
        assert!(s.contains(&1450) && s.contains(&1430) && s.contains(&1280));
        assert!(s.len() <= MAX_SIZES);
        let jumbo = next_sizes(0, 9001, None, None).unwrap();
        assert_eq!(jumbo.len(), MAX_SIZES);
        assert_eq!((jumbo[0], *jumbo.last().unwrap()), (MIN_SIZE, 9001));
        assert!(jumbo.contains(&1500) && jumbo.contains(&9000));
    }

    #[test]
    fn later_rounds_narrow_to_the_exact_size() {
        // 1450 answered, 1460 lost: the next round tries every size in between.
        let s = next_sizes(1, 1500, Some(1450), Some(1460)).unwrap();
        assert_eq!(s, (1451..=1459).collect::<Vec<_>>());
        // A wide gap is split evenly, never touching the ends.
        let s = next_sizes(1, 1500, Some(96), Some(576)).unwrap();
        assert_eq!(s.len(), NARROW_SIZES);
        assert!(s.iter().all(|&x| x > 96 && x < 576));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        // Done: exact, nothing answered, the local MTU passed, or out of rounds.
        assert_eq!(next_sizes(1, 1500, Some(1450), Some(1451)), None);
        assert_eq!(next_sizes(1, 1500, None, Some(96)), None);
        assert_eq!(next_sizes(1, 1500, Some(1500), None), None);
        assert_eq!(next_sizes(MAX_ROUNDS, 1500, Some(96), Some(1500)), None);
    }

    #[test]
    fn any_path_mtu_is_found_within_the_rounds() {
        // Simulate the search against every path MTU between the minimum and 9001.
        for max in [1450u32, 1500, 9001] {
            for path in (MIN_SIZE..=max).step_by(7).chain([max, 1280, 1449]) {
                let (mut ok, mut lost) = (None::<u32>, None::<u32>);
                for round in 0..MAX_ROUNDS {
                    let Some(sizes) = next_sizes(round, max, ok, lost) else {
                        break;
                    };
                    for s in sizes {
                        if s <= path {
                            ok = Some(ok.map_or(s, |o| o.max(s)));
                        } else {
                            lost = Some(lost.map_or(s, |l| l.min(s)));
                        }
                    }
                }
                assert_eq!(ok, Some(path.min(max)), "max {max} path {path}");
                assert!(
                    path >= max || lost == Some(path + 1),
                    "max {max} path {path}: lost {lost:?}"
                );
            }
        }
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
