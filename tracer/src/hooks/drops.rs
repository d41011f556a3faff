//! User half of `tracer-ebpf/src/drops.rs`: attach `kfree_skb` and name what it reports.
use aya::{programs::BtfTracePoint, Btf, Ebpf};
use tracer_common::{flags, Event};

use super::{attach_tracepoint, nonzero, program, Attempt, Names, Outcome};
use crate::event::{Matched, MtuSource, Record};

/// How the drop hook is reported.
const CONCERN: &str = "drops";

/// Attach the drop hook: `tp_btf/kfree_skb` when the kernel allows it, else the classic
/// tracepoint. Exactly one of them ends up attached, or both attempts are reported failed.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf) -> Vec<Attempt> {
    let mut report = Vec::new();
    // Troubleshooting (and the tests of the fallback): TRACER_DROPS_HOOK=tracepoint skips tp_btf.
    let forced = std::env::var("TRACER_DROPS_HOOK").is_ok_and(|v| v == "tracepoint");
    let tp_btf = (|| -> anyhow::Result<()> {
        if forced {
            anyhow::bail!("skipped: TRACER_DROPS_HOOK=tracepoint");
        }
        let prog: &mut BtfTracePoint = program(ebpf, "drops_tp_btf")?.try_into()?;
        prog.load("kfree_skb", btf)?;
        prog.attach()?;
        Ok(())
    })();
    match tp_btf {
        Ok(()) => {
            report.push(Attempt::new(CONCERN, "tp_btf/kfree_skb", Outcome::Attached));
            report.push(Attempt::new(
                CONCERN,
                "tracepoint/skb/kfree_skb",
                Outcome::Skipped("not needed".into()),
            ));
            return report;
        }
        Err(e) => {
            let text = format!("{e:#}");
            // The classic program is the same code: a verifier that found it too complex
            // (E2BIG) refuses it too, after as long a walk. The caller retries with less.
            let too_large = text.contains("Argument list too long");
            report.push(Attempt::new(
                CONCERN,
                "tp_btf/kfree_skb",
                Outcome::Failed(text),
            ));
            if too_large {
                report.push(Attempt::new(
                    CONCERN,
                    "tracepoint/skb/kfree_skb",
                    Outcome::Skipped("the same program, refused as too large above".into()),
                ));
                return report;
            }
        }
    }
    let classic = attach_tracepoint(ebpf, "drops_tracepoint", "skb", "kfree_skb");
    report.push(Attempt::new(
        CONCERN,
        "tracepoint/skb/kfree_skb",
        Outcome::of(classic),
    ));
    report
}

/// Size-drop sites that hand the packet to a veth peer: the peer's MTU is the one that failed.
const VETH_RECEIVE_SITES: [&str; 3] =
    ["__dev_forward_skb", "__dev_forward_skb2", "dev_forward_skb"];

pub(super) fn decode(rec: &mut Record, ev: &Event, names: &Names) {
    rec.drop.reason_code = Some(ev.reason);
    rec.drop.reason = Some(if names.reasons.available() {
        names.reasons.shared_label(ev.reason)
    } else {
        // Kernels before 5.17 have no drop reasons at all.
        "UNAVAILABLE".into()
    });
    // Symbolized once per address: the text is shared from then on (issue 18).
    let (at, at_veth_receive) = names.interned.location(ev.location, || {
        match names.kallsyms.symbolize_ref(ev.location) {
            Some((name, offset, module)) => (
                location(name, offset, module).into(),
                VETH_RECEIVE_SITES.contains(&name),
            ),
            None => (crate::hex::string(ev.location).into(), false),
        }
    });
    rec.drop.location = Some(at);
    if ev.flags & flags::MATCH_REASON != 0 {
        rec.drop.matched.insert(Matched::Reason);
    }
    if ev.flags & flags::MATCH_LOCATION != 0 {
        rec.drop.matched.insert(Matched::Location);
    }
    if ev.flags & flags::MATCH_OVERSIZE != 0 {
        rec.drop.matched.insert(Matched::Oversize);
    }
    if ev.flags & flags::MATCH_ICMP_TOO_BIG != 0 {
        rec.drop.matched.insert(Matched::IcmpTooBig);
    }
    let peer_mtu = if ev.flags & flags::HAS_PEER_DEV != 0 {
        rec.route.peer_ifindex = nonzero(ev.peer_ifindex);
        rec.route.peer_ifname = names.interned.name(&ev.peer_ifname);
        rec.route.peer_mtu = nonzero(ev.peer_mtu);
        rec.route.peer_mtu
    } else {
        None
    };
    // Which MTU the packet failed: the device's own unless the drop happened on the way to
    // another device (the veth peer, or the route's output device when forwarding).
    let len = rec.size.l3_len.or(rec.size.len);
    let fails = |mtu: Option<u32>| matches!((len, mtu), (Some(l), Some(m)) if l > m);
    if let Some(peer) = peer_mtu.filter(|_| at_veth_receive || fails(peer_mtu)) {
        rec.size.mtu = Some(peer);
        rec.size.mtu_source = Some(MtuSource::Peer);
    } else if rec.route.out_mtu.is_some()
        && (fails(rec.route.out_mtu) && !fails(rec.size.mtu)
            || rec.drop.reason.as_deref() == Some("PKT_TOO_BIG"))
    {
        rec.size.mtu = rec.route.out_mtu;
        rec.size.mtu_source = Some(MtuSource::Route);
    }
}

/// `function+0xoffset`, and ` [module]` for a module's function: what [`Symbol`]'s `Display`
/// writes, in one allocation without the formatting machinery (every drop has a location).
///
/// [`Symbol`]: crate::kernel::kallsyms::Symbol
fn location(name: &str, offset: u64, module: Option<&str>) -> String {
    let mut s = String::with_capacity(name.len() + 19 + module.map_or(0, |m| m.len() + 3));
    s.push_str(name);
    s.push('+');
    crate::hex::push(&mut s, offset);
    if let Some(m) = module {
        s.push_str(" [");
        s.push_str(m);
        s.push(']');
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::kernel::kallsyms::Symbol;

    #[test]
    fn locations_are_written_as_symbols_display() {
        for (name, offset, module) in [
            ("ip_forward", 0x2c0, None),
            ("__dev_forward_skb2", 0, None),
            ("vxlan_xmit_one", 0xffff_ffff_ffff_ffff, Some("vxlan")),
            ("f", 0x1, Some("")),
        ] {
            let sym = Symbol {
                name: name.to_string(),
                offset,
                module: module.map(str::to_string),
            };
            assert_eq!(super::location(name, offset, module), sym.to_string());
        }
    }
}
