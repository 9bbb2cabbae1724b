//! Read-only views of the state: a run's progress, the runs, a run's unit records, the
//! workers, and a completed run's files.

use super::memory::{LeaseMem, RunMem};
use super::Coordinator;
use crate::messages::{
    FetchedReport, PhaseCounts, ReportFile, RunProgress, WorkerInfo, NO_HEARTBEAT,
};
use crate::outputs::OutputError;
use crate::records::{RunState, UnitRecord, UnitState};
use crate::CoordinatorError;
use ase_proto::limits::MAX_MESSAGE_BYTES;
use std::collections::{BTreeMap, HashMap};

/// Room left in a reply for its framing and the files' names.
const REPLY_OVERHEAD: u64 = 1 << 20;

impl Coordinator {
    pub fn progress(&self, run_id: &str) -> Result<RunProgress, CoordinatorError> {
        let st = self.lock();
        let seq = st.seq_of(run_id)?;
        Ok(self.progress_of(&st.runs[&seq], &st.leases))
    }

    pub fn list_runs(&self) -> Vec<RunProgress> {
        let st = self.lock();
        st.runs
            .values()
            .map(|r| self.progress_of(r, &st.leases))
            .collect()
    }

    fn progress_of(&self, run: &RunMem, leases: &HashMap<u64, LeaseMem>) -> RunProgress {
        let mut g = PhaseCounts::default();
        let mut e = PhaseCounts::default();
        for u in &run.units {
            match u.state {
                UnitState::GenerateQueued => g.queued += 1,
                UnitState::GenerateLeased => g.leased += 1,
                UnitState::EvaluateQueued => {
                    g.done += 1;
                    e.queued += 1
                }
                UnitState::EvaluateLeased => {
                    g.done += 1;
                    e.leased += 1
                }
                UnitState::Done => {
                    g.done += 1;
                    e.done += 1
                }
                UnitState::Failed if u.generated => {
                    g.done += 1;
                    e.failed += 1
                }
                UnitState::Failed => g.failed += 1,
            }
        }
        let finished = e.done + e.failed + g.failed;
        let remaining = run.record.total_units.saturating_sub(finished);
        let now = self.clock.now_ms();
        let elapsed_s = now.saturating_sub(run.loaded_ms) as f64 / 1000.0;
        // Rates since this process loaded the run: units through the phase per second.
        let eta = |remaining: u64, through: u64| {
            if remaining == 0 {
                0.0
            } else if through == 0 || elapsed_s <= 0.0 {
                -1.0
            } else {
                remaining as f64 / (through as f64 / elapsed_s)
            }
        };
        let eta_seconds = eta(remaining, run.finished_since_load);
        let generate_eta_seconds = eta(g.queued + g.leased, run.generated_since_load);
        let mut leased_by_step = BTreeMap::new();
        for l in leases
            .values()
            .filter(|l| l.record.run_seq == run.record.seq)
        {
            let step = match &l.step {
                Some(step) => step.clone(),
                None => "leased".to_string(),
            };
            *leased_by_step
                .entry(format!("{}: {step}", l.record.phase.as_str()))
                .or_insert(0) += 1;
        }
        // All units finished but the run not completed: the finisher is making its outputs,
        // or tries again after a failure (a full disk).
        let policy = &self.config.provider_pause;
        let running = run.record.state == RunState::Running;
        let state = if run.finishing || (running && run.all_finished()) {
            "scoring".to_string()
        } else if running && run.waiting_for_key() && g.queued > 0 {
            // Visible rather than failing units: `ase submit` of the same run with its key
            // (or `ase resume`) lets the generations go on.
            "waiting_for_key".to_string()
        } else if let Some(kind) = run
            .pause
            .visible(policy)
            .filter(|_| running && g.queued > 0)
        {
            // Rate limited or down: resumes by itself; auth, quota: `ase submit` with the key.
            format!("paused: {}", kind.as_str())
        } else if let Some(kind) = run
            .registry_pause
            .visible(&self.config.registry_pause)
            .filter(|_| running && e.queued > 0)
        {
            // Evaluations wait for the task images' registry; generations go on.
            format!("paused: {}", kind.as_str())
        } else {
            run.record.state.as_str().to_string()
        };
        RunProgress {
            run_id: run.record.run_id.clone(),
            state,
            total_units: run.record.total_units,
            generate: g,
            evaluate: e,
            eta_seconds,
            retries: run.retries,
            model_calls: run.model_calls,
            model: run.record.header.model_name.clone(),
            batch: run.record.header.batch.clone(),
            generate_eta_seconds,
            evaluate_eta_seconds: eta_seconds,
            leased_by_step,
            pause_remaining_ms: run.pause.remaining_ms(policy, now).max(
                run.registry_pause
                    .remaining_ms(&self.config.registry_pause, now),
            ),
            provider_failures: run.pause.total(),
        }
    }

