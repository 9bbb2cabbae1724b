//! The model of the Claude Code agent-mode test: an Anthropic Messages API server
//! (`POST /v1/messages`, HTTP/1.1) that scripts a tool-using agent's turns, speaking the wire
//! protocol Claude Code uses: the `x-api-key` and `anthropic-version` headers, `max_tokens`
//! required, and with `"stream": true` (what Claude Code asks for) a server-sent event stream
//! `message_start`, `ping`, `content_block_start` / `content_block_delta` (`text_delta`,
//! `input_json_delta` in pieces) / `content_block_stop` per block, `message_delta` (stop reason,
//! output tokens) and `message_stop`, sent chunk by chunk. Without `stream` the same message is
//! one JSON body. `POST /v1/messages/count_tokens` answers `{"input_tokens": N}`.
//!
//! Each answer is a text block and one `tool_use` block of Claude Code's tools (`Bash`, `Read`,
//! `Write`, `Edit`), the script's next step; the step index is the number of `tool_result`
//! blocks the request holds (Claude Code merges assistant turns that share a message id, so each
//! answer has its own). After the last step the answer is text with `end_turn`, and Claude Code
//! exits. A script is chosen by the request's `model` (the worker's proxy sets the run's) and the
//! task file the prompt names ("In the file `PATH`"). Every request is recorded.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Tokens every answer reports (`message_start` input, `message_delta` output).
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 10;
/// Message ids, unique per answer.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One step of a scripted agent: a call of one of Claude Code's tools. Paths are relative to
/// the workspace (Claude Code's file tools take absolute paths: `/workspace/PATH`).
#[derive(Debug, Clone)]
pub enum ToolStep {
    Bash(String),
    Read(String),
    Write {
        file: String,
        content: String,
    },
    Edit {
        file: String,
        old: String,
        new: String,
    },
}

impl ToolStep {
    fn tool(&self) -> (&'static str, Value) {
        let abs = |f: &str| format!("/workspace/{f}");
        match self {
            ToolStep::Bash(c) => (
                "Bash",
                json!({"command": c, "description": "scripted step"}),
            ),
            ToolStep::Read(f) => ("Read", json!({"file_path": abs(f)})),
            ToolStep::Write { file, content } => {
                ("Write", json!({"file_path": abs(file), "content": content}))
            }
            ToolStep::Edit { file, old, new } => (
                "Edit",
                json!({"file_path": abs(file), "old_string": old, "new_string": new}),
            ),
        }
    }
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query (`/v1/messages?beta=true`).
    pub path: String,
    pub api_key: Option<String>,
    pub anthropic_version: Option<String>,
    pub model: String,
    pub file: Option<String>,
    pub stream: bool,
    /// Names of the tools the request offers.
    pub tools: Vec<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    scripts: BTreeMap<(String, String), Vec<ToolStep>>,
    requests: Vec<Recorded>,
}

pub struct ScriptedAnthropicModel {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: ase_test_support::loopback_http::LoopbackServer,
}

