//! A lease's end without a result: its TTL or execution deadline passed (the sweep), its
//! worker re-registered, its run was cancelled, or its worker gave it back or failed. The unit
//! goes back to its queue, or fails when out of retries. Also the checks every report on a
//! lease starts with: is it from the current lease, and has the lease run out.

use super::memory::{pi, LeaseMem, State};
use super::Coordinator;
use crate::messages::LeaseRef;
use crate::records::{FailureNote, Fence, LeaseRecord, Phase, UnitRecord, UnitState};
use crate::store::{Op, StoreError};
use crate::CoordinatorError;

/// Notes kept in a unit's record about leases that ended without a result.
const MAX_FAILURE_NOTES: usize = 32;

/// Why a lease is no longer current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No heartbeat renewed it within the TTL: the worker is gone or cut off.
    Ttl,
    /// The phase's execution deadline passed: the worker is alive but stuck on the unit.
    Deadline,
}

/// Whether the lease has run out at `now_ms`; the TTL is checked first.
pub(super) fn expiry(lease: &LeaseRecord, now_ms: u64) -> Option<Expiry> {
    if now_ms > lease.expires_unix_ms {
        Some(Expiry::Ttl)
    } else if now_ms > lease.deadline_unix_ms {
        Some(Expiry::Deadline)
    } else {
        None
    }
}

/// Checks a report's claimed fence and worker against the current lease.
pub(super) fn check_fence(
    lease: &LeaseRecord,
    worker_id: &str,
    fence: Fence,
) -> Result<(), String> {
    if lease.worker_id != worker_id {
        return Err(format!(
            "lease {} belongs to worker {}, not {worker_id}",
            lease.lease_id, lease.worker_id
        ));
    }
    if fence.session != lease.fence.session {
        return Err(format!(
            "lease {}: stale session {} (current {})",
            lease.lease_id, fence.session, lease.fence.session
        ));
    }
    if fence.attempt != lease.fence.attempt {
        return Err(format!(
            "lease {}: stale attempt {} (current {})",
            lease.lease_id, fence.attempt, lease.fence.attempt
        ));
    }
    Ok(())
}

/// Every lease that ends without a result is logged with its unit, worker and phase: an
/// expiry is the only trace of a worker that vanished or a unit that hung.
fn log_lease_end(
    rec: &LeaseRecord,
    run_id: &str,
    unit: &UnitRecord,
    counted: bool,
    out_of_retries: bool,
) {
    let reason = unit.failures.last().map_or("", |f| f.reason.as_str());
    if counted {
        tracing::warn!(
            run = %run_id,
            unit = %unit.unit,
            worker = %rec.worker_id,
            phase = %rec.phase.as_str(),
            lease = rec.lease_id,
            attempt = rec.fence.attempt,
            out_of_retries,
            %reason,
            "lease ended without a result"
        );
    } else {
        tracing::info!(
            run = %run_id,
            unit = %unit.unit,
            worker = %rec.worker_id,
            phase = %rec.phase.as_str(),
            lease = rec.lease_id,
            attempt = rec.fence.attempt,
            %reason,
            "lease ended without a result (no attempt spent)"
        );
    }
}

/// What a lease's end does to its unit.
pub(super) enum LeaseEnd {
    /// Counts against the retry budget.
    Counted(String),
    /// No attempt spent.
    Released(String),
}

impl Coordinator {
    /// Expires leases whose TTL or execution deadline passed. The services call it
    /// periodically; heartbeats and lease requests call it too. Runs whose last unit it ends,
    /// and runs whose finish is due for another attempt, are queued to the finisher.
    pub async fn sweep(&self) -> Result<usize, CoordinatorError> {
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let n = {
            let mut st = self.lock();
            let n = self.sweep_locked(&mut st, now, &mut ops)?;
            self.store.apply(&ops)?;
            self.queue_finishes(&mut st);
            n
        };
        self.commit(ops).await?;
        Ok(n)
    }

