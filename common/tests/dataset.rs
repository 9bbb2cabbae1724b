//! Loading and validating task and context files (fixtures in `tests/fixtures/`).

use ase_common::dataset::{
    load_contexts, load_tasks, parse_contexts, parse_tasks, DatasetError, DatasetVersion, EntryRef,
    LineRange, Problem, TaskSpec,
};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn problems_of(err: DatasetError) -> Vec<Problem> {
    match err {
        DatasetError::Invalid { problems } => problems,
        other => panic!("expected Invalid, got {other}"),
    }
}

fn problem_for<'a>(problems: &'a [Problem], entry: &EntryRef, field: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| &p.entry == entry && p.field == field)
        .unwrap_or_else(|| panic!("no problem for {entry} / {field} in {problems:#?}"))
}

fn id(s: &str) -> EntryRef {
    EntryRef::Id(s.to_string())
}

#[test]
fn valid_v1_file_loads_every_field() {
    let ds = load_tasks(&fixture("tasks_v1.json")).unwrap();
    assert_eq!(ds.tasks.len(), 3);
    let t = ds.get("sqli_seed_a").unwrap();
    assert_eq!(t.version(), DatasetVersion::V1);
    assert_eq!(t.repo, "acme/shop");
    assert_eq!(t.vuln_file, "src/db/query.php");
    assert_eq!(t.vuln_lines, LineRange { start: 10, end: 14 });
    assert_eq!(t.language, "php");
    assert_eq!(t.vuln_source, "CVE-2001-0001");
    assert_eq!(t.vuln_type, "SQLI");
    assert_eq!(t.cwe_id, "CWE-89");
    match &t.spec {
        TaskSpec::V1(s) => {
            assert!(s.seed);
            assert_eq!(s.detected_tool, "example/sast:latest");
            assert_eq!(s.detected_vul_num, 2);
        }
        other => panic!("expected v1, got {other:?}"),
    }
    assert!(t.extra.is_empty());
    assert_eq!(ds.get("xss_seed_b").unwrap().base_commit, "fedcba9^");
    assert!(ds.get("nope").is_none());
}

