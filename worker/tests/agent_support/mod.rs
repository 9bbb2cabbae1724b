//! Shared by the agent tests: the real coordinator (`ase_coordinator::Coordinator` on sled)
//! behind its real gRPC server on loopback, a local git repo, a dataset, run specs, and a
//! double of the model API that speaks HTTP/1.1 and OpenAI's chat completions.
#![allow(dead_code)]

use ase_coordinator::{Coordinator, CoordinatorConfig, SystemClock};
use ase_test_support::loopback_http::LoopbackServer;
use ase_worker::agent::{Agent, AgentConfig, AgentStats};
use ase_worker::pipeline::{rules_digest, Scanner, ScannerIdentity, WorkerContext};
use ase_worker::repo_cache::{RepoCache, RepoCacheConfig};
use ase_worker::sast::{BareScanner, ScanSettings};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ------------------------------------------------------------------------------------------
// The coordinator over gRPC
// ------------------------------------------------------------------------------------------

pub fn coordinator_config() -> CoordinatorConfig {
    CoordinatorConfig {
        heartbeat_interval_ms: 300,
        lease_ttl_ms: 3_000,
        generate_deadline_ms: 120_000,
        evaluate_deadline_ms: 120_000,
        output_dir: None,
        ..CoordinatorConfig::default()
    }
}

/// The coordinator (`ase_coordinator::grpc::Server`: WorkerApi and ClientApi, sweep ticker)
/// serving plaintext on a loopback address.
pub struct Server {
    pub addr: SocketAddr,
    pub coord: Arc<Coordinator>,
    stop: Option<oneshot::Sender<()>>,
    serve: JoinHandle<()>,
}

impl Server {
    /// `addr`: port 0 for a fresh one, or the address of an earlier server (restart).
    pub async fn start(addr: SocketAddr, db: &Path) -> Server {
        Self::start_with(addr, db, coordinator_config()).await
    }

    pub async fn start_with(addr: SocketAddr, db: &Path, config: CoordinatorConfig) -> Server {
        Self::start_with_clock(addr, db, config, Arc::new(SystemClock)).await
    }

    /// With the coordinator's clock in the test's hands (to let a live session lapse).
    pub async fn start_with_clock(
        addr: SocketAddr,
        db: &Path,
        config: CoordinatorConfig,
        clock: Arc<dyn ase_coordinator::Clock>,
    ) -> Server {
        let coord = Coordinator::open(db, config, clock).unwrap();
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("the coordinator's address is free again");
        let addr = listener.local_addr().unwrap();
        drop(listener);
        // The real server: the gRPC services of ase-coordinator, its sweep ticker.
        let server = ase_coordinator::grpc::Server::bind(
            coord.clone(),
            ase_coordinator::grpc::ServeOptions {
                listen: addr,
                security: ase_proto::endpoint::TransportSecurity::Plaintext,
                metrics_listen: None,
                sweep_interval: Duration::from_millis(150),
            },
        )
        .await
        .unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            coord,
            stop: Some(stop_tx),
            serve,
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and closes the store (every handle on it dropped).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // In-flight long polls end within their wait.
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.serve).await;
        self.serve.abort();
    }

    pub fn state(&self, run_id: &str) -> String {
        self.coord.progress(run_id).unwrap().state
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Repo, dataset, run spec
// ------------------------------------------------------------------------------------------

pub const VULN_PHP: &str = "<?php
function find_user($conn, $name)
{
    $sql = \"SELECT * FROM users WHERE name = '\" . $name . \"'\";
    return mysqli_query($conn, $sql);
}
";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repo `local/app` under `src`; returns its commit.
pub fn make_repo(src: &Path) -> String {
    let dir = src.join("local/app");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    std::fs::write(dir.join("index.php"), VULN_PHP).unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "init"]);
    git(&dir, &["rev-parse", "HEAD"])
}

/// `n` v1 SQL injection tasks on `local/app` at `commit`.
pub fn dataset(n: usize, commit: &str) -> Vec<u8> {
    let items: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "instance_id": format!("t{i}"),
                "repo": "local/app",
                "base_commit": commit,
                "vuln_file": "index.php",
                "vuln_lines": [4, 5],
                "language": "php",
                "vuln_source": format!("CVE-0000-{i}"),
                "seed": true,
                "vuln_type": "SQLI",
                "cwe_id": "CWE-89",
                "detected_tool": "aiseceval/ai_gen_code",
                "detected_vul_num": 1
            })
        })
        .collect();
    serde_json::to_vec(&items).unwrap()
}

pub fn spec(batch: &str, rounds: u32, model: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model_name": "m", "batch": batch, "rounds": rounds, "model": model,
        "limits": {"max_attempts": 3, "max_inflight_model_calls": 8, "requests_per_minute": 0},
    }))
    .unwrap()
}

