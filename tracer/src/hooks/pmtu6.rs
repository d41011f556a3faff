//! User half of `tracer-ebpf/src/pmtu6.rs`: the kernel recording a smaller IPv6 path MTU.
//!
//! Preference, as for IPv4 (`pmtu.rs`): `fentry/__ip6_rt_update_pmtu`, else a kprobe on the
//! same function, else nothing and a `blind:` line of its own: one family can be seen while the
//! other is not, and the verdict must not claim for IPv6 what only IPv4 showed.
use std::net::{IpAddr, Ipv6Addr};

use aya::{Btf, Ebpf};
use tracer_common::{Event, Pmtu6Offsets, NO_FIELD};

use super::{Attempt, Outcome};
use crate::{
    event::{MtuSource, Record},
    kernel::btf,
};

/// The kernel function every IPv6 path-MTU update goes through.
pub const FUNCTION: &str = "__ip6_rt_update_pmtu";

/// How the hook is reported (the IPv4 one is `pmtu-learned`).
pub const CONCERN: &str = "pmtu6-learned";

/// Where the program finds the route's MTU and the flow on this kernel.
pub fn offsets(vmlinux: &btf::Btf) -> Pmtu6Offsets {
    let field = |s: &str, f: &str| {
        btf::field_offset(vmlinux, s, f)
            .ok()
            .flatten()
            .unwrap_or(NO_FIELD)
    };
    let mut o = Pmtu6Offsets::unresolved();
    o.dst_dev = field("dst_entry", "dev");
    o.dst_metrics = field("dst_entry", "_metrics");
    o.sk_daddr = field("sock", "__sk_common.skc_v6_daddr");
    o.sk_saddr = field("sock", "__sk_common.skc_v6_rcv_saddr");
    // A plain u16 since 5.6; a bitfield before (not read then: the protocol stays unknown).
    if btf::bitfield_u32(vmlinux, "sock", "sk_protocol")
        .ok()
        .flatten()
        .is_none()
    {
        o.sk_protocol = field("sock", "sk_protocol");
    }
    o
}

/// Attach the IPv6 path-MTU hook, as IPv4's is attached. Without the route's device and its
/// metrics nothing is worth attaching.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, offsets: &Pmtu6Offsets) -> Vec<Attempt> {
    let missing = (offsets.dst_dev == NO_FIELD || offsets.dst_metrics == NO_FIELD)
        .then_some("this kernel's BTF has no dst_entry.dev / dst_entry._metrics");
    super::pmtu::attach_learning(ebpf, btf, CONCERN, FUNCTION, "pmtu6_update", missing)
}

/// The blind spot when neither method attached, in the operator's terms.
pub fn blind_spot(report: &[Attempt]) -> Option<String> {
    let attached = report
        .iter()
        .any(|a| a.concern == CONCERN && a.outcome == Outcome::Attached);
    (!attached).then(|| {
        "IPv6 path-MTU learning (no fentry/kprobe on __ip6_rt_update_pmtu): cannot tell a \
         packet too big that reached the sender's stack from one that never arrived"
            .to_string()
    })
}

pub(super) fn decode(rec: &mut Record, ev: &Event) {
    // The MTU the kernel was asked to record (it ignores values below 1280); the route's
    // device and its MTU are `out_*`.
    rec.size.mtu = (ev.mtu != 0).then_some(ev.mtu);
    rec.size.mtu_source = rec.size.mtu.map(|_| MtuSource::Pmtu);
    let f = &ev.flow;
    let addr = |a: &[u8; 16]| IpAddr::from(Ipv6Addr::from(*a));
    rec.flow.src = Some(addr(&f.saddr)).filter(|a| !a.is_unspecified());
    rec.flow.dst = Some(addr(&f.daddr)).filter(|a| !a.is_unspecified());
    rec.flow.proto = (f.proto != 0).then_some(f.proto);
    // No ports: neither the quoted header's fixed part nor the socket's addresses carry them;
    // the learner is told by its namespace.
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{flags, EventKind, Hook};

    fn update() -> Event {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::PmtuUpdate as u8;
        ev.hook = Hook::Pmtu6UpdateFentry as u8;
        ev.netns = 4026532001;
        ev.mtu = 1400;
        ev.flags = flags::HAS_OUT_DEV | flags::HAS_FLOW;
        ev.out_mtu = 1500;
        ev.out_ifindex = 2;
        ev.out_ifname[..4].copy_from_slice(b"eth0");
        ev.flow.family = 10;
        ev.flow.proto = 58;
        let src: Ipv6Addr = "fd00:207:1::2".parse().unwrap();
        let dst: Ipv6Addr = "fd00:207:2::2".parse().unwrap();
        ev.flow.saddr = src.octets();
        ev.flow.daddr = dst.octets();
        ev
    }

    #[test]
    fn an_update_names_the_ipv6_addresses_and_the_learned_mtu() {
        let ev = update();
        let mut rec = Record::new(crate::event::Kind::PmtuUpdate, "fentry/x", 0);
        decode(&mut rec, &ev);
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1400), Some(MtuSource::Pmtu))
        );
        assert_eq!(rec.flow.src.unwrap().to_string(), "fd00:207:1::2");
        assert_eq!(rec.flow.dst.unwrap().to_string(), "fd00:207:2::2");
        assert_eq!(rec.flow.proto, Some(58));
        assert_eq!((rec.flow.sport, rec.flow.dport), (None, None));
    }

    #[test]
    fn offsets_come_from_the_running_kernels_btf() {
        let vmlinux = btf::load_vmlinux().unwrap();
        let o = offsets(&vmlinux);
        assert_ne!(o.dst_dev, NO_FIELD);
        assert_ne!(o.dst_metrics, NO_FIELD);
        assert_eq!(o.dst_metrics % 8, 0, "a pointer-sized field");
        // The socket's IPv6 addresses are 16 bytes each, adjacent in sock_common.
        assert_eq!(o.sk_saddr, o.sk_daddr + 16);
        assert_ne!(o.sk_protocol, NO_FIELD);
    }

    #[test]
    fn the_blind_spot_is_its_own_not_the_ipv4_hooks() {
        let ipv4 = Attempt::new(
            super::super::pmtu::CONCERN,
            "fentry/__ip_rt_update_pmtu",
            Outcome::Attached,
        );
        let failed = |m: &str| Attempt::new(CONCERN, m, Outcome::Failed("refused".into()));
        let report = vec![
            ipv4,
            failed("fentry/__ip6_rt_update_pmtu"),
            failed("kprobe/__ip6_rt_update_pmtu"),
        ];
        let blind = blind_spot(&report).unwrap();
        assert!(blind.starts_with("IPv6 path-MTU learning"), "{blind}");
        let fallback = vec![
            failed("fentry/__ip6_rt_update_pmtu"),
            Attempt::new(CONCERN, "kprobe/__ip6_rt_update_pmtu", Outcome::Attached),
        ];
        assert_eq!(blind_spot(&fallback), None);
    }
}
