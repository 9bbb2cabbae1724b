//! The model of the agent-mode tests: an OpenAI-compatible server (`POST /v1/chat/completions`,
//! HTTP/1.1, JSON) that scripts a tool-calling agent's turns. mini-swe-agent's default config
//! calls a `bash` tool: the server answers each request with one `tool_calls` entry whose
//! command is the script's next step (the step index is the number of assistant messages the
//! request already holds), then with the command mini-swe-agent stops on
//! (`echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`).
//!
//! A script is chosen by the request's `model` (the worker's proxy sets the run's) and the task
//! file the prompt names ("In the file `PATH`"). Every request is recorded (its
//! `Authorization` header and body) for the tests to read what the agent saw. A test may make it
//! refuse every call without a given key (`require_key`), as a provider refuses a revoked one.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const MAX_REQUEST_BYTES: usize = 16 << 20;
/// The command mini-swe-agent ends its run on.
pub const SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub model: String,
    pub file: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// (model, task file) -> bash commands, in order.
    scripts: BTreeMap<(String, String), Vec<String>>,
    requests: Vec<Recorded>,
    /// When set, a request without `Bearer KEY` is refused as a provider refuses a bad key.
    required_key: Option<String>,
}

pub struct ScriptedAgentModel {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: ase_test_support::loopback_http::LoopbackServer,
}

impl ScriptedAgentModel {
    pub fn start() -> ScriptedAgentModel {
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let server = ase_test_support::loopback_http::LoopbackServer::start(
            "agent-model",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            move |req| handle(req, st.clone()),
        );
        ScriptedAgentModel {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The steps of the agent of `model` on the task whose file is `file`.
    pub fn script(&self, model: &str, file: &str, steps: Vec<String>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert((model.to_string(), file.to_string()), steps);
    }

    /// From now on, refuse (HTTP 401, OpenAI's `invalid_api_key`) every request that does not
    /// carry `key`; `None`: accept any.
    pub fn require_key(&self, key: Option<&str>) {
        self.state.lock().unwrap().required_key = key.map(str::to_string);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// The task file a prompt names.
pub fn prompt_file(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    messages.iter().find_map(|m| {
        let text = m.get("content")?.as_str()?;
        let at = text.find("In the file `")? + "In the file `".len();
        let end = text[at..].find('`')?;
        Some(text[at..at + end].to_string())
    })
}

/// Every tool result the agent sent back (what its commands printed), in order.
pub fn tool_outputs(body: &Value) -> Vec<String> {
    body.get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
                .map(|m| match m.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/chat/completions" {
        return Ok(reply(404, json!({"error": {"message": "not found"}})));
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(body) = Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    else {
        return Ok(reply(413, json!({"error": {"message": "too large"}})));
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return Ok(reply(400, json!({"error": {"message": "not JSON"}})));
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let file = prompt_file(&body);
    let turn = body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["role"].as_str() == Some("assistant"))
                .count()
        })
        .unwrap_or(0);
    let command = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            authorization,
            model: model.clone(),
            file: file.clone(),
            body: body.clone(),
        });
        if let Some(key) = &st.required_key {
            if st.requests.last().and_then(|r| r.authorization.as_deref())
                != Some(format!("Bearer {key}").as_str())
            {
                return Ok(reply(
                    401,
                    json!({"error": {"message": "Incorrect API key provided",
                                     "type": "invalid_request_error", "code": "invalid_api_key"}}),
                ));
            }
        }
        let Some(steps) = file
            .as_ref()
            .and_then(|f| st.scripts.get(&(model.clone(), f.clone())))
        else {
            return Ok(reply(
                400,
                json!({"error": {"message": format!("no script for model {model:?}, file {file:?}")}}),
            ));
        };
        steps
            .get(turn)
            .cloned()
            .unwrap_or_else(|| SUBMIT.to_string())
    };
    let arguments = json!({ "command": command }).to_string();
    Ok(reply(
        200,
        json!({
            "id": format!("chatcmpl-{turn}"),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": format!("Step {turn}."),
                    "tool_calls": [{
                        "id": format!("call_{turn}"),
                        "type": "function",
                        "function": {"name": "bash", "arguments": arguments}
                    }]
                }
            }],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        }),
    ))
}

/// A file of the demo's repos as shipped (`examples/demo/repos/<dir>/<tree>/<file>`, `tree` is
/// `base` or `fix`).
pub fn demo_file(dir: &str, tree: &str, file: &str) -> String {
    let p = crate::repo_root().join(format!("examples/demo/repos/{dir}/{tree}/{file}"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A shell word holding `s` (single quotes, each `'` as `'\''`).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command that writes `content` to `file` (a here-document the shell takes verbatim).
pub fn write_file(file: &str, content: &str) -> String {
    assert!(!content.contains("ASE_EOF"));
    format!("cat > {} <<'ASE_EOF'\n{}ASE_EOF", sh_quote(file), content)
}

/// The mini-swe-agent image `deploy/images/build.sh agent` builds.
pub const AGENT_IMAGE: &str = "ase-agent-mini-swe-agent:latest";

/// Whether a daemon answers and holds [`AGENT_IMAGE`]; false once the test said why it cannot
/// run (a failure under `CI=true`).
pub fn agent_image_or_skip() -> bool {
    if !crate::docker_cluster::docker_or_skip() {
        return false;
    }
    let inspect = std::process::Command::new("docker")
        .args(["image", "inspect", AGENT_IMAGE])
        .output();
    if !inspect.is_ok_and(|o| o.status.success()) {
        ase_test_support::unavailable_unless(
            &format!("the agent image {AGENT_IMAGE} is not built"),
            "run deploy/images/build.sh agent",
        );
        return false;
    }
    true
}
