//! Maps shared by every hook.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use tracer_common::{Event, HOOK_COUNT};

/// Events to the daemon. 4 MiB holds ~12k events: a burst of drops while the daemon is busy.
/// The daemon may resize it at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Events that did not fit in [`EVENTS`], per CPU and per hook, so loss is never silent.
#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(HOOK_COUNT, 0);

/// Network namespaces (inode numbers) to report when `--netns` is given.
#[map(name = "NETNS_FILTER")]
pub static NETNS_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(64, 0);

/// Programs that may nest on one CPU (a drop in a softirq interrupting a drop in a task, then
/// a hard interrupt): one draft event per level.
pub const DRAFT_LEVELS: u32 = 4;

/// Events being built by the drop programs before they decide whether to report them (see
/// `emit::Draft`), one per nesting level and CPU.
#[map(name = "DRAFTS")]
pub static DRAFTS: PerCpuArray<Event> = PerCpuArray::with_max_entries(DRAFT_LEVELS, 0);

/// How many drafts are in use on this CPU (the nesting level of the running program).
#[map(name = "DRAFT_LEVEL")]
pub static DRAFT_LEVEL: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
