//! A burst of 429s (`Retry-After: 2`) then of 500s fails no unit: provider failures are the
//! run's condition, so they use up no attempt; the coordinator pauses the run's model calls on
//! every worker (`ase status` shows `paused: ...`) and the run resumes by itself. The run
//! scores what the same run scores without faults. A wrong key pauses the run (`paused: auth`)
//! until the right one is supplied again. Real coordinator and worker processes,
//! mutual TLS, sled, osemgrep; the model server speaks the OpenAI wire protocol.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{
    ase_bin, fetch_report, submit, FaultWindow, LocalCluster, ModelBehaviour, Proc, RunFiles,
};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// The cluster's run under another batch name, with the endpoint's own retries short (the
/// in-unit retries are not what is tested; upstream's 30 s back-off would only slow it down).
fn run_files(cluster: &LocalCluster, batch: &str) -> RunFiles {
    let spec = json!({
        "model_name": "fake-model",
        "batch": batch,
        "rounds": cluster.rounds,
        "model": {
            "provider": "openai",
            "config": {
                "base_url": cluster.model.base_url(),
                "model": "fake-model",
                "api_key": {"from": "none"},
                "request_timeout": 60.0,
                "retry": {"initial_backoff": 0.5, "max_backoff": 1.0}
            }
        }
    });
    let parsed: ase_worker::pipeline::RunSpec =
        serde_json::from_value(spec.clone()).expect("the test's run spec is a RunSpec");
    let dir = cluster.tmp.path().join(format!("run-{batch}"));
    std::fs::create_dir_all(&dir).unwrap();
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    RunFiles {
        spec: spec_path,
        dataset: cluster.files.dataset.clone(),
        context: cluster.files.context.clone(),
        run_id: parsed.run_name(),
    }
}

/// Runs `files` to completion (`ase submit --watch`) and fetches its report.
fn run_to_completion(cluster: &LocalCluster, files: &RunFiles, out: &Path) {
    let mut watch = submit(&cluster.access, files, true, cluster.log_path("submit"));
    let status = watch
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| {
            panic!(
                "run {} not completed; submit log:\n{}\ncoordinator log:\n{}",
                files.run_id,
                watch.log_text(),
                cluster.coordinator.log_text()
            )
        });
    assert!(status.success(), "ase submit --watch: {}", watch.log_text());
    fetch_report(&cluster.access, &files.run_id, out);
}

/// `ase status` every 200 ms until `stop`: the distinct run lines seen.
fn watch_status(
    cluster: &LocalCluster,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let args = vec![
        "status".to_string(),
        "--coordinator".into(),
        cluster.access.url.clone(),
        "--tls-dir".into(),
        cluster.access.tls_dir.display().to_string(),
    ];
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(out) = Command::new(ase_bin()).args(&args).output() {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let mut seen = seen.lock().unwrap();
                for line in text.lines().filter(|l| l.starts_with("run ")) {
                    let key = line.split(" | eta ").next().unwrap_or(line).to_string();
                    if !seen.contains(&key) {
                        seen.push(key);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let seen = seen.lock().unwrap().clone();
        seen
    })
}

/// The report's scores without the wall-clock fields.
fn scores(report_dir: &Path) -> Value {
    let path = report_dir.join(ase_common::report::REPORT_JSON);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let report: Value = serde_json::from_str(&text).unwrap();
    let mut scores = report["scores"].clone();
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("gen_code_time_sum");
                m.remove("average_gen_code_time");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut scores);
    assert!(scores.is_object(), "{}: no scores", path.display());
    scores
}

/// One fault scenario: the cluster, its model's latency and the fault windows.
struct Scenario {
    tasks: usize,
    rounds: u32,
    model_delay: Duration,
    faults: Vec<FaultWindow>,
}

