//! `tracer`: the command. The kernel programs are embedded at build time (tracer/build.rs).
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use tracer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_level()))
        // The kernel programs' records (aya-log) exist only at the levels `--kernel-log`
        // enabled in the kernel: that flag is their filter.
        .filter_module(tracer_common::KERNEL_LOG_TARGET, log::LevelFilter::Trace)
        .init();
    tracer::sink::terminal::set_color(cli.color);
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
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "tracer", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("cannot write the man pages to {}: {e}", dir.display())),
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
