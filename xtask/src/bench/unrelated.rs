//! Unrelated drops (issue 18): what the drop program costs packets that die for reasons that
//! have nothing to do with size, as network policies drop on every node.
//!
//! Two namespaces on one veth; a firewall in the receiver drops every UDP datagram of the flood
//! (nft, input hook: reason NETFILTER_DROP); iperf3 writes 64-byte datagrams as fast as it can.
//! The drops run in the sender's softirq on the sender's CPU, so what the drop program costs
//! shows as fewer datagrams sent per second. Judged: datagrams sent per second, with the tracer
//! over without, side by side in rounds of A D O X E F G G F E X O D A:
//!
//! - D: default mode on every namespace (no `--netns`): each drop is judged and discarded.
//! - O: `--netns` on the sender only: each drop fails the namespace filter (the cheapest exit).
//! - X: `--all-drops --netns` on the receiver: each drop is reported (the ring, the daemon).
//! - E, F, G: D, O and X with every program empty (`--bench-empty-programs`): the same hooks
//!   with nothing done in them, the floor no program on these hooks can beat. D/E, O/F and X/G
//!   are what the tracer's own code costs.
use std::{path::Path, time::Instant};

use anyhow::{bail, Context, Result};

use super::{
    datapath::{iperf_in, iperf_server_in, Ratios},
    Row, TracerProcess,
};
use crate::lab::Lab;

/// Issue 18's targets: unrelated drops cost at most 3% of the packet rate in the default mode,
/// 10% when every drop is reported.
pub const DEFAULT_TARGET: f64 = 0.97;
pub const ALL_DROPS_TARGET: f64 = 0.90;
const SENDER_IP: &str = "10.252.0.1";
const RECEIVER_IP: &str = "10.252.0.2";

/// The tracer's log, removed on drop.
struct LogFile(std::path::PathBuf);

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const CONFIG_NAMES: [&str; 7] = [
    "A (no tracer)                     ",
    "D (default, every namespace)      ",
    "O (--netns: another namespace)    ",
    "X (--all-drops on the receiver)   ",
    "E (D's hooks, empty programs)     ",
    "F (O's hooks, empty programs)     ",
    "G (X's hooks, empty programs)     ",
];

/// The ratios of D, O, X and their floors E, F, G to A.
#[derive(Debug, Clone)]
pub struct Unrelated {
    pub default: Ratios,
    pub other_netns: Ratios,
    pub all_drops: Ratios,
    /// The hooks' floors: D's, O's and X's hooks with empty programs.
    pub default_floor: Ratios,
    pub other_netns_floor: Ratios,
    pub all_drops_floor: Ratios,
}

impl Unrelated {
    pub fn rows(&self) -> Vec<Row> {
        [
            (
                "unrelated drops pkt/s, default mode",
                &self.default,
                DEFAULT_TARGET,
            ),
            (
                "unrelated drops pkt/s, netns not watched",
                &self.other_netns,
                DEFAULT_TARGET,
            ),
            (
                "unrelated drops pkt/s, --all-drops",
                &self.all_drops,
                ALL_DROPS_TARGET,
            ),
            (
                "  the hooks alone (empty), default mode",
                &self.default_floor,
                DEFAULT_TARGET,
            ),
            (
                "  the hooks alone (empty), netns not w.",
                &self.other_netns_floor,
                DEFAULT_TARGET,
            ),
            (
                "  the hooks alone (empty), --all-drops",
                &self.all_drops_floor,
                ALL_DROPS_TARGET,
            ),
        ]
        .into_iter()
        .map(|(what, r, target)| r.row(what, target))
        .collect()
    }
}

