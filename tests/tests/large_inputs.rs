//! Inputs larger than one message, across real processes (coordinator, workers, `ase submit`;
//! mutual TLS, sled):
//! - a 50 MB predictions run over three workers completes every unit (each lease carries its
//!   unit's own answers and names the spec, which each worker fetches once);
//! - a dataset larger than one gRPC message is streamed to the coordinator and accepted;
//! - a spec field over its limit is refused by the client, naming the field and the limit
//!   without echoing the value, and nothing reaches the coordinator.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{submit, LocalCluster, ModelBehaviour, RunFiles};
use std::path::Path;
use std::time::Duration;

/// The predictions file's size.
const PREDICTIONS_BYTES: usize = 50_000_000;
/// tonic's default receive limit, which workers used to keep.
const TONIC_DEFAULT_LIMIT: usize = 4 << 20;

/// A predictions run spec of `entries` under `dir`, with the project's dataset and context.
fn predictions_run(cluster: &LocalCluster, entries: Vec<serde_json::Value>) -> RunFiles {
    let dir = cluster.tmp.path().join("predictions-run");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = serde_json::json!({
        "model_name": "pred-model",
        "batch": "large",
        "rounds": cluster.rounds,
        "model": {"provider": "predictions", "entries": entries},
    });
    let files = RunFiles {
        spec: dir.join("spec.json"),
        dataset: cluster.files.dataset.clone(),
        context: cluster.files.context.clone(),
        run_id: "pred-model__large".into(),
    };
    std::fs::write(&files.spec, serde_json::to_vec(&spec).unwrap()).unwrap();
    files
}

/// Each unit's fix, padded after the patch (outside what is extracted) so that the entries
/// make [`PREDICTIONS_BYTES`] as JSONL.
fn padded_entries(cluster: &LocalCluster) -> (Vec<serde_json::Value>, usize) {
    let units = cluster.project.tasks.len() * cluster.rounds as usize;
    let per_unit = PREDICTIONS_BYTES / units;
    let mut entries = Vec::new();
    for t in &cluster.project.tasks {
        for round in 1..=cluster.rounds {
            let mut answer = t.fix_answer.clone();
            answer.push_str("\nNotes on the fix:\n");
            let line = |a: &str| {
                serde_json::to_string(&serde_json::json!({
                    "instance_id": t.instance_id, "round": round, "answer": a
                }))
                .unwrap()
                .len()
                    + 1
            };
            // Plain ASCII: the JSON line grows by exactly the filler's length.
            let pad = per_unit.saturating_sub(line(&answer));
            let words = "the query is now prepared and its parameter bound. ";
            answer.extend(words.chars().cycle().take(pad));
            entries.push(serde_json::json!({
                "instance_id": t.instance_id, "round": round, "answer": answer
            }));
        }
    }
    let total: usize = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len() + 1)
        .sum();
    (entries, total)
}

/// `text` without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Largest `bytes=N` of the coordinator's "lease granted" lines.
fn largest_lease(log: &str) -> usize {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("lease granted"))
        .filter_map(|l| {
            let at = l.find(" bytes=")? + " bytes=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_50_mb_predictions_run_over_three_workers_completes_every_unit() {
    let names = ["w1", "w2", "w3"];
    // 3 tasks x 3 rounds: each unit's answer is over 5 MB, more than tonic's default limit.
    let Some(mut cluster) = LocalCluster::start(&names, 3, 3, ModelBehaviour::default()) else {
        return;
    };
    let (entries, total) = padded_entries(&cluster);
    assert!(
        total >= PREDICTIONS_BYTES * 99 / 100,
        "the predictions are {total} bytes"
    );
    let largest_entry = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len())
        .max()
        .unwrap();
    assert!(
        largest_entry > TONIC_DEFAULT_LIMIT,
        "each answer alone is over 4 MiB"
    );
    cluster.files = predictions_run(&cluster, entries);
    let _workers: Vec<_> = names
        .iter()
        .map(|n| cluster.start_worker(&cluster.worker_options(n, 2, 1)))
        .collect();
    let started = std::time::Instant::now();
    let mut submit = cluster.submit_watch();
    cluster.wait_run_completed(&mut submit, Duration::from_secs(600));
    let elapsed = started.elapsed();
    cluster.assert_report_has_every_unit_once();

    // Each lease carries one unit's answer, not the run's 50 MB.
    let log = cluster.coordinator.log_text();
    let largest = largest_lease(&log);
    eprintln!(
        "predictions {total} bytes; largest lease {largest} bytes; run completed in {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(
        largest > 0,
        "the coordinator logs each lease's size:\n{log}"
    );
    assert!(
        largest < 2 * largest_entry,
        "a lease of {largest} bytes carries more than its unit's answer ({largest_entry})"
    );
    // Each worker fetched the run's spec at most once, whatever number of leases it ran.
    let mut fetches = 0;
    for n in names {
        let worker_log =
            std::fs::read_to_string(cluster.tmp.path().join(format!("logs/worker-{n}-0.log")))
                .unwrap();
        let worker_log = strip_ansi(&worker_log);
        let fetched = worker_log.matches("run spec fetched").count();
        for l in worker_log
            .lines()
            .filter(|l| l.contains("run spec fetched"))
        {
            eprintln!("worker {n}: {l}");
        }
        assert!(fetched <= 1, "worker {n} fetched the spec {fetched} times");
        fetches += fetched;
    }
    assert!(fetches >= 1, "the workers fetched the spec by its digest");
}

