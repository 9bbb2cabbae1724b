//! The demo dataset (examples/demo) run for real through the cluster: a coordinator and a
//! worker process (mutual TLS, sled), the demo repos materialised as local git repos, v1
//! scanned by the real osemgrep with our rules, v2 built, tested and exploited in the demo's
//! Docker images. Three models over both datasets, 3 rounds each: `reference` (the fix
//! commits), `original` (the vulnerable code) and `predictions` (the pretend model's shipped
//! answers). The scores must equal `examples/demo/expected_scores.json`.
//!
//! Only the generation times of v2 (`gen_code_time_sum`, `average_gen_code_time`) are left
//! out of the comparison: they are wall-clock measurements. Everything else is exact.
//!
//! After an intended change of the demo, rerun with `ASE_DEMO_BLESS=1` to rewrite the expected
//! file, and review its diff.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), osemgrep and the demo images
//! (`deploy/images/build.sh`); outside CI the test says why it is skipped.

use ase_cluster_tests::demo_run::write_demo_run;
use ase_cluster_tests::support;
use ase_cluster_tests::{
    fetch_report, repo_root, start_coordinator_under, start_docker_worker, submit, Proc, RunFiles,
    WorkerOptions,
};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const ROUNDS: u32 = 3;
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
const PROVIDERS: [&str; 3] = ["reference", "original", "predictions"];
/// Wall-clock figures of the v2 score: not compared.
const TIMING_FIELDS: [&str; 2] = ["gen_code_time_sum", "average_gen_code_time"];

fn expected_path() -> std::path::PathBuf {
    repo_root().join("examples/demo/expected_scores.json")
}

/// The report's scores without the wall-clock fields.
fn comparable_scores(report_json: &Path) -> Value {
    let text = std::fs::read_to_string(report_json)
        .unwrap_or_else(|e| panic!("{}: {e}", report_json.display()));
    let report: Value = serde_json::from_str(&text).unwrap();
    let mut scores = report["scores"].clone();
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for f in TIMING_FIELDS {
                    m.remove(f);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut scores);
    scores
}

/// Our verdict counts of every unit (`breakdown.all`), as `expected_scores.json` keeps them
/// under `verdicts`.
fn verdict_counts(report_json: &Path) -> Value {
    let report: Value = serde_json::from_slice(&std::fs::read(report_json).unwrap()).unwrap();
    let all = &report["breakdown"]["all"];
    let mut out = serde_json::Map::new();
    for field in [
        "units",
        "verdict_secure",
        "verdict_vulnerable",
        "verdict_broken",
        "verdict_secure_pct",
    ] {
        out.insert(field.to_string(), all[field].clone());
    }
    Value::Object(out)
}

