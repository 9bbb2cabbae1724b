//! `ase worker`: a worker machine's process. Opens the repo cache, picks the scanner, connects
//! to Docker (unless `--no-docker`), and runs the agent (ase_worker::agent) until SIGTERM or
//! ctrl-c; prints `registered as NAME session S` on stderr each time it registers.

use crate::config::{AseConfig, DockerUse, ScannerKind};
use anyhow::{bail, Context};
use ase_proto::endpoint::TransportSecurity;
use ase_proto::tls::TlsFiles;
use ase_worker::agent::{Agent, AgentConfig};
use ase_worker::model::ApiKey;
use ase_worker::setup::{self, WorkerSetup};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The config file: its `[worker]` table (and ASE_* variables) gives what the flags below
    /// do not; `<data>/certs` is the default TLS folder.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The coordinator: https://HOST:PORT (http:// on loopback with --plaintext).
    #[arg(long)]
    coordinator: String,
    /// The worker's name: NAME of its certificate `worker-NAME.pem`.
    #[arg(long, required_unless_present = "config")]
    name: Option<String>,
    /// Directory written by `ase certs init`.
    #[arg(
        long,
        conflicts_with = "plaintext",
        required_unless_present_any = ["plaintext", "config"]
    )]
    tls_dir: Option<PathBuf>,
    /// Name expected in the coordinator's certificate (default: the URI's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// No TLS (the coordinator must be on loopback).
    #[arg(long)]
    plaintext: bool,
    /// Repo cache, baselines and unit trees.
    #[arg(long, required_unless_present = "config")]
    cache: Option<PathBuf>,
    /// Units generating at once [default: 4].
    #[arg(long)]
    generate_slots: Option<u32>,
    /// Units evaluating at once [default: 2].
    #[arg(long)]
    eval_slots: Option<u32>,
    /// [default: bare]
    #[arg(long, value_parser = scanner_kind())]
    scanner: Option<ScannerKind>,
    /// The osemgrep binary of the bare scanner [default: ~/.cache/ase-cluster/semgrep/bin/osemgrep
    /// when present, else osemgrep on PATH].
    #[arg(long)]
    osemgrep: Option<PathBuf>,
    /// Rule packs of the bare scanner [default: rules/ here or in the source tree].
    #[arg(long)]
    rules: Option<PathBuf>,
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
    /// Disk budget of the task images this worker pulls, in bytes [default: the config's
    /// image_cache_bytes, else ASE_IMAGE_CACHE_BYTES, else unlimited].
    #[arg(long)]
    image_cache_bytes: Option<u64>,
}

/// `--scanner`: the worker's names of its scanners, each with its help line.
fn scanner_kind() -> impl TypedValueParser<Value = ScannerKind> {
    PossibleValuesParser::new(
        ScannerKind::ALL.map(|k| PossibleValue::new(k.name()).help(k.about())),
    )
    .map(|name| {
        name.parse()
            .expect("clap let through only the possible values")
    })
}

/// The worker's settings: each flag, else the config file's value, else the default.
struct Resolved {
    setup: WorkerSetup,
    generate_slots: u32,
    eval_slots: u32,
    tls_dir: Option<PathBuf>,
}

fn resolve(args: &Args) -> anyhow::Result<Resolved> {
    let env = &crate::config::process_env;
    let (config, from_file) = match &args.config {
        Some(path) => {
            let mut c = crate::config::load_file(path)?;
            let source = path.display().to_string();
            c.apply_env(env, &source)?;
            c.validate(&source)?;
            (c, true)
        }
        None => (AseConfig::default(), false),
    };
    let w = &config.worker;
    let data = config.data_dir(env);
    let name = args.name.clone().unwrap_or_else(|| w.name.clone());
    let cache = match &args.cache {
        Some(c) => c.clone(),
        None => config.cache_dir(&data),
    };
    let docker = if args.no_docker {
        DockerUse::Off
    } else if from_file {
        w.docker
    } else {
        DockerUse::On
    };
    let tls_dir = match (&args.tls_dir, args.plaintext) {
        (Some(d), _) => Some(d.clone()),
        (None, false) if from_file => Some(config.tls_dir(&data)),
        _ => None,
    };
    Ok(Resolved {
        setup: WorkerSetup {
            name,
            cache,
            cache_max_bytes: args.cache_max_bytes.or(w.cache_max_bytes),
            repo_url_template: args
                .repo_url_template
                .clone()
                .or_else(|| w.repo_url_template.clone()),
            scanner: args.scanner.unwrap_or(w.scanner),
            osemgrep: args
                .osemgrep
                .clone()
                .unwrap_or_else(|| w.osemgrep_or_default(env)),
            rules: args.rules.clone().unwrap_or_else(|| w.rules_or_default()),
            sast_image: args.sast_image.clone().or_else(|| w.sast_image.clone()),
            docker,
            image_cache_bytes: args.image_cache_bytes.or(w.image_cache_bytes),
            scan: w.scan_settings(),
        },
        generate_slots: args.generate_slots.unwrap_or(w.generate_slots),
        eval_slots: args.eval_slots.unwrap_or(w.eval_slots),
        tls_dir,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run_async(args))
}

fn security(args: &Args, resolved: &Resolved) -> anyhow::Result<TransportSecurity> {
    match (&resolved.tls_dir, args.plaintext) {
        (_, true) => Ok(TransportSecurity::Plaintext),
        (Some(dir), false) => {
            let stem = format!("worker-{}", resolved.setup.name);
            let material = TlsFiles::in_dir(dir, &stem)
                .load()
                .with_context(|| format!("TLS material {stem} in {}", dir.display()))?;
            Ok(TransportSecurity::MutualTls(material))
        }
        (None, false) => bail!("either --tls-dir or --plaintext is required"),
    }
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let resolved = resolve(&args)?;
    let security = security(&args, &resolved)?;
    let parts = setup::build(&resolved.setup).await?;
    let mut config = AgentConfig::new(
        args.coordinator.clone(),
        security,
        resolved.setup.name.clone(),
    );
    config.tls_domain = args.tls_domain.clone();
    config.generate_slots = resolved.generate_slots;
    config.eval_slots = resolved.eval_slots;
    config.fallback_api_key = match std::env::var("ASE_API_KEY") {
        Ok(k) => Some(ApiKey::new(k).context("ASE_API_KEY")?),
        Err(_) => None,
    };
    config.on_register = Some(Arc::new(|name: &str, session: u64| {
        eprintln!("registered as {name} session {session}");
    }));
    let agent = Agent::new(config, parts.ctx, parts.dynamic);
    agent
        .run(async {
            crate::shutdown::signal().await;
            eprintln!("shutting down");
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
