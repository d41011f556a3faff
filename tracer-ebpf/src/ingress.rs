//! tc (TCX) ingress on uplinks: ICMP too-big arriving from the underlay (a router telling this
//! node that its packets are too big), decoded by the daemon down to the quoted pod flow.
use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use tracer_common::EventKind;

use crate::{packet, transmit};

#[classifier]
pub fn rx_tc(ctx: TcContext) -> i32 {
    if packet::is_icmp_too_big(&ctx) {
        // The device MTU is not what an arriving ICMP is about: the daemon takes the MTU from
        // the message itself.
        transmit::report(&ctx, EventKind::IcmpTooBigReceived, 0);
    }
    TC_ACT_UNSPEC
}
