//! Results of leased phases: a committed result (first commit wins, the same result again is a
//! duplicate), a failure or a lease given back, and a worker's progress report on a lease.

use super::lease_end::{check_fence, expiry, LeaseEnd};
use super::pause::{ProviderFailure, RegistryFailure};
use super::Coordinator;
use crate::messages::{Ack, Completion, Failure, FailureKind, InfraKind, Progress, RegistryFault};
use crate::records::{Phase, UnitState};
use crate::store::{CommittedLease, Op, RunInput};
use crate::CoordinatorError;
use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};

/// Bytes of one result (generation or evaluation record) accepted.
pub const MAX_RESULT_BYTES: usize = 32 << 20;

/// Characters of a reported step kept.
const MAX_STEP_CHARS: usize = 64;

/// Characters of a failure's reason kept.
const MAX_REASON_CHARS: usize = 4096;

impl Coordinator {
    /// Commits the result of a phase: first commit wins, the same result again is a duplicate,
    /// anything from a lease that is not current is refused.
    pub async fn complete(&self, req: Completion) -> Result<Ack, CoordinatorError> {
        if req.result_json.len() > MAX_RESULT_BYTES {
            return Ok(Ack::refused(format!(
                "result of {} bytes is more than the {MAX_RESULT_BYTES} accepted",
                req.result_json.len()
            )));
        }
        let lease_id = req.lease.lease_id;
        // Parsed before the lock: which unit the result is for, its model calls, and the
        // image (by digest) a v2 evaluation ran in.
        let mut image_digest = None;
        let parsed: Result<(UnitId, u32), String> = match req.phase {
            Phase::Generate => serde_json::from_slice::<GenerationRecord>(&req.result_json)
                .map(|g| (g.unit, g.model_attempts))
                .map_err(|e| format!("not a generation record: {e}")),
            Phase::Evaluate => serde_json::from_slice::<EvaluationRecord>(&req.result_json)
                .map(|e| {
                    if let EvaluationRecord::Dynamic {
                        image_digest: Some(d),
                        ..
                    } = &e
                    {
                        image_digest = Some(d.clone());
                    }
                    (e.unit().clone(), 0)
                })
                .map_err(|e| format!("not an evaluation record: {e}")),
        };
        let mut ops = Vec::new();
        {
            let _writer = self.store.writer();
            let mut st = self.lock();
            let Some(l) = st.leases.get(&lease_id) else {
                drop(st);
                return self.repeated_result(&req);
            };
            if let Err(why) = check_fence(&l.record, &req.worker_id, req.lease.fence) {
                return Ok(Ack::refused(why));
            }
            if l.record.phase != req.phase {
                return Ok(Ack::refused(format!(
                    "lease {lease_id} is for the {} phase, not {}",
                    l.record.phase.as_str(),
                    req.phase.as_str()
                )));
            }
            let (seq, index, granted_ms) = (
                l.record.run_seq,
                l.record.unit_index,
                l.record.granted_unix_ms,
            );
            let rounds = st.runs[&seq].rounds();
            let mut unit = self.unit_record(seq, index, rounds)?;
            let model_calls = match parsed {
                Ok((ref id, calls)) if *id == unit.unit => calls,
                Ok((id, _)) => {
                    return Ok(Ack::refused(format!(
                        "lease {lease_id} is for unit {}, the result is for {id}",
                        unit.unit
                    )))
                }
                Err(e) => return Ok(Ack::refused(format!("unit {}: {e}", unit.unit))),
            };
            self.forget_lease(&mut st, lease_id);
            if let Some(w) = st.workers.get_mut(&req.worker_id) {
                w.completed += 1;
            }
            let run = st.runs.get_mut(&seq).expect("a lease's run exists");
            // Where its evaluation goes next (its image's holders, for v2).
            let eval_key = run.queue_key(Phase::Evaluate, index);
            unit.lease = None;
            unit.phase_failures = 0;
            match req.phase {
                Phase::Generate => {
                    // The provider answered (a model that failed to fix the code answered too).
                    run.pause.succeeded(granted_ms);
                    unit.state = UnitState::EvaluateQueued;
                    unit.generated_by = Some(lease_id);
                    unit.model_calls = model_calls;
                    // This attempt's agent figures are in its record: not abandoned.
                    let attempt = req.lease.fence.attempt;
                    unit.agent_attempts.retain(|a| a.attempt != attempt);
                    run.model_calls += u64::from(model_calls);
                    run.units[index as usize].generated = true;
                    run.generated_since_load += 1;
                    ops.push(Op::Generation {
                        seq,
                        index,
                        json: req.result_json,
                    });
                }
                Phase::Evaluate => {
                    // The unit's image could be had (pulled, or held by its worker).
                    run.registry_pause.succeeded(granted_ms);
                    if let Some(digest) = image_digest.take() {
                        let task = run.task_of(index);
                        if let Some(pins) = run.pin_image(task, digest, &unit.unit) {
                            ops.push(Op::RunInput {
                                seq,
                                input: RunInput::ImagePins,
                                bytes: pins,
                            });
                        }
                    }
                    unit.state = UnitState::Done;
                    unit.evaluated_by = Some(lease_id);
                    ops.push(Op::Evaluation {
                        seq,
                        index,
                        json: req.result_json,
                    });
                }
            }
            run.units[index as usize].state = unit.state;
            ops.push(Op::Unit {
                seq,
                index,
                record: unit,
            });
            ops.push(Op::DeleteLease(lease_id));
            ops.push(Op::Committed {
                lease_id,
                committed: CommittedLease {
                    seq,
                    index,
                    phase: req.phase,
                },
            });
            match req.phase {
                Phase::Generate => run.queues[1].push(&eval_key, index),
                Phase::Evaluate => run.unit_finished(),
            }
            self.store.apply(&ops)?;
            self.queue_finishes(&mut st);
        }
        self.commit(ops).await?;
        Ok(Ack::accepted())
    }

