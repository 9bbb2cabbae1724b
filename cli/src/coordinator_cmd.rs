//! `ase coordinator`: serve the cluster's coordinator (see `ase_coordinator::server`) until
//! SIGTERM or SIGINT, then stop gracefully.

use anyhow::Context;
use ase_coordinator::server::{ServeOptions, Server};
use ase_coordinator::{Coordinator, CoordinatorConfig, SystemClock};
use ase_proto::endpoint::TransportSecurity;
use ase_proto::tls::TlsFiles;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// gRPC address; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long)]
    listen: SocketAddr,
    /// Directory of the durable store (sled).
    #[arg(long)]
    data: PathBuf,
    /// Directory written by `ase certs init` (uses ca.pem and coordinator.{pem,key}).
    #[arg(
        long,
        required_unless_present = "plaintext",
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
    /// Heartbeat interval workers are told to keep.
    #[arg(long, default_value_t = 2_000)]
    heartbeat_ms: u32,
    /// A lease not renewed by a heartbeat for this long is lost.
    #[arg(long, default_value_t = 10_000)]
    lease_ttl_ms: u32,
    /// MiB of the store's page cache: bounds the coordinator's memory whatever the run sizes.
    #[arg(long, default_value_t = 32)]
    store_cache_mb: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.heartbeat_ms > 0, "--heartbeat-ms must be positive");
    anyhow::ensure!(
        args.lease_ttl_ms > args.heartbeat_ms,
        "--lease-ttl-ms ({}) must be longer than --heartbeat-ms ({})",
        args.lease_ttl_ms,
        args.heartbeat_ms
    );
    let security = match &args.tls_dir {
        Some(dir) => TransportSecurity::MutualTls(
            TlsFiles::in_dir(dir, "coordinator")
                .load()
                .context("loading the coordinator's TLS material")?,
        ),
        None => TransportSecurity::Plaintext,
    };
    let config = CoordinatorConfig {
        heartbeat_interval_ms: args.heartbeat_ms,
        lease_ttl_ms: args.lease_ttl_ms,
        output_dir: args.output_dir.clone(),
        store_cache_bytes: args.store_cache_mb << 20,
        ..CoordinatorConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let coordinator = Coordinator::open(&args.data, config, Arc::new(SystemClock))
            .with_context(|| format!("opening the store under {}", args.data.display()))?;
        let server = Server::bind(
            coordinator,
            ServeOptions {
                listen: args.listen,
                security,
                metrics_listen: args.metrics_listen,
                sweep_interval: Duration::from_millis(u64::from(args.heartbeat_ms / 2).max(1)),
            },
        )
        .await?;
        if let Some(addr) = server.metrics_addr() {
            eprintln!("metrics on http://{addr}/metrics");
        }
        eprintln!("listening on {}", server.local_addr());
        server.serve(shutdown_signal()).await?;
        eprintln!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Resolves at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers Ctrl-C still works through the default disposition.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
