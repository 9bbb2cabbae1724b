//! Workers: a (re)registration opens a new session, keeps the old sessions' leases the worker
//! still holds and ends the others, and is refused while another session of the name is live;
//! a heartbeat proves liveness and renews leases; a drain lets leased units finish and grants
//! no more.

use super::lease_end::{check_fence, expiry, Expiry, LeaseEnd};
use super::memory::{pi, State, WorkerMem};
use super::Coordinator;
use crate::messages::{Ack, Capabilities, Heartbeat, HeartbeatReply, LeaseRef, Registration};
use crate::records::WorkerRecord;
use crate::store::Op;
use crate::CoordinatorError;
use std::collections::BTreeSet;

/// Bytes of a worker name.
pub const MAX_WORKER_NAME: usize = 256;

impl Coordinator {
    /// A worker joins with a new session and holds no lease of an earlier one (see
    /// [`Coordinator::register_holding`]).
    pub async fn register(
        &self,
        name: &str,
        caps: Capabilities,
    ) -> Result<Registration, CoordinatorError> {
        self.register_holding(name, caps, &[]).await
    }

    /// A worker (re)joins with a new session.
    ///
    /// A name whose session is live (heard from within the lease TTL) is refused
    /// ([`CoordinatorError::NameInUse`]): a second process with the same name would otherwise
    /// supersede the first, which supersedes it back at its next call, in a loop. A worker that
    /// died frees its name when its heartbeats stop; after a coordinator restart no session is
    /// live in this process.
    ///
    /// `held`: leases of earlier sessions whose units this process is still working on or
    /// reporting. They stay current with a fresh TTL, so their results are accepted: nobody
    /// else was given their units, and refusing them would pay for the same model call
    /// twice. The earlier sessions' other leases end at once (without spending an attempt when
    /// they were granted before a coordinator restart: the restart lost them, not the unit).
    pub async fn register_holding(
        &self,
        name: &str,
        caps: Capabilities,
        held: &[LeaseRef],
    ) -> Result<Registration, CoordinatorError> {
        if name.is_empty() || name.len() > MAX_WORKER_NAME || name.chars().any(char::is_control) {
            return Err(CoordinatorError::WorkerName(format!(
                "{name:?} must be 1..={MAX_WORKER_NAME} bytes without control characters"
            )));
        }
        let now = self.clock.now_ms();
        let ttl = self.config.lease_ttl_ms;
        let mut ops = Vec::new();
        let registration = {
            let _writer = self.store.writer();
            let mut st = self.lock();
            if let Some(w) = st.workers.get(name) {
                if let Some(heard_ms_ago) = live_session_heard(w, now, ttl) {
                    let refusal = CoordinatorError::NameInUse {
                        name: name.to_string(),
                        session: w.record.last_session,
                        heard_ms_ago,
                        ttl_ms: ttl,
                    };
                    tracing::warn!(worker = %name, error = %refusal, "registration refused");
                    return Err(refusal);
                }
            }
            let mut record = st
                .workers
                .get(name)
                .map(|w| w.record.clone())
                .unwrap_or_else(|| WorkerRecord {
                    name: name.to_string(),
                    worker_id: name.to_string(),
                    last_session: 0,
                    draining: false,
                });
            let old_session = record.last_session;
            record.last_session += 1;
            // A restarted worker rejoins; drain is for the process that was asked to drain.
            record.draining = false;
            let old_leases: Vec<u64> = st
                .workers
                .get(name)
                .map(|w| w.leases.iter().copied().collect())
                .unwrap_or_default();
            let mut kept = BTreeSet::new();
            let mut running = [0u32; 2];
            for id in old_leases {
                let Some(l) = st.leases.get_mut(&id) else {
                    continue;
                };
                let claimed = held
                    .iter()
                    .any(|h| h.lease_id == id && h.fence == l.record.fence);
                // A unit stuck past its execution deadline is not kept alive by a new session.
                if claimed && expiry(&l.record, now) != Some(Expiry::Deadline) {
                    l.record.expires_unix_ms = now + u64::from(ttl);
                    running[pi(l.record.phase)] += 1;
                    kept.insert(id);
                    tracing::info!(
                        worker = %name,
                        lease = id,
                        phase = l.record.phase.as_str(),
                        session = record.last_session,
                        "lease kept across the re-registration: the worker still holds it"
                    );
                    continue;
                }
                let recovered = l.recovered;
                let reason = format!(
                    "worker {name} re-registered: session {old_session} superseded by {}",
                    record.last_session
                );
                let end = if recovered {
                    LeaseEnd::Released(format!("{reason} after a coordinator restart"))
                } else {
                    LeaseEnd::Counted(reason)
                };
                self.end_lease(&mut st, id, end, false, &mut ops)?;
            }
            ops.push(Op::Worker(record.clone()));
            self.store.apply(&ops)?;
            // A counted end may have failed a run's last unit.
            self.queue_finishes(&mut st);
            let cached = caps.cached_repos.iter().cloned().collect();
            let completed = st.workers.get(name).map_or(0, |w| w.completed);
            // The same process registering again keeps its counters until its next heartbeat.
            let images = st.workers.get(name).and_then(|w| w.images.clone());
            st.workers.insert(
                name.to_string(),
                WorkerMem {
                    record: record.clone(),
                    live_session: true,
                    caps,
                    cached,
                    last_heartbeat_ms: Some(now),
                    leases: kept,
                    running,
                    completed,
                    revoked: Vec::new(),
                    images,
                },
            );
            Registration {
                worker_id: record.worker_id,
                session: record.last_session,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                lease_ttl_ms: ttl,
            }
        };
        self.commit(ops).await?;
        Ok(registration)
    }

