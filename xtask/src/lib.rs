//! Project tasks (`cargo xtask ...`) and the network-namespace lab used by the tracer's tests.

pub mod lab;
pub mod setup;
