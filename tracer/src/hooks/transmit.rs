//! User half of `tracer-ebpf/src/transmit.rs`: tc egress on the selected devices (tunnels and
//! uplinks, see `select.rs`), and naming oversized transmissions.
use aya::{programs::TcAttachType, Ebpf};
use tracer_common::Event;

use super::{select::Selection, tc, Attempt, HookedDevice};
use crate::event::Record;

pub fn attach(
    ebpf: &mut Ebpf,
    selections: &[Selection],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut tc::LegacyTc,
) -> Vec<Attempt> {
    tc::attach_selected(ebpf, TcAttachType::Egress, selections, hooked, legacy)
}

pub(super) fn decode(rec: &mut Record, _ev: &Event) {
    rec.size.mtu_source = rec.size.mtu.map(|_| crate::event::MtuSource::Device);
}
