//! `ase preflight --dataset D [--config C]`: before any model is paid, whether each task's
//! inputs can be had from this host as its workers would fetch them: the repo and its
//! `base_commit`, and for v2 the image's manifest for the workers' platform
//! (`ase_worker::preflight`). Prints a table of what is unavailable (kept out of a run) and
//! what could not be checked (kept in), and exits 1 when a task is unavailable.
//!
//! `ase run` and `ase submit` run the same check before they submit (see [`PreflightMode`]).

use crate::config::{self, AseConfig, WorkerSettings};
use anyhow::Context;
use ase_common::dataset::{parse_tasks, Task};
use ase_common::preflight::UnavailableTask;
use ase_worker::preflight::{preflight, PreflightReport, PreflightSettings};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `ase run` and `ase submit` do with tasks a preflight finds unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PreflightMode {
    /// Keep them out of the run, with their reasons (listed apart in every report).
    #[default]
    Exclude,
    /// Refuse to submit.
    Abort,
    /// No preflight: every task is submitted (a missing input fails its units).
    Off,
}

#[derive(clap::Args)]
pub struct Args {
    /// The task file to check (v1 or v2).
    #[arg(long)]
    dataset: PathBuf,
    /// A config file for the worker settings that say where repos come from
    /// (`worker.repo_url_template`) and whether Docker is used (`worker.docker`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where repos are cloned from (`{repo}` becomes `owner/name`); wins over the config.
    #[arg(long)]
    repo_url_template: Option<String>,
    /// Also write what was found as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What a preflight found, as written by `--json`.
#[derive(Serialize)]
struct PreflightJson<'a> {
    dataset: String,
    tasks: usize,
    unavailable: &'a [UnavailableTask],
    unchecked: Vec<serde_json::Value>,
    image_digests: &'a std::collections::BTreeMap<String, String>,
    images_skipped: Option<&'a str>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut config, source) = match &args.config {
        Some(p) => (config::load_file(p)?, p.display().to_string()),
        None => (AseConfig::default(), "(built-in defaults)".to_string()),
    };
    config.apply_env(&config::process_env, &source)?;
    if let Some(t) = &args.repo_url_template {
        config.worker.repo_url_template = Some(t.clone());
    }
    let bytes = std::fs::read(&args.dataset)
        .with_context(|| format!("reading the dataset {}", args.dataset.display()))?;
    let report = check(&args.dataset, &bytes, &config.worker)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = PreflightJson {
            dataset: args.dataset.display().to_string(),
            tasks: report.tasks,
            unavailable: &report.unavailable,
            unchecked: report
                .unchecked
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "instance_id": u.instance_id, "what": u.what, "reason": u.reason
                    })
                })
                .collect(),
            image_digests: &report.image_digests,
            images_skipped: report.images_skipped.as_deref(),
        };
        let text = serde_json::to_string_pretty(&json).expect("the preflight serialises");
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.unavailable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Checks the tasks of `dataset` (its bytes) as a worker with `worker`'s settings would fetch
/// them. Runs its own runtime: callers are synchronous.
pub fn check(
    dataset: &Path,
    bytes: &[u8],
    worker: &WorkerSettings,
) -> anyhow::Result<PreflightReport> {
    let tasks: Vec<Task> = parse_tasks(dataset, bytes)?.tasks;
    let scratch = tempfile::Builder::new()
        .prefix("ase-preflight-")
        .tempdir()
        .context("creating a scratch folder for the preflight")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let settings = PreflightSettings::for_host(
            worker.repo_url_template.as_deref(),
            worker.docker,
            scratch.path().to_path_buf(),
        )
        .await?;
        anyhow::Ok(preflight(&tasks, &settings).await)
    })
}

/// The preflight of one run before it is submitted: `Ok(unavailable)` to put in its spec
/// (empty when `mode` is off), or an error naming the tasks when `mode` is abort.
pub fn before_submit(
    run_id: &str,
    dataset: &Path,
    bytes: &[u8],
    worker: &WorkerSettings,
    mode: PreflightMode,
) -> anyhow::Result<Vec<UnavailableTask>> {
    if mode == PreflightMode::Off {
        return Ok(Vec::new());
    }
    let report =
        check(dataset, bytes, worker).with_context(|| format!("run {run_id}: preflight"))?;
    eprint!("run {run_id}: {}", report.table());
    if report.tasks > 0 && report.unavailable.len() == report.tasks {
        anyhow::bail!(
            "run {run_id}: every task of {} is unavailable: nothing to run",
            dataset.display()
        );
    }
    if mode == PreflightMode::Abort && !report.unavailable.is_empty() {
        let ids: Vec<&str> = report
            .unavailable
            .iter()
            .map(|u| u.instance_id.as_str())
            .collect();
        anyhow::bail!(
            "run {run_id}: {} task(s) unavailable ({}); not submitted (--preflight abort)",
            ids.len(),
            ids.join(", ")
        );
    }
    Ok(report.unavailable)
}
