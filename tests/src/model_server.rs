//! The model API of the cluster tests: an OpenAI-compatible server (`POST /v1/chat/completions`,
//! HTTP/1.1, JSON) on an address the test chooses. It recognises the task of a prompt by the
//! function name just before the `<MASKED>` line, counts calls per task, and answers with the
//! task's fixing patch after an optional delay (so that generations are in flight when a test
//! kills a process). Windows of provider failures (429 with `Retry-After`, 5xx) can be set.

use crate::project::TaskFixture;
use ase_common::prompt::masking::MASK_TOKEN;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Request bodies read at most (a prompt of the fixture is a few KiB).
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// How the server answers.
#[derive(Debug, Clone, Default)]
pub struct ModelBehaviour {
    /// Wait this long before answering each call.
    pub delay: Duration,
}

/// A window of provider failures: every call in it is answered `status` (429 with
/// `Retry-After: retry_after_secs` when set, or 5xx) for `duration`.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub duration: Duration,
}

/// The windows set by [`FakeModel::set_faults`] and what they did.
#[derive(Debug, Default)]
struct Faults {
    plan: Vec<FaultWindow>,
    /// The first call after the plan was set: the windows follow one another from there.
    started: Option<Instant>,
    /// Calls answered with a failure, by status.
    failed: BTreeMap<u16, u32>,
    /// The first call answered after the last window.
    first_answer_after: Option<Instant>,
}

/// What the fault windows did (see [`FakeModel::fault_report`]).
#[derive(Debug, Clone)]
pub struct FaultReport {
    /// Calls answered with a failure, by status.
    pub failed: BTreeMap<u16, u32>,
    /// From the end of the last window to the first call answered after it.
    pub recovery: Option<Duration>,
}

impl Faults {
    /// The failure to answer a call arriving at `now`, if it falls in a window.
    fn at(&mut self, now: Instant) -> Option<FaultWindow> {
        if self.plan.is_empty() {
            return None;
        }
        let started = *self.started.get_or_insert(now);
        let mut end = started;
        for w in &self.plan {
            end += w.duration;
            if now < end {
                *self.failed.entry(w.status).or_insert(0) += 1;
                return Some(w.clone());
            }
        }
        self.first_answer_after.get_or_insert(now);
        None
    }

    fn end(&self) -> Option<Instant> {
        let total: Duration = self.plan.iter().map(|w| w.duration).sum();
        self.started.map(|s| s + total)
    }
}

struct State {
    /// function name -> (instance id, answer)
    answers: BTreeMap<String, (String, String)>,
    behaviour: ModelBehaviour,
    calls: Mutex<BTreeMap<String, u32>>,
    /// Calls received and not yet answered (waiting out the delay).
    in_flight: std::sync::atomic::AtomicU32,
    unrecognised: Mutex<Vec<String>>,
    faults: Mutex<Faults>,
    /// When set, a call without `Authorization: Bearer KEY` is answered 401.
    required_key: Mutex<Option<String>>,
}

/// A running server; stops when dropped (its runtime thread ends with the process's tests).
pub struct FakeModel {
    pub addr: SocketAddr,
    state: Arc<State>,
    _server: ase_test_support::loopback_http::LoopbackServer,
}

