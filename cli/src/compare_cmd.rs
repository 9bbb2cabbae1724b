//! `ase compare RUN RUN [RUN...]`: paired comparison of local result folders (each holding the
//! report.json that `ase run`, `ase report` or `ase score` wrote). The arithmetic is
//! `ase_common::compare`; this only reads the folders and writes the results.

use anyhow::Context;
use ase_common::compare::html::render_html;
use ase_common::compare::load::load_run;
use ase_common::compare::markdown::render_markdown;
use ase_common::compare::{compare, CompareOptions};
use ase_common::leaderboard::{load_report, write_leaderboard, Leaderboard};
use ase_common::uncertainty::bootstrap::BootstrapConfig;
use std::path::PathBuf;
use std::process::ExitCode;

pub const COMPARE_JSON: &str = "compare.json";
pub const COMPARE_MD: &str = "compare.md";
pub const COMPARE_HTML: &str = "compare.html";

#[derive(clap::Args)]
pub struct Args {
    /// Result folders (or their report.json files), two or more.
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runs = args
        .runs
        .iter()
        .map(|p| load_run(p))
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
        let reports = args
            .runs
            .iter()
            .map(|p| load_report(p))
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
