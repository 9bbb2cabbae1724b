//! `ase`: the command line of ase-cluster.

mod cancel_cmd;
mod certs_cmd;
mod config;
mod config_cmd;
mod connect;
mod coordinator_cmd;
mod demo_campaign;
mod demo_cmd;
mod drain_cmd;
mod embedded;
mod progress_fmt;
mod progress_view;
mod prompt_cmd;
mod report_cmd;
mod run_cmd;
mod score_cmd;
mod score_table;
mod status_cmd;
mod submit_cmd;
mod validate_cmd;
mod worker_cmd;
mod worker_setup;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// glibc's malloc keeps an arena per thread that ever allocated (tokio's workers and the
// blocking pool that runs sled's flushes) and returns little of it: the coordinator's resident
// memory stayed far above what it held. mimalloc returns freed pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ase",
    version,
    about = "A.S.E benchmark harness: validate datasets, inspect prompts, score runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a task file (and optionally its context file); list every problem at once.
    Validate(validate_cmd::Args),
    /// Print the system and user messages of one task against a checked-out repo.
    Prompt(prompt_cmd::Args),
    /// Re-score an upstream-style output folder and write upstream's result files beside it.
    Score(score_cmd::Args),
    /// Create the cluster's mutual-TLS certificates.
    Certs(certs_cmd::Args),
    /// Serve the cluster's coordinator (gRPC for workers and clients, metrics).
    Coordinator(coordinator_cmd::Args),
    /// Run a worker: register with the coordinator, lease units, run them, report.
    Worker(worker_cmd::Args),
    /// Submit a run to the coordinator (prints its id); --watch follows it to the end.
    Submit(submit_cmd::Args),
    /// Show runs and workers of the coordinator.
    Status(status_cmd::Args),
    /// Fetch a completed run's files into a directory.
    Report(report_cmd::Args),
    /// Let a worker finish its units and take no new ones.
    Drain(drain_cmd::Args),
    /// Cancel a run.
    Cancel(cancel_cmd::Args),
    /// The demo dataset: `ase demo materialise --out DIR`.
    Demo(demo_cmd::Args),
    /// Everything in one process: an embedded coordinator and a local worker run the
    /// configured runs (or the demo), show progress, write reports and print the scores.
    /// Running it again resumes.
    Run(run_cmd::Args),
    /// Check a config file and print the effective config without secrets.
    Config(config_cmd::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    ase_proto::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(a) => validate_cmd::run(a),
        Command::Prompt(a) => prompt_cmd::run(a),
        Command::Score(a) => score_cmd::run(a),
        Command::Certs(a) => certs_cmd::run(a),
        Command::Coordinator(a) => coordinator_cmd::run(a),
        Command::Worker(a) => worker_cmd::run(a),
        Command::Submit(a) => submit_cmd::run(a),
        Command::Status(a) => status_cmd::run(a),
        Command::Report(a) => report_cmd::run(a),
        Command::Drain(a) => drain_cmd::run(a),
        Command::Cancel(a) => cancel_cmd::run(a),
        Command::Demo(a) => demo_cmd::run(a),
        Command::Run(a) => run_cmd::run(a),
        Command::Config(a) => config_cmd::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
