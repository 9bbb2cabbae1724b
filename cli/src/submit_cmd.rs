//! `ase submit`: send a run (spec, dataset, context) to the coordinator; print its id, and with
//! `--watch` follow it until it ends.

use crate::connect::{runtime, status_error, ConnectArgs};
use crate::progress_view::ProgressView;
use anyhow::Context;
use ase_proto::limits;
use ase_proto::submit::SubmitInputs;
use ase_proto::tonic::transport::Channel;
use ase_proto::v1::WatchRunRequest;
use ase_proto::ClientApiClient;
use ase_worker::pipeline::spec::{ModelSpec, RunSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// A predictions JSONL file (`{"instance_id", "round"?, "answer" | "model_patch"}` per
    /// line): the run's answers, in place of the spec's `model`.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Environment variable holding the model API key handed to the coordinator (memory only).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Follow the run until it completes (exit 0) or is cancelled (exit 1).
    #[arg(long)]
    watch: bool,
    /// Before submitting, check from this host each task's repo, commit and (with a Docker
    /// daemon here) image: keep unavailable tasks out (exclude, the default), refuse to
    /// submit (abort), or skip the check (off).
    #[arg(long, value_enum, default_value = "exclude")]
    preflight: crate::preflight_cmd::PreflightMode,
    /// Where the workers clone repos from, for the preflight (`{repo}` becomes `owner/name`;
    /// default: GitHub).
    #[arg(long)]
    repo_url_template: Option<String>,
}

/// A file the user named, with what it is in the error.
pub fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// A file the user named, refused before it is read when it is larger than `limit` (the
/// coordinator's limit for that input): the error names the file, its size and the limit.
pub fn read_within(path: &Path, what: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= limit,
        "the {what} {} is {len} bytes, more than the limit of {limit} bytes",
        path.display()
    );
    read(path, what)
}

/// The name a file goes by in the run (its last component).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut spec_json = read_within(&args.spec, "run spec", limits::MAX_RUN_SPEC_BYTES)?;
    // Checked here so that a typo fails before anything is sent (the coordinator only reads
    // the header fields it needs).
    let mut spec: RunSpec = serde_json::from_slice(&spec_json)
        .with_context(|| format!("the run spec {} is not a RunSpec", args.spec.display()))?;
    if let Some(p) = &args.predictions {
        (spec, spec_json) = with_predictions(spec, p)?;
    }
    let dataset = read_within(&args.dataset, "dataset", limits::MAX_DATASET_BYTES)?;
    let worker = crate::config::WorkerSettings {
        repo_url_template: args.repo_url_template.clone(),
        ..crate::config::WorkerSettings::default()
    };
    let unavailable = crate::preflight_cmd::before_submit(
        &spec.run_name(),
        &args.dataset,
        &dataset,
        &worker,
        args.preflight,
    )?;
    if !unavailable.is_empty() {
        spec.unavailable = unavailable;
        spec_json = serde_json::to_vec(&spec).expect("a run spec serialises");
    }
    let (context, context_name) = match &args.context {
        Some(p) => (
            read_within(p, "context file", limits::MAX_CONTEXT_BYTES)?,
            file_name(p),
        ),
        None => (Vec::new(), String::new()),
    };
    let api_key = match &args.api_key_env {
        None => String::new(),
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
            _ => anyhow::bail!("--api-key-env {var}: the variable is unset or empty"),
        },
    };
    let inputs = SubmitInputs {
        run_spec_json: spec_json,
        dataset,
        dataset_name: file_name(&args.dataset),
        context,
        context_name,
        api_key,
    };
    let run_name = spec.run_name();
    // Before connecting: an input over its limit is named with the limit, never sent.
    let parts = ase_proto::submit::stream(inputs)
        .map_err(|e| anyhow::anyhow!("cannot submit run {run_name}: {e}"))?;
    runtime()?.block_on(async move {
        let mut client = args.connect.client().await?;
        let submitted = client
            .submit_run(parts)
            .await
            .map_err(|s| status_error(&format!("submitting run {run_name}"), s))?
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
        watch(&args.connect, client, &submitted.run_id).await
    })
}

/// The spec with the answers of a predictions JSONL file as its model, and its JSON.
fn with_predictions(mut spec: RunSpec, path: &Path) -> anyhow::Result<(RunSpec, Vec<u8>)> {
    let entries = crate::config::run_spec::read_jsonl(path).map_err(anyhow::Error::msg)?;
    spec.model = ModelSpec::Predictions { entries };
    let json = serde_json::to_vec(&spec).expect("a run spec serialises");
    Ok((spec, json))
}

