//! `ase submit`: send a run (spec, dataset, context) to the coordinator; print its id, and with
//! `--watch` follow it until it ends.

use crate::connect::{runtime, status_error, ConnectArgs};
use crate::progress_view::ProgressView;
use anyhow::Context;
use ase_proto::v1::{SubmitRunRequest, WatchRunRequest};
use ase_worker::pipeline::spec::RunSpec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The run spec (ase_worker::pipeline::spec::RunSpec as JSON).
    #[arg(long)]
    spec: PathBuf,
    /// The task file, sent verbatim.
    #[arg(long)]
    dataset: PathBuf,
    /// The context file, sent verbatim.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Environment variable holding the model API key handed to the coordinator (memory only).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Follow the run until it completes (exit 0) or is cancelled (exit 1).
    #[arg(long)]
    watch: bool,
}

/// A file the user named, with what it is in the error.
pub fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// The name a file goes by in the run (its last component).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec_json = read(&args.spec, "run spec")?;
    // Checked here so that a typo fails before anything is sent (the coordinator only reads
    // the header fields it needs).
    let spec: RunSpec = serde_json::from_slice(&spec_json)
        .with_context(|| format!("the run spec {} is not a RunSpec", args.spec.display()))?;
    let dataset = read(&args.dataset, "dataset")?;
    let (context, context_name) = match &args.context {
        Some(p) => (read(p, "context file")?, file_name(p)),
        None => (Vec::new(), String::new()),
    };
    let api_key = match &args.api_key_env {
        None => String::new(),
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
            _ => anyhow::bail!("--api-key-env {var}: the variable is unset or empty"),
        },
    };
    let request = SubmitRunRequest {
        run_spec_json: spec_json,
        dataset,
        dataset_name: file_name(&args.dataset),
        context,
        context_name,
        api_key,
    };
    runtime()?.block_on(async move {
        let mut client = args.connect.client().await?;
        let submitted = client
            .submit_run(request)
            .await
            .map_err(|s| status_error(&format!("submitting run {}", spec.run_name()), s))?
            .into_inner();
        println!("{}", submitted.run_id);
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
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        watch(&mut client, &submitted.run_id).await
    })
}

/// Prints progress lines until the run ends: exit 0 when completed, 1 when cancelled.
pub async fn watch(
    client: &mut ase_proto::ClientApiClient<ase_proto::tonic::transport::Channel>,
    run_id: &str,
) -> anyhow::Result<ExitCode> {
    let mut stream = client
        .watch_run(WatchRunRequest {
            run_id: run_id.to_string(),
            interval_ms: 1_000,
        })
        .await
        .map_err(|s| status_error(&format!("watching run {run_id}"), s))?
        .into_inner();
    let mut last_state = String::new();
    let mut view = ProgressView::new();
    while let Some(p) = stream
        .message()
        .await
        .map_err(|s| status_error(&format!("watching run {run_id}"), s))?
    {
        view.update(std::slice::from_ref(&p));
        last_state = p.state;
    }
    view.finish();
    match last_state.as_str() {
        "completed" => Ok(ExitCode::SUCCESS),
        "cancelled" => {
            eprintln!("run {run_id} was cancelled");
            Ok(ExitCode::from(1))
        }
        other => anyhow::bail!("the watch of run {run_id} ended in state {other:?}"),
    }
}