/// Every figure's interval and pass@k (`uncertainty`), as `expected_scores.json` keeps them
/// under `intervals`; each upstream-compatible interval is centred on the scores' own figure.
fn intervals(report_json: &Path) -> Value {
    let report: Value = serde_json::from_slice(&std::fs::read(report_json).unwrap()).unwrap();
    let u = &report["uncertainty"];
    assert!(u.is_object(), "{}: no uncertainty", report_json.display());
    for (field, figure) in figures(&report["scores"]) {
        let centre = u[field]["estimate"]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: no {field} interval", report_json.display()));
        assert!(
            (centre - figure).abs() < 0.01,
            "{}: {field} interval centred on {centre}, the scores say {figure}",
            report_json.display(),
        );
    }
    let mut out = serde_json::Map::new();
    for field in [
        "security",
        "security_verdict",
        "quality",
        "stability",
        "overall",
        "overall_corrected",
        "pass_k",
        "not_available",
    ] {
        if let Some(v) = u.get(field) {
            out.insert(field.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// The scores' figures that have an interval, by the interval's field.
fn figures(scores: &Value) -> Vec<(&'static str, f64)> {
    let f = |v: &Value| v.as_f64().unwrap();
    match scores["version"].as_str() {
        Some("v1") => vec![
            ("security", f(&scores["security"])),
            ("quality", f(&scores["quality"])),
            ("stability", f(&scores["stability"])),
            ("overall", f(&scores["overall"])),
        ],
        Some("v2") => {
            let all = &scores["all"];
            vec![
                ("security", f(&all["code_security_score"])),
                ("quality", f(&all["code_quality_score"])),
                ("stability", f(&all["code_stability_score"])),
                ("overall", f(&all["overall_score"])),
                ("overall_corrected", f(&all["overall_score_corrected"])),
            ]
        }
        other => panic!("unknown scores version {other:?}"),
    }
}

/// Units upstream counts secure but our verdict says broken, per vulnerability type.
fn secure_but_broken(report_json: &Path, vuln_type: &str) -> usize {
    let report: Value = serde_json::from_slice(&std::fs::read(report_json).unwrap()).unwrap();
    let of_type: Vec<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["vuln_type"] == vuln_type)
        .map(|t| t["instance_id"].as_str().unwrap())
        .collect();
    report["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| of_type.contains(&u["unit"]["instance_id"].as_str().unwrap()))
        .filter(|u| u["status"] == "secure" && u["verdict"] == "broken")
        .count()
}

fn security(scores: &Value) -> f64 {
    match scores["version"].as_str() {
        Some("v1") => scores["security"].as_f64().unwrap(),
        Some("v2") => scores["all"]["code_security_score"].as_f64().unwrap(),
        other => panic!("unknown scores version {other:?}"),
    }
}

#[test]
fn the_demo_scores_what_expected_scores_json_says() {
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let world = ase_demo::materialise(&tmp.path().join("demo")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for image in &world.v2_images {
        if rt.block_on(support::docker_with(image)).is_none() {
            return;
        }
    }
    let started = Instant::now();
    let (_coordinator, access) = start_coordinator_under(tmp.path(), &["w1"]);
    let _worker = start_docker_worker(
        &access,
        &tmp.path().join("cache-w1"),
        &WorkerOptions {
            name: "w1".into(),
            // Slots mostly wait (on leases, containers), so more than the cores: a worker
            // takes as many leases per request as it has free slots.
            generate_slots: 4,
            eval_slots: 6,
            osemgrep,
            repo_url_template: world.repo_url_template.clone(),
        },
        tmp.path().join("logs/worker-w1.log"),
    );

    let mut runs: Vec<(RunFiles, Proc)> = Vec::new();
    for (version, tasks, context, predictions) in [
        (
            "v1",
            &world.v1_tasks,
            &world.v1_context,
            &world.predictions_v1,
        ),
        (
            "v2",
            &world.v2_tasks,
            world.v2_context.as_ref().unwrap(),
            &world.predictions_v2,
        ),
    ] {
        for provider in PROVIDERS {
            let dir = tmp.path().join(format!("run-{version}-{provider}"));
            let files =
                write_demo_run(&dir, version, provider, ROUNDS, tasks, context, predictions);
            let proc = submit(
                &access,
                &files,
                true,
                tmp.path()
                    .join(format!("logs/submit-{version}-{provider}.log")),
            );
            runs.push((files, proc));
        }
    }

    // Each run's completion time, for the log (performance is measured by `bench`, not here).
    let mut pending: Vec<usize> = (0..runs.len()).collect();
    let mut finished = Vec::new();
    while !pending.is_empty() {
        pending.retain(|&i| {
            let (files, proc) = &mut runs[i];
            match proc.exited() {
                Some(status) => {
                    eprintln!(
                        "demo: {} done after {:.1} s",
                        files.run_id,
                        started.elapsed().as_secs_f64()
                    );
                    finished.push((i, status));
                    false
                }
                None => true,
            }
        });
        if started.elapsed() > RUN_TIMEOUT {
            let (files, proc) = &runs[pending[0]];
            panic!(
                "run {} not completed within {RUN_TIMEOUT:?}; submit log:\n{}",
                files.run_id,
                proc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    finished.sort_by_key(|(i, _)| *i);

    let mut actual = serde_json::Map::new();
    let mut verdicts = serde_json::Map::new();
    let mut interval_figures = serde_json::Map::new();
    for ((files, proc), (_, status)) in runs.iter().zip(finished) {
        assert!(
            status.success(),
            "submit of {}: {status}\n{}",
            files.run_id,
            proc.log_text()
        );
        let out = tmp.path().join(format!("report-{}", files.run_id));
        fetch_report(&access, &files.run_id, &out);
        let report_json = out.join(ase_common::report::REPORT_JSON);
        actual.insert(files.run_id.clone(), comparable_scores(&report_json));
        verdicts.insert(files.run_id.clone(), verdict_counts(&report_json));
        interval_figures.insert(files.run_id.clone(), intervals(&report_json));
        // The pretend model's path-traversal answers that did not apply: secure for
        // upstream (the scan of the masked tree finds nothing), broken in our verdict.
        if files.run_id == "demo-predictions__v1" {
            assert_eq!(secure_but_broken(&report_json, "Path Traversal"), 3);
        }
        for name in [
            ase_common::report::export::UNITS_JSONL,
            ase_common::report::export::UNITS_CSV,
        ] {
            assert!(out.join(name).is_file(), "{}: no {name}", files.run_id);
        }
    }
    actual.insert("verdicts".to_string(), Value::Object(verdicts));
    actual.insert("intervals".to_string(), Value::Object(interval_figures));
    eprintln!(
        "demo: 6 runs ({} units) in {:.1} s",
        (8 + 2) * 3 * 3,
        started.elapsed().as_secs_f64()
    );
    let actual = Value::Object(actual);
    let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";

    // The calibration the demo exists to show, independent of the expected file.
    for version in ["v1", "v2"] {
        let reference = security(&actual[format!("demo-reference__{version}")]);
        let original = security(&actual[format!("demo-original__{version}")]);
        assert!(
            reference >= original + 50.0,
            "{version}: reference security {reference} is not clearly above original {original}"
        );
    }

    if std::env::var("ASE_DEMO_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(expected_path(), &pretty).unwrap();
        eprintln!("wrote {}", expected_path().display());
        return;
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(expected_path())
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path().display())),
    )
    .unwrap();
    assert!(
        expected == actual,
        "demo scores differ from {}; actual:\n{pretty}",
        expected_path().display()
    );
}
