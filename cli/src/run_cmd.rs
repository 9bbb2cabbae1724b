//! `ase run`: the whole system in one process. An embedded coordinator and a local worker
//! (`embedded`) run the configured runs (or the demo campaign), progress is shown per phase,
//! each run's report files are written under `<output>/<run_id>/`, and a score table is
//! printed. The store lives in the data folder, so running the same command again resumes:
//! same run ids, finished units are not redone and no model call is repeated.

use crate::config::{self, AseConfig, DockerUse};
use crate::connect::status_error;
use crate::embedded::{Embedded, Paths};
use crate::progress_view::ProgressView;
use crate::report_cmd::write_report_files;
use crate::score_table::{self, ScoreRow};
use crate::submit_cmd::{file_name, read_within};
use anyhow::Context;
use ase_proto::limits;
use ase_proto::submit::SubmitInputs;
use ase_proto::v1::{ListRunsRequest, RunRef};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The config file (TOML; every key is documented in examples/ase.toml). Without one, or
    /// with one that lists no run, the demo campaign runs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data folder (store, certificates, cache, results); overrides the config and
    /// ASE_DATA_DIR.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where each run's report files go, as DIR/<run_id>/ (default: <data>/results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Before submitting, check each task's repo, commit and image: keep unavailable tasks
    /// out (exclude, the default), refuse to run (abort), or skip the check (off). Overrides
    /// the config's `preflight`.
    #[arg(long, value_enum)]
    preflight: Option<crate::preflight_cmd::PreflightMode>,
}

/// One run, ready to submit.
struct PreparedRun {
    run_id: String,
    request: SubmitInputs,
    /// The dataset holds v2 tasks (they need Docker to be evaluated).
    dynamic: bool,
}

/// Whether a task file holds v2 tasks: the loader decides, as the coordinator will.
fn dataset_is_v2(path: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    let loaded = ase_common::dataset::parse_tasks(path, bytes)?;
    Ok(loaded
        .tasks
        .iter()
        .any(|t| t.version() == ase_common::dataset::DatasetVersion::V2))
}

fn prepare(config: &AseConfig, source: &str) -> anyhow::Result<Vec<PreparedRun>> {
    config
        .runs
        .iter()
        .map(|r| {
            let mut spec = r.run_spec(source)?;
            let dataset = read_within(&r.dataset, "dataset", limits::MAX_DATASET_BYTES)?;
            let dynamic = dataset_is_v2(&r.dataset, &dataset)?;
            // Before anything is submitted, so that no model is paid for a task that cannot
            // be evaluated (and a resumed run keeps the tasks it was first submitted with).
            spec.unavailable = crate::preflight_cmd::before_submit(
                &r.run_id(),
                &r.dataset,
                &dataset,
                &config.worker,
                config.preflight,
            )?;
            let (context, context_name) = match &r.context {
                Some(p) => (
                    read_within(p, "context file", limits::MAX_CONTEXT_BYTES)?,
                    file_name(p),
                ),
                None => (Vec::new(), String::new()),
            };
            let request = SubmitInputs {
                run_spec_json: serde_json::to_vec(&spec).expect("a run spec serialises"),
                dataset,
                dataset_name: file_name(&r.dataset),
                context,
                context_name,
                api_key: r.api_key(&config::process_env).unwrap_or_default(),
            };
            // Before the cluster starts: an input over its limit is named with the limit.
            ase_proto::submit::check(&request)
                .map_err(|e| anyhow::anyhow!("{source}: run {}: {e}", r.run_id()))?;
            Ok(PreparedRun {
                run_id: r.run_id(),
                dynamic,
                request,
            })
        })
        .collect()
}

/// The config of this invocation: the file (or the defaults), then `ASE_*`, then the flags.
fn load_config(args: &Args) -> anyhow::Result<(AseConfig, String)> {
    let (mut config, source) = match &args.config {
        Some(p) => (config::load_file(p)?, p.display().to_string()),
        None => (AseConfig::default(), "(built-in defaults)".to_string()),
    };
    config.apply_env(&config::process_env, &source)?;
    if let Some(d) = &args.data {
        config.coordinator.data = Some(d.clone());
    }
    if let Some(o) = &args.out {
        config.output_dir = Some(o.clone());
    }
    if let Some(p) = args.preflight {
        config.preflight = p;
    }
    Ok((config, source))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut config, mut source) = load_config(&args)?;
    let data = config.data_dir(&config::process_env);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating the data folder {}", data.display()))?;
    if config.runs.is_empty() {
        crate::demo_campaign::configure(&mut config, &data)?;
        source = format!("{source} + demo campaign");
    }
    run_configured(config, &source)
}

