//! The command line. This is a contract (docs/command-line.md): scripts depend on it, so
//! options are added, never renamed.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "Show, live, which packets the kernel drops or refuses because they are too big (MTU incidents)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Colours in the terminal: `auto` (a terminal, unless NO_COLOR, CLICOLOR=0 or TERM=dumb
    /// says no; CLICOLOR_FORCE says yes), `always`, `never`.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,

    /// More diagnostics on standard error: -v info, -vv debug, -vvv trace (RUST_LOG, when set,
    /// decides instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl Cli {
    /// The log filter `-v` asks for.
    pub fn log_level(&self) -> &'static str {
        // The tracer's own records a level deeper than its dependencies' (kube, hyper, aya).
        match self.verbose {
            0 => "warn",
            1 => "warn,tracer=info",
            2 => "info,tracer=debug",
            _ => "debug,tracer=trace",
        }
    }
}

/// Exit status of `check` and `report` when they found an MTU problem: not 2, which clap uses
/// for usage errors, so that scripts can tell "found a problem" from "called wrongly".
pub const EXIT_MTU_PROBLEM: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace size drops, ICMP too-big and retransmissions until Ctrl-C (or --duration).
    Run(RunArgs),
    /// The verdict from an exported event log (`tracer run --log`), offline. Exit 0: no MTU
    /// problem, 3: an MTU problem found, 1: error.
    Report(ReportArgs),
    /// MTU audit without tracing: device, tunnel, pod, CNI and route MTUs, and a path-MTU
    /// probe to peer nodes. Exit 0: consistent, 3: problems found, 1: error.
    Check(CheckArgs),
    /// Print the shell completion script for SHELL (`source <(tracer completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (tracer.1, tracer-run.1, …) into DIR (`cargo xtask build` puts
    /// them in target/release/man).
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The JSON Lines event log (`-` = standard input). Several files are read in the order
    /// given as one run: a rotated log oldest first (`events.jsonl.1 events.jsonl`).
    #[arg(value_name = "FILE.jsonl", required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,

    /// Print the verdicts as JSON Lines (the log's `kind: "verdict"` objects) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Hook this device (repeatable). Default: the tunnel devices present (tunl0, vxlan.calico,
    /// flannel.1, cilium_vxlan, any vxlan/ipip device) and the default-route uplink.
    #[arg(long = "iface", value_name = "NAME")]
    pub ifaces: Vec<String>,

    /// Watch this network namespace (a name under /run/netns, or a path such as
    /// /proc/PID/ns/net; repeatable): hook its devices and report only its events.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,

    /// Write the JSON Lines event log here (`-` = standard output). Twice, a FILE and `-`, to
    /// write both (a DaemonSet keeping a file on the node and feeding the cluster's log pipeline).
    #[arg(long = "log", value_name = "FILE")]
    pub log: Vec<PathBuf>,

    /// Rotate the --log file when it would grow past this size: bytes, or with a K, M, G or T
    /// suffix (powers of 1024; `100M`, `1G`). 0 = never rotate.
    #[arg(long, value_name = "SIZE", default_value = "100M", value_parser = parse_size)]
    pub log_max_size: u64,

    /// How many rotated --log files to keep (FILE.1 newest … FILE.N oldest).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub log_keep: u32,

    /// Write the headers of every dropped, oversized and ICMP too-big packet to this pcapng
    /// file (Wireshark, tshark), one interface per device, the event in each packet's comment;
    /// `-` streams it to standard output (`| wireshark -k -i -`; the event lines then go to
    /// standard error).
    #[arg(long, value_name = "FILE.pcapng|-")]
    pub pcap: Option<PathBuf>,

    /// With --pcap: keep up to this many bytes of each packet from its network header instead of
    /// headers only (the kernel captures at most 176).
    #[arg(long, value_name = "BYTES", requires = "pcap", value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub snaplen: Option<u32>,

    /// Serve Prometheus metrics over HTTP at /metrics: PORT (on 127.0.0.1), IP (port 9464),
    /// IP:PORT or [IPv6]:PORT; without a value 127.0.0.1:9464. Off unless given.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464", value_parser = crate::sink::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Stop by itself after this long: seconds (`90`), or `30s`, `5m`, `1h30m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: Option<f64>,

    /// Report every dropped packet, not only those dropped for their size.
    #[arg(long)]
    pub all_drops: bool,

    /// Log every kernel event on its own line. By default a flood of identical drops (same
    /// place, flow and size, each within 10 ms of the one before) is its first line, then a
    /// line a second with a `count` (folded in the kernel for IPv4 UDP and ICMP, else in the
    /// daemon); this keeps every packet (for `--pcap` too), at the full cost per event.
    #[arg(long)]
    pub no_fold: bool,

    /// Benchmarks only: attach every program as usual, but each returns at once (the verifier
    /// prunes its body); nothing is reported. `cargo xtask bench` uses it to tell the hooks' own
    /// cost from the tracer's.
    #[arg(long, hide = true)]
    pub bench_empty_programs: bool,

    /// The kernel programs' own diagnostics (aya-log), on stderr: `warn` says what they could
    /// not do (an event counted as lost because drop programs nested too deep, an arrivals
    /// count the map refused); `trace` also every drop left in the kernel and why (busy:
    /// floods). Off by default: the verifier then removes every log statement.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = KernelLog::Off)]
    pub kernel_log: KernelLog,

    /// Name pods, services and nodes from this snapshot: the output of
    /// `kubectl get pods,services,endpointslices,nodes -A -o json`.
    #[arg(long, value_name = "FILE")]
    pub k8s_snapshot: Option<PathBuf>,

    /// Name flows from the Kubernetes API with these credentials (default: KUBECONFIG,
    /// ~/.kube/config, the in-cluster service account, /etc/kubernetes/kubelet.conf).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Do not contact the Kubernetes API (names then come from --k8s-snapshot only).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub no_k8s_api: bool,

    /// Size of the kernel→daemon ring buffer in KiB (a power of two, at least 64).
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ringbuf_kib)]
    pub ringbuf_kib: u32,

    /// Where the node's filesystem is mounted when the tracer runs in a container (e.g. /host):
    /// node-local names are read there (/var/log/pods, /etc/cni/net.d, /etc/hostname; /proc
    /// too when one is mounted there, else the tracer's own /proc).
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub host_root: PathBuf,

    /// Do not name pods and nodes from node-local facts (/var/log/pods, cgroups, routes).
    #[arg(long)]
    pub no_node_local: bool,

    /// This node's name in the event log (`node` of every record, the start line and the
    /// verdicts). Default: the NODE_NAME environment variable, else the hostname.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// Every this many seconds, write what arrived on the uplinks from each peer (`arrivals`
    /// log lines: packets, bytes, largest, size classes; the far end's view of a path), and
    /// once more at the stop. 0 = never (nothing is counted).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub arrivals_interval: u64,

    /// Never probe: by default, when only retransmission timing says packets die beyond this
    /// node, a bounded DF ping from the sender's namespace toward the pod it sends to measures
    /// what passes (each address at most once per 5 minutes, ≤ 3 s, ~50 packets).
    #[arg(long)]
    pub no_probe: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Audit this network namespace (a name under /run/netns, or a path such as
    /// /proc/PID/ns/net; repeatable). Default: the tracer's own namespace.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,

    /// Where the node's filesystem is mounted (CNI config, /var/lib/calico, /run/flannel).
    #[arg(long, value_name = "PATH")]
    pub host_root: Option<PathBuf>,

    /// Probe the path MTU to this node address too (repeatable), besides the peers found in
    /// tunnel devices, their forwarding entries and routes.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<std::net::IpAddr>,

    /// Do not probe: devices, routes and configuration only (no packet is sent).
    #[arg(long)]
    pub no_probe: bool,

    /// Confirm a fix: every pod veth, the CNI config, the tunnels and the probed paths agree
    /// with this pod MTU (exit 3 otherwise, naming the pods still on another MTU).
    #[arg(long, value_name = "MTU", value_parser = clap::value_parser!(u32).range(68..=65535))]
    pub expect_mtu: Option<u32>,

    /// Print the audit as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `90`, `1.5` (seconds), or with a unit as other tools take it: `500ms`, `30s`, `5m`, `2h`,
/// `1d`, also combined (`1m30s`).
fn parse_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("`{s}` is not a number of seconds or a duration like 30s, 5m, 1h30m");
    let t = s.trim();
    let v = match t.parse::<f64>() {
        Ok(v) => v,
        Err(_) => {
            let mut total = 0.0;
            let mut rest = t;
            while !rest.is_empty() {
                let num_len = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .ok_or_else(bad)?;
                let (num, tail) = rest.split_at(num_len);
                let unit_len = tail
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(tail.len());
                let (unit, next) = tail.split_at(unit_len);
                let n: f64 = num.parse().map_err(|_| bad())?;
                let scale = match unit {
                    "ms" => 0.001,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    "d" => 86400.0,
                    _ => return Err(bad()),
                };
                total += n * scale;
                rest = next;
            }
            total
        }
    };
    if !v.is_finite() || v <= 0.0 || v > 366.0 * 86400.0 {
        return Err(format!("`{s}`: give a positive duration (at most a year)"));
    }
    Ok(v)
}

