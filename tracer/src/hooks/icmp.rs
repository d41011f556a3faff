//! User half of `tracer-ebpf/src/icmp.rs`: the kernel generating ICMP too-big messages.
//!
//! Preference: kprobes on `__icmp_send` / `icmp6_send` (they see the advertised MTU), else the
//! `icmp:icmp_send` tracepoint (IPv4 only, no MTU: the tc egress hook then recovers the MTU from
//! the ICMP packet leaving). Both are reported so the operator knows what is blind.
use aya::Ebpf;
use tracer_common::{flags, Event, EventKind, Hook};

use super::{attach_kprobe, attach_tracepoint, explain_kprobe, Attempt, Outcome};
use crate::{
    event::{IcmpTooBig, MtuSource, Record},
    kernel::tracefs,
};

/// How the hook is reported.
const CONCERN: &str = "icmp-sent";

/// A kprobe or tracepoint attach, its refusal explained.
fn outcome(r: anyhow::Result<()>) -> Outcome {
    Outcome::of(r).explained(explain_kprobe)
}

pub fn attach(ebpf: &mut Ebpf) -> Vec<Attempt> {
    let mut report = Vec::new();
    let v4 = attach_kprobe(ebpf, "icmp_send_kprobe", "__icmp_send");
    let v4_ok = v4.is_ok();
    report.push(Attempt::new(CONCERN, "kprobe/__icmp_send", outcome(v4)));
    report.push(Attempt::new(
        CONCERN,
        "kprobe/icmp6_send",
        outcome(attach_kprobe(ebpf, "icmp6_send_kprobe", "icmp6_send")),
    ));
    if v4_ok {
        report.push(Attempt::new(
            CONCERN,
            "tracepoint/icmp/icmp_send",
            Outcome::Skipped("kprobe gives more".into()),
        ));
    } else if !tracefs::exists("icmp", "icmp_send") {
        report.push(Attempt::new(
            CONCERN,
            "tracepoint/icmp/icmp_send",
            Outcome::Failed("tracepoint absent on this kernel (added in 6.10)".into()),
        ));
    } else {
        let tp = attach_tracepoint(ebpf, "icmp_send_tracepoint", "icmp", "icmp_send");
        report.push(Attempt::new(
            CONCERN,
            "tracepoint/icmp/icmp_send",
            outcome(tp),
        ));
    }
    report
}

pub(super) fn decode(rec: &mut Record, ev: &Event) {
    let from_generator = matches!(
        Hook::from_u8(ev.hook),
        Some(Hook::IcmpSendKprobe | Hook::Icmp6SendKprobe | Hook::IcmpSendTracepoint)
    );
    if from_generator && EventKind::from_u8(ev.kind) == Some(EventKind::IcmpTooBigSent) {
        // The captured packet is the offending one, not the ICMP message: its flow is the flow
        // the ICMP is about, and the message goes back to that flow's source.
        let advertised = ev.flags & flags::MTU_ADVERTISED != 0 && ev.mtu != 0;
        rec.icmp = rec.flow.src.map(|to| IcmpTooBig {
            from: None,
            to,
            icmp_type: ev.aux1 as u8,
            code: ev.aux2 as u8,
            mtu: advertised.then_some(ev.mtu),
        });
        if advertised {
            rec.size.mtu = Some(ev.mtu);
            rec.size.mtu_source = Some(MtuSource::Icmp);
        } else if let Some(out) = rec.route.out_mtu {
            // Without the kprobe the message's MTU is not visible here; the kernel advertises
            // the MTU of the route the packet was refused on.
            rec.size.mtu = Some(out);
            rec.size.mtu_source = Some(MtuSource::Route);
        } else {
            rec.size.mtu = None;
            rec.size.mtu_source = None;
        }
        return;
    }
    // tc hooks: the packet IS the ICMP message; the decoder already filled `icmp` and the quoted
    // flow. The MTU that matters is the advertised one, not the device's.
    match rec.icmp.as_ref().and_then(|i| i.mtu) {
        Some(mtu) => {
            rec.size.mtu = Some(mtu);
            rec.size.mtu_source = Some(MtuSource::Icmp);
        }
        None => {
            rec.size.mtu = None;
            rec.size.mtu_source = None;
        }
    }
}
