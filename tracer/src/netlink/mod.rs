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
//! Hand-written rather than with the rust-netlink crates (netlink-sys, netlink-packet-route,
//! netlink-packet-netfilter, rtnetlink): the tracer sends nine fixed requests and reads a few
//! attributes of each answer, and their typed messages would still need this layer to turn
//! them into the answers the tracer asks for. rtnetlink would also put every request on the
//! async runtime, which the conntrack refresher and `tracer check` do not run.
pub mod addr;
pub mod attr;
pub mod conntrack;
pub mod link;
pub mod route;
pub mod socket;
pub mod tc;

pub use socket::Socket;
