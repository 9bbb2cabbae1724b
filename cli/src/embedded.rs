//! The cluster of `ase run` inside one process: the coordinator's real gRPC server and a
//! worker's real agent, talking over loopback with mutual TLS like a cluster does, and a client
//! connection for submitting and watching. Certificates are generated into the data folder the
//! first time.

use crate::certs_cmd::{ca_files, pair, prepare_dir, write_pem};
use crate::config::AseConfig;
use anyhow::Context;
use ase_coordinator::grpc::{ServeOptions, Server};
use ase_coordinator::{Coordinator, CoordinatorConfig, SystemClock};
use ase_proto::certs::{ClusterCa, DEFAULT_VALIDITY_DAYS};
use ase_proto::endpoint::{self, TransportSecurity};
use ase_proto::limits::MAX_MESSAGE_BYTES;
use ase_proto::tls::TlsFiles;
use ase_proto::tonic::transport::Channel;
use ase_proto::ClientApiClient;
use ase_worker::agent::{Agent, AgentConfig};
use ase_worker::model::ApiKey;
use ase_worker::setup::{self, WorkerSetup};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The client certificate `ase run` uses on its own coordinator.
const CLIENT_NAME: &str = "run";
/// The name the coordinator's certificate answers to on loopback.
const LOOPBACK_NAME: &str = "localhost";

/// A running embedded cluster.
pub struct Embedded {
    pub client: ClientApiClient<Channel>,
    pub worker_has_docker: bool,
    pub grpc_addr: std::net::SocketAddr,
    stop_agent: watch::Sender<bool>,
    stop_server: watch::Sender<bool>,
    server: JoinHandle<anyhow::Result<()>>,
    agent: JoinHandle<anyhow::Result<()>>,
}

/// The files the embedded cluster needs in `dir`.
fn required_files(worker: &str) -> Vec<String> {
    let mut v = vec!["ca.pem".to_string()];
    for stem in [
        "coordinator".to_string(),
        format!("worker-{worker}"),
        format!("client-{CLIENT_NAME}"),
    ] {
        v.push(format!("{stem}.pem"));
        v.push(format!("{stem}.key"));
    }
    v
}

/// Makes sure `dir` holds a CA, the coordinator's, the worker's and the client's certificates.
/// A missing file in our own default folder regenerates the whole set (only this process uses
/// it); in a folder the user named, it is an error naming the files.
pub fn ensure_certs(dir: &Path, worker: &str, generated_by_us: bool) -> anyhow::Result<()> {
    let missing: Vec<String> = required_files(worker)
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::ensure!(
        generated_by_us,
        "the TLS folder {} lacks {} (create them with `ase certs init --out {} --worker {worker} \
         --client {CLIENT_NAME}`, or leave coordinator.tls_dir unset)",
        dir.display(),
        missing.join(", "),
        dir.display()
    );
    let ca = ClusterCa::generate("ase run", DEFAULT_VALIDITY_DAYS)?;
    let mut files = Vec::from(ca_files(&ca));
    files.extend(pair("coordinator", ca.issue_coordinator(&[])?));
    files.extend(pair(&format!("worker-{worker}"), ca.issue_worker(worker)?));
    files.extend(pair(
        &format!("client-{CLIENT_NAME}"),
        ca.issue_client(CLIENT_NAME)?,
    ));
    prepare_dir(dir)?;
    for f in &files {
        write_pem(dir, f)?;
    }
    Ok(())
}

fn load(dir: &Path, stem: &str) -> anyhow::Result<TransportSecurity> {
    Ok(TransportSecurity::MutualTls(
        TlsFiles::in_dir(dir, stem)
            .load()
            .with_context(|| format!("TLS material {stem} in {}", dir.display()))?,
    ))
}

/// Where the embedded cluster keeps its state.
pub struct Paths {
    pub data: PathBuf,
    pub tls: PathBuf,
    pub cache: PathBuf,
}