/// The config of an `ase run`-like command: `file` (or the defaults), then `ASE_*`, then the
/// data and output folders given.
pub fn load(
    file: Option<PathBuf>,
    data: Option<PathBuf>,
    out: Option<PathBuf>,
) -> anyhow::Result<(AseConfig, String)> {
    load_config(&Args {
        config: file,
        data,
        out,
        preflight: None,
    })
}

/// Runs `config`'s runs to the end in one process, writes their reports under the config's
/// output folder and prints the score table (`ase run` without the demo fallback).
pub fn run_configured(config: AseConfig, source: &str) -> anyhow::Result<ExitCode> {
    let data = config.data_dir(&config::process_env);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating the data folder {}", data.display()))?;
    config.validate(source)?;
    let prepared = prepare(&config, source)?;
    let paths = Paths {
        tls: config.tls_dir(&data),
        cache: config.cache_dir(&data),
        data: data.clone(),
    };
    let output = config.output_dir(&data);
    eprintln!("data folder {}", data.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(config, paths, output, prepared))
}

enum Ending {
    Finished,
    Interrupted,
}

async fn run_async(
    config: AseConfig,
    paths: Paths,
    output: PathBuf,
    prepared: Vec<PreparedRun>,
) -> anyhow::Result<ExitCode> {
    let mut cluster = Embedded::start(&config, &paths).await?;
    eprintln!(
        "coordinator on {} (mutual TLS), worker {} ({} generate + {} evaluate slots{})",
        cluster.grpc_addr,
        config.worker.name,
        config.worker.generate_slots,
        config.worker.eval_slots,
        if cluster.worker_has_docker {
            ", Docker"
        } else {
            ", no Docker"
        }
    );
    let result = drive(&mut cluster, &config, &output, &prepared).await;
    let stopped = cluster.stop().await;
    let ending = result?;
    stopped?;
    match ending {
        Ending::Interrupted => {
            eprintln!("interrupted: run the same command again to resume");
            Ok(ExitCode::from(130))
        }
        Ending::Finished => {
            let rows = write_reports_and_rows(&output, &prepared)?;
            print!("{}", score_table::render(&rows));
            if prepared.len() >= 2 {
                let page = write_campaign_leaderboard(&output, &prepared)?;
                eprintln!("leaderboard of the runs: {}", page.display());
            }
            for line in failure_summary(&rows) {
                eprintln!("{line}");
            }
            eprintln!("reports under {}", output.display());
            let code = exit_code(prepared.len(), &rows);
            if code != 0 && rows.len() == prepared.len() {
                eprintln!("no unit of any run is ok: see the reasons in the reports");
            }
            Ok(ExitCode::from(code))
        }
    }
}

