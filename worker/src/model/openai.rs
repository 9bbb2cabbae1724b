//! A client of OpenAI-compatible chat-completions endpoints (`POST {base_url}/chat/completions`).
//!
//! One unit is one request: `model`, `messages` = [system, user], the generation limit under the
//! name the endpoint expects (`max_completion_tokens`, or `max_tokens` which upstream sends to
//! "claude" models), optional `temperature`/`top_p`, and any extra body parameters.
//!
//! Failures are classified once, here: 429, 408, 5xx, timeouts and network errors are retried
//! with back-off (honouring `Retry-After`) and, when the attempts run out, reported as
//! infrastructure failures; any other 4xx is not retried; a 200 whose body is not a usable
//! completion (not JSON, no choices, null content) is a failed generation. Response bodies are
//! read up to a bound: an endpoint is untrusted input too.
//!
//! The API key is held in [`ApiKey`], which never prints itself, and goes out only in the
//! `Authorization: Bearer` header (marked sensitive so reqwest/hyper never log it).

use super::backoff::{parse_retry_after, secs_f64, RetryPolicy};
use super::{ChatPrompt, FailureReason, Generation, InfraFailure, ModelFailure, TokenUsage};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// Bytes of an API key file read at most; a key is a few hundred bytes.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Bytes of an error response kept for the failure message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Characters of an error message kept in a [`FailureReason`].
const MAX_MESSAGE_CHARS: usize = 500;

/// A secret API key. Its `Debug` and `Display` never show it; only [`ApiKey::expose`] does,
/// and only the request builder calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Surrounding whitespace (a key file's final newline) is not part of the key.
    pub fn new(key: impl Into<String>) -> Result<Self, OpenAiError> {
        let key = key.into().trim().to_string();
        if key.is_empty() {
            return Err(OpenAiError::EmptyKey);
        }
        // A header value cannot hold control characters; say so without echoing the key.
        if key.bytes().any(|b| b.is_ascii_control()) {
            return Err(OpenAiError::KeyNotHeaderSafe);
        }
        Ok(ApiKey(key))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the API key is read from. The configuration names the place, never the key.
///
/// Written `{"from": "env", "var": "OPENAI_API_KEY"}`, `{"from": "file", "path": "..."}` or
/// `{"from": "none"}`. A configuration error never quotes the offending value: someone who
/// pastes the key itself in place of the source must not find it in a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "from",
    rename_all = "snake_case",
    deny_unknown_fields,
    remote = "ApiKeySource"
)]
pub enum ApiKeySource {
    /// An environment variable, e.g. `OPENAI_API_KEY`.
    Env { var: String },
    /// A file holding the key (surrounding whitespace ignored).
    File { path: PathBuf },
    /// No `Authorization` header (local servers).
    None,
}

impl Serialize for ApiKeySource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ApiKeySource::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for ApiKeySource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        ApiKeySource::deserialize(value).map_err(|_| {
            serde::de::Error::custom(
                "`api_key` must be {\"from\": \"env\", \"var\": NAME}, \
                 {\"from\": \"file\", \"path\": PATH} or {\"from\": \"none\"} \
                 (the source of the key, never the key itself)",
            )
        })
    }
}

impl Default for ApiKeySource {
    fn default() -> Self {
        ApiKeySource::Env {
            var: "OPENAI_API_KEY".to_string(),
        }
    }
}

