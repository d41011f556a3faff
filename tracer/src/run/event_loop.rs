//! The event loop: one thread waits on the ring buffer, the stop signals, the link watcher,
//! the Kubernetes API and a one-second tick, and feeds the fan-out until the run stops; then
//! what is still queued is read (or counted as lost) and the final verdicts are given.
use super::{arrivals::ArrivalsReader, prober::Prober};
use crate::event::probe::Probe;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, Signal, SignalKind},
    time::MissedTickBehavior,
};
use tracer_common::Event;

use super::{
    fanout::Fanout,
    fold::{Folds, KernelFolds},
    names::NameSources,
    now_unix_ns,
    ring::{self, Edge, LostCounters},
};
use crate::hooks::{devices::DeviceWatcher, Names};

/// Events read from the ring before the event loop looks at its other sources again.
const DRAIN_BATCH: usize = 256;
/// How long a stop keeps decoding what is still queued before counting the rest as lost.
const STOP_DRAIN_TIME: Duration = Duration::from_millis(100);
/// How often the ring is read without being woken: the kernel programs wake the reader only
/// once a batch is waiting (`tracer-ebpf/src/emit.rs`, `wakeup_flags`), so a lone event waits
/// at most this long. Each poll is a timer wake-up of the daemon (~90 µs of CPU on this VM
/// kind): at 10 ms the idle daemon used ~0.9% of a core, at 100 ms ~0.1%.
const RING_POLL: Duration = Duration::from_millis(100);

/// What the loop reads from, besides the link watcher.
pub struct Inputs {
    pub ring: RingBuf<MapData>,
    /// The ring's size (`--ringbuf-kib`).
    pub ring_kib: u32,
    pub lost: LostCounters,
    /// What decoding needs; the loop keeps its devices and Kubernetes names current.
    pub names: Names,
    pub name_sources: NameSources,
    /// Ctrl-C and SIGTERM, listened to since the start of the run.
    pub stop: Stop,
    /// Path-MTU probes when the evidence asks for them (none with `--no-probe`).
    pub prober: Option<Prober>,
    /// `--duration`.
    pub duration_s: Option<f64>,
    /// The arrivals windows and their length (`--arrivals-interval`; none when 0).
    pub arrivals: Option<(ArrivalsReader, Duration)>,
    /// The kernel programs' diagnostics (`--kernel-log`; none when off).
    pub kernel_log: Option<KernelLogger>,
    /// Fold bursts of identical drops (not with `--no-fold`).
    pub fold_bursts: bool,
    /// What the drop program folded.
    pub kernel_folds: KernelFolds,
}

/// The reader of the kernel programs' aya-log ring.
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Run until Ctrl-C, SIGTERM or `--duration`, then read what is left and give the verdicts.
pub async fn event_loop(
    inputs: Inputs,
    watcher: &mut DeviceWatcher,
    fanout: &mut Fanout,
) -> Result<()> {
    let Inputs {
        ring,
        ring_kib,
        mut lost,
        mut names,
        name_sources,
        mut stop,
        mut prober,
        duration_s,
        arrivals,
        kernel_log,
        fold_bursts,
        kernel_folds,
    } = inputs;
    let mut kernel_log = match kernel_log {
        // SAFETY: the logger's ring buffer map owns its fd and keeps it open until the AsyncFd
        // drops it.
        Some(logger) => Some(
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    anyhow::anyhow!("watching the kernel programs' log: {}", e.into_parts().1)
                })?,
        ),
        None => None,
    };
    let (mut arrivals, mut windows) = match arrivals {
        Some((reader, every)) => (
            Some(reader),
            Some(tokio::time::interval_at(
                tokio::time::Instant::now() + every,
                every,
            )),
        ),
        None => (None, None),
    };
    if let Err(e) = watcher.register() {
        eprintln!("hooks: link watcher off: {e}");
    }
    let mut api = name_sources.start();
    let started = Instant::now();
    stop.start_clock(duration_s);
    // SAFETY: the ring buffer map owns its fd and keeps it open until the AsyncFd drops it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {}", e.into_parts().1))?;
    let mut edge = Edge {
        folds: Folds::new(fold_bursts),
        kernel: kernel_folds,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ring_poll = tokio::time::interval(RING_POLL);
    ring_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    hold_back_for_tests().await;
    loop {
        tokio::select! {
            // In this order: a stop is seen at the first look after it came, even while the
            // ring is never empty.
            biased;
            () = stop.requested() => break,
            update = api.recv(), if api.is_open() => {
                if let Some(install) = api.apply(update, &mut names) {
                    fanout.cni(install, now_unix_ns());
                }
            }
            _ = tick.tick() => {
                edge.folds.tick(|rec| ring::deliver(rec, &names, fanout));
                lost.report(fanout);
                let now = now_unix_ns();
                fanout.tick(now);
                if let Some(p) = prober.as_mut() {
                    for to in p.ask(fanout.probes_wanted()) {
                        fanout.probing(to, now);
                    }
                }
            }
            Some(found) = next_probe(&mut prober) => fanout.probe(&found),
            () = kernel_log_ready(&mut kernel_log) => {}
            () = next_window(&mut windows) => {
                if let Some(reader) = arrivals.as_mut() {
                    fanout.arrivals(&reader.close_window(&names, now_unix_ns()));
                }
            }
            i = watcher.ready() => {
                for line in watcher.handle(i, &mut names.devices) {
                    eprintln!("{line}");
                }
            }
            _ = ring_poll.tick() => {
                // Events below the kernel's wake-up batch; a backlog left here wakes the
                // reader with the next event, or is read at the next poll.
                ring::drain(ring.get_mut(), DRAIN_BATCH, &names, &mut edge, fanout);
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                // A bounded batch: under a flood the ring refills as fast as it is read, and
                // signals, ticks and the link watcher must still get their turn.
                if ring::drain(guard.get_inner_mut(), DRAIN_BATCH, &names, &mut edge, fanout) {
                    // Hand the thread back to the runtime: it polls its drivers (signals,
                    // timers, sockets) only when the loop yields, which a full ring never does.
                    drop(guard);
                    tokio::task::yield_now().await;
                } else {
                    guard.clear_ready();
                }
            }
        }
    }
    // No drop folds from here on; what is still in flight settles. Then the ring is read, the
    // slots, and the ring again: a burst's count is in an event read or in its CPU's slot, and
    // `KernelFolds::finish` takes each once (see `read_slots`).
    edge.kernel.stop_folding();
    tokio::time::sleep(Duration::from_millis(2)).await;
    drain_at_stop(ring.get_mut(), ring_kib, &names, &mut edge, fanout);
    let slots = edge.kernel.read_slots();
    drain_at_stop(ring.get_mut(), ring_kib, &names, &mut edge, fanout);
    edge.finish(&slots, &names, fanout);
    lost.report(fanout);
    // The last window, however short, before the final verdicts.
    if let Some(reader) = arrivals.as_mut() {
        fanout.arrivals(&reader.close_window(&names, now_unix_ns()));
    }
    // What the programs said up to the stop, before the verdicts.
    if let Some(log) = kernel_log.as_mut() {
        log.get_mut().flush();
    }
    fanout.finish(started.elapsed().as_secs_f64(), now_unix_ns());
    Ok(())
}

