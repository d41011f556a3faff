//! User half of `tracer-ebpf/src/tcp.rs`: TCP retransmissions.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::Ebpf;
use tracer_common::{flags, Event};

use super::{attach_tracepoint, Attempt, Outcome};
use crate::event::Record;

pub fn attach(ebpf: &mut Ebpf) -> Vec<Attempt> {
    let r = attach_tracepoint(
        ebpf,
        "tcp_retransmit_tracepoint",
        "tcp",
        "tcp_retransmit_skb",
    );
    vec![Attempt::new(
        "tcp-retrans",
        "tracepoint/tcp/tcp_retransmit_skb",
        Outcome::of(r),
    )]
}

/// TCP states are UAPI (include/net/tcp_states.h) and have never been renumbered.
pub fn tcp_state_name(state: u32) -> Option<&'static str> {
    const NAMES: [&str; 13] = [
        "TCP_ESTABLISHED",
        "TCP_SYN_SENT",
        "TCP_SYN_RECV",
        "TCP_FIN_WAIT1",
        "TCP_FIN_WAIT2",
        "TCP_TIME_WAIT",
        "TCP_CLOSE",
        "TCP_CLOSE_WAIT",
        "TCP_LAST_ACK",
        "TCP_LISTEN",
        "TCP_CLOSING",
        "TCP_NEW_SYN_RECV",
        "TCP_BOUND_INACTIVE",
    ];
    NAMES.get((state as usize).checked_sub(1)?).copied()
}

pub(super) fn decode(rec: &mut Record, ev: &Event) {
    if ev.flags & flags::HAS_FLOW == 0 {
        return;
    }
    let f = &ev.flow;
    let (src, dst): (IpAddr, IpAddr) = if f.family == 10 {
        (
            Ipv6Addr::from(f.saddr).into(),
            Ipv6Addr::from(f.daddr).into(),
        )
    } else {
        let s: [u8; 4] = [f.saddr[0], f.saddr[1], f.saddr[2], f.saddr[3]];
        let d: [u8; 4] = [f.daddr[0], f.daddr[1], f.daddr[2], f.daddr[3]];
        (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into())
    };
    rec.flow.proto = Some(6);
    rec.flow.src = Some(src);
    rec.flow.dst = Some(dst);
    rec.flow.sport = Some(f.sport);
    rec.flow.dport = Some(f.dport);
    rec.tcp_state = tcp_state_name(ev.aux1).map(str::to_string);
    if ev.flags & flags::HAS_TCP_SEQ != 0 {
        rec.tcp_seq = Some(ev.aux2);
    }
    if ev.gso_size != 0 {
        rec.size.gso_size = Some(ev.gso_size as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_states_follow_the_uapi_numbering() {
        assert_eq!(tcp_state_name(1), Some("TCP_ESTABLISHED"));
        assert_eq!(tcp_state_name(10), Some("TCP_LISTEN"));
        assert_eq!(tcp_state_name(0), None);
        assert_eq!(tcp_state_name(99), None);
    }
}