    pub(super) fn sweep_locked(
        &self,
        st: &mut State,
        now: u64,
        ops: &mut Vec<Op>,
    ) -> Result<usize, StoreError> {
        let expired: Vec<(u64, Expiry)> = st
            .leases
            .values()
            .filter_map(|l| expiry(&l.record, now).map(|e| (l.record.lease_id, e)))
            .collect();
        let n = expired.len();
        for (id, why) in expired {
            let l = &st.leases[&id].record;
            let reason = match why {
                Expiry::Ttl => format!(
                    "lease {id} ({} phase) expired: worker {} missed its heartbeats",
                    l.phase.as_str(),
                    l.worker_id
                ),
                Expiry::Deadline => format!(
                    "lease {id}: {} phase exceeded its execution deadline on worker {}",
                    l.phase.as_str(),
                    l.worker_id
                ),
            };
            self.end_lease(st, id, LeaseEnd::Counted(reason), true, ops)?;
        }
        Ok(n)
    }

    /// Ends a current lease without a result: the unit goes back to its queue, or fails when
    /// out of retries.
    pub(super) fn end_lease(
        &self,
        st: &mut State,
        lease_id: u64,
        end: LeaseEnd,
        tell_worker: bool,
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let Some(l) = self.forget_lease(st, lease_id) else {
            return Ok(());
        };
        let rec = l.record;
        if tell_worker {
            if let Some(w) = st.workers.get_mut(&rec.worker_id) {
                w.revoked.push(LeaseRef {
                    lease_id,
                    fence: rec.fence,
                });
            }
        }
        let now = self.clock.now_ms();
        let Some(run) = st.runs.get_mut(&rec.run_seq) else {
            return Ok(());
        };
        let max_attempts = run.max_attempts();
        let repo = run.queue_key(rec.phase, rec.unit_index);
        let mut unit = self.unit_record(rec.run_seq, rec.unit_index, run.rounds())?;
        let (counted, reason) = match end {
            LeaseEnd::Counted(r) => (true, r),
            LeaseEnd::Released(r) => (false, r),
        };
        if !counted && unit.failures.len() >= MAX_FAILURE_NOTES {
            // Uncounted ends (provider pauses, give-backs) have no bound of their own: keep
            // the record bounded by dropping the oldest of them; counted ones are bounded by
            // the retry budget and name why a unit failed.
            if let Some(i) = unit.failures.iter().position(|f| !f.counted) {
                unit.failures.remove(i);
            }
        }
        unit.failures.push(FailureNote {
            phase: rec.phase,
            attempt: rec.fence.attempt,
            worker: rec.worker_id.clone(),
            reason,
            counted,
            at_unix_ms: now,
        });
        unit.lease = None;
        if counted {
            unit.phase_failures += 1;
            run.retries += 1;
        }
        let out_of_retries = counted && unit.phase_failures >= max_attempts;
        log_lease_end(&rec, &run.record.run_id, &unit, counted, out_of_retries);
        if out_of_retries {
            unit.state = UnitState::Failed;
            if rec.phase == Phase::Generate {
                run.generated_since_load += 1;
            }
        } else {
            unit.state = UnitState::queued(rec.phase);
            run.queues[pi(rec.phase)].push_front(&repo, rec.unit_index);
        }
        run.units[rec.unit_index as usize].state = unit.state;
        ops.push(Op::Unit {
            seq: rec.run_seq,
            index: rec.unit_index,
            record: unit,
        });
        ops.push(Op::DeleteLease(lease_id));
        if out_of_retries {
            run.unit_finished();
        }
        Ok(())
    }

    /// Removes a lease from memory and releases the slots and limits it held.
    pub(super) fn forget_lease(&self, st: &mut State, lease_id: u64) -> Option<LeaseMem> {
        let l = st.leases.remove(&lease_id)?;
        if let Some(w) = st.workers.get_mut(&l.record.worker_id) {
            if w.leases.remove(&lease_id) {
                let r = &mut w.running[pi(l.record.phase)];
                *r = r.saturating_sub(1);
            }
        }
        if let Some(run) = st.runs.get_mut(&l.record.run_seq) {
            match l.record.phase {
                Phase::Generate => {
                    run.inflight_generate = run.inflight_generate.saturating_sub(1);
                    run.pause.lease_ended(lease_id);
                }
                Phase::Evaluate => run.registry_pause.lease_ended(lease_id),
            }
        }
        Some(l)
    }
}
