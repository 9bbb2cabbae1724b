//! `bench`: measurements that print numbers, never pass/fail timing assertions. Each
//! subcommand prints its key figure as its last line (`name=value`); BENCHMARKS.md records the
//! numbers with the commands that produced them.

mod disk;
mod dispatch;
mod dispatch_local;
mod images;
mod images_registry;
mod outputs;
mod sast;
mod scaling;
mod scan;
mod upload;

use clap::{Parser, Subcommand};

// The allocator of the `ase` binary, so that memory figures measured in process match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "bench", about = "ase-cluster benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // One variant per benchmark module (dispatch, scaling, sast, disk, upload, images).
    /// Bytes uploaded into a v2 container per unit: changed files vs the full tree.
    Upload(upload::UploadArgs),
    /// Repo cache disk use for 3 rounds x 10 tasks vs a full copy per unit.
    Disk(disk::DiskArgs),
    /// SAST scan in the container vs the bare osemgrep process.
    Sast(sast::SastArgs),
    /// A v1 unit's scan of its changed files vs a whole-tree scan; last line `scan_ratio=`.
    Scan(scan::ScanArgs),
    /// Coordinator dispatch over gRPC with mutual TLS to an `ase coordinator` process;
    /// last line `units_per_sec=`.
    Dispatch(dispatch::Args),
    /// Coordinator dispatch in one process with durable commits; last line `units_per_sec=`.
    DispatchLocal(dispatch_local::Args),
    /// Scoring and making a finished run's files; last line `outputs_peak_mb=`.
    Outputs(outputs::Args),
    /// Dispatch efficiency T1/(W*TW) of simulated workers taking --unit-ms per unit.
    Scaling(scaling::Args),
    /// A v2 campaign over images in a loopback registry, with and without placement by image
    /// and pulls during generation; last line `ratio=`.
    Images(images::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Upload(args) => upload::run(args),
        Command::Disk(a) => disk::run(a),
        Command::Sast(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(sast::run(a)),
        Command::Scan(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(scan::run(a)),
        Command::Dispatch(args) => dispatch::run(args),
        Command::DispatchLocal(args) => dispatch_local::run(args),
        Command::Scaling(args) => scaling::run(args),
        Command::Outputs(args) => outputs::run(args),
        Command::Images(args) => images::run(args),
    }
}
