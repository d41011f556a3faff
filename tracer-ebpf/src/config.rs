//! Run-time configuration written by the daemon into `.rodata` before loading
//! (`EbpfLoader::override_global`): struct offsets from BTF, tracepoint layouts from tracefs,
//! the drop filter. Reads are volatile so the compiler cannot fold the placeholder values; the
//! verifier then sees the real constants and prunes branches that cannot run on this kernel.
use tracer_common::Config;

#[unsafe(no_mangle)]
pub(crate) static TRACER_CONFIG: Config = Config::unresolved();

/// Read one field of the configuration.
macro_rules! conf {
    ($($field:tt)+) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::config::TRACER_CONFIG.$($field)+)) }
    };
}
pub(crate) use conf;
