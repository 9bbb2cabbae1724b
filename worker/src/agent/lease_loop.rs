//! Asks for as many units as there are free slots (generate and evaluate slots apart), runs
//! each lease on its own task, and reports the result until the coordinator gives a definite
//! answer: accepted, or refused (a stale fence: the result is dropped).

use super::connection::{sleep_or_stop, Backoff};
use super::failure_report::fail_request;
use super::spec_cache::SpecFetchError;
use super::{AgentError, RunningUnit, Shared};
use crate::model::{ApiKey, ApiKeySource};
use crate::pipeline::{
    run_phase, InfraError, InfraKind, ModelSpec, PhaseInput, PhaseWork, RunSpec,
};
use ase_common::dataset::{Task, TaskSpec};
use ase_common::scoring::UnitId;
use ase_proto::v1::{
    CompleteRequest, Lease, LeaseRef, LeaseRequest, Phase, ProgressReport, RunSpecRef,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(shared.config.backoff_base, shared.config.backoff_max);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let slot_freed = shared.slot_freed.notified();
        let (free_generate, free_eval) = shared.free_slots();
        if shared.draining.load(Ordering::SeqCst) || (free_generate == 0 && free_eval == 0) {
            // Drain lasts as long as this process; a slot frees when a unit ends.
            tokio::select! {
                _ = slot_freed => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            continue;
        }
        let Some(session) = shared.registrar.current() else {
            return Ok(());
        };
        let request = LeaseRequest {
            worker_id: session.worker_id.clone(),
            session: session.session,
            max_generate: free_generate,
            max_evaluate: free_eval,
            wait_ms: shared
                .config
                .lease_wait
                .as_millis()
                .min(u128::from(u32::MAX)) as u32,
        };
        let bound = shared.config.lease_wait + shared.config.rpc_timeout;
        let mut client = shared.client();
        let call = tokio::time::timeout(bound, client.lease_work(request));
        tokio::pin!(call);
        let reply = tokio::select! {
            r = &mut call => r,
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                // The coordinator may be granting right now: wait a little for its answer and
                // give back what it granted, rather than leave leases to expire.
                if let Ok(Ok(Ok(reply))) = tokio::time::timeout(shared.config.shutdown_grace, call).await {
                    let releases = reply.into_inner().leases.into_iter().map(|l| {
                        let lease = LeaseRef { lease_id: l.lease_id, fence: l.fence };
                        super::release(&shared, session.worker_id.clone(), lease)
                    });
                    futures_util::future::join_all(releases).await;
                }
                return Ok(());
            }
        };
        let reply = match reply {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %status, retry_in_ms = delay.as_millis() as u64, "LeaseWork failed");
                if sleep_or_stop(delay, &mut stop).await {
                    return Ok(());
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("LeaseWork unanswered");
                continue;
            }
        };
        backoff.reset();
        if reply.reregister {
            tracing::info!(
                session = session.session,
                "the coordinator does not know this session"
            );
            if shared
                .registrar
                .reregister(Some(session.epoch), &shared, &mut stop)
                .await?
                .is_none()
            {
                return Ok(());
            }
            continue;
        }
        if reply.drain && !shared.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: finishing running units, taking no new ones");
        }
        for lease in reply.leases {
            shared.stats.leases.fetch_add(1, Ordering::Relaxed);
            spawn_unit(&shared, lease, session.worker_id.clone());
        }
    }
}

/// Removes the unit from the running set however its task ends (finished or aborted).
struct SlotGuard {
    shared: Arc<Shared>,
    lease_id: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.units().remove(&self.lease_id);
        self.shared.slot_freed.notify_waiters();
    }
}

fn spawn_unit(shared: &Arc<Shared>, lease: Lease, worker_id: String) {
    let phase = lease.phase();
    let lease_ref = LeaseRef {
        lease_id: lease.lease_id.clone(),
        fence: lease.fence,
    };
    let run_id_of_unit = lease.run_id.clone();
    let unit_name = format!("{}_cycle{}", lease.instance_id, lease.round);
    let span = tracing::info_span!(
        "unit",
        run = %lease.run_id,
        unit = %unit_name,
        phase = phase.as_str_name(),
        lease = %lease.lease_id,
    );
    // Held while spawning, so the task cannot end (and remove itself) before it is listed.
    let mut units = shared.units();
    let guard = SlotGuard {
        shared: shared.clone(),
        lease_id: lease.lease_id.clone(),
    };
    let task_shared = shared.clone();
    let reporting = Arc::new(AtomicBool::new(false));
    let task_reporting = reporting.clone();
    let handle = tokio::spawn(
        async move {
            let _guard = guard;
            report_step(&task_shared, &lease, &worker_id, "running");
            let outcome = execute(&task_shared, &lease).await;
            task_reporting.store(true, Ordering::SeqCst);
            report(&task_shared, &lease, worker_id, outcome).await;
        }
        .instrument(span),
    );
    units.insert(
        lease_ref.lease_id.clone(),
        RunningUnit {
            lease: lease_ref,
            phase,
            run_id: run_id_of_unit,
            unit: unit_name,
            abort: handle.abort_handle(),
            reporting,
        },
    );
}

