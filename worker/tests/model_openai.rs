//! The OpenAI-compatible client against a scripted HTTP server on 127.0.0.1 that speaks the
//! real wire protocol (HTTP/1.1, `POST /v1/chat/completions`, JSON bodies, status codes,
//! `Retry-After`). Timing is only asserted as lower bounds, never as upper bounds.

use ase_test_support::loopback_http::LoopbackServer;
use ase_worker::model::backoff::RetryPolicy;
use ase_worker::model::{
    ApiKey, ApiKeySource, ChatPrompt, FailureReason, InfraFailure, ModelFailure, OpenAiClient,
    OpenAiConfig, OpenAiError, Pricing, TokenParam, TokenUsage,
};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

const KEY: &str = "sk-test-5ecret-KEY-0123456789";

/// What the server answers to one call.
#[derive(Clone)]
enum Reply {
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A 200 whose body of `len` bytes is streamed in chunks, without a Content-Length.
    Streamed { len: usize },
    /// A 429 whose `Retry-After` is the HTTP date `secs` after the moment of the reply.
    RateLimitedUntil { secs: u64 },
    /// Answer only after `delay` (longer than the client's timeout).
    Slow { delay: Duration, reply: Box<Reply> },
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply::Status {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

fn completion(content: Value) -> Reply {
    json_reply(
        200,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
        }),
    )
}

fn status_with(status: u16, headers: Vec<(&'static str, String)>) -> Reply {
    Reply::Status {
        status,
        headers,
        body: br#"{"error":{"message":"try later","type":"server"}}"#.to_vec(),
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
    at: Instant,
}

struct MockServer {
    base_url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    _server: LoopbackServer,
}

impl MockServer {
    /// Serve the scripted replies in order; the last one repeats.
    async fn start(script: Vec<Reply>) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (c, s) = (calls.clone(), script.clone());
        let server =
            LoopbackServer::start("mock-openai", "127.0.0.1:0".parse().unwrap(), move |req| {
                handle(req, c.clone(), s.clone())
            });
        MockServer {
            base_url: format!("http://{}/v1", server.addr),
            calls,
            _server: server,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn handle(
    req: Request<Incoming>,
    calls: Arc<Mutex<Vec<Call>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) -> Result<MockResponse, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let (authorization, content_type) = (header("authorization"), header("content-type"));
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    calls.lock().unwrap().push(Call {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        content_type,
        body,
        at: Instant::now(),
    });
    if method != "POST" || path != "/v1/chat/completions" {
        return Ok(build(json_reply(
            404,
            json!({"error": {"message": "no such route"}}),
        ))
        .await);
    }
    let reply = {
        let mut s = script.lock().unwrap();
        if s.len() > 1 {
            s.pop_front().unwrap()
        } else {
            s.front().cloned().expect("empty script")
        }
    };
    // A 401 echoes the credentials, as some gateways do, to prove the client scrubs them.
    if let Reply::Status { status: 401, .. } = reply {
        let echo = format!(
            "Incorrect API key provided: {}",
            authorization.unwrap_or_default()
        );
        return Ok(build(json_reply(401, json!({"error": {"message": echo}}))).await);
    }
    Ok(build(reply).await)
}

type MockResponse = Response<BoxBody<Bytes, Infallible>>;

fn build(reply: Reply) -> Pin<Box<dyn std::future::Future<Output = MockResponse> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Status {
                status,
                headers,
                body,
            } => {
                let mut r = Response::builder().status(status);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r.body(Full::new(Bytes::from(body)).boxed()).unwrap()
            }
            Reply::Streamed { len } => Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Chunks { left: len }.boxed())
                .unwrap(),
            Reply::RateLimitedUntil { secs } => {
                let when = SystemTime::now() + Duration::from_secs(secs);
                build(status_with(
                    429,
                    vec![("retry-after", httpdate::fmt_http_date(when))],
                ))
                .await
            }
            Reply::Slow { delay, reply } => {
                tokio::time::sleep(delay).await;
                build(*reply).await
            }
        }
    })
}

/// A body of `left` bytes of JSON-looking text in 64 KiB chunks, with no known length.
struct Chunks {
    left: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'a'; n])))))
    }
}

