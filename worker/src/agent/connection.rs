//! The worker's link to the coordinator: one gRPC channel (mutual TLS, or plaintext on
//! loopback), opened with exponential back-off and jitter, and the worker's current session.
//!
//! tonic's channel reconnects by itself after the coordinator went away; every call made here
//! is retried with back-off by its caller, so a coordinator that is down never causes a busy
//! loop of connection attempts.

use super::{AgentConfig, AgentError, AgentStats};
use ase_proto::endpoint::{client_endpoint, connect_endpoint};
use ase_proto::v1::{Capabilities, RegisterRequest};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Exponential back-off with jitter: each delay is drawn from [d/2, d], d doubling from `base`
/// up to `max`, so that many workers coming back at once do not knock in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Backoff {
            base,
            max: max.max(base),
            next: base,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// The last attempt succeeded: start again from `base`.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Sleeps `d`, or less when `stop` turns true; returns whether the agent is stopping.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// Opens the channel to the coordinator, retrying with back-off until it answers or the agent
/// stops (`Ok(None)`). Configuration errors (bad URI, TLS material) are returned at once.
pub(crate) async fn connect_with_backoff(
    config: &AgentConfig,
    stats: &AgentStats,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Channel>, AgentError> {
    let endpoint = client_endpoint(
        &config.coordinator,
        &config.security,
        config.tls_domain.as_deref(),
    )?;
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    loop {
        stats.connection_attempts.fetch_add(1, Ordering::Relaxed);
        match connect_endpoint(&endpoint, &config.coordinator, &config.security).await {
            Ok(channel) => return Ok(Some(channel)),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(coordinator = %config.coordinator, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to the coordinator");
                if sleep_or_stop(delay, stop).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// The worker's current registration. `epoch` counts registrations of this process, so that
/// two tasks told to re-register at once register only once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub worker_id: String,
    pub session: u64,
    pub heartbeat_interval: Duration,
    pub epoch: u64,
}

/// Registers and re-registers the worker; shared by the heartbeat task and the lease loop.
pub(crate) struct Registrar {
    current: Mutex<Option<Session>>,
    registering: tokio::sync::Mutex<()>,
}

impl Registrar {
    pub fn new() -> Self {
        Registrar {
            current: Mutex::new(None),
            registering: tokio::sync::Mutex::new(()),
        }
    }

    pub fn current(&self) -> Option<Session> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers again unless another task already did since `seen_epoch` was current.
    /// Returns the session to use, `None` when the agent stopped first.
    pub async fn reregister(
        &self,
        seen_epoch: Option<u64>,
        shared: &super::Shared,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Session>, AgentError> {
        let _one_at_a_time = self.registering.lock().await;
        if let Some(now) = self.current() {
            if Some(now.epoch) != seen_epoch {
                return Ok(Some(now));
            }
        }
        let mut backoff = Backoff::new(shared.config.backoff_base, shared.config.backoff_max);
        // When the name was first refused as in use (an unreachable coordinator is no refusal),
        // and how long to keep asking from then.
        let mut refused_since: Option<(tokio::time::Instant, Duration)> = None;
        loop {
            let request = RegisterRequest {
                worker_name: shared.config.name.clone(),
                capabilities: Some(capabilities(shared)),
                // Units in hand are kept and reported under their leases, not dropped: the
                // coordinator keeps these leases current across the new session.
                held: shared.active(),
            };
            let mut client = super::worker_client(shared.channel.clone());
            let reply = tokio::time::timeout(shared.config.rpc_timeout, client.register(request));
            let failure = match reply.await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    let epoch = self.current().map_or(1, |s| s.epoch + 1);
                    let session = Session {
                        worker_id: r.worker_id,
                        session: r.session,
                        heartbeat_interval: Duration::from_millis(
                            u64::from(r.heartbeat_interval_ms).max(100),
                        ),
                        epoch,
                    };
                    shared.stats.registrations.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(worker = %shared.config.name, session = session.session, "registered");
                    if let Some(hook) = &shared.config.on_register {
                        hook(&shared.config.name, session.session);
                    }
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
                    return Ok(Some(session));
                }
                Ok(Err(status)) if status.code() == tonic::Code::AlreadyExists => {
                    // Another process holds the name. If it is an earlier life of this worker
                    // (killed, restarted quickly) its session lapses within the lease TTL; a
                    // second live worker with this name never lets go, and then this one
                    // gives up rather than fight it for the name.
                    let now = tokio::time::Instant::now();
                    let (since, bound) = *refused_since.get_or_insert_with(|| {
                        // However long the coordinator's TTL, wait for a silent session to
                        // lapse before giving up.
                        let lapse = ase_proto::name_in_use::free_in(&status).unwrap_or_default();
                        (
                            now,
                            shared.config.name_in_use_wait.max(lapse.saturating_mul(2)),
                        )
                    });
                    let waited = now - since;
                    if waited >= bound {
                        return Err(AgentError::NameInUse {
                            name: shared.config.name.clone(),
                            waited_secs: waited.as_secs(),
                            reason: status.message().to_string(),
                        });
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        worker = %shared.config.name,
                        reason = %status.message(),
                        retry_in_ms = delay.as_millis() as u64,
                        gives_up_after_secs = bound.as_secs(),
                        "worker name in use by another live worker; waiting for it to lapse"
                    );
                    if sleep_or_stop(delay, stop).await {
                        return Ok(None);
                    }
                    continue;
                }
                Ok(Err(status)) if super::is_definite(&status) => {
                    return Err(AgentError::Refused {
                        name: shared.config.name.clone(),
                        reason: status.message().to_string(),
                    })
                }
                Ok(Err(status)) => status.to_string(),
                Err(_) => format!("no answer within {:?}", shared.config.rpc_timeout),
            };
            let delay = backoff.next_delay();
            tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "register failed");
            if sleep_or_stop(delay, stop).await {
                return Ok(None);
            }
        }
    }
}

pub(crate) fn capabilities(shared: &super::Shared) -> Capabilities {
    Capabilities {
        eval_slots: shared.config.eval_slots,
        generate_slots: shared.config.generate_slots,
        docker: shared.dynamic.is_some(),
        cached_repos: shared.ctx.repo_cache.cached_repos(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        task_images: shared.task_images(),
        unprivileged: shared
            .dynamic
            .as_ref()
            .is_none_or(|d| !d.settings().privileged),
    }
}