/// Tells the coordinator that the unit's phase is running on this worker (it shows in status
/// and renews the lease). Best effort: it never delays the unit, and a lost report changes
/// nothing but status.
fn report_step(shared: &Arc<Shared>, lease: &Lease, worker_id: &str, step: &str) {
    let request = ProgressReport {
        worker_id: worker_id.to_string(),
        lease: Some(LeaseRef {
            lease_id: lease.lease_id.clone(),
            fence: lease.fence,
        }),
        step: step.to_string(),
        message: String::new(),
    };
    let mut client = shared.client();
    let bound = shared.config.rpc_timeout;
    tokio::spawn(async move {
        if let Ok(Err(status)) = tokio::time::timeout(bound, client.report_progress(request)).await
        {
            tracing::debug!(error = %status, "progress report failed");
        }
    });
}

/// A phase's result as JSON, or why the unit could not be run (an infrastructure failure).
type Outcome = Result<Vec<u8>, InfraError>;

fn parse<T: serde::de::DeserializeOwned>(
    lease: &Lease,
    what: &str,
    bytes: &[u8],
) -> Result<T, InfraError> {
    serde_json::from_slice(bytes).map_err(|e| {
        InfraError::new(
            &lease_unit(lease),
            InfraKind::Configuration,
            format!("lease {}: {what} is not valid: {e}", lease.lease_id),
        )
    })
}

fn lease_unit(lease: &Lease) -> UnitId {
    UnitId::new(&lease.instance_id, lease.round)
}

/// The key of this unit's model calls: the lease's, else the run spec's own source (resolved
/// by the provider), else the worker's fallback when that source gives nothing.
fn api_key(shared: &Shared, lease: &Lease, spec: &RunSpec) -> Result<Option<ApiKey>, InfraError> {
    if !lease.api_key.is_empty() {
        return ApiKey::new(lease.api_key.clone()).map(Some).map_err(|e| {
            InfraError::new(
                &lease_unit(lease),
                InfraKind::Configuration,
                format!("the lease's API key: {e}"),
            )
        });
    }
    let config = match &spec.model {
        ModelSpec::Openai { config } => config,
        ModelSpec::Agent { config } => &config.upstream,
        _ => return Ok(None),
    };
    match &config.api_key {
        ApiKeySource::None => Ok(None),
        source => match source.resolve() {
            Ok(Some(_)) => Ok(None),
            _ => Ok(shared.config.fallback_api_key.clone()),
        },
    }
}

/// What the lease asks of the phase besides its task and spec.
fn phase_work(shared: &Shared, lease: &Lease, spec: &RunSpec) -> Result<PhaseWork, InfraError> {
    match lease.phase() {
        Phase::Generate => Ok(PhaseWork::Generate {
            context: if lease.context_json.is_empty() {
                None
            } else {
                Some(parse(lease, "context_json", &lease.context_json)?)
            },
            api_key: api_key(shared, lease, spec)?,
        }),
        Phase::Evaluate => Ok(PhaseWork::Evaluate {
            generation: parse(lease, "generation_json", &lease.generation_json)?,
        }),
        Phase::Unspecified => Err(InfraError::new(
            &lease_unit(lease),
            InfraKind::Configuration,
            format!("lease {} names no phase", lease.lease_id),
        )),
    }
}

