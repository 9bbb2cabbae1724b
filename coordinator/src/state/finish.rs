//! The finish of a run: once every unit is done or failed, the run is scored, every report
//! file written, and the run recorded `Completed`.
//!
//! One background thread, the finisher, does this work, fed by a channel. The calls that
//! report a run's last unit (a result, a failure, a lease ended by the sweep that heartbeats and
//! lease requests run, a re-registration, a resume) only queue the run (`queue_finishes`): in
//! the same locked step that applies their transition, so nothing a request does, nor its
//! cancellation, can lose the finish or leave a run marked as being finished. Scoring 100,000
//! units takes seconds; no request waits for it.
//!
//! - A run whose files cannot be written (a full or failing disk) stays in `scoring`; the
//!   sweep queues it again once its retry time comes: [`FINISH_RETRY_MS`] after the first
//!   failure, doubling with each failure in a row up to five minutes. An error is logged when
//!   it first appears, not at every attempt.
//! - A panic while scoring is such a failure too: the thread goes on.
//! - At shutdown the server waits for the finisher ([`Coordinator::finish_pending`]); a run
//!   whose finish did not happen (a crash) is queued again when the store is opened.
//!
//! The thread holds the coordinator weakly and only while it finishes a run, so dropping the
//! last handle of an idle coordinator closes its store (and the channel, which ends the thread).

use super::memory::{FinishFailure, State};
use super::Coordinator;
use crate::outputs::{
    self, EvaluationFacts, GenerationFacts, OutputError, RunOutputInput, TaskFacts,
};
use crate::records::RunState;
use crate::store::{Op, StoreError};
use crate::CoordinatorError;
use ase_common::dataset::Task;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Weak};
use tokio::sync::watch;

/// The wait before a run whose finish failed is tried again, after its first failure.
pub const FINISH_RETRY_MS: u64 = 5_000;
/// The longest wait between attempts, however many failed in a row.
const MAX_FINISH_RETRY_MS: u64 = 5 * 60_000;

/// The wait after `failures` failed attempts in a row (at least 1).
fn retry_delay_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    FINISH_RETRY_MS
        .saturating_mul(1 << doublings)
        .min(MAX_FINISH_RETRY_MS)
}

/// The coordinator's side of the finisher: the channel to its thread, and what it has done.
pub(super) struct Finisher {
    jobs: mpsc::Sender<u64>,
    /// Runs sent to the thread so far.
    sent: AtomicU64,
    /// Runs the thread is done with (finished, or failed), counted once it released the
    /// coordinator.
    done: watch::Receiver<u64>,
    /// Failed attempts since the store was opened.
    failures: AtomicU64,
    /// The thread was found gone (logged once).
    stopped: AtomicBool,
}

/// The thread's side of the channel.
pub(super) struct Jobs {
    runs: mpsc::Receiver<u64>,
    done: watch::Sender<u64>,
}

impl Finisher {
    pub(super) fn new() -> (Finisher, Jobs) {
        let (jobs, runs) = mpsc::channel();
        let (done_tx, done) = watch::channel(0);
        let finisher = Finisher {
            jobs,
            sent: AtomicU64::new(0),
            done,
            failures: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        };
        (
            finisher,
            Jobs {
                runs,
                done: done_tx,
            },
        )
    }
}

/// Starts the finisher thread of `coordinator`.
pub(super) fn spawn(coordinator: Weak<Coordinator>, jobs: Jobs) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ase-finisher".into())
        .spawn(move || finisher_loop(coordinator, jobs))
        .map(drop)
}