impl FakeModel {
    /// Serves on `bind` (e.g. `127.0.0.1:0`) the fixing answers of `tasks`.
    pub fn start(bind: SocketAddr, tasks: &[TaskFixture], behaviour: ModelBehaviour) -> FakeModel {
        let state = Arc::new(State {
            answers: tasks
                .iter()
                .map(|t| {
                    (
                        t.function.clone(),
                        (t.instance_id.clone(), t.fix_answer.clone()),
                    )
                })
                .collect(),
            behaviour,
            calls: Mutex::new(BTreeMap::new()),
            in_flight: std::sync::atomic::AtomicU32::new(0),
            unrecognised: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            required_key: Mutex::new(None),
        });
        let st = state.clone();
        let server = ase_test_support::loopback_http::LoopbackServer::start(
            "fake-model",
            bind,
            move |req| handle(req, st.clone()),
        );
        FakeModel {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    /// `base_url` of the OpenAI config for clients that reach the server at `host`.
    pub fn base_url_via(&self, host: &str) -> String {
        format!("http://{host}:{}/v1", self.addr.port())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// From the next call on, answers with these failures, one window after the other, then
    /// normally again.
    pub fn set_faults(&self, plan: Vec<FaultWindow>) {
        *self.state.faults.lock().unwrap() = Faults {
            plan,
            ..Faults::default()
        };
    }

    /// From now on, answers 401 (as OpenAI does for a wrong key) to calls without
    /// `Authorization: Bearer KEY`; counted with the failures of [`FakeModel::fault_report`].
    pub fn require_key(&self, key: &str) {
        *self.state.required_key.lock().unwrap() = Some(format!("Bearer {key}"));
    }

    /// The failures answered so far and the time from the end of the windows to the first
    /// answer after them.
    pub fn fault_report(&self) -> FaultReport {
        let f = self.state.faults.lock().unwrap();
        FaultReport {
            failed: f.failed.clone(),
            recovery: f
                .end()
                .zip(f.first_answer_after)
                .map(|(end, first)| first.saturating_duration_since(end)),
        }
    }

    /// Calls answered with a fixing answer so far, per instance id (failures of
    /// [`FakeModel::set_faults`] are not among them).
    pub fn calls(&self) -> BTreeMap<String, u32> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn total_calls(&self) -> u32 {
        self.calls().values().sum()
    }

    /// Calls received whose answer is not sent yet.
    pub fn in_flight(&self) -> u32 {
        self.state
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Prompts that named no task of the fixture (answered 400).
    pub fn unrecognised(&self) -> Vec<String> {
        self.state.unrecognised.lock().unwrap().clone()
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A provider failure as OpenAI sends it: 429 with `Retry-After` and the `rate_limit_exceeded`
/// code, or a 5xx.
fn failure_reply(w: &FaultWindow) -> Response<Full<Bytes>> {
    let body = if w.status == 429 {
        json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                         "code": "rate_limit_exceeded"}})
    } else {
        json!({"error": {"message": "The server had an error while processing your request",
                         "type": "server_error"}})
    };
    let mut r = Response::builder()
        .status(w.status)
        .header("content-type", "application/json");
    if let Some(secs) = w.retry_after_secs {
        r = r.header("retry-after", secs.to_string());
    }
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// The function whose body was masked: the last `function NAME(` before the `<MASKED>` line
/// of a quoted file (`[start of FILE]` ... `[end of FILE]`); the token also occurs in the
/// instructions, outside any file.
pub fn masked_function(prompt: &str) -> Option<String> {
    prompt.match_indices(MASK_TOKEN).find_map(|(at, _)| {
        let before = &prompt[..at];
        let file = &before[before.rfind("[start of ")?..];
        if file.contains("[end of ") {
            return None;
        }
        let rest = &file[file.rfind("function ")? + "function ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    })
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/chat/completions" {
        return Ok(reply(404, json!({"error": {"message": "not found"}})));
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(reply(413, json!({"error": {"message": e.to_string()}}))),
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(
            400,
            json!({"error": {"message": "body is not JSON"}}),
        ));
    };
    let prompt: String = v["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let known = masked_function(&prompt).and_then(|f| state.answers.get(&f).cloned());
    let Some((instance_id, answer)) = known else {
        state
            .unrecognised
            .lock()
            .unwrap()
            .push(prompt.chars().take(2000).collect());
        return Ok(reply(400, json!({"error": {"message": "unknown prompt"}})));
    };
    let required = state.required_key.lock().unwrap().clone();
    if required.is_some() && authorization != required {
        *state.faults.lock().unwrap().failed.entry(401).or_insert(0) += 1;
        return Ok(reply(
            401,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}),
        ));
    }
    let fault = state.faults.lock().unwrap().at(Instant::now());
    if let Some(w) = fault {
        return Ok(failure_reply(&w));
    }
    // Counted on arrival: a call whose caller dies while waiting still happened.
    *state.calls.lock().unwrap().entry(instance_id).or_insert(0) += 1;
    if !state.behaviour.delay.is_zero() {
        use std::sync::atomic::Ordering;
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(state.behaviour.delay).await;
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    Ok(reply(
        200,
        json!({
            "id": "chatcmpl-cluster",
            "object": "chat.completion",
            "model": v["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    ))
}
