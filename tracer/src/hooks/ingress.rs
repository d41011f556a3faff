//! User half of `tracer-ebpf/src/ingress.rs`: tc (TCX) ingress on uplinks, where ICMP too-big
//! from the underlay arrives. Decoding is shared with the ICMP hook.
use aya::{programs::TcAttachType, Ebpf};

use super::{
    legacy_tc::LegacyTc,
    transmit::{attach_selected, Selection},
    Attempt, HookedDevice,
};

pub fn attach(
    ebpf: &mut Ebpf,
    selections: &[Selection],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut LegacyTc,
) -> Vec<Attempt> {
    attach_selected(
        ebpf,
        TcAttachType::Ingress,
        selections,
        |s| &s.ingress,
        hooked,
        legacy,
    )
}
