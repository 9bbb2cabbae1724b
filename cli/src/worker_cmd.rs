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
    /// The worker's name: NAME of its certificate `worker-NAME.pem`; with --join, the name
    /// asked for (default: one the coordinator derives from the host's name, unique).
    #[arg(long, required_unless_present_any = ["config", "join", "join_file"])]
    name: Option<String>,
    /// Directory written by `ase certs init`.
    #[arg(
        long,
        conflicts_with_all = ["plaintext", "join", "join_file"],
        required_unless_present_any = ["plaintext", "config", "join", "join_file"]
    )]
    tls_dir: Option<PathBuf>,
    /// Join with this token (`ase token create`) instead of a certificate made in advance:
    /// the worker makes its key and gets a short-lived certificate, renewed before expiry.
    #[arg(long, conflicts_with_all = ["plaintext", "join_file"], requires = "ca")]
    join: Option<String>,
    /// The join token in a file (a Docker or Kubernetes secret).
    #[arg(long, conflicts_with = "plaintext", requires = "ca")]
    join_file: Option<PathBuf>,
    /// With --join: the cluster CA certificate that authenticates the coordinator.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The model API key in a file (a Docker or Kubernetes secret; blank: none), used when
    /// neither the run nor its spec gives one; instead of ASE_API_KEY in the environment.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// A file written each time the worker registers (its content: the name): a health check
    /// of an orchestrator tests that it exists.
    #[arg(long)]
    ready_file: Option<PathBuf>,
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
    /// This worker does not start privileged containers: v2 tasks that need one are placed on
    /// other workers [default: the config's worker.privileged, else it does].
    #[arg(long)]
    no_privileged: bool,
    /// Do not start pulling a v2 task's image while its generation runs: the evaluation pulls
    /// it [default: the config's worker.prefetch_images, else it does].
    #[arg(long)]
    no_prefetch_images: bool,
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
    prefetch_images: bool,
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
            privileged: w.privileged && !args.no_privileged,
        },
        generate_slots: args.generate_slots.unwrap_or(w.generate_slots),
        eval_slots: args.eval_slots.unwrap_or(w.eval_slots),
        prefetch_images: w.prefetch_images && !args.no_prefetch_images,
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
    let mut resolved = resolve(&args)?;
    if args.join.is_some() || args.join_file.is_some() {
        return run_joined(&args, &mut resolved).await;
    }
    let security = security(&args, &resolved)?;
    run_agent(&args, &resolved, security, crate::shutdown::signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// A worker that joined with a token: runs the agent until a signal, renewing the certificate
/// at two thirds of its lifetime. The renewal is made while the current certificate is still
/// valid, then the agent restarts with the new one (tonic's channel keeps the TLS identity it
/// was made with): its running units are given back after the shutdown grace and leased
/// again.
async fn run_joined(args: &Args, resolved: &mut Resolved) -> anyhow::Result<ExitCode> {
    let token = crate::worker_join::read_token(args.join.as_deref(), args.join_file.as_deref())?;
    let ca_path = args.ca.as_ref().context("--ca is required with --join")?;
    let ca_pem = std::fs::read(ca_path)
        .with_context(|| format!("reading the CA certificate {}", ca_path.display()))?;
    let target = crate::worker_join::JoinTarget {
        coordinator: &args.coordinator,
        ca_pem: &ca_pem,
        tls_domain: args.tls_domain.as_deref(),
    };
    let mut joined = crate::worker_join::join(
        &target,
        &token,
        args.name.as_deref(),
        &crate::worker_join::host_name(),
    )
    .await?;
    eprintln!("joined as {} with token {}", joined.name, token.id);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    loop {
        resolved.setup.name = joined.name.clone();
        let renew_in = joined.renew_in();
        let mut stop_agent = stop.clone();
        let security = TransportSecurity::MutualTls(joined.material.clone());
        let renewed = std::sync::Mutex::new(None);
        let current = joined.material.clone();
        run_agent(args, resolved, security, async {
            tokio::select! {
                _ = stop_agent.wait_for(|s| *s) => {}
                r = async {
                    tokio::time::sleep(renew_in).await;
                    crate::worker_join::renew(&target, &current).await
                } => {
                    *renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            }
        })
        .await?;
        let renewed = renewed.into_inner().unwrap_or_else(|p| p.into_inner());
        match renewed {
            None => return Ok(ExitCode::SUCCESS),
            Some(r) => joined = r?,
        }
        eprintln!(
            "renewed the certificate of {} (valid {} s more)",
            joined.name,
            joined
                .not_after
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .as_secs()
        );
        if *stop.borrow() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

async fn run_agent(
    args: &Args,
    resolved: &Resolved,
    security: TransportSecurity,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let parts = setup::build(&resolved.setup).await?;
    let mut config = AgentConfig::new(
        args.coordinator.clone(),
        security,
        resolved.setup.name.clone(),
    );
    config.tls_domain = args.tls_domain.clone();
    config.generate_slots = resolved.generate_slots;
    config.eval_slots = resolved.eval_slots;
    config.prefetch_images = resolved.prefetch_images;
    config.fallback_api_key = match (&args.api_key_file, std::env::var("ASE_API_KEY")) {
        (Some(path), _) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("reading the API key file {}", path.display()))?;
            // An empty file (a secret the stack needs but the campaign does not): no key.
            match key.trim() {
                "" => None,
                k => Some(ApiKey::new(k.to_string()).context("the API key file")?),
            }
        }
        (None, Ok(k)) => Some(ApiKey::new(k).context("ASE_API_KEY")?),
        (None, Err(_)) => None,
    };
    let ready_file = args.ready_file.clone();
    config.on_register = Some(Arc::new(move |name: &str, session: u64| {
        eprintln!("registered as {name} session {session}");
        if let Some(path) = &ready_file {
            if let Err(e) = std::fs::write(path, name) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the ready file");
            }
        }
    }));
    let agent = Agent::new(config, parts.ctx, parts.dynamic);
    agent
        .run(async {
            shutdown.await;
            eprintln!("shutting down");
        })
        .await?;
    Ok(())
}
