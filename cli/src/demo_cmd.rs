//! `ase demo materialise --out DIR`: writes the demo dataset (its git repos with stable commit
//! ids, task, context and predictions files) under DIR and prints where everything is as JSON.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DemoCommand,
}

#[derive(clap::Subcommand)]
enum DemoCommand {
    /// Write the demo under --out (idempotent) and print its DemoWorld as JSON.
    Materialise {
        /// Folder to write into (created when missing; an earlier demo there is reused).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        DemoCommand::Materialise { out } => {
            let world = ase_demo::materialise(&out)
                .with_context(|| format!("materialising the demo under {}", out.display()))?;
            println!("{}", serde_json::to_string_pretty(&world)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
