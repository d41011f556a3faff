//! Every netlink conversation of the tracer. This module tree owns the sockets and the message
//! families; the rest of the code asks it questions and gets plain values back:
//!
//! - [`link`]: the devices of a namespace, their link notifications, a VXLAN device's FDB peers;
//! - [`route`]: the routes of a namespace, the route cache's exceptions, `ip route get`;
//! - [`addr`]: the devices' addresses;
//! - [`tc`]: removing a clsact qdisc (the BPF filters themselves are aya's);
//! - [`conntrack`]: the original and reply tuples of every conntrack entry;
//! - [`socket`] and [`attr`]: the socket, the framing and the attribute walk they all share.
//!
//! Every socket is created in the calling thread's network namespace, so each question works
//! inside `Netns::enter` and answers for that namespace.
//!
//! Hand-written rather than with the rust-netlink crates, although they cover every family
//! here (netlink-packet-route 0.34: links, routes, addresses, neighbours, qdiscs;
//! netlink-packet-netfilter 0.4: conntrack tuples; netlink-sys 0.9: the socket). Measured on a
//! program that sends the tracer's requests both ways (release, stripped; December 2026):
//! through the crates 1.19 MB above an empty program, through this module 0.06 MB; the tracer
//! is 17.3 MB, so +7%. They add seven crates to the tree (with derive_more 0.99 and
//! zerocopy-derive), about 25 s of CPU to a clean build (netlink-packet-route alone 15 s, on
//! one core), for the ~900 lines here that send nine fixed requests and read a few attributes
//! of each answer; and their typed messages would still have to be turned into the answers
//! the tracer asks for, in a layer like this one. rtnetlink (0.24) would also put every
//! request on an async runtime, which the conntrack refresher and `tracer check` do not run.
pub mod addr;
pub mod attr;
pub mod conntrack;
pub mod link;
pub mod route;
pub mod socket;
pub mod tc;

pub use socket::Socket;
