//! The run's outputs, opened before anything is attached so that a bad path or a taken port
//! fails the start while nothing traces yet: the metrics endpoint, the JSONL event log, the
//! packet capture, and the terminal.
use anyhow::{Context as _, Result};

use super::plan::Plan;
use crate::{
    cli::RunArgs,
    sink::{
        jsonl::JsonlSink,
        logfile::{check_writable, Rotation},
        metrics::{HookStatus, Metrics},
        pcap::PcapSink,
        terminal::{self, TerminalSink},
        Sink,
    },
};

pub struct Outputs {
    pub sinks: Vec<Box<dyn Sink>>,
    /// The start-up block's `log:` text.
    pub describe: String,
    /// Where the attach report goes for the metrics, when they are served.
    pub hook_status: Option<HookStatus>,
}

impl Outputs {
    /// The event log, the capture and the metrics endpoint, as asked, and the terminal. Every
    /// file is checked for writability and the port bound before any file is truncated, so a
    /// start that fails on one output leaves an earlier run's files alone.
    pub fn open(args: &RunArgs, plan: &Plan) -> Result<Outputs> {
        let log_file = log_file(args)?;
        let log_to_stdout = args.log.iter().any(|p| p.as_os_str() == "-");
        let pcap_to_stdout = args.pcap.as_ref().is_some_and(|p| p.as_os_str() == "-");
        if log_to_stdout && pcap_to_stdout {
            anyhow::bail!(
                "--log - and --pcap - both ask for standard output: give one of them a file"
            );
        }
        if let Some(p) = log_file {
            check_writable(p)
                .with_context(|| format!("cannot create the event log {}", p.display()))?;
        }
        if let Some(p) = args.pcap.as_ref().filter(|_| !pcap_to_stdout) {
            check_writable(p)
                .with_context(|| format!("cannot create the capture {}", p.display()))?;
        }
        let labels = plan.labels();
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let mut desc = Vec::new();
        let mut hook_status = None;
        if let Some(addr) = args.metrics {
            let metrics = Metrics::new(labels.clone());
            let bound = metrics.serve(addr)?;
            desc.push(format!("metrics at http://{bound}/metrics"));
            hook_status = Some(metrics.hook_status());
            sinks.push(Box::new(metrics));
        }
        let mut logs = Vec::new();
        if let Some(p) = log_file {
            let rotation = (args.log_max_size > 0).then_some(Rotation {
                max_bytes: args.log_max_size,
                keep: args.log_keep,
            });
            sinks.push(Box::new(JsonlSink::create_rotating(p, rotation)?));
            logs.push(p.display().to_string());
        }
        if log_to_stdout {
            sinks.push(Box::new(JsonlSink::stdout()));
            logs.push("stdout".to_string());
        }
        if logs.is_empty() {
            logs.push("none (--log FILE to keep one)".to_string());
        }
        desc.insert(0, logs.join(" and "));
        if let Some(p) = &args.pcap {
            if pcap_to_stdout {
                sinks.push(Box::new(PcapSink::stdout(args.snaplen, labels)?));
                desc.push("packet headers to stdout (pcapng)".to_string());
            } else {
                sinks.push(Box::new(PcapSink::create(p, args.snaplen, labels)?));
                desc.push(format!("packet headers to {}", p.display()));
            }
        }
        // The event stream goes to stdout, or to stderr when the JSONL log or the capture is
        // stdout.
        if log_to_stdout || pcap_to_stdout {
            sinks.push(Box::new(TerminalSink::new(std::io::stderr(), false)));
        } else {
            sinks.push(Box::new(TerminalSink::new(
                std::io::stdout(),
                terminal::want_color(),
            )));
        }
        Ok(Outputs {
            sinks,
            describe: desc.join(", "),
            hook_status,
        })
    }
}

/// The one log file of `--log` (the other `--log` may be `-`, standard output).
pub fn log_file(args: &RunArgs) -> Result<Option<&std::path::Path>> {
    let files: Vec<&std::path::Path> = args
        .log
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .map(|p| p.as_path())
        .collect();
    let stdouts = args.log.len() - files.len();
    if files.len() > 1 || stdouts > 1 {
        anyhow::bail!(
            "--log is given at most twice: one FILE and `-` (standard output); got {}",
            args.log
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(files.first().copied())
}
