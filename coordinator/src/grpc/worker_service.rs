//! `WorkerApi`: registration, heartbeats, long-poll leasing and results, each call bound to the
//! certificate of the worker that makes it.

use super::{
    ack_to_proto, lease_ref_from_proto, lease_ref_to_proto, phase_from_proto, phase_to_proto,
    status_of, truncate,
};
use crate::messages;
use crate::metrics::Metrics;
use crate::Coordinator;
use ase_proto::identity::PeerIdentity;
use ase_proto::tonic::{Request, Response, Status};
use ase_proto::v1;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Longest long poll a worker may ask for; a longer `wait_ms` is cut to this.
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(30);
/// Bytes of a progress message kept for the log.
const MAX_PROGRESS_CHARS: usize = 512;

pub struct WorkerService {
    coordinator: Arc<Coordinator>,
    metrics: Arc<Metrics>,
    /// Loopback-only plaintext mode: no certificates, no identity checks.
    plaintext: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl WorkerService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        metrics: Arc<Metrics>,
        plaintext: bool,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            coordinator,
            metrics,
            plaintext,
            shutdown,
        }
    }

    /// The worker named in a request must be the worker of the caller's certificate.
    fn check_caller<T>(&self, req: &Request<T>, worker: &str) -> Result<(), Status> {
        match req.extensions().get::<PeerIdentity>() {
            Some(identity) => identity.check_worker_name(worker),
            None if self.plaintext => Ok(()),
            None => Err(Status::unauthenticated(
                "a worker certificate of the cluster is required",
            )),
        }
    }
}

fn grant_to_proto(g: messages::LeaseGrant) -> v1::Lease {
    let lease = lease_ref_to_proto(&g.lease);
    v1::Lease {
        lease_id: lease.lease_id,
        fence: lease.fence,
        run_id: g.run_id,
        instance_id: g.instance_id,
        round: g.round,
        phase: phase_to_proto(g.phase) as i32,
        expires_unix_ms: g.expires_unix_ms,
        task_json: g.task_json.as_ref().clone(),
        context_json: g.context_json.as_ref().clone(),
        // The worker fetches the spec once by its digest (FetchRunSpec).
        run_spec_json: Vec::new(),
        generation_json: g.generation_json.unwrap_or_default(),
        api_key: g.api_key.unwrap_or_default(),
        seed_repo: g.seed_repo,
        pinned_image: g.pinned_image.unwrap_or_default(),
        spec_digest: g.spec_digest.to_string(),
        unit_predictions_jsonl: g.unit_predictions_jsonl,
    }
}

