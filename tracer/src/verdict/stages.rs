//! One connection's life as stages, from the sender's side: sent at a size → refused → told an
//! MTU (ICMP) → shrank → then *progressing* (its retransmissions stop) or *stuck again* (segments
//! of the new size retransmitted at timeout intervals, backing off). A connection that shrank
//! and is stuck again dies beyond the last place the node saw: the black hole is further on.
//!
//! Sizes are judged against the segment size the sender uses *now*: a retransmitted GSO
//! super-packet (7240 bytes of 1398-byte segments) says the segment is 1398, and a regime of
//! 1398-byte segments after an ICMP that said 1450 is "full size" for that sender, however large
//! it once sent. Only TCP has these stages (its retransmissions are what the node sees).

/// Retransmissions this far apart are timeouts (RTO ≥ 200 ms), not fast retransmits.
pub const TIMEOUT_GAP_NS: i128 = 150_000_000;
/// Smallest IPv4 + TCP header: a segment of `s` bytes fits an MTU of `s + 40`.
const TCP_IP_HEADERS: u32 = 40;
/// A retransmission at least this share of the regime's segment (tenths) is "full size".
const FULL_TENTHS: u32 = 9;
/// After its last shrink a sender must be watched this long without a timeout before the
/// connection counts as progressing (a first RTO is 200 ms; a backed-off one grows).
pub const PROGRESS_WATCH_NS: i128 = 1_000_000_000;
/// Timeout retransmissions of the current size, backing off, that make a connection stuck.
const STUCK_TIMEOUTS: u32 = 2;

/// Why a sender's segments got smaller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShrinkCause {
    /// After an ICMP too-big told it an MTU its new segments fit.
    Icmp,
    /// With no ICMP to explain it, after timeouts: TCP's own MTU probing
    /// (`net.ipv4.tcp_mtu_probing`) searching for a size that passes.
    Probing,
}

/// A change of the sender's segment size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shrink {
    pub at_ns: i128,
    pub from: u32,
    pub to: u32,
    pub cause: ShrinkCause,
}

/// The retransmissions of one segment size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Regime {
    /// The segment size (largest seen in the regime).
    segment: u32,
    timeouts: u32,
    /// Timeout gaps that grew by half or more over the one before (RTO backoff).
    backoff_steps: u32,
    last_rtx_ns: Option<i128>,
    last_gap_ns: Option<i128>,
    /// Gaps of the timeouts, for the explanation (at most a few).
    gaps_ms: [u32; 6],
    gaps: usize,
    /// The sequence number of the last retransmission, when the log carries it.
    last_seq: Option<u32>,
    /// Timeout retransmissions that re-sent the bytes of the one before: nothing was
    /// acknowledged in between. Robust where the gaps are not (a retransmission the kernel
    /// deferred or one missed makes a gap the sum of two, and backoff then looks flat).
    repeats: u32,
}

impl Regime {
    fn start(segment: u32) -> Regime {
        Regime {
            segment,
            ..Regime::default()
        }
    }

    fn stuck(&self) -> bool {
        self.timeouts >= STUCK_TIMEOUTS
            && (self.backoff_steps >= 1 || self.repeats >= STUCK_TIMEOUTS)
    }

    /// Time a retransmission of this regime's size: whether it came a timeout after the one
    /// before (then it counts, and its gap says whether the sender backs off).
    fn time(&mut self, ts_ns: i128, seq: Option<u32>) -> bool {
        let same_bytes = seq.is_some() && seq == self.last_seq;
        if let (Some(now), Some(before)) = (seq, self.last_seq) {
            // Later bytes re-sent: the earlier ones were acknowledged, the connection moved.
            if seq_after(now, before) {
                self.repeats = 0;
            }
        }
        if seq.is_some() {
            self.last_seq = seq;
        }
        let gap = self.last_rtx_ns.map(|last| ts_ns - last);
        self.last_rtx_ns = Some(ts_ns);
        let Some(gap) = gap.filter(|g| *g >= TIMEOUT_GAP_NS) else {
            return false;
        };
        self.timeouts += 1;
        if same_bytes {
            self.repeats += 1;
        }
        if self.last_gap_ns.is_some_and(|g| gap * 10 >= g * 15) {
            self.backoff_steps += 1;
        }
        self.last_gap_ns = Some(gap);
        if self.gaps < self.gaps_ms.len() {
            self.gaps_ms[self.gaps] = (gap / 1_000_000) as u32;
            self.gaps += 1;
        }
        true
    }
}

