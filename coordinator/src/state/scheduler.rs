//! The grant policy: which queued units a worker gets, within its free slots and every run's
//! limits, from queues per (run, phase) split by repo for affinity.
//!
//! Evaluations go before generations (they finish units that already cost a model call); runs
//! are served in submission order. Generations respect the run's limits: in-flight model
//! calls, requests per minute, a key this process must hold, and a pause after provider
//! failures (`provider_pause`). Within a queue, a worker
//! first gets units of repos it caches (no clone, warm mirror); then units of repos no live
//! worker caches (someone has to clone them, and nobody is better placed); then anything, so no
//! worker idles while work is queued and no repo starves. v2 evaluations are queued by their
//! task's image instead (`affinity`): the holder of an image gets its evaluations, and images
//! nobody holds go to whoever asks first, so a campaign's pulls spread over the workers.

use super::affinity::{held_key, image_key, may_take};
use super::memory::{pi, LeaseMem};
use super::pause::Grant;
use super::Coordinator;
use crate::messages::{LeaseGrant, LeaseRef, LeaseReply, LeaseWork};
use crate::records::{Fence, LeaseRecord, Phase, RunState, UnitState};
use crate::store::Op;
use crate::CoordinatorError;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Queued unit indexes of one phase of one run, by repo, FIFO within a repo.
#[derive(Debug, Default, Clone)]
pub struct RepoQueues {
    by_repo: BTreeMap<String, VecDeque<u32>>,
    len: usize,
}

impl RepoQueues {
    pub fn push(&mut self, repo: &str, unit: u32) {
        self.by_repo
            .entry(repo.to_string())
            .or_default()
            .push_back(unit);
        self.len += 1;
    }