fn finisher_loop(coordinator: Weak<Coordinator>, jobs: Jobs) {
    while let Ok(seq) = jobs.runs.recv() {
        let Some(c) = coordinator.upgrade() else {
            return;
        };
        c.finish_queued(seq);
        // Released before it is counted: whoever waited for it may then drop the coordinator
        // and open its store again.
        drop(c);
        jobs.done.send_modify(|n| *n += 1);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Coordinator {
    /// Sends to the finisher every running run whose units are all finished, that it does not
    /// hold yet and whose retry time (after a failure) has come. Called with the state lock
    /// held, after the transition that may have finished a run's last unit is applied to the
    /// store: the finisher reads the store.
    pub(super) fn queue_finishes(&self, st: &mut State) {
        let now = self.clock.now_ms();
        for run in st.runs.values_mut() {
            let due = run
                .finish_failure
                .as_ref()
                .is_none_or(|f| now >= f.retry_at_ms);
            if run.record.state != RunState::Running || run.finishing || !run.all_finished() || !due
            {
                continue;
            }
            self.finisher.sent.fetch_add(1, Ordering::SeqCst);
            if self.finisher.jobs.send(run.record.seq).is_ok() {
                run.finishing = true;
                continue;
            }
            self.finisher.sent.fetch_sub(1, Ordering::SeqCst);
            if !self.finisher.stopped.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    run = %run.record.run_id,
                    "the finisher thread is gone: runs are finished when the coordinator restarts"
                );
            }
        }
    }

    /// Waits until the finisher is done with every run queued so far: each is completed, or
    /// its attempt failed and it waits for its retry. Tests call it where they need a run
    /// completed; the server calls it at shutdown so that no finish is cut short.
    pub async fn finish_pending(&self) {
        let target = self.finisher.sent.load(Ordering::SeqCst);
        let mut done = self.finisher.done.clone();
        // An error means the thread is gone: nothing more will be done.
        let _ = done.wait_for(|n| *n >= target).await;
    }

    /// Attempts to finish a run that failed since the store was opened (its files could not be
    /// written; it stays in `scoring` and is tried again).
    pub fn finish_failures(&self) -> u64 {
        self.finisher.failures.load(Ordering::Relaxed)
    }

    /// The finisher's work on one queued run: finish it, and record the outcome.
    fn finish_queued(&self, seq: u64) {
        let started = std::time::Instant::now();
        let attempt = panic::catch_unwind(AssertUnwindSafe(|| self.finish_run(seq)));
        let failure = match attempt {
            Ok(Ok(completed)) => {
                self.mark_completed(seq, completed, started.elapsed());
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("scoring panicked: {}", panic_message(&*panic)),
        };
        self.finisher.failures.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let Some(run) = st.runs.get_mut(&seq) else {
            return;
        };
        run.finishing = false;
        let previous = run.finish_failure.take();
        let attempts = previous.as_ref().map_or(0, |f| f.attempts) + 1;
        let wait_ms = retry_delay_ms(attempts);
        if previous.is_some_and(|f| f.error == failure) {
            tracing::debug!(run = %run.record.run_id, attempts, "finishing the run failed again");
        } else {
            tracing::error!(
                run = %run.record.run_id,
                error = %failure,
                attempts,
                retry_in_ms = wait_ms,
                "finishing the run failed: it stays in scoring and is tried again"
            );
        }
        run.finish_failure = Some(FinishFailure {
            attempts,
            retry_at_ms: now + wait_ms,
            error: failure,
        });
    }

    /// Scores the run, writes its files and commits it `Completed`; `None` when it is no
    /// longer to be finished (cancelled since it was queued), else the completion time.
    fn finish_run(&self, seq: u64) -> Result<Option<u64>, CoordinatorError> {
        let running = {
            let st = self.lock();
            st.runs
                .get(&seq)
                .is_some_and(|r| r.record.state == RunState::Running)
        };
        if !running {
            return Ok(None);
        }
        let ops = self.write_outputs(seq)?;
        let completed = match ops.first() {
            Some(Op::Run(r)) => r.completed_unix_ms,
            _ => None,
        };
        self.store.apply(&ops)?;
        self.store.durable_blocking()?;
        Ok(Some(completed.unwrap_or_else(|| self.clock.now_ms())))
    }

    /// Memory follows the store once the finish is durable; `None`: the run was not finished.
    fn mark_completed(&self, seq: u64, completed: Option<u64>, took: std::time::Duration) {
        {
            let mut st = self.lock();
            let Some(run) = st.runs.get_mut(&seq) else {
                return;
            };
            run.finishing = false;
            let Some(at) = completed else {
                return;
            };
            run.record.state = RunState::Completed;
            run.record.completed_unix_ms = Some(at);
            let failed_attempts = run.finish_failure.take().map_or(0, |f| f.attempts);
            tracing::info!(
                run = %run.record.run_id,
                ms = took.as_millis() as u64,
                failed_attempts,
                "run scored and its files written"
            );
        }
        self.changes.send_modify(|v| *v += 1);
    }

    /// Scores the run and writes its files (durable, all visible at once) into the output
    /// store; returns the write that turns the run record `Completed`, to be committed after.
    /// An error that can never succeed (a scoring error, a file name the file system refuses)
    /// is kept as the run's `error.txt`, its only file, rather than leaving the run unfinished
    /// forever; a disk error fails the finish, which is tried again.
    fn write_outputs(&self, seq: u64) -> Result<Vec<Op>, CoordinatorError> {
        let mut record = {
            let st = self.lock();
            st.runs[&seq].record.clone()
        };
        // Only what scoring needs is kept of each task and record, one at a time.
        let mut tasks = Vec::new();
        self.store.for_each_task(seq, |t| {
            // Validated when submitted; unreadable now means the store is damaged.
            let task: Task =
                serde_json::from_slice(&t.task_json).map_err(|e| StoreError::Corrupt {
                    path: self.store.path().to_path_buf(),
                    tree: "tasks",
                    key: t.instance_id.clone(),
                    message: e.to_string(),
                })?;
            tasks.push(TaskFacts::of(&task));
            Ok(())
        })?;
        let units = self.all_unit_records(seq, record.header.rounds.max(1))?;
        // Begun before the records are read: the agents' transcripts are written as they come.
        let mut writer = self.outputs.begin(seq).map_err(OutputError::from)?;
        let mut generations = BTreeMap::new();
        let mut evaluations = BTreeMap::new();
        // A task's baseline findings are the same in every unit's record: kept once per task
        // (from its first unit, the one the report takes them from), not once per round.
        let mut baseline_kept = std::collections::HashSet::new();
        for i in 0..units.len() as u32 {
            if let Some(bytes) = self.store.generation(seq, i)? {
                if let Ok(g) = serde_json::from_slice::<GenerationRecord>(&bytes) {
                    let mut facts = GenerationFacts::from(&g);
                    outputs::write_transcript(&mut writer, &g, &mut facts)?;
                    generations.insert(i, facts);
                }
            }
            if let Some(bytes) = self.store.evaluation(seq, i)? {
                if let Ok(e) = serde_json::from_slice::<EvaluationRecord>(&bytes) {
                    let mut facts = EvaluationFacts::from(&e);
                    if let EvaluationFacts::Static {
                        detail: Some(d), ..
                    } = &mut facts
                    {
                        if !baseline_kept.insert(units[i as usize].task_index) {
                            d.baseline_findings = Vec::new();
                        }
                    }
                    evaluations.insert(i, facts);
                }
            }
        }
        let input = RunOutputInput {
            run_id: &record.run_id,
            header: &record.header,
            dataset_name: &record.dataset_name,
            dataset_sha256: &record.dataset_sha256,
            context_sha256: record.context_sha256.as_deref(),
            tasks: &tasks,
            units: &units,
            generations: &generations,
            evaluations: &evaluations,
            created_unix_ms: Some(record.created_unix_ms),
        };
        match outputs::build_outputs(&input, &mut writer) {
            Ok(_) => {}
            Err(e) if !e.is_permanent() => return Err(e.into()),
            Err(e) => {
                tracing::error!(run = %record.run_id, error = %e, "run outputs");
                writer.clear().map_err(OutputError::from)?;
                let text = format!("{e}\n");
                writer
                    .file(outputs::ERROR_FILE, &mut |w| w.write_all(text.as_bytes()))
                    .map_err(OutputError::from)?;
            }
        }
        drop((tasks, units, generations, evaluations));
        writer.commit().map_err(OutputError::from)?;
        if let Some(dir) = &self.config.output_dir {
            let dir = dir.join(record.run_id.replace('/', "_"));
            if let Err(e) = self.outputs.copy_to(seq, &dir) {
                tracing::error!(run = %record.run_id, error = %e, "copying run outputs");
            }
        }
        record.state = RunState::Completed;
        record.completed_unix_ms = Some(self.clock.now_ms());
        Ok(vec![Op::Run(record)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_after_each_failure_up_to_a_bound() {
        assert_eq!(retry_delay_ms(1), FINISH_RETRY_MS);
        assert_eq!(retry_delay_ms(2), 2 * FINISH_RETRY_MS);
        assert_eq!(retry_delay_ms(3), 4 * FINISH_RETRY_MS);
        assert_eq!(retry_delay_ms(7), MAX_FINISH_RETRY_MS);
        assert_eq!(retry_delay_ms(u32::MAX), MAX_FINISH_RETRY_MS);
    }

    #[test]
    fn a_panic_says_what_it_was() {
        let p = panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 1");
        let p = panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
    }
}
