//! `ase run` with no config: the demo campaign (the `ase-demo` dataset, models `original`,
//! `reference` and `pretend` on v1 and v2, 3 rounds) through the embedded coordinator and the
//! local worker. Without Docker the v2 units fail with the reason instead of hanging; with
//! Docker and the demo images (deploy/images/build.sh) every run completes and the reference
//! fix is clearly more secure than the original code.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), osemgrep, and for the second test Docker
//! with the demo images (skipped outside CI without them).

use ase_cluster_tests::demo_run::assert_demo_v1_comparison;
use ase_cluster_tests::{ase_bin, repo_root, support, Proc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEMO_TIMEOUT: Duration = Duration::from_secs(600);

/// A row of the score table, split on whitespace: run, model, version, dataset file, quality,
/// security, stability, overall, corrected overall (v2; `-` for v1), units ok, failed.
fn row<'a>(stdout: &'a str, run_id: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(run_id))
        .unwrap_or_else(|| panic!("no row for {run_id}:\n{stdout}"))
        .split_whitespace()
        .collect()
}

fn num(cell: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|e| panic!("{cell:?} is not a number: {e}"))
}

/// The demo's expected scores (`examples/demo/expected_scores.json`, keyed
/// `demo-{model}__{version}` with the pretend model as `predictions`).
fn expected_scores() -> serde_json::Value {
    let path = repo_root().join("examples/demo/expected_scores.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `scores` of the report `ase run` wrote for `model` on `version` equal the expected ones
/// (v2: the scores, not the generation times, which are measured).
fn assert_expected_scores(data: &Path, model: &str, version: &str) {
    let run_id = format!("{model}__demo-{version}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join(format!("results/{run_id}/report.json"))).unwrap(),
    )
    .unwrap();
    let key = match model {
        "pretend" => format!("demo-predictions__{version}"),
        m => format!("demo-{m}__{version}"),
    };
    let expected = &expected_scores()[&key];
    assert!(expected.is_object(), "{key} in expected_scores.json");
    // Our verdicts, beside upstream's figures.
    let verdicts = &expected_scores()["verdicts"][&key];
    assert!(
        verdicts.is_object(),
        "verdicts.{key} in expected_scores.json"
    );
    for (field, want) in verdicts.as_object().unwrap() {
        assert_eq!(
            &report["breakdown"]["all"][field], want,
            "{run_id} verdicts.{field}"
        );
    }
    let got = &report["scores"];
    if version == "v1" {
        assert_eq!(got, expected, "{run_id} scores");
    } else {
        for field in [
            "code_quality_score",
            "code_security_score",
            "code_stability_score",
            "overall_score",
            "overall_score_corrected",
            "case_sum",
            "poc_pass_count",
        ] {
            assert_eq!(
                got["all"][field], expected["all"][field],
                "{run_id} all.{field}"
            );
        }
    }
}

fn run_demo(dir: &Path, docker: &str) -> Proc {
    let osemgrep = support::osemgrep_path().display().to_string();
    let rules = repo_root().join("rules").display().to_string();
    let mut p = Proc::spawn(
        "ase run (demo)",
        &ase_bin(),
        &[
            "run".into(),
            "--data".into(),
            dir.join("data").display().to_string(),
        ],
        &[
            ("ASE_DOCKER", docker),
            ("ASE_OSEMGREP", &osemgrep),
            ("ASE_RULES", &rules),
            ("ASE_LOG", "warn"),
        ],
        dir.join(format!("demo-docker-{docker}.log")),
    );
    let status = p
        .wait_exit(DEMO_TIMEOUT)
        .unwrap_or_else(|| panic!("the demo did not end; log:\n{}", p.log_text()));
    assert!(
        status.success(),
        "ase run: {status}; log:\n{}\nstdout:\n{}",
        p.log_text(),
        p.stdout_text()
    );
    p
}

#[test]
fn the_demo_without_docker_scores_v1_and_fails_v2_units_with_the_reason() {
    if support::osemgrep_or_skip().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = run_demo(tmp.path(), "off");
    let out = p.stdout_text();
    let log = p.log_text();
    assert!(log.contains("no Docker"), "{log}");
    assert!(
        log.contains("has v2 tasks and the worker has no Docker"),
        "{log}"
    );
    let original = row(&out, "original__demo-v1");
    let reference = row(&out, "reference__demo-v1");
    let pretend = row(&out, "pretend__demo-v1");
    assert_eq!(original[2], "v1", "{out}");
    // The original code is the vulnerable code; the reference is the fix.
    assert!(
        num(reference[5]) > num(original[5]),
        "reference more secure than original:\n{out}"
    );
    assert_eq!(num(original[5]), 0.0, "{out}");
    assert_eq!(num(reference[5]), 100.0, "{out}");
    // The pretend model is somewhere in between.
    assert!(
        num(pretend[5]) > 0.0 && num(pretend[5]) < 100.0,
        "pretend mixed:\n{out}"
    );
    for run in [
        "original__demo-v2",
        "reference__demo-v2",
        "pretend__demo-v2",
    ] {
        let r = row(&out, run);
        assert_eq!(r[r.len() - 2], "0", "{run} units ok:\n{out}");
        assert_eq!(r[r.len() - 1], "6", "{run} failed:\n{out}");
    }
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            tmp.path()
                .join("data/results/reference__demo-v2/report.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let units = report["units"].as_array().unwrap();
    assert_eq!(units.len(), 6);
    for u in units {
        let reason = u["reason"].as_str().unwrap_or_default();
        assert_eq!(u["status"], "failed", "{u}");
        assert!(reason.contains("needs Docker"), "{u}");
    }
    assert_campaign_leaderboard(&tmp.path().join("data/results"));
}

/// The campaign's leaderboard beside the run folders: one table per dataset (v1, v2), one row
/// per run with the figures of its report, best overall first, and the paper's section.
fn assert_campaign_leaderboard(results: &Path) {
    for name in ["leaderboard.html", "leaderboard.md"] {
        assert!(results.join(name).is_file(), "no {name}");
    }
    let board: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("leaderboard.json")).unwrap()).unwrap();
    let tables = board["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2, "{board}");
    for table in tables {
        let version = table["version"].as_str().unwrap();
        let rows = table["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{version}: {table}");
        let mut last = f64::INFINITY;
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["rank"], i as u64 + 1);
            let run = row["run"].as_str().unwrap();
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(results.join(run).join("report.json")).unwrap(),
            )
            .unwrap();
            let scores = &report["scores"];
            let overall = if version == "v1" {
                &scores["overall"]
            } else {
                &scores["all"]["overall_score"]
            };
            assert_eq!(&row["overall"], overall, "{run}");
            assert_eq!(
                row["overall_interval"], report["uncertainty"]["overall"],
                "{run}"
            );
            let o = row["overall"].as_f64().unwrap();
            assert!(o <= last, "{version}: not sorted by overall");
            last = o;
        }
    }
    assert!(
        board["paper"]["label"]
            .as_str()
            .unwrap()
            .contains("not comparable with ours"),
        "{board}"
    );
    let md = std::fs::read_to_string(results.join("leaderboard.md")).unwrap();
    assert!(md.contains("| 1 | reference__demo-v1 |"), "{md}");
    // Each row's last cell: our three verdicts, as in leaderboard.json, over every unit.
    for table in tables {
        for row in table["rows"].as_array().unwrap() {
            let run = row["run"].as_str().unwrap();
            let line = md
                .lines()
                .find(|l| l.contains(&format!("| {run} |")))
                .unwrap_or_else(|| panic!("no row of {run}:\n{md}"));
            let v = &row["verdicts"];
            assert!(
                line.ends_with(&format!(
                    "| {} / {} / {} |",
                    v["secure"], v["vulnerable"], v["broken"]
                )),
                "{line} vs {v}"
            );
            let units: u64 = ["secure", "vulnerable", "broken"]
                .iter()
                .map(|k| v[*k].as_u64().unwrap())
                .sum();
            assert_eq!(
                units,
                row["tasks"].as_u64().unwrap() * row["rounds"].as_u64().unwrap(),
                "{run}"
            );
        }
    }
}