/// Builds the two namespaces and the firewall, measures `rounds` rounds of A D O X E F G G F E
/// X O D A of `secs` seconds each, prints every run and the ratios. The namespaces go on every way out.
pub fn unrelated(
    tracer: &Path,
    rounds: u32,
    secs: u32,
    tracer_args: &[String],
) -> Result<Unrelated> {
    if rounds == 0 || secs == 0 {
        bail!("unrelated drops: rounds and seconds must be at least 1");
    }
    let _ = crate::lab::cleanup_stale("bu");
    let mut lab = Lab::new(&Lab::unique_prefix("bu"))?;
    let snd = lab.add_netns("snd")?;
    let rcv = lab.add_netns("rcv")?;
    lab.add_veth(&snd, "eth0", 1500, &rcv, "eth0", 1500)?;
    for (ns, ip) in [(&snd, SENDER_IP), (&rcv, RECEIVER_IP)] {
        lab.add_addr(ns, "eth0", &format!("{ip}/24"))?;
        lab.ip(ns, &["link", "set", "lo", "up"])?;
    }
    // The policy: every 64-byte data datagram (UDP length 72) to the iperf3 port dropped on
    // input; its TCP control connection and the 4-byte datagram that opens a UDP test pass.
    let rules =
        "table inet bench_policy {\n chain input {\n  type filter hook input priority 0;\n  \
                 udp dport 5201 udp length 72 counter drop\n }\n}\n";
    lab.nft(&rcv, rules).context("nft in the receiver")?;
    let _server = iperf_server_in(&lab, &rcv, RECEIVER_IP)?;
    // Warm-up (ARP, the server's first accept), not counted.
    iperf_in(&lab, &snd, RECEIVER_IP, 1, true).context("iperf3 warm-up")?;

    // As the datapath step: the log to a file (removed at the end), no names.
    let log =
        LogFile(std::env::temp_dir().join(format!("bench-unrelated-{}.jsonl", std::process::id())));
    let log_path = log.0.display().to_string();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--no-k8s-api",
            "--no-node-local",
            "--log",
            &log_path,
            "--log-max-size",
            "1G",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        args.extend(tracer_args.iter().cloned());
        args
    };
    let configs = [
        None,
        Some(with(&[])),
        Some(with(&["--netns", &snd])),
        Some(with(&["--all-drops", "--netns", &rcv])),
        Some(with(&["--bench-empty-programs"])),
        Some(with(&["--netns", &snd, "--bench-empty-programs"])),
        Some(with(&[
            "--all-drops",
            "--netns",
            &rcv,
            "--bench-empty-programs",
        ])),
    ];
    println!(
        "unrelated drops: {rounds} rounds of A D O X E F G G F E X O D A, {secs} s of 64-byte UDP per run, \
         {snd} → {rcv}, every datagram dropped by nft in {rcv}'s input hook"
    );
    super::print_load();
    let started = Instant::now();
    let mut datagrams = 0.0;
    let mut per_config: [Vec<f64>; 6] = Default::default();
    for round in 1..=rounds {
        let mut sent: [Vec<f64>; 7] = Default::default();
        for config in [0usize, 1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1, 0] {
            let tracer_proc = match &configs[config] {
                Some(args) => {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let t = TracerProcess::start(tracer, &args)?;
                    std::thread::sleep(super::datapath::SETTLE);
                    Some(t)
                }
                None => None,
            };
            let udp = iperf_in(&lab, &snd, RECEIVER_IP, secs, true)?;
            if let Some(t) = tracer_proc {
                t.stop();
            }
            datagrams += udp.sent * f64::from(secs);
            println!(
                "  round {round} {}: {:.0} datagrams/s sent (all dropped)",
                CONFIG_NAMES[config], udp.sent
            );
            sent[config].push(udp.sent);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        for (i, ratios) in per_config.iter_mut().enumerate() {
            let r = mean(&sent[i + 1]) / mean(&sent[0]);
            println!(
                "  round {round}, {}: with/without {r:.3}",
                CONFIG_NAMES[i + 1]
            );
            ratios.push(r);
        }
    }
    // Every datagram sent died at the firewall (its counter), or this measured something else.
    let dropped = firewall_drops(&lab, &rcv)?;
    println!(
        "unrelated drops: the firewall dropped {dropped} datagrams, iperf3 sent ~{datagrams:.0}"
    );
    if (dropped as f64) < datagrams * 0.95 {
        bail!("the firewall dropped {dropped} of ~{datagrams:.0} datagrams: not a drop flood");
    }
    let [default, other_netns, all_drops, default_floor, other_netns_floor, all_drops_floor] =
        per_config.map(Ratios::of);
    for (name, r) in [
        (CONFIG_NAMES[1], &default),
        (CONFIG_NAMES[2], &other_netns),
        (CONFIG_NAMES[3], &all_drops),
        (CONFIG_NAMES[4], &default_floor),
        (CONFIG_NAMES[5], &other_netns_floor),
        (CONFIG_NAMES[6], &all_drops_floor),
    ] {
        println!(
            "unrelated drops, {}: median {:.3} (rounds {:.3}–{:.3})",
            name.trim(),
            r.median,
            r.min,
            r.max
        );
    }
    println!(
        "unrelated drops: the tracer's own code over its hooks' floor: default {:.3}, \
         netns not watched {:.3}, --all-drops {:.3}",
        default.median / default_floor.median,
        other_netns.median / other_netns_floor.median,
        all_drops.median / all_drops_floor.median
    );
    println!("unrelated drops: {:.0} s", started.elapsed().as_secs_f64());
    super::print_load();
    Ok(Unrelated {
        default,
        other_netns,
        all_drops,
        default_floor,
        other_netns_floor,
        all_drops_floor,
    })
}

/// The firewall rule's counter: datagrams dropped so far.
fn firewall_drops(lab: &Lab, ns: &str) -> Result<u64> {
    let out = lab.exec_ok(ns, &["nft", "list", "table", "inet", "bench_policy"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no counter in the firewall's rules: {text}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_is_read_from_nfts_listing() {
        let listing = "table inet bench_policy {\n\tchain input {\n\t\ttype filter hook input \
                       priority filter; policy accept;\n\t\tudp dport 5201 udp length 72 counter \
                       packets 23112850 bytes 2126382200 drop\n\t}\n}\n";
        let n = listing
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok());
        assert_eq!(n, Some(23112850));
    }
}