/// How long a watch keeps trying to reach a coordinator that stopped answering (a restart
/// takes seconds; a coordinator gone for this long is reported, not waited for).
const RECONNECT_FOR: Duration = Duration::from_secs(600);
/// The longest pause between two reconnection attempts.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(10);

/// How one stream of a watch ended.
enum Followed {
    /// The run reached this final state.
    Ended(String),
    /// The stream broke (the coordinator restarted, the network dropped): reconnect.
    Lost(String),
}

/// Statuses of a connection that broke, not of a refusal: a watch reconnects after them.
fn is_transient(status: &ase_proto::tonic::Status) -> bool {
    use ase_proto::tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
    )
}

/// Follows one stream of progress; every message received counts as the coordinator answering.
async fn follow(
    client: &mut ClientApiClient<Channel>,
    run_id: &str,
    view: &mut ProgressView,
    answered: &mut Instant,
) -> anyhow::Result<Followed> {
    let what = || format!("watching run {run_id}");
    let mut stream = match client
        .watch_run(WatchRunRequest {
            run_id: run_id.to_string(),
            interval_ms: 1_000,
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if is_transient(&s) => {
            return Ok(Followed::Lost(status_error(&what(), s).to_string()))
        }
        Err(s) => return Err(status_error(&what(), s)),
    };
    let mut last_state = String::new();
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                *answered = Instant::now();
                view.update(std::slice::from_ref(&p));
                last_state = p.state;
            }
            Ok(None) if matches!(last_state.as_str(), "completed" | "cancelled") => {
                return Ok(Followed::Ended(last_state))
            }
            // A coordinator shutting down ends its streams cleanly: the run goes on elsewhere.
            Ok(None) => {
                return Ok(Followed::Lost(format!(
                    "the coordinator ended the watch with the run {}",
                    if last_state.is_empty() {
                        "unseen"
                    } else {
                        &last_state
                    }
                )))
            }
            Err(s) if is_transient(&s) => {
                return Ok(Followed::Lost(status_error(&what(), s).to_string()))
            }
            Err(s) => return Err(status_error(&what(), s)),
        }
    }
}

/// Prints progress lines until the run ends: exit 0 when completed, 1 when cancelled. A
/// coordinator that restarts (or a connection that drops) is reconnected to, with back-off,
/// for up to [`RECONNECT_FOR`] without an answer.
pub async fn watch(
    connect: &ConnectArgs,
    client: ClientApiClient<Channel>,
    run_id: &str,
) -> anyhow::Result<ExitCode> {
    let mut view = ProgressView::new();
    let mut client = Some(client);
    let mut answered = Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut said_lost = false;
    loop {
        let before = answered;
        let lost = match client.as_mut() {
            Some(c) => match follow(c, run_id, &mut view, &mut answered).await? {
                Followed::Ended(state) => {
                    view.finish();
                    return match state.as_str() {
                        "completed" => Ok(ExitCode::SUCCESS),
                        _ => {
                            eprintln!("run {run_id} was cancelled");
                            Ok(ExitCode::from(1))
                        }
                    };
                }
                Followed::Lost(why) => why,
            },
            None => "not connected".to_string(),
        };
        if answered.elapsed() > RECONNECT_FOR {
            anyhow::bail!(
                "watching run {run_id}: no answer from the coordinator for {} s ({lost}); \
                 the run goes on: `ase status` shows it",
                RECONNECT_FOR.as_secs()
            );
        }
        if answered != before {
            // It answered on this connection: a new outage starts with short pauses.
            pause = Duration::from_millis(250);
        }
        if !said_lost {
            eprintln!("lost the coordinator ({lost}); reconnecting");
            said_lost = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
        client = match connect.client().await {
            Ok(c) => {
                if said_lost {
                    eprintln!("reconnected to the coordinator");
                    said_lost = false;
                }
                Some(c)
            }
            Err(_) => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_predictions_file_becomes_the_specs_model_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec: RunSpec = serde_json::from_value(serde_json::json!({
            "model_name": "m", "batch": "b", "rounds": 1, "model": {"provider": "original"}
        }))
        .unwrap();
        let file = dir.path().join("p.jsonl");
        std::fs::write(
            &file,
            "{\"instance_id\": \"t1\", \"answer\": \"a\"}\n\n{\"instance_id\": \"t2\", \"round\": 2, \"answer\": \"b\"}\n",
        )
        .unwrap();
        let (spec2, json) = with_predictions(spec.clone(), &file).unwrap();
        let ModelSpec::Predictions { entries } = &spec2.model else {
            panic!("{:?}", spec2.model)
        };
        assert_eq!(entries.len(), 2);
        let back: RunSpec = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, spec2);
        std::fs::write(&file, "{\"instance_id\": \"t1\"}\nnot json\n").unwrap();
        let err = with_predictions(spec, &file).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