impl ApiKeySource {
    pub fn resolve(&self) -> Result<Option<ApiKey>, OpenAiError> {
        match self {
            ApiKeySource::None => Ok(None),
            ApiKeySource::Env { var } => {
                let value = std::env::var(var)
                    .map_err(|_| OpenAiError::KeyEnvMissing { var: var.clone() })?;
                ApiKey::new(value).map(Some)
            }
            ApiKeySource::File { path } => {
                use std::io::Read;
                let file = std::fs::File::open(path).map_err(|source| OpenAiError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                let mut text = String::new();
                file.take(MAX_KEY_FILE_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(|source| OpenAiError::KeyFile {
                        path: path.clone(),
                        source,
                    })?;
                if text.len() as u64 > MAX_KEY_FILE_BYTES {
                    return Err(OpenAiError::KeyFileTooLarge { path: path.clone() });
                }
                ApiKey::new(text).map(Some)
            }
        }
    }
}

/// The name under which the generation limit is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenParam {
    MaxCompletionTokens,
    MaxTokens,
}

impl TokenParam {
    /// Upstream's rule: `max_tokens` when the model name contains "claude", else
    /// `max_completion_tokens`.
    pub fn upstream_default(model: &str) -> Self {
        if model.contains("claude") {
            TokenParam::MaxTokens
        } else {
            TokenParam::MaxCompletionTokens
        }
    }

    pub fn field(self) -> &'static str {
        match self {
            TokenParam::MaxCompletionTokens => "max_completion_tokens",
            TokenParam::MaxTokens => "max_tokens",
        }
    }
}

/// Prices of one model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    pub input_per_million_usd: f64,
    pub output_per_million_usd: f64,
}

impl Pricing {
    pub fn cost_usd(&self, usage: &TokenUsage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_million_usd
            + usage.completion_tokens as f64 * self.output_per_million_usd)
            / 1_000_000.0
    }
}

fn default_max_gen_token() -> u32 {
    64_000
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_timeout() -> Duration {
    // The coordinator's generate deadline is derived from the same constant.
    ase_common::phase_deadline::MODEL_REQUEST_TIMEOUT
}
fn default_max_response_bytes() -> usize {
    16 << 20
}

/// Settings of one model endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Up to and including the version segment, e.g. `https://api.openai.com/v1`; the client
    /// posts to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: ApiKeySource,
    #[serde(default = "default_max_gen_token")]
    pub max_gen_token: u32,
    /// `None`: upstream's rule ([`TokenParam::upstream_default`]).
    #[serde(default)]
    pub token_param: Option<TokenParam>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// More body fields, sent as they are (e.g. `{"reasoning_effort": "high"}`). They may not
    /// name a field the client sets itself.
    #[serde(default)]
    pub extra_body: Map<String, Value>,
    #[serde(default = "default_connect_timeout", with = "secs_f64")]
    pub connect_timeout: Duration,
    /// Bound on one request, from connecting to the end of the response body.
    #[serde(default = "default_request_timeout", with = "secs_f64")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Prices by model name; the cost of a generation is computed when `model` is listed.
    #[serde(default)]
    pub prices: BTreeMap<String, Pricing>,
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: ApiKeySource::default(),
            max_gen_token: default_max_gen_token(),
            token_param: None,
            temperature: None,
            top_p: None,
            extra_body: Map::new(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            retry: RetryPolicy::default(),
            max_response_bytes: default_max_response_bytes(),
            prices: BTreeMap::new(),
        }
    }

    pub fn effective_token_param(&self) -> TokenParam {
        self.token_param
            .unwrap_or_else(|| TokenParam::upstream_default(&self.model))
    }

    pub fn chat_completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// Problems found before any request is made: configuration and key.
