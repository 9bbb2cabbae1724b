//! The agent-mode model proxy over real HTTP on loopback: a unit's token routes its calls to the
//! run's endpoint, which gets the real key and the run's model; calls and tokens are counted,
//! the transcript kept, the turn budget enforced, unknown tokens refused, the Anthropic
//! Messages route served, and an endpoint's refusal recorded as the provider's fault; the run's
//! rate (permits asked for every call after a unit's first), the unit's call and token budgets
//! and one call of a unit at a time.

use ase_test_support::loopback_http::LoopbackServer;
use ase_worker::coding_agent::proxy::{
    CallPermit, CallPermits, ModelProxy, SessionLimits, Upstream,
};
use ase_worker::coding_agent::AgentApi;
use ase_worker::model::{ApiKey, ProviderFault};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>, Value)>>>;

/// Requests the endpoint is answering now, and the most it ever answered at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// An endpoint that records (path, authorization, x-api-key, body) and answers with usage;
/// a request for model "refuse-me" is answered 401 (the proxy forces the model, so the test
/// sets the upstream model to that); one for "slow" is answered after 50 ms.
fn endpoint() -> (LoopbackServer, Seen, Arc<InFlight>) {
    let seen: Seen = Arc::default();
    let inflight = Arc::new(InFlight::default());
    let f = inflight.clone();
    let s = seen.clone();
    let server = LoopbackServer::start(
        "proxy-endpoint",
        "127.0.0.1:0".parse().unwrap(),
        move |req: Request<Incoming>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                let n = f.now.fetch_add(1, Ordering::SeqCst) + 1;
                f.max.fetch_max(n, Ordering::SeqCst);
                let path = req.uri().path().to_string();
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (auth, xkey) = (h("authorization"), h("x-api-key"));
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&body).unwrap();
                let refuse = body["model"] == "refuse-me";
                if body["model"] == "slow" {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                f.now.fetch_sub(1, Ordering::SeqCst);
                s.lock().unwrap().push((path.clone(), auth, xkey, body));
                let (status, answer) = if refuse {
                    (401, json!({"error": {"message": "invalid api key"}}))
                } else if path.starts_with("/v1/messages") {
                    (
                        200,
                        json!({"type": "message", "content": [],
                                          "usage": {"input_tokens": 7, "output_tokens": 3}}),
                    )
                } else {
                    (
                        200,
                        json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}],
                                          "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
                    )
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(answer.to_string())))
                        .unwrap(),
                )
            }
        },
    );
    (server, seen, inflight)
}

fn limits(max_calls: u32) -> SessionLimits {
    SessionLimits {
        max_calls,
        max_transcript: 1 << 20,
        ..SessionLimits::default()
    }
}