    /// Puts a unit back at the head of its repo's queue (a retry goes first).
    pub fn push_front(&mut self, repo: &str, unit: u32) {
        self.by_repo
            .entry(repo.to_string())
            .or_default()
            .push_front(unit);
        self.len += 1;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pop_repo(&mut self, repo: &str) -> Option<u32> {
        let q = self.by_repo.get_mut(repo)?;
        let unit = q.pop_front()?;
        if q.is_empty() {
            self.by_repo.remove(repo);
        }
        self.len -= 1;
        Some(unit)
    }

    /// The next unit for a worker caching `cached`, given the repos some live worker caches;
    /// units that need a privileged container only when the worker may start one.
    pub fn pop_for(
        &mut self,
        cached: &HashSet<String>,
        cached_by_anyone: &HashSet<String>,
        privileged_ok: bool,
    ) -> Option<(String, u32)> {
        let eligible = || {
            self.by_repo
                .keys()
                .filter(move |k| may_take(k, privileged_ok))
        };
        let pick = eligible()
            .find(|r| cached.contains(held_key(r)))
            .or_else(|| eligible().find(|r| !cached_by_anyone.contains(held_key(r))))
            .or_else(|| eligible().next())
            .cloned()?;
        let unit = self.pop_repo(&pick)?;
        Some((pick, unit))
    }
}

impl Coordinator {
    /// The locked part of a lease request: expired leases swept, then as many units granted
    /// as the worker's free slots and every run's limits allow. `Some` reply when the worker
    /// gets no lease at all (it must register again, or drain).
    #[allow(clippy::type_complexity)]
    pub(super) fn grant_locked(
        &self,
        req: &LeaseWork,
        now: u64,
        ops: &mut Vec<Op>,
        grants: &mut Vec<LeaseGrant>,
        grant_units: &mut Vec<(u64, u32, u32)>,
    ) -> Result<Option<LeaseReply>, CoordinatorError> {
        let mut early: Option<LeaseReply> = None;
        let _writer = self.store.writer();
        let mut st = self.lock();
        self.sweep_locked(&mut st, now, ops)?;
        if !Self::session_ok(&st, &req.worker_id, req.session) {
            early = Some(LeaseReply {
                reregister: true,
                ..LeaseReply::default()
            });
        } else if st.workers[&req.worker_id].record.draining {
            early = Some(LeaseReply {
                drain: true,
                ..LeaseReply::default()
            });
        }
        if early.is_some() {
            self.store.apply(ops)?;
            self.queue_finishes(&mut st);
            return Ok(early);
        }
        let w = &st.workers[&req.worker_id];
        let mut free = [
            req.max_generate
                .min(w.caps.generate_slots.saturating_sub(w.running[0])),
            req.max_evaluate
                .min(w.caps.eval_slots.saturating_sub(w.running[1])),
        ];
        // Repos a worker caches and task images it holds, in one namespace (`affinity`). A repo
        // it is generating with (so cloning, or about to) and an image it is pulling or
        // evaluating with count as held: the next worker to ask is given another repo or
        // image, and a campaign's clones and pulls spread (a worker that generates a v2 unit
        // pulls its image meanwhile, so its generations placed apart spread its pulls too).
        let mut leased_keys: HashMap<&str, Vec<String>> = HashMap::new();
        for l in st.leases.values() {
            if let Some(run) = st.runs.get(&l.record.run_seq) {
                let key = run.queue_key(l.record.phase, l.record.unit_index);
                leased_keys
                    .entry(l.record.worker_id.as_str())
                    .or_default()
                    .push(held_key(&key).to_string());
            }
        }
        // Placement by image off: no worker holds an image key, so v2 evaluations go in queue
        // order to whoever asks.
        let by_image = self.config.image_affinity;
        let holds = |o: &super::memory::WorkerMem| -> Vec<String> {
            o.cached
                .iter()
                .cloned()
                .chain(
                    o.caps
                        .task_images
                        .iter()
                        .filter(|_| by_image)
                        .map(|i| image_key(i)),
                )
                // Pulls under way, as its last heartbeat listed them: the image will be there
                // by the time an evaluation would pull it again elsewhere.
                .chain(
                    o.images
                        .iter()
                        .flat_map(|s| s.pulls.iter())
                        .filter(|_| by_image)
                        .map(|p| image_key(&p.image)),
                )
                .chain(
                    leased_keys
                        .get(o.record.worker_id.as_str())
                        .into_iter()
                        .flatten()
                        .filter(|k| by_image || !k.starts_with("image:"))
                        .cloned(),
                )
                .collect()
        };
        let cached: HashSet<String> = holds(w).into_iter().collect();
        let privileged_ok = !w.caps.unprivileged;
        let cached_by_anyone: HashSet<String> = st
            .workers
            .values()
            .filter(|o| {
                o.live_session
                    && o.last_heartbeat_ms.is_some_and(|t| {
                        now.saturating_sub(t) <= u64::from(self.config.lease_ttl_ms)
                    })
            })
            .flat_map(holds)
            .collect();
        let seqs: Vec<u64> = st.runs.keys().copied().collect();
        // Evaluate first: it finishes units that already cost a model call.
        for phase in [Phase::Evaluate, Phase::Generate] {
            for &seq in &seqs {
                while free[pi(phase)] > 0 {
                    let run = st.runs.get_mut(&seq).expect("listed");
                    if run.record.state != RunState::Running {
                        break;
                    }
                    let mut pause_grant = Grant::Any;
                    if phase == Phase::Evaluate {
                        // The task images' registry failed: evaluations wait (generations
                        // go on, their answers are kept).
                        pause_grant = run
                            .registry_pause
                            .may_grant(&self.config.registry_pause, now);
                        if pause_grant == Grant::No {
                            break;
                        }
                    }
                    if phase == Phase::Generate {
                        let limit = run.record.header.limits.max_inflight_model_calls;
                        if limit > 0 && run.inflight_generate >= limit {
                            break;
                        }
                        if run.bucket.available(now) == 0 {
                            break;
                        }
                        if run.waiting_for_key() {
                            break;
                        }
                        // Paused after provider failures: other runs, and this run's
                        // evaluations, go on.
                        pause_grant = run.pause.may_grant(&self.config.provider_pause, now);
                        if pause_grant == Grant::No {
                            break;
                        }
                    }
                    let Some((_, index)) =
                        run.queues[pi(phase)].pop_for(&cached, &cached_by_anyone, privileged_ok)
                    else {
                        break;
                    };
                    if run.units[index as usize].state != UnitState::queued(phase) {
                        continue;
                    }
                    if phase == Phase::Generate {
                        run.bucket.try_take(now);
                        run.inflight_generate += 1;
                    }
                    let lease_id = self.store.next_id()?;
                    match phase {
                        Phase::Generate => run.pause.granted(pause_grant, lease_id),
                        Phase::Evaluate => run.registry_pause.granted(pause_grant, lease_id),
                    }
                    let rounds = run.rounds();
                    let mut unit = self.unit_record(seq, index, rounds)?;
                    unit.attempt += 1;
                    unit.state = UnitState::leased(phase);
                    unit.lease = Some(lease_id);
                    run.units[index as usize].state = unit.state;
                    let deadline_ms = match phase {
                        // Never shorter than the run's model client may wait for one
                        // answer: a slow answer must not be revoked and paid again.
                        Phase::Generate => self
                            .config
                            .generate_deadline_ms
                            .max(run.generate_deadline_ms.unwrap_or(0)),
                        Phase::Evaluate => self.config.evaluate_deadline_ms,
                    };
                    let record = LeaseRecord {
                        lease_id,
                        run_seq: seq,
                        unit_index: index,
                        phase,
                        worker_id: req.worker_id.clone(),
                        fence: Fence {
                            session: req.session,
                            attempt: unit.attempt,
                        },
                        granted_unix_ms: now,
                        expires_unix_ms: now + u64::from(self.config.lease_ttl_ms),
                        deadline_unix_ms: now + deadline_ms,
                    };
                    let task_index = run.task_of(index);
                    grants.push(LeaseGrant {
                        lease: LeaseRef {
                            lease_id,
                            fence: record.fence,
                        },
                        run_id: run.record.run_id.clone(),
                        instance_id: unit.unit.instance_id.clone(),
                        round: unit.unit.round,
                        phase,
                        expires_unix_ms: record.expires_unix_ms,
                        // Filled from the store once the lock is released.
                        task_json: Arc::default(),
                        context_json: Arc::default(),
                        spec_digest: run.spec_digest.clone(),
                        unit_predictions_jsonl: Vec::new(),
                        generation_json: None,
                        api_key: run.api_key.clone(),
                        seed_repo: String::new(),
                        pinned_image: match phase {
                            Phase::Evaluate => run.image_pin(task_index),
                            Phase::Generate => None,
                        },
                    });
                    ops.push(Op::Unit {
                        seq,
                        index,
                        record: unit,
                    });
                    ops.push(Op::Lease(record.clone()));
                    grant_units.push((seq, index, task_index));
                    free[pi(phase)] -= 1;
                    let w = st.workers.get_mut(&req.worker_id).expect("session checked");
                    w.leases.insert(lease_id);
                    w.running[pi(phase)] += 1;
                    st.leases.insert(
                        lease_id,
                        LeaseMem {
                            record,
                            recovered: false,
                            step: None,
                        },
                    );
                }
            }
        }
        self.store.apply(ops)?;
        self.queue_finishes(&mut st);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefers_cached_then_uncached_by_anyone_then_anything() {
        let mut q = RepoQueues::default();
        q.push("a/a", 0);
        q.push("b/b", 1);
        q.push("c/c", 2);
        // Worker caches c; someone caches a.
        let anyone = set(&["a/a", "c/c"]);
        assert_eq!(
            q.pop_for(&set(&["c/c"]), &anyone, true),
            Some(("c/c".into(), 2))
        );
        assert_eq!(
            q.pop_for(&set(&["c/c"]), &anyone, true),
            Some(("b/b".into(), 1))
        );
        assert_eq!(
            q.pop_for(&set(&["c/c"]), &anyone, true),
            Some(("a/a".into(), 0))
        );
        assert_eq!(q.pop_for(&set(&["c/c"]), &anyone, true), None);
        assert!(q.is_empty());
    }

    #[test]
    fn privileged_units_go_only_to_workers_that_may_start_them() {
        let mut q = RepoQueues::default();
        let privileged = format!("image:r/a{}", crate::state::affinity::PRIVILEGED);
        q.push(&privileged, 0);
        q.push("image:r/b", 1);
        // The holder of r/a that may not start privileged containers is given r/b.
        let holder = set(&["image:r/a"]);
        assert_eq!(
            q.pop_for(&holder, &holder, false),
            Some(("image:r/b".into(), 1))
        );
        assert_eq!(q.pop_for(&holder, &holder, false), None);
        // One that may is given it as its holder.
        assert_eq!(q.pop_for(&holder, &holder, true), Some((privileged, 0)));
        assert!(q.is_empty());
    }

    #[test]
    fn retries_go_first() {
        let mut q = RepoQueues::default();
        q.push("a/a", 0);
        q.push_front("a/a", 7);
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.pop_for(&set(&[]), &set(&[]), true),
            Some(("a/a".into(), 7))
        );
    }
}