/// A run without faults, then the same run (another batch) under `faults`: asserts that no unit
/// failed, none was answered twice, the scores are the clean run's, and `ase status` showed the
/// pause without spending an attempt on it; prints the figures.
fn run_scenario(name: &str, sc: Scenario) {
    let behaviour = ModelBehaviour {
        delay: sc.model_delay,
    };
    let Some(cluster) = LocalCluster::start(&WORKERS, sc.tasks, sc.rounds, behaviour) else {
        return;
    };
    let _workers: Vec<_> = WORKERS
        .iter()
        .map(|n| cluster.start_worker(&cluster.worker_options(n, 2, 2)))
        .collect();
    let units = cluster.project.tasks.len() as u32 * cluster.rounds;

    // The same run without faults: what the run must score.
    let clean = run_files(&cluster, "clean");
    let clean_out = cluster.tmp.path().join("report-clean");
    let started = Instant::now();
    run_to_completion(&cluster, &clean, &clean_out);
    let clean_elapsed = started.elapsed();
    let clean_calls = cluster.model.total_calls();
    assert_eq!(clean_calls, units, "{:?}", cluster.model.calls());

    cluster.model.set_faults(sc.faults);
    let faulty = run_files(&cluster, "faults");
    let stop = Arc::new(AtomicBool::new(false));
    let status = watch_status(&cluster, stop.clone());
    let started = Instant::now();
    let faulty_out = cluster.tmp.path().join("report-faults");
    run_to_completion(&cluster, &faulty, &faulty_out);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let seen = status.join().unwrap();

    let report = cluster.model.fault_report();
    let answered = cluster.model.total_calls() - clean_calls;
    let failed_calls: u32 = report.failed.values().sum();
    let processed = ase_cluster_tests::reported_units(&faulty_out, &faulty.run_id);
    let lost = processed.iter().filter(|(_, ok)| !*ok).count();
    eprintln!(
        "{name}: {units} units, {lost} lost, {answered} answered calls ({} repeated), \
         {failed_calls} failed calls {:?}, first answer {:?} after the last window, \
         run {elapsed:.1?} (without faults {clean_elapsed:.1?})",
        answered.saturating_sub(units),
        report.failed,
        report.recovery
    );
    assert!(
        report.failed.get(&429).is_some_and(|n| *n > 0)
            && report.failed.get(&500).is_some_and(|n| *n > 0),
        "the faults happened: {report:?}"
    );

    // No unit failed, none was answered twice, and the scores are those of the clean run.
    assert_eq!(processed.len(), units as usize, "{processed:?}");
    assert_eq!(lost, 0, "failed units: {processed:?}");
    for (task, n) in cluster.model.calls() {
        assert_eq!(
            n,
            2 * cluster.rounds,
            "answers for {task}: one per unit of each run"
        );
    }
    assert_eq!(
        scores(&faulty_out),
        scores(&clean_out),
        "the faults changed the scores"
    );

    for line in seen.iter().filter(|l| l.contains(&faulty.run_id)) {
        eprintln!("status: {line}");
    }
    // Status showed the pause, and no attempt was spent on it.
    assert!(
        seen.iter()
            .any(|l| l.contains(&faulty.run_id) && l.contains("[paused: ")),
        "ase status never showed the pause: {seen:#?}"
    );
    let last = seen
        .iter()
        .rev()
        .find(|l| l.contains(&faulty.run_id))
        .expect("status showed the run");
    assert!(last.contains("retries 0"), "{last}");
    assert!(last.contains("provider failures"), "{last}");
}

fn windows(rate_limited: Duration, server_error: Duration) -> Vec<FaultWindow> {
    vec![
        FaultWindow {
            status: 429,
            retry_after_secs: Some(2),
            duration: rate_limited,
        },
        FaultWindow {
            status: 500,
            retry_after_secs: None,
            duration: server_error,
        },
    ]
}

#[test]
fn a_burst_of_429s_then_500s_fails_no_unit_and_the_run_scores_as_without_faults() {
    // The issue's scenario scaled down: 429 with Retry-After 2 s for 6 s, then 500 for 4 s.
    run_scenario(
        "429 6 s + 500 4 s",
        Scenario {
            tasks: 4,
            rounds: 3,
            model_delay: Duration::from_millis(300),
            faults: windows(Duration::from_secs(6), Duration::from_secs(4)),
        },
    );
}