/// The kernel programs' log had records, now written out; never, without `--kernel-log`.
async fn kernel_log_ready(log: &mut Option<AsyncFd<KernelLogger>>) {
    let Some(fd) = log.as_mut() else {
        return std::future::pending().await;
    };
    match fd.readable_mut().await {
        Ok(mut guard) => {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
        // A log that cannot be polled is given up, not polled in a loop.
        Err(_) => *log = None,
    }
}

/// Whatever the kernel queued before we stopped still belongs to the run: at most a ring's
/// worth, decoded for a moment and then counted as lost, so that a flood that goes on cannot
/// hold the stop (Ctrl-C answers within a second).
fn drain_at_stop(
    ring: &mut RingBuf<MapData>,
    ring_kib: u32,
    names: &Names,
    edge: &mut Edge,
    fanout: &mut Fanout,
) {
    let ring_events = (ring_kib as usize * 1024) / std::mem::size_of::<Event>() + 1;
    let deadline = Instant::now() + STOP_DRAIN_TIME;
    let mut left = ring_events;
    while left > 0 && Instant::now() < deadline {
        let batch = left.min(256);
        left -= batch;
        if !ring::drain(ring, batch, names, edge, fanout) {
            left = 0;
        }
    }
    ring::discard_as_lost(ring, left, fanout);
}

/// What ends the run: Ctrl-C, SIGTERM, or the end of `--duration`.
pub struct Stop {
    sigint: Signal,
    sigterm: Signal,
    deadline: Option<tokio::time::Instant>,
}

impl Stop {
    /// Listen for the stop signals from now on (inside the runtime's context). Called first
    /// thing in a run: a signal during start-up is then kept and ends the loop as soon as it
    /// starts. Before, one that came while attaching was lost where SIGINT is inherited as
    /// ignored (a background job of a script), and the run went on tracing.
    pub fn listen() -> Result<Stop> {
        Ok(Stop {
            sigint: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            deadline: None,
        })
    }

    /// `--duration` counts from when tracing starts.
    fn start_clock(&mut self, duration_s: Option<f64>) {
        self.deadline =
            duration_s.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    }

    async fn requested(&mut self) {
        let until = self.deadline;
        let deadline = async {
            match until {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
            () = deadline => {}
        }
    }
}

/// The next probe result; never, without a prober.
async fn next_probe(prober: &mut Option<Prober>) -> Option<Probe> {
    match prober {
        Some(p) => p.next().await,
        None => std::future::pending().await,
    }
}

/// The end of the next arrivals window; never, without arrivals.
async fn next_window(windows: &mut Option<tokio::time::Interval>) {
    match windows {
        Some(w) => {
            w.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Test knob: hold the reader back so that a test can overflow the ring buffer on purpose and
/// check that every lost event is counted.
async fn hold_back_for_tests() {
    if let Some(ms) = std::env::var("TRACER_TEST_READER_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
