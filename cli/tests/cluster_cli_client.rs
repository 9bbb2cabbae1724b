//! `ase coordinator` as a process, and the client commands against it: submit (with --watch),
//! status, report, drain, cancel. The work is done by a tonic client playing a worker.

use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use ase_proto::endpoint::{self, TransportSecurity};
use ase_proto::v1::*;
use ase_proto::WorkerApiClient;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ASE: &str = env!("CARGO_BIN_EXE_ase");
const KEY: &str = "sk-cli-test-secret-9876";

struct CoordinatorProcess {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

fn start_coordinator(data: &Path) -> CoordinatorProcess {
    let mut child = Command::new(ASE)
        .args([
            "coordinator",
            "--plaintext",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .args(["--heartbeat-ms", "500", "--lease-ttl-ms", "5000"])
        .env("ASE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let log = stderr.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                let _ = tx.send(addr.to_string());
            }
            log.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the coordinator prints `listening on ADDR`");
    CoordinatorProcess {
        child,
        addr: format!("http://{addr}"),
        stderr,
    }
}

fn ase(args: &[&str], uri: &str) -> Output {
    Command::new(ASE)
        .args(args)
        .args(["--coordinator", uri, "--plaintext"])
        .output()
        .unwrap()
}

fn dataset() -> String {
    let task = |id: &str, repo: &str| {
        serde_json::json!({
            "instance_id": id,
            "repo": repo,
            "base_commit": "0123456789abcdef0123456789abcdef01234567",
            "vuln_file": "src/a.php",
            "vuln_lines": [1, 3],
            "language": "php",
            "vuln_source": format!("CVE-{id}"),
            "seed": true,
            "vuln_type": "sql_injection",
            "cwe_id": "CWE-89",
            "detected_tool": "example/sast:latest",
            "detected_vul_num": 1
        })
    };
    serde_json::to_string(&vec![task("t1", "o/r1"), task("t2", "o/r2")]).unwrap()
}

async fn play_worker(uri: String, units: usize) {
    let ch = endpoint::connect(&uri, &TransportSecurity::Plaintext, None)
        .await
        .unwrap();
    let mut w = WorkerApiClient::new(ch);
    let reg = w
        .register(RegisterRequest {
            worker_name: "w1".into(),
            held: Vec::new(),
            capabilities: Some(Capabilities {
                eval_slots: 2,
                generate_slots: 2,
                docker: false,
                cached_repos: vec!["o/r1".into()],
                version: "test".into(),
                task_images: vec![],
                unprivileged: false,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut done = 0;
    while done < units {
        let reply = w
            .lease_work(LeaseRequest {
                worker_id: reg.worker_id.clone(),
                session: reg.session,
                max_generate: 2,
                max_evaluate: 2,
                wait_ms: 5_000,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.leases.is_empty(), "no work with {done}/{units} done");
        for l in reply.leases {
            assert_eq!(l.api_key, KEY);
            let unit = UnitId::new(l.instance_id.clone(), l.round);
            let result = if l.phase == Phase::Generate as i32 {
                serde_json::to_vec(&GenerationRecord {
                    unit,
                    success: true,
                    reason: None,
                    method: None,
                    raw_answer: Some("answer".into()),
                    answer_truncated: false,
                    changed_files: vec![],
                    deleted_files: vec![],
                    usage: None,
                    cost_usd: None,
                    time_cost: 1.0,
                    model_attempts: 1,
                    prompt_tokens_estimate: None,
                    agent: None,
                })
                .unwrap()
            } else {
                done += 1;
                serde_json::to_vec(&EvaluationRecord::Static {
                    unit,
                    detected_vul_num: 0,
                    baseline: 1,
                    reason: None,
                    seconds: 0.1,
                    scan: None,
                })
                .unwrap()
            };
            let ack = w
                .complete_unit(CompleteRequest {
                    worker_id: reg.worker_id.clone(),
                    lease: Some(LeaseRef {
                        lease_id: l.lease_id.clone(),
                        fence: l.fence,
                    }),
                    phase: l.phase,
                    result_json: result,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(ack.accepted, "{ack:?}");
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out)
        } else {
            out.push(p)
        }
    }
}

#[test]
fn submit_watch_status_report_drain_cancel_against_a_coordinator_process() {
    ase_proto::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let coordinator = start_coordinator(&data);
    let uri = coordinator.addr.clone();

    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"model_name":"cli-model","batch":"b1","rounds":1,"model":{"provider":"original"}}"#,
    )
    .unwrap();
    let tasks = dir.path().join("tasks.json");
    std::fs::write(&tasks, dataset()).unwrap();

    // A spec that is not a RunSpec is refused before anything is sent.
    let bad_spec = dir.path().join("bad.json");
    std::fs::write(&bad_spec, r#"{"model_name":"m","batch":"b","rounds":1}"#).unwrap();
    let out = ase(
        &[
            "submit",
            "--spec",
            bad_spec.to_str().unwrap(),
            "--dataset",
            tasks.to_str().unwrap(),
        ],
        &uri,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));

    let mut submit = Command::new(ASE)
        .args([
            "submit",
            "--preflight",
            "off",
            "--coordinator",
            &uri,
            "--plaintext",
            "--watch",
        ])
        .args([
            "--spec",
            spec.to_str().unwrap(),
            "--dataset",
            tasks.to_str().unwrap(),
        ])
        .args(["--api-key-env", "ASE_CLI_TEST_KEY"])
        .env("ASE_CLI_TEST_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(submit.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "cli-model__b1");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(play_worker(uri.clone(), 2));

    let status = submit.wait().unwrap();
    let mut watch_log = String::new();
    submit
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut watch_log)
        .unwrap();
    assert!(status.success(), "submit --watch: {status:?}\n{watch_log}");
    assert!(watch_log.contains("[completed]"), "{watch_log}");
    assert!(!watch_log.contains(KEY));

    let out = ase(&["status", "--run", "cli-model__b1"], &uri);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run cli-model__b1 [completed]"), "{text}");
    assert!(
        text.contains("evaluate: queued 0 leased 0 done 2 failed 0"),
        "{text}"
    );
    assert!(text.contains("worker w1 [alive]"), "{text}");
    assert!(text.contains("o/r1"), "{text}");

    let report_dir = dir.path().join("report");
    let out = ase(
        &[
            "report",
            "--run",
            "cli-model__b1",
            "--out",
            report_dir.to_str().unwrap(),
        ],
        &uri,
    );
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    assert!(report.is_object());
    assert!(report_dir.join("cli-model__b1/eval_result.json").is_file());
    assert!(report_dir
        .join("cli-model__b1/processed_instances.json")
        .is_file());

    let out = ase(&["drain", "--worker", "w1"], &uri);
    assert!(out.status.success(), "{out:?}");
    let out = ase(&["drain", "--worker", "nobody"], &uri);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = ase(&["cancel", "--run", "cli-model__b1"], &uri);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a completed run cannot be cancelled: {out:?}"
    );
    let out = ase(
        &[
            "report",
            "--run",
            "nope__x",
            "--out",
            report_dir.to_str().unwrap(),
        ],
        &uri,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );

    // Graceful stop on SIGTERM.
    let pid = coordinator.child.id().to_string();
    let mut child = coordinator.child;
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    std::thread::sleep(Duration::from_millis(100));
    let log = coordinator.stderr.lock().unwrap().clone();
    assert!(
        log.contains("submit_run"),
        "debug logs were captured: {log}"
    );
    assert!(
        !log.contains(KEY),
        "the API key is in the coordinator's log"
    );
    let mut files = Vec::new();
    all_files(&data, &mut files);
    assert!(!files.is_empty());
    for f in files {
        assert!(
            !contains(&std::fs::read(&f).unwrap(), KEY),
            "the API key is in {}",
            f.display()
        );
    }
}

#[test]
fn a_cancelled_run_makes_submit_watch_exit_1() {
    ase_proto::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("data"));
    let uri = coordinator.addr.clone();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"model_name":"cli-model","batch":"c1","rounds":1,"model":{"provider":"original"}}"#,
    )
    .unwrap();
    let tasks = dir.path().join("tasks.json");
    std::fs::write(&tasks, dataset()).unwrap();
    let mut submit = Command::new(ASE)
        .args([
            "submit",
            "--preflight",
            "off",
            "--coordinator",
            &uri,
            "--plaintext",
            "--watch",
        ])
        .args([
            "--spec",
            spec.to_str().unwrap(),
            "--dataset",
            tasks.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(submit.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "cli-model__c1");
    let out = ase(&["cancel", "--run", "cli-model__c1"], &uri);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(submit.wait().unwrap().code(), Some(1));
    let out = ase(&["status"], &uri);
    assert!(String::from_utf8_lossy(&out.stdout).contains("run cli-model__c1 [cancelled]"));
    let mut child = coordinator.child;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_client_commands_speak_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(ASE)
        .args(["certs", "init", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut child = Command::new(ASE)
        .args(["coordinator", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--tls-dir")
        .arg(&certs)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "no `listening on`"
        );
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.rsplit(':').next().unwrap().to_string();
        }
    };
    let uri = format!("https://localhost:{port}");
    let status = |client: &str| {
        Command::new(ASE)
            .args([
                "status",
                "--coordinator",
                &uri,
                "--client",
                client,
                "--tls-dir",
            ])
            .arg(&certs)
            .output()
            .unwrap()
    };
    let out = status("admin");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no runs, no workers"));
    let out = status("nobody");
    assert!(
        !out.status.success(),
        "a missing client certificate is an error"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("client-nobody"),
        "{out:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
