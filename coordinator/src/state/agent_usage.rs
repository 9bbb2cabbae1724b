//! Agent mode: the usage a worker reports with its heartbeats for the coding agent of each
//! generate lease it holds, kept per attempt in the unit's record (durable), so that the calls
//! of an attempt whose worker dies mid-agent are still counted in the report ("calls of
//! abandoned attempts"). The committed attempt's entry is dropped when its generation commits
//! (`results`): its figures are in the generation record.

use super::lease_end::check_fence;
use super::memory::State;
use super::Coordinator;
use crate::messages::LeaseUsage;
use crate::records::{AgentAttempt, Phase};
use crate::store::Op;
use crate::CoordinatorError;

/// One attempt's usage as recorded, logged once it is durable.
pub(super) struct RecordedUsage {
    run_id: String,
    unit: String,
    attempt: u64,
    worker: String,
    usage: ase_common::agent_record::AttemptUsage,
}

impl RecordedUsage {
    /// Logged after the commit: a reader of the log (a test killing the process) may rely on
    /// the store holding what it says.
    pub(super) fn log(&self) {
        tracing::debug!(
            run = %self.run_id,
            unit = %self.unit,
            attempt = self.attempt,
            worker = %self.worker,
            model_calls = self.usage.model_calls,
            turns = self.usage.turns,
            "agent usage of an attempt recorded"
        );
    }
}

/// Attempts kept per unit (each one is a lease granted; the retry budget bounds them long
/// before this).
const MAX_AGENT_ATTEMPTS: usize = 256;

impl Coordinator {
    /// The unit writes (and what they record, to log once durable) that record what `reports` say, for the current leases of `worker_id`
    /// only; a report that changes nothing writes nothing.
    pub(super) fn agent_usage_ops(
        &self,
        st: &State,
        worker_id: &str,
        reports: &[LeaseUsage],
    ) -> Result<(Vec<Op>, Vec<RecordedUsage>), CoordinatorError> {
        let mut ops = Vec::new();
        let mut recorded = Vec::new();
        for r in reports {
            let Some(l) = st.leases.get(&r.lease.lease_id) else {
                continue;
            };
            if l.record.phase != Phase::Generate
                || check_fence(&l.record, worker_id, r.lease.fence).is_err()
            {
                continue;
            }
            let (seq, index) = (l.record.run_seq, l.record.unit_index);
            let Some(run) = st.runs.get(&seq) else {
                continue;
            };
            let mut unit = self.unit_record(seq, index, run.rounds())?;
            let attempt = r.lease.fence.attempt;
            let full = unit.agent_attempts.len() >= MAX_AGENT_ATTEMPTS;
            match unit
                .agent_attempts
                .iter_mut()
                .find(|a| a.attempt == attempt)
            {
                Some(a) if a.usage == r.usage => continue,
                Some(a) => a.usage = r.usage,
                None if full => continue,
                None => unit.agent_attempts.push(AgentAttempt {
                    attempt,
                    worker: worker_id.to_string(),
                    usage: r.usage,
                }),
            }
            recorded.push(RecordedUsage {
                run_id: run.record.run_id.clone(),
                unit: unit.unit.to_string(),
                attempt,
                worker: worker_id.to_string(),
                usage: r.usage,
            });
            ops.push(Op::Unit {
                seq,
                index,
                record: unit,
            });
        }
        Ok((ops, recorded))
    }
}