impl Embedded {
    pub async fn start(config: &AseConfig, paths: &Paths) -> anyhow::Result<Embedded> {
        let worker = &config.worker;
        ensure_certs(
            &paths.tls,
            &worker.name,
            config.coordinator.tls_dir.is_none(),
        )?;
        let store = paths.data.join("store");
        let coordinator = Coordinator::open(
            &store,
            CoordinatorConfig {
                heartbeat_interval_ms: config.coordinator.heartbeat_ms,
                lease_ttl_ms: config.coordinator.lease_ttl_ms,
                output_dir: None,
                image_affinity: config.coordinator.image_affinity,
                ..CoordinatorConfig::default()
            },
            Arc::new(SystemClock),
        )
        .with_context(|| {
            format!(
                "opening the store under {} (is another `ase run` using this data folder?)",
                store.display()
            )
        })?;
        let server = Server::bind(
            coordinator,
            ServeOptions {
                listen: config.coordinator.listen,
                security: load(&paths.tls, "coordinator")?,
                metrics_listen: config.coordinator.metrics_listen,
                sweep_interval: Duration::from_millis(
                    u64::from(config.coordinator.heartbeat_ms / 2).max(1),
                ),
            },
        )
        .await?;
        let grpc_addr = server.local_addr();
        if let Some(addr) = server.metrics_addr() {
            eprintln!("metrics on http://{addr}/metrics");
        }
        let (stop_server, server_rx) = watch::channel(false);
        let (stop_agent, agent_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let server = tokio::spawn({
            let rx = server_rx;
            async move {
                server.serve(stopped(rx)).await?;
                anyhow::Ok(())
            }
        });
        // The coordinator's certificate names `localhost`, whatever loopback address it took.
        let url = format!("https://{LOOPBACK_NAME}:{}", grpc_addr.port());

        let parts = setup::build(&WorkerSetup {
            name: worker.name.clone(),
            cache: paths.cache.clone(),
            cache_max_bytes: worker.cache_max_bytes,
            repo_url_template: worker.repo_url_template.clone(),
            scanner: worker.scanner,
            osemgrep: worker.osemgrep_or_default(&crate::config::process_env),
            rules: worker.rules_or_default(),
            sast_image: worker.sast_image.clone(),
            docker: worker.docker,
            image_cache_bytes: worker.image_cache_bytes,
            scan: worker.scan_settings(),
            privileged: worker.privileged,
        })
        .await?;
        let worker_has_docker = parts.dynamic.is_some();
        let mut agent_config = AgentConfig::new(
            url.clone(),
            load(&paths.tls, &format!("worker-{}", worker.name))?,
            worker.name.clone(),
        );
        agent_config.tls_domain = Some(LOOPBACK_NAME.into());
        agent_config.generate_slots = worker.generate_slots;
        agent_config.eval_slots = worker.eval_slots;
        agent_config.prefetch_images = worker.prefetch_images;
        // Short long-polls so that a stop is not held up by one.
        agent_config.lease_wait = Duration::from_secs(2);
        agent_config.fallback_api_key =
            match crate::config::process_env(crate::config::FALLBACK_API_KEY_ENV) {
                Some(k) => Some(ApiKey::new(k).context("ASE_API_KEY")?),
                None => None,
            };
        let agent = Agent::new(agent_config, parts.ctx, parts.dynamic);
        let agent = tokio::spawn({
            let rx = agent_rx;
            async move {
                agent.run(stopped(rx)).await?;
                anyhow::Ok(())
            }
        });

        let channel = endpoint::connect(
            &url,
            &load(&paths.tls, &format!("client-{CLIENT_NAME}"))?,
            Some(LOOPBACK_NAME),
        )
        .await
        .context("connecting to the embedded coordinator")?;
        let client = ClientApiClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Embedded {
            client,
            worker_has_docker,
            grpc_addr,
            stop_agent,
            stop_server,
            server,
            agent,
        })
    }

    /// Whether the agent or the server ended by itself (an error) before being stopped.
    pub fn crashed(&self) -> bool {
        self.agent.is_finished() || self.server.is_finished()
    }

    /// Stops the worker first (its running units finish or are given back, its last heartbeat
    /// is sent), prints the worker as the coordinator saw it last (as `ase status` does: its
    /// load, repos, task images and pulls), then stops the server (which flushes the store).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_agent.send_replace(true);
        let agent = self.agent.await.context("the worker agent panicked")?;
        if let Ok(workers) = self
            .client
            .list_workers(ase_proto::v1::ListWorkersRequest {})
            .await
        {
            for w in &workers.into_inner().workers {
                eprintln!("{}", crate::progress_fmt::worker_line(w));
            }
        }
        self.stop_server.send_replace(true);
        let server = self.server.await.context("the coordinator panicked")?;
        agent.context("the local worker")?;
        server.context("the embedded coordinator")?;
        Ok(())
    }
}