/// The run spec the lease runs under: from the spec cache (fetched by digest at the run's first
/// lease), or inline from a coordinator that sends no digest.
async fn run_spec(shared: &Shared, lease: &Lease) -> Result<Arc<RunSpec>, InfraError> {
    if lease.spec_digest.is_empty() {
        return parse(lease, "run_spec_json", &lease.run_spec_json).map(Arc::new);
    }
    let fetch = || async {
        let fetch_err = |detail: String, definite: bool| SpecFetchError::Fetch {
            run: lease.run_id.clone(),
            digest: lease.spec_digest.clone(),
            detail,
            definite,
        };
        let worker_id = shared
            .registrar
            .current()
            .map(|s| s.worker_id)
            .unwrap_or_default();
        let request = RunSpecRef {
            worker_id,
            run_id: lease.run_id.clone(),
            digest: lease.spec_digest.clone(),
        };
        let mut client = shared.client();
        match tokio::time::timeout(shared.config.rpc_timeout, client.fetch_run_spec(request)).await
        {
            Ok(Ok(blob)) => {
                let bytes = blob.into_inner().run_spec_json;
                tracing::info!(digest = %lease.spec_digest, bytes = bytes.len(), "run spec fetched");
                Ok(bytes)
            }
            Ok(Err(status)) => Err(fetch_err(status.to_string(), super::is_definite(&status))),
            Err(_) => Err(fetch_err(
                format!("no answer within {:?}", shared.config.rpc_timeout),
                false,
            )),
        }
    };
    shared
        .specs
        .get_or_fetch(&lease.run_id, &lease.spec_digest, fetch)
        .await
        .map_err(|e| {
            let kind = match &e {
                SpecFetchError::Fetch {
                    definite: false, ..
                } => InfraKind::Worker,
                _ => InfraKind::Configuration,
            };
            InfraError::new(&lease_unit(lease), kind, e.to_string())
        })
}

/// A predictions run's spec holds no answers: the unit's own come with its lease. (A lease
/// without any keeps the spec's entries: a run stored before answers were split by unit still
/// has them there, and a split run's spec has none.)
fn unit_spec(lease: &Lease, spec: Arc<RunSpec>) -> Result<Arc<RunSpec>, InfraError> {
    if !matches!(spec.model, ModelSpec::Predictions { .. })
        || lease.phase() != Phase::Generate
        || lease.unit_predictions_jsonl.is_empty()
    {
        return Ok(spec);
    }
    let entries = lease
        .unit_predictions_jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| parse(lease, "unit_predictions_jsonl", l))
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    let mut unit = RunSpec::clone(&spec);
    unit.model = ModelSpec::Predictions { entries };
    Ok(Arc::new(unit))
}

/// A v2 evaluation runs in the image its run pinned for the task (by digest), not in whatever
/// the task's tag names now.
fn pinned(lease: &Lease, mut task: Task) -> Task {
    if lease.phase() == Phase::Evaluate && !lease.pinned_image.is_empty() {
        if let TaskSpec::V2(spec) = &mut task.spec {
            spec.image = lease.pinned_image.clone();
        }
    }
    task
}

/// A worker generating a v2 unit starts pulling the task's image meanwhile, so that the
/// evaluation (here, or placed here because this worker now holds the image) does not wait for
/// it. The pull is the one every need of the image shares; recorded as this worker's pull (its
/// disk budget applies) and not held, so it may be evicted like any other. Not with a disk
/// budget: there a pull ahead of need can evict the image a queued evaluation is about to use,
/// and each is pulled twice (seen with a tight budget). A failure is only logged: the
/// evaluation pulls again and reports its own failure.
fn prefetch_image(shared: &Shared, task: &Task) {
    let Some(puller) = shared.dynamic.as_ref().and_then(|d| d.puller()).cloned() else {
        return;
    };
    let budget = puller.settings().cache_bytes;
    let Some(image) = image_to_prefetch(shared.config.prefetch_images, budget, task) else {
        return;
    };
    let image = image.to_string();
    tokio::spawn(async move {
        match puller.acquire(&image).await {
            Ok((found, _not_held)) if found.pulled => {
                tracing::info!(%image, "task image fetched during generation")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%image, error = %e, "task image not fetched during generation")
            }
        }
    });
}

/// The image [`prefetch_image`] pulls for `task`: a v2 task's, unless prefetching is off or
/// the worker has a disk budget.
fn image_to_prefetch(enabled: bool, cache_bytes: Option<u64>, task: &Task) -> Option<&str> {
    match &task.spec {
        TaskSpec::V2(spec) if enabled && cache_bytes.is_none() && !spec.image.is_empty() => {
            Some(&spec.image)
        }
        _ => None,
    }
}

