//! tc (TCX) ingress on uplinks: ICMP too-big arriving from the underlay (a router telling this
//! node that its packets are too big), decoded by the daemon down to the quoted pod flow.
use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use tracer_common::EventKind;

use crate::{emit, packet, transmit};

emit::tc_program_copies!(rx:
    rx_tc_0 = 0, rx_tc_1 = 1, rx_tc_2 = 2, rx_tc_3 = 3,
    rx_tc_4 = 4, rx_tc_5 = 5, rx_tc_6 = 6, rx_tc_7 = 7,
);

#[inline(always)]
fn rx(ctx: &TcContext, slot: usize) -> i32 {
    if packet::is_icmp_too_big(ctx) {
        // The device MTU is not what an arriving ICMP is about: the daemon takes the MTU from
        // the message itself.
        transmit::report(ctx, slot, EventKind::IcmpTooBigReceived, 0);
    }
    TC_ACT_UNSPEC
}
