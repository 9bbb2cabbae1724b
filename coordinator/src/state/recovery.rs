//! Recovery: the in-memory state rebuilt from the store when the coordinator opens.
//!
//! Runs, units, committed records, lease grants and the worker registry are reloaded. Leases
//! granted before the restart stay current with a fresh TTL, so a worker that reports a result
//! in flight is still accepted. The worker must register again (sessions are not known to the
//! new process) and names the leases it still holds: those stay current, so results answered
//! while the coordinator was down are accepted and never paid for twice; its other old leases
//! are void and their units are queued again at once, without counting an attempt (the
//! coordinator, not the unit, caused the loss). Leases nobody claims expire with their TTL and
//! count as an attempt.

use super::affinity::evaluate_image_key;
use super::memory::{pi, LeaseMem, RepoIndex, RunMem, State, TaskKeys, UnitMem, WorkerMem};
use super::CoordinatorConfig;
use crate::records::{Phase, UnitState};
use crate::store::{Op, RunInput, Store, StoreError};
use crate::CoordinatorError;
use std::collections::HashSet;
use std::path::Path;

/// The state the store at `path` describes at `now`, and the writes that make the store agree
/// with it (stale lease grants removed, units whose grant is gone queued again).
pub(super) fn recover(
    store: &Store,
    path: &Path,
    config: &CoordinatorConfig,
    now: u64,
) -> Result<(State, Vec<Op>), CoordinatorError> {
    let mut st = State::default();
    let mut ops = Vec::new();
    for w in store.workers()? {
        st.workers
            .insert(w.worker_id.clone(), WorkerMem::from_registry(w));
    }
    for record in store.runs()? {
        let run = recover_run(store, path, record, now)?;
        st.run_by_id
            .insert(run.record.run_id.clone(), run.record.seq);
        st.runs.insert(run.record.seq, run);
    }
    recover_leases(store, config, now, &mut st, &mut ops)?;
    requeue_orphans(store, &mut st, &mut ops)?;
    Ok((st, ops))
}

/// A run's memory: its repo index, every unit's state, its queues and counters.
fn recover_run(
    store: &Store,
    path: &Path,
    record: crate::records::RunRecord,
    now: u64,
) -> Result<RunMem, CoordinatorError> {
    let seq = record.seq;
    let spec = store.run_input(seq, RunInput::Spec)?.unwrap_or_default();
    let mut repos = RepoIndex::default();
    let mut images = RepoIndex::default();
    let mut tasks: u64 = 0;
    store.for_each_task(seq, |t| {
        repos.push(&t.repo);
        let task: Option<ase_common::dataset::Task> = serde_json::from_slice(&t.task_json).ok();
        images.push(
            &task
                .as_ref()
                .and_then(evaluate_image_key)
                .unwrap_or_default(),
        );
        tasks += 1;
        Ok(())
    })?;
    let expected = record.total_units / u64::from(record.header.rounds.max(1));
    if tasks != expected {
        // Written by an older version (whole dataset blob, no per-task records).
        return Err(CoordinatorError::Store(StoreError::Corrupt {
            path: path.to_path_buf(),
            tree: "tasks",
            key: record.run_id.clone(),
            message: format!(
                "{tasks} task records for a run of {expected} tasks: move the database aside \
                 and resubmit the run"
            ),
        }));
    }
    let keys = TaskKeys {
        repos: repos.finish(),
        images: images.finish(),
    };
    let mut run = RunMem::new(record, spec, keys, now);
    if let Some(pins) = store.run_input(seq, RunInput::ImagePins)? {
        run.image_pins = serde_json::from_slice(&pins).map_err(|e| {
            CoordinatorError::Store(StoreError::Corrupt {
                path: path.to_path_buf(),
                tree: "run_inputs",
                key: format!("{} image pins", run.record.run_id),
                message: e.to_string(),
            })
        })?;
    }
    // Units without a record never left the generate queue.
    run.units = vec![UnitMem::QUEUED; run.record.total_units as usize];
    let total = run.units.len();
    let mut out_of_range = None;
    store.for_each_unit(seq, |index, u| {
        let Some(m) = run.units.get_mut(index as usize) else {
            out_of_range.get_or_insert(index);
            return;
        };
        *m = UnitMem {
            state: u.state,
            generated: u.generated_by.is_some(),
        };
        run.retries += u.failures.iter().filter(|f| f.counted).count() as u64;
        run.model_calls += u64::from(u.model_calls);
    })?;
    if let Some(index) = out_of_range {
        return Err(CoordinatorError::Store(StoreError::Corrupt {
            path: path.to_path_buf(),
            tree: "units",
            key: format!("run {} unit {index}", run.record.run_id),
            message: format!("the run has only {total} units"),
        }));
    }
    for index in 0..total as u32 {
        let state = run.units[index as usize].state;
        if !state.is_finished() {
            run.unfinished += 1;
        }
        match state {
            UnitState::GenerateQueued => {
                let key = run.queue_key(Phase::Generate, index);
                run.queues[0].push(&key, index)
            }
            UnitState::EvaluateQueued => {
                let key = run.queue_key(Phase::Evaluate, index);
                run.queues[1].push(&key, index)
            }
            _ => {}
        }
    }
    Ok(run)
}