fn upstream(api: AgentApi, base_url: String, model: &str) -> Upstream {
    Upstream {
        api,
        base_url,
        model: model.into(),
        key: Some(ApiKey::new("sk-real-key").unwrap()),
        pricing: None,
        request_timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn the_proxy_forwards_with_the_real_key_counts_and_enforces_the_budget() {
    let (server, seen, _) = endpoint();
    let ep = server.addr;
    let proxy = ModelProxy::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", proxy.addr());
    let http = reqwest::Client::new();

    let unit = proxy.register(
        upstream(AgentApi::Openai, format!("http://{ep}/v1"), "run-model"),
        limits(2),
    );
    let call = |token: String| {
        let http = http.clone();
        let url = format!("{base}/v1/chat/completions");
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"model": "something-expensive", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..2 {
        let r = call(unit.token().to_string()).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "ok");
    }
    // The budget (2 calls) is spent: refused without reaching the endpoint.
    let r = call(unit.token().to_string()).await;
    assert_eq!(r.status(), 400);
    // A token the proxy did not hand out.
    assert_eq!(call("ase-unit-forged".into()).await.status(), 401);

    let stats = unit.stats();
    assert_eq!((stats.calls, stats.refused), (2, 1));
    assert_eq!(stats.usage.total_tokens, 24);
    assert!(
        stats
            .transcript
            .contains("=== call 2 POST /v1/chat/completions"),
        "{}",
        stats.transcript
    );
    assert!(stats.last_fault.is_none());
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (path, auth, _, body) in seen.iter() {
            assert_eq!(path, "/v1/chat/completions");
            assert_eq!(auth.as_deref(), Some("Bearer sk-real-key"));
            assert_eq!(body["model"], "run-model");
        }
    }

    // Anthropic Messages: x-api-key in, the real key out, usage in its own field names.
    let claude = proxy.register(
        upstream(AgentApi::Anthropic, format!("http://{ep}"), "claude-x"),
        limits(5),
    );
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", claude.token())
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 10, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = claude.stats();
    assert_eq!((s.usage.prompt_tokens, s.usage.completion_tokens), (7, 3));
    {
        let seen = seen.lock().unwrap();
        let (path, auth, xkey, body) = seen.last().unwrap();
        assert_eq!(path, "/v1/messages");
        assert_eq!(auth, &None);
        assert_eq!(xkey.as_deref(), Some("sk-real-key"));
        assert_eq!(body["model"], "claude-x");
    }

    // The endpoint refuses the key: the agent gets the 401, the unit's session the fault.
    let refused = proxy.register(
        upstream(AgentApi::Openai, format!("http://{ep}/v1"), "refuse-me"),
        limits(5),
    );
    assert_eq!(call(refused.token().to_string()).await.status(), 401);
    let f = refused.stats().last_fault.expect("a provider fault");
    assert_eq!(f.0, ProviderFault::Auth);

    // A unit whose session ended is unknown from then on.
    let token = unit.token().to_string();
    drop(unit);
    assert_eq!(call(token).await.status(), 401);
}

#[tokio::test]
async fn a_units_usage_is_told_while_its_session_lasts_answered_calls_as_turns() {
    let (server, _seen, _) = endpoint();
    let ep = server.addr;
    let proxy = ModelProxy::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", proxy.addr());
    let http = reqwest::Client::new();
    let call = |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let unit = proxy.register_unit(
        "run__b",
        "t_cycle1",
        upstream(AgentApi::Openai, format!("http://{ep}/v1"), "run-model"),
        limits(10),
    );
    // Another unit's session, whose endpoint refuses: a forwarded call that is no turn.
    let other = proxy.register_unit(
        "run__b",
        "t_cycle2",
        upstream(AgentApi::Openai, format!("http://{ep}/v1"), "refuse-me"),
        limits(10),
    );
    assert_eq!(
        proxy.live_usage("run__b", "t_cycle1").unwrap().model_calls,
        0
    );
    for _ in 0..3 {
        assert_eq!(call(unit.token().to_string()).await, 200);
    }
    assert_eq!(call(other.token().to_string()).await, 401);
    let u = proxy.live_usage("run__b", "t_cycle1").unwrap();
    assert_eq!((u.model_calls, u.turns), (3, 3));
    assert_eq!(u.usage.total_tokens, 36);
    let o = proxy.live_usage("run__b", "t_cycle2").unwrap();
    assert_eq!((o.model_calls, o.turns), (1, 0));
    assert_eq!(proxy.live_usage("run__b", "t_cycle3"), None);
    assert_eq!(proxy.live_usage("other__b", "t_cycle1"), None);
    drop(unit);
    assert_eq!(proxy.live_usage("run__b", "t_cycle1"), None);
}

/// The run's bucket as a test sets it: `grants` calls left; `revoked`: the lease is gone.
#[derive(Default)]
struct Bucket {
    grants: AtomicU32,
    asked: AtomicU32,
    revoked: AtomicBool,
}

impl CallPermits for Bucket {
    fn acquire(
        &self,
        run: String,
        unit: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = CallPermit> + Send + 'static>> {
        assert_eq!((run.as_str(), unit.as_str()), ("run__r", "t_cycle1"));
        self.asked.fetch_add(1, Ordering::SeqCst);
        let answer = if self.revoked.load(Ordering::SeqCst) {
            CallPermit::Refused("lease 7 is not current".into())
        } else if self
            .grants
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |g| g.checked_sub(1))
            .is_ok()
        {
            CallPermit::Granted
        } else {
            CallPermit::Wait(Duration::from_millis(1500))
        };
        Box::pin(std::future::ready(answer))
    }
}

