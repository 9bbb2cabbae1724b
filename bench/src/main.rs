//! `bench`: measurements that print numbers, never pass/fail timing assertions. Each
//! subcommand prints its key figure as its last line (`name=value`); BENCHMARKS.md records the
//! numbers with the commands that produced them.

use clap::{Parser, Subcommand};

mod dispatch_local;

#[derive(Parser)]
#[command(name = "bench", about = "ase-cluster benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // One variant per benchmark module (dispatch, scaling, sast, disk, upload).
    /// Coordinator dispatch in one process with durable commits; last line `units_per_sec=`.
    DispatchLocal(dispatch_local::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DispatchLocal(args) => dispatch_local::run(args),
    }
}
