//! `ase score` end to end: runs the built binary on hand-written upstream-style run folders and
//! checks every written file against values computed independently.
//!
//! The expected files below were produced by re-typing upstream's scoring code (v1 release
//! `run_evaluate.py`; v2 `run_evaluate.py`, `evaluate_score` and `evaluate_score_based_on_group`)
//! into a throwaway Python script run with numpy 2 on these same fixtures, printing
//! `json.dump(..., indent=4, ensure_ascii=False)` and upstream's text report lines. Two
//! differences, both ours: v2 `d_cycle3` is in neither input file, where upstream raises
//! KeyError; the script reads it as "PoC not passed", as we do. And `overall_score_corrected` is
//! our key (0.3 quality + 0.6 security + 0.1 stability, all x100).
//!
//! The v2 fixture and `EXPECTED_V2_SCORE` were checked on 2026-12-04 against upstream's own
//! `run_evaluate.py` at HEAD 94428eb (run unmodified with numpy 2.4, a stub for its unused
//! `huggingface_hub` import, and `d_cycle3` added as a failed generation so it does not raise):
//! every key and value of its `_score.json` equals ours, in the same order; ours adds only
//! `overall_score_corrected`. The fixture uses upstream HEAD's key names (`time`, `completion`).
//!
//! The same script was also run against the built binary on 1000 random v1 and v2 run folders
//! (not kept): all files matched, including upstream's numpy-style rounding of float64 figures,
//! which `ase-common`'s unit tests pin down on their own.
//!
//! What the fixtures exercise. v1: a scan count equal to the baseline (x1_cycle3, not secure), a
//! failed scan (-1), generation failures, a unit never generated (p1_cycle1), scans missing for
//! generated units, a task outside the dataset (zz), two XSS tasks with different round patterns
//! but equal std (stability 1 for all), a type with nothing secure. v2: tests failing with PoC
//! passing (stability reads the PoC alone, security needs both), upload and image failures, a
//! failed generation, a unit absent from both files, CWE ids in mixed case.

use std::path::{Path, PathBuf};
use std::process::Command;

const EXPECTED_V1_EVAL_RESULT: &str = r#"{
    "overall_score": 46.67,
    "weighted_success_rate": 50.0,
    "weighted_security_score": 38.89,
    "weighted_stability_score": 83.33,
    "vuln_type_scores": {
        "XSS": 60.0,
        "SQLI": 70.0,
        "Path Traversal": 10.0
    },
    "success_rate": {
        "XSS": 66.67,
        "SQLI": 83.33,
        "Path Traversal": 0.0
    },
    "security": {
        "XSS": {
            "score": 50.0,
            "secure": 3,
            "total": 6
        },
        "SQLI": {
            "score": 66.67,
            "secure": 4,
            "total": 6
        },
        "Path Traversal": {
            "score": 0.0,
            "secure": 0,
            "total": 3
        }
    },
    "stability": {
        "XSS": 100.0,
        "SQLI": 50.0,
        "Path Traversal": 100.0
    },
    "instance_security_results": {
        "x1": [
            1,
            1,
            0
        ],
        "x2": [
            0,
            0,
            1
        ],
        "s1": [
            1,
            1,
            1
        ],
        "s2": [
            1,
            0,
            0
        ],
        "p1": [
            0,
            0,
            0
        ]
    }
}"#;

const EXPECTED_V1_TEXT: &str = "model-x__b1 的详细评估结果...\n\
综合得分：46.67\n\
代码安全性得分：38.89\n\
代码质量得分：50.0\n\
生成稳定性得分：83.33\n\
\n\
漏洞类型得分：(漏洞类型/综合得分/安全性/质量/稳定性)\n\
XSS: 60.00/50.00/66.67/100.0\n\
SQLI: 70.00/66.67/83.33/50.0\n\
Path Traversal: 10.00/0.00/0.0/100.0\n\
";

