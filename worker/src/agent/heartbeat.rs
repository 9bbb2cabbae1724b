//! Liveness and lease renewal, on a task of its own that never waits for a slot (a busy worker
//! must not look dead). A failed heartbeat changes nothing for the running units: they go on,
//! and their reports are retried until the coordinator answers.

use super::connection::{sleep_or_stop, Session};
use super::Shared;
use ase_proto::v1::HeartbeatRequest;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

fn request(shared: &Shared, session: &Session) -> HeartbeatRequest {
    let (free_generate, free_eval) = shared.free_slots();
    HeartbeatRequest {
        worker_id: session.worker_id.clone(),
        session: session.session,
        active: shared.active(),
        free_eval_slots: free_eval,
        free_generate_slots: free_generate,
        cached_repos: shared.ctx.repo_cache.cached_repos(),
        task_images: shared.task_images(),
        agent_usage: shared.agent_usage(),
        images: shared.image_stats(),
    }
}

/// One heartbeat when the worker stops, after its units finished or were given back: the
/// coordinator's last view of it (its image stats, the images it holds) is then its final one.
/// Once, bounded; a failure changes nothing.
pub(crate) async fn last(shared: &Shared) {
    let Some(session) = shared.registrar.current() else {
        return;
    };
    let request = request(shared, &session);
    let mut client = shared.client();
    let sent = tokio::time::timeout(shared.config.rpc_timeout, client.heartbeat(request));
    if !matches!(sent.await, Ok(Ok(_))) {
        tracing::debug!("the last heartbeat was not answered");
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(session) = shared.registrar.current() else {
            return;
        };
        if sleep_or_stop(session.heartbeat_interval, &mut stop).await {
            return;
        }
        let request = request(&shared, &session);
        // A heartbeat older than its interval says nothing any more.
        let bound = session.heartbeat_interval.max(
            shared
                .config
                .rpc_timeout
                .min(session.heartbeat_interval * 3),
        );
        let reply = tokio::time::timeout(bound, shared.client().heartbeat(request)).await;
        let reply = match reply {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                shared
                    .stats
                    .heartbeat_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %status, "heartbeat failed; units keep running");
                continue;
            }
            Err(_) => {
                shared
                    .stats
                    .heartbeat_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    bound_ms = bound.as_millis() as u64,
                    "heartbeat unanswered; units keep running"
                );
                continue;
            }
        };
        shared.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        for revoked in &reply.revoked {
            if shared.cancel(revoked) {
                shared.stats.revoked.fetch_add(1, Ordering::Relaxed);
                tracing::info!(lease = %revoked.lease_id, "lease revoked: unit cancelled");
            }
        }
        if reply.drain && !shared.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: finishing running units, taking no new ones");
            shared.slot_freed.notify_waiters();
        }
        if reply.reregister {
            tracing::info!(
                session = session.session,
                "the coordinator does not know this session"
            );
            match shared
                .registrar
                .reregister(Some(session.epoch), &shared, &mut stop)
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "re-registration refused");
                    return;
                }
            }
        }
    }
}