async fn execute(shared: &Shared, lease: &Lease) -> Outcome {
    let spec = unit_spec(lease, run_spec(shared, lease).await?)?;
    let task = pinned(lease, parse(lease, "task_json", &lease.task_json)?);
    if lease.phase() == Phase::Generate {
        prefetch_image(shared, &task);
    }
    let input = PhaseInput {
        run_id: lease.run_id.clone(),
        task,
        seed_repo: (!lease.seed_repo.is_empty()).then(|| lease.seed_repo.clone()),
        round: lease.round,
        spec: &spec,
        work: phase_work(shared, lease, &spec)?,
    };
    let record = run_phase(&shared.ctx, shared.dynamic.as_ref(), input).await?;
    record
        .to_json()
        .map_err(|e| InfraError::new(&lease_unit(lease), InfraKind::Worker, e.to_string()))
}

/// Sends the unit's result (CompleteUnit) or its failure (FailUnit, infrastructure), retrying
/// transport errors with back-off until the coordinator answers.
async fn report(shared: &Arc<Shared>, lease: &Lease, worker_id: String, outcome: Outcome) {
    let lease_ref = LeaseRef {
        lease_id: lease.lease_id.clone(),
        fence: lease.fence,
    };
    let mut backoff = Backoff::new(shared.config.backoff_base, shared.config.backoff_max);
    let failed = outcome.is_err();
    if let Err(e) = &outcome {
        tracing::warn!(
            kind = ?e.kind,
            retry_after_secs = ?e.retry_after_secs,
            reason = %e.reason,
            "infrastructure failure"
        );
    }
    loop {
        let mut client = shared.client();
        let call = async {
            match &outcome {
                Ok(json) => {
                    client
                        .complete_unit(CompleteRequest {
                            worker_id: worker_id.clone(),
                            lease: Some(lease_ref.clone()),
                            phase: lease.phase,
                            result_json: json.clone(),
                        })
                        .await
                }
                Err(e) => {
                    client
                        .fail_unit(fail_request(worker_id.clone(), lease_ref.clone(), e))
                        .await
                }
            }
        };
        let error = match tokio::time::timeout(shared.config.rpc_timeout, call).await {
            Ok(Ok(ack)) => {
                let ack = ack.into_inner();
                if ack.accepted {
                    let counter = if failed {
                        &shared.stats.failed
                    } else {
                        &shared.stats.completed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(duplicate = ack.duplicate, failed, "reported");
                } else {
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(reason = %ack.reason, "report refused (stale lease): dropped");
                }
                return;
            }
            Ok(Err(status)) if super::is_definite(&status) => {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %status, "report rejected: dropped");
                return;
            }
            Ok(Err(status)) => status.to_string(),
            Err(_) => format!("no answer within {:?}", shared.config.rpc_timeout),
        };
        let delay: Duration = backoff.next_delay();
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "report failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ase_common::dataset::{DynamicSpec, StaticSpec};

    fn task(spec: TaskSpec) -> Task {
        Task {
            instance_id: "t".into(),
            repo: "o/r".into(),
            base_commit: "abc^".into(),
            vuln_file: "a.c".into(),
            vuln_lines: ase_common::dataset::LineRange { start: 1, end: 2 },
            language: "c".into(),
            vuln_source: "CVE-1".into(),
            vuln_type: "x".into(),
            cwe_id: "CWE-1".into(),
            spec,
            extra: Default::default(),
        }
    }

    fn v2(image: &str) -> Task {
        task(TaskSpec::V2(DynamicSpec {
            patch_commit: None,
            severity: "high".into(),
            image: image.into(),
            image_inner_path: "/src".into(),
            image_run_cmd: String::new(),
            image_status_check_cmd: String::new(),
            test_case_cmd: String::new(),
            poc_cmd: String::new(),
            privileged: false,
            other_vuln_files: vec![],
            branch_origin: None,
            timeouts: Default::default(),
        }))
    }

    #[test]
    fn a_v2_image_is_prefetched_unless_prefetching_is_off_or_there_is_a_budget() {
        let t = v2("r/a:1");
        assert_eq!(image_to_prefetch(true, None, &t), Some("r/a:1"));
        assert_eq!(image_to_prefetch(false, None, &t), None);
        assert_eq!(image_to_prefetch(true, Some(1 << 30), &t), None);
        assert_eq!(image_to_prefetch(true, None, &v2("")), None);
        let v1 = task(TaskSpec::V1(StaticSpec {
            seed: true,
            detected_tool: String::new(),
            detected_vul_num: 0,
            patch_commit: None,
        }));
        assert_eq!(image_to_prefetch(true, None, &v1), None);
    }
}