fn prompt() -> ChatPrompt {
    ChatPrompt {
        system: "fill in <MASKED>".into(),
        user: "<code>...</code>".into(),
    }
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    }
}

fn config(server: &MockServer, model: &str) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(&server.base_url, model);
    c.api_key = ApiKeySource::None;
    c.retry = fast_retry(3);
    c.connect_timeout = Duration::from_secs(5);
    c.request_timeout = Duration::from_secs(10);
    c
}

fn client(c: OpenAiConfig) -> OpenAiClient {
    OpenAiClient::with_key(c, Some(ApiKey::new(KEY).unwrap())).unwrap()
}

#[tokio::test]
async fn success_carries_key_token_param_and_records_usage_and_cost() {
    let server = MockServer::start(vec![completion(json!("```php\n$x = 1;\n```"))]).await;
    let mut c = config(&server, "gpt-4o");
    c.max_gen_token = 4096;
    c.top_p = Some(0.9);
    c.extra_body.insert("seed".into(), json!(7));
    c.prices.insert(
        "gpt-4o".into(),
        Pricing {
            input_per_million_usd: 2.5,
            output_per_million_usd: 10.0,
        },
    );
    let g = client(c).generate(&prompt()).await;
    assert!(g.is_success(), "{g:?}");
    assert_eq!(g.answer.as_deref(), Some("```php\n$x = 1;\n```"));
    assert_eq!(g.attempts, 1);
    assert_eq!(
        g.usage,
        Some(TokenUsage {
            prompt_tokens: 1200,
            completion_tokens: 300,
            total_tokens: 1500
        })
    );
    // 1200 * 2.5 / 1e6 + 300 * 10 / 1e6
    assert!(
        (g.cost_usd.unwrap() - 0.006).abs() < 1e-12,
        "{:?}",
        g.cost_usd
    );

    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(
        call.authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    assert!(call
        .content_type
        .as_deref()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(call.body["model"], "gpt-4o");
    assert_eq!(call.body["messages"][0]["role"], "system");
    assert_eq!(call.body["messages"][0]["content"], "fill in <MASKED>");
    assert_eq!(call.body["messages"][1]["role"], "user");
    assert_eq!(call.body["max_completion_tokens"], 4096);
    assert!(call.body.get("max_tokens").is_none());
    assert_eq!(call.body["top_p"], 0.9);
    assert!(call.body.get("temperature").is_none());
    assert_eq!(call.body["seed"], 7);
}

#[tokio::test]
async fn claude_models_get_max_tokens_and_config_can_choose() {
    let server = MockServer::start(vec![completion(json!("ok"))]).await;
    let g = client(config(&server, "claude-sonnet-4"))
        .generate(&prompt())
        .await;
    assert!(g.is_success());
    let mut c = config(&server, "gpt-5");
    c.token_param = Some(TokenParam::MaxTokens);
    c.max_gen_token = 77;
    client(c).generate(&prompt()).await;
    let calls = server.calls();
    assert_eq!(calls[0].body["max_tokens"], 64000);
    assert!(calls[0].body.get("max_completion_tokens").is_none());
    assert_eq!(calls[1].body["max_tokens"], 77);
    assert!(calls[1].body.get("max_completion_tokens").is_none());
    // Without a key no Authorization header is sent.
    let server = MockServer::start(vec![completion(json!("ok"))]).await;
    let keyless = OpenAiClient::new(config(&server, "m")).unwrap();
    assert!(keyless.generate(&prompt()).await.is_success());
    assert_eq!(server.calls()[0].authorization, None);
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_seconds_then_succeeds() {
    let server = MockServer::start(vec![
        status_with(429, vec![("retry-after", "1".into())]),
        completion(json!("done")),
    ])
    .await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(g.answer.as_deref(), Some("done"));
    assert_eq!(g.attempts, 2);
    let calls = server.calls();
    assert_eq!(calls.len(), 2);
    // Our own back-off is at most 40 ms: a gap of a second is the server's Retry-After.
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(950));
    assert!(g.latency >= Duration::from_millis(950));
}

#[tokio::test]
async fn rate_limit_honours_an_http_date() {
    let server = MockServer::start(vec![
        Reply::RateLimitedUntil { secs: 2 },
        completion(json!("done")),
    ])
    .await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(g.attempts, 2);
    let calls = server.calls();
    // The date has a one-second resolution: at least one second of the two remains.
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(500));
}

#[tokio::test]
async fn rate_limited_to_the_end_is_an_infrastructure_failure() {
    let server = MockServer::start(vec![status_with(429, vec![("retry-after", "0".into())])]).await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 3);
    assert_eq!(g.attempts, 3);
    assert_eq!(g.answer, None);
    let failure = g.failure.unwrap();
    assert!(failure.is_retryable());
    assert_eq!(
        failure,
        FailureReason::Infrastructure(InfraFailure::RateLimited {
            retry_after_secs: Some(0)
        })
    );
}

