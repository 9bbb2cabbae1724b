//! `ase status`: runs (state, per-phase counts, ETA, retries) and workers (liveness, drain,
//! load, cached repos); `--watch` refreshes every second.

use crate::connect::{runtime, status_error, ConnectArgs};
use crate::progress_fmt::{run_line, worker_line};
use crate::progress_view::{bars_wanted, ProgressView};
use ase_proto::v1::{ListRunsRequest, ListWorkersRequest};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only this run.
    #[arg(long)]
    run: Option<String>,
    /// Refresh every second until interrupted (with --run: until the run ends).
    #[arg(long)]
    watch: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let mut client = args.connect.client().await?;
        // On a terminal --watch draws bars per run and phase; elsewhere it prints text blocks.
        let mut view = (args.watch && bars_wanted()).then(|| ProgressView::with_bars(true));
        loop {
            let runs = client
                .list_runs(ListRunsRequest {})
                .await
                .map_err(|s| status_error("listing runs", s))?
                .into_inner()
                .runs;
            let workers = client
                .list_workers(ListWorkersRequest {})
                .await
                .map_err(|s| status_error("listing workers", s))?
                .into_inner()
                .workers;
            let shown: Vec<_> = runs
                .iter()
                .filter(|r| args.run.as_ref().is_none_or(|id| &r.run_id == id))
                .collect();
            if let Some(id) = &args.run {
                anyhow::ensure!(!shown.is_empty(), "unknown run {id}");
            }
            if let Some(view) = &mut view {
                let shown: Vec<_> = shown.iter().map(|r| (*r).clone()).collect();
                view.update(&shown);
                let alive = workers.iter().filter(|w| w.alive).count();
                let running: u32 = workers.iter().map(|w| w.running).sum();
                let slots: u32 = workers
                    .iter()
                    .filter(|w| w.alive)
                    .map(|w| w.generate_slots + w.eval_slots)
                    .sum();
                view.set_footer(format!(
                    "workers: {alive} alive of {}, {running}/{slots} slots busy",
                    workers.len()
                ));
                if args.run.is_some()
                    && shown
                        .iter()
                        .all(|r| r.state == "completed" || r.state == "cancelled")
                {
                    view.finish();
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let mut out = String::new();
            for r in &shown {
                out.push_str(&run_line(r));
                out.push('\n');
            }
            for w in &workers {
                out.push_str(&worker_line(w));
                out.push('\n');
            }
            if runs.is_empty() && workers.is_empty() {
                out.push_str("no runs, no workers\n");
            }
            print!("{out}");
            if !args.watch {
                return Ok(ExitCode::SUCCESS);
            }
            if args.run.is_some()
                && shown
                    .iter()
                    .all(|r| r.state == "completed" || r.state == "cancelled")
            {
                return Ok(ExitCode::SUCCESS);
            }
            println!("--");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
