//! Runs the built `ase validate` on fixtures and checks exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn common_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../common/tests/fixtures")
        .join(name)
}

fn ase_validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ase"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run ase")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn broken_dataset_exits_1_and_prints_every_problem_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.json");
    std::fs::write(
        &path,
        r#"[
  {"instance_id": "no_lines", "repo": "o/n", "base_commit": "abc", "vuln_file": "a.php",
   "language": "php", "vuln_source": "CVE-1", "seed": true, "vuln_type": "XSS",
   "cwe_id": "CWE-79", "detected_tool": "t", "detected_vul_num": 0},
  {"instance_id": "bad_timeout", "repo": "o/n", "base_commit": "abc", "vuln_file": "a.c",
   "vuln_lines": [2, 1], "language": "c", "vuln_source": "CVE-2", "vuln_type": "UAF",
   "cwe_id": "CWE-416", "severity": "high", "image": "img", "image_inner_path": "/src",
   "image_run_cmd": "", "image_status_check_cmd": "./c.sh", "test_case_cmd": "./t.sh",
   "poc_cmd": "./p.sh", "poc_cmd_timeout": -1, "privileged": 1},
  {"repo": "o/n"}
]"#,
    )
    .unwrap();
    let out = ase_validate(&["--dataset", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let f = path.display();
    let expected = [
        format!("{f}: task no_lines: field vuln_lines: missing"),
        format!("{f}: task bad_timeout: field vuln_lines: start 2 is after end 1"),
        format!("{f}: task bad_timeout: field privileged: expected true or false, found a number"),
        format!("{f}: task bad_timeout: field poc_cmd_timeout: must be > 0 seconds, found -1"),
        format!("{f}: task #2: field instance_id: missing"),
        format!("{f}: task #2: field base_commit: missing"),
    ];
    for e in &expected {
        assert!(
            lines.contains(&e.as_str()),
            "missing line {e:?} in:\n{stderr}"
        );
    }
    // Every problem is one line, all of them on stderr.
    assert!(
        lines.iter().all(|l| l.starts_with(&f.to_string())),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{} problem(s), listed on stderr", lines.len())),
        "{stdout}"
    );
}

#[test]
fn valid_dataset_and_context_exit_0_with_summary() {
    let tasks = common_fixture("tasks_v1.json");
    let ctx = common_fixture("contexts_v1.json");
    let out = ase_validate(&[
        "--dataset",
        tasks.to_str().unwrap(),
        "--context",
        ctx.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "  entries: 3",
        "  tasks: 3 (v1: 3, v2: 0)",
        "  v1 seeds: 2, mutated: 1",
        "  languages (2): php=2, python=1",
        "  vuln_types (2): SQLI=2, XSS=1",
        "  cwe_ids (2): CWE-89=2, CWE-79=1",
        "  tasks without context: 0",
        "  context entries matching no task: 1",
        "valid",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert!(text(&out.stderr).is_empty());
}

#[test]
fn tasks_without_context_are_listed() {
    let tasks = common_fixture("tasks_v2.json");
    let ctx = common_fixture("contexts_v2.json");
    let out = ase_validate(&[
        "--dataset",
        tasks.to_str().unwrap(),
        "--context",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  tasks without context: 1 (lab_CVE-2004-0004)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  hits: 2 (with a line range: 1)\n"),
        "{stdout}"
    );
}

#[test]
fn cut_repos_problems_against_the_dataset_fail() {
    let tasks = common_fixture("tasks_v1.json");
    let cut = common_fixture("cut_repos.json");
    let out = ase_validate(&[
        "--dataset",
        tasks.to_str().unwrap(),
        "--cut-repos",
        cut.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: task sqli_seed_a: field files: the kept files do not include",
            cut.display()
        )),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  cut tasks: 3 (files kept: 4)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  entries matching no task: 1\n"),
        "{stdout}"
    );
}

#[test]
fn unreadable_and_malformed_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad_json = dir.path().join("ctx.json");
    std::fs::write(&bad_json, "[{\"instance_id\": ").unwrap();
    let missing = dir.path().join("nope.json");
    let out = ase_validate(&[
        "--dataset",
        missing.to_str().unwrap(),
        "--context",
        bad_json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: cannot read", missing.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: not valid JSON", bad_json.display())),
        "{stderr}"
    );
}

#[test]
fn some_input_is_required() {
    let out = ase_validate(&[]);
    assert_eq!(out.status.code(), Some(2));
}
