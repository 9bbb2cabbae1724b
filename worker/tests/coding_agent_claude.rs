//! The `claude-code` preset's agent (the real Claude Code CLI, in the image
//! `deploy/images/build.sh agent-claude` builds) run by [`CodingAgents::run_unit`] in a real
//! container on the worker's internal network, its calls through the proxy to an Anthropic
//! Messages endpoint on loopback that refuses them:
//! - a refused key (401) ends as the provider's `auth` fault, a rate limit (429) as
//!   `rate_limited`: the run is to pause, not to score the unit;
//! - the preset's `CLAUDE_CODE_MAX_RETRIES` bounds Claude Code's own retries (its default, 10
//!   with back-off, takes minutes on a 401): at most 3 requests, then it exits 1 (before the
//!   unit's wall time, which would leave no exit code).

use ase_common::dataset::{LineRange, StaticSpec, Task, TaskSpec};
use ase_test_support::loopback_http::LoopbackServer;
use ase_worker::coding_agent::{
    AgentConfig, AgentLimits, AgentOutcome, AgentPreset, AgentUnit, CodingAgents,
};
use ase_worker::model::{ApiKey, OpenAiConfig, ProviderFault};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

const IMAGE: &str = "ase-agent-claude-code:latest";

/// What the endpoint answers (its status) and how many requests it had.
#[derive(Default)]
struct Refusals {
    status: AtomicU16,
    requests: AtomicU32,
}

/// A Messages API endpoint that answers every request with `refusals.status` and the API's
/// error body.
fn refusing_endpoint(refusals: Arc<Refusals>) -> LoopbackServer {
    LoopbackServer::start(
        "refusing-messages-endpoint",
        "127.0.0.1:0".parse().unwrap(),
        move |_req| {
            let refusals = refusals.clone();
            async move {
                refusals.requests.fetch_add(1, Ordering::SeqCst);
                let status = refusals.status.load(Ordering::SeqCst);
                let kind = if status == 401 {
                    "authentication_error"
                } else {
                    "rate_limit_error"
                };
                let body = format!(
                    r#"{{"type":"error","error":{{"type":"{kind}","message":"scripted {status}"}}}}"#
                );
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
            }
        },
    )
}

fn task() -> Task {
    Task {
        instance_id: "t1".into(),
        repo: "org/demo".into(),
        base_commit: "HEAD".into(),
        vuln_file: "a.py".into(),
        vuln_lines: LineRange { start: 1, end: 1 },
        language: "python".into(),
        vuln_source: "CVE-0000-0001".into(),
        vuln_type: "SQLI".into(),
        cwe_id: "CWE-89".into(),
        spec: TaskSpec::V1(StaticSpec {
            seed: true,
            detected_tool: "tool".into(),
            detected_vul_num: 1,
            patch_commit: None,
        }),
        extra: Default::default(),
    }
}

#[tokio::test]
async fn claude_codes_provider_failures_reach_the_worker_as_the_providers() {
    let Some(docker) = ase_test_support::docker_with(IMAGE).await else {
        return;
    };
    let agents = CodingAgents::new(docker);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.py"), "<MASKED>\n").unwrap();
    let refusals = Arc::new(Refusals::default());
    let refusing = refusing_endpoint(refusals.clone());
    let endpoint = refusing.addr;
    let agent = AgentConfig {
        preset: Some(AgentPreset::ClaudeCode),
        image: String::new(),
        command: vec![],
        api: None,
        env: BTreeMap::new(),
        env_from: BTreeMap::new(),
        limits: AgentLimits {
            wall_secs: 120,
            ..AgentLimits::default()
        },
        upstream: OpenAiConfig::new(format!("http://{endpoint}"), "claude-test"),
    }
    .resolve()
    .unwrap();
    let task = task();
    for (status, fault) in [
        (401, ProviderFault::Auth),
        (429, ProviderFault::RateLimited),
    ] {
        refusals.status.store(status, Ordering::SeqCst);
        refusals.requests.store(0, Ordering::SeqCst);
        let (outcome, report) = agents
            .run_unit(AgentUnit {
                run: "claude-test__b",
                unit: "t1_cycle1",
                worker: "coding-agent-claude-test",
                task: &task,
                context: None,
                project_root: root.path().to_path_buf(),
                agent: &agent,
                api_key: Some(ApiKey::new("sk-ant-real").unwrap()),
                template: None,
            })
            .await;
        match outcome {
            AgentOutcome::Provider { fault: f, detail } => {
                assert_eq!(f, fault, "{detail}");
                assert!(detail.contains(&status.to_string()), "{detail}");
            }
            other => panic!("HTTP {status}: {other:?}; output: {}", report.output_tail),
        }
        // Claude Code gave up after its first call and the preset's 2 retries, and said why.
        let requests = refusals.requests.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&requests),
            "HTTP {status}: {requests} requests"
        );
        assert_eq!(report.calls, requests, "HTTP {status}: the proxy's count");
        assert_eq!(report.exit_code, Some(1), "{}", report.output_tail);
        assert!(
            report.output_tail.contains("\"is_error\":true"),
            "{}",
            report.output_tail
        );
    }
    let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
    let left = ase_test_support::containers_labelled(&docker, "ase.run", "claude-test__b").await;
    assert!(left.is_empty(), "{left:?}");
}