    /// The unit records of a run (for `ase status` details and tests).
    pub fn units(&self, run_id: &str) -> Result<Vec<UnitRecord>, CoordinatorError> {
        let (seq, rounds) = {
            let st = self.lock();
            let seq = st.seq_of(run_id)?;
            (seq, st.runs[&seq].rounds())
        };
        Ok(self.all_unit_records(seq, rounds)?)
    }

    pub fn list_workers(&self) -> Vec<WorkerInfo> {
        let now = self.clock.now_ms();
        let st = self.lock();
        st.workers
            .values()
            .map(|w| {
                // A worker known from the store but not heard from since this process started.
                let ago = w
                    .last_heartbeat_ms
                    .map_or(NO_HEARTBEAT, |t| now.saturating_sub(t));
                let mut cached: Vec<String> = w.cached.iter().cloned().collect();
                cached.sort();
                WorkerInfo {
                    worker_id: w.record.worker_id.clone(),
                    name: w.record.name.clone(),
                    alive: w.live_session && ago <= u64::from(self.config.lease_ttl_ms),
                    draining: w.record.draining,
                    eval_slots: w.caps.eval_slots,
                    generate_slots: w.caps.generate_slots,
                    running: w.running[0] + w.running[1],
                    cached_repos: cached,
                    last_heartbeat_ms_ago: ago,
                    session: w.record.last_session,
                    completed: w.completed,
                    running_generate: w.running[0],
                    running_evaluate: w.running[1],
                    task_images: {
                        let mut images = w.caps.task_images.clone();
                        images.sort();
                        images
                    },
                    images: w.images.clone(),
                }
            })
            .collect()
    }

    /// The run's stored files; `complete` once the run is.
    pub fn fetch_report(&self, run_id: &str) -> Result<FetchedReport, CoordinatorError> {
        self.fetch_report_within(run_id, MAX_MESSAGE_BYTES as u64 - REPLY_OVERHEAD)
    }

    /// [`Coordinator::fetch_report`] refusing, before reading them, files above `limit` bytes
    /// in total: a reply that large could not be sent.
    pub fn fetch_report_within(
        &self,
        run_id: &str,
        limit: u64,
    ) -> Result<FetchedReport, CoordinatorError> {
        let (seq, complete) = {
            let st = self.lock();
            let seq = st.seq_of(run_id)?;
            (seq, st.runs[&seq].record.state == RunState::Completed)
        };
        let bytes = self.outputs.total_bytes(seq).map_err(OutputError::from)?;
        if bytes > limit {
            return Err(CoordinatorError::ReportTooLarge {
                run_id: run_id.to_string(),
                bytes,
                limit,
                path: self.outputs.dir_of(seq),
            });
        }
        // Runs completed by versions before the output store kept their files in sled.
        let files = match self.outputs.read(seq).map_err(OutputError::from)? {
            Some(files) => files,
            None => self.store.outputs(seq)?,
        };
        let files = files
            .into_iter()
            .map(|(name, content)| ReportFile { name, content })
            .collect();
        Ok(FetchedReport {
            run_id: run_id.to_string(),
            complete,
            files,
        })
    }
}