impl ScriptedAnthropicModel {
    pub fn start() -> ScriptedAnthropicModel {
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let server = ase_test_support::loopback_http::LoopbackServer::start(
            "anthropic-model",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            move |req| handle(req, st.clone()),
        );
        ScriptedAnthropicModel {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    /// The Messages API's root (clients append `/v1/messages`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The steps of the agent of `model` on the task whose file is `file`.
    pub fn script(&self, model: &str, file: &str, steps: Vec<ToolStep>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert((model.to_string(), file.to_string()), steps);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A response body sent as the given chunks, one frame each (chunked transfer encoding, as a
/// real event stream arrives).
pub struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn reply(status: u16, body: Value) -> Response<Chunks> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Chunks(VecDeque::from([Bytes::from(body.to_string())])))
        .unwrap()
}

/// The Messages API's error shape.
fn api_error(status: u16, kind: &str, message: &str) -> Response<Chunks> {
    reply(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// Every text of a message's content (a string or text blocks).
fn texts(content: &Value) -> Vec<&str> {
    match content {
        Value::String(s) => vec![s.as_str()],
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => vec![],
    }
}

/// The task file the prompt names.
pub fn prompt_file(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| texts(&m["content"]))
        .find_map(|text| {
            let at = text.find("In the file `")? + "In the file `".len();
            let end = text[at..].find('`')?;
            Some(text[at..at + end].to_string())
        })
}

/// Every tool result the agent sent back (what its tools printed), in order.
pub fn tool_outputs(body: &Value) -> Vec<String> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return vec![];
    };
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            other => texts(other).join("\n"),
        })
        .collect()
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Server-sent events of `message`, chunk by chunk; the tool input arrives in two pieces.
fn event_stream(message: &Value) -> VecDeque<Bytes> {
    let mut events: Vec<(&str, Value)> = Vec::new();
    let mut start = message.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = json!({"input_tokens": INPUT_TOKENS, "output_tokens": 1});
    events.push((
        "message_start",
        json!({"type": "message_start", "message": start}),
    ));
    events.push(("ping", json!({"type": "ping"})));
    for (i, block) in message["content"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        match block["type"].as_str() {
            Some("tool_use") => {
                let mut empty = block.clone();
                empty["input"] = json!({});
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": empty}),
                ));
                let input = block["input"].to_string();
                let mut cut = input.len() / 2;
                while !input.is_char_boundary(cut) {
                    cut += 1;
                }
                for part in [&input[..cut], &input[cut..]] {
                    events.push((
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
            }
            _ => {
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                           "content_block": {"type": "text", "text": ""}}),
                ));
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i,
                           "delta": {"type": "text_delta", "text": block["text"]}}),
                ));
            }
        }
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
               "usage": {"output_tokens": OUTPUT_TOKENS}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
        .into_iter()
        .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Chunks>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let route = req.uri().path().to_string();
    if req.method() != hyper::Method::POST
        || !(route == "/v1/messages" || route == "/v1/messages/count_tokens")
    {
        return Ok(api_error(
            404,
            "not_found_error",
            &format!("no route {route}"),
        ));
    }
    let api_key = header(&req, "x-api-key");
    let anthropic_version = header(&req, "anthropic-version");
    let Ok(body) = Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    else {
        return Ok(api_error(413, "request_too_large", "request too large"));
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return Ok(api_error(
            400,
            "invalid_request_error",
            "the body is not JSON",
        ));
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let file = prompt_file(&body);
    let stream = body["stream"].as_bool().unwrap_or(false);
    let tools: Vec<String> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let turn = tool_outputs(&body).len();
    let step = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            path: path.clone(),
            api_key: api_key.clone(),
            anthropic_version: anthropic_version.clone(),
            model: model.clone(),
            file: file.clone(),
            stream,
            tools: tools.clone(),
            body: body.clone(),
        });
        if route.ends_with("/count_tokens") {
            return Ok(reply(200, json!({"input_tokens": INPUT_TOKENS})));
        }
        if api_key.is_none() {
            return Ok(api_error(
                401,
                "authentication_error",
                "x-api-key header is required",
            ));
        }
        if anthropic_version.is_none() {
            return Ok(api_error(
                400,
                "invalid_request_error",
                "anthropic-version header is required",
            ));
        }
        if body["max_tokens"].as_u64().is_none() {
            return Ok(api_error(
                400,
                "invalid_request_error",
                "max_tokens: Field required",
            ));
        }
        let Some(steps) = file
            .as_ref()
            .and_then(|f| st.scripts.get(&(model.clone(), f.clone())))
        else {
            return Ok(api_error(
                400,
                "invalid_request_error",
                &format!("no script for model {model:?}, file {file:?}"),
            ));
        };
        steps.get(turn).cloned()
    };
    let (content, stop_reason) = match &step {
        Some(s) => {
            let (name, input) = s.tool();
            if !tools.iter().any(|t| t == name) {
                return Ok(api_error(
                    400,
                    "invalid_request_error",
                    &format!("the script calls {name}, the request offers {tools:?}"),
                ));
            }
            (
                json!([
                    {"type": "text", "text": format!("Step {turn}.")},
                    {"type": "tool_use", "id": format!("toolu_{turn:04}"), "name": name, "input": input}
                ]),
                "tool_use",
            )
        }
        None => (json!([{"type": "text", "text": "Done."}]), "end_turn"),
    };
    let message = json!({
        "id": format!("msg_{:016x}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}
    });
    if !stream {
        return Ok(reply(200, message));
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Chunks(event_stream(&message)))
        .unwrap())
}

/// The Claude Code image `deploy/images/build.sh agent-claude` builds.
pub const CLAUDE_IMAGE: &str = "ase-agent-claude-code:latest";

/// Whether a daemon answers and holds [`CLAUDE_IMAGE`]; false once the test said why it cannot
/// run (a failure under `CI=true`).
pub fn claude_image_or_skip() -> bool {
    if !crate::docker_cluster::docker_or_skip() {
        return false;
    }
    let inspect = std::process::Command::new("docker")
        .args(["image", "inspect", CLAUDE_IMAGE])
        .output();
    if !inspect.is_ok_and(|o| o.status.success()) {
        ase_test_support::unavailable_unless(
            &format!("the Claude Code image {CLAUDE_IMAGE} is not built"),
            "run deploy/images/build.sh agent-claude",
        );
        return false;
    }
    true
}
