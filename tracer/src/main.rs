//! `tracer`: the command. The kernel programs are embedded at build time (tracer/build.rs).
use std::process::ExitCode;

use clap::Parser as _;
use tracer::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tracer::run::run(args, OBJECT).map(|()| ExitCode::SUCCESS),
        // 2 = "looked, found an MTU problem", as for `tracer check`: scripts tell it from 1.
        Command::Report(args) => tracer::report::run(&args.log, args.json)
            .map(|problem| ExitCode::from(if problem { 2 } else { 0 })),
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
