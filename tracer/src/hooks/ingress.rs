//! User half of `tracer-ebpf/src/ingress.rs`: tc (TCX) ingress on uplinks, where ICMP too-big
//! from the underlay arrives. Decoding is shared with the ICMP hook.
use aya::{Ebpf, programs::TcAttachType};

use super::{Attempt, HookedDevice, transmit::{Selection, attach_tc}};
use crate::{ifaces::Iface, netns::Netns};

pub fn attach(ebpf: &mut Ebpf, selections: &[Selection], hooked: &mut Vec<HookedDevice>) -> Vec<Attempt> {
    let targets: Vec<(Netns, Iface)> = selections
        .iter()
        .flat_map(|s| s.ingress.iter().map(|i| (s.netns.clone(), i.clone())))
        .collect();
    attach_tc(ebpf, "rx_tc", TcAttachType::Ingress, "rx", &targets, hooked)
}
