//! The generate phase's execution deadline, derived from the model client's request timeout.
//!
//! The coordinator revokes a generate lease whose phase runs past its deadline and leases the
//! unit again, which pays for the model call again. A deadline shorter than the time one
//! request may legitimately take would revoke every slow answer that was going to arrive, so
//! the deadline is the request timeout plus a margin for the rest of the phase (clone,
//! prompt, extraction, the report), never a constant of its own.

use std::time::Duration;

/// The model client's default bound on one request, from connecting to the end of the
/// response body: 64k generated tokens at a slow 50 tokens/s is ~21 minutes.
pub const MODEL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Time of a generate phase besides its model request.
pub const GENERATE_PHASE_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The execution deadline of a generate phase whose model requests are bounded by
/// `request_timeout`.
pub fn generate_deadline(request_timeout: Duration) -> Duration {
    request_timeout.saturating_add(GENERATE_PHASE_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_takes_its_whole_timeout_still_meets_the_deadline() {
        let d = generate_deadline(MODEL_REQUEST_TIMEOUT);
        assert!(d > MODEL_REQUEST_TIMEOUT, "{d:?}");
        assert_eq!(d - MODEL_REQUEST_TIMEOUT, GENERATE_PHASE_MARGIN);
        assert!(generate_deadline(Duration::MAX) == Duration::MAX);
    }
}
