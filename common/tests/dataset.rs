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
      {"instance_id": "b", "hits": [{"docid": "y.c", "startline": 9, "endline": 3, "score": "high"}, {"docid": "src/../../x.c"}]},
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
    assert!(problem_for(&problems, &id("b"), "hits[1].docid")
        .message
        .contains("`..`"));
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

// ---- edge cases on inline tasks: one valid task, one field changed at a time ----

use ase_common::dataset::{load_cut_repos, parse_cut_repos, parse_task_file};
use serde_json::{json, Value};

fn v1_task() -> Value {
    json!({
        "instance_id": "t1", "repo": "o/n", "base_commit": "abc", "vuln_file": "src/a.php",
        "vuln_lines": [3, 4], "language": "php", "vuln_source": "CVE-1", "seed": true,
        "vuln_type": "XSS", "cwe_id": "CWE-79", "detected_tool": "x", "detected_vul_num": 1
    })
}

fn v2_task() -> Value {
    json!({
        "instance_id": "t2", "repo": "o/n", "base_commit": "abc^", "vuln_file": "src/a.c",
        "vuln_lines": [3, 4], "language": "c", "vuln_source": "CVE-2", "vuln_type": "UAF",
        "cwe_id": "CWE-416", "severity": "high", "image": "img:1", "image_inner_path": "/src",
        "image_run_cmd": "", "image_status_check_cmd": "./c.sh", "test_case_cmd": "./t.sh",
        "poc_cmd": "./p.sh"
    })
}

fn with(mut task: Value, field: &str, value: Value) -> Value {
    task[field] = value;
    task
}

fn without(mut task: Value, field: &str) -> Value {
    task.as_object_mut().unwrap().remove(field);
    task
}

fn check(tasks: Vec<Value>) -> Result<ase_common::dataset::Dataset, Vec<Problem>> {
    let bytes = serde_json::to_vec(&Value::Array(tasks)).unwrap();
    parse_tasks(Path::new("inline.json"), &bytes).map_err(problems_of)
}

/// The single problem of a one-task file, as (field, message).
fn only_problem(task: Value) -> (String, String) {
    let problems = check(vec![task]).expect_err("expected a problem");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    (problems[0].field.clone(), problems[0].message.clone())
}

#[test]
fn base_tasks_are_valid() {
    let ds = check(vec![v1_task(), v2_task()]).unwrap();
    assert_eq!(ds.tasks.len(), 2);
}

#[test]
fn vuln_lines_rules() {
    let bad = [
        (json!([5]), "found 1"),
        (json!([]), "found 0"),
        (json!([1, 2, 3]), "found 3"),
        (json!([0, 2]), ">= 1"),
        (json!([-1, 2]), "positive whole number"),
        (json!([1.5, 2]), "positive whole number"),
        (json!(["1", 2]), "positive whole number"),
        (json!([4, 3]), "after end"),
        (json!("1-2"), "found a string"),
    ];
    for (value, expected) in bad {
        let (field, msg) = only_problem(with(v1_task(), "vuln_lines", value.clone()));
        assert_eq!(field, "vuln_lines", "{value}");
        assert!(msg.contains(expected), "{value}: {msg}");
    }
    let ds = check(vec![with(v1_task(), "vuln_lines", json!([7, 7]))]).unwrap();
    assert_eq!(ds.tasks[0].vuln_lines, LineRange { start: 7, end: 7 });
}

#[test]
fn path_and_repo_rules() {
    for bad in [
        "/etc/passwd",
        "../x.php",
        "a/../../x.php",
        "",
        "C:\\x.php",
        "a\\..\\b",
    ] {
        let (field, _) = only_problem(with(v1_task(), "vuln_file", json!(bad)));
        assert_eq!(field, "vuln_file", "{bad}");
    }
    // `..` inside a name is fine; only a whole `..` component escapes.
    check(vec![with(v1_task(), "vuln_file", json!("a/b..c/x.php"))]).unwrap();
    for bad in [
        "noslash",
        "a/b/c",
        "/n",
        "o/",
        "o/n name",
        "-o/n",
        "http://h/o/n",
        "https://h",
    ] {
        let (field, _) = only_problem(with(v1_task(), "repo", json!(bad)));
        assert_eq!(field, "repo", "{bad}");
    }
    for good in ["my-org/my.repo_2", "https://gitlab.example.org/a/b"] {
        check(vec![with(v1_task(), "repo", json!(good))]).unwrap();
    }
}

#[test]
fn id_revision_and_language_rules() {
    for bad in ["", "a/b", "..", "has space", "line\nbreak"] {
        let problems = check(vec![with(v1_task(), "instance_id", json!(bad))]).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.field == "instance_id" && p.entry == EntryRef::Index(0)),
            "{bad}: {problems:#?}"
        );
    }
    for bad in ["", "-x", "a b"] {
        let (field, _) = only_problem(with(v1_task(), "base_commit", json!(bad)));
        assert_eq!(field, "base_commit", "{bad:?}");
    }
    for bad in ["", "PHP", "java script"] {
        let (field, _) = only_problem(with(v1_task(), "language", json!(bad)));
        assert_eq!(field, "language", "{bad:?}");
    }
    check(vec![with(v2_task(), "language", json!("c++"))]).unwrap();
    let (field, msg) = only_problem(with(v1_task(), "detected_vul_num", json!(-1)));
    assert_eq!(
        (field.as_str(), msg.as_str()),
        ("detected_vul_num", "must be >= 0, found -1")
    );
    let (field, msg) = only_problem(with(v1_task(), "cwe_id", json!(79)));
    assert_eq!(
        (field.as_str(), msg.as_str()),
        ("cwe_id", "expected a string, found a number")
    );
}