/// Lease grants whose unit is still leased by them stay current with a fresh TTL; the others
/// are deleted.
fn recover_leases(
    store: &Store,
    config: &CoordinatorConfig,
    now: u64,
    st: &mut State,
    ops: &mut Vec<Op>,
) -> Result<(), StoreError> {
    for mut lease in store.leases()? {
        let current = st.runs.get(&lease.run_seq).is_some_and(|r| {
            r.units
                .get(lease.unit_index as usize)
                .is_some_and(|u| u.state == UnitState::leased(lease.phase))
        }) && store
            .unit(lease.run_seq, lease.unit_index)?
            .is_some_and(|u| u.lease == Some(lease.lease_id));
        if !current {
            ops.push(Op::DeleteLease(lease.lease_id));
            continue;
        }
        // Heartbeat times were not kept: a fresh TTL from now.
        lease.expires_unix_ms = now + u64::from(config.lease_ttl_ms);
        let run = st.runs.get_mut(&lease.run_seq).expect("checked above");
        if lease.phase == Phase::Generate {
            run.inflight_generate += 1;
        }
        if let Some(w) = st.workers.get_mut(&lease.worker_id) {
            w.leases.insert(lease.lease_id);
            w.running[pi(lease.phase)] += 1;
        }
        st.leases.insert(
            lease.lease_id,
            LeaseMem {
                record: lease,
                recovered: true,
                step: None,
            },
        );
    }
    Ok(())
}

/// A unit marked leased whose grant is gone goes back to its queue.
fn requeue_orphans(store: &Store, st: &mut State, ops: &mut Vec<Op>) -> Result<(), StoreError> {
    let held: HashSet<(u64, u32)> = st
        .leases
        .values()
        .map(|l| (l.record.run_seq, l.record.unit_index))
        .collect();
    for (seq, run) in st.runs.iter_mut() {
        for i in 0..run.units.len() as u32 {
            let state = run.units[i as usize].state;
            let leased = matches!(state, UnitState::GenerateLeased | UnitState::EvaluateLeased);
            if leased && !held.contains(&(*seq, i)) {
                let phase = state.phase().expect("leased is a phase");
                let repo = run.queue_key(phase, i);
                // A leased unit was written when it was leased.
                let Some(mut u) = store.unit(*seq, i)? else {
                    continue;
                };
                u.state = UnitState::queued(phase);
                u.lease = None;
                run.units[i as usize].state = u.state;
                run.queues[pi(phase)].push_front(&repo, i);
                ops.push(Op::Unit {
                    seq: *seq,
                    index: i,
                    record: u,
                });
            }
        }
    }
    Ok(())
}