/// `1048576`, `512K`, `100M`, `1G`, `2T` (also `100MiB`, `100MB`: both mean powers of 1024
/// here, as log sizes conventionally do).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or a number with K, M, G or T)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "`{s}`: unknown size unit `{unit}` (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of KiB"))?;
    if v < 64 || !v.is_power_of_two() || v > 1 << 20 {
        return Err(format!("`{s}`: give a power of two between 64 and 1048576"));
    }
    Ok(v)
}

/// `--kernel-log`: the levels of aya-log, and off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelLog {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl KernelLog {
    /// The value of the kernel object's `AYA_LOG_LEVEL`: statements of a level above it are
    /// disabled (aya-log numbers its levels Error = 1 … Trace = 5).
    pub fn mask(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied()))
    }

    #[test]
    fn the_documented_contract_parses() {
        let cli = parse(&[
            "run",
            "--iface",
            "eth0",
            "--iface",
            "tunl0",
            "--netns",
            "node-a",
            "--log",
            "x.jsonl",
            "--duration",
            "20",
            "--all-drops",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.ifaces, ["eth0", "tunl0"]);
        assert_eq!(a.netns, ["node-a"]);
        assert_eq!(a.log, [PathBuf::from("x.jsonl")]);
        assert_eq!(a.duration, Some(20.0));
        assert!(a.all_drops);
        assert_eq!(a.ringbuf_kib, 4096);
        assert_eq!(a.host_root.to_str(), Some("/"));
        assert!(!a.no_node_local);
        let Command::Run(a) = parse(&["run", "--host-root", "/host", "--no-node-local"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!(a.host_root.to_str(), Some("/host"));
        assert!(a.no_node_local);
    }

    #[test]
    fn the_check_contract_parses() {
        let cli = parse(&[
            "check",
            "--netns",
            "node-a",
            "--netns",
            "/proc/1/ns/net",
            "--host-root",
            "/host",
            "--peer",
            "10.33.44.208",
            "--peer",
            "fd00::2",
            "--no-probe",
            "--json",
        ])
        .unwrap();
        let Command::Check(a) = cli.command else {
            panic!("not check")
        };
        assert_eq!(a.netns, ["node-a", "/proc/1/ns/net"]);
        assert_eq!(a.host_root.unwrap().to_str(), Some("/host"));
        assert_eq!(a.peers.len(), 2);
        assert!(a.peers[1].is_ipv6());
        assert!(a.no_probe && a.json);
        let err = parse(&["check", "--peer", "node-b"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("node-b"), "{err}");
    }

    #[test]
    fn log_rotation_options() {
        let Command::Run(a) = parse(&["run"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!((a.log_max_size, a.log_keep), (100 << 20, 5));
        for (given, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("512k", 512 << 10),
            ("100M", 100 << 20),
            ("100MiB", 100 << 20),
            ("1G", 1 << 30),
            ("2TB", 2 << 40),
        ] {
            assert_eq!(parse_size(given), Ok(bytes), "{given}");
        }
        let Command::Run(a) = parse(&["run", "--log-max-size", "1G", "--log-keep", "9"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!((a.log_max_size, a.log_keep), (1 << 30, 9));
        let Command::Run(a) = parse(&["run", "--pcap", "x.pcapng", "--snaplen", "96"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!(a.pcap.unwrap().to_str(), Some("x.pcapng"));
        assert_eq!(a.snaplen, Some(96));
        assert_eq!(a.metrics, None, "metrics are off by default");
        for (args, addr) in [
            (&["run", "--metrics"][..], "127.0.0.1:9464"),
            (&["run", "--metrics", "9100"][..], "127.0.0.1:9100"),
            (&["run", "--metrics", "0.0.0.0:9464"][..], "0.0.0.0:9464"),
        ] {
            let Command::Run(a) = parse(args).unwrap().command else {
                panic!("not run")
            };
            assert_eq!(a.metrics, Some(addr.parse().unwrap()), "{args:?}");
        }
    }

    #[test]
    fn colour_and_verbosity_are_global() {
        for args in [
            &["--color", "never", "-vv", "run"][..],
            &["run", "--color", "never", "-v", "-v"][..],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.color, ColorWhen::Never, "{args:?}");
            assert_eq!(cli.log_level(), "info,tracer=debug", "{args:?}");
        }
        let cli = parse(&["report", "x.jsonl"]).unwrap();
        assert_eq!((cli.color, cli.log_level()), (ColorWhen::Auto, "warn"));
        assert!(parse(&["--color", "sometimes", "run"]).is_err());
    }

    #[test]
    fn durations_take_units() {
        for (text, secs) in [
            ("90", 90.0),
            ("1.5", 1.5),
            ("30s", 30.0),
            ("5m", 300.0),
            ("2h", 7200.0),
            ("1d", 86400.0),
            ("1m30s", 90.0),
            ("500ms", 0.5),
            ("1h30m", 5400.0),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in ["5x", "m", "5m3", "1.2.3s", "", "-5m", "0s", "400d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["run", "--duration", "soon"][..], "not a number"),
            (&["run", "--duration", "-3"][..], "positive"),
            (&["run", "--duration", "NaN"][..], "positive"),
            (&["run", "--ringbuf-kib", "100"][..], "power of two"),
            (&["run", "--bogus"][..], "--bogus"),
            (&["run", "--log-max-size", "10X"][..], "unknown size unit"),
            (&["run", "--log-max-size", "M"][..], "not a size"),
            (&["run", "--log-max-size", "99999999999T"][..], "too large"),
            (&["run", "--log-keep", "0"][..], "0"),
            (&["run", "--snaplen", "96"][..], "--pcap"),
            (&["run", "--metrics", "localhost"][..], "not an address"),
            (&["run", "--pcap", "x", "--snaplen", "0"][..], "0"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
