//! Project tasks (`cargo xtask ...`) and the network-namespace lab used by the tracer's tests.

pub mod demo;
pub mod incident;
pub mod lab;
pub mod setup;
