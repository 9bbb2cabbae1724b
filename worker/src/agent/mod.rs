//! The worker's agent: its connection to the coordinator and the loop that turns leases into
//! pipeline runs.
//!
//! - [`connection`]: the channel (opened with back-off and jitter) and the session
//!   (registration, re-registration when the coordinator lost it);
//! - [`heartbeat`]: liveness and lease renewal on its own task, never waiting for a slot;
//!   handles `revoked` (cancels those units), `drain` and `reregister`;
//! - [`lease_loop`]: long polls for as many units as there are free slots, runs each on its
//!   own task and reports its result until the coordinator gives a definite answer;
//! - [`spec_cache`]: run specs by digest, fetched once per worker (a lease names its spec).
//!
//! A network partition does not stop running units: their reports are retried with back-off.
//! When the coordinator comes back and no longer knows the session, the worker registers again
//! (a new session) naming the leases it still holds: they stay current, and the units in hand
//! go on and are reported under them. Only a result whose unit was given to someone else is
//! refused by the coordinator's fence, and dropped here. A name held by another live worker is
//! waited for a bounded time (an earlier life of this worker lapses), then given up.

pub mod connection;
mod failure_report;
pub mod heartbeat;
mod image_stats;
pub mod lease_loop;
mod model_calls;
pub mod spec_cache;

pub use connection::{Backoff, Session};

use crate::dynamic::DynamicEvaluator;
use crate::model::ApiKey;
use crate::pipeline::WorkerContext;
use ase_proto::endpoint::{EndpointError, TransportSecurity};
use ase_proto::limits::MAX_MESSAGE_BYTES;
use ase_proto::v1::{FailRequest, FailureKind, LeaseRef, Phase};
use ase_proto::WorkerApiClient;
use connection::Registrar;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tonic::transport::Channel;

/// Called with (worker name, session) each time the worker registers.
pub type RegisterHook = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// How the agent reaches the coordinator and how much work it takes.
#[derive(Clone)]
pub struct AgentConfig {
    /// `https://HOST:PORT`, or `http://` on loopback with [`TransportSecurity::Plaintext`].
    pub coordinator: String,
    pub security: TransportSecurity,
    pub tls_domain: Option<String>,
    /// The worker's name (under mutual TLS: NAME of its `worker:NAME` certificate).
    pub name: String,
    pub generate_slots: u32,
    pub eval_slots: u32,
    /// Long poll of one LeaseWork call.
    pub lease_wait: Duration,
    /// Bound of one unary call (register, heartbeat, reports).
    pub rpc_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// At shutdown, how long running units may take before they are given back.
    pub shutdown_grace: Duration,
    /// How long to keep asking for a name another live worker holds before giving up with
    /// [`AgentError::NameInUse`]; at least twice the time the coordinator says a silent
    /// holder takes to lapse (an earlier life of this worker lapses within the lease TTL).
    pub name_in_use_wait: Duration,
    /// The key used when neither the lease nor the run spec's key source gives one
    /// (`ASE_API_KEY` of the worker's environment).
    pub fallback_api_key: Option<ApiKey>,
    pub on_register: Option<RegisterHook>,
    /// Start pulling a v2 task's image while its generation runs (`lease_loop`); false: the
    /// evaluation pulls it (what `bench images` compares against).
    pub prefetch_images: bool,
}

impl AgentConfig {
    pub fn new(
        coordinator: impl Into<String>,
        security: TransportSecurity,
        name: impl Into<String>,
    ) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            security,
            tls_domain: None,
            name: name.into(),
            generate_slots: 4,
            eval_slots: 2,
            lease_wait: Duration::from_secs(20),
            rpc_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            name_in_use_wait: Duration::from_secs(30),
            fallback_api_key: None,
            on_register: None,
            prefetch_images: true,
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("coordinator", &self.coordinator)
            .field("name", &self.name)
            .field("generate_slots", &self.generate_slots)
            .field("eval_slots", &self.eval_slots)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("coordinator endpoint: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("the coordinator refused to register worker {name}: {reason}")]
    Refused { name: String, reason: String },
    #[error(
        "another live worker is registered as {name}: gave up after {waited_secs} s \
         (coordinator: {reason}); give each worker its own name and certificate"
    )]
    NameInUse {
        name: String,
        waited_secs: u64,
        reason: String,
    },
}

/// Counters of what the agent did (tests, logs at exit).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub connection_attempts: AtomicU64,
    pub registrations: AtomicU64,
    pub heartbeats: AtomicU64,
    pub heartbeat_failures: AtomicU64,
    pub leases: AtomicU64,
    /// Results the coordinator accepted (CompleteUnit).
    pub completed: AtomicU64,
    /// Reports the coordinator refused (stale fence): dropped.
    pub refused: AtomicU64,
    /// FailUnit reports accepted (infrastructure or released).
    pub failed: AtomicU64,
    /// Units cancelled because the coordinator revoked their lease.
    pub revoked: AtomicU64,
    pub released: AtomicU64,
}