fn docker_images_or_skip(images: &[&str]) -> bool {
    for image in images {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            support::unavailable(&format!("Docker image {image} is not there"));
            return false;
        }
    }
    true
}

#[test]
fn the_demo_with_docker_runs_v1_and_v2_and_resumes_without_work() {
    if support::osemgrep_or_skip().is_none()
        || !docker_images_or_skip(&["ase-demo-py-docserver:1", "ase-demo-py-logstat:1"])
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = run_demo(tmp.path(), "on");
    let out = p.stdout_text();
    for version in ["v1", "v2"] {
        let original = row(&out, &format!("original__demo-{version}"));
        let reference = row(&out, &format!("reference__demo-{version}"));
        assert!(
            num(reference[5]) > num(original[5]),
            "{version}: reference more secure than original:\n{out}"
        );
        for r in [&original, &reference] {
            assert_eq!(r[r.len() - 1], "0", "{version} failed units:\n{out}");
        }
    }
    for run in ["pretend__demo-v1", "pretend__demo-v2"] {
        let r = row(&out, run);
        assert!(num(r[5]) > 0.0 && num(r[5]) < 100.0, "{run} mixed:\n{out}");
    }
    for version in ["v1", "v2"] {
        for model in ["original", "reference", "pretend"] {
            assert_expected_scores(&tmp.path().join("data"), model, version);
        }
    }
    // The same command again: every run resumes already complete, same table.
    let again = run_demo(tmp.path(), "on");
    assert_eq!(again.stdout_text(), out);
    let log = again.log_text();
    assert_eq!(log.matches("resumed run").count(), 6, "{log}");
    assert!(!log.contains("submitted run"), "{log}");
}

