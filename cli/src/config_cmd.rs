//! `ase config check`: loads a config file the way `ase run` does (file, then `ASE_*`
//! variables), validates it, and prints the effective config without secrets.

use crate::config::{self, AseConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(clap::Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print the effective config (defaults filled in, API keys
    /// shown only as where they come from).
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The config file; none: the built-in defaults (and ASE_* variables).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check(a) => check(a),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (mut config, source) = match &args.config {
        Some(p) => match config::load_file(p) {
            Ok(c) => (c, p.display().to_string()),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => (AseConfig::default(), "(built-in defaults)".to_string()),
    };
    // Every problem at once, the environment's and the file's: one pass to fix them all.
    let env = config.apply_env(&config::process_env, &source);
    let mut failed = false;
    for e in [env.err(), config.validate(&source).err()]
        .into_iter()
        .flatten()
    {
        eprintln!("{e}");
        failed = true;
    }
    if failed {
        return Ok(ExitCode::from(1));
    }
    print!("{}", config.effective_toml(&config::process_env));
    eprintln!(
        "{source}: ok ({} run{})",
        config.runs.len(),
        if config.runs.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}
