//! Workers: a (re)registration opens a new session and voids the leases of the old ones; a
//! heartbeat proves liveness and renews leases; a drain lets leased units finish and grants no
//! more.

use super::lease_end::{check_fence, expiry, LeaseEnd};
use super::memory::{State, WorkerMem};
use super::Coordinator;
use crate::messages::{Ack, Capabilities, Heartbeat, HeartbeatReply, Registration};
use crate::records::WorkerRecord;
use crate::store::Op;
use crate::CoordinatorError;
use std::collections::BTreeSet;

/// Bytes of a worker name.
pub const MAX_WORKER_NAME: usize = 256;

impl Coordinator {
    /// A worker (re)joins with a new session; leases of its earlier sessions are void.
    pub async fn register(
        &self,
        name: &str,
        caps: Capabilities,
    ) -> Result<Registration, CoordinatorError> {
        if name.is_empty() || name.len() > MAX_WORKER_NAME || name.chars().any(char::is_control) {
            return Err(CoordinatorError::WorkerName(format!(
                "{name:?} must be 1..={MAX_WORKER_NAME} bytes without control characters"
            )));
        }
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let registration = {
            let _writer = self.store.writer();
            let mut st = self.lock();
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
            for id in old_leases {
                let recovered = st.leases.get(&id).is_some_and(|l| l.recovered);
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
            st.workers.insert(
                name.to_string(),
                WorkerMem {
                    record: record.clone(),
                    live_session: true,
                    caps,
                    cached,
                    last_heartbeat_ms: Some(now),
                    leases: BTreeSet::new(),
                    running: [0, 0],
                    completed,
                    revoked: Vec::new(),
                },
            );
            Registration {
                worker_id: record.worker_id,
                session: record.last_session,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                lease_ttl_ms: self.config.lease_ttl_ms,
            }
        };
        self.commit(ops).await?;
        Ok(registration)
    }

    /// Liveness and lease renewal.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, CoordinatorError> {
        let now = self.clock.now_ms();
        let ttl = u64::from(self.config.lease_ttl_ms);
        let mut ops = Vec::new();
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
            let w = st.workers.get_mut(&hb.worker_id).expect("session checked");
            w.last_heartbeat_ms = Some(now);
            if !hb.cached_repos.is_empty() {
                w.cached = hb.cached_repos.iter().cloned().collect();
            }
            w.caps.task_images = hb.task_images.clone();
            let drain = w.record.draining;
            revoked.append(&mut w.revoked);
            self.sweep_locked(&mut st, now, &mut ops)?;
            let w = st.workers.get_mut(&hb.worker_id).expect("session checked");
            revoked.append(&mut w.revoked);
            revoked.sort_by_key(|r| r.lease_id);
            revoked.dedup();
            self.store.apply(&ops)?;
            self.queue_finishes(&mut st);
            HeartbeatReply {
                revoked,
                drain,
                reregister: false,
            }
        };
        self.commit(ops).await?;
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