#[tokio::test]
async fn server_errors_are_retried_up_to_max_attempts() {
    let server = MockServer::start(vec![status_with(500, vec![])]).await;
    let mut c = config(&server, "m");
    c.retry = fast_retry(4);
    let g = client(c).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 4);
    assert_eq!(g.attempts, 4);
    match g.failure.unwrap() {
        FailureReason::Infrastructure(InfraFailure::ServerError { status, message }) => {
            assert_eq!(status, 500);
            assert_eq!(message, "try later");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn transient_5xx_then_success() {
    let server = MockServer::start(vec![
        status_with(503, vec![]),
        status_with(502, vec![]),
        completion(json!("fine")),
    ])
    .await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(g.answer.as_deref(), Some("fine"));
    assert_eq!(g.attempts, 3);
    assert_eq!(server.calls().len(), 3);
}

#[tokio::test]
async fn bad_request_is_not_retried_and_is_scored() {
    let server = MockServer::start(vec![json_reply(
        400,
        json!({"error": {"message": "context_length_exceeded"}}),
    )])
    .await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 1);
    assert_eq!(g.attempts, 1);
    let failure = g.failure.unwrap();
    assert!(!failure.is_retryable());
    assert_eq!(
        failure,
        FailureReason::Model(ModelFailure::RequestRejected {
            status: 400,
            message: "context_length_exceeded".into()
        })
    );
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_echoes_the_key() {
    let server = MockServer::start(vec![status_with(401, vec![])]).await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 1);
    let failure = g.failure.unwrap();
    match &failure {
        FailureReason::Infrastructure(InfraFailure::ClientError { status, message }) => {
            assert_eq!(*status, 401);
            assert!(message.contains("<redacted>"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{failure:?} {failure}").contains(KEY));
    assert!(!serde_json::to_string(&failure).unwrap().contains(KEY));
}

#[tokio::test]
async fn empty_choices_is_a_failed_generation_with_usage() {
    let server = MockServer::start(vec![json_reply(
        200,
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}}),
    )])
    .await;
    let mut c = config(&server, "m");
    c.prices.insert(
        "m".into(),
        Pricing {
            input_per_million_usd: 1.0,
            output_per_million_usd: 1.0,
        },
    );
    let g = client(c).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 1);
    assert_eq!(
        g.failure,
        Some(FailureReason::Model(ModelFailure::EmptyChoices))
    );
    assert_eq!(g.usage.unwrap().total_tokens, 10);
    assert!((g.cost_usd.unwrap() - 1e-5).abs() < 1e-15);
}

#[tokio::test]
async fn the_answer_reaches_extraction_byte_for_byte() {
    // A bare unified diff whose last hunk line is a whitespace-only context line, then the final
    // newline: trimming either breaks `git apply`.
    let diff = "--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,2 @@\n-x = 1\n+x = 2\n    \n";
    let server =
        MockServer::start(vec![completion(json!(diff)), completion(json!("  \n\t\n"))]).await;
    let c = client(config(&server, "m"));
    let g = c.generate(&prompt()).await;
    assert_eq!(g.answer.as_deref(), Some(diff));
    // Only white space is still no answer.
    let blank = c.generate(&prompt()).await;
    assert_eq!(blank.answer, None);
    assert!(
        matches!(
            blank.failure,
            Some(FailureReason::Model(ModelFailure::EmptyContent { .. }))
        ),
        "{blank:?}"
    );
}

#[tokio::test]
async fn null_content_is_a_failed_generation() {
    let server = MockServer::start(vec![completion(Value::Null)]).await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 1);
    assert_eq!(g.answer, None);
    assert_eq!(
        g.failure,
        Some(FailureReason::Model(ModelFailure::EmptyContent {
            finish_reason: Some("stop".into())
        }))
    );
}