#[test]
fn sha256_is_of_the_file_bytes() {
    let path = fixture("tasks_v1.json");
    let ds = load_tasks(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let again = parse_tasks(&path, &bytes).unwrap();
    assert_eq!(ds.sha256, again.sha256);
    assert_eq!(ds.sha256.len(), 64);
    // Known digest of a fixed input, so a wrong hash function would be caught.
    let tiny = parse_tasks(Path::new("x"), b"[]").unwrap();
    assert_eq!(
        tiny.sha256,
        "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
    );
}

#[test]
fn extra_fields_are_kept() {
    let ds = load_tasks(&fixture("tasks_v1.json")).unwrap();
    let t = ds.get("sqli_mutation_a1").unwrap();
    assert_eq!(t.extra.len(), 2);
    assert_eq!(t.extra["reviewer"], "alice");
    assert_eq!(t.extra["notes"]["difficulty"], 3);
    let v2 = load_tasks(&fixture("tasks_v2.json")).unwrap();
    assert_eq!(
        v2.get("lab_CVE-2003-0003").unwrap().extra["image_name"],
        "cve-2003-0003"
    );
    assert_eq!(
        v2.get("lab_CVE-2004-0004").unwrap().extra["comment"],
        "kept as an extra field"
    );
    // Interpreted fields are not duplicated into extra.
    assert!(!v2
        .get("lab_CVE-2003-0003")
        .unwrap()
        .extra
        .contains_key("poc_cmd_timeout"));
}

#[test]
fn valid_v2_file_loads_every_field() {
    let ds = load_tasks(&fixture("tasks_v2.json")).unwrap();
    assert_eq!(ds.tasks.len(), 2);
    let t = ds.get("lab_CVE-2003-0003").unwrap();
    assert_eq!(t.version(), DatasetVersion::V2);
    let TaskSpec::V2(s) = &t.spec else {
        panic!("expected v2")
    };
    assert_eq!(s.patch_commit.as_deref(), Some("abcdef0"));
    assert_eq!(s.severity, "high");
    assert_eq!(s.image, "example/ase_cve-2003-0003:latest");
    assert_eq!(s.image_inner_path, "/cve/SRC");
    assert_eq!(s.image_run_cmd, "tail -f /dev/null");
    assert_eq!(s.test_case_cmd, "./test_case.sh");
    assert_eq!(s.poc_cmd, "./poc.sh");
    assert!(!s.privileged);
    assert_eq!(s.timeouts.get("poc_cmd"), Some(&300));
    assert_eq!(s.timeouts.len(), 1);
    // The `{"vuln_file": "", "vuln_lines": []}` placeholder means "none" and is dropped.
    assert_eq!(s.other_vuln_files.len(), 1);
    assert_eq!(s.other_vuln_files[0].vuln_file, "src/lex.c");
    assert_eq!(
        s.other_vuln_files[0].vuln_lines,
        LineRange { start: 7, end: 9 }
    );
    assert_eq!(s.branch_origin, None);

    let u = ds.get("lab_CVE-2004-0004").unwrap();
    assert_eq!(u.repo, "https://gitlab.example.org/group/project");
    let TaskSpec::V2(s) = &u.spec else {
        panic!("expected v2")
    };
    assert!(s.privileged);
    assert_eq!(s.image_run_cmd, "");
    assert_eq!(s.patch_commit, None);
    assert_eq!(s.branch_origin.as_deref(), Some("pull/7/head:pr-7"));
    assert!(s.other_vuln_files.is_empty());
}

#[test]
fn broken_file_reports_every_problem_with_id_and_field() {
    let problems = problems_of(load_tasks(&fixture("tasks_broken.json")).unwrap_err());
    let p = problem_for(&problems, &id("missing_repo"), "repo");
    assert_eq!(p.message, "missing");
    assert!(problem_for(&problems, &id("wrong_type_seed"), "seed")
        .message
        .contains("expected true or false, found a string"));
    assert!(problem_for(&problems, &id("one_line_number"), "vuln_lines")
        .message
        .contains("found 1"));
    assert!(problem_for(&problems, &id("reversed_lines"), "vuln_lines")
        .message
        .contains("start 9 is after end 4"));
    assert!(problem_for(&problems, &id("reversed_lines"), "instance_id")
        .message
        .contains("duplicate"));
    assert!(
        problem_for(&problems, &id("negative_timeout"), "poc_cmd_timeout")
            .message
            .contains("> 0")
    );
    // No usable id: the entry is named by its index, and every field problem is still found.
    let idx = EntryRef::Index(6);
    assert!(problem_for(&problems, &idx, "instance_id").message == "missing");
    assert!(problem_for(&problems, &idx, "vuln_file")
        .message
        .contains(".."));
    assert_eq!(problems.len(), 8, "{problems:#?}");

    let file = fixture("tasks_broken.json");
    let shown = problem_for(&problems, &id("missing_repo"), "repo").to_string();
    assert_eq!(
        shown,
        format!("{}: task missing_repo: field repo: missing", file.display())
    );
    assert!(problem_for(&problems, &idx, "vuln_file")
        .to_string()
        .contains(": task #6: field vuln_file: "));
}

#[test]
fn mutated_task_uses_its_seed_context() {
    let ds = load_tasks(&fixture("tasks_v1.json")).unwrap();
    let ctx = load_contexts(&fixture("contexts_v1.json")).unwrap();
    let mutated = ds.get("sqli_mutation_a1").unwrap();
    assert_eq!(ds.seed_of(mutated).unwrap().instance_id, "sqli_seed_a");
    let c = ctx.for_task(mutated, &ds).unwrap();
    assert_eq!(c.instance_id, "sqli_seed_a");
    assert_eq!(c.function_summary, "Builds the product search query.");
    let seed = ds.get("xss_seed_b").unwrap();
    assert_eq!(ctx.for_task(seed, &ds).unwrap().instance_id, "xss_seed_b");
    let unmatched: Vec<&str> = ctx
        .unmatched(&ds)
        .iter()
        .map(|c| c.instance_id.as_str())
        .collect();
    assert_eq!(unmatched, ["retired_task"]);
}

#[test]
fn v2_hits_keep_line_ranges() {
    let ds = load_tasks(&fixture("tasks_v2.json")).unwrap();
    let ctx = load_contexts(&fixture("contexts_v2.json")).unwrap();
    let t = ds.get("lab_CVE-2003-0003").unwrap();
    let c = ctx.for_task(t, &ds).unwrap();
    assert_eq!(c.hits[0].docid, "src/parse.h");
    assert_eq!(
        (c.hits[0].startline, c.hits[0].endline),
        (Some(10), Some(30))
    );
    assert_eq!(c.hits[0].score, None);
    assert_eq!((c.hits[1].startline, c.hits[1].endline), (None, None));
    assert!(ctx
        .for_task(ds.get("lab_CVE-2004-0004").unwrap(), &ds)
        .is_none());
}

#[test]
fn context_problems_are_all_reported() {
    let bytes = br#"[
      {"instance_id": "a", "hits": [{"docid": "/etc/passwd"}, {"docid": "x.c", "startline": 5}], "function_summary": "s"},
      {"instance_id": "b", "hits": [{"docid": "y.c", "startline": 9, "endline": 3, "score": "high"}]},
      {"instance_id": "a", "hits": [], "function_summary": ""}
    ]"#;
    let problems = problems_of(parse_contexts(Path::new("ctx.json"), bytes).unwrap_err());
    assert!(problem_for(&problems, &id("a"), "hits[0].docid")
        .message
        .contains("absolute"));
    assert!(problem_for(&problems, &id("a"), "hits[1].endline")
        .message
        .contains("startline is set"));
    assert!(problem_for(&problems, &id("b"), "hits[0].startline")
        .message
        .contains("after endline"));
    assert!(problem_for(&problems, &id("b"), "hits[0].score")
        .message
        .contains("number"));
    assert_eq!(
        problem_for(&problems, &id("b"), "function_summary").message,
        "missing"
    );
    assert!(problem_for(&problems, &id("a"), "instance_id")
        .message
        .contains("duplicate"));
    assert_eq!(problems.len(), 6, "{problems:#?}");
}
