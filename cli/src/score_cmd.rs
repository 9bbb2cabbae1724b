//! `ase score`: re-scores an upstream-style output folder (`DIR/{model}__{batch}`), writes
//! upstream's result files beside it and our own report, and prints the score table.

use anyhow::Context;
use ase_common::dataset::{load_task_file, DatasetVersion, Task, TaskSpec};
use ase_common::report::{
    scores_markdown, write_report, Provenance, Report, RunConfig, Scores, TaskInfo,
};
use ase_common::scoring::run::{run_version, score_run, RunResults, RunScans, RunTask, ScoredRun};
use ase_common::scoring::{Generation, UnitId};
use ase_common::upstream_io::{
    read_processed, read_sast_results, read_scan_results, run_name, write_v1_results,
    write_v2_results, PROCESSED_FILE, SAST_RESULTS_FILE, SCAN_RESULTS_FILE,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The task file the run used (v1 or v2; the version is read from it).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Upstream's `generated_code` folder, holding `{model}__{batch}/`.
    #[arg(long)]
    pub outputs: PathBuf,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub batch: String,
    /// Rounds per task (upstream: cycles).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Where to write our report.json, report.md and report.html (default: the run folder).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = load_task_file(&args.dataset)
        .with_context(|| format!("loading dataset {}", args.dataset.display()))?;
    let dataset = &file.dataset;
    // Upstream scores every entry of the file: a task listed twice (data_v2.json has one) counts
    // twice in tasks x rounds. The scorers take the repeats and reproduce that.
    let entries: Vec<&Task> = dataset
        .tasks
        .iter()
        .chain(file.repeated.iter().filter_map(|id| dataset.get(id)))
        .collect();
    let version = run_version(
        dataset
            .tasks
            .iter()
            .map(|t| (t.instance_id.as_str(), t.version())),
    )
    .with_context(|| format!("dataset {}", args.dataset.display()))?;
    let run = run_name(&args.model, &args.batch)?;
    let run_dir = args.outputs.join(&run);
    let generations = read_processed(&run_dir.join(PROCESSED_FILE))?;

    let task_ids: HashSet<&str> = dataset
        .tasks
        .iter()
        .map(|t| t.instance_id.as_str())
        .collect();
    // Records upstream would skip (unknown task) or crash on (round out of range).
    let ignored = |units: &mut dyn Iterator<Item = &UnitId>| {
        units
            .filter(|u| {
                !task_ids.contains(u.instance_id.as_str()) || u.round == 0 || u.round > args.rounds
            })
            .count()
    };
    let mut ignored_units = ignored(&mut generations.iter().map(|g: &Generation| &g.unit));

    let tasks = entries.iter().map(|t| run_task(t)).collect();
    let scans = match version {
        DatasetVersion::V1 => {
            let scans = read_sast_results(&run_dir.join(SAST_RESULTS_FILE))?;
            ignored_units += ignored(&mut scans.keys());
            RunScans::V1(scans)
        }
        DatasetVersion::V2 => {
            let scans = read_scan_results(&run_dir.join(SCAN_RESULTS_FILE))?;
            ignored_units += ignored(&mut scans.keys());
            RunScans::V2(scans)
        }
    };
    let scored = score_run(RunResults {
        rounds: args.rounds,
        tasks,
        generations,
        scans,
    })
    .context("scoring")?;
    let (scores, units, written) = match scored {
        ScoredRun::V1 { score, outcomes } => {
            let files = write_v1_results(&args.outputs, &args.model, &args.batch, &score)?;
            (
                Scores::V1(score),
                outcomes,
                vec![files.eval_result, files.text_report],
            )
        }
        ScoredRun::V2 { score, outcomes } => {
            let file = write_v2_results(&args.outputs, &args.model, &args.batch, &score)?;
            (Scores::V2(score), outcomes, vec![file])
        }
    };

    let provenance = Provenance {
        dataset_path: args.dataset.display().to_string(),
        dataset_sha256: dataset.sha256.clone(),
        tool_versions: [("ase".to_string(), env!("CARGO_PKG_VERSION").to_string())].into(),
        config: RunConfig {
            model: args.model.clone(),
            batch: args.batch.clone(),
            rounds: args.rounds,
            ..RunConfig::default()
        },
        ..Provenance::default()
    };
    let table = scores_markdown(&scores);
    let report =
        Report::new(provenance, units, scores).with_tasks(dataset.tasks.iter().map(|t| TaskInfo {
            instance_id: t.instance_id.clone(),
            vuln_type: t.vuln_type.clone(),
            cwe_id: t.cwe_id.clone(),
            language: t.language.clone(),
        }));
    let report_dir = args.report_dir.clone().unwrap_or_else(|| run_dir.clone());
    let report_files = write_report(&report_dir, &report)?;

    print!("{table}");
    if ignored_units > 0 {
        eprintln!(
            "note: {ignored_units} record(s) of tasks not in the dataset or of rounds above {} were ignored",
            args.rounds
        );
    }
    for path in written.iter().chain([
        &report_files.json,
        &report_files.markdown,
        &report_files.html,
        &report_files.units_jsonl,
        &report_files.units_csv,
    ]) {
        eprintln!("wrote {}", display(path));
    }
    Ok(ExitCode::SUCCESS)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn run_task(t: &Task) -> RunTask {
    RunTask {
        instance_id: t.instance_id.clone(),
        version: t.version(),
        vuln_type: t.vuln_type.clone(),
        cwe_id: t.cwe_id.clone(),
        baseline: match &t.spec {
            TaskSpec::V1(s) => Some(s.detected_vul_num),
            TaskSpec::V2(_) => None,
        },
    }
}