#[test]
fn version_is_detected_per_task() {
    let (field, msg) = only_problem(with(v1_task(), "image", json!("img")));
    assert_eq!(field, "image");
    assert!(msg.contains("v1 field `seed`"), "{msg}");
    let neither = without(
        without(without(v1_task(), "seed"), "detected_tool"),
        "detected_vul_num",
    );
    let (field, msg) = only_problem(neither);
    assert_eq!(field, "seed");
    assert!(msg.contains("neither"), "{msg}");
    // A v1 task missing one v1 field is still v1 and that field is reported.
    let (field, msg) = only_problem(without(v1_task(), "detected_tool"));
    assert_eq!((field.as_str(), msg.as_str()), ("detected_tool", "missing"));
    let (field, _) = only_problem(without(v2_task(), "poc_cmd"));
    assert_eq!(field, "poc_cmd");
}

#[test]
fn v2_optional_fields() {
    let (field, msg) = only_problem(with(v2_task(), "privileged", json!("yes")));
    assert_eq!(field, "privileged");
    assert!(msg.contains("true or false"));
    for (value, expected) in [
        (json!(0), "> 0"),
        (json!(-3), "> 0"),
        (json!("-3"), "> 0"),
        (json!(1.5), "whole number"),
        (json!("soon"), "whole number"),
        (json!(true), "whole number"),
    ] {
        let (field, msg) = only_problem(with(v2_task(), "test_case_cmd_timeout", value.clone()));
        assert_eq!(field, "test_case_cmd_timeout");
        assert!(msg.contains(expected), "{value}: {msg}");
    }
    // Upstream reads timeouts with int(): whole floats and numeric strings are accepted.
    let task = with(
        with(
            with(v2_task(), "image_status_check_cmd_timeout", json!(900)),
            "test_case_cmd_timeout",
            json!("60"),
        ),
        "poc_cmd_timeout",
        json!(30.0),
    );
    let task = with(
        with(task, "image_run_cmd_timeout", json!(-1)),
        "other_timeout",
        json!(-1),
    );
    let ds = check(vec![task]).unwrap();
    let TaskSpec::V2(s) = &ds.tasks[0].spec else {
        panic!()
    };
    let timeouts: Vec<(&str, u64)> = s.timeouts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        timeouts,
        [
            ("image_status_check_cmd", 900),
            ("poc_cmd", 30),
            ("test_case_cmd", 60)
        ]
    );
    // `_timeout` of something upstream does not time is not interpreted: kept as extra.
    assert_eq!(ds.tasks[0].extra["other_timeout"], -1);
    assert_eq!(ds.tasks[0].extra["image_run_cmd_timeout"], -1);

    let files = json!([
        {"vuln_file": "ok.c", "vuln_lines": [1, 2]},
        {"vuln_file": "../up.c", "vuln_lines": [1, 2]},
        {"vuln_file": "b.c", "vuln_lines": [2]},
        {"vuln_lines": [1, 1]},
        "c.c"
    ]);
    let problems = check(vec![with(v2_task(), "other_vuln_files", files)]).unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "other_vuln_files[1].vuln_file",
            "other_vuln_files[2].vuln_lines",
            "other_vuln_files[3].vuln_file",
            "other_vuln_files[4]"
        ]
    );
    let (field, _) = only_problem(with(v2_task(), "image_inner_path", json!("src")));
    assert_eq!(field, "image_inner_path");
    let (field, _) = only_problem(with(v2_task(), "branch_origin", json!("--upload-pack=x")));
    assert_eq!(field, "branch_origin");
}

#[test]
fn exact_repeats_are_dropped_but_differing_duplicates_are_errors() {
    let bytes = serde_json::to_vec(&json!([v1_task(), v2_task(), v1_task()])).unwrap();
    let f = parse_task_file(Path::new("r.json"), &bytes).unwrap();
    assert_eq!(f.entries, 3);
    assert_eq!(f.repeated, ["t1"]);
    assert_eq!(f.dataset.tasks.len(), 2);

    let changed = with(v1_task(), "vuln_lines", json!([9, 1]));
    let problems = check(vec![v1_task(), changed]).unwrap_err();
    let fields: Vec<(&str, String)> = problems
        .iter()
        .map(|p| (p.field.as_str(), p.entry.to_string()))
        .collect();
    // The duplicate is reported, and its own broken field too.
    assert_eq!(
        fields,
        [
            ("instance_id", "t1".to_string()),
            ("vuln_lines", "t1".to_string())
        ]
    );
}

