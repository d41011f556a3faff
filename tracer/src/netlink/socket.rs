//! The netlink socket and message framing every family shares: open a socket in the calling
//! thread's namespace, send one request, read its answer (a dump or a single reply), listen to
//! multicast groups. The datagram parsers take untrusted bytes and never index past what they
//! checked.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::attr::align4;

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
        let mut out = Vec::new();
        self.request_each(kind, flags, body, reply, |payload| {
            out.push(payload.to_vec())
        })?;
        Ok(out)
    }

    /// [`Socket::request`] handing each payload to `each` as it is read, in the receive
    /// buffer: a dump of any size costs one 64 KiB buffer, not a copy of every message (the
    /// conntrack table of a busy node holds hundreds of thousands).
    pub fn request_each(
        &self,
        kind: u16,
        flags: u16,
        body: &[u8],
        reply: u16,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
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
        let mut answered = false;
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
                return Ok(());
            }
            let complete = read_answer(&buf[..n as usize], reply, dump, |payload| {
                answered = true;
                each(payload)
            })?;
            if complete || (!dump && answered) {
                return Ok(());
            }
        }
    }
}

/// One request of `kind` over a new NETLINK_ROUTE socket of the calling thread's namespace (see
/// [`Socket::request`]); `name` names it in errors.
pub fn route_request(
    name: &str,
    kind: u16,
    flags: u16,
    body: &[u8],
    reply: u16,
) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context as _;
    Socket::open(libc::NETLINK_ROUTE)
        .context("netlink socket")?
        .request(kind, flags, body, reply)
        .with_context(|| format!("netlink: {name}"))
}

/// Hand each payload of a `reply` message of one received datagram to `each`; `Ok(true)` once
/// the answer is complete (`NLMSG_DONE`, or the acknowledgement of a request that is not a
/// dump). An error answer is the error of its errno; a truncated datagram is `InvalidData`.
pub fn read_answer<'a>(
    datagram: &'a [u8],
    reply: u16,
    dump: bool,
    mut each: impl FnMut(&'a [u8]),
) -> io::Result<bool> {
    for m in messages(datagram)? {
        match m.kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => match error_code(m.payload) {
                0 if dump => {}
                0 => return Ok(true),
                errno => return Err(io::Error::from_raw_os_error(-errno)),
            },
            t if t == reply => {
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    // The table changed mid-dump: what arrived is still a fair picture for
                    // names and an audit, so keep it rather than loop.
                    log::debug!("netlink dump interrupted by a change");
                }
                each(m.payload);
            }
            _ => {}
        }
    }
    Ok(false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr::testing::message;

    #[test]
    fn datagrams_split_and_truncation_is_an_error_not_a_panic() {
        let mut d = message(24, &[1, 2, 3]);
        d.extend(message(NLMSG_DONE, &[0; 4]));
        let ms = messages(&d).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].kind, 24);
        assert_eq!(ms[0].payload, &[1, 2, 3]);
        assert_eq!(ms[1].kind, NLMSG_DONE);
        for cut in 1..d.len() {
            // Any prefix either splits or is refused; never a panic.
            let _ = messages(&d[..cut]);
        }
        let mut bad = message(24, &[0; 8]);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
    }

    #[test]
    fn an_answer_ends_with_done_an_acknowledgement_or_an_error() {
        let mut payloads = Vec::new();
        let dump = [
            message(24, &[1]),
            message(24, &[2]),
            message(NLMSG_DONE, &[0; 4]),
        ]
        .concat();
        assert!(read_answer(&dump, 24, true, |p| payloads.push(p[0])).unwrap());
        assert_eq!(payloads, [1, 2]);
        let ack = message(NLMSG_ERROR, &0i32.to_ne_bytes());
        assert!(read_answer(&ack, 24, false, |_| {}).unwrap());
        assert!(!read_answer(&ack, 24, true, |_| {}).unwrap());
        let eperm = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let err = read_answer(&eperm, 24, true, |_| {}).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
}
