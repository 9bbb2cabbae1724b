//! The coordinator over gRPC with real mutual TLS (certificates from ase_proto::certs) and a
//! real sled store: a tonic client plays the worker, another the submitting client.

mod support;

use ase_common::scoring::UnitId;
use ase_coordinator::grpc::{ServeOptions, Server};
use ase_coordinator::{Coordinator, SystemClock};
use ase_proto::certs::ClusterCa;
use ase_proto::endpoint::{self, TransportSecurity};
use ase_proto::tls::TlsMaterial;
use ase_proto::tonic::transport::Channel;
use ase_proto::tonic::Code;
use ase_proto::v1::*;
use ase_proto::{ClientApiClient, WorkerApiClient};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{generation, static_eval, v1_dataset};

const API_KEY: &str = "sk-grpc-test-secret-4242";

struct Cluster {
    ca: ClusterCa,
    coordinator: TlsMaterial,
}

impl Cluster {
    fn new() -> Self {
        ase_proto::tls::install_crypto_provider();
        let ca = ClusterCa::generate("grpc test", 2).unwrap();
        let c = ca.issue_coordinator(&[]).unwrap();
        let coordinator = TlsMaterial::from_pem(ca.cert_pem(), c.cert_pem, c.key_pem).unwrap();
        Self { ca, coordinator }
    }

    fn worker(&self, name: &str) -> TransportSecurity {
        let w = self.ca.issue_worker(name).unwrap();
        TransportSecurity::MutualTls(
            TlsMaterial::from_pem(self.ca.cert_pem(), w.cert_pem, w.key_pem).unwrap(),
        )
    }

    fn client(&self, name: &str) -> TransportSecurity {
        let w = self.ca.issue_client(name).unwrap();
        TransportSecurity::MutualTls(
            TlsMaterial::from_pem(self.ca.cert_pem(), w.cert_pem, w.key_pem).unwrap(),
        )
    }
}

