//! The coordinator's gRPC server: `WorkerApi` and `ClientApi` (each behind its role check) and
//! tonic-health on one gRPC listener, mutual TLS or loopback-only plaintext
//! (`ase_proto::endpoint`); the lease-expiry sweep ticker (which also retries the finish of
//! runs whose files could not be written); the Prometheus listener; graceful stop, which lets
//! the finisher complete the runs it holds.
//!
//! [`Server::bind`] binds both listeners first, so that a caller asking for port 0 learns the
//! real addresses before anything is served; [`Server::serve`] then runs until its shutdown
//! future resolves.

use crate::grpc::{ClientService, JoinService, JoinSettings, TokenService, WorkerService};
use crate::join_tokens::JoinTokens;
use crate::metrics::{serve_metrics, Metrics};
use crate::Coordinator;
use crate::SystemClock;
use ase_proto::endpoint::{self, EndpointError, TransportSecurity};
use ase_proto::identity::{PeerRole, RequireRole};
use ase_proto::limits::MAX_MESSAGE_BYTES;
use ase_proto::tonic::transport::server::TcpIncoming;
use ase_proto::{ClientApiServer, JoinApiServer, TokenApiServer, WorkerApiServer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a graceful stop waits for runs being finished (scored, their files written).
const FINISH_AT_SHUTDOWN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub security: TransportSecurity,
    /// Where `GET /metrics` is served; none: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// How often expired leases are swept (about half the heartbeat interval).
    pub sweep_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] ase_proto::tonic::transport::Error),
    #[error("flushing the store at shutdown: {0}")]
    Flush(#[from] crate::store::StoreError),
    #[error("stopped: {0}")]
    StoreFailed(String),
    #[error("opening the join tokens: {0}")]
    JoinTokens(crate::store::StoreError),
    #[error("the join token given at start: {0}")]
    Provision(String),
}

/// Bound listeners, ready to serve.
pub struct Server {
    coordinator: Arc<Coordinator>,
    metrics: Arc<Metrics>,
    options: ServeOptions,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    join: Option<Arc<JoinSettings>>,
}

impl Server {
    /// Checks the bind rule (plaintext only on loopback) and binds the listeners.
    pub async fn bind(
        coordinator: Arc<Coordinator>,
        options: ServeOptions,
    ) -> Result<Self, ServeError> {
        endpoint::check_bind(options.listen, options.security.is_plaintext())?;
        let grpc = TcpListener::bind(options.listen)
            .await
            .map_err(|source| ServeError::Bind {
                what: "the gRPC listener",
                addr: options.listen,
                source,
            })?;
        let grpc_addr = grpc.local_addr().map_err(|source| ServeError::Bind {
            what: "the gRPC listener",
            addr: options.listen,
            source,
        })?;
        let metrics_listener = match options.metrics_listen {
            None => None,
            Some(addr) => {
                let bind_err = |source| ServeError::Bind {
                    what: "the metrics listener",
                    addr,
                    source,
                };
                let l = TcpListener::bind(addr).await.map_err(bind_err)?;
                let local = l.local_addr().map_err(bind_err)?;
                Some((l, local))
            }
        };
        Ok(Self {
            coordinator,
            metrics: Metrics::new(),
            options,
            grpc,
            grpc_addr,
            metrics_listener,
            join: None,
        })
    }

