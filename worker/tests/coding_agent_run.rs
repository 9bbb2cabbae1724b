//! One unit's agent run by [`CodingAgents::run_unit`] in a real container of the agent image
//! (`deploy/images/build.sh agent`), on the worker's internal network, its model calls through
//! the proxy to an endpoint on loopback. The agents here are shell or Python one-liners given as
//! the command line (what the `command` setting is for):
//! - an agent whose endpoint refuses the key fails as the provider's fault (auth), not the
//!   model's: the run is to pause, not to score the unit;
//! - a symlink left in the workspace refuses the result (a failed generation with the reason);
//! - a file written is the result, with the unchanged files left out; the agent runs with no
//!   capability and `no-new-privileges`;
//! - an agent out of turns (exit 1 with Claude Code's `error_max_turns`) is taken at the files
//!   it left, and said to have stopped; any other exit 1 is a crash.

use ase_common::dataset::{LineRange, StaticSpec, Task, TaskSpec};
use ase_test_support::loopback_http::LoopbackServer;
use ase_worker::coding_agent::{
    AgentApi, AgentLimits, AgentOutcome, AgentUnit, CodingAgents, ResolvedAgent,
};
use ase_worker::model::{ApiKey, OpenAiConfig, ProviderFault};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use std::collections::BTreeMap;
use std::convert::Infallible;

const IMAGE: &str = "ase-agent-mini-swe-agent:latest";

/// An endpoint that refuses every key, as a provider does for a revoked one.
fn refusing_endpoint() -> LoopbackServer {
    LoopbackServer::start(
        "refusing-endpoint",
        "127.0.0.1:0".parse().unwrap(),
        |_req| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(401)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"error":{"message":"Incorrect API key provided"}}"#,
                    )))
                    .unwrap(),
            )
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

fn agent(command: &[&str], base_url: String) -> ResolvedAgent {
    ResolvedAgent {
        image: IMAGE.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        api: AgentApi::Openai,
        env: BTreeMap::from([("TOKEN".to_string(), "{token}".to_string())]),
        env_from: BTreeMap::new(),
        limits: AgentLimits {
            wall_secs: 120,
            ..AgentLimits::default()
        },
        upstream: OpenAiConfig::new(base_url, "m"),
    }
}

#[tokio::test]
async fn provider_refusals_symlinks_and_changes_are_told_apart() {
    let Some(docker) = ase_test_support::docker_with(IMAGE).await else {
        return;
    };
    let agents = CodingAgents::new(docker);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.py"), "<MASKED>\n").unwrap();
    std::fs::write(root.path().join("b.py"), "keep\n").unwrap();
    let refusing = refusing_endpoint();
    let endpoint = refusing.addr;
    let task = task();
    let run = |a: ResolvedAgent| {
        let agents = &agents;
        let task = &task;
        let root = root.path().to_path_buf();
        async move {
            agents
                .run_unit(AgentUnit {
                    run: "agent-test__b",
                    unit: "t1_cycle1",
                    worker: "coding-agent-run-test",
                    task,
                    context: None,
                    project_root: root,
                    agent: &a,
                    api_key: Some(ApiKey::new("sk-real").unwrap()),
                    template: None,
                })
                .await
        }
    };

    // The endpoint refuses the key: the agent sees the 401 and gives up.
    let call = "import os, sys, urllib.request as u\n\
        r = u.Request('{base_url}/chat/completions', data=b'{\"messages\": []}', \
        headers={'Authorization': 'Bearer ' + os.environ['TOKEN'], 'Content-Type': 'application/json'})\n\
        try:\n  u.urlopen(r, timeout=20)\nexcept Exception as e:\n  print('call failed', e); sys.exit(1)";
    let (outcome, report) = run(agent(
        &["python3", "-c", call],
        format!("http://{endpoint}/v1"),
    ))
    .await;
    match outcome {
        AgentOutcome::Provider { fault, detail } => {
            assert_eq!(fault, ProviderFault::Auth, "{detail}");
            assert!(detail.contains("401"), "{detail}");
        }
        other => panic!("{other:?}; output: {}", report.output_tail),
    }
    assert_eq!(report.calls, 1);
    assert!(
        report.output_tail.contains("call failed"),
        "{}",
        report.output_tail
    );

    // A symlink out of the tree: the result is refused, the model is to blame.
    let (outcome, _) = run(agent(
        &["sh", "-c", "ln -sf /etc/passwd /workspace/a.py"],
        format!("http://{endpoint}/v1"),
    ))
    .await;
    match outcome {
        AgentOutcome::ModelFailure(reason) => assert!(reason.contains("symlink"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // A file written (and nothing else): that file is the result.
    let (outcome, report) = run(agent(
        &[
            "sh",
            "-c",
            "printf 'x = 1\\n' > a.py && echo wrote {file} && grep -E 'CapEff|NoNewPrivs' /proc/self/status",
        ],
        format!("http://{endpoint}/v1"),
    ))
    .await;
    match outcome {
        AgentOutcome::Finished(r) => {
            assert_eq!(r.changed.keys().collect::<Vec<_>>(), vec!["a.py"]);
            assert_eq!(r.changed["a.py"].0, b"x = 1\n");
            assert!(r.deleted.is_empty(), "{:?}", r.deleted);
        }
        other => panic!("{other:?}"),
    }
    let out = &report.output_tail;
    assert!(out.contains("wrote a.py"), "{out}");
    // No capability, no privilege gained through exec.
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(report.stopped, None);

    // Out of turns (Claude Code's exit 1 with `error_max_turns`) after writing: the file it
    // left is its answer, and the report says it stopped.
    let max_turns = r#"{"type":"result","subtype":"error_max_turns","num_turns":12}"#;
    let (outcome, report) = run(agent(
        &[
            "sh",
            "-c",
            &format!("printf 'x = 2\\n' > a.py; echo '{max_turns}'; exit 1"),
        ],
        format!("http://{endpoint}/v1"),
    ))
    .await;
    match outcome {
        AgentOutcome::Finished(r) => assert_eq!(r.changed["a.py"].0, b"x = 2\n"),
        other => panic!("{other:?}; output: {}", report.output_tail),
    }
    assert_eq!(
        (report.exit_code, report.stopped.as_deref()),
        (Some(1), Some("max_turns"))
    );
    // Out of turns having changed nothing: no file (the pipeline makes it a failed
    // generation with the reason).
    let (outcome, report) = run(agent(
        &["sh", "-c", &format!("echo '{max_turns}'; exit 1")],
        format!("http://{endpoint}/v1"),
    ))
    .await;
    match outcome {
        AgentOutcome::Finished(r) => assert!(r.changed.is_empty() && r.deleted.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.stopped.as_deref(), Some("max_turns"));
    // Any other exit 1 is a crash.
    let (outcome, _) = run(agent(
        &["sh", "-c", "printf 'x = 3\\n' > a.py; echo oops; exit 1"],
        format!("http://{endpoint}/v1"),
    ))
    .await;
    match outcome {
        AgentOutcome::ModelFailure(reason) => {
            assert!(reason.contains("exited with code 1"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Every container of these runs is gone.
    let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
    let left = ase_test_support::containers_labelled(&docker, "ase.run", "agent-test__b").await;
    assert!(left.is_empty(), "{left:?}");
}
