//! The limits of a run: one type, read by the coordinator (across the cluster) and by each
//! worker (for its own model calls), from the `limits` of the run spec and of `ase.toml`.
//!
//! Two pairs of settings used to share a name with two meanings: `max_attempts` was both the
//! coordinator's infrastructure attempts per phase and the worker's HTTP requests per attempt
//! (so 5 made up to 25 requests per unit), and `max_inflight_model_calls` both the run-wide cap
//! and each worker's. Each meaning now has its own name.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunLimits {
    /// Model calls of the run in flight at once across the cluster (generate leases granted
    /// by the coordinator); 0: no limit.
    pub max_inflight_model_calls: u32,
    /// Model calls of the run in flight at once on one worker.
    pub max_inflight_model_calls_per_worker: u32,
    /// Generate leases granted per minute across the run (token bucket); 0: no limit.
    pub requests_per_minute: u32,
    /// Infrastructure failures a phase of a unit may take before the unit fails
    /// (coordinator). Provider failures (429, 5xx, auth) are not counted: they pause the run.
    pub max_attempts: u32,
    /// HTTP requests to the model per unit attempt, the first included (worker); replaces the
    /// endpoint's `retry.max_attempts`.
    pub model_requests_per_attempt: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_inflight_model_calls: 0,
            max_inflight_model_calls_per_worker: 8,
            requests_per_minute: 0,
            max_attempts: 3,
            model_requests_per_attempt: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_meaning_has_its_own_key_and_missing_ones_take_defaults() {
        let l: RunLimits = serde_json::from_str(r#"{"max_attempts": 5}"#).unwrap();
        assert_eq!(l.max_attempts, 5);
        // The worker's requests per attempt do not follow the coordinator's attempts.
        assert_eq!(l.model_requests_per_attempt, 3);
        let l: RunLimits = serde_json::from_str(
            r#"{"max_inflight_model_calls": 4, "model_requests_per_attempt": 1}"#,
        )
        .unwrap();
        assert_eq!(l.max_inflight_model_calls, 4);
        assert_eq!(l.max_inflight_model_calls_per_worker, 8);
        assert_eq!(l.model_requests_per_attempt, 1);
        assert!(serde_json::from_str::<RunLimits>(r#"{"max_atempts": 5}"#).is_err());
    }
}
