//! Lease requests: a worker asks for work within its free slots and waits (long poll) when
//! there is none; the grant itself is the scheduler's (`scheduler::grant_locked`). A grant's
//! task inputs are read from the store after the lock is released.

use super::Coordinator;
use crate::messages::{LeaseReply, LeaseWork};
use crate::records::{Phase, RunState};
use crate::CoordinatorError;
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

    /// How long until the first pause of a running run's generations ends.
    fn next_pause_end(&self) -> Option<Duration> {
        let now = self.clock.now_ms();
        let st = self.lock();
        st.runs
            .values()
            .filter(|r| r.record.state == RunState::Running)
            .filter_map(|r| r.pause.ends_at(&self.config.provider_pause, now))
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
            if g.phase == Phase::Evaluate {
                g.generation_json = self.store.generation(seq, index)?;
            }
        }
        Ok(LeaseReply {
            leases: grants,
            drain: false,
            reregister: false,
        })
    }
}
