//! Lease checks: is a report from this lease current, and has a lease run out.

use crate::records::{Fence, LeaseRecord};

/// Why a lease is no longer current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// No heartbeat renewed it within the TTL: the worker is gone or cut off.
    Ttl,
    /// The phase's execution deadline passed: the worker is alive but stuck on the unit.
    Deadline,
}

/// Whether the lease has run out at `now_ms`; the TTL is checked first.
pub fn expiry(lease: &LeaseRecord, now_ms: u64) -> Option<Expiry> {
    if now_ms > lease.expires_unix_ms {
        Some(Expiry::Ttl)
    } else if now_ms > lease.deadline_unix_ms {
        Some(Expiry::Deadline)
    } else {
        None
    }
}

/// Checks a report's claimed fence and worker against the current lease.
pub fn check_fence(lease: &LeaseRecord, worker_id: &str, fence: Fence) -> Result<(), String> {
    if lease.worker_id != worker_id {
        return Err(format!(
            "lease {} belongs to worker {}, not {worker_id}",
            lease.lease_id, lease.worker_id
        ));
    }
    if fence.session != lease.fence.session {
        return Err(format!(
            "lease {}: stale session {} (current {})",
            lease.lease_id, fence.session, lease.fence.session
        ));
    }
    if fence.attempt != lease.fence.attempt {
        return Err(format!(
            "lease {}: stale attempt {} (current {})",
            lease.lease_id, fence.attempt, lease.fence.attempt
        ));
    }
    Ok(())
}
