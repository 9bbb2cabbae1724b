//! When to try an HTTP request again: exponential back-off with full jitter, and the server's
//! `Retry-After` when it sends one.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// How often and how patiently a request is repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Requests made at most, the first included (upstream: 3).
    pub max_attempts: u32,
    /// Cap of the first back-off; doubled for each further retry (upstream: 30 s).
    #[serde(with = "secs_f64")]
    pub initial_backoff: Duration,
    /// No back-off cap grows past this (upstream: 600 s).
    #[serde(with = "secs_f64")]
    pub max_backoff: Duration,
    /// A server's `Retry-After` is honoured up to this long; a longer one is cut to it, so one
    /// misbehaving proxy cannot park a worker slot for a day.
    #[serde(with = "secs_f64")]
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Upper bound of the back-off before retry number `retry` (1 = after the first attempt):
    /// `min(max_backoff, initial_backoff * 2^(retry-1))`.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Full jitter: a uniform pick in `[0, backoff_cap(retry)]`, `unit` being a number in
    /// `[0, 1]` (taken as a parameter so the formula is testable). Full jitter spreads the
    /// retries of many workers hit by the same 429 instead of synchronising them.
    pub fn jittered_backoff(&self, retry: u32, unit: f64) -> Duration {
        self.backoff_cap(retry).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before retry number `retry`: the server's `Retry-After` (capped at
    /// `max_retry_after`) when it gave one, else the jittered back-off.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        match retry_after {
            Some(ra) => ra.min(self.max_retry_after),
            None => self.jittered_backoff(retry, unit),
        }
    }
}

/// Parse a `Retry-After` header value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past means "now". Anything else is ignored (`None`): a broken header must not
/// make us retry faster than our own back-off would, so the caller falls back to it.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than fail: they mean "very long".
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Durations in configuration files are written as (fractional) seconds.
pub(crate) mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            serde::de::Error::custom(format!(
                "{secs} is not a duration in seconds (must be finite and >= 0)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            max_retry_after: Duration::from_millis(2500),
        }
    }

    #[test]
    fn backoff_cap_doubles_then_saturates() {
        let p = policy(100, 1000);
        let caps: Vec<u128> = (1..=6).map(|r| p.backoff_cap(r).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
        // No overflow for huge retry numbers.
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_millis(1000));
        assert_eq!(p.backoff_cap(0), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spans_zero_to_cap() {
        let p = policy(100, 1000);
        assert_eq!(p.jittered_backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.jittered_backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.jittered_backoff(3, 0.5), Duration::from_millis(200));
        // Out-of-range randomness cannot exceed the cap.
        assert_eq!(p.jittered_backoff(3, 7.0), Duration::from_millis(400));
        assert_eq!(p.jittered_backoff(3, -1.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_wins_over_backoff_and_is_capped() {
        let p = policy(100, 1000);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_millis(2500)
        );
        assert_eq!(p.delay(2, None, 1.0), Duration::from_millis(200));
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn policy_reads_seconds_from_config() {
        let p: RetryPolicy =
            serde_json::from_str(r#"{"max_attempts": 4, "initial_backoff": 0.25}"#).unwrap();
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.initial_backoff, Duration::from_millis(250));
        assert_eq!(p.max_backoff, Duration::from_secs(600));
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_backoff": -1}"#).is_err());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attemps": 4}"#).is_err());
    }
}