    /// Liveness and lease renewal.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, CoordinatorError> {
        let now = self.clock.now_ms();
        let ttl = u64::from(self.config.lease_ttl_ms);
        let mut ops;
        let recorded_usage;
        let reply = {
            let _writer = self.store.writer();
            let mut st = self.lock();
            if !Self::session_ok(&st, &hb.worker_id, hb.session) {
                return Ok(HeartbeatReply {
                    reregister: true,
                    ..HeartbeatReply::default()
                });
            }
            let mut revoked = Vec::new();
            for r in &hb.active {
                match st.leases.get_mut(&r.lease_id) {
                    Some(l)
                        if check_fence(&l.record, &hb.worker_id, r.fence).is_ok()
                            && expiry(&l.record, now).is_none() =>
                    {
                        l.record.expires_unix_ms = now + ttl;
                    }
                    _ => revoked.push(*r),
                }
            }
            // Applied before the sweep, which reads unit records from the store.
            let (usage_ops, recorded) =
                self.agent_usage_ops(&st, &hb.worker_id, &hb.agent_usage)?;
            ops = usage_ops;
            recorded_usage = recorded;
            self.store.apply(&ops)?;
            let swept_from = ops.len();
            let w = st.workers.get_mut(&hb.worker_id).expect("session checked");
            w.last_heartbeat_ms = Some(now);
            if !hb.cached_repos.is_empty() {
                w.cached = hb.cached_repos.iter().cloned().collect();
            }
            w.caps.task_images = hb.task_images.clone();
            if let Some(images) = &hb.images {
                w.images = Some(images.clone().bounded());
            }
            let drain = w.record.draining;
            revoked.append(&mut w.revoked);
            self.sweep_locked(&mut st, now, &mut ops)?;
            let w = st.workers.get_mut(&hb.worker_id).expect("session checked");
            revoked.append(&mut w.revoked);
            revoked.sort_by_key(|r| r.lease_id);
            revoked.dedup();
            self.store.apply(&ops[swept_from..])?;
            self.queue_finishes(&mut st);
            HeartbeatReply {
                revoked,
                drain,
                reregister: false,
            }
        };
        self.commit(ops).await?;
        recorded_usage.iter().for_each(|r| r.log());
        Ok(reply)
    }

    pub(super) fn session_ok(st: &State, worker_id: &str, session: u64) -> bool {
        st.workers
            .get(worker_id)
            .is_some_and(|w| w.live_session && w.record.last_session == session)
    }

    /// Finish leased units, take no more.
    pub async fn drain_worker(&self, name: &str) -> Result<Ack, CoordinatorError> {
        let ops = {
            let mut st = self.lock();
            let Some(w) = st.workers.get_mut(name) else {
                return Ok(Ack::refused(format!("unknown worker {name}")));
            };
            w.record.draining = true;
            let ops = vec![Op::Worker(w.record.clone())];
            self.store.apply(&ops)?;
            ops
        };
        self.commit(ops).await?;
        Ok(Ack::accepted())
    }
}

/// How long ago a session of this process that is still live was heard from, or `None` when
/// the name is free (never registered with this process, or silent for longer than `ttl_ms`).
fn live_session_heard(w: &WorkerMem, now: u64, ttl_ms: u32) -> Option<u64> {
    if !w.live_session {
        return None;
    }
    let ago = now.saturating_sub(w.last_heartbeat_ms?);
    (ago <= u64::from(ttl_ms)).then_some(ago)
}
