//! User half of `tracer-ebpf/src/pmtu.rs`: the kernel recording a smaller IPv4 path MTU.
//!
//! Preference: `fentry/__ip_rt_update_pmtu` (BTF trampoline, cheapest), else a kprobe on the
//! same function, else nothing and a `blind:` line: without it the tracer cannot tell an ICMP
//! too-big that reached its sender's stack from one that never arrived.
use std::net::{IpAddr, Ipv4Addr};

use aya::{programs::FEntry, Btf, Ebpf};
use tracer_common::{Event, PmtuOffsets, NO_FIELD};

use super::{attach_kprobe, explain_fentry, explain_kprobe, program, Attempt, Outcome};
use crate::{
    event::{MtuSource, Record},
    kernel::btf,
};

/// The kernel function every IPv4 path-MTU update goes through.
pub const FUNCTION: &str = "__ip_rt_update_pmtu";

/// How the hook is reported.
pub const CONCERN: &str = "pmtu-learned";

/// Where the program finds the route's MTU and the flow on this kernel.
pub fn offsets(vmlinux: &btf::Btf) -> PmtuOffsets {
    let mut o = PmtuOffsets::unresolved();
    let field = |s: &str, f: &str| {
        btf::field_offset(vmlinux, s, f)
            .ok()
            .flatten()
            .unwrap_or(NO_FIELD)
    };
    o.rt_dev = field("rtable", "dst.dev");
    o.fl4_saddr = field("flowi4", "saddr");
    o.fl4_daddr = field("flowi4", "daddr");
    o.fl4_ports = field("flowi4", "uli.ports");
    o.fl4_proto = field("flowi4", "__fl_common.flowic_proto");
    // rt_pmtu is `u32 rt_pmtu: 31` since 4.15; a plain field on a kernel that changed that.
    match btf::bitfield_u32(vmlinux, "rtable", "rt_pmtu")
        .ok()
        .flatten()
    {
        Some((word, shift, _)) => {
            o.rt_pmtu_word = word;
            o.rt_pmtu_shift = shift;
        }
        None => o.rt_pmtu_word = field("rtable", "rt_pmtu"),
    }
    o
}

/// Attach the path-MTU hook. `offsets` are what [`offsets`] found: without the route's device
/// and the flow's destination nothing is worth attaching.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, offsets: &PmtuOffsets) -> Vec<Attempt> {
    let missing = (offsets.rt_dev == NO_FIELD || offsets.fl4_daddr == NO_FIELD)
        .then_some("this kernel's BTF has no rtable.dst.dev / flowi4.daddr");
    attach_learning(ebpf, btf, CONCERN, FUNCTION, "pmtu_update", missing)
}

/// A path-MTU learning hook of either family on `function`: `fentry` (program
/// `{program_stem}_fentry`), else a kprobe (`{program_stem}_kprobe`), each outcome reported under
/// `concern`; both failed with `missing` when the BTF lacks what the programs read.
/// TRACER_PMTU_HOOK=kprobe (troubleshooting, and the test of the fallback) skips fentry.
pub(super) fn attach_learning(
    ebpf: &mut Ebpf,
    btf: &Btf,
    concern: &'static str,
    function: &str,
    program_stem: &str,
    missing: Option<&str>,
) -> Vec<Attempt> {
    let fentry_method = format!("fentry/{function}");
    let kprobe_method = format!("kprobe/{function}");
    if let Some(why) = missing {
        return vec![
            Attempt::new(concern, &fentry_method, Outcome::Failed(why.to_string())),
            Attempt::new(concern, &kprobe_method, Outcome::Failed(why.to_string())),
        ];
    }
    let forced = std::env::var("TRACER_PMTU_HOOK").is_ok_and(|v| v == "kprobe");
    let fentry = (|| -> anyhow::Result<()> {
        if forced {
            anyhow::bail!("skipped: TRACER_PMTU_HOOK=kprobe");
        }
        let prog: &mut FEntry = program(ebpf, &format!("{program_stem}_fentry"))?.try_into()?;
        prog.load(function, btf)?;
        prog.attach()?;
        Ok(())
    })();
    let fentry = Outcome::of(fentry).explained(explain_fentry);
    let attached = fentry == Outcome::Attached;
    let mut report = vec![Attempt::new(concern, fentry_method, fentry)];
    if attached {
        report.push(Attempt::new(
            concern,
            kprobe_method,
            Outcome::Skipped("fentry attached".into()),
        ));
        return report;
    }
    let kprobe = attach_kprobe(ebpf, &format!("{program_stem}_kprobe"), function);
    report.push(Attempt::new(
        concern,
        kprobe_method,
        Outcome::of(kprobe).explained(explain_kprobe),
    ));
    report
}

/// The blind spot when neither method attached, in the operator's terms.
pub fn blind_spot(report: &[Attempt]) -> Option<String> {
    let attached = report
        .iter()
        .any(|a| a.concern == CONCERN && a.outcome == Outcome::Attached);
    (!attached).then(|| {
        "path-MTU learning (no fentry/kprobe on __ip_rt_update_pmtu): cannot tell an ICMP \
         too-big that reached the sender's stack from one that never arrived"
            .to_string()
    })
}