#[derive(Debug, Error)]
pub enum OpenAiError {
    #[error("model config: field `{field}`: {detail}")]
    BadConfig { field: &'static str, detail: String },
    #[error("API key: environment variable {var} is not set (or not valid UTF-8)")]
    KeyEnvMissing { var: String },
    #[error("API key: cannot read key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API key: key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")]
    KeyFileTooLarge { path: PathBuf },
    #[error("API key is empty")]
    EmptyKey,
    #[error("API key contains control characters and cannot be sent in a header")]
    KeyNotHeaderSafe,
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A ready client for one model endpoint. Cheap to share behind an `Arc`; reqwest pools
/// connections inside.
#[derive(Debug)]
pub struct OpenAiClient {
    config: OpenAiConfig,
    key: Option<ApiKey>,
    auth_header: Option<HeaderValue>,
    url: String,
    http: reqwest::Client,
}

/// What one HTTP attempt ended with, when it did not produce an answer.
struct AttemptFailure {
    reason: FailureReason,
    usage: Option<TokenUsage>,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl AttemptFailure {
    fn model(failure: ModelFailure, usage: Option<TokenUsage>) -> Self {
        AttemptFailure {
            reason: FailureReason::Model(failure),
            usage,
            retryable: false,
            retry_after: None,
        }
    }

    fn infra(failure: InfraFailure, retryable: bool, retry_after: Option<Duration>) -> Self {
        AttemptFailure {
            reason: FailureReason::Infrastructure(failure),
            usage: None,
            retryable,
            retry_after,
        }
    }
}

impl OpenAiClient {
    /// Validate the configuration and read the key from where it names.
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiError> {
        let key = config.api_key.resolve()?;
        Self::with_key(config, key)
    }

    /// As [`OpenAiClient::new`] with a key obtained elsewhere (`config.api_key` is ignored).
    pub fn with_key(config: OpenAiConfig, key: Option<ApiKey>) -> Result<Self, OpenAiError> {
        validate(&config)?;
        let auth_header = match &key {
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose()))
                    .map_err(|_| OpenAiError::KeyNotHeaderSafe)?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(OpenAiError::Http)?;
        Ok(OpenAiClient {
            url: config.chat_completions_url(),
            config,
            key,
            auth_header,
            http,
        })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The JSON body sent for `prompt`.
    pub fn request_body(&self, prompt: &ChatPrompt) -> Value {
        let c = &self.config;
        let mut body = Map::new();
        body.insert("model".into(), Value::from(c.model.clone()));
        body.insert(
            "messages".into(),
            serde_json::json!([
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ]),
        );
        body.insert(
            c.effective_token_param().field().into(),
            Value::from(c.max_gen_token),
        );
        if let Some(t) = c.temperature {
            body.insert("temperature".into(), Value::from(t));
        }
        if let Some(p) = c.top_p {
            body.insert("top_p".into(), Value::from(p));
        }
        for (k, v) in &c.extra_body {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// Generate one answer, retrying what is worth retrying.
    pub async fn generate(&self, prompt: &ChatPrompt) -> Generation {
        let body = self.request_body(prompt);
        let started = Instant::now();
        let policy = &self.config.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(&body).await {
                Ok((answer, usage)) => {
                    let mut g = Generation::answered(answer, attempts, started.elapsed());
                    self.account(&mut g, usage);
                    return g;
                }
                Err(f) => f,
            };
            if !failure.retryable || attempts >= max_attempts {
                let mut g = Generation::failed(failure.reason, attempts, started.elapsed());
                self.account(&mut g, failure.usage);
                return g;
            }
            let delay = policy.delay(attempts, failure.retry_after, fastrand::f64());
            tracing::warn!(
                model = %self.config.model,
                attempt = attempts,
                max_attempts,
                delay_ms = delay.as_millis() as u64,
                reason = %failure.reason,
                "model request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn account(&self, g: &mut Generation, usage: Option<TokenUsage>) {
        g.usage = usage;
        g.cost_usd = usage.and_then(|u| {
            self.config
                .prices
                .get(&self.config.model)
                .map(|p| p.cost_usd(&u))
        });
    }

    async fn attempt(&self, body: &Value) -> Result<(String, Option<TokenUsage>), AttemptFailure> {
        let mut request = self
            .http
            .post(&self.url)
            .header(ACCEPT, "application/json")
            .json(body);
        if let Some(auth) = &self.auth_header {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let mut response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        if status.is_success() {
            let (bytes, truncated) = read_bounded(&mut response, self.config.max_response_bytes)
                .await
                .map_err(transport_failure)?;
            if truncated {
                return Err(AttemptFailure::model(
                    ModelFailure::ResponseTooLarge {
                        limit_bytes: self.config.max_response_bytes,
                    },
                    None,
                ));
            }
            return parse_completion(&bytes)
                .map_err(|(failure, usage)| AttemptFailure::model(failure, usage));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // The error body only feeds a message; a transport error while reading it changes
        // nothing about how the status is classified.
        let (message, code) = match read_bounded(&mut response, MAX_ERROR_BODY_BYTES).await {
            Ok((bytes, _)) => (self.error_message(&bytes), error_body_code(&bytes)),
            Err(_) => (String::new(), None),
        };
        if quota_exhausted(status, code.as_deref()) {
            return Err(AttemptFailure::infra(
                InfraFailure::QuotaExceeded {
                    status: status.as_u16(),
                    message,
                },
                false,
                retry_after,
            ));
        }
        Err(classify_status(status, message, retry_after))
    }

    /// A short message from an error body, with the key scrubbed out in case the endpoint
    /// echoes it ("Incorrect API key provided: sk-...").
    fn error_message(&self, body: &[u8]) -> String {
        let message = error_body_message(body);
        match &self.key {
            Some(k) => message.replace(k.expose(), "<redacted>"),
            None => message,
        }
    }
}

fn validate(c: &OpenAiConfig) -> Result<(), OpenAiError> {
    let bad = |field, detail: &str| {
        Err(OpenAiError::BadConfig {
            field,
            detail: detail.to_string(),
        })
    };
    if !(c.base_url.starts_with("http://") || c.base_url.starts_with("https://")) {
        return bad("base_url", "must start with http:// or https://");
    }
    if reqwest::Url::parse(&c.chat_completions_url()).is_err() {
        return bad("base_url", "is not a valid URL");
    }
    if c.model.trim().is_empty() {
        return bad("model", "is empty");
    }
    if c.max_gen_token == 0 {
        return bad("max_gen_token", "must be > 0");
    }
    if c.retry.max_attempts == 0 {
        return bad("retry.max_attempts", "must be >= 1");
    }
    if c.max_response_bytes == 0 {
        return bad("max_response_bytes", "must be > 0");
    }
    if c.request_timeout.is_zero() || c.connect_timeout.is_zero() {
        return bad("request_timeout", "timeouts must be > 0");
    }
    // Streaming would change the response format this client parses.
    let mut owned = vec![
        "model",
        "messages",
        "stream",
        c.effective_token_param().field(),
    ];
    if c.temperature.is_some() {
        owned.push("temperature");
    }
    if c.top_p.is_some() {
        owned.push("top_p");
    }
    if let Some(k) = owned.iter().find(|k| c.extra_body.contains_key(**k)) {
        return Err(OpenAiError::BadConfig {
            field: "extra_body",
            detail: format!("may not set `{k}`, which the client sets itself"),
        });
    }
    for (name, p) in &c.prices {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(p.input_per_million_usd) || !ok(p.output_per_million_usd) {
            return Err(OpenAiError::BadConfig {
                field: "prices",
                detail: format!("prices of {name} must be finite and >= 0"),
            });
        }
    }
    Ok(())
}

/// 402, or a 429 whose error code is `insufficient_quota` (OpenAI's answer when the account
/// is out of credit): another try within the unit would get the same answer, and it is not a
/// rate limit that passes in seconds.
fn quota_exhausted(status: StatusCode, code: Option<&str>) -> bool {
    status.as_u16() == 402 || (status.as_u16() == 429 && code == Some("insufficient_quota"))
}

/// The machine-readable code of an error body (`error.code`, else `error.type`).
fn error_body_code(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<Value>(body).ok()?;
    v.pointer("/error/code")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/error/type").and_then(Value::as_str))
        .map(|c| truncate_chars(c, 64))
}

/// 429, 408 and 5xx are worth another try; other statuses are final.
fn classify_status(
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
) -> AttemptFailure {
    let code = status.as_u16();
    match code {
        429 => AttemptFailure::infra(
            InfraFailure::RateLimited {
                retry_after_secs: retry_after.map(|d| d.as_secs()),
            },
            true,
            retry_after,
        ),
        408 => AttemptFailure::infra(InfraFailure::Timeout, true, retry_after),
        500..=599 => AttemptFailure::infra(
            InfraFailure::ServerError {
                status: code,
                message,
            },
            true,
            retry_after,
        ),
        400 | 413 | 422 => AttemptFailure::model(
            ModelFailure::RequestRejected {
                status: code,
                message,
            },
            None,
        ),
        _ => AttemptFailure::infra(
            InfraFailure::ClientError {
                status: code,
                message,
            },
            false,
            None,
        ),
    }
}

fn transport_failure(e: reqwest::Error) -> AttemptFailure {
    if e.is_timeout() {
        return AttemptFailure::infra(InfraFailure::Timeout, true, None);
    }
    // The URL is known from the configuration; keep the message to the cause.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    AttemptFailure::infra(InfraFailure::Network { detail }, true, None)
}

/// Read at most `limit` bytes of the body; `true` when there was more (the rest is dropped
/// unread, and the connection with it).
async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok((Vec::new(), true));
    }
    let mut kept = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if kept.len() + chunk.len() > limit {
            let room = limit - kept.len();
            kept.extend_from_slice(&chunk[..room]);
            return Ok((kept, true));
        }
        kept.extend_from_slice(&chunk);
    }
    Ok((kept, false))
}

fn truncate_chars(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().nth(n).is_some() {
        out.push_str("...");
    }
    out
}

/// `error.message` of an OpenAI-style error body, else the start of the body.
fn error_body_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(Value::as_str);
        if let Some(m) = m {
            return truncate_chars(m, MAX_MESSAGE_CHARS);
        }
    }
    truncate_chars(String::from_utf8_lossy(body).trim(), MAX_MESSAGE_CHARS)
}

fn parse_usage(v: &Value) -> Option<TokenUsage> {
    let u = v.get("usage")?.as_object()?;
    let field = |k: &str| u.get(k).and_then(Value::as_u64);
    let prompt_tokens = field("prompt_tokens").unwrap_or(0);
    let completion_tokens = field("completion_tokens").unwrap_or(0);
    let total_tokens = field("total_tokens").unwrap_or(prompt_tokens + completion_tokens);
    Some(TokenUsage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
    })
}

/// The answer of a 200 response: the first choice's message content, stripped of surrounding
/// whitespace as upstream does before extraction. Content given as a list of parts (some
/// compatible servers do) is joined. Usage is returned even when there is no answer: those
/// tokens were billed.
pub fn parse_completion(
    body: &[u8],
) -> Result<(String, Option<TokenUsage>), (ModelFailure, Option<TokenUsage>)> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        (
            ModelFailure::MalformedResponse {
                detail: format!(
                    "body is not JSON ({e}); it starts with {:?}",
                    truncate_chars(&String::from_utf8_lossy(body), 120)
                ),
            },
            None,
        )
    })?;
    let usage = parse_usage(&v);
    let malformed = |detail: String| (ModelFailure::MalformedResponse { detail }, usage);
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        if v.get("error").is_some() {
            return Err(malformed(format!(
                "an error object instead of choices: {}",
                error_body_message(body)
            )));
        }
        return Err(malformed("no `choices` array".to_string()));
    };
    let Some(first) = choices.first() else {
        return Err((ModelFailure::EmptyChoices, usage));
    };
    let finish_reason = first
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    let content = match first.pointer("/message/content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(Value::Null) | None => String::new(),
        Some(other) => {
            return Err(malformed(format!(
                "`choices[0].message.content` is a {}",
                json_type(other)
            )))
        }
    };
    // The answer goes on byte for byte: a bare unified diff ends with a newline and may end with
    // a whitespace-only context line, and a patch in a fence that never closes runs to the end;
    // trimming either breaks `git apply`. Only the emptiness test looks through white space.
    if content.trim().is_empty() {
        return Err((ModelFailure::EmptyContent { finish_reason }, usage));
    }
    Ok((content, usage))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests;