#[tokio::test]
async fn the_runs_rate_and_the_units_budgets_bound_an_agents_calls() {
    let (server, seen, inflight) = endpoint();
    let ep = server.addr;
    let proxy = ModelProxy::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", proxy.addr());
    let http = reqwest::Client::new();
    let call = |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let bucket = Arc::new(Bucket::default());
    bucket.grants.store(1, Ordering::SeqCst);
    let session = |model: &str, max_calls: u32, max_tokens: u64| {
        proxy.register_unit(
            "run__r",
            "t_cycle1",
            upstream(AgentApi::Openai, format!("http://{ep}/v1"), model),
            SessionLimits {
                max_calls,
                max_tokens,
                max_transcript: 1 << 20,
                permits: Some(bucket.clone()),
            },
        )
    };

    let unit = session("run-model", 4, 0);
    // The first call was paid by the unit's lease: the bucket is not asked.
    assert_eq!(call(unit.token().into()).await.status(), 200);
    assert_eq!(bucket.asked.load(Ordering::SeqCst), 0);
    // The second takes the bucket's one grant.
    assert_eq!(call(unit.token().into()).await.status(), 200);
    assert_eq!(bucket.asked.load(Ordering::SeqCst), 1);
    // The bucket is empty: 429 with when to retry, and the endpoint never sees the call.
    let r = call(unit.token().into()).await;
    assert_eq!(r.status(), 429);
    let header = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(
        (header("retry-after"), header("retry-after-ms")),
        ("2".into(), "1500".into())
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "ase_run_rate");
    assert_eq!(seen.lock().unwrap().len(), 2);
    let s = unit.stats();
    assert_eq!((s.calls, s.rate_limited, s.refused), (2, 1, 0));
    // An agent that gave up there failed for the run's condition, not the model's.
    assert_eq!(s.last_fault.map(|f| f.0), Some(ProviderFault::RateLimited));
    // The bucket refilled: the agent's retries go, up to the unit's call budget (4).
    bucket.grants.store(10, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(call(unit.token().into()).await.status(), 200);
    }
    assert!(unit.stats().last_fault.is_none());
    let asked = bucket.asked.load(Ordering::SeqCst);
    let r = call(unit.token().into()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_calls 4"),
        "{v}"
    );
    // A spent budget asks nothing of the run's rate.
    assert_eq!(bucket.asked.load(Ordering::SeqCst), asked);
    let s = unit.stats();
    assert_eq!(
        (s.calls, s.answered, s.rate_limited, s.refused),
        (4, 4, 1, 1)
    );
    assert_eq!(s.budget_spent, Some("max_calls"));
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!(
        proxy.live_usage("run__r", "t_cycle1").unwrap().model_calls,
        4
    );
    drop(unit);

    // The token budget: each answer counts 12 tokens; 20 allow two calls.
    let unit = session("run-model", 100, 20);
    for _ in 0..2 {
        assert_eq!(call(unit.token().into()).await.status(), 200);
    }
    let r = call(unit.token().into()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens 20"),
        "{v}"
    );
    let s = unit.stats();
    assert_eq!((s.calls, s.refused, s.usage.total_tokens), (2, 1, 24));
    assert_eq!(s.budget_spent, Some("max_tokens"));
    drop(unit);

    // The unit's lease is gone: its next call is refused, not forwarded.
    let unit = session("run-model", 100, 0);
    assert_eq!(call(unit.token().into()).await.status(), 200);
    bucket.revoked.store(true, Ordering::SeqCst);
    assert_eq!(call(unit.token().into()).await.status(), 409);
    let s = unit.stats();
    assert_eq!((s.calls, s.refused), (1, 1));
    bucket.revoked.store(false, Ordering::SeqCst);
    drop(unit);

    // A unit's calls go one at a time, however many the agent sends at once.
    let unit = session("slow", 100, 0);
    bucket.grants.store(100, Ordering::SeqCst);
    let before = seen.lock().unwrap().len();
    let all: Vec<_> = (0..6).map(|_| call(unit.token().into())).collect();
    for r in futures_util::future::join_all(all).await {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(seen.lock().unwrap().len(), before + 6);
    assert_eq!(inflight.max.load(Ordering::SeqCst), 1);
    assert_eq!(unit.stats().calls, 6);
}
