//! The netlink plumbing shared by the route dump (node-local names), the MTU audit's link,
//! route, route-cache and FDB requests, and the conntrack dump: one socket type, one message
//! splitter, one attribute parser.
//!
//! Hand-written rather than through rtnetlink / netlink-packet-*: the tracer sends a handful
//! of requests and reads a few attributes of each answer; the crates bring a dozen more
//! crates and their version churn for the same result. The parsers take untrusted bytes and
//! never index past what they checked.
//!
//! Sockets are created in the calling thread's network namespace, so everything here works
//! inside `Netns::enter`.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

pub const NLMSG_HDR_LEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_DUMP_INTR: u16 = 0x10;

/// One netlink message of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub payload: &'a [u8],
}

/// Split one received datagram into its messages. A message whose length field points past
/// the datagram is an error (the rest cannot be trusted); trailing bytes shorter than a header
/// are ignored.
pub fn messages(mut buf: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "netlink message of {len} bytes in a {}-byte datagram",
                    buf.len()
                ),
            ));
        }
        out.push(Message {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            payload: &buf[NLMSG_HDR_LEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The errno of an NLMSG_ERROR payload (0 = an acknowledgement).
pub fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(0..4)
        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

pub struct Socket(OwnedFd);

impl Socket {
    /// A netlink socket of `protocol` (`libc::NETLINK_ROUTE`, `libc::NETLINK_NETFILTER`).
    pub fn open(protocol: i32) -> io::Result<Socket> {
        // SAFETY: plain syscall; the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Give up waiting for an answer after `timeout` (the request then fails with
    /// `WouldBlock`): a background refresher must not hang on a surprise.
    pub fn set_receive_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        self.set_socket_option(libc::SO_RCVTIMEO, &tv)
    }

    /// `setsockopt(SOL_SOCKET, name, value)`.
    fn set_socket_option<T>(&self, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` outlives the call and its size is given.
        let r = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Send one request of `kind` (`body`: the family header and any attributes, encoded)
    /// and collect the payloads of every answer of type `reply`, until the dump ends (with
    /// `NLM_F_DUMP`) or the first answer (without).
    pub fn request(
        &self,
        kind: u16,
        flags: u16,
        body: &[u8],
        reply: u16,
    ) -> io::Result<Vec<Vec<u8>>> {
        let len = NLMSG_HDR_LEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        msg.extend_from_slice(body);
        // SAFETY: a zeroed sockaddr_nl is the kernel as destination.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` and `addr` outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP != 0;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(out);
            }
            for m in messages(&buf[..n as usize])? {
                match m.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = error_code(m.payload);
                        if errno == 0 && !dump {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    t if t == reply => {
                        if m.flags & NLM_F_DUMP_INTR != 0 {
                            // The table changed mid-dump: what arrived is still a fair picture
                            // for names and an audit, so keep it rather than loop.
                            log::debug!("netlink dump interrupted by a change");
                        }
                        out.push(m.payload.to_vec());
                    }
                    _ => {}
                }
            }
            if !dump && !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

impl Socket {
    /// Listen to the multicast `groups` (`RTMGRP_*` bits) of the calling thread's namespace,
    /// with a receive buffer of `rcvbuf` bytes (the kernel caps it at `net.core.rmem_max`).
    pub fn subscribe(&self, groups: u32, rcvbuf: usize) -> io::Result<()> {
        // A failure leaves the default buffer, and an overflow is then noticed as ENOBUFS.
        let _ = self.set_socket_option(libc::SO_RCVBUF, &(rcvbuf as libc::c_int));
        // SAFETY: a zeroed sockaddr_nl with the family and groups set.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        // SAFETY: `addr` outlives the call; its length is given.
        let r = unsafe {
            libc::bind(
                self.0.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram, without waiting: `Ok(None)` when nothing is queued. `ENOBUFS` means
    /// notifications were lost (the socket's buffer overflowed).
    pub fn recv_nonblocking(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// `(type, value)` of each attribute (`rtattr` / `nlattr`) in `data`, the nested/byte-order
/// flag bits stripped from the type; stops at the first malformed one.
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

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address attribute.
pub fn attr_ip(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn datagrams_split_and_truncation_is_an_error_not_a_panic() {
        let mut d = msg(24, &[1, 2, 3]);
        d.extend(msg(NLMSG_DONE, &[0; 4]));
        let ms = messages(&d).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].kind, 24);
        assert_eq!(ms[0].payload, &[1, 2, 3]);
        assert_eq!(ms[1].kind, NLMSG_DONE);
        for cut in 1..d.len() {
            // Any prefix either splits or is refused; never a panic.
            let _ = messages(&d[..cut]);
        }
        let mut bad = msg(24, &[0; 8]);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
    }

    #[test]
    fn attributes_stop_at_garbage() {
        let mut a = Vec::new();
        a.extend_from_slice(&8u16.to_ne_bytes());
        a.extend_from_slice(&(0x8000u16 | 4).to_ne_bytes()); // NLA_F_NESTED | 4
        a.extend_from_slice(&1450u32.to_ne_bytes());
        a.extend_from_slice(&[200, 0, 1, 0]); // claims 200 bytes
        let v = attrs(&a);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, 4);
        assert_eq!(attr_u32(v[0].1), Some(1450));
        assert_eq!(attr_ip(&[10, 0, 0, 1]), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(attr_ip(&[1, 2, 3]), None);
    }
}
