//! Runs: submitted (its dataset checked, its tasks stored), resumed by the same submission,
//! cancelled.

use super::lease_end::LeaseEnd;
use super::memory::{RunMem, UnitMem};
use super::plan::{
    parse_context_file, parse_spec_header, plan_dataset, sha256_hex, write_task_inputs,
};
use super::unit_answers::{split_spec, SplitSpec};
use super::Coordinator;
use crate::messages::{Ack, SubmitRun, Submitted};
use crate::records::{Phase, RunRecord, RunState};
use crate::store::{Op, RunInput};
use crate::CoordinatorError;

impl Coordinator {
    /// Creates a run, or resumes the run of the same (model, batch) when the dataset is the
    /// same one.
    pub async fn submit_run(&self, req: SubmitRun) -> Result<Submitted, CoordinatorError> {
        let header = parse_spec_header(&req.run_spec_json)?;
        let run_id = ase_common::upstream_io::run_name(&header.model_name, &header.batch)
            .map_err(|e| CoordinatorError::Spec(e.to_string()))?;
        let dataset_sha256 = sha256_hex(&req.dataset);
        if let Some(submitted) = self.resume_run(&run_id, &dataset_sha256, &req).await? {
            return Ok(submitted);
        }
        let SubmitRun {
            run_spec_json,
            dataset,
            dataset_name,
            context,
            context_name,
            api_key,
        } = req;
        // Parsed outside the lock: datasets can be large. The bytes are not kept: each task's
        // inputs are stored on their own, and only the digests go into the report.
        let plan = plan_dataset(&dataset_name, &dataset, &header.unavailable)?;
        // A predictions run's answers are stored with their tasks, not in the spec.
        let SplitSpec {
            worker_spec: run_spec_json,
            mut answers,
        } = split_spec(run_spec_json)?;
        let contexts = parse_context_file(&context_name, &context)?;
        drop(context);
        let context_sha256 = contexts.as_ref().map(|c| c.sha256.clone());
        let now = self.clock.now_ms();
        let seq = self.store.next_id()?;
        let rounds = header.rounds;
        // Only the tasks are written: a unit has no record until it is first leased (see
        // `unit_record`), so a run of any size is submitted with one write per task.
        // Nothing refers to these records until the run record is committed below: a crash
        // in between leaves records no run reaches.
        let repos = write_task_inputs(
            &self.store,
            seq,
            &dataset_name,
            &dataset,
            &plan,
            contexts.as_ref(),
            &mut answers,
        )?;
        drop((dataset, contexts, plan, answers));
        let total_units = repos.repos.0.len() as u64 * u64::from(rounds);
        let record = RunRecord {
            run_id: run_id.clone(),
            seq,
            header,
            dataset_name,
            dataset_sha256,
            context_name,
            context_sha256,
            total_units,
            created_unix_ms: now,
            state: RunState::Running,
            completed_unix_ms: None,
            key_supplied: api_key.is_some(),
        };
        let ops = vec![
            Op::Run(record.clone()),
            Op::RunName {
                name: run_id.clone(),
                seq,
            },
            Op::RunInput {
                seq,
                input: RunInput::Spec,
                bytes: run_spec_json.clone(),
            },
        ];
        {
            let mut st = self.lock();
            if st.run_by_id.contains_key(&run_id) {
                return Err(CoordinatorError::Conflict {
                    run_id,
                    message: "was submitted twice at the same time; submit it again to resume"
                        .into(),
                });
            }
            self.store.apply(&ops)?;
            let mut run = RunMem::new(record, run_spec_json, repos, now);
            for index in 0..total_units as u32 {
                run.units.push(UnitMem::QUEUED);
                let key = run.queue_key(Phase::Generate, index);
                run.queues[0].push(&key, index);
            }
            run.unfinished = total_units;
            run.api_key = api_key;
            st.runs.insert(seq, run);
            st.run_by_id.insert(run_id.clone(), seq);
        }
        self.commit(ops).await?;
        Ok(Submitted {
            run_id,
            resumed: false,
            total_units,
        })
    }

    /// Submitting a run that exists resumes it: a cancelled run runs again, a key given now
    /// replaces the one held in memory, and a pause waiting for the key ends. `None` when the run does not exist.
    async fn resume_run(
        &self,
        run_id: &str,
        dataset_sha256: &str,
        req: &SubmitRun,
    ) -> Result<Option<Submitted>, CoordinatorError> {
        let mut ops = Vec::new();
        let submitted = {
            let mut st = self.lock();
            let Some(&seq) = st.run_by_id.get(run_id) else {
                return Ok(None);
            };
            let run = st.runs.get_mut(&seq).expect("indexed run exists");
            if run.record.dataset_sha256 != dataset_sha256 {
                return Err(CoordinatorError::Conflict {
                    run_id: run_id.to_string(),
                    message: format!(
                        "exists with dataset sha256 {}, resubmitted with {dataset_sha256}: \
                         use another batch name",
                        run.record.dataset_sha256
                    ),
                });
            }
            let mut changed = false;
            // The key supplied again (or, for a run whose workers hold the key, the run
            // submitted again) ends a pause after auth or quota failures.
            if req.api_key.is_some() || !run.record.key_supplied {
                run.pause.resume();
            }
            if req.api_key.is_some() {
                run.api_key = req.api_key.clone();
                changed |= !run.record.key_supplied;
                run.record.key_supplied = true;
            }
            if run.record.state == RunState::Cancelled {
                run.record.state = RunState::Running;
                changed = true;
            }
            if changed {
                ops.push(Op::Run(run.record.clone()));
            }
            let submitted = Submitted {
                run_id: run_id.to_string(),
                resumed: true,
                total_units: run.record.total_units,
            };
            self.store.apply(&ops)?;
            // A run cancelled after its last unit finished is finished now.
            self.queue_finishes(&mut st);
            submitted
        };
        self.commit(ops).await?;
        // A key given again may unblock generate leases.
        self.changes.send_modify(|v| *v += 1);
        Ok(Some(submitted))
    }

    /// Cancels a run: its leases are revoked (no attempt counted) and no more are granted.
    pub async fn cancel_run(&self, run_id: &str) -> Result<Ack, CoordinatorError> {
        let mut ops = Vec::new();
        {
            let mut st = self.lock();
            let Some(&seq) = st.run_by_id.get(run_id) else {
                return Ok(Ack::refused(format!("unknown run {run_id}")));
            };
            let run = st.runs.get_mut(&seq).expect("indexed run exists");
            if run.record.state == RunState::Completed {
                return Ok(Ack::refused(format!("run {run_id} is already completed")));
            }
            run.record.state = RunState::Cancelled;
            ops.push(Op::Run(run.record.clone()));
            let leases: Vec<u64> = st
                .leases
                .values()
                .filter(|l| l.record.run_seq == seq)
                .map(|l| l.record.lease_id)
                .collect();
            for id in leases {
                self.end_lease(
                    &mut st,
                    id,
                    LeaseEnd::Released(format!("run {run_id} cancelled")),
                    true,
                    &mut ops,
                )?;
            }
            self.store.apply(&ops)?;
        }
        self.commit(ops).await?;
        Ok(Ack::accepted())
    }
}
