//! The tracer's user side as a library, so that its pieces can be tested one by one; the binary
//! (`main.rs`) wires them into the `tracer` command and embeds the kernel programs.

pub mod check;
pub mod cli;
pub mod event;
pub mod fix;
pub mod fuzzing;
pub mod hex;
pub mod hooks;
pub mod host;
pub mod ifaces;
pub mod k8s;
pub mod kernel;
pub mod mtu;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod privileges;
pub mod report;
pub mod run;
pub mod sink;
pub mod time;
pub mod verdict;
