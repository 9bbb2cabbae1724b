//! `ase`: the command line of ase-cluster.

mod calibrate_cmd;
mod cancel_cmd;
mod certs_cmd;
mod compare_cmd;
mod config;
mod config_cmd;
mod connect;
mod coordinator_cmd;
mod demo_campaign;
mod demo_cmd;
mod drain_cmd;
mod duration_arg;
mod embedded;
mod logging;
mod preflight_cmd;
mod progress_fmt;
mod progress_view;
mod prompt_cmd;
mod report_cmd;
mod run_cmd;
mod score_cmd;
mod score_table;
mod shutdown;
mod status_cmd;
mod submit_cmd;
mod token_cmd;
mod validate_cmd;
mod worker_cmd;
mod worker_join;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// glibc's malloc keeps an arena per thread that ever allocated (tokio's workers and the
// blocking pool that runs sled's flushes) and returns little of it: the coordinator's resident
// memory stayed far above what it held. mimalloc returns freed pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, numbered as in its v3 `mimalloc.h` (`mi_option_e`), which the crate
/// builds by default but does not name.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the system at once (mimalloc v3 waits 1 s, and 10 s for arenas, by
/// default) and arenas are committed as they are used. With the defaults the coordinator's
/// resident memory at 100,000 units stayed ~70 MB above what it held; the cost is a few more
/// `madvise` calls. Environment variables (`MIMALLOC_PURGE_DELAY=...`) still override these.
fn tune_allocator() {
    for (option, value, env) in [
        (MI_OPTION_PURGE_DELAY, 0, "MIMALLOC_PURGE_DELAY"),
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            0,
            "MIMALLOC_ARENA_EAGER_COMMIT",
        ),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: setting an option is a plain store into mimalloc's option table; both
            // options are read whenever memory is purged or an arena is reserved.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

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
    /// Join tokens of the coordinator (`ase worker --join`): `ase token --coordinator URL
    /// --tls-dir DIR create|revoke ID|list`.
    Token(token_cmd::Args),
    /// The demo dataset: `ase demo materialise --out DIR`.
    Demo(demo_cmd::Args),
    /// Everything in one process: an embedded coordinator and a local worker run the
    /// configured runs (or the demo), show progress, write reports and print the scores.
    /// Running it again resumes.
    Run(run_cmd::Args),
    /// Check a config file and print the effective config without secrets.
    Config(config_cmd::Args),
    /// Compare two or more runs (result folders, or run ids with --coordinator), paired per
    /// task: exact sign tests, deltas per type, CWE and language, the tasks that flipped
    /// (Markdown, JSON, and HTML with --out).
    Compare(compare_cmd::Args),
    /// Run the original, the fix and a deletion probe of every task of a dataset through the
    /// pipeline and say which tasks discriminate, and why the others are dead (Markdown,
    /// JSON, HTML).
    Calibrate(calibrate_cmd::Args),
    /// Check, before any model call, that each task's repo, base_commit and (v2) image can be
    /// had as the workers would fetch them; print what is unavailable (exit 1 when a task is).
    Preflight(preflight_cmd::Args),
}

fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(logging::filter_from_env())
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
        Command::Token(a) => token_cmd::run(a),
        Command::Demo(a) => demo_cmd::run(a),
        Command::Run(a) => run_cmd::run(a),
        Command::Config(a) => config_cmd::run(a),
        Command::Compare(a) => compare_cmd::run(a),
        Command::Calibrate(a) => calibrate_cmd::run(a),
        Command::Preflight(a) => preflight_cmd::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    /// The option numbers name the options they mean in the bundled mimalloc: their defaults
    /// are the ones of its `options.c` (1,000 ms purge delay, arena eager commit 2).
    #[test]
    fn the_option_numbers_match_the_bundled_mimalloc() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some()
        {
            eprintln!("skipped: MIMALLOC_* options set in the environment");
            return;
        }
        // SAFETY: reading options has no side effect.
        let (delay, eager) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
            )
        };
        assert_eq!((delay, eager), (1000, 2));
    }
}