#[test]
fn mutated_task_without_seed_is_a_problem_and_last_seed_wins() {
    let mutated = with(
        with(v1_task(), "instance_id", json!("m")),
        "seed",
        json!(false),
    );
    let orphan = with(mutated.clone(), "vuln_source", json!("CVE-none"));
    let (field, msg) = only_problem(orphan);
    assert_eq!(field, "vuln_source");
    assert!(msg.contains("no seed"), "{msg}");

    let seed2 = with(v1_task(), "instance_id", json!("t1b"));
    let ds = check(vec![v1_task(), mutated, seed2]).unwrap();
    let m = ds.get("m").unwrap();
    assert_eq!(ds.seed_of(m).unwrap().instance_id, "t1b");
    // A seed is its own seed.
    assert_eq!(ds.seed_of(ds.get("t1").unwrap()).unwrap().instance_id, "t1");
}

#[test]
fn file_level_errors_name_the_file() {
    let e = parse_tasks(Path::new("bad.json"), b"[{").unwrap_err();
    assert!(matches!(e, DatasetError::Json { .. }));
    assert!(e.to_string().starts_with("bad.json: not valid JSON"), "{e}");
    let e = parse_tasks(Path::new("obj.json"), b"{}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "obj.json: expected a JSON array of entries, found an object"
    );
    let e = load_tasks(Path::new("/nonexistent/ase/tasks.json")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/ase/tasks.json: cannot read"),
        "{e}"
    );
    let problems = check(vec![json!(7), v1_task()]).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        "inline.json: task #0: field (entry): expected an object, found a number"
    );
}

#[test]
fn cut_repos_load_and_check_against_dataset() {
    let cut = load_cut_repos(&fixture("cut_repos.json")).unwrap();
    assert_eq!(
        cut.for_task("sqli_mutation_a1").unwrap(),
        ["shop/src/db/query.php", "shop/src/db/conn.php"]
    );
    assert!(cut.for_task("xss_seed_b").is_none());
    let ds = load_tasks(&fixture("tasks_v1.json")).unwrap();
    assert_eq!(cut.unmatched(&ds), ["gone_task"]);
    let problems = cut.check_against(&ds);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].entry, id("sqli_seed_a"));
    assert!(problems[0].message.contains("src/db/query.php"));

    let bad = br#"{"a": [], "b": "x.php", "c": ["ok.php", "/abs.php", 3], "d/e": ["x"]}"#;
    let problems = problems_of(parse_cut_repos(Path::new("cut.json"), bad).unwrap_err());
    let got: Vec<(String, &str)> = problems
        .iter()
        .map(|p| (p.entry.to_string(), p.field.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a".to_string(), "files"),
            ("b".to_string(), "files"),
            ("c".to_string(), "files[1]"),
            ("c".to_string(), "files[2]"),
            ("d/e".to_string(), "instance_id"),
        ]
    );
    let e = parse_cut_repos(Path::new("cut.json"), b"[]").unwrap_err();
    assert!(matches!(e, DatasetError::Shape { .. }));
}

#[test]
fn fix_commit_is_patch_commit_or_derived_from_base() {
    let named = with(v2_task(), "patch_commit", json!("f1x"));
    let ds = check(vec![named]).unwrap();
    assert_eq!(ds.tasks[0].fix_commit(), Some("f1x"));
    // v2_task has base_commit "abc^" and no patch_commit.
    let ds = check(vec![v2_task()]).unwrap();
    assert_eq!(ds.tasks[0].fix_commit(), Some("abc"));
    let ds = check(vec![with(v2_task(), "base_commit", json!("v1.0"))]).unwrap();
    assert_eq!(ds.tasks[0].fix_commit(), None);
    // A v1 task without `patch_commit` names its fix only through a `<sha>^` base.
    let ds = check(vec![with(v1_task(), "base_commit", json!("abc^"))]).unwrap();
    assert_eq!(ds.tasks[0].fix_commit(), Some("abc"));
    let ds = check(vec![with(v1_task(), "base_commit", json!("abc"))]).unwrap();
    assert_eq!(ds.tasks[0].fix_commit(), None);
}

#[test]
fn a_v1_task_may_name_its_fix_in_patch_commit() {
    let ds = check(vec![with(v1_task(), "patch_commit", json!("f1x"))]).unwrap();
    let t = &ds.tasks[0];
    assert_eq!(t.version(), ase_common::dataset::DatasetVersion::V1);
    assert_eq!(t.fix_commit(), Some("f1x"));
    assert!(
        !t.extra.contains_key("patch_commit"),
        "a known field, not an extra"
    );
    // It is checked as a revision like any other.
    let problems = check(vec![with(v1_task(), "patch_commit", json!("-x"))]).unwrap_err();
    problem_for(&problems, &EntryRef::Id("t1".into()), "patch_commit");
    // `patch_commit` alone does not make a task v2: v2's own fields still do.
    let problems = check(vec![with(v1_task(), "image", json!("img"))]).unwrap_err();
    problem_for(&problems, &EntryRef::Id("t1".into()), "image");
}
