//! The execution deadline of a run's generate phases: never shorter than the time its model
//! client may wait for one answer (`model.config.request_timeout` of the run spec; the
//! configured deadline covers the client's default) plus the phase's margin, so that a slow
//! answer that was going to arrive is not revoked and paid for again.

use ase_common::phase_deadline::generate_deadline;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
struct SpecProbe {
    #[serde(default)]
    model: Option<ModelProbe>,
}

#[derive(Deserialize)]
struct ModelProbe {
    #[serde(default)]
    config: Option<ConfigProbe>,
}

#[derive(Deserialize)]
struct ConfigProbe {
    /// Seconds, as the worker's model client reads it.
    #[serde(default)]
    request_timeout: Option<f64>,
    /// An `agent` run's limits: the agent may take its whole wall time.
    #[serde(default)]
    limits: Option<AgentLimitsProbe>,
}

#[derive(Deserialize)]
struct AgentLimitsProbe {
    #[serde(default)]
    wall_secs: Option<u64>,
}

/// The model request timeout a run spec sets, when it sets a valid one; for an `agent` run,
/// the agent's wall time (default 1800 s) plus a minute to copy its workspace in and out.
fn spec_request_timeout(spec_json: &[u8]) -> Option<Duration> {
    let probe: SpecProbe = serde_json::from_slice(spec_json).ok()?;
    let config = probe.model?.config?;
    if let Some(limits) = &config.limits {
        let wall = limits.wall_secs.unwrap_or(1800);
        return Some(Duration::from_secs(wall.saturating_add(60)));
    }
    let secs = config.request_timeout?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
}

/// The generate deadline (ms) a run's own request timeout needs, when its spec sets one: the
/// timeout plus the phase's margin. It lengthens the coordinator's configured deadline (whose
/// default is derived from the client's default timeout), never shortens it.
pub(super) fn run_generate_deadline_ms(spec_json: &[u8]) -> Option<u64> {
    let timeout = spec_request_timeout(spec_json)?;
    Some(u64::try_from(generate_deadline(timeout).as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CoordinatorConfig;
    use ase_common::phase_deadline::MODEL_REQUEST_TIMEOUT;
    use serde_json::json;

    fn spec(model: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"model_name": "m", "batch": "b", "rounds": 1, "model": model}))
            .unwrap()
    }

    #[test]
    fn an_agent_run_gets_its_wall_time() {
        let ms = run_generate_deadline_ms(&spec(json!({"provider": "agent",
            "config": {"upstream": {"base_url": "http://x/v1", "model": "m"},
                       "limits": {"wall_secs": 3600}}})))
        .unwrap();
        assert_eq!(
            u128::from(ms),
            generate_deadline(Duration::from_secs(3660)).as_millis()
        );
    }

    #[test]
    fn the_default_deadline_outlasts_the_default_request_timeout() {
        let configured = CoordinatorConfig::default().generate_deadline_ms;
        assert!(
            u128::from(configured) > MODEL_REQUEST_TIMEOUT.as_millis(),
            "generate deadline {configured} ms, model request timeout {MODEL_REQUEST_TIMEOUT:?}"
        );
        assert_eq!(
            u128::from(configured),
            generate_deadline(MODEL_REQUEST_TIMEOUT).as_millis()
        );
        assert_eq!(
            run_generate_deadline_ms(&spec(json!({"provider": "reference"}))),
            None
        );
    }

    #[test]
    fn a_run_with_a_longer_request_timeout_gets_a_longer_deadline() {
        let s = spec(json!({"provider": "openai",
            "config": {"base_url": "http://x/v1", "model": "m", "request_timeout": 3600.0}}));
        let ms = run_generate_deadline_ms(&s).unwrap();
        assert_eq!(
            u128::from(ms),
            generate_deadline(Duration::from_secs(3600)).as_millis()
        );
        assert!(ms > 3_600_000);
    }

    #[test]
    fn a_missing_or_invalid_timeout_leaves_the_configured_deadline() {
        assert_eq!(run_generate_deadline_ms(b"{}"), None);
        for bad in [json!(-1.0), json!(0.0), json!("ten")] {
            let s = spec(json!({"provider": "openai", "config": {"request_timeout": bad}}));
            assert_eq!(run_generate_deadline_ms(&s), None, "{bad}");
        }
        assert_eq!(run_generate_deadline_ms(b"not json"), None);
    }
}