/// Submits every run, then follows them until each completed or was cancelled, the process
/// is interrupted, or the embedded cluster fails.
async fn drive(
    cluster: &mut Embedded,
    config: &AseConfig,
    output: &Path,
    prepared: &[PreparedRun],
) -> anyhow::Result<Ending> {
    for run in prepared {
        if run.dynamic && !cluster.worker_has_docker {
            eprintln!(
                "warning: run {} has v2 tasks and the worker has no Docker{}: their \
                 evaluations will fail",
                run.run_id,
                if config.worker.docker == DockerUse::Off {
                    " (worker.docker = \"off\")"
                } else {
                    ""
                }
            );
        }
        let parts = ase_proto::submit::stream(run.request.clone())
            .map_err(|e| anyhow::anyhow!("run {}: {e}", run.run_id))?;
        let submitted = cluster
            .client
            .submit_run(parts)
            .await
            .map_err(|s| status_error(&format!("submitting run {}", run.run_id), s))?
            .into_inner();
        eprintln!(
            "{} run {} ({} units)",
            if submitted.resumed {
                "resumed"
            } else {
                "submitted"
            },
            submitted.run_id,
            submitted.total_units
        );
    }
    let mut view = ProgressView::new();
    let mut fetched: std::collections::BTreeSet<String> = Default::default();
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        anyhow::ensure!(
            !cluster.crashed(),
            "the embedded coordinator or worker stopped unexpectedly"
        );
        let runs = cluster
            .client
            .list_runs(ListRunsRequest {})
            .await
            .map_err(|s| status_error("listing runs", s))?
            .into_inner()
            .runs;
        let ours: Vec<_> = prepared
            .iter()
            .filter_map(|p| runs.iter().find(|r| r.run_id == p.run_id).cloned())
            .collect();
        view.update(&ours);
        // Write each report as soon as its run completes: an interrupt later keeps it.
        for r in ours.iter().filter(|r| r.state == "completed") {
            if fetched.insert(r.run_id.clone()) {
                fetch_report(cluster, &r.run_id, output).await?;
                view.println(&format!(
                    "run {} completed: {}",
                    r.run_id,
                    output.join(&r.run_id).display()
                ));
            }
        }
        let ended = ours.len() == prepared.len()
            && ours
                .iter()
                .all(|r| r.state == "completed" || r.state == "cancelled");
        if ended {
            view.finish();
            return Ok(Ending::Finished);
        }
        tokio::select! {
            _ = &mut shutdown => {
                view.finish();
                return Ok(Ending::Interrupted);
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn fetch_report(cluster: &mut Embedded, run_id: &str, output: &Path) -> anyhow::Result<()> {
    let report = cluster
        .client
        .fetch_report(RunRef {
            run_id: run_id.to_string(),
        })
        .await
        .map_err(|s| status_error(&format!("fetching the report of run {run_id}"), s))?
        .into_inner();
    anyhow::ensure!(report.complete, "run {run_id} has no report yet");
    let dir = output.join(run_id);
    write_report_files(&dir, &report.files)?;
    Ok(())
}

/// 0 when every run has its report and some unit of some run is ok; 1 when a run has no
/// report (cancelled), or when not one unit of any run is ok: nothing was evaluated, which is
/// not a success (a run with some units ok is named by [`failure_summary`] and exits 0).
fn exit_code(runs: usize, rows: &[ScoreRow]) -> u8 {
    let all_done = rows.len() == runs;
    let nothing_ok = !rows.is_empty() && rows.iter().all(|r| r.units_ok == 0);
    if all_done && !nothing_ok {
        0
    } else {
        1
    }
}

/// One line per run with failed units: a run whose every unit failed completed, but its scores
/// say nothing about the model, and that must not pass unnoticed under a table of zeros.
fn failure_summary(rows: &[ScoreRow]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.units_failed > 0)
        .map(|r| {
            let total = r.units_ok + r.units_failed;
            let what = if r.units_ok == 0 {
                "warning: every unit failed"
            } else {
                "warning: some units failed"
            };
            format!(
                "{what} in run {}: {} of {total} units ok, {} failed (the reasons are in its \
                 report's units)",
                r.run_id, r.units_ok, r.units_failed
            )
        })
        .collect()
}

/// `leaderboard.{html,md,json}` of the campaign's runs that have a report, in the output
/// folder beside their folders.
fn write_campaign_leaderboard(output: &Path, prepared: &[PreparedRun]) -> anyhow::Result<PathBuf> {
    let mut reports = Vec::new();
    for p in prepared {
        let dir = output.join(&p.run_id);
        if dir.join(ase_common::report::REPORT_JSON).is_file() {
            reports.push(ase_common::leaderboard::load_report(&dir)?);
        }
    }
    let board = ase_common::leaderboard::Leaderboard::from_reports(&reports);
    Ok(ase_common::leaderboard::write_leaderboard(output, &board)?)
}

/// The score rows of the runs whose report was written (a cancelled run has none).
fn write_reports_and_rows(
    output: &Path,
    prepared: &[PreparedRun],
) -> anyhow::Result<Vec<ScoreRow>> {
    let mut rows = Vec::new();
    for p in prepared {
        let report = output.join(&p.run_id).join(ase_common::report::REPORT_JSON);
        let error = output
            .join(&p.run_id)
            .join(ase_coordinator::outputs::ERROR_FILE);
        if report.is_file() {
            rows.push(score_table::row_from_report(&p.run_id, &report)?);
        } else if let Ok(text) = std::fs::read_to_string(&error) {
            eprintln!("run {} could not be scored: {}", p.run_id, text.trim_end());
        } else {
            eprintln!("run {} has no report (cancelled)", p.run_id);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run_id: &str, ok: usize, failed: usize) -> ScoreRow {
        ScoreRow {
            run_id: run_id.into(),
            model: "m".into(),
            dataset: "v1 tasks.json".into(),
            quality: 0.0,
            security: 0.0,
            stability: None,
            overall: 0.0,
            overall_corrected: None,
            units_ok: ok,
            units_failed: failed,
        }
    }

    #[test]
    fn runs_with_failed_units_are_named_with_their_counts() {
        let lines = failure_summary(&[row("a__b", 0, 8), row("c__d", 3, 0), row("e__f", 2, 1)]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("every unit failed in run a__b: 0 of 8 units ok, 8 failed"));
        assert!(lines[1].contains("some units failed in run e__f: 2 of 3 units ok"));
    }

    #[test]
    fn nothing_ok_anywhere_is_not_a_success() {
        assert_eq!(exit_code(1, &[row("a__b", 0, 8)]), 1, "0 of 8 units ok");
        assert_eq!(exit_code(2, &[row("a__b", 0, 8), row("c__d", 1, 0)]), 0);
        assert_eq!(
            exit_code(2, &[row("c__d", 1, 0)]),
            1,
            "a run without report"
        );
        assert_eq!(exit_code(1, &[row("c__d", 3, 0)]), 0);
    }
}