#[tokio::test]
async fn non_json_body_is_a_failed_generation() {
    let server = MockServer::start(vec![Reply::Status {
        status: 200,
        headers: vec![("content-type", "text/html".into())],
        body: b"<html>gateway says hi</html>".to_vec(),
    }])
    .await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert_eq!(server.calls().len(), 1);
    match g.failure.unwrap() {
        FailureReason::Model(ModelFailure::MalformedResponse { detail }) => {
            assert!(detail.contains("gateway says hi"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn huge_bodies_are_bounded_with_or_without_content_length() {
    let limit = 256 * 1024;
    for reply in [
        Reply::Streamed { len: 4 << 20 },
        Reply::Status {
            status: 200,
            headers: vec![],
            body: vec![b'a'; 1 << 20],
        },
    ] {
        let server = MockServer::start(vec![reply]).await;
        let mut c = config(&server, "m");
        c.max_response_bytes = limit;
        let g = client(c).generate(&prompt()).await;
        assert_eq!(server.calls().len(), 1);
        assert_eq!(
            g.failure,
            Some(FailureReason::Model(ModelFailure::ResponseTooLarge {
                limit_bytes: limit
            }))
        );
    }
    // Under the bound, a streamed body is read whole.
    let server = MockServer::start(vec![Reply::Streamed { len: 1000 }]).await;
    let g = client(config(&server, "m")).generate(&prompt()).await;
    assert!(matches!(
        g.failure,
        Some(FailureReason::Model(ModelFailure::MalformedResponse { .. }))
    ));
}

#[tokio::test]
async fn timeouts_are_retried_then_reported_as_infrastructure() {
    let server = MockServer::start(vec![Reply::Slow {
        delay: Duration::from_secs(5),
        reply: Box::new(completion(json!("late"))),
    }])
    .await;
    let mut c = config(&server, "m");
    c.request_timeout = Duration::from_millis(300);
    c.retry = fast_retry(2);
    let g = client(c).generate(&prompt()).await;
    assert_eq!(g.attempts, 2);
    assert_eq!(server.calls().len(), 2);
    assert_eq!(
        g.failure,
        Some(FailureReason::Infrastructure(InfraFailure::Timeout))
    );
}

#[tokio::test]
async fn connection_refused_is_a_network_failure_after_all_attempts() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = OpenAiConfig::new(format!("http://127.0.0.1:{port}/v1"), "m");
    c.api_key = ApiKeySource::None;
    c.retry = fast_retry(3);
    let g = OpenAiClient::new(c).unwrap().generate(&prompt()).await;
    assert_eq!(g.attempts, 3);
    let failure = g.failure.unwrap();
    assert!(failure.is_retryable());
    assert!(
        matches!(
            failure,
            FailureReason::Infrastructure(InfraFailure::Network { .. })
        ),
        "{failure:?}"
    );
}

#[test]
fn key_never_appears_in_debug_or_display() {
    let key = ApiKey::new(KEY).unwrap();
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    assert_eq!(format!("{key}"), "<redacted>");
    assert_eq!(key.expose(), KEY);

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut c = OpenAiConfig::new("http://127.0.0.1:9/v1", "m");
    c.api_key = ApiKeySource::File {
        path: key_file.clone(),
    };
    let from_file = OpenAiClient::new(c.clone()).unwrap();
    let shown = format!("{c:?} {from_file:?} {:#?}", from_file.config());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");

    let var = "ASE_MODEL_TEST_KEY_DEBUG";
    std::env::set_var(var, KEY);
    c.api_key = ApiKeySource::Env { var: var.into() };
    let from_env = OpenAiClient::new(c).unwrap();
    assert!(!format!("{from_env:?}").contains(KEY));
}

#[test]
fn key_sources_report_where_they_looked() {
    let mut c = OpenAiConfig::new("http://127.0.0.1:9/v1", "m");
    c.api_key = ApiKeySource::Env {
        var: "ASE_MODEL_TEST_KEY_UNSET".into(),
    };
    let e = OpenAiClient::new(c.clone()).unwrap_err();
    assert!(matches!(e, OpenAiError::KeyEnvMissing { .. }));
    assert!(e.to_string().contains("ASE_MODEL_TEST_KEY_UNSET"));

    c.api_key = ApiKeySource::File {
        path: "/nonexistent/ase/key".into(),
    };
    let e = OpenAiClient::new(c.clone()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ase/key"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    c.api_key = ApiKeySource::File { path: empty };
    assert!(matches!(
        OpenAiClient::new(c).unwrap_err(),
        OpenAiError::EmptyKey
    ));
}

#[test]
fn config_reads_from_json_with_defaults() {
    let c: OpenAiConfig = serde_json::from_value(json!({
        "base_url": "https://api.example.com/v1",
        "model": "claude-x",
        "api_key": {"from": "file", "path": "/run/secrets/key"},
        "request_timeout": 90,
        "retry": {"max_attempts": 5},
        "prices": {"claude-x": {"input_per_million_usd": 3, "output_per_million_usd": 15}}
    }))
    .unwrap();
    assert_eq!(c.max_gen_token, 64000);
    assert_eq!(c.effective_token_param(), TokenParam::MaxTokens);
    assert_eq!(c.request_timeout, Duration::from_secs(90));
    assert_eq!(c.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.retry.max_attempts, 5);
    assert_eq!(c.max_response_bytes, 16 << 20);
    // Building an HTTPS client sets up rustls: with two crypto providers in the graph and none
    // chosen, this is where it would panic.
    assert!(OpenAiClient::with_key(c.clone(), None).is_ok());
    assert_eq!(
        c.api_key,
        ApiKeySource::File {
            path: "/run/secrets/key".into()
        }
    );
    let err = serde_json::from_value::<OpenAiConfig>(json!({
        "base_url": "http://x/v1", "model": "m", "api_key": "sk-inline"
    }))
    .unwrap_err();
    // A key written inline is refused, and the refusal does not quote it.
    assert!(!err.to_string().contains("sk-inline"), "{err}");
}

#[tokio::test]
async fn provider_sends_the_units_prompt() {
    use ase_common::dataset::{LineRange, StaticSpec, Task, TaskSpec};
    use ase_worker::model::{ModelProvider, UnitInput};

    let server = MockServer::start(vec![completion(json!("<patch>x</patch>"))]).await;
    let provider = ModelProvider::OpenAi(Box::new(client(config(&server, "m"))));
    assert_eq!(provider.kind(), "openai");
    assert!(!format!("{provider:?}").contains(KEY));
    let task = Task {
        instance_id: "sqli_01".into(),
        repo: "acme/shop".into(),
        base_commit: "abc".into(),
        vuln_file: "a.php".into(),
        vuln_lines: LineRange { start: 2, end: 2 },
        language: "php".into(),
        vuln_source: "CVE-1".into(),
        vuln_type: "SQLI".into(),
        cwe_id: "CWE-89".into(),
        spec: TaskSpec::V1(StaticSpec {
            seed: true,
            detected_tool: "t".into(),
            detected_vul_num: 1,
            patch_commit: None,
        }),
        extra: Default::default(),
    };
    let masked =
        ase_common::prompt::masking::mask("sqli_01", "a.php", "a\nb\nc\n", task.vuln_lines)
            .unwrap();
    let p = ChatPrompt {
        system: "SYS".into(),
        user: "USER".into(),
    };
    let g = provider
        .generate(&UnitInput {
            task: &task,
            round: 1,
            prompt: &p,
            masked: &masked,
        })
        .await;
    assert_eq!(g.answer.as_deref(), Some("<patch>x</patch>"));
    let body = &server.calls()[0].body;
    assert_eq!(body["messages"][0]["content"], "SYS");
    assert_eq!(body["messages"][1]["content"], "USER");
}

/// The coordinator revokes a generate lease at its execution deadline and pays for the unit
/// again: with the client's default settings a slow answer must arrive before that.
#[test]
fn the_coordinators_generate_deadline_outlasts_the_default_request_timeout() {
    let timeout = OpenAiConfig::new("http://127.0.0.1:9/v1", "m").request_timeout;
    let deadline =
        Duration::from_millis(ase_coordinator::CoordinatorConfig::default().generate_deadline_ms);
    assert!(
        deadline > timeout,
        "generate deadline {deadline:?} <= model request timeout {timeout:?}"
    );
}
