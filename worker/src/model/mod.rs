//! Model providers: where the answer of one unit (task, round) comes from.
//!
//! - [`ModelProvider::OpenAi`]: an OpenAI-compatible chat-completions endpoint ([`openai`]);
//! - [`ModelProvider::Predictions`]: answers precomputed elsewhere, one JSONL line per unit
//!   ([`predictions`]);
//! - [`ModelProvider::Reference`]: the upstream fix, i.e. the code of `vuln_file` at the task's
//!   `patch_commit` ([`reference`]);
//! - [`ModelProvider::Original`]: the vulnerable code itself, which must score like the baseline.
//! - [`ModelProvider::Deletion`]: the block deleted (what an empty answer leaves): a probe that
//!   must never score secure (`ase calibrate`).
//!
//! Every provider returns a [`Generation`]. Its [`FailureReason`] keeps apart what the
//! coordinator must retry later (infrastructure: rate limits, network, a repo it could not read)
//! from what it must score (the model answered nothing usable): scoring a 429 as a model failure
//! is the classic harness bug this split exists to prevent.

pub mod backoff;
pub mod openai;
pub mod predictions;
pub mod reference;

use ase_common::dataset::Task;
use ase_common::prompt::masking::MaskedFile;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use openai::{
    ApiKey, ApiKeySource, OpenAiClient, OpenAiConfig, OpenAiError, Pricing, TokenParam,
};
pub use predictions::{Predictions, PredictionsError};
pub use reference::{RevisionReadError, RevisionReader};

/// Token counts as the endpoint reported them in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Why a unit has no answer, sorted by who is to blame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", content = "reason", rename_all = "snake_case")]
pub enum FailureReason {
    /// The model (or the prediction file) gave nothing usable: score it as a failed generation.
    Model(ModelFailure),
    /// Nothing was learned about the model: the coordinator should retry the unit later and
    /// must not score it.
    Infrastructure(InfraFailure),
}

impl FailureReason {
    /// True when the unit should be tried again later rather than scored.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FailureReason::Infrastructure(_))
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::Model(m) => write!(f, "failed generation: {m}"),
            FailureReason::Infrastructure(i) => write!(f, "infrastructure failure: {i}"),
        }
    }
}

/// A model result that counts as a failed generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelFailure {
    #[error("the response has an empty `choices` list")]
    EmptyChoices,
    #[error("the answer is null or empty (finish_reason {finish_reason:?})")]
    EmptyContent { finish_reason: Option<String> },
    #[error("the response is not a chat completion: {detail}")]
    MalformedResponse { detail: String },
    #[error("the response body exceeds {limit_bytes} bytes")]
    ResponseTooLarge { limit_bytes: usize },
    /// 400/413/422: the endpoint refused this unit's request (prompt too long, content filter).
    /// The same request would be refused again, so it is scored, not retried.
    #[error("the endpoint rejected the request with HTTP {status}: {message}")]
    RequestRejected { status: u16, message: String },
    #[error("no prediction")]
    NoPrediction,
    /// The reference provider cannot derive an answer for this task (e.g. a v1 task has no
    /// `patch_commit`, or the fix deleted the file).
    #[error("no reference answer: {detail}")]
    NoReference { detail: String },
}

/// A failure that says nothing about the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InfraFailure {
    /// Still rate limited when the attempts ran out. `retry_after_secs` is the server's last
    /// `Retry-After`, so the coordinator knows when to try again.
    #[error("rate limited (HTTP 429), retry after {retry_after_secs:?} s")]
    RateLimited { retry_after_secs: Option<u64> },
    /// 429 `insufficient_quota`, or 402: the account's quota or credit is exhausted; waiting
    /// a few seconds does not mend it.
    #[error("quota exhausted (HTTP {status}): {message}")]
    QuotaExceeded { status: u16, message: String },
    #[error("server error HTTP {status}: {message}")]
    ServerError { status: u16, message: String },
    #[error("request timed out")]
    Timeout,
    #[error("network error: {detail}")]
    Network { detail: String },
    /// 401/403/404 and other 4xx: credentials, model name or URL are wrong. Retrying the unit
    /// will not help until the configuration changes, but the model is not to blame either.
    #[error("the endpoint refused the client with HTTP {status}: {message}")]
    ClientError { status: u16, message: String },
    #[error("cannot read the repository: {detail}")]
    Repository { detail: String },
}

/// A failure of the model provider: the run's condition (every unit of the run would meet it
/// now), not the unit's. The coordinator pauses the run's model calls instead of using up the
/// unit's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderFault {
    RateLimited,
    Quota,
    Auth,
    ServerError,
    Timeout,
    Network,
}

impl InfraFailure {
    /// The provider's part in this failure; `None` when waiting or another key cannot mend
    /// it (a wrong URL or model name, a repository the reference provider cannot read).
    pub fn provider_fault(&self) -> Option<ProviderFault> {
        Some(match self {
            InfraFailure::RateLimited { .. } => ProviderFault::RateLimited,
            InfraFailure::QuotaExceeded { .. } => ProviderFault::Quota,
            InfraFailure::ServerError { .. } => ProviderFault::ServerError,
            InfraFailure::Timeout => ProviderFault::Timeout,
            InfraFailure::Network { .. } => ProviderFault::Network,
            InfraFailure::ClientError {
                status: 401 | 403, ..
            } => ProviderFault::Auth,
            InfraFailure::ClientError { .. } | InfraFailure::Repository { .. } => return None,
        })
    }