pub fn original_model() -> serde_json::Value {
    json!({"provider": "original"})
}

/// An OpenAI-compatible endpoint at `base_url`, no key.
pub fn openai_model(base_url: &str) -> serde_json::Value {
    json!({"provider": "openai", "config": {
        "base_url": base_url, "model": "double", "api_key": {"from": "none"}
    }})
}

pub async fn submit(server: &Server, spec: Vec<u8>, dataset: Vec<u8>) -> String {
    server
        .coord
        .submit_run(ase_coordinator::SubmitRun {
            run_spec_json: spec,
            dataset,
            dataset_name: "tasks.json".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .run_id
}

// ------------------------------------------------------------------------------------------
// The worker
// ------------------------------------------------------------------------------------------

pub struct WorkerEnv {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub commit: String,
}

impl WorkerEnv {
    pub fn new() -> WorkerEnv {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let commit = make_repo(&src);
        WorkerEnv { tmp, src, commit }
    }

    pub fn db(&self) -> PathBuf {
        self.tmp.path().join("db")
    }

    pub fn context(&self, osemgrep: PathBuf) -> WorkerContext {
        self.context_named(osemgrep, "w1")
    }

    /// For worker `name` (also what its v2 containers are labelled with, and reaped by).
    pub fn context_named(&self, osemgrep: PathBuf, name: &str) -> WorkerContext {
        let cache_root = self.tmp.path().join("cache");
        let mut cfg = RepoCacheConfig::new(cache_root.join("repos"));
        cfg.url_template = format!("{}/{{repo}}", self.src.display());
        let cache = RepoCache::open(cfg).unwrap();
        let rules = rules_dir().join("sqli/php.yaml");
        let identity = ScannerIdentity {
            rules_digest: rules_digest(&rules).unwrap(),
            version: "test".into(),
        };
        let scanner = BareScanner::new(osemgrep, rules, ScanSettings::default());
        WorkerContext::new(
            cache,
            Scanner::Bare { scanner, identity },
            cache_root,
            name.into(),
        )
    }
}

pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

pub fn agent_config(uri: &str) -> AgentConfig {
    let mut c = AgentConfig::new(uri, ase_proto::endpoint::TransportSecurity::Plaintext, "w1");
    c.generate_slots = 2;
    c.eval_slots = 2;
    c.lease_wait = Duration::from_millis(500);
    c.rpc_timeout = Duration::from_secs(5);
    c.backoff_base = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(800);
    c.shutdown_grace = Duration::from_millis(500);
    c
}

/// A running agent and the means to stop it.
pub struct RunningAgent {
    pub stats: Arc<AgentStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ase_worker::agent::AgentError>>,
}

impl RunningAgent {
    pub fn start(config: AgentConfig, ctx: WorkerContext) -> RunningAgent {
        Self::start_with(config, ctx, None)
    }

    /// With a v2 evaluator (and its image puller and cache).
    pub fn start_with(
        config: AgentConfig,
        ctx: WorkerContext,
        dynamic: Option<ase_worker::dynamic::DynamicEvaluator>,
    ) -> RunningAgent {
        let agent = Agent::new(config, ctx, dynamic);
        let stats = agent.stats();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async {
            let _ = rx.await;
        }));
        RunningAgent {
            stats,
            stop: Some(tx),
            task,
        }
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the agent stops")
            .expect("the agent task")
            .expect("the agent ends without error");
    }
}

pub fn stat(c: &std::sync::atomic::AtomicU64) -> u64 {
    AgentStats::get(c)
}

// ------------------------------------------------------------------------------------------
// A model API double: HTTP/1.1, answers every chat completion with `content` after `delay`
// ------------------------------------------------------------------------------------------

pub struct ModelDouble {
    pub base_url: String,
    pub calls: Arc<std::sync::atomic::AtomicU64>,
    _server: LoopbackServer,
}

impl ModelDouble {
    pub async fn start(delay: Duration, content: &str) -> ModelDouble {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = Bytes::from(
            serde_json::to_vec(&json!({
                "id": "x", "object": "chat.completion", "model": "double",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            }))
            .unwrap(),
        );
        let c = calls.clone();
        let server = LoopbackServer::start(
            "model-double",
            "127.0.0.1:0".parse().unwrap(),
            move |req: hyper::Request<hyper::body::Incoming>| {
                let (c, body) = (c.clone(), body.clone());
                async move {
                    // The whole request first, as a real endpoint reads it.
                    let _ = req.into_body().collect().await;
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            },
        );
        ModelDouble {
            base_url: format!("http://{}/v1", server.addr),
            calls,
            _server: server,
        }
    }
}