struct Running {
    addr: SocketAddr,
    metrics: SocketAddr,
    db: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(security: TransportSecurity) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let coordinator =
        Coordinator::open(&db, support::config(), std::sync::Arc::new(SystemClock)).unwrap();
    let server = Server::bind(
        coordinator,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            security,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            sweep_interval: Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    let (addr, metrics) = (server.local_addr(), server.metrics_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        metrics,
        db,
        stop,
        task,
        _dir: dir,
    }
}

fn https(addr: SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

async fn channel(uri: &str, security: &TransportSecurity) -> Channel {
    endpoint::connect(uri, security, None).await.unwrap()
}

fn fence_ref(l: &Lease) -> LeaseRef {
    LeaseRef {
        lease_id: l.lease_id.clone(),
        fence: l.fence,
    }
}

fn unit_of(l: &Lease) -> UnitId {
    UnitId::new(l.instance_id.clone(), l.round)
}

async fn submit(client: &mut ClientApiClient<Channel>, batch: &str) -> SubmitRunResponse {
    client
        .submit_run(
            ase_proto::submit::stream(ase_proto::submit::SubmitInputs {
                run_spec_json: support::spec(batch, 1, serde_json::json!({})),
                dataset: v1_dataset(&[
                    ("t1", "o/r1", "sql_injection", 1),
                    ("t2", "o/r2", "xss", 0),
                ]),
                dataset_name: "tasks.json".into(),
                context: Vec::new(),
                context_name: String::new(),
                api_key: API_KEY.into(),
            })
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
}

/// Leases and completes every phase of every unit, as a worker would.
async fn work(worker: &mut WorkerApiClient<Channel>, reg: &RegisterResponse, expect_units: usize) {
    let mut done = 0;
    while done < expect_units {
        let reply = worker
            .lease_work(LeaseRequest {
                worker_id: reg.worker_id.clone(),
                session: reg.session,
                max_generate: 4,
                max_evaluate: 4,
                wait_ms: 2_000,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.reregister && !reply.drain, "{reply:?}");
        assert!(
            !reply.leases.is_empty(),
            "no work although {done} of {expect_units} units are done"
        );
        for l in &reply.leases {
            assert_eq!(
                l.api_key, API_KEY,
                "the submitted key reaches the worker in the lease"
            );
            assert!(!l.task_json.is_empty() && !l.spec_digest.is_empty());
            // The spec is not in the lease: the worker fetches it by the digest.
            let spec = worker
                .fetch_run_spec(RunSpecRef {
                    worker_id: reg.worker_id.clone(),
                    run_id: l.run_id.clone(),
                    digest: l.spec_digest.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(!spec.run_spec_json.is_empty());
            let (phase, result) = match Phase::try_from(l.phase).unwrap() {
                Phase::Generate => (Phase::Generate, generation(&unit_of(l), true)),
                Phase::Evaluate => {
                    assert!(
                        !l.generation_json.is_empty(),
                        "evaluate carries the generation"
                    );
                    done += 1;
                    (Phase::Evaluate, static_eval(&unit_of(l), 0, 1))
                }
                Phase::Unspecified => panic!("lease without a phase"),
            };
            let ack = worker
                .complete_unit(CompleteRequest {
                    worker_id: reg.worker_id.clone(),
                    lease: Some(fence_ref(l)),
                    phase: phase as i32,
                    result_json: result.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(ack.accepted && !ack.duplicate, "{ack:?}");
            // Repeating the same result is a duplicate, not an error.
            let again = worker
                .complete_unit(CompleteRequest {
                    worker_id: reg.worker_id.clone(),
                    lease: Some(fence_ref(l)),
                    phase: phase as i32,
                    result_json: result,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(again.accepted && again.duplicate, "{again:?}");
        }
    }
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        samples.insert(name.to_string(), value.parse::<f64>().unwrap());
    }
    samples
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_mutual_tls_completes_and_reports() {
    let cluster = Cluster::new();
    let server = start(TransportSecurity::MutualTls(cluster.coordinator.clone())).await;
    let uri = https(server.addr);
    let mut client = ClientApiClient::new(channel(&uri, &cluster.client("admin")).await);
    let submitted = submit(&mut client, "grpc1").await;
    assert_eq!(submitted.run_id, "test-model__grpc1");
    assert_eq!(submitted.total_units, 2);
    assert!(!submitted.resumed);

    // The watch starts before any work and must end by itself when the run completes.
    let mut watch = client
        .watch_run(WatchRunRequest {
            run_id: submitted.run_id.clone(),
            interval_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(p) = watch.message().await.unwrap() {
            seen.push(p);
        }
        seen
    });

    let mut worker = WorkerApiClient::new(channel(&uri, &cluster.worker("w1")).await);
    let reg = worker
        .register(RegisterRequest {
            worker_name: "w1".into(),
            held: Vec::new(),
            capabilities: Some(Capabilities {
                eval_slots: 2,
                generate_slots: 2,
                docker: true,
                cached_repos: vec!["o/r1".into()],
                version: "test".into(),
                task_images: vec![],
                unprivileged: false,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.worker_id, "w1");
    let hb = worker
        .heartbeat(HeartbeatRequest {
            worker_id: reg.worker_id.clone(),
            session: reg.session,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!hb.reregister && !hb.drain);
    work(&mut worker, &reg, 2).await;

    let seen = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .expect("WatchRun ends when the run completes")
        .unwrap();
    let last = seen.last().expect("at least one update");
    assert_eq!(last.state, "completed");
    assert_eq!(last.evaluate.unwrap().done, 2);
    assert!(
        seen.len() >= 2,
        "an update before and after the work: {seen:?}"
    );

    let report = client
        .fetch_report(RunRef {
            run_id: submitted.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(report.complete);
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    for expected in [
        "report.json",
        "test-model__grpc1/processed_instances.json",
        "test-model__grpc1/sast_results.json",
        "test-model__grpc1/eval_result.json",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let report_json = &report
        .files
        .iter()
        .find(|f| f.name == "report.json")
        .unwrap()
        .content;
    let report_value: serde_json::Value = serde_json::from_slice(report_json).unwrap();
    assert!(report_value.is_object());

    let runs = client
        .list_runs(ListRunsRequest {})
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, "completed");
    let workers = client
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert!(workers[0].alive);
    assert_eq!(workers[0].completed, 4);

    let m = scrape(server.metrics).await;
    assert_eq!(m["ase_commits_total{phase=\"generate\"}"], 2.0);
    assert_eq!(m["ase_commits_total{phase=\"evaluate\"}"], 2.0);
    assert_eq!(m["ase_duplicate_results_total"], 4.0);
    assert_eq!(m["ase_workers_alive"], 1.0);
    assert_eq!(
        m["ase_units{run=\"test-model__grpc1\",phase=\"evaluate\",state=\"done\"}"],
        2.0
    );
    assert_eq!(
        m["ase_run_model_calls_total{run=\"test-model__grpc1\"}"],
        2.0
    );
    assert_eq!(m["ase_run_retries_total{run=\"test-model__grpc1\"}"], 0.0);
    assert!(m["ase_lease_grant_seconds_count"] >= 2.0);
    assert_eq!(
        m["ase_lease_grant_seconds_bucket{le=\"+Inf\"}"],
        m["ase_lease_grant_seconds_count"]
    );
    assert_eq!(
        m["ase_run_info{run=\"test-model__grpc1\",state=\"completed\"}"],
        1.0
    );

    // Unknown runs are NotFound with the run named.
    let err = client
        .fetch_report(RunRef {
            run_id: "nope__x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nope__x"), "{}", err.message());

    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .expect("graceful stop")
        .unwrap();
    // The key stayed in memory: no store file holds it.
    for f in files_under(&server.db) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes()),
            "the API key is in {}",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_bound_to_their_certificates() {
    let cluster = Cluster::new();
    let server = start(TransportSecurity::MutualTls(cluster.coordinator.clone())).await;
    let uri = https(server.addr);
    let register = |name: &str| RegisterRequest {
        worker_name: name.into(),
        held: Vec::new(),
        capabilities: Some(Capabilities {
            eval_slots: 1,
            generate_slots: 1,
            ..Default::default()
        }),
    };

    // A worker certificate claiming another worker's name.
    let mut w2 = WorkerApiClient::new(channel(&uri, &cluster.worker("w2")).await);
    let err = w2.register(register("w1")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("w1"), "{}", err.message());

    // Later calls are bound too: w2 cannot heartbeat or lease as w1.
    let mut w1 = WorkerApiClient::new(channel(&uri, &cluster.worker("w1")).await);
    let reg = w1.register(register("w1")).await.unwrap().into_inner();
    let err = w2
        .heartbeat(HeartbeatRequest {
            worker_id: reg.worker_id.clone(),
            session: reg.session,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = w2
        .lease_work(LeaseRequest {
            worker_id: reg.worker_id.clone(),
            session: reg.session,
            max_generate: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A client certificate on WorkerApi, a worker certificate on ClientApi.
    let client_sec = cluster.client("admin");
    let mut as_worker = WorkerApiClient::new(channel(&uri, &client_sec).await);
    let err = as_worker.register(register("admin")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut as_client = ClientApiClient::new(channel(&uri, &cluster.worker("w1")).await);
    let err = as_client.list_runs(ListRunsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A plaintext client gets nowhere with a TLS coordinator.
    let plain_uri = format!("http://127.0.0.1:{}", server.addr.port());
    let refused = match endpoint::connect(&plain_uri, &TransportSecurity::Plaintext, None).await {
        Err(_) => true,
        Ok(ch) => ClientApiClient::new(ch)
            .list_runs(ListRunsRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a plaintext client was served by a TLS coordinator"
    );
    // And it is told why, before any call: the coordinator speaks TLS.
    match endpoint::connect(&plain_uri, &TransportSecurity::Plaintext, None).await {
        Err(e @ endpoint::EndpointError::PlaintextToTls { .. }) => {
            assert!(e.to_string().contains("speaks TLS"), "{e}")
        }
        Err(e) => panic!("not said to be a TLS coordinator: {e}"),
        Ok(_) => panic!("a plaintext client connected to a TLS coordinator"),
    }

    // Bad input is InvalidArgument with the field named.
    let mut client = ClientApiClient::new(channel(&uri, &client_sec).await);
    let err = client
        .submit_run(
            ase_proto::submit::stream(ase_proto::submit::SubmitInputs {
                run_spec_json: b"{\"model_name\": \"m\", \"batch\": \"b\", \"rounds\": 0}".to_vec(),
                dataset: v1_dataset(&[("t1", "o/r1", "xss", 0)]),
                dataset_name: "tasks.json".into(),
                api_key: API_KEY.into(),
                ..Default::default()
            })
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("rounds"), "{}", err.message());
    assert!(!err.message().contains(API_KEY));
    let err = w1
        .complete_unit(CompleteRequest {
            worker_id: "w1".into(),
            lease: Some(LeaseRef {
                lease_id: "not-a-number".into(),
                fence: Some(Fence::default()),
            }),
            phase: Phase::Generate as i32,
            result_json: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("lease_id"), "{}", err.message());

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_ends_its_watch_and_long_polls_end_at_shutdown() {
    let server = start(TransportSecurity::Plaintext).await;
    let uri = format!("http://127.0.0.1:{}", server.addr.port());
    let mut client = ClientApiClient::new(channel(&uri, &TransportSecurity::Plaintext).await);
    let submitted = submit(&mut client, "cancel1").await;
    let mut watch = client
        .watch_run(WatchRunRequest {
            run_id: submitted.run_id.clone(),
            interval_ms: 5_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().state, "running");
    let ack = client
        .cancel_run(RunRef {
            run_id: submitted.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ack.accepted);
    let next = tokio::time::timeout(Duration::from_secs(3), watch.message())
        .await
        .expect("the change is pushed, not waited for")
        .unwrap()
        .unwrap();
    assert_eq!(next.state, "cancelled");
    assert!(watch.message().await.unwrap().is_none(), "the stream ends");

    // A worker long-polling with nothing to do is answered when the server stops.
    let mut worker = WorkerApiClient::new(channel(&uri, &TransportSecurity::Plaintext).await);
    let reg = worker
        .register(RegisterRequest {
            worker_name: "w1".into(),
            held: Vec::new(),
            capabilities: Some(Capabilities {
                eval_slots: 1,
                generate_slots: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let poll = tokio::spawn(async move {
        worker
            .lease_work(LeaseRequest {
                worker_id: reg.worker_id,
                session: reg.session,
                max_generate: 1,
                max_evaluate: 1,
                wait_ms: 25_000,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.stop.send(()).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long poll ends at shutdown")
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(reply.leases.is_empty());
    server.task.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_registration_of_a_live_name_is_refused_with_when_the_name_frees() {
    let cluster = Cluster::new();
    let server = start(TransportSecurity::MutualTls(cluster.coordinator.clone())).await;
    let uri = https(server.addr);
    let register = || RegisterRequest {
        worker_name: "w1".into(),
        held: Vec::new(),
        capabilities: Some(Capabilities {
            eval_slots: 1,
            generate_slots: 1,
            ..Default::default()
        }),
    };
    // Two processes with w1's certificate.
    let mut first = WorkerApiClient::new(channel(&uri, &cluster.worker("w1")).await);
    let mut second = WorkerApiClient::new(channel(&uri, &cluster.worker("w1")).await);
    let reg = first.register(register()).await.unwrap().into_inner();
    let err = second.register(register()).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains("w1") && err.message().contains("live session"),
        "{}",
        err.message()
    );
    let free_in = ase_proto::name_in_use::free_in(&err).expect("a name-in-use refusal");
    assert!(
        free_in > Duration::ZERO
            && free_in <= Duration::from_millis(u64::from(support::TTL_MS) + 1),
        "{free_in:?}"
    );
    // The first session was not disturbed.
    let hb = first
        .heartbeat(HeartbeatRequest {
            worker_id: reg.worker_id.clone(),
            session: reg.session,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!hb.reregister, "{hb:?}");
}