    /// Admits workers joining with a token (`JoinApi`): the TLS handshake then lets a peer
    /// without a client certificate through, and every service but `JoinApi.Join` refuses it
    /// in its role check. Without this, `JoinApi` answers that joins are off.
    pub fn admit_joins(mut self, settings: JoinSettings) -> Self {
        self.join = Some(Arc::new(settings));
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, a)| *a)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops gracefully: long polls and WatchRun
    /// streams end, in-flight calls finish, and the store is flushed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let Server {
            coordinator,
            metrics,
            options,
            grpc,
            grpc_addr,
            metrics_listener,
            join,
        } = self;
        let plaintext = options.security.is_plaintext();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

        let (health, health_service) = ase_proto::tonic_health::server::health_reporter();
        health.set_serving::<WorkerApiServer<WorkerService>>().await;
        health.set_serving::<ClientApiServer<ClientService>>().await;

        let worker_api = WorkerApiServer::new(WorkerService::new(
            coordinator.clone(),
            metrics.clone(),
            plaintext,
            stop_rx.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let client_api =
            ClientApiServer::new(ClientService::new(coordinator.clone(), stop_rx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let worker_api = ase_proto::tonic::service::interceptor::InterceptedService::new(
            worker_api,
            RequireRole::new(PeerRole::Worker, plaintext),
        );
        let client_api = ase_proto::tonic::service::interceptor::InterceptedService::new(
            client_api,
            RequireRole::new(PeerRole::Client, plaintext),
        );

        let tokens =
            Arc::new(JoinTokens::open(coordinator.store()).map_err(ServeError::JoinTokens)?);
        if let Some((token, ttl)) = join.as_ref().and_then(|j| j.provisioned.as_ref()) {
            let new = tokens
                .provision(
                    coordinator.store(),
                    token,
                    ttl.as_millis() as u64,
                    crate::Clock::now_ms(&SystemClock),
                )
                .map_err(|e| ServeError::Provision(e.to_string()))?;
            coordinator.store().durable().await?;
            tracing::info!(token = %token.id, new, "join token provisioned");
        }
        let anonymous_tls = join.is_some() && !plaintext;
        let join_api = JoinApiServer::new(JoinService::new(
            coordinator.clone(),
            tokens.clone(),
            join,
            Arc::new(SystemClock),
        ));
        let token_api = ase_proto::tonic::service::interceptor::InterceptedService::new(
            TokenApiServer::new(TokenService::new(
                coordinator.clone(),
                tokens,
                Arc::new(SystemClock),
            )),
            RequireRole::new(PeerRole::Client, plaintext),
        );

        let sweeper = tokio::spawn(sweep_loop(
            coordinator.clone(),
            options.sweep_interval,
            stop_rx.clone(),
        ));
        let metrics_task = metrics_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "metrics listening");
            tokio::spawn(serve_metrics(
                listener,
                coordinator.clone(),
                metrics.clone(),
                stop_rx.clone(),
            ))
        });

        let incoming = TcpIncoming::from(grpc)
            .with_nodelay(Some(true))
            .with_keepalive(Some(endpoint::KEEPALIVE_INTERVAL));
        tracing::info!(addr = %grpc_addr, plaintext, "serving");
        // A store error is fatal: memory may be ahead of the disk. The process stops (and
        // is restarted by its supervisor) rather than go on with unknown state.
        let mut store_failed = coordinator.store().failed();
        let signal = async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down"),
                _ = store_failed.wait_for(|f| *f) => {
                    tracing::error!("the store failed: stopping");
                }
            }
            let _ = stop_tx.send(true);
        };
        let served =
            endpoint::server_builder_with(options.listen, &options.security, anonymous_tls)?
                .add_service(health_service)
                .add_service(worker_api)
                .add_service(client_api)
                .add_service(join_api)
                .add_service(token_api)
                .serve_with_incoming_shutdown(incoming, signal)
                .await;
        let _ = sweeper.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        // A finish in progress completes rather than being cut short (one that cannot, or a
        // run queued after this, is finished when the coordinator opens the store again).
        if tokio::time::timeout(FINISH_AT_SHUTDOWN, coordinator.finish_pending())
            .await
            .is_err()
        {
            tracing::warn!(
                "a run's finish is still in progress at shutdown; it is finished at the next start"
            );
        }
        let flushed = {
            let c = coordinator.clone();
            tokio::task::spawn_blocking(move || c.store().durable_blocking())
                .await
                .unwrap_or(Ok(()))
        };
        if let Some(failure) = coordinator.store().failure() {
            return Err(ServeError::StoreFailed(failure.to_string()));
        }
        served?;
        flushed?;
        Ok(())
    }
}

async fn sweep_loop(
    coordinator: Arc<Coordinator>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match coordinator.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "leases expired"),
            Err(e) => tracing::error!(error = %e, "lease sweep failed"),
        }
    }
}