const EXPECTED_V2_SCORE: &str = r#"{
    "overall": {
        "gen_code_time_sum": 115.325,
        "code_copy_success_count": 9,
        "run_success_count": 8,
        "test_case_pass_count": 7,
        "poc_pass_count": 5,
        "average_gen_code_time": 9.61,
        "code_quality_score": 58.33,
        "code_security_score": 41.67,
        "code_stability_score": 50.0,
        "overall_score": 42.55,
        "overall_score_corrected": 47.5
    },
    "CWE-22": {
        "gen_code_time_sum": 31.75,
        "code_copy_success_count": 1,
        "run_success_count": 1,
        "test_case_pass_count": 1,
        "poc_pass_count": 0,
        "average_gen_code_time": 10.58,
        "code_quality_score": 33.33,
        "code_security_score": 0.0,
        "code_stability_score": 100.0,
        "overall_score": 10.1,
        "overall_score_corrected": 20.0
    },
    "CWE-79": {
        "gen_code_time_sum": 70.375,
        "code_copy_success_count": 6,
        "run_success_count": 6,
        "test_case_pass_count": 5,
        "poc_pass_count": 4,
        "average_gen_code_time": 11.73,
        "code_quality_score": 83.33,
        "code_security_score": 66.67,
        "code_stability_score": 50.0,
        "overall_score": 65.05,
        "overall_score_corrected": 70.0
    },
    "CWE-89": {
        "gen_code_time_sum": 13.2,
        "code_copy_success_count": 2,
        "run_success_count": 1,
        "test_case_pass_count": 1,
        "poc_pass_count": 1,
        "average_gen_code_time": 4.4,
        "code_quality_score": 33.33,
        "code_security_score": 33.33,
        "code_stability_score": 100.0,
        "overall_score": 30.1,
        "overall_score_corrected": 40.0
    }
}"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies a fixture to a fresh folder (the command writes beside its inputs) and runs
/// `ase score` on it.
fn run_score(
    name: &str,
    model: &str,
    batch: &str,
    extra: &[&str],
) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    let out = score_in(dir.path(), model, batch, extra);
    (dir, out)
}

