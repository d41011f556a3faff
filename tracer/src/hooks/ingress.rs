//! User half of `tracer-ebpf/src/ingress.rs`: tc ingress on uplinks (see `select.rs`), where
//! ICMP too-big from the underlay arrives. Decoding is shared with the ICMP hook.
use aya::{programs::TcAttachType, Ebpf};

use super::{select::Selection, tc, Attempt, HookedDevice};

pub fn attach(
    ebpf: &mut Ebpf,
    selections: &[Selection],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut tc::LegacyTc,
) -> Vec<Attempt> {
    tc::attach_selected(ebpf, TcAttachType::Ingress, selections, hooked, legacy)
}
