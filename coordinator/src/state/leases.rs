//! Lease requests: a worker asks for work within its free slots and waits (long poll) when
//! there is none; the grant itself is the scheduler's (`scheduler::grant_locked`). A grant's
//! task inputs are read from the store after the lock is released.

use super::lease_end::LeaseEnd;
use super::unit_answers::unit_lines;
use super::Coordinator;
use crate::messages::{LeaseGrant, LeaseReply, LeaseWork, SpecRef};
use crate::records::{Phase, RunState};
use crate::CoordinatorError;
use ase_proto::limits::MAX_LEASE_REPLY_BYTES;
use std::sync::Arc;
use std::time::Duration;

impl Coordinator {
    /// Grants work within the worker's free slots and every run's limits; waits up to
    /// `wait_ms` for work when there is none.
    pub async fn lease_work(&self, mut req: LeaseWork) -> Result<LeaseReply, CoordinatorError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(req.wait_ms));
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let reply = self.lease_once(&req).await?;
            if !reply.leases.is_empty() || reply.drain || reply.reregister {
                return Ok(reply);
            }
            // A pause after provider failures ends without any change to wake on.
            let pause_end = self
                .next_pause_end()
                .map(|d| tokio::time::Instant::now() + d)
                .filter(|at| *at < deadline);
            match tokio::time::timeout_at(pause_end.unwrap_or(deadline), changes.changed()).await {
                Ok(Ok(())) => {
                    // The worker asked with the slots it had free when it asked. While it
                    // waits, its own units finish (their reports are among the changes) and
                    // free slots it cannot ask for until this call returns: a worker with a
                    // free generate slot and a busy evaluate slot would otherwise see queued
                    // evaluations only once per wait. From now on its registered slots minus
                    // the leases it holds, as counted here, bound the grant.
                    req.max_generate = u32::MAX;
                    req.max_evaluate = u32::MAX;
                    continue;
                }
                Err(_) if pause_end.is_some() => continue,
                _ => return Ok(reply),
            }
        }
    }

    /// How long until the first pause of a running run's generations or evaluations ends.
    fn next_pause_end(&self) -> Option<Duration> {
        let now = self.clock.now_ms();
        let st = self.lock();
        st.runs
            .values()
            .filter(|r| r.record.state == RunState::Running)
            .flat_map(|r| {
                [
                    r.pause.ends_at(&self.config.provider_pause, now),
                    r.registry_pause.ends_at(&self.config.registry_pause, now),
                ]
            })
            .flatten()
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
    }

    async fn lease_once(&self, req: &LeaseWork) -> Result<LeaseReply, CoordinatorError> {
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let mut grants = Vec::new();
        let mut grant_units = Vec::new();
        let early = self.grant_locked(req, now, &mut ops, &mut grants, &mut grant_units)?;
        self.commit(ops).await?;
        if let Some(reply) = early {
            return Ok(reply);
        }
        for (g, &(seq, index, task_index)) in grants.iter_mut().zip(&grant_units) {
            let task = self.store.task(seq, task_index)?;
            g.task_json = Arc::new(task.task_json);
            g.context_json = Arc::new(task.context_json);
            g.seed_repo = task.seed_repo;
            match g.phase {
                Phase::Generate if !task.predictions_jsonl.is_empty() => {
                    g.unit_predictions_jsonl = unit_lines(&task.predictions_jsonl, g.round);
                }
                Phase::Generate => {}
                Phase::Evaluate => g.generation_json = self.store.generation(seq, index)?,
            }
        }
        let grants = self.within_reply_budget(grants).await?;
        Ok(LeaseReply {
            leases: grants,
            drain: false,
            reregister: false,
        })
    }

    /// Keeps the grants that fit in one reply ([`MAX_LEASE_REPLY_BYTES`], at least one) and
    /// gives the others back at once, no attempt counted: they go to the next request rather
    /// than make a reply the worker cannot receive (and expire there as if it were dead).
    async fn within_reply_budget(
        &self,
        mut grants: Vec<LeaseGrant>,
    ) -> Result<Vec<LeaseGrant>, CoordinatorError> {
        let mut total = 0usize;
        let keep = grants
            .iter()
            .take_while(|g| {
                total += g.payload_bytes();
                total <= MAX_LEASE_REPLY_BYTES
            })
            .count()
            .max(1);
        if keep >= grants.len() {
            return Ok(grants);
        }
        let over = grants.split_off(keep);
        let mut ops = Vec::new();
        {
            let mut st = self.lock();
            for g in &over {
                self.end_lease(
                    &mut st,
                    g.lease.lease_id,
                    LeaseEnd::Released(format!(
                        "lease {} given back: the reply to the worker was full",
                        g.lease.lease_id
                    )),
                    false,
                    &mut ops,
                )?;
            }
            self.store.apply(&ops)?;
        }
        self.commit(ops).await?;
        tracing::debug!(
            kept = keep,
            given_back = over.len(),
            "lease reply at its byte budget"
        );
        Ok(grants)
    }

    /// The spec a lease named: the run's current spec when `digest` is its digest.
    pub fn fetch_run_spec(&self, req: &SpecRef) -> Result<Arc<Vec<u8>>, CoordinatorError> {
        let st = self.lock();
        let run = st
            .run_by_id
            .get(&req.run_id)
            .and_then(|seq| st.runs.get(seq))
            .ok_or_else(|| CoordinatorError::UnknownRun(req.run_id.clone()))?;
        if *run.spec_digest != *req.digest {
            return Err(CoordinatorError::Conflict {
                run_id: req.run_id.clone(),
                message: format!(
                    "its spec has digest {}, not the one asked for",
                    run.spec_digest
                ),
            });
        }
        Ok(run.spec_json.clone())
    }
}
