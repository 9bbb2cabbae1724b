//! `ase compare RUN RUN [RUN...]`: paired comparison of local result folders (each holding the
//! report.json that `ase run`, `ase report` or `ase score` wrote), or with `--coordinator` of
//! runs named by their run id, their report.json fetched as `ase report` fetches it. Either
//! way the same text goes through the same loaders; the arithmetic is `ase_common::compare`.

use crate::connect::ConnectArgs;
use crate::report_cmd::{fetch_reports, fetched_report_json};
use anyhow::Context;
use ase_common::compare::html::render_html;
use ase_common::compare::load::{parse_run, read_report};
use ase_common::compare::markdown::render_markdown;
use ase_common::compare::{compare, CompareOptions};
use ase_common::leaderboard::{parse_report, write_leaderboard, Leaderboard};
use ase_common::uncertainty::bootstrap::BootstrapConfig;
use std::path::PathBuf;
use std::process::ExitCode;

pub const COMPARE_JSON: &str = "compare.json";
pub const COMPARE_MD: &str = "compare.md";
pub const COMPARE_HTML: &str = "compare.html";

#[derive(clap::Args)]
// The connection's flags are optional here (folders need none): neither the coordinator nor
// `--tls-dir` is required as they are for the coordinator's own commands; `run` asks for the
// TLS material (or `--plaintext`) when a coordinator is named.
#[command(
    mut_arg("coordinator", |a| a.required(false)),
    mut_arg("tls_dir", |a| a.required_unless_present(clap::builder::Resettable::<clap::Id>::Reset))
)]
pub struct Args {
    /// Result folders (or their report.json files), two or more; with --coordinator, run ids.
    #[arg(required = true, num_args = 2..)]
    runs: Vec<String>,
    /// Fetch the runs (named by run id) from this coordinator instead of reading folders.
    #[command(flatten)]
    connect: Option<ConnectArgs>,
    /// Runs over different datasets: compare the tasks they share instead of refusing.
    #[arg(long)]
    shared_tasks: bool,
    /// Write compare.json, compare.md and compare.html into this folder (created when missing),
    /// and the runs' leaderboard.json, leaderboard.md and leaderboard.html.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON instead of the Markdown.
    #[arg(long)]
    json: bool,
    /// Seed of the bootstrap's random draws.
    #[arg(long, default_value_t = BootstrapConfig::default().seed)]
    seed: u64,
    /// Bootstrap replicates.
    #[arg(long, default_value_t = BootstrapConfig::default().resamples,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    resamples: u32,
}

/// Each run's origin (its folder, or `RUN_ID at URL`) and the text of its report.json.
fn report_texts(args: &Args) -> anyhow::Result<Vec<(PathBuf, String)>> {
    match &args.connect {
        None => args
            .runs
            .iter()
            .map(|dir| {
                let dir = PathBuf::from(dir);
                let text = read_report(&dir)?;
                Ok((dir, text))
            })
            .collect(),
        Some(connect) if connect.tls_dir.is_none() && !connect.plaintext => anyhow::bail!(
            "--coordinator needs --tls-dir (the folder `ase certs init` wrote), or --plaintext \
             for a loopback coordinator"
        ),
        Some(connect) => fetch_reports(connect, &args.runs)?
            .iter()
            .zip(&args.runs)
            .map(|(report, run_id)| {
                let origin = format!("{run_id} at {}", connect.coordinator);
                Ok((PathBuf::from(origin), fetched_report_json(report)?))
            })
            .collect(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let texts = report_texts(&args)?;
    let runs = texts
        .iter()
        .map(|(origin, text)| parse_run(origin, text))
        .collect::<Result<Vec<_>, _>>()?;
    let options = CompareOptions {
        shared_tasks: args.shared_tasks,
        bootstrap: BootstrapConfig {
            seed: args.seed,
            resamples: args.resamples,
            ..BootstrapConfig::default()
        },
    };
    let comparison = compare(&runs, &options)?;
    let json = serde_json::to_string_pretty(&comparison).context("serialising the comparison")?;
    let markdown = render_markdown(&comparison);
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let html = render_html(&comparison);
        for (name, text) in [
            (COMPARE_JSON, &json),
            (COMPARE_MD, &markdown),
            (COMPARE_HTML, &html),
        ] {
            let path = out.join(name);
            std::fs::write(&path, format!("{}\n", text.trim_end()))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        // The runs' leaderboard beside the comparison, from their own reports.
        let reports = texts
            .iter()
            .map(|(origin, text)| parse_report(origin, text))
            .collect::<Result<Vec<_>, _>>()?;
        write_leaderboard(out, &Leaderboard::from_reports(&reports))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{markdown}");
    }
    if comparison.shared_tasks_only {
        eprintln!(
            "note: the runs are over different datasets; only their {} shared tasks were compared",
            comparison.tasks_compared
        );
    }
    Ok(ExitCode::SUCCESS)
}