/// What a retransmission's size says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    /// It counts for the timing of the current size.
    Counts,
    /// The short tail of a write: not full size, nothing to time.
    ShortTail,
}

/// What a connection's stages add up to at a moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No retransmission, no shrink: nothing to judge by this connection's own timing.
    Quiet,
    /// Never shrank, and its full-size segments are retransmitted at backed-off timeouts.
    StuckAtFirstSize { segment: u32 },
    /// Shrank and has since gone a while without a timeout: the smaller size passes.
    Progressing { last: Shrink },
    /// Shrank, but not watched long enough since to tell.
    Undecided { last: Shrink, watched_ns: i128 },
    /// Shrank, and the new size is retransmitted at backed-off timeouts: it dies further on.
    StuckAfterShrink { last: Shrink, timeouts: u32 },
    /// Timeouts, but too few or not backing off: no judgement.
    Retrying { segment: u32, timeouts: u32 },
}

/// One connection's stages. Feed it the sender's side of the connection in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stages {
    /// The smallest MTU an ICMP told the sender, and when.
    told: Option<(i128, u32)>,
    /// The current regime (segment size and its retransmissions).
    now: Regime,
    shrinks: Vec<Shrink>,
    /// Timeout retransmissions at full size, over every regime.
    total_timeouts: u32,
}

/// Shrinks kept per connection: a connection probing down and up is bounded.
const MAX_SHRINKS: usize = 8;

impl Stages {
    /// An ICMP too-big told the sender `mtu`.
    pub fn told(&mut self, ts_ns: i128, mtu: u32) {
        if self.told.is_none_or(|(_, m)| mtu < m) {
            self.told = Some((ts_ns, mtu));
        }
    }

    /// A pod packet of `inner_len` bytes died for its size: its segment size is what the sender
    /// used then (headers off), if the connection has not shown one yet.
    pub fn refused(&mut self, inner_len: u32) {
        if self.now.segment == 0 {
            self.now.segment = inner_len.saturating_sub(TCP_IP_HEADERS);
        }
    }

    /// A retransmission of `len` bytes (`gso_size` for a GSO super-packet: the segment size)
    /// starting at sequence number `seq` (logs before 0.1 lack it): first what its size says
    /// (the sender shrank, or grew, or this is a short tail), then its timing.
    pub fn retransmit(&mut self, ts_ns: i128, len: u32, gso_size: Option<u32>, seq: Option<u32>) {
        if len == 0 {
            return;
        }
        // A GSO packet names the sender's segment size; a single segment is one, unless it is
        // the short tail of a write (then it is not "full size" and changes nothing).
        let (segment, certain) = match gso_size.filter(|&g| g > 0 && g < len) {
            Some(g) => (g, true),
            None => (len, false),
        };
        if self.size_step(ts_ns, segment, certain) == Size::ShortTail {
            return;
        }
        if self.now.time(ts_ns, seq) {
            self.total_timeouts += 1;
        }
    }

