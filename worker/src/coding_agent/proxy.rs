//! The worker's model proxy: the only address an agent's container can reach. It speaks the
//! OpenAI chat-completions and the Anthropic Messages APIs, knows each unit by a token of its
//! own (the container never sees the real key), forwards to the run's real endpoint with the
//! real key, and counts calls, tokens and cost per unit; it keeps a bounded transcript and the
//! last provider failure (auth, quota, rate limit), so that a run whose provider fails is
//! paused rather than failing unit after unit.
//!
//! ## The run's limits, for every call of an agent
//!
//! The OpenAI provider makes one model call per generate lease, so the coordinator's lease
//! grants bound its calls. An agent holds one lease and makes many calls; the proxy makes each
//! of them obey the same limits:
//!
//! - **In flight, per worker and across the cluster.** A unit's calls go one at a time (a
//!   unit's second call waits for its first). The unit holds one of the run's per-worker
//!   in-flight permits while its agent runs, and one generate lease of the run's
//!   `max_inflight_model_calls`: so the calls in flight never exceed either cap, exactly as
//!   for the OpenAI provider. (A per-worker permit per call instead would bound nothing more,
//!   and would let a worker start more containers than it can feed.)
//! - **Rate across the cluster.** Every call after a unit's first asks a [`CallPermits`] (on a
//!   worker, the coordinator: `AcquireModelCall`, which takes from the run's token bucket, the
//!   one generate leases take from; the lease's grant paid for the first call). One bucket on
//!   the coordinator is what makes `requests_per_minute` hold whatever the number of workers:
//!   a per-worker share would need each worker to know how many others run the run, and would
//!   strand the share of idle ones. The cost, one small RPC per call, is little beside the
//!   call. When the bucket is empty the agent is answered HTTP 429 with `retry-after` (agents'
//!   clients wait and retry), counted as `rate_limited`; when the coordinator cannot be
//!   reached the call is held back the same way (fail closed).
//! - **Per unit.** `limits.max_calls` (default: the turn budget) and `limits.max_tokens`: a
//!   call beyond them is answered HTTP 400 with the reason (agents' clients do not retry it),
//!   counted as `refused`. An agent that loops cannot spend without bound.

use super::config::AgentApi;
use crate::model::{ApiKey, Pricing, ProviderFault, TokenUsage};
use ase_common::agent_record::AttemptUsage;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes of one request or answer read (an agent's context is at most a few MiB).
const MAX_BODY_BYTES: usize = 32 << 20;
/// Bytes of each request and answer copied into the transcript.
const TRANSCRIPT_PIECE_BYTES: usize = 16 << 10;

/// Where one unit's calls go.
#[derive(Clone)]
pub struct Upstream {
    pub api: AgentApi,
    /// OpenAI: up to the version segment (`https://api.openai.com/v1`); Anthropic: the root
    /// (`https://api.anthropic.com`).
    pub base_url: String,
    pub model: String,
    pub key: Option<ApiKey>,
    pub pricing: Option<Pricing>,
    pub request_timeout: Duration,
}

/// The run's answer to one model call of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPermit {
    Granted,
    /// The run's rate is spent (or its arbiter unreachable): the agent is told to retry after.
    Wait(Duration),
    /// The unit's lease is not current: the call must not go.
    Refused(String),
}

/// Who grants each call of an agent after its first: on a worker, the coordinator, from the
/// run's requests-per-minute bucket.
pub trait CallPermits: Send + Sync {
    fn acquire(
        &self,
        run: String,
        unit: String,
    ) -> Pin<Box<dyn Future<Output = CallPermit> + Send + 'static>>;
}

/// What one unit's session may spend.
#[derive(Clone, Default)]
pub struct SessionLimits {
    /// Calls forwarded.
    pub max_calls: u32,
    /// Tokens the endpoint counted (0: no bound).
    pub max_tokens: u64,
    pub max_transcript: usize,
    /// Asked for every call after the first; none: no rate limit.
    pub permits: Option<Arc<dyn CallPermits>>,
}

/// What one unit's agent did through the proxy.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Calls forwarded to the endpoint.
    pub calls: u32,
    /// Calls the endpoint answered (2xx): the agent's turns.
    pub answered: u32,
    /// Calls refused by the proxy (call or token budget spent, unknown route, lease gone).
    pub refused: u32,
    /// Calls held back by the run's rate (answered 429, to be retried by the agent).
    pub rate_limited: u32,
    /// The unit's budget a refused call found spent (`max_calls`, `max_tokens`).
    pub budget_spent: Option<&'static str>,
    pub usage: TokenUsage,
    pub usage_reported: bool,
    pub cost_usd: Option<f64>,
    pub transcript: String,
    pub transcript_truncated: bool,
    /// The provider's last failure, when the last forwarded call failed.
    pub last_fault: Option<(ProviderFault, String)>,
}

