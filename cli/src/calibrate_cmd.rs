//! `ase calibrate --dataset D [--context C]`: runs three probes of every task of D through the
//! same pipeline as `ase run` (an embedded coordinator and a local worker): `original` (the
//! vulnerable block), `reference` (the fix) and `deletion` (the block deleted), one round each,
//! then says per task whether it discriminates, and why not (`ase_common::calibrate`).
//! Writes `calibration.md`, `calibration.json` and `calibration.html` under
//! `<output>/calibrate__<batch>/`, prints the Markdown, and exits 1 when a task is dead.

use crate::config::{ModelSettings, RunSettings};
use anyhow::Context;
use ase_common::calibrate::{assess, Calibration, ProbeResult, Probes};
use ase_common::dataset::DatasetVersion;
use ase_common::report::{Report, REPORT_JSON};
use ase_common::scoring::UnitId;
use ase_worker::pipeline::spec::{CountScopeSetting, PromptSettings, RunLimits};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The task file to calibrate (v1 or v2).
    #[arg(long)]
    dataset: PathBuf,
    /// Its retrieval context file.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Upstream's `cut_repos.json` (v1 scans limited to the listed files).
    #[arg(long)]
    cut_repos: Option<PathBuf>,
    /// A config file for the worker and coordinator settings (its runs are ignored).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data folder (store, certificates, cache, results).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the probes' reports and the calibration go (default: <data>/results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The batch of the probe runs (`<probe>__<batch>`; the same batch again resumes them).
    /// Default: `calibrate-<dataset file stem>-<8 hex of its sha256>` (another dataset, or the
    /// same file changed, is another batch).
    #[arg(long)]
    batch: Option<String>,
}

/// The probes, as model names of their runs.
pub const PROBES: [&str; 3] = ["original", "reference", "deletion"];

fn default_batch(dataset: &Path, bytes: &[u8]) -> String {
    let digest = ase_common::digest::sha256_hex(bytes);
    let stem = dataset
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("calibrate-{clean}-{}", &digest[..8])
}

fn probe_run(args: &Args, batch: &str, model_name: &str, model: ModelSettings) -> RunSettings {
    RunSettings {
        model_name: model_name.into(),
        batch: batch.into(),
        dataset: args.dataset.clone(),
        context: args.context.clone(),
        cut_repos: args.cut_repos.clone(),
        rounds: 1,
        count_scope: CountScopeSetting::default(),
        max_context_token: PromptSettings::default().max_context_token,
        model,
        limits: RunLimits::default(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut config, source) =
        crate::run_cmd::load(args.config.clone(), args.data.clone(), args.out.clone())?;
    let batch = match &args.batch {
        Some(b) => b.clone(),
        None => {
            let bytes = std::fs::read(&args.dataset)
                .with_context(|| format!("reading {}", args.dataset.display()))?;
            default_batch(&args.dataset, &bytes)
        }
    };
    config.runs = vec![
        probe_run(&args, &batch, PROBES[0], ModelSettings::Original),
        probe_run(&args, &batch, PROBES[1], ModelSettings::Reference),
        probe_run(&args, &batch, PROBES[2], ModelSettings::Deletion),
    ];
    let data = config.data_dir(&crate::config::process_env);
    let output = config.output_dir(&data);
    let code = crate::run_cmd::run_configured(config, &format!("{source} + calibrate"))?;
    if code == ExitCode::from(130) {
        return Ok(code);
    }
    let calibration = calibrate(&args.dataset, &output, &batch)?;
    let dir = output.join(format!("calibrate__{batch}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        ("calibration.md", calibration.to_markdown()),
        ("calibration.json", calibration.to_json()),
        ("calibration.html", calibration.to_html()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", calibration.to_markdown());
    eprintln!("calibration under {}", dir.display());
    Ok(if calibration.dead().next().is_none() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", calibration.summary());
        ExitCode::from(1)
    })
}

/// A probe run's report, if it was written.
fn read_report(output: &Path, run_id: &str) -> anyhow::Result<Option<Report>> {
    let path = output.join(run_id).join(REPORT_JSON);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let report =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(report))
}

/// Judges every task of `dataset` from the probe runs' files under `output`.
pub fn calibrate(dataset: &Path, output: &Path, batch: &str) -> anyhow::Result<Calibration> {
    let bytes = std::fs::read(dataset).with_context(|| format!("reading {}", dataset.display()))?;
    let tasks = ase_common::dataset::parse_tasks(dataset, &bytes)?.tasks;
    let mut probes: Vec<BTreeMap<String, ProbeResult>> = Vec::new();
    for probe in PROBES {
        let run_id = format!("{probe}__{batch}");
        let units = read_report(output, &run_id)?
            .map(|r| {
                r.units
                    .iter()
                    .filter(|u| u.unit.round == 1)
                    .map(|u| (u.unit.instance_id.clone(), ProbeResult::of(u)))
                    .collect()
            })
            .unwrap_or_default();
        probes.push(units);
    }
    // v1: the original probe's count is the count of the base code (the baseline).
    let original_run = format!("{}__{batch}", PROBES[0]);
    let counts = {
        let path = output
            .join(&original_run)
            .join(&original_run)
            .join(ase_common::upstream_io::SAST_RESULTS_FILE);
        if path.is_file() {
            ase_common::upstream_io::read_sast_results(&path)?
        } else {
            BTreeMap::new()
        }
    };
    let tasks = tasks
        .iter()
        .map(|t| {
            let version = t.version();
            let baseline = (version == DatasetVersion::V1)
                .then(|| {
                    counts
                        .get(&UnitId {
                            instance_id: t.instance_id.clone(),
                            round: 1,
                        })
                        .copied()
                })
                .flatten();
            let found = |i: usize| probes[i].get(&t.instance_id).cloned();
            assess(
                &t.instance_id,
                &t.vuln_type,
                version,
                baseline,
                Probes {
                    original: found(0),
                    fix: found(1),
                    deletion: found(2),
                },
            )
        })
        .collect();
    Ok(Calibration {
        dataset: dataset.display().to_string(),
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_batch_names_the_dataset_file() {
        let a = default_batch(Path::new("/x/data_v1.json"), b"[]");
        assert!(a.starts_with("calibrate-data-v1-"), "{a}");
        assert_eq!(a.len(), "calibrate-data-v1-".len() + 8);
        // Two files of one name (v1/tasks.json, v2/tasks.json) are two batches.
        assert_ne!(
            default_batch(Path::new("v1/tasks.json"), b"[1]"),
            default_batch(Path::new("v2/tasks.json"), b"[2]")
        );
    }
}