    /// What a retransmitted segment of `segment` bytes says about the sender's size: the
    /// stage moves to "shrank" when it is smaller than the current regime's and an ICMP or
    /// TCP's own probing explains it.
    fn size_step(&mut self, ts_ns: i128, segment: u32, certain: bool) -> Size {
        let current = self.now.segment;
        if current == 0 {
            self.now.segment = segment;
        } else if segment < current {
            // An ICMP explains it when the new size fits the MTU told and the old one did not.
            let explained = self.told.is_some_and(|(_, m)| {
                segment + TCP_IP_HEADERS <= m && current + TCP_IP_HEADERS > m
            });
            let full = segment * 10 >= current * FULL_TENTHS;
            if explained {
                self.shrink(ts_ns, segment, ShrinkCause::Icmp);
            } else if certain || (!full && self.now.timeouts > 0) {
                // The stack says so (GSO), or a smaller retransmission after timeouts: TCP
                // lowering its size by itself.
                self.shrink(ts_ns, segment, ShrinkCause::Probing);
            } else if !full {
                return Size::ShortTail;
            }
        } else if segment > current && (certain || self.shrinks.is_empty()) {
            // Larger (probing up, or the first packets were small): the size of this regime.
            self.now.segment = segment;
        }
        Size::Counts
    }

    /// Timeout retransmissions of the current size that re-sent the same bytes as the one before.
    pub fn repeats(&self) -> u32 {
        self.now.repeats
    }

    fn shrink(&mut self, ts_ns: i128, to: u32, cause: ShrinkCause) {
        let from = self.now.segment;
        if self.shrinks.len() < MAX_SHRINKS {
            self.shrinks.push(Shrink {
                at_ns: ts_ns,
                from,
                to,
                cause,
            });
        }
        // The first retransmission at the new size starts its timing.
        self.now = Regime::start(to);
    }

    /// The connection's stage at `end_ns` (the end of what was watched).
    pub fn outcome(&self, end_ns: i128) -> Outcome {
        let Some(last) = self.shrinks.last().copied() else {
            if self.now.stuck() {
                return Outcome::StuckAtFirstSize {
                    segment: self.now.segment,
                };
            }
            if self.now.timeouts > 0 {
                return Outcome::Retrying {
                    segment: self.now.segment,
                    timeouts: self.now.timeouts,
                };
            }
            return Outcome::Quiet;
        };
        if self.now.stuck() {
            return Outcome::StuckAfterShrink {
                last,
                timeouts: self.now.timeouts,
            };
        }
        // Watched long enough since the last sign of trouble at this size?
        let since = self.now.last_rtx_ns.unwrap_or(last.at_ns).max(last.at_ns);
        let wait = self
            .now
            .last_gap_ns
            .map_or(PROGRESS_WATCH_NS, |g| (2 * g).max(PROGRESS_WATCH_NS));
        let watched = end_ns - since;
        if watched >= wait {
            Outcome::Progressing { last }
        } else {
            Outcome::Undecided {
                last,
                watched_ns: watched.max(0),
            }
        }
    }

    /// Every shrink seen, oldest first.
    pub fn shrinks(&self) -> &[Shrink] {
        &self.shrinks
    }

    /// The segment size the sender uses now (0 when none was seen).
    pub fn segment(&self) -> u32 {
        self.now.segment
    }

    /// Timeout gaps (ms) of the current size, for the explanation.
    pub fn timeout_gaps_ms(&self) -> &[u32] {
        &self.now.gaps_ms[..self.now.gaps]
    }

    /// Timeout retransmissions at full size, over the whole connection.
    pub fn total_timeouts(&self) -> u32 {
        self.total_timeouts
    }

    /// Whether the sender shrank after an ICMP told it an MTU.
    pub fn shrank_after_icmp(&self) -> bool {
        self.shrinks.iter().any(|s| s.cause == ShrinkCause::Icmp)
    }

    /// The smallest MTU an ICMP told the sender.
    pub fn told_mtu(&self) -> Option<u32> {
        self.told.map(|(_, m)| m)
    }
}

/// TCP sequence order (RFC 1982 serial arithmetic: numbers wrap at 2^32).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[cfg(test)]
mod tests;