/// A v1 task file of the project's tasks, each with an extra field of `pad` bytes (the loader
/// ignores fields it does not know), so that the file is larger than one gRPC message.
fn padded_dataset(cluster: &LocalCluster, path: &Path, at_least: usize) -> usize {
    let mut tasks: Vec<serde_json::Value> =
        serde_json::from_slice(&cluster.project.dataset_json()).unwrap();
    let pad = at_least / tasks.len() + 1;
    for t in &mut tasks {
        t["notes"] = serde_json::Value::String("n".repeat(pad));
    }
    let bytes = serde_json::to_vec(&tasks).unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes.len()
}

#[test]
fn a_dataset_larger_than_one_message_is_streamed_and_accepted() {
    let Some(cluster) = LocalCluster::start(&["w1"], 4, 1, ModelBehaviour::default()) else {
        return;
    };
    let dataset = cluster.tmp.path().join("big-tasks.json");
    let bytes = padded_dataset(&cluster, &dataset, (64 << 20) + (8 << 20));
    assert!(bytes > 64 << 20, "{bytes} bytes: more than one message");
    let files = RunFiles {
        dataset,
        ..cluster.files.clone()
    };
    let mut p = submit(
        &cluster.access,
        &files,
        false,
        cluster.log_path("submit-big"),
    );
    let status = p.wait_exit(Duration::from_secs(300)).expect("submit ends");
    assert!(
        status.success(),
        "ase submit of a {bytes}-byte dataset: {status}\n{}",
        p.log_text()
    );
    assert_eq!(
        p.stdout_text().lines().next().map(str::trim),
        Some(files.run_id.as_str())
    );
    assert!(p.log_text().contains("(4 units)"), "{}", p.log_text());
}

#[test]
fn an_oversized_spec_field_is_refused_by_the_client_naming_field_and_limit() {
    let Some(cluster) = LocalCluster::start(&["w1"], 1, 1, ModelBehaviour::default()) else {
        return;
    };
    let value = format!("gpt-{}", "Z".repeat(1_000_000));
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cluster.files.spec).unwrap()).unwrap();
    spec["model"]["config"]["model"] = serde_json::Value::String(value);
    let path = cluster.tmp.path().join("huge-field.json");
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let files = RunFiles {
        spec: path,
        ..cluster.files.clone()
    };
    let mut p = submit(
        &cluster.access,
        &files,
        false,
        cluster.log_path("submit-field"),
    );
    let status = p.wait_exit(Duration::from_secs(60)).expect("submit ends");
    let err = p.log_text();
    assert!(!status.success(), "an oversized field was accepted:\n{err}");
    assert!(
        err.contains("`model.config.model`"),
        "names the field:\n{err}"
    );
    assert!(
        err.contains("1000004 bytes"),
        "says how large it is:\n{err}"
    );
    assert!(err.contains("65536"), "says the limit:\n{err}");
    assert!(!err.contains("ZZZZZZZZ"), "does not echo the value");
    assert!(!err.contains("h2 protocol"), "{err}");
    assert!(
        !cluster.coordinator.log_text().contains("submit_run"),
        "nothing was sent"
    );
}
