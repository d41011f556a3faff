//! What reading a large kernel table costs the daemon's memory (issue 22): a conntrack dump of a
//! namespace holding many entries, read entry by entry, allocates a bounded amount however
//! many entries there are; collected whole, it grows with them. Allocation is counted by this
//! test binary's own allocator (one test in the binary: nothing else allocates meanwhile).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tracer::netlink::conntrack::{dump, dump_each};
use tracer::netns::Netns;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

const FLOWS: u16 = 20_000;

#[test]
fn a_conntrack_dump_of_many_entries_stays_within_a_bounded_allocation() {
    let mut lab = xtask::lab::Lab::new(&xtask::lab::Lab::unique_prefix("tbd")).unwrap();
    let name = lab
        .add_netns("t")
        .expect("ip netns add (tests run as root)");
    for args in [
        &["link", "add", "bd0", "type", "veth", "peer", "name", "bd1"][..],
        &["link", "set", "bd1", "up"],
        &["link", "set", "bd0", "up"],
    ] {
        lab.ip(&name, args).unwrap();
    }
    lab.ip(&name, &["addr", "add", "10.252.0.1/24", "dev", "bd0"])
        .unwrap();
    // A rule that needs connection tracking: every new flow of the namespace gets an entry.
    lab.nft(
        &name,
        "table inet tracer_bounded {\n chain out {\n  type filter hook output priority 0;\n  \
         ct state new counter\n }\n}\n",
    )
    .unwrap();
    let ns = Netns::resolve(&name).unwrap();
    // One UDP datagram to each of FLOWS ports of its own address (delivered locally, no
    // neighbour to wait for): FLOWS entries (each lives 30 s, long enough).
    ns.enter(|| {
        let udp = std::net::UdpSocket::bind("10.252.0.1:0")?;
        for port in 1..=FLOWS {
            udp.send_to(b"x", ("10.252.0.1", port))?;
        }
        Ok(())
    })
    .unwrap();

    let (seen, streamed) = peak_of(|| {
        ns.enter(|| {
            let mut seen = 0usize;
            dump_each(|_| seen += 1)?;
            Ok(seen)
        })
        .unwrap()
    });
    assert!(seen >= usize::from(FLOWS), "only {seen} entries dumped");
    let (entries, collected) = peak_of(|| ns.enter(dump).unwrap());
    assert!(entries.len() >= usize::from(FLOWS));
    println!("{seen} entries: {streamed} B at the peak entry by entry, {collected} B collected");
    // Entry by entry: the receive buffer and a few small things, whatever the table holds.
    assert!(streamed < 256 * 1024, "{streamed} B for {seen} entries");
    // Collected: at least the entries themselves, which grow with the table.
    assert!(
        collected >= seen * std::mem::size_of::<tracer::netlink::conntrack::Entry>(),
        "{collected} B"
    );
    assert!(streamed * 4 < collected, "{streamed} B vs {collected} B");
}
