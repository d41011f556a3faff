//! Maps shared by every hook.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{ArrivalCounts, ArrivalKey, Event, FoldSlot, HOOK_COUNT, MAX_ARRIVAL_KEYS};

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

/// What arrived on the ingress-hooked devices, per window, device and (peer, local) address
/// pair (`ingress.rs`); read and emptied by the daemon once per window (`run/arrivals.rs`).
/// Per CPU, so the programs add without atomics. LRU and bounded: when it is full, a new key
/// evicts the least recently updated one, whose counts (all CPUs') are lost: a node with more
/// peers than [`MAX_ARRIVAL_KEYS`] in a window loses its quietest peers' counts rather than
/// the busy ones', and memory stays bounded.
#[map(name = "ARRIVALS")]
pub static ARRIVALS: LruPerCpuHashMap<ArrivalKey, ArrivalCounts> =
    LruPerCpuHashMap::with_max_entries(MAX_ARRIVAL_KEYS, 0);

/// The window arrivals are counted in now (`ArrivalKey::generation`). The daemon moves it on,
/// then reads and deletes the keys of the windows before.
#[map(name = "ARRIVAL_GENERATION")]
pub static ARRIVAL_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// The drop program's burst per CPU (`fold.rs`); read by the daemon after detaching.
#[map(name = "FOLDS")]
pub static FOLDS: PerCpuArray<FoldSlot> = PerCpuArray::with_max_entries(1, 0);

/// Set by the daemon when the run stops: no drop folds from then on, so that what the slots
/// hold is final when it reads them.
#[map(name = "FOLD_OFF")]
pub static FOLD_OFF: Array<u32> = Array::with_max_entries(1, 0);
