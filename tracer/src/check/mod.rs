//! `tracer check`: the MTU audit (no tracing). Built up in the following commits.

pub mod cni;
pub mod netlink;
pub mod probe;
