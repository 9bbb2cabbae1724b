//! `bench`: measurements that print numbers, never pass/fail timing assertions. Each
//! subcommand prints its key figure as its last line (`name=value`); BENCHMARKS.md records the
//! numbers with the commands that produced them.

use clap::{Parser, Subcommand};

mod upload;

#[derive(Parser)]
#[command(name = "bench", about = "ase-cluster benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // One variant per benchmark module (dispatch, scaling, sast, disk, upload).
    /// Bytes uploaded into a v2 container per unit: changed files vs the full tree.
    Upload(upload::UploadArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Upload(args) => upload::run(args),
    }
}
