//! User half of `tracer-ebpf/src/icmp.rs`: the kernel generating ICMP too-big messages.
//!
//! Preference: kprobes on `__icmp_send` / `icmp6_send` (they see the advertised MTU), else the
//! `icmp:icmp_send` tracepoint (IPv4 only, no MTU: the tc egress hook then recovers the MTU from
//! the ICMP packet leaving). Both are reported so the operator knows what is blind.
use aya::{
    programs::{KProbe, TracePoint},
    Ebpf,
};
use tracer_common::{flags, Event, EventKind, Hook};

use super::{drops::program, Attempt, Outcome};
use crate::{
    event::{IcmpTooBig, Record},
    kernel::tracefs,
};

pub fn attach(ebpf: &mut Ebpf) -> Vec<Attempt> {
    let mut report = Vec::new();
    let v4 = kprobe(ebpf, "icmp_send_kprobe", "__icmp_send");
    let v4_ok = v4.is_ok();
    report.push(attempt("kprobe/__icmp_send", outcome(v4)));
    report.push(attempt(
        "kprobe/icmp6_send",
        outcome(kprobe(ebpf, "icmp6_send_kprobe", "icmp6_send")),
    ));
    if v4_ok {
        report.push(attempt(
            "tracepoint/icmp/icmp_send",
            Outcome::Skipped("kprobe gives more".into()),
        ));
    } else if !tracefs::exists("icmp", "icmp_send") {
        report.push(attempt(
            "tracepoint/icmp/icmp_send",
            Outcome::Failed("tracepoint absent on this kernel (added in 6.10)".into()),
        ));
    } else {
        let tp = (|| -> anyhow::Result<()> {
            let prog: &mut TracePoint = program(ebpf, "icmp_send_tracepoint")?.try_into()?;
            prog.load()?;
            prog.attach("icmp", "icmp_send")?;
            Ok(())
        })();
        report.push(attempt("tracepoint/icmp/icmp_send", outcome(tp)));
    }
    report
}

fn kprobe(ebpf: &mut Ebpf, prog_name: &str, function: &str) -> anyhow::Result<()> {
    let prog: &mut KProbe = program(ebpf, prog_name)?.try_into()?;
    prog.load()?;
    prog.attach(function, 0)?;
    Ok(())
}

fn outcome(r: anyhow::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Attached,
        Err(e) => Outcome::Failed(explain(&format!("{e:#}"))),
    }
}

/// Turn the kernel's terse refusals into what they mean.
pub(super) fn explain(err: &str) -> String {
    if err.contains("kprobe/type") || err.contains("event_source/devices/kprobe") {
        format!("kernel without kprobes (CONFIG_KPROBES off): {err}")
    } else {
        err.to_string()
    }
}

fn attempt(method: &str, outcome: Outcome) -> Attempt {
    Attempt {
        concern: "icmp-sent",
        method: method.to_string(),
        outcome,
    }
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
        rec.icmp = rec.src.map(|to| IcmpTooBig {
            from: None,
            to,
            icmp_type: ev.aux1 as u8,
            code: ev.aux2 as u8,
            mtu: advertised.then_some(ev.mtu),
        });
        if advertised {
            rec.mtu = Some(ev.mtu);
            rec.mtu_source = Some("icmp");
        } else if let Some(out) = rec.out_mtu {
            // Without the kprobe the message's MTU is not visible here; the kernel advertises
            // the MTU of the route the packet was refused on.
            rec.mtu = Some(out);
            rec.mtu_source = Some("route");
        } else {
            rec.mtu = None;
            rec.mtu_source = None;
        }
        return;
    }
    // tc hooks: the packet IS the ICMP message; the decoder already filled `icmp` and the quoted
    // flow. The MTU that matters is the advertised one, not the device's.
    match rec.icmp.as_ref().and_then(|i| i.mtu) {
        Some(mtu) => {
            rec.mtu = Some(mtu);
            rec.mtu_source = Some("icmp");
        }
        None => {
            rec.mtu = None;
            rec.mtu_source = None;
        }
    }
}
