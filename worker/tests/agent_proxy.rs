//! The agent-mode model proxy over real HTTP on loopback: a unit's token routes its calls to the
//! run's endpoint, which gets the real key and the run's model; calls and tokens are counted,
//! the transcript kept, the turn budget enforced, unknown tokens refused, the Anthropic
//! Messages route served, and an endpoint's refusal recorded as the provider's fault.

use ase_worker::coding_agent::proxy::{ModelProxy, Upstream};
use ase_worker::coding_agent::AgentApi;
use ase_worker::model::{ApiKey, ProviderFault};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>, Value)>>>;

/// An endpoint that records (path, authorization, x-api-key, body) and answers with usage;
/// a request for model "refuse-me" is answered 401 (the proxy forces the model, so the test
/// sets the upstream model to that).
async fn endpoint() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
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
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
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
    let (ep, seen) = endpoint().await;
    let proxy = ModelProxy::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", proxy.addr());
    let http = reqwest::Client::new();

    let unit = proxy.register(
        upstream(AgentApi::Openai, format!("http://{ep}/v1"), "run-model"),
        2,
        1 << 20,
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
        5,
        1 << 20,
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
        5,
        1 << 20,
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
    let (ep, _seen) = endpoint().await;
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
        10,
        1 << 20,
    );
    // Another unit's session, whose endpoint refuses: a forwarded call that is no turn.
    let other = proxy.register_unit(
        "run__b",
        "t_cycle2",
        upstream(AgentApi::Openai, format!("http://{ep}/v1"), "refuse-me"),
        10,
        1 << 20,
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