/// The issue's scenario at its own scale (24 units, a model answering in 2 s, 429 for 20 s then
/// 500 for 15 s): about two minutes, so run on demand (`-- --ignored`) to measure.
#[test]
#[ignore]
fn the_issues_429_then_500_scenario_at_full_scale() {
    run_scenario(
        "429 20 s + 500 15 s",
        Scenario {
            tasks: 8,
            rounds: 3,
            model_delay: Duration::from_secs(2),
            faults: windows(Duration::from_secs(20), Duration::from_secs(15)),
        },
    );
}

/// `ase submit` of `files` with the model key `key` (through `--api-key-env`).
fn submit_with_key(cluster: &LocalCluster, files: &RunFiles, key: &str, watch: bool) -> Proc {
    let mut args = vec![
        "submit".to_string(),
        // The project's repos are local to the workers (see `ase_cluster_tests::submit`).
        "--preflight".into(),
        "off".into(),
        "--coordinator".into(),
        cluster.access.url.clone(),
        "--tls-dir".into(),
        cluster.access.tls_dir.display().to_string(),
        "--spec".into(),
        files.spec.display().to_string(),
        "--dataset".into(),
        files.dataset.display().to_string(),
        "--context".into(),
        files.context.display().to_string(),
        "--api-key-env".into(),
        "ASE_TEST_MODEL_KEY".into(),
    ];
    if watch {
        args.push("--watch".into());
    }
    Proc::spawn(
        "submit",
        &ase_bin(),
        &args,
        &[("ASE_TEST_MODEL_KEY", key)],
        cluster.log_path("submit"),
    )
}

#[test]
fn a_wrong_key_pauses_the_run_until_the_right_one_is_supplied_again() {
    const RIGHT: &str = "sk-the-right-key-0123456789";
    const WRONG: &str = "sk-a-revoked-key-0123456789";
    let behaviour = ModelBehaviour {
        delay: Duration::from_millis(100),
    };
    let Some(cluster) = LocalCluster::start(&WORKERS, 2, 2, behaviour) else {
        return;
    };
    let _workers: Vec<_> = WORKERS
        .iter()
        .map(|n| cluster.start_worker(&cluster.worker_options(n, 2, 2)))
        .collect();
    let units = cluster.project.tasks.len() as u32 * cluster.rounds;
    cluster.model.require_key(RIGHT);
    let files = run_files(&cluster, "auth");
    let mut first = submit_with_key(&cluster, &files, WRONG, false);
    let status = first
        .wait_exit(Duration::from_secs(30))
        .expect("submit ends");
    assert!(status.success(), "{}", first.log_text());

    // Refused calls pause the run instead of failing its units one after another.
    let paused = cluster.status_line_with(&files.run_id, "[paused: auth]", Duration::from_secs(60));
    eprintln!("status: {paused}");
    assert!(paused.contains("done 0 failed 0"), "{paused}");
    assert!(
        paused.contains("model calls resume when the key is supplied again"),
        "{paused}"
    );

    // The right key supplied again: the run goes on and completes with every unit.
    let mut again = submit_with_key(&cluster, &files, RIGHT, true);
    let status = again
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("run not completed: {}", cluster.coordinator.log_text()));
    assert!(status.success(), "{}", again.log_text());
    let out = cluster.tmp.path().join("report-auth");
    fetch_report(&cluster.access, &files.run_id, &out);
    let processed = ase_cluster_tests::reported_units(&out, &files.run_id);
    assert_eq!(processed.len(), units as usize, "{processed:?}");
    assert!(processed.iter().all(|(_, ok)| *ok), "{processed:?}");
    assert_eq!(
        cluster.model.total_calls(),
        units,
        "{:?}",
        cluster.model.calls()
    );
    // The calls of the first wave were refused, then none until the key came.
    let refused = cluster.model.fault_report().failed.get(&401).copied();
    eprintln!("wrong key: {refused:?} refused calls for {units} units");
    assert!(refused.is_some_and(|n| n <= units), "{refused:?}");
}