struct Session {
    /// (run id, unit) the session is of, for the usage its worker reports while it runs.
    label: Option<(String, String)>,
    upstream: Upstream,
    limits: SessionLimits,
    /// Held while a call is forwarded: one call of a unit at a time.
    serial: tokio::sync::Mutex<()>,
    stats: Mutex<SessionStats>,
}

type Sessions = Arc<Mutex<HashMap<String, Arc<Session>>>>;

/// The proxy of one worker (one listener; every agent unit has its own token).
pub struct ModelProxy {
    addr: SocketAddr,
    sessions: Sessions,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A unit's registration: removed from the proxy when dropped.
pub struct SessionGuard {
    token: String,
    sessions: Sessions,
    session: Arc<Session>,
}

impl SessionGuard {
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn stats(&self) -> SessionStats {
        lock(&self.session.stats).clone()
    }
}

impl SessionStats {
    /// The counts alone (no transcript), as the worker reports them while the agent runs.
    pub fn attempt_usage(&self) -> AttemptUsage {
        AttemptUsage {
            turns: self.answered,
            model_calls: self.calls,
            usage: ase_common::unit::TokenUsage {
                prompt_tokens: self.usage.prompt_tokens,
                completion_tokens: self.usage.completion_tokens,
                total_tokens: self.usage.total_tokens,
            },
            cost_usd: self.cost_usd,
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.sessions).remove(&self.token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ModelProxy {
    /// Listens on `addr` (the agent network's gateway address, port 0 for any).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<ModelProxy> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sessions: Sessions = Arc::default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(std::io::Error::other)?;
        let s = sessions.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, client) = (s.clone(), client.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(s.clone(), client.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(ModelProxy {
            addr,
            sessions,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers a unit: its calls, made with the returned token, go to `upstream`.
    pub fn register(&self, upstream: Upstream, limits: SessionLimits) -> SessionGuard {
        self.register_session(None, upstream, limits)
    }

    /// [`ModelProxy::register`] for unit `unit` of run `run`, whose usage so far
    /// [`ModelProxy::live_usage`] tells.
    pub fn register_unit(
        &self,
        run: &str,
        unit: &str,
        upstream: Upstream,
        limits: SessionLimits,
    ) -> SessionGuard {
        let label = Some((run.to_string(), unit.to_string()));
        self.register_session(label, upstream, limits)
    }

    /// What the agent of unit `unit` of run `run` spent so far, while its session lasts.
    pub fn live_usage(&self, run: &str, unit: &str) -> Option<AttemptUsage> {
        let sessions = lock(&self.sessions);
        sessions.values().find_map(|s| {
            let (r, u) = s.label.as_ref()?;
            (r == run && u == unit).then(|| lock(&s.stats).attempt_usage())
        })
    }

    fn register_session(
        &self,
        label: Option<(String, String)>,
        upstream: Upstream,
        limits: SessionLimits,
    ) -> SessionGuard {
        let token = format!(
            "ase-unit-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let session = Arc::new(Session {
            label,
            upstream,
            limits,
            serial: tokio::sync::Mutex::new(()),
            stats: Mutex::default(),
        });
        lock(&self.sessions).insert(token.clone(), session.clone());
        SessionGuard {
            token,
            sessions: self.sessions.clone(),
            session,
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"message": message, "type": "ase_proxy"}});
    reply(status, "application/json", body.to_string())
}

fn token_of(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = h.get("authorization")?.to_str().ok()?;
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(|t| t.trim().to_string())
}

fn piece(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    if text.len() <= TRANSCRIPT_PIECE_BYTES {
        return text.into_owned();
    }
    let mut cut = TRANSCRIPT_PIECE_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… [{} bytes]", &text[..cut], text.len())
}

fn record(session: &Session, stats: &mut SessionStats, entry: String) {
    if stats.transcript.len() + entry.len() > session.limits.max_transcript {
        stats.transcript_truncated = true;
        return;
    }
    stats.transcript.push_str(&entry);
}

/// Token counts of an answer: a JSON body, or the events of a stream.
fn usage_of(api: AgentApi, body: &[u8]) -> Option<TokenUsage> {
    let from = |v: &Value| -> Option<TokenUsage> {
        let u = v.get("usage")?;
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let (p, c) = match api {
            AgentApi::Anthropic => (n("input_tokens"), n("output_tokens")),
            _ => (n("prompt_tokens"), n("completion_tokens")),
        };
        if p.is_none() && c.is_none() {
            return None;
        }
        let (p, c) = (p.unwrap_or(0), c.unwrap_or(0));
        Some(TokenUsage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: n("total_tokens").unwrap_or(p + c),
        })
    };
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return from(&v);
    }
    // Server-sent events: usage may come in several events (Anthropic: input tokens in
    // `message_start`, output tokens in `message_delta`); take the largest of each.
    let mut found: Option<TokenUsage> = None;
    for line in String::from_utf8_lossy(body).lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        let u = from(&v).or_else(|| v.get("message").and_then(from));
        if let Some(u) = u {
            let f = found.get_or_insert_with(TokenUsage::default);
            f.prompt_tokens = f.prompt_tokens.max(u.prompt_tokens);
            f.completion_tokens = f.completion_tokens.max(u.completion_tokens);
            f.total_tokens = f.prompt_tokens + f.completion_tokens;
        }
    }
    found
}

fn fault_of(status: u16, body: &[u8]) -> Option<ProviderFault> {
    let text = String::from_utf8_lossy(body);
    Some(match status {
        401 | 403 => ProviderFault::Auth,
        402 => ProviderFault::Quota,
        429 if text.contains("insufficient_quota") => ProviderFault::Quota,
        429 => ProviderFault::RateLimited,
        500..=599 => ProviderFault::ServerError,
        _ => return None,
    })
}

/// Whether one more call of `session` may go (counted if so): its unit's budgets, then the
/// run's rate; the refusal the agent gets otherwise.
async fn admit(session: &Session) -> Result<(), Response<Full<Bytes>>> {
    let limits = &session.limits;
    let first = {
        let mut stats = lock(&session.stats);
        let spent = if stats.calls >= limits.max_calls {
            Some((
                "max_calls",
                format!(
                    "ase: this unit's model call budget (max_calls {}) is spent",
                    limits.max_calls
                ),
            ))
        } else if limits.max_tokens > 0 && stats.usage.total_tokens >= limits.max_tokens {
            Some((
                "max_tokens",
                format!(
                    "ase: this unit's token budget (max_tokens {}) is spent",
                    limits.max_tokens
                ),
            ))
        } else {
            None
        };
        if let Some((budget, message)) = spent {
            stats.refused += 1;
            stats.budget_spent = Some(budget);
            return Err(error(StatusCode::BAD_REQUEST, &message));
        }
        stats.calls == 0
    };
    // The unit's lease paid for its first call.
    if let (false, Some(permits), Some((run, unit))) = (first, &limits.permits, &session.label) {
        match permits.acquire(run.clone(), unit.clone()).await {
            CallPermit::Granted => {}
            CallPermit::Wait(after) => {
                let mut stats = lock(&session.stats);
                stats.rate_limited += 1;
                // Not the provider's failure, but the run's condition all the same: an agent
                // that gives up on it is not the model's fault (see `CodingAgents::run_unit`).
                stats.last_fault = Some((
                    ProviderFault::RateLimited,
                    format!(
                        "the run's requests_per_minute held the call back {} ms",
                        after.as_millis()
                    ),
                ));
                return Err(rate_limited(after));
            }
            CallPermit::Refused(reason) => {
                lock(&session.stats).refused += 1;
                return Err(error(
                    StatusCode::CONFLICT,
                    &format!("ase: this unit may make no more calls: {reason}"),
                ));
            }
        }
    }
    lock(&session.stats).calls += 1;
    Ok(())
}

/// HTTP 429 with the wait in both headers agents' clients read (`retry-after` in seconds,
/// `retry-after-ms`), and a type that says it is the run's rate, not the provider's quota.
fn rate_limited(after: Duration) -> Response<Full<Bytes>> {
    let ms = after.as_millis().max(1);
    let body = serde_json::json!({"error": {
        "message": format!("ase: the run's requests_per_minute is spent; retry after {ms} ms"),
        "type": "rate_limit_exceeded",
        "code": "ase_run_rate",
    }});
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("content-type", "application/json")
        .header("retry-after", ms.div_ceil(1000).to_string())
        .header("retry-after-ms", ms.to_string())
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn handle(
    sessions: Sessions,
    client: reqwest::Client,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(session) = token_of(&req).and_then(|t| lock(&sessions).get(&t).cloned()) else {
        return Ok(error(StatusCode::UNAUTHORIZED, "unknown token"));
    };
    let path = req.uri().path().to_string();
    // Claude Code asks for `/v1/messages?beta=true`: the query goes on to the endpoint.
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let api = session.upstream.api;
    let route_ok = req.method() == hyper::Method::POST
        && match api {
            AgentApi::Openai => path.ends_with("/chat/completions"),
            AgentApi::Anthropic => path.starts_with("/v1/messages"),
            AgentApi::Gemini => false,
        };
    if !route_ok {
        lock(&session.stats).refused += 1;
        return Ok(error(
            StatusCode::NOT_FOUND,
            &format!("the proxy serves no {} {path}", req.method()),
        ));
    }
    let counts_as_call = !path.ends_with("/count_tokens");
    // One call of a unit at a time (see the module's comment), released when answered.
    let _serial = session.serial.lock().await;
    if counts_as_call {
        if let Err(refusal) = admit(&session).await {
            return Ok(refusal);
        }
    }
    let headers = req.headers().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(StatusCode::PAYLOAD_TOO_LARGE, "request too large")),
    };
    // The run's model, whatever the agent asks for: the run pays for one model.
    let mut json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "the body is not JSON")),
    };
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "model".into(),
            Value::String(session.upstream.model.clone()),
        );
    }
    let out_body = serde_json::to_vec(&json).unwrap_or_default();
    let up = &session.upstream;
    let url = match api {
        AgentApi::Anthropic => format!("{}{path}{query}", up.base_url.trim_end_matches('/')),
        _ => format!("{}/chat/completions", up.base_url.trim_end_matches('/')),
    };
    let mut rb = client
        .post(&url)
        .timeout(up.request_timeout)
        .header("content-type", "application/json")
        .body(out_body.clone());
    if let Some(key) = &up.key {
        rb = match api {
            AgentApi::Anthropic => rb.header("x-api-key", key.expose()),
            _ => rb.bearer_auth(key.expose()),
        };
    }
    for h in ["anthropic-version", "anthropic-beta", "accept"] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
            rb = rb.header(h, v);
        }
    }
    let sent = rb.send().await;
    let (status, content_type, answer) = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            match resp.bytes().await {
                Ok(b) if b.len() <= MAX_BODY_BYTES => (status, ct, b),
                Ok(_) => (
                    502,
                    "application/json".into(),
                    Bytes::from_static(b"{\"error\":{\"message\":\"answer too large\"}}"),
                ),
                Err(e) => {
                    let fault = if e.is_timeout() {
                        ProviderFault::Timeout
                    } else {
                        ProviderFault::Network
                    };
                    lock(&session.stats).last_fault = Some((fault, e.to_string()));
                    return Ok(error(StatusCode::BAD_GATEWAY, "the model endpoint failed"));
                }
            }
        }
        Err(e) => {
            let fault = if e.is_timeout() {
                ProviderFault::Timeout
            } else {
                ProviderFault::Network
            };
            let mut stats = lock(&session.stats);
            stats.last_fault = Some((fault, format!("{url}: {}", e.without_url())));
            return Ok(error(
                StatusCode::BAD_GATEWAY,
                "the model endpoint is unreachable",
            ));
        }
    };
    {
        let mut stats = lock(&session.stats);
        stats.last_fault = fault_of(status, &answer).map(|f| {
            (
                f,
                format!("HTTP {status}: {}", piece(&answer[..answer.len().min(500)])),
            )
        });
        if (200..300).contains(&status) {
            stats.answered += 1;
            if let Some(u) = usage_of(api, &answer) {
                stats.usage.prompt_tokens += u.prompt_tokens;
                stats.usage.completion_tokens += u.completion_tokens;
                stats.usage.total_tokens += u.total_tokens;
                stats.usage_reported = true;
                if let Some(p) = &up.pricing {
                    stats.cost_usd = Some(stats.cost_usd.unwrap_or(0.0) + p.cost_usd(&u));
                }
            }
        }
        let entry = format!(
            "=== call {} POST {path}\n{}\n--- HTTP {status}\n{}\n",
            stats.calls,
            piece(&out_body),
            piece(&answer)
        );
        record(&session, &mut stats, entry);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok(reply(status, &content_type, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_bodies_and_streams() {
        let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
        assert_eq!(usage_of(AgentApi::Openai, body).unwrap().total_tokens, 13);
        let sse = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n";
        let u = usage_of(AgentApi::Anthropic, sse).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (20, 9, 29)
        );
        assert_eq!(usage_of(AgentApi::Openai, b"{}"), None);
    }

    #[test]
    fn provider_failures_are_classified() {
        assert_eq!(fault_of(401, b""), Some(ProviderFault::Auth));
        assert_eq!(
            fault_of(429, b"{\"error\":{\"code\":\"insufficient_quota\"}}"),
            Some(ProviderFault::Quota)
        );
        assert_eq!(fault_of(429, b""), Some(ProviderFault::RateLimited));
        assert_eq!(fault_of(503, b""), Some(ProviderFault::ServerError));
        assert_eq!(fault_of(400, b""), None);
    }
}
