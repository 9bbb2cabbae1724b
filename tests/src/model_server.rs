//! The model API of the cluster tests: an OpenAI-compatible server (`POST /v1/chat/completions`,
//! HTTP/1.1, JSON) on an address the test chooses. It recognises the task of a prompt by the
//! function name just before the `<MASKED>` line, counts calls per task, and answers with the
//! task's fixing patch after an optional delay (so that generations are in flight when a test
//! kills a process).

use crate::project::TaskFixture;
use ase_common::masking::MASK_TOKEN;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request bodies read at most (a prompt of the fixture is a few KiB).
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// How the server answers.
#[derive(Debug, Clone, Default)]
pub struct ModelBehaviour {
    /// Wait this long before answering each call.
    pub delay: Duration,
}

struct State {
    /// function name -> (instance id, answer)
    answers: BTreeMap<String, (String, String)>,
    behaviour: ModelBehaviour,
    calls: Mutex<BTreeMap<String, u32>>,
    /// Calls received and not yet answered (waiting out the delay).
    in_flight: std::sync::atomic::AtomicU32,
    unrecognised: Mutex<Vec<String>>,
}

/// A running server; stops when dropped (its runtime thread ends with the process's tests).
pub struct FakeModel {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
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
        });
        let listener = std::net::TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("model server: bind {bind}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        std::thread::Builder::new()
            .name("fake-model".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(listener, st, rx));
            })
            .unwrap();
        FakeModel {
            addr,
            state,
            shutdown: Some(tx),
        }
    }

    /// `base_url` of the OpenAI config for clients that reach the server at `host`.
    pub fn base_url_via(&self, host: &str) -> String {
        format!("http://{host}:{}/v1", self.addr.port())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Calls answered so far, per instance id.
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

impl Drop for FakeModel {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let st = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
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
