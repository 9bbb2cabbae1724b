//! `ase worker`: a worker machine's process. Opens the repo cache, picks the scanner, connects
//! to Docker (unless `--no-docker`), and runs the agent (ase_worker::agent) until SIGTERM or
//! ctrl-c; prints `registered as NAME session S` on stderr each time it registers.

use crate::config::{DockerUse, ScannerKind};
use crate::worker_setup::{self, WorkerSetup};
use anyhow::{bail, Context};
use ase_proto::endpoint::TransportSecurity;
use ase_proto::tls::TlsFiles;
use ase_worker::agent::{Agent, AgentConfig};
use ase_worker::model::ApiKey;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The coordinator: https://HOST:PORT (http:// on loopback with --plaintext).
    #[arg(long)]
    coordinator: String,
    /// The worker's name: NAME of its certificate `worker-NAME.pem`.
    #[arg(long)]
    name: String,
    /// Directory written by `ase certs init`.
    #[arg(
        long,
        conflicts_with = "plaintext",
        required_unless_present = "plaintext"
    )]
    tls_dir: Option<PathBuf>,
    /// Name expected in the coordinator's certificate (default: the URI's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// No TLS (the coordinator must be on loopback).
    #[arg(long)]
    plaintext: bool,
    /// Repo cache, baselines and unit trees.
    #[arg(long)]
    cache: PathBuf,
    #[arg(long, default_value_t = 4)]
    generate_slots: u32,
    #[arg(long, default_value_t = 2)]
    eval_slots: u32,
    #[arg(long, value_enum, default_value_t = ScannerKind::Bare)]
    scanner: ScannerKind,
    /// The osemgrep binary of the bare scanner.
    #[arg(long, default_value = "osemgrep")]
    osemgrep: PathBuf,
    /// Rule packs of the bare scanner.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// The SAST image of the container scanner.
    #[arg(long)]
    sast_image: Option<String>,
    /// No Docker daemon: no v2 units, bare scanner only.
    #[arg(long)]
    no_docker: bool,
    /// Bound of the repo cache's mirrors and trees.
    #[arg(long)]
    cache_max_bytes: Option<u64>,
    /// Where repos come from; `{repo}` is replaced by `owner/name`.
    #[arg(long)]
    repo_url_template: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run_async(args))
}

fn security(args: &Args) -> anyhow::Result<TransportSecurity> {
    match (&args.tls_dir, args.plaintext) {
        (_, true) => Ok(TransportSecurity::Plaintext),
        (Some(dir), false) => {
            let stem = format!("worker-{}", args.name);
            let material = TlsFiles::in_dir(dir, &stem)
                .load()
                .with_context(|| format!("TLS material {stem} in {}", dir.display()))?;
            Ok(TransportSecurity::MutualTls(material))
        }
        (None, false) => bail!("either --tls-dir or --plaintext is required"),
    }
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let security = security(&args)?;
    let parts = worker_setup::build(&WorkerSetup {
        name: args.name.clone(),
        cache: args.cache.clone(),
        cache_max_bytes: args.cache_max_bytes,
        repo_url_template: args.repo_url_template.clone(),
        scanner: args.scanner,
        osemgrep: args.osemgrep.clone(),
        rules: args.rules.clone(),
        sast_image: args.sast_image.clone(),
        docker: if args.no_docker {
            DockerUse::Off
        } else {
            DockerUse::On
        },
    })
    .await?;
    let mut config = AgentConfig::new(args.coordinator.clone(), security, args.name.clone());
    config.tls_domain = args.tls_domain.clone();
    config.generate_slots = args.generate_slots;
    config.eval_slots = args.eval_slots;
    config.fallback_api_key = match std::env::var("ASE_API_KEY") {
        Ok(k) => Some(ApiKey::new(k).context("ASE_API_KEY")?),
        Err(_) => None,
    };
    config.on_register = Some(Arc::new(|name: &str, session: u64| {
        eprintln!("registered as {name} session {session}");
    }));
    let agent = Agent::new(config, parts.ctx, parts.dynamic);
    agent.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("shutting down");
}