impl AgentStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A unit being worked on.
struct RunningUnit {
    lease: LeaseRef,
    phase: Phase,
    run_id: String,
    /// The unit's folder name (`{instance_id}_cycle{round}`).
    unit: String,
    abort: AbortHandle,
    /// Its result is computed and being reported: the report's answer decides its fate.
    reporting: Arc<AtomicBool>,
}

/// What every task of the agent shares.
pub(crate) struct Shared {
    config: AgentConfig,
    ctx: Arc<WorkerContext>,
    dynamic: Option<DynamicEvaluator>,
    channel: Channel,
    registrar: Registrar,
    /// By lease id.
    units: Mutex<HashMap<String, RunningUnit>>,
    draining: AtomicBool,
    /// A unit ended: a slot may be free.
    slot_freed: Notify,
    stats: Arc<AgentStats>,
    specs: spec_cache::SpecCache,
}

/// A client of the coordinator with the limits its server has: a message one end may send,
/// the other receives (tonic's own default would be 4 MiB to receive).
pub(crate) fn worker_client(channel: Channel) -> WorkerApiClient<Channel> {
    WorkerApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Shared {
    fn client(&self) -> WorkerApiClient<Channel> {
        worker_client(self.channel.clone())
    }

    fn units(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningUnit>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task images this worker's cache holds (told at registration and each heartbeat).
    fn task_images(&self) -> Vec<String> {
        self.dynamic
            .as_ref()
            .and_then(DynamicEvaluator::puller)
            .map(|p| p.cache().held())
            .unwrap_or_default()
    }

    /// What this worker's task-image pulls did and its cache holds (None: no Docker).
    fn image_stats(&self) -> Option<ase_proto::v1::ImageStats> {
        let puller = self.dynamic.as_ref().and_then(DynamicEvaluator::puller)?;
        Some(image_stats::summary(
            &puller.stats(),
            &puller.cache().stats(),
        ))
    }

    /// Free (generate, evaluate) slots.
    fn free_slots(&self) -> (u32, u32) {
        let units = self.units();
        let busy = |p: Phase| units.values().filter(|u| u.phase == p).count() as u32;
        (
            self.config
                .generate_slots
                .saturating_sub(busy(Phase::Generate)),
            self.config.eval_slots.saturating_sub(busy(Phase::Evaluate)),
        )
    }

    /// Leases being worked on, for the heartbeat.
    fn active(&self) -> Vec<LeaseRef> {
        self.units().values().map(|u| u.lease.clone()).collect()
    }

    /// What the coding agents of the generate leases being worked on spent so far.
    fn agent_usage(&self) -> Vec<ase_proto::v1::AttemptUsage> {
        let Some(agents) = &self.ctx.coding_agents else {
            return Vec::new();
        };
        let units = self.units();
        units
            .values()
            .filter(|u| u.phase == Phase::Generate)
            .filter_map(|u| {
                let a = agents.live_usage(&u.run_id, &u.unit)?;
                Some(ase_proto::v1::AttemptUsage {
                    lease: Some(u.lease.clone()),
                    turns: a.turns,
                    model_calls: a.model_calls,
                    prompt_tokens: a.usage.prompt_tokens,
                    completion_tokens: a.usage.completion_tokens,
                    total_tokens: a.usage.total_tokens,
                    cost_usd: a.cost_usd,
                })
            })
            .collect()
    }

    /// Cancels the unit of a revoked lease; true when one was running.
    ///
    /// A unit whose result is already being reported is left to its report: a heartbeat that
    /// listed the lease may cross the report that committed it (the coordinator then no longer
    /// knows the lease and calls it revoked), and aborting would lose the answer to a result
    /// that was accepted. If the lease really was given to someone else, the report is refused.
    fn cancel(&self, revoked: &LeaseRef) -> bool {
        let mut units = self.units();
        let matches = units.get(&revoked.lease_id).is_some_and(|u| {
            (u.lease.fence == revoked.fence || revoked.fence.is_none())
                && !u.reporting.load(Ordering::SeqCst)
        });
        if !matches {
            return false;
        }
        let unit = units.remove(&revoked.lease_id).expect("checked");
        unit.abort.abort();
        drop(units);
        self.slot_freed.notify_waiters();
        true
    }
}

/// A gRPC status that retrying cannot change (as opposed to the coordinator being unreachable
/// or overloaded).
pub(crate) fn is_definite(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// The worker's agent. Build it, keep [`Agent::stats`] if wanted, then [`Agent::run`].
pub struct Agent {
    config: AgentConfig,
    ctx: Arc<WorkerContext>,
    dynamic: Option<DynamicEvaluator>,
    stats: Arc<AgentStats>,
}

impl Agent {
    /// `dynamic`: the v2 evaluator, when the worker has a Docker daemon.
    pub fn new(config: AgentConfig, ctx: WorkerContext, dynamic: Option<DynamicEvaluator>) -> Self {
        Agent {
            config,
            ctx: Arc::new(ctx),
            dynamic,
            stats: Arc::new(AgentStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves: then takes no new work, lets running units finish
    /// within the grace period, gives the others back (FailUnit released) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        let (stop_tx, stop) = watch::channel(false);
        let run = async {
            if let Some(dynamic) = &self.dynamic {
                // Containers of an earlier life of this worker: nobody will ever remove them.
                let worker = &self.ctx.container_owner;
                match crate::dynamic::reap_orphans(dynamic.docker(), worker).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "removed orphan v2 containers"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reap orphan v2 containers"),
                }
                match crate::sast::reap_orphans(dynamic.docker(), worker).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "removed orphan scan containers"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reap orphan scan containers"),
                }
                match crate::coding_agent::sandbox::reap_orphans(dynamic.docker(), worker).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(removed = n, "removed orphan agent containers")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reap orphan agent containers"),
                }
            }
            let mut stop_c = stop.clone();
            let Some(channel) =
                connection::connect_with_backoff(&self.config, &self.stats, &mut stop_c).await?
            else {
                return Ok(None);
            };
            let shared = Arc::new(Shared {
                config: self.config.clone(),
                ctx: self.ctx.clone(),
                dynamic: self.dynamic.clone(),
                channel,
                registrar: Registrar::new(),
                units: Mutex::new(HashMap::new()),
                draining: AtomicBool::new(false),
                slot_freed: Notify::new(),
                stats: self.stats.clone(),
                specs: spec_cache::SpecCache::new(),
            });
            if let Some(agents) = &shared.ctx.coding_agents {
                agents.set_call_permits(Arc::new(model_calls::CoordinatorPermits {
                    shared: Arc::downgrade(&shared),
                }));
            }
            let mut stop_r = stop.clone();
            if shared
                .registrar
                .reregister(None, &shared, &mut stop_r)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), stop.clone()));
            lease_loop::run(shared.clone(), stop.clone()).await?;
            Ok::<_, AgentError>(Some((shared, heartbeat)))
        };
        tokio::pin!(run);
        tokio::pin!(shutdown);
        let started = tokio::select! {
            r = &mut run => {
                // The loop only ends by itself on an error.
                r?
            }
            _ = &mut shutdown => {
                stop_tx.send_replace(true);
                run.await?
            }
        };
        if let Some((shared, heartbeat)) = started {
            release_after_grace(&shared).await;
            heartbeat.abort();
            heartbeat::last(&shared).await;
        }
        Ok(())
    }
}