#[ase_proto::tonic::async_trait]
impl ase_proto::WorkerApi for WorkerService {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let span =
            tracing::info_span!("register", worker = %truncate(&req.get_ref().worker_name, 64));
        async {
            self.check_caller(&req, &req.get_ref().worker_name)?;
            let req = req.into_inner();
            let caps = req.capabilities.unwrap_or_default();
            let caps = messages::Capabilities {
                eval_slots: caps.eval_slots,
                generate_slots: caps.generate_slots,
                docker: caps.docker,
                cached_repos: caps.cached_repos,
                version: caps.version,
                task_images: caps.task_images,
                unprivileged: caps.unprivileged,
            };
            let held = req
                .held
                .iter()
                .map(|l| lease_ref_from_proto(Some(l), "held"))
                .collect::<Result<Vec<_>, _>>()?;
            let r = self
                .coordinator
                .register_holding(&req.worker_name, caps, &held)
                .await
                .map_err(|e| status_of(&e))?;
            tracing::info!(session = r.session, "worker registered");
            Ok(Response::new(v1::RegisterResponse {
                worker_id: r.worker_id,
                session: r.session,
                heartbeat_interval_ms: r.heartbeat_interval_ms,
                lease_ttl_ms: r.lease_ttl_ms,
            }))
        }
        .instrument(span)
        .await
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let span =
            tracing::debug_span!("heartbeat", worker = %truncate(&req.get_ref().worker_id, 64));
        async {
            self.check_caller(&req, &req.get_ref().worker_id)?;
            let req = req.into_inner();
            let active = req
                .active
                .iter()
                .map(|l| lease_ref_from_proto(Some(l), "active"))
                .collect::<Result<Vec<_>, _>>()?;
            let agent_usage = req
                .agent_usage
                .iter()
                .map(|a| {
                    Ok(messages::LeaseUsage {
                        lease: lease_ref_from_proto(a.lease.as_ref(), "agent_usage.lease")?,
                        usage: ase_common::agent_record::AttemptUsage {
                            turns: a.turns,
                            model_calls: a.model_calls,
                            usage: ase_common::unit::TokenUsage {
                                prompt_tokens: a.prompt_tokens,
                                completion_tokens: a.completion_tokens,
                                total_tokens: a.total_tokens,
                            },
                            cost_usd: a.cost_usd.filter(|c| c.is_finite()),
                        },
                    })
                })
                .collect::<Result<Vec<_>, Status>>()?;
            let reply = self
                .coordinator
                .heartbeat(messages::Heartbeat {
                    worker_id: req.worker_id,
                    session: req.session,
                    active,
                    free_eval_slots: req.free_eval_slots,
                    free_generate_slots: req.free_generate_slots,
                    cached_repos: req.cached_repos,
                    task_images: req.task_images,
                    agent_usage,
                    images: req.images.map(super::image_stats_from_proto),
                })
                .await
                .map_err(|e| status_of(&e))?;
            if !reply.revoked.is_empty() {
                tracing::info!(revoked = reply.revoked.len(), "leases revoked");
            }
            Ok(Response::new(v1::HeartbeatResponse {
                revoked: reply.revoked.iter().map(lease_ref_to_proto).collect(),
                drain: reply.drain,
                reregister: reply.reregister,
            }))
        }
        .instrument(span)
        .await
    }

    async fn lease_work(
        &self,
        req: Request<v1::LeaseRequest>,
    ) -> Result<Response<v1::LeaseResponse>, Status> {
        let span =
            tracing::debug_span!("lease_work", worker = %truncate(&req.get_ref().worker_id, 64));
        async {
            self.check_caller(&req, &req.get_ref().worker_id)?;
            let started = Instant::now();
            let req = req.into_inner();
            let wait_ms = u64::from(req.wait_ms).min(MAX_LEASE_WAIT.as_millis() as u64) as u32;
            let work = messages::LeaseWork {
                worker_id: req.worker_id,
                session: req.session,
                max_generate: req.max_generate,
                max_evaluate: req.max_evaluate,
                wait_ms,
            };
            let mut shutdown = self.shutdown.clone();
            // A long poll must not hold up a graceful stop: it then returns empty.
            let reply = tokio::select! {
                r = self.coordinator.lease_work(work) => r.map_err(|e| status_of(&e))?,
                _ = shutdown.wait_for(|stop| *stop) => messages::LeaseReply::default(),
            };
            if !reply.leases.is_empty() {
                self.metrics.observe_lease_grant(started.elapsed());
            }
            let mut leases = Vec::with_capacity(reply.leases.len());
            for g in reply.leases {
                let (run, unit, phase) = (
                    g.run_id.clone(),
                    format!("{}#{}", g.instance_id, g.round),
                    g.phase.as_str(),
                );
                let lease = grant_to_proto(g);
                tracing::info!(
                    %run,
                    %unit,
                    phase,
                    lease = %lease.lease_id,
                    bytes = ase_proto::prost::Message::encoded_len(&lease),
                    "lease granted"
                );
                leases.push(lease);
            }
            let response = v1::LeaseResponse {
                leases,
                drain: reply.drain,
                reregister: reply.reregister,
            };
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    async fn report_progress(
        &self,
        req: Request<v1::ProgressReport>,
    ) -> Result<Response<v1::Ack>, Status> {
        self.check_caller(&req, &req.get_ref().worker_id)?;
        let req = req.into_inner();
        let lease = lease_ref_from_proto(req.lease.as_ref(), "lease")?;
        tracing::debug!(
            worker = %truncate(&req.worker_id, 64),
            lease = lease.lease_id,
            step = %truncate(&req.step, 32),
            message = %truncate(&req.message, MAX_PROGRESS_CHARS),
            "progress"
        );
        let ack = self.coordinator.report_progress(messages::Progress {
            worker_id: req.worker_id,
            lease,
            step: req.step,
        });
        Ok(Response::new(ack_to_proto(ack)))
    }

    async fn complete_unit(
        &self,
        req: Request<v1::CompleteRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let lease_field = req
            .get_ref()
            .lease
            .as_ref()
            .map(|l| truncate(&l.lease_id, 24))
            .unwrap_or_default();
        let span = tracing::info_span!(
            "complete_unit",
            worker = %truncate(&req.get_ref().worker_id, 64),
            lease = %lease_field,
            phase = tracing::field::Empty,
            bytes = req.get_ref().result_json.len(),
        );
        async {
            self.check_caller(&req, &req.get_ref().worker_id)?;
            let req = req.into_inner();
            let lease = lease_ref_from_proto(req.lease.as_ref(), "lease")?;
            let phase = phase_from_proto(req.phase, "phase")?;
            tracing::Span::current().record("phase", phase.as_str());
            // Named in the refusal below: the log says whose late result the fence stopped.
            let worker = truncate(&req.worker_id, 64);
            let ack = self
                .coordinator
                .complete(messages::Completion {
                    worker_id: req.worker_id,
                    lease,
                    phase,
                    result_json: req.result_json,
                })
                .await
                .map_err(|e| status_of(&e))?;
            self.metrics.record_completion(phase, &ack);
            if ack.accepted {
                tracing::info!(duplicate = ack.duplicate, "result committed");
            } else {
                tracing::warn!(%worker, reason = %ack.reason, "result refused");
            }
            Ok(Response::new(ack_to_proto(ack)))
        }
        .instrument(span)
        .await
    }

    async fn fetch_run_spec(
        &self,
        req: Request<v1::RunSpecRef>,
    ) -> Result<Response<v1::RunSpecBlob>, Status> {
        self.check_caller(&req, &req.get_ref().worker_id)?;
        let req = req.into_inner();
        let spec = self
            .coordinator
            .fetch_run_spec(&messages::SpecRef {
                worker_id: req.worker_id,
                run_id: req.run_id,
                digest: req.digest.clone(),
            })
            .map_err(|e| status_of(&e))?;
        tracing::debug!(
            run = %truncate(&req.digest, 64),
            bytes = spec.len(),
            "run spec fetched"
        );
        Ok(Response::new(v1::RunSpecBlob {
            digest: req.digest,
            run_spec_json: spec.as_ref().clone(),
        }))
    }

    async fn acquire_model_call(
        &self,
        req: Request<v1::ModelCallRequest>,
    ) -> Result<Response<v1::ModelCallResponse>, Status> {
        self.check_caller(&req, &req.get_ref().worker_id)?;
        let req = req.into_inner();
        let lease = lease_ref_from_proto(req.lease.as_ref(), "lease")?;
        let reply = match self.coordinator.grant_model_call(&req.worker_id, lease) {
            crate::ModelCallGrant::Granted => v1::ModelCallResponse {
                granted: true,
                ..Default::default()
            },
            crate::ModelCallGrant::Wait { retry_after_ms } => v1::ModelCallResponse {
                retry_after_ms: u32::try_from(retry_after_ms).unwrap_or(u32::MAX),
                ..Default::default()
            },
            crate::ModelCallGrant::Refused { reason } => v1::ModelCallResponse {
                refused: reason,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn fail_unit(&self, req: Request<v1::FailRequest>) -> Result<Response<v1::Ack>, Status> {
        let lease_field = req
            .get_ref()
            .lease
            .as_ref()
            .map(|l| truncate(&l.lease_id, 24))
            .unwrap_or_default();
        let span = tracing::info_span!(
            "fail_unit",
            worker = %truncate(&req.get_ref().worker_id, 64),
            lease = %lease_field,
        );
        async {
            self.check_caller(&req, &req.get_ref().worker_id)?;
            let req = req.into_inner();
            let lease = lease_ref_from_proto(req.lease.as_ref(), "lease")?;
            let kind = match v1::FailureKind::try_from(req.kind) {
                Ok(v1::FailureKind::Infrastructure) => messages::FailureKind::Infrastructure,
                Ok(v1::FailureKind::Released) => messages::FailureKind::Released,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "kind {} is neither infrastructure nor released",
                        req.kind
                    )))
                }
            };
            let infra = infra_kind_from_proto(req.infra_kind);
            let ack = self
                .coordinator
                .fail(messages::Failure {
                    worker_id: req.worker_id,
                    lease,
                    kind,
                    reason: req.reason.clone(),
                    infra,
                    retry_after_ms: req.retry_after_ms,
                })
                .await
                .map_err(|e| status_of(&e))?;
            self.metrics.record_failure(kind, infra, &ack);
            if ack.accepted {
                tracing::warn!(
                    reason = %truncate(&req.reason, 512),
                    kind = ?kind,
                    infra = ?infra,
                    retry_after_ms = ?req.retry_after_ms,
                    "unit failed"
                );
            } else {
                tracing::warn!(reason = %ack.reason, "failure report refused");
            }
            Ok(Response::new(ack_to_proto(ack)))
        }
        .instrument(span)
        .await
    }
}