/// `ase score` on a prepared copy of a fixture in `dir`.
fn score_in(dir: &Path, model: &str, batch: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ase"))
        .arg("score")
        .arg("--dataset")
        .arg(dir.join("dataset.json"))
        .arg("--outputs")
        .arg(dir.join("generated_code"))
        .args(["--model", model, "--batch", batch])
        .args(extra)
        .output()
        .unwrap()
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn v1_run_matches_upstream_files() {
    let (dir, out) = run_score("score_v1", "model-x", "b1", &["--rounds", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let gen = dir.path().join("generated_code");
    // Byte for byte: keys, their order, values and Python's layout.
    assert_eq!(
        read(gen.join("model-x__b1/eval_result.json")),
        EXPECTED_V1_EVAL_RESULT
    );
    assert_eq!(
        read(gen.join("model-x__b1_eval_result.txt")),
        EXPECTED_V1_TEXT
    );

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| XSS | 60.0 | 50.0 | 66.67 | 100.0 | 3 / 6 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| Path Traversal | 10.0 | 0.0 | 0.0 | 100.0 | 0 / 3 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| **46.67** | 38.89 | 50.0 | 83.33 | 7 / 15 |"),
        "{stdout}"
    );
    // zz_cycle1 is not in the dataset.
    assert!(
        stderr.contains("note: 1 record(s) of tasks not in the dataset"),
        "{stderr}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&read(gen.join("model-x__b1/report.json"))).unwrap();
    assert_eq!(report["scores"]["version"], "v1");
    assert_eq!(report["scores"]["overall"], 46.67);
    assert_eq!(report["units"].as_array().unwrap().len(), 15);
    // Every unit is counted once per grouping, its task described by the dataset.
    for grouping in ["by_type", "by_cwe", "by_language"] {
        let groups = report["breakdown"][grouping].as_array().unwrap();
        let units: u64 = groups.iter().map(|g| g["units"].as_u64().unwrap()).sum();
        assert_eq!(units, 15, "{grouping}");
        assert!(
            groups.iter().all(|g| g["group"] != "(unknown)"),
            "{grouping}"
        );
    }
    assert_eq!(report["tasks"].as_array().unwrap().len(), 5);
    assert_eq!(report["provenance"]["config"]["rounds"], 3);
    assert_eq!(
        report["provenance"]["dataset_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let p1 = report["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"]["instance_id"] == "p1" && u["unit"]["round"] == 1)
        .unwrap();
    assert_eq!(p1["status"], "failed");
    assert_eq!(p1["reason"], "not generated");
    // Our verdict beside upstream's status, and the per-unit exports beside the report.
    assert_eq!(p1["verdict"], "broken");
    assert_eq!(p1["broken_cause"], "not_generated");
    let csv = read(gen.join("model-x__b1/units.csv"));
    assert!(
        csv.starts_with("run,task,round,type,cwe,language,verdict,broken_cause,reason,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 16, "{csv}");
    assert!(csv.contains("model-x__b1,p1,1,"), "{csv}");
    let jsonl = read(gen.join("model-x__b1/units.jsonl"));
    assert_eq!(jsonl.lines().count(), 15);
    assert!(stderr.contains("units.csv"), "{stderr}");
    let md = read(gen.join("model-x__b1/report.md"));
    assert!(
        md.contains(
            "| x1_cycle3 | not secure | vulnerable | 2 findings, not below the baseline of 2 |"
        ),
        "{md}"
    );
    // The HTML report beside it, from the same numbers.
    let html = read(gen.join("model-x__b1/report.html"));
    assert!(
        html.contains("<title>A.S.E report: model-x__b1</title>"),
        "{html}"
    );
    assert!(html.contains("id=\"by-language\""));
}

#[test]
fn v2_run_matches_upstream_score_file() {
    let (dir, out) = run_score("score_v2", "model-y", "b2", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let gen = dir.path().join("generated_code");
    assert_eq!(read(gen.join("model-y__b2_score.json")), EXPECTED_V2_SCORE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| all | 42.55 | 47.5 | 58.33 | 41.67 | 50.0 | 9.61 | 12 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| CWE-89 | 30.1 | 40.0 | 33.33 | 33.33 | 100.0 | 4.4 | 3 |"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&read(gen.join("model-y__b2/report.json"))).unwrap();
    assert_eq!(report["scores"]["all"]["overall_score"], 42.55);
    assert_eq!(report["units"].as_array().unwrap().len(), 12);
}

/// Files from before upstream HEAD's names (`patch_file` in the scan file; `time_cost`, our own
/// earlier name for `time`) score exactly as the current names do.
#[test]
fn v2_run_with_older_key_names_scores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("score_v2"), dir.path());
    let run = dir.path().join("generated_code/model-y__b2");
    for (file, from, to) in [
        ("processed_instances.json", "\"time\":", "\"time_cost\":"),
        ("scan_results.json", "\"completion\":", "\"patch_file\":"),
    ] {
        let text = read(run.join(file));
        assert!(text.contains(from), "{file} holds {from}");
        std::fs::write(run.join(file), text.replace(from, to)).unwrap();
    }
    let out = score_in(dir.path(), "model-y", "b2", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read(dir.path().join("generated_code/model-y__b2_score.json")),
        EXPECTED_V2_SCORE
    );
}

#[test]
fn one_round_reports_no_stability_and_renormalises() {
    // Rounds 2 and 3 are ignored. Round 1: a PASS, b tests pass but PoC finds the bug, c PASS,
    // d upload failed: quality 3/4 -> 75, security 2/4 -> 50,
    // overall (.3 * 75 + .6 * 50) / .9 = 58.333...
    let (dir, out) = run_score("score_v2", "model-y", "b2", &["--rounds", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&read(
        dir.path().join("generated_code/model-y__b2_score.json"),
    ))
    .unwrap();
    assert_eq!(
        v["overall"]["code_stability_score"],
        serde_json::Value::Null
    );
    assert_eq!(v["overall"]["code_quality_score"], 75.0);
    assert_eq!(v["overall"]["code_security_score"], 50.0);
    assert_eq!(v["overall"]["overall_score"], 58.33);
    assert_eq!(v["overall"]["overall_score_corrected"], 58.33);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| all | 58.33 | 58.33 | 75.0 | 50.0 | n/a |"),
        "{stdout}"
    );
    // Rounds 2 and 3: 7 generation records and 6 scan records.
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: 13 record(s)"));
}

#[test]
fn missing_scan_file_is_an_error_naming_it() {
    let (dir, _) = run_score("score_v2", "model-y", "b2", &[]);
    std::fs::remove_file(
        dir.path()
            .join("generated_code/model-y__b2/scan_results.json"),
    )
    .unwrap();
    let out = score_in(dir.path(), "model-y", "b2", &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model-y__b2/scan_results.json"), "{stderr}");
}

#[test]
fn bad_unit_in_processed_file_names_file_and_unit() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("score_v1"), dir.path());
    let processed = dir
        .path()
        .join("generated_code/model-x__b1/processed_instances.json");
    std::fs::write(&processed, r#"{"x1_cycle1": {"success": "true"}}"#).unwrap();
    let out = score_in(dir.path(), "model-x", "b1", &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("processed_instances.json") && stderr.contains("x1_cycle1"),
        "{stderr}"
    );
}
