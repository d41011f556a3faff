//! `tracer`: the command. The kernel programs are embedded at build time (tracer/build.rs).
use std::process::ExitCode;

use clap::Parser as _;
use tracer::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        // The kernel programs' records (aya-log) exist only at the levels `--kernel-log`
        // enabled in the kernel: that flag is their filter.
        .filter_module(tracer_common::KERNEL_LOG_TARGET, log::LevelFilter::Trace)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tracer::run::run(args, OBJECT).map(|()| ExitCode::SUCCESS),
        Command::Report(args) => tracer::report::run(&args.logs, args.json).map(|problem| {
            ExitCode::from(if problem {
                tracer::cli::EXIT_MTU_PROBLEM
            } else {
                0
            })
        }),
        Command::Check(args) => return tracer::check::report::command(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The kernel programs, built from tracer-ebpf for this daemon.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