/// `ase compare` on the demo's reports: what `assert_demo_v1_comparison` says (p-values and
/// flipped tasks). Runs the demo itself (v1 needs only osemgrep; without the v2 images the v2
/// runs still complete, with failed units).
#[test]
fn ase_compare_on_the_demo_gives_exact_p_values_and_flipped_tasks() {
    if support::osemgrep_or_skip().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    run_demo(tmp.path(), "off");
    let results = tmp.path().join("data/results");
    let dir = |run: &str| results.join(run).display().to_string();
    let out = Command::new(ase_bin())
        .args([
            "compare",
            &dir("original__demo-v1"),
            &dir("reference__demo-v1"),
            &dir("pretend__demo-v1"),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_demo_v1_comparison(&c);
    // The security interval of each run brackets the report's own security figure: ours (our
    // verdict, `breakdown.all.verdict_secure_pct`), since the comparison reads verdicts; it
    // equals the type-weighted figure here, the demo's types having equal task counts.
    for (i, run) in ["original", "reference", "pretend"].iter().enumerate() {
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(results.join(format!("{run}__demo-v1/report.json"))).unwrap(),
        )
        .unwrap();
        let s = &c["runs"][i]["uncertainty"]["security"];
        let reported = report["breakdown"]["all"]["verdict_secure_pct"]
            .as_f64()
            .unwrap();
        assert!(
            (s["estimate"].as_f64().unwrap() - reported).abs() < 0.005,
            "{run}: {s} vs {reported}"
        );
        assert!(s["low"].as_f64() <= s["estimate"].as_f64());
    }
    // v1 and v2 are different datasets: refused.
    let out = Command::new(ase_bin())
        .args([
            "compare",
            &dir("original__demo-v1"),
            &dir("original__demo-v2"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("different datasets"));
}
