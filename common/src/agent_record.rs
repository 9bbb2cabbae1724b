//! What a coding agent did for one unit (agent mode), as typed fields: the committed
//! generation's [`AgentRecord`], and the [`AttemptUsage`] a worker reports while an attempt
//! runs (its heartbeats), so that the calls of an attempt whose worker died are still counted.

use crate::unit::TokenUsage;
use serde::{Deserialize, Serialize};

/// Bytes of a transcript a record carries (the worker's proxy bounds it; this bounds what the
/// coordinator accepts, whatever a worker sends).
pub const MAX_TRANSCRIPT_BYTES: usize = 1 << 20;
/// Bytes of the agent's output tail a record carries.
pub const MAX_OUTPUT_TAIL_BYTES: usize = 16 << 10;

/// One agent run of a unit's generation (the attempt whose generation was committed).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's turns: its model calls that the endpoint answered (2xx).
    pub turns: u32,
    /// Calls the proxy forwarded to the endpoint (answered or not).
    pub model_calls: u32,
    /// Calls the proxy refused (call or token budget spent, a route it does not serve).
    #[serde(default)]
    pub refused_calls: u32,
    /// Calls the proxy held back for the run's `requests_per_minute` (answered 429; the agent
    /// retried them or gave up).
    #[serde(default)]
    pub rate_limited_calls: u32,
    /// Why the agent stopped short of finishing, when it did and its changes were still taken
    /// (`max_turns`: it ran out of turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Tokens as the endpoint reported them; `None` when it reported none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// `None` when the endpoint is not priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Seconds the agent's container ran.
    pub wall_seconds: f64,
    /// `None`: killed (time limit) or never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The end of the agent's output (bounded).
    #[serde(default)]
    pub output_tail: String,
    /// The calls and answers through the proxy (bounded by the agent's
    /// `max_transcript_bytes`). The coordinator writes it as a file of the run's outputs.
    #[serde(default)]
    pub transcript: String,
    #[serde(default)]
    pub transcript_truncated: bool,
}

impl AgentRecord {
    /// The record with its texts cut to the bounds above (on a char boundary).
    pub fn bounded(mut self) -> Self {
        if self.transcript.len() > MAX_TRANSCRIPT_BYTES {
            cut_to(&mut self.transcript, MAX_TRANSCRIPT_BYTES);
            self.transcript_truncated = true;
        }
        if self.output_tail.len() > MAX_OUTPUT_TAIL_BYTES {
            let mut start = self.output_tail.len() - MAX_OUTPUT_TAIL_BYTES;
            while !self.output_tail.is_char_boundary(start) {
                start += 1;
            }
            self.output_tail = self.output_tail[start..].to_string();
        }
        self
    }
}

fn cut_to(s: &mut String, max: usize) {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// What one generate attempt's agent spent so far, as its worker last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AttemptUsage {
    /// Calls answered (2xx): the agent's turns.
    #[serde(default)]
    pub turns: u32,
    /// Calls forwarded to the endpoint.
    pub model_calls: u32,
    #[serde(default)]
    pub usage: TokenUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl AttemptUsage {
    /// Adds `other` into `self` (costs: `None` only when neither has one).
    pub fn add(&mut self, other: &AttemptUsage) {
        self.turns += other.turns;
        self.model_calls += other.model_calls;
        self.usage.prompt_tokens += other.usage.prompt_tokens;
        self.usage.completion_tokens += other.usage.completion_tokens;
        self.usage.total_tokens += other.usage.total_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_bounded_on_char_boundaries() {
        let r = AgentRecord {
            transcript: "é".repeat(MAX_TRANSCRIPT_BYTES),
            output_tail: "ü".repeat(MAX_OUTPUT_TAIL_BYTES),
            ..AgentRecord::default()
        }
        .bounded();
        assert!(r.transcript.len() <= MAX_TRANSCRIPT_BYTES);
        assert!(r.transcript_truncated);
        assert!(r.output_tail.len() <= MAX_OUTPUT_TAIL_BYTES);
        assert!(r.output_tail.ends_with('ü'));
    }

    #[test]
    fn usages_add_up_and_a_cost_stays_unknown_only_when_both_are() {
        let a = AttemptUsage {
            turns: 2,
            model_calls: 3,
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
            },
            cost_usd: None,
        };
        let mut sum = AttemptUsage::default();
        sum.add(&a);
        sum.add(&a);
        assert_eq!((sum.turns, sum.model_calls), (4, 6));
        assert_eq!(sum.usage.total_tokens, 30);
        assert_eq!(sum.cost_usd, None);
        sum.add(&AttemptUsage {
            cost_usd: Some(0.5),
            ..a
        });
        assert_eq!(sum.cost_usd, Some(0.5));
    }
}