    /// The provider's `Retry-After`, when it sent one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            InfraFailure::RateLimited { retry_after_secs } => *retry_after_secs,
            _ => None,
        }
    }
}

/// The outcome of one unit's generation. Exactly one of `answer` and `failure` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The raw answer, unextracted (extraction is the benchmark's job, in `ase-common`).
    pub answer: Option<String>,
    pub usage: Option<TokenUsage>,
    pub cost_usd: Option<f64>,
    /// HTTP requests made (0 for providers that make none).
    pub attempts: u32,
    /// Wall time from the first request to the result, back-off included.
    pub latency: Duration,
    pub failure: Option<FailureReason>,
}

impl Generation {
    pub fn answered(answer: String, attempts: u32, latency: Duration) -> Self {
        Generation {
            answer: Some(answer),
            usage: None,
            cost_usd: None,
            attempts,
            latency,
            failure: None,
        }
    }

    pub fn failed(reason: FailureReason, attempts: u32, latency: Duration) -> Self {
        Generation {
            answer: None,
            usage: None,
            cost_usd: None,
            attempts,
            latency,
            failure: Some(reason),
        }
    }

    pub fn is_success(&self) -> bool {
        self.answer.is_some() && self.failure.is_none()
    }
}

/// The two chat messages of a unit, as the prompt builder made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    pub system: String,
    pub user: String,
}

/// Everything a provider may need to answer one unit.
#[derive(Debug, Clone, Copy)]
pub struct UnitInput<'a> {
    pub task: &'a Task,
    /// 1-based (upstream: cycle).
    pub round: u32,
    pub prompt: &'a ChatPrompt,
    /// `vuln_file` at `base_commit`, masked as the model saw it.
    pub masked: &'a MaskedFile,
}

/// Where answers come from; one per run.
pub enum ModelProvider {
    OpenAi(Box<OpenAiClient>),
    Predictions(Predictions),
    Reference(Arc<dyn RevisionReader>),
    Original,
    /// The masked block replaced by nothing.
    Deletion,
    /// A coding agent: its units run in the sandbox of [`crate::coding_agent`], not here.
    Agent(Box<crate::coding_agent::ResolvedAgent>),
}

impl std::fmt::Debug for ModelProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelProvider::OpenAi(c) => f.debug_tuple("OpenAi").field(c).finish(),
            ModelProvider::Predictions(p) => f.debug_tuple("Predictions").field(&p.path()).finish(),
            ModelProvider::Reference(_) => f.write_str("Reference"),
            ModelProvider::Original => f.write_str("Original"),
            ModelProvider::Deletion => f.write_str("Deletion"),
            ModelProvider::Agent(a) => f.debug_tuple("Agent").field(&a.image).finish(),
        }
    }
}

impl ModelProvider {
    /// The name a run is recorded under when the provider is not a live model.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelProvider::OpenAi(_) => "openai",
            ModelProvider::Predictions(_) => "predictions",
            ModelProvider::Reference(_) => "reference",
            ModelProvider::Original => "original",
            ModelProvider::Deletion => "deletion",
            ModelProvider::Agent(_) => "agent",
        }
    }

    /// Answer one unit. Never panics on bad input: every problem is a [`FailureReason`].
    pub async fn generate(&self, unit: &UnitInput<'_>) -> Generation {
        let started = Instant::now();
        match self {
            ModelProvider::OpenAi(client) => client.generate(unit.prompt).await,
            ModelProvider::Predictions(p) => match p.get(&unit.task.instance_id, unit.round) {
                Some(Some(answer)) if !answer.trim().is_empty() => {
                    Generation::answered(answer.to_string(), 0, started.elapsed())
                }
                Some(_) => Generation::failed(
                    FailureReason::Model(ModelFailure::EmptyContent {
                        finish_reason: None,
                    }),
                    0,
                    started.elapsed(),
                ),
                None => Generation::failed(
                    FailureReason::Model(ModelFailure::NoPrediction),
                    0,
                    started.elapsed(),
                ),
            },
            ModelProvider::Reference(reader) => {
                reference::reference_generation(reader.clone(), unit.task, unit.masked).await
            }
            ModelProvider::Original => {
                let answer = reference::original_answer(unit.task, unit.masked);
                Generation::answered(answer, 0, started.elapsed())
            }
            ModelProvider::Deletion => {
                let answer = reference::deletion_answer(unit.task, unit.masked);
                Generation::answered(answer, 0, started.elapsed())
            }
            // The generate phase runs agents itself (they need the unit's tree, not a prompt).
            ModelProvider::Agent(_) => Generation::failed(
                FailureReason::Model(ModelFailure::MalformedResponse {
                    detail: "an agent run needs the coding-agent sandbox".into(),
                }),
                0,
                started.elapsed(),
            ),
        }
    }
}