pub(super) fn decode(rec: &mut Record, ev: &Event) {
    // The MTU the kernel was asked to record (it raises values below
    // net.ipv4.route.min_pmtu to that floor); the route's device and its MTU are `out_*`.
    rec.size.mtu = (ev.mtu != 0).then_some(ev.mtu);
    rec.size.mtu_source = rec.size.mtu.map(|_| MtuSource::Pmtu);
    let f = &ev.flow;
    let addr = |a: &[u8; 16]| IpAddr::from(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
    rec.flow.src = Some(addr(&f.saddr)).filter(|a| !a.is_unspecified());
    rec.flow.dst = Some(addr(&f.daddr)).filter(|a| !a.is_unspecified());
    rec.flow.proto = (f.proto != 0).then_some(f.proto);
    // The kernel's flow key carries no ports (`build_sk_flow_key` and `__build_flow_key` pass
    // 0): the learner is told by its namespace. Kept should a kernel fill them in.
    if f.sport != 0 || f.dport != 0 {
        rec.flow.sport = Some(f.sport);
        rec.flow.dport = Some(f.dport);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{flags, EventKind, Hook};

    fn update(sport: u16, dport: u16) -> Event {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::PmtuUpdate as u8;
        ev.hook = Hook::PmtuUpdateFentry as u8;
        ev.netns = 4026532001;
        ev.mtu = 1430;
        ev.aux1 = 0;
        ev.flags = flags::HAS_OUT_DEV | flags::HAS_FLOW;
        ev.out_mtu = 1480;
        ev.out_ifindex = 5;
        ev.out_ifname[..5].copy_from_slice(b"tunl0");
        ev.flow.family = 2;
        ev.flow.proto = 6;
        ev.flow.saddr[..4].copy_from_slice(&[10, 244, 1, 5]);
        ev.flow.daddr[..4].copy_from_slice(&[10, 244, 2, 7]);
        ev.flow.sport = sport;
        ev.flow.dport = dport;
        ev
    }

    fn decoded(ev: &Event) -> Record {
        let mut rec = Record::new(crate::event::Kind::PmtuUpdate, "fentry/x", 0);
        // As hooks::decode does before the hook's own decoder.
        rec.route.out_ifname = super::super::c_name(&ev.out_ifname).map(Into::into);
        rec.route.out_mtu = Some(ev.out_mtu);
        rec.size.mtu = Some(ev.mtu);
        rec.size.mtu_source = Some(MtuSource::Device);
        decode(&mut rec, ev);
        rec
    }

    #[test]
    fn an_update_with_ports_names_the_connection_and_the_learned_mtu() {
        let rec = decoded(&update(43210, 8080));
        assert_eq!(
            (rec.size.mtu, rec.size.mtu_source),
            (Some(1430), Some(MtuSource::Pmtu))
        );
        assert_eq!(rec.flow.proto, Some(6));
        assert_eq!(rec.flow.src.unwrap().to_string(), "10.244.1.5");
        assert_eq!(rec.flow.dst.unwrap().to_string(), "10.244.2.7");
        assert_eq!((rec.flow.sport, rec.flow.dport), (Some(43210), Some(8080)));
        assert_eq!(rec.route.out_ifname.as_deref(), Some("tunl0"));
        assert_eq!(rec.route.out_mtu, Some(1480));
    }

    #[test]
    fn an_update_without_ports_names_the_addresses_only() {
        let rec = decoded(&update(0, 0));
        assert_eq!((rec.flow.sport, rec.flow.dport), (None, None));
        assert_eq!(rec.flow.dst.unwrap().to_string(), "10.244.2.7");
    }

    #[test]
    fn offsets_come_from_the_running_kernels_btf() {
        let vmlinux = btf::load_vmlinux().unwrap();
        let o = offsets(&vmlinux);
        // rtable starts with its dst_entry, so the device is where dst_entry has it.
        assert_eq!(
            Some(o.rt_dev),
            btf::field_offset(&vmlinux, "dst_entry", "dev").unwrap()
        );
        // flowi4: the common part, then saddr, daddr and the ports, each 4 bytes.
        assert_eq!(o.fl4_daddr, o.fl4_saddr + 4);
        assert_eq!(o.fl4_ports, o.fl4_daddr + 4);
        assert!(o.fl4_proto < o.fl4_saddr);
        // rt_pmtu: 31 bits after the 1-bit rt_mtu_locked, inside one aligned word.
        assert_ne!(o.rt_pmtu_word, NO_FIELD);
        assert_eq!(o.rt_pmtu_shift, 1);
        assert_eq!(o.rt_pmtu_word % 4, 0);
    }

    #[test]
    fn the_blind_spot_is_reported_only_when_no_method_attached() {
        let failed = |m: &str| Attempt::new(CONCERN, m, Outcome::Failed("refused".into()));
        let both_failed = vec![
            failed("fentry/__ip_rt_update_pmtu"),
            failed("kprobe/__ip_rt_update_pmtu"),
        ];
        let blind = blind_spot(&both_failed).unwrap();
        assert!(blind.contains("never arrived"), "{blind}");
        let fallback = vec![
            failed("fentry/__ip_rt_update_pmtu"),
            Attempt::new(CONCERN, "kprobe/__ip_rt_update_pmtu", Outcome::Attached),
        ];
        assert_eq!(blind_spot(&fallback), None);
    }

    #[test]
    fn fentry_refusals_are_explained() {
        let e = explain_fentry("loading program: Operation not permitted (os error 1)");
        assert!(e.starts_with("kernel refuses fentry"), "{e}");
        assert_eq!(explain_fentry("other"), "other");
    }
}
