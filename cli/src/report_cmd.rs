//! `ase report`: fetch a completed run's files (upstream's result files, report.json, report.md,
//! report.html) into a directory.

use crate::connect::{runtime, status_error, ConnectArgs};
use anyhow::Context;
use ase_proto::v1::{ReportFile, RunRef};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[arg(long)]
    run: String,
    /// Directory the files are written into (created when missing).
    #[arg(long)]
    out: PathBuf,
}

/// A file name from the coordinator, checked to stay inside the output directory.
/// The coordinator's own rule for the names of a run's files.
fn safe_relative(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(name);
    let ok = ase_coordinator::outputs::is_safe_name(name);
    anyhow::ensure!(
        ok,
        "the report names a file {name:?} outside the output directory"
    );
    Ok(path.to_path_buf())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = runtime()?.block_on(async {
        let mut client = args.connect.client().await?;
        client
            .fetch_report(RunRef {
                run_id: args.run.clone(),
            })
            .await
            .map_err(|s| status_error(&format!("fetching the report of run {}", args.run), s))
    })?;
    let report = report.into_inner();
    if !report.complete {
        eprintln!("run {} is not complete yet: no report", args.run);
        return Ok(ExitCode::from(1));
    }
    for path in write_report_files(&args.out, &report.files)? {
        println!("{}", path.display());
    }
    // A run whose finish could never succeed completes with only this file: say so.
    if let Some(error) = report
        .files
        .iter()
        .find(|f| f.name == ase_coordinator::outputs::ERROR_FILE)
    {
        eprintln!(
            "run {} could not be scored: {}",
            args.run,
            String::from_utf8_lossy(&error.content).trim_end()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a fetched report's files under `out`; returns their paths.
pub fn write_report_files(out: &Path, files: &[ReportFile]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for file in files {
        let path = out.join(safe_relative(&file.name)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.content)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