/// A value this version does not know (a newer worker) counts like an unclassified failure.
fn infra_kind_from_proto(value: i32) -> messages::InfraKind {
    use messages::{InfraKind as K, ProviderFault as P};
    match v1::InfraKind::try_from(value) {
        Ok(v1::InfraKind::Repository) => K::Repository,
        Ok(v1::InfraKind::Configuration) => K::Configuration,
        Ok(v1::InfraKind::Worker) => K::Worker,
        Ok(v1::InfraKind::Scanner) => K::Scanner,
        Ok(v1::InfraKind::ModelEndpoint) => K::ModelEndpoint,
        Ok(v1::InfraKind::ProviderRateLimited) => K::Provider(P::RateLimited),
        Ok(v1::InfraKind::ProviderQuota) => K::Provider(P::Quota),
        Ok(v1::InfraKind::ProviderAuth) => K::Provider(P::Auth),
        Ok(v1::InfraKind::ProviderServerError) => K::Provider(P::ServerError),
        Ok(v1::InfraKind::ProviderTimeout) => K::Provider(P::Timeout),
        Ok(v1::InfraKind::ProviderNetwork) => K::Provider(P::Network),
        Ok(v1::InfraKind::Registry) => K::Registry,
        Ok(v1::InfraKind::TaskImage) => K::TaskImage,
        Ok(v1::InfraKind::Unspecified) | Err(_) => K::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messages::{InfraKind as K, ProviderFault as P};

    #[test]
    fn every_provider_kind_arrives_typed_and_unknown_ones_count_as_unspecified() {
        let cases = [
            (
                v1::InfraKind::ProviderRateLimited,
                K::Provider(P::RateLimited),
            ),
            (v1::InfraKind::ProviderQuota, K::Provider(P::Quota)),
            (v1::InfraKind::ProviderAuth, K::Provider(P::Auth)),
            (
                v1::InfraKind::ProviderServerError,
                K::Provider(P::ServerError),
            ),
            (v1::InfraKind::ProviderTimeout, K::Provider(P::Timeout)),
            (v1::InfraKind::ProviderNetwork, K::Provider(P::Network)),
            (v1::InfraKind::Repository, K::Repository),
            (v1::InfraKind::ModelEndpoint, K::ModelEndpoint),
            (v1::InfraKind::Registry, K::Registry),
            (v1::InfraKind::TaskImage, K::TaskImage),
            (v1::InfraKind::Unspecified, K::Unspecified),
        ];
        for (wire, kind) in cases {
            assert_eq!(infra_kind_from_proto(wire as i32), kind, "{wire:?}");
        }
        // A newer worker's kind: counted like an unclassified failure, never a pause.
        assert_eq!(infra_kind_from_proto(999), K::Unspecified);
    }
}
