//! `ase report`: fetch a completed run's files (upstream's result files, report.json, report.md,
//! report.html) into a directory.

use crate::connect::{runtime, status_error, ConnectArgs};
use anyhow::Context;
use ase_common::report::REPORT_JSON;
use ase_proto::v1::{FetchReportResponse, ReportFile, RunRef};
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

/// Fetches runs' files from the coordinator over one connection (`FetchReport`), in order.
pub fn fetch_reports(
    connect: &ConnectArgs,
    run_ids: &[String],
) -> anyhow::Result<Vec<FetchReportResponse>> {
    runtime()?.block_on(async {
        let mut client = connect.client().await?;
        let mut reports = Vec::with_capacity(run_ids.len());
        for run_id in run_ids {
            let report = client
                .fetch_report(RunRef {
                    run_id: run_id.clone(),
                })
                .await
                .map_err(|s| status_error(&format!("fetching the report of run {run_id}"), s))?;
            reports.push(report.into_inner());
        }
        Ok(reports)
    })
}

/// The text of a fetched run's report.json; an error when the run is not complete, could not
/// be scored (its `error.txt`), or has no report.json.
pub fn fetched_report_json(report: &FetchReportResponse) -> anyhow::Result<String> {
    let run = &report.run_id;
    anyhow::ensure!(report.complete, "run {run} is not complete yet: no report");
    let file = |name: &str| report.files.iter().find(|f| f.name == name);
    if let Some(error) = file(ase_coordinator::outputs::ERROR_FILE) {
        anyhow::bail!(
            "run {run} could not be scored: {}",
            String::from_utf8_lossy(&error.content).trim_end()
        );
    }
    let json = file(REPORT_JSON)
        .with_context(|| format!("run {run}: the coordinator sent no {REPORT_JSON}"))?;
    String::from_utf8(json.content.clone())
        .with_context(|| format!("run {run}: {REPORT_JSON} is not UTF-8"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = fetch_reports(&args.connect, std::slice::from_ref(&args.run))?
        .pop()
        .context("the coordinator sent no report")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn response(complete: bool, files: &[(&str, &str)]) -> FetchReportResponse {
        FetchReportResponse {
            run_id: "m__b".into(),
            complete,
            files: files
                .iter()
                .map(|(name, content)| ReportFile {
                    name: name.to_string(),
                    content: content.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_fetched_report_json_or_why_there_is_none() {
        let ok = response(
            true,
            &[("m__b/eval_result.json", "{}"), (REPORT_JSON, "{\"a\":1}")],
        );
        assert_eq!(fetched_report_json(&ok).unwrap(), "{\"a\":1}");
        let err = |r: &FetchReportResponse| format!("{:#}", fetched_report_json(r).unwrap_err());
        let running = err(&response(false, &[]));
        assert!(
            running.contains("run m__b is not complete yet"),
            "{running}"
        );
        let failed = err(&response(
            true,
            &[(ase_coordinator::outputs::ERROR_FILE, "disk full\n")],
        ));
        assert!(
            failed.contains("run m__b could not be scored: disk full"),
            "{failed}"
        );
        let none = err(&response(true, &[("m__b/eval_result.json", "{}")]));
        assert!(none.contains("sent no report.json"), "{none}");
    }
}
