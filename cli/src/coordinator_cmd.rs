//! `ase coordinator`: serve the cluster's coordinator (see `ase_coordinator::grpc::server`) until
//! SIGTERM or SIGINT, then stop gracefully.

use anyhow::Context;
use ase_coordinator::grpc::{JoinSettings, ServeOptions, Server};
use ase_coordinator::{Coordinator, CoordinatorConfig, SystemClock};
use ase_proto::endpoint::TransportSecurity;
use ase_proto::join::JoinSigner;
use ase_proto::tls::TlsFiles;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The config file: its `[coordinator]` table (and ASE_* variables) gives what the flags
    /// below do not (`ase run` and the cluster share one file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC address; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, required_unless_present = "config")]
    listen: Option<SocketAddr>,
    /// Directory of the durable store (sled).
    #[arg(long, required_unless_present = "config")]
    data: Option<PathBuf>,
    /// Directory written by `ase certs init` (uses ca.pem and coordinator.{pem,key}).
    #[arg(
        long,
        required_unless_present_any = ["plaintext", "config"],
        conflicts_with = "plaintext"
    )]
    tls_dir: Option<PathBuf>,
    /// No TLS: loopback addresses only, for development on one machine.
    #[arg(long)]
    plaintext: bool,
    /// Address of the Prometheus `GET /metrics` listener.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Also write every completed run's files under DIR/{run_id}/.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Heartbeat interval workers are told to keep [default: 2000, or the config's].
    #[arg(long)]
    heartbeat_ms: Option<u32>,
    /// A lease not renewed by a heartbeat for this long is lost [default: 10000, or the
    /// config's].
    #[arg(long)]
    lease_ttl_ms: Option<u32>,
    /// Admit workers joining with a token (`ase token create`, `ase worker --join`): the
    /// cluster CA's private key, to sign their certificates (its certificate is the TLS
    /// folder's ca.pem). Keep it as a secret of the coordinator only.
    #[arg(long, conflicts_with = "plaintext")]
    join_ca_key: Option<PathBuf>,
    /// Lifetime of a joined worker's certificate; it renews at two thirds: 90s, 15m, 24h.
    #[arg(long, value_parser = crate::duration_arg::parse, default_value = "24h")]
    join_cert_ttl: Duration,
    /// A join token made in advance (`ase token generate`), in a file (a Docker or Kubernetes
    /// secret the workers get too): registered at the first start, valid --join-token-ttl
    /// from then; `ase token revoke` still revokes it.
    #[arg(long, requires = "join_ca_key")]
    join_token_file: Option<PathBuf>,
    /// Lifetime of the --join-token-file token, from its first start: 90s, 15m, 24h, 30d.
    #[arg(long, value_parser = crate::duration_arg::parse, default_value = "30d")]
    join_token_ttl: Duration,
    /// MiB of the store's page cache: bounds the coordinator's memory whatever the run sizes.
    #[arg(long, default_value_t = 32)]
    store_cache_mb: u64,
    /// Do not place v2 evaluations by image: they go in queue order to whoever asks
    /// [default: the config's coordinator.image_affinity, else placed by image].
    #[arg(long)]
    no_image_affinity: bool,
}

/// Fills what the flags left out from the config file's `[coordinator]` table.
fn apply_config(args: &mut Args) -> anyhow::Result<()> {
    let Some(path) = &args.config else {
        return Ok(());
    };
    let mut config = crate::config::load_file(path)?;
    let source = path.display().to_string();
    config.apply_env(&crate::config::process_env, &source)?;
    config.validate(&source)?;
    let data = config.data_dir(&crate::config::process_env);
    let c = &config.coordinator;
    args.listen.get_or_insert(c.listen);
    args.heartbeat_ms.get_or_insert(c.heartbeat_ms);
    args.lease_ttl_ms.get_or_insert(c.lease_ttl_ms);
    args.no_image_affinity |= !c.image_affinity;
    if !args.plaintext && args.tls_dir.is_none() {
        args.tls_dir = Some(config.tls_dir(&data));
    }
    args.data.get_or_insert_with(|| data.join("store"));
    if args.metrics_listen.is_none() {
        args.metrics_listen = c.metrics_listen;
    }
    if args.output_dir.is_none() {
        args.output_dir = config.output_dir.clone();
    }
    Ok(())
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    apply_config(&mut args)?;
    let (Some(listen), Some(data)) = (args.listen, args.data.clone()) else {
        anyhow::bail!("--listen and --data are required without --config");
    };
    let defaults = crate::config::CoordinatorSettings::default();
    let heartbeat_ms = args.heartbeat_ms.unwrap_or(defaults.heartbeat_ms);
    let lease_ttl_ms = args.lease_ttl_ms.unwrap_or(defaults.lease_ttl_ms);
    anyhow::ensure!(heartbeat_ms > 0, "--heartbeat-ms must be positive");
    anyhow::ensure!(
        lease_ttl_ms > heartbeat_ms,
        "--lease-ttl-ms ({lease_ttl_ms}) must be longer than --heartbeat-ms ({heartbeat_ms})"
    );
    let security = match &args.tls_dir {
        Some(dir) => TransportSecurity::MutualTls(
            TlsFiles::in_dir(dir, "coordinator")
                .load()
                .context("loading the coordinator's TLS material")?,
        ),
        None => TransportSecurity::Plaintext,
    };
    let join_settings = match (&args.join_ca_key, &args.tls_dir) {
        (Some(key), Some(dir)) => {
            let mut settings = join_settings(key, dir, args.join_cert_ttl)?;
            if let Some(file) = &args.join_token_file {
                let token = crate::worker_join::read_token(None, Some(file))?;
                settings.provisioned = Some((token, args.join_token_ttl));
            }
            Some(settings)
        }
        (Some(_), None) => anyhow::bail!("--join-ca-key needs the TLS folder (--tls-dir)"),
        (None, _) => None,
    };
    let config = CoordinatorConfig {
        heartbeat_interval_ms: heartbeat_ms,
        lease_ttl_ms,
        output_dir: args.output_dir.clone(),
        store_cache_bytes: args.store_cache_mb << 20,
        image_affinity: !args.no_image_affinity,
        ..CoordinatorConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let coordinator = Coordinator::open(&data, config, Arc::new(SystemClock))
            .with_context(|| format!("opening the store under {}", data.display()))?;
        let mut server = Server::bind(
            coordinator,
            ServeOptions {
                listen,
                security,
                metrics_listen: args.metrics_listen,
                sweep_interval: Duration::from_millis(u64::from(heartbeat_ms / 2).max(1)),
            },
        )
        .await?;
        if let Some(settings) = join_settings {
            server = server.admit_joins(settings);
            eprintln!("admitting workers with join tokens");
        }
        if let Some(addr) = server.metrics_addr() {
            eprintln!("metrics on http://{addr}/metrics");
        }
        eprintln!("listening on {}", server.local_addr());
        server.serve(crate::shutdown::signal()).await?;
        eprintln!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The CA that signs joined workers' certificates: the TLS folder's `ca.pem` and its key.
fn join_settings(
    key: &std::path::Path,
    tls_dir: &std::path::Path,
    cert_ttl: Duration,
) -> anyhow::Result<JoinSettings> {
    let ca_path = tls_dir.join("ca.pem");
    let ca = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    let key_pem =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let signer = JoinSigner::from_pem(&ca, &key_pem).with_context(|| {
        format!(
            "the CA {} with the key {}",
            ca_path.display(),
            key.display()
        )
    })?;
    Ok(JoinSettings {
        signer,
        cert_validity: cert_ttl,
        provisioned: None,
    })
}
