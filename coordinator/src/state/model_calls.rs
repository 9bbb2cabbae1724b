//! Agent mode: the run's requests-per-minute across the cluster, for every call of every
//! coding agent.
//!
//! The OpenAI provider makes one call per generate lease, so the run's token bucket, which
//! generate leases take from, bounds its calls. An agent holds one generate lease and makes
//! many calls through its worker's proxy: the proxy asks here before forwarding each call
//! after the first (the lease's grant paid for that one), and the grant takes a token from
//! the same bucket. One bucket, on the coordinator, is the only way the rate holds whatever
//! the number of workers and agents; a per-worker share would need each worker to know how
//! many others run the run, and would waste the share of idle workers. The cost is one small
//! RPC per model call, negligible beside the call itself (seconds). The bucket is memory only,
//! as for leases: a coordinator restart starts it full, which may let through at most one
//! minute's worth of calls more.

use super::lease_end::check_fence;
use super::Coordinator;
use crate::messages::LeaseRef;
use crate::records::Phase;

/// The answer to one agent's request for a model call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelCallGrant {
    Granted,
    /// The run's rate is spent: ask again after this long.
    Wait {
        retry_after_ms: u64,
    },
    /// The lease is not a current generate lease of this worker: the call must not go.
    Refused {
        reason: String,
    },
}

impl Coordinator {
    /// One model call for the coding agent of `lease`, held by `worker_id`.
    pub fn grant_model_call(&self, worker_id: &str, lease: LeaseRef) -> ModelCallGrant {
        let refused = |reason: String| ModelCallGrant::Refused { reason };
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let Some(l) = st.leases.get(&lease.lease_id) else {
            return refused(format!("lease {} is not current", lease.lease_id));
        };
        if l.record.phase != Phase::Generate {
            return refused(format!("lease {} is not a generate lease", lease.lease_id));
        }
        if let Err(reason) = check_fence(&l.record, worker_id, lease.fence) {
            return refused(reason);
        }
        let seq = l.record.run_seq;
        let Some(run) = st.runs.get_mut(&seq) else {
            return refused(format!("lease {}: its run is gone", lease.lease_id));
        };
        if run.bucket.try_take(now) {
            ModelCallGrant::Granted
        } else {
            ModelCallGrant::Wait {
                retry_after_ms: run.bucket.ms_until_token(now),
            }
        }
    }
}