    fn repeated_result(&self, req: &Completion) -> Result<Ack, CoordinatorError> {
        let lease_id = req.lease.lease_id;
        let Some(CommittedLease { seq, index, phase }) = self.store.committed(lease_id)? else {
            return Ok(Ack::refused(format!(
                "lease {lease_id} is not current (expired, revoked, superseded or unknown)"
            )));
        };
        let stored = match phase {
            Phase::Generate => self.store.generation(seq, index)?,
            Phase::Evaluate => self.store.evaluation(seq, index)?,
        };
        if phase == req.phase && stored.as_deref() == Some(req.result_json.as_slice()) {
            Ok(Ack::duplicate())
        } else {
            Ok(Ack::refused(format!(
                "lease {lease_id}: a different {} result was already committed; the first \
                 commit wins",
                phase.as_str()
            )))
        }
    }

    /// A worker says where a leased unit is: kept for status, and it renews the lease (the
    /// unit is evidently alive). Not a transition: nothing is stored.
    pub fn report_progress(&self, p: Progress) -> Ack {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let Some(l) = st.leases.get_mut(&p.lease.lease_id) else {
            return Ack::refused(format!(
                "lease {} is not current (expired, revoked, superseded or unknown)",
                p.lease.lease_id
            ));
        };
        if let Err(why) = check_fence(&l.record, &p.worker_id, p.lease.fence) {
            return Ack::refused(why);
        }
        if expiry(&l.record, now).is_none() {
            l.record.expires_unix_ms = now + u64::from(self.config.lease_ttl_ms);
        }
        let step: String = p
            .step
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_STEP_CHARS)
            .collect();
        l.step = Some(step);
        drop(st);
        self.changes.send_modify(|v| *v += 1);
        Ack::accepted()
    }

    /// An infrastructure failure or a lease given back. A provider failure of a generation
    /// (429, quota, auth, 5xx, timeout) gives the unit back without using up an attempt and
    /// pauses the run's generations (`provider_pause`).
    pub async fn fail(&self, req: Failure) -> Result<Ack, CoordinatorError> {
        let lease_id = req.lease.lease_id;
        let mut ops = Vec::new();
        {
            let _writer = self.store.writer();
            let mut st = self.lock();
            let Some(l) = st.leases.get(&lease_id) else {
                return Ok(Ack::refused(format!(
                    "lease {lease_id} is not current (expired, revoked, superseded or unknown)"
                )));
            };
            if let Err(why) = check_fence(&l.record, &req.worker_id, req.lease.fence) {
                return Ok(Ack::refused(why));
            }
            let reason: String = req.reason.chars().take(MAX_REASON_CHARS).collect();
            let end = match (req.kind, req.infra) {
                // The provider failed the run, not the unit: no attempt is used up, and the
                // run's model calls pause on every worker instead.
                (FailureKind::Infrastructure, InfraKind::Provider(fault))
                    if l.record.phase == Phase::Generate =>
                {
                    let failure = ProviderFailure {
                        fault,
                        retry_after_ms: req.retry_after_ms,
                        granted_ms: l.record.granted_unix_ms,
                    };
                    let (seq, now) = (l.record.run_seq, self.clock.now_ms());
                    if let Some(run) = st.runs.get_mut(&seq) {
                        run.pause.failed(&self.config.provider_pause, failure, now);
                    }
                    LeaseEnd::Released(format!(
                        "provider failure ({}), no attempt counted: {reason}",
                        fault.as_str()
                    ))
                }
                // The registry the task images come from is down or limits pulls: the run's
                // condition, like the provider's. The unit's answer is kept (no model call is
                // repeated) and its evaluation waits for the registry, on every worker.
                (FailureKind::Infrastructure, InfraKind::Registry)
                    if l.record.phase == Phase::Evaluate =>
                {
                    let failure = RegistryFailure {
                        fault: RegistryFault::Unreachable,
                        retry_after_ms: req.retry_after_ms,
                        granted_ms: l.record.granted_unix_ms,
                    };
                    let (seq, now) = (l.record.run_seq, self.clock.now_ms());
                    if let Some(run) = st.runs.get_mut(&seq) {
                        run.registry_pause
                            .failed(&self.config.registry_pause, failure, now);
                    }
                    LeaseEnd::Released(format!(
                        "{}, no attempt counted: {reason}",
                        RegistryFault::Unreachable.as_str()
                    ))
                }
                (FailureKind::Infrastructure, _) => LeaseEnd::Counted(reason),
                (FailureKind::Released, _) => LeaseEnd::Released(reason),
            };
            self.end_lease(&mut st, lease_id, end, false, &mut ops)?;
            self.store.apply(&ops)?;
            self.queue_finishes(&mut st);
        }
        self.commit(ops).await?;
        Ok(Ack::accepted())
    }
}
