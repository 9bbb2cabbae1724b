//! `ase calibrate` on the demo's v1 dataset, through the real pipeline (embedded coordinator,
//! local worker, real git repos, real osemgrep): every task has a baseline, its original code
//! is vulnerable and its fix secure; a task made dead on purpose (its type changed to one our
//! rules do not see in its code) is flagged with the reason.
//!
//! The deletion probe: a task discriminates exactly when deleting its block does not score
//! secure, and a task it does score secure on is flagged with that reason and nothing else.
//! (Deleting the block scores `secure` by upstream's rule today, so on this branch the 8 demo
//! tasks are reported dead for that one reason; issue 14 item 3 makes such a unit `broken`,
//! after which the same assertions require every demo task to discriminate and exit code 0.)
//!
//! The v2 test runs the demo's v2 tasks in their images: the base fails the PoC, the fix passes
//! tests and PoC, the deletion breaks the tests; every task discriminates.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN) and osemgrep; v2 also Docker and the demo
//! images (deploy/images/build.sh demo; skipped outside CI without them).

use ase_cluster_tests::{ase_bin, repo_root, support, Proc};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `ase calibrate` and returns its exit code and calibration.json.
fn calibrate(
    dir: &Path,
    template: &str,
    dataset: &Path,
    context: &Path,
    batch: &str,
    docker: &str,
) -> (i32, Value) {
    let osemgrep = support::osemgrep_path().display().to_string();
    let rules = repo_root().join("rules").display().to_string();
    let mut p = Proc::spawn(
        "ase calibrate",
        &ase_bin(),
        &[
            "calibrate".into(),
            "--dataset".into(),
            dataset.display().to_string(),
            "--context".into(),
            context.display().to_string(),
            "--batch".into(),
            batch.into(),
            "--data".into(),
            dir.join("data").display().to_string(),
        ],
        &[
            ("ASE_DOCKER", docker),
            ("ASE_OSEMGREP", &osemgrep),
            ("ASE_RULES", &rules),
            ("ASE_REPO_URL_TEMPLATE", template),
            ("ASE_LOG", "warn"),
        ],
        dir.join(format!("calibrate-{batch}.log")),
    );
    let status = p
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("ase calibrate did not end; log:\n{}", p.log_text()));
    let out = dir.join(format!("data/results/calibrate__{batch}"));
    let json = std::fs::read(out.join("calibration.json")).unwrap_or_else(|e| {
        panic!(
            "no calibration.json ({e}): {status}; log:\n{}\nstdout:\n{}",
            p.log_text(),
            p.stdout_text()
        )
    });
    for f in ["calibration.md", "calibration.html"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let md = std::fs::read_to_string(out.join("calibration.md")).unwrap();
    let stdout = p.stdout_text();
    assert!(
        stdout.ends_with(&md),
        "it prints the probes' score table, then the Markdown:\n{stdout}"
    );
    (
        status.code().unwrap_or(-1),
        serde_json::from_slice(&json).unwrap(),
    )
}

fn verdict(task: &Value, probe: &str) -> String {
    task[probe]["verdict"].as_str().unwrap_or("-").to_string()
}

#[test]
fn the_demo_v1_tasks_discriminate_and_a_dead_task_is_flagged_with_its_reason() {
    if support::osemgrep_or_skip().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let world = ase_demo::materialise(&tmp.path().join("demo")).unwrap();

    let (code, cal) = calibrate(
        tmp.path(),
        &world.repo_url_template,
        &world.v1_tasks,
        &world.v1_context,
        "demo",
        "off",
    );
    let tasks = cal["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 8, "{cal:#}");
    let mut all = true;
    for t in tasks {
        let id = &t["instance_id"];
        assert!(
            t["baseline"].as_i64().unwrap_or(0) > 0,
            "{id}: baseline: {t:#}"
        );
        assert_eq!(verdict(t, "original"), "vulnerable", "{id}: {t:#}");
        assert_eq!(verdict(t, "fix"), "secure", "{id}: {t:#}");
        let deletion_secure = verdict(t, "deletion") == "secure";
        // Deleting the block is `broken` in our verdict (cause block_deleted): it cannot win.
        assert_eq!(verdict(t, "deletion"), "broken", "{id}: {t:#}");
        let reasons: Vec<&str> = t["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(t["discriminates"], !deletion_secure, "{id}: {t:#}");
        if deletion_secure {
            assert_eq!(reasons.len(), 1, "{id}: {reasons:?}");
            assert!(
                reasons[0].starts_with("deleting the block scores secure"),
                "{reasons:?}"
            );
        } else {
            assert!(reasons.is_empty(), "{id}: {reasons:?}");
        }
        all &= !deletion_secure;
    }
    assert!(all, "every demo v1 task discriminates: {cal:#}");
    assert_eq!(
        code,
        if all { 0 } else { 1 },
        "exit code follows the dead tasks"
    );

    // Dead on purpose: the SQL injection task relabelled as XSS (no XSS in its code, baseline 0).
    let mut data: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&world.v1_tasks).unwrap()).unwrap();
    let victim = data
        .iter_mut()
        .find(|t| t["vuln_type"] == "SQLI" && t["language"] == "python")
        .expect("the demo has a Python SQLI task");
    victim["vuln_type"] = "XSS".into();
    victim["cwe_id"] = "CWE-79".into();
    let victim_id = victim["instance_id"].as_str().unwrap().to_string();
    let dead_file = tmp.path().join("dead_tasks.json");
    std::fs::write(&dead_file, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
    let (code, cal) = calibrate(
        tmp.path(),
        &world.repo_url_template,
        &dead_file,
        &world.v1_context,
        "dead",
        "off",
    );
    assert_eq!(code, 1, "a dead task fails the calibration");
    let dead = cal["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_id"] == victim_id.as_str())
        .unwrap();
    assert_eq!(dead["discriminates"], false, "{dead:#}");
    assert_eq!(dead["baseline"], 0, "{dead:#}");
    let reasons = dead["reasons"].to_string();
    assert!(
        reasons.contains("baseline 0: our rules find no XSS at the base commit"),
        "{reasons}"
    );
    assert!(
        reasons.contains("the fix does not score secure"),
        "{reasons}"
    );
}

#[test]
fn the_demo_v2_tasks_discriminate_in_their_images() {
    if support::osemgrep_or_skip().is_none() {
        return;
    }
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
    let context = world.v2_context.clone().expect("the demo has a v2 context");
    let (code, cal) = calibrate(
        tmp.path(),
        &world.repo_url_template,
        &world.v2_tasks,
        &context,
        "demo-v2",
        "on",
    );
    let tasks = cal["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{cal:#}");
    for t in tasks {
        let id = &t["instance_id"];
        assert_eq!(t["version"], "v2", "{id}");
        assert_eq!(verdict(t, "original"), "vulnerable", "{id}: {t:#}");
        assert_eq!(verdict(t, "fix"), "secure", "{id}: {t:#}");
        assert_ne!(verdict(t, "deletion"), "secure", "{id}: {t:#}");
        assert_eq!(t["discriminates"], true, "{id}: {t:#}");
    }
    assert_eq!(code, 0);
}