/// Waits up to the grace period for running units, then cancels the others and gives their
/// leases back (no attempt counted).
async fn release_after_grace(shared: &Arc<Shared>) {
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace;
    loop {
        let notified = shared.slot_freed.notified();
        if shared.units().is_empty() {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    let left: Vec<RunningUnit> = shared.units().drain().map(|(_, u)| u).collect();
    let Some(session) = shared.registrar.current() else {
        return;
    };
    let releases = left.into_iter().map(|unit| {
        unit.abort.abort();
        release(shared, session.worker_id.clone(), unit.lease)
    });
    futures_util::future::join_all(releases).await;
}

/// Gives a lease back without trying it (FailUnit released: no attempt counted), once; a lease
/// whose release gets lost expires on the coordinator.
async fn release(shared: &Arc<Shared>, worker_id: String, lease: LeaseRef) {
    let request = FailRequest {
        worker_id,
        lease: Some(lease.clone()),
        kind: FailureKind::Released as i32,
        reason: format!("worker {} is shutting down", shared.config.name),
        ..FailRequest::default()
    };
    let bound = shared.config.rpc_timeout.min(Duration::from_secs(5));
    match tokio::time::timeout(bound, shared.client().fail_unit(request)).await {
        Ok(Ok(ack)) if ack.get_ref().accepted => {
            shared.stats.released.fetch_add(1, Ordering::Relaxed);
            tracing::info!(lease = %lease.lease_id, "lease given back at shutdown");
        }
        Ok(Ok(ack)) => {
            tracing::info!(lease = %lease.lease_id, reason = %ack.get_ref().reason, "release refused")
        }
        Ok(Err(e)) => {
            tracing::warn!(lease = %lease.lease_id, error = %e, "release failed; the lease will expire")
        }
        Err(_) => {
            tracing::warn!(lease = %lease.lease_id, "release timed out; the lease will expire")
        }
    }
}
