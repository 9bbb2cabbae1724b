//! Tests of [`super`]: kept beside it so that the module itself reads on one screen.

use super::*;
use serde_json::json;

/// `parse_task_file` as it was before it streamed: the whole array parsed, then every
/// task built, repeats compared by value. The streaming version must agree with it.
fn whole_file_parse(path: &Path, bytes: &[u8]) -> Result<TaskFile, DatasetError> {
    let items = raw::parse_array(path, bytes)?;
    let mut problems = Vec::new();
    let mut tasks = Vec::with_capacity(items.len());
    let mut repeated = Vec::new();
    let mut first_index_of: HashMap<String, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let entry = entry_ref(item, index);
        if let EntryRef::Id(id) = &entry {
            if let Some(&first) = first_index_of.get(id) {
                if items[first] == *item {
                    repeated.push(id.clone());
                } else {
                    problems.push(Problem {
                        file: path.to_path_buf(),
                        entry: entry.clone(),
                        field: "instance_id".into(),
                        message: format!(
                            "duplicate instance_id (entries #{first} and #{index} differ)"
                        ),
                    });
                    check_task(path, index, entry, item, &mut problems);
                }
                continue;
            }
            first_index_of.insert(id.clone(), index);
        }
        if let Some(task) = check_task(path, index, entry, item, &mut problems) {
            tasks.push(task);
        }
    }
    let seed_sources: HashSet<&str> = tasks
        .iter()
        .filter(|t| matches!(&t.spec, TaskSpec::V1(s) if s.seed))
        .map(|t| t.vuln_source.as_str())
        .collect();
    for t in &tasks {
        if matches!(&t.spec, TaskSpec::V1(s) if !s.seed)
            && !seed_sources.contains(t.vuln_source.as_str())
        {
            problems.push(Problem {
                    file: path.to_path_buf(),
                    entry: EntryRef::Id(t.instance_id.clone()),
                    field: "vuln_source".into(),
                    message: format!(
                        "mutated task (seed false) but no seed task has vuln_source `{}`; its context comes from that seed",
                        t.vuln_source
                    ),
                });
        }
    }
    if !problems.is_empty() {
        return Err(DatasetError::Invalid { problems });
    }
    Ok(TaskFile {
        dataset: Dataset {
            path: path.to_path_buf(),
            sha256: raw::sha256_hex(bytes),
            tasks,
        },
        entries: items.len(),
        repeated,
    })
}

/// A comparable view of a parse result (`DatasetError` has no `==`).
#[derive(Debug, PartialEq)]
enum Outcome {
    Loaded(TaskFile),
    Invalid(Vec<Problem>),
    /// A file-level error: its variant and message.
    Failed(&'static str, String),
}

fn outcome(r: Result<TaskFile, DatasetError>) -> Outcome {
    match r {
        Ok(f) => Outcome::Loaded(f),
        Err(DatasetError::Invalid { problems }) => Outcome::Invalid(problems),
        Err(e @ DatasetError::Json { .. }) => Outcome::Failed("json", e.to_string()),
        Err(e @ DatasetError::Shape { .. }) => Outcome::Failed("shape", e.to_string()),
        Err(e) => Outcome::Failed("other", e.to_string()),
    }
}

/// Parses `bytes` both ways and returns the (agreed) outcome.
fn both_ways(bytes: &[u8]) -> Outcome {
    let path = Path::new("d.json");
    let streamed = outcome(parse_task_file(path, bytes));
    let whole = outcome(whole_file_parse(path, bytes));
    assert_eq!(streamed, whole, "input: {}", String::from_utf8_lossy(bytes));
    streamed
}

fn tasks_bytes(items: &[Value]) -> Vec<u8> {
    serde_json::to_vec(items).unwrap()
}

fn v1(id: &str, source: &str, seed: bool) -> Value {
    json!({
        "instance_id": id, "repo": format!("o/{id}"), "base_commit": "abc",
        "vuln_file": "src/a.php", "vuln_lines": [3, 4], "language": "php",
        "vuln_source": source, "seed": seed, "vuln_type": "XSS", "cwe_id": "CWE-79",
        "detected_tool": "x", "detected_vul_num": 1
    })
}

fn v2(id: &str) -> Value {
    json!({
        "instance_id": id, "repo": "o/n", "base_commit": "abc^", "vuln_file": "src/a.c",
        "vuln_lines": [3, 4], "language": "c", "vuln_source": "CVE-2", "vuln_type": "UAF",
        "cwe_id": "CWE-416", "severity": "high", "image": "img:1", "image_inner_path": "/src",
        "image_run_cmd": "", "image_status_check_cmd": "./c.sh", "test_case_cmd": "./t.sh",
        "poc_cmd": "./p.sh", "poc_cmd_timeout": 30
    })
}

fn invalid(o: Outcome) -> Vec<Problem> {
    match o {
        Outcome::Invalid(p) => p,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn fixtures_load_as_before() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, valid) in [
        ("tasks_v1.json", true),
        ("tasks_v2.json", true),
        ("tasks_broken.json", false),
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        match both_ways(&bytes) {
            Outcome::Loaded(f) => assert!(valid && !f.dataset.tasks.is_empty(), "{name}"),
            Outcome::Invalid(p) => assert!(!valid && p.len() > 3, "{name}: {p:#?}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn differing_duplicates_are_problems_as_before() {
    let mut changed = v1("t1", "CVE-1", true);
    changed["vuln_lines"] = json!([9, 1]);
    let problems = invalid(both_ways(&tasks_bytes(&[
        v1("t1", "CVE-1", true),
        v2("t2"),
        changed,
    ])));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(
        problems[0].message,
        "duplicate instance_id (entries #0 and #2 differ)"
    );
    assert_eq!(problems[1].field, "vuln_lines");
    // 1 and 1.0 are different JSON values, as `==` has it.
    let mut float = v1("t1", "CVE-1", true);
    float["detected_vul_num"] = json!(1.0);
    let problems = invalid(both_ways(&tasks_bytes(&[v1("t1", "CVE-1", true), float])));
    assert_eq!(problems[0].field, "instance_id");
}

#[test]
fn exact_repeats_are_dropped_as_before() {
    // Keys in another order: still the same value.
    let mut reordered = Map::new();
    let original = v1("t1", "CVE-1", true);
    for (k, v) in original.as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let bytes = tasks_bytes(&[original, v2("t2"), Value::Object(reordered), v2("t2")]);
    let Outcome::Loaded(f) = both_ways(&bytes) else {
        panic!("expected a valid file");
    };
    assert_eq!(f.entries, 4);
    assert_eq!(f.repeated, ["t1", "t2"]);
    assert_eq!(f.dataset.tasks.len(), 2);
    // -0.0 == 0.0.
    let mut a = v2("t3");
    a["score"] = json!(0.0);
    let mut b = v2("t3");
    b["score"] = json!(-0.0);
    let Outcome::Loaded(f) = both_ways(&tasks_bytes(&[a, b])) else {
        panic!("expected a valid file");
    };
    assert_eq!(f.repeated, ["t3"]);
}

#[test]
fn mutated_task_seeds_are_checked_as_before() {
    let problems = invalid(both_ways(&tasks_bytes(&[
        v1("m1", "CVE-none", false),
        v1("s", "CVE-1", true),
        v1("m2", "CVE-1", false),
        v1("m3", "CVE-other", false),
    ])));
    let ids: Vec<String> = problems.iter().map(|p| p.entry.to_string()).collect();
    assert_eq!(ids, ["m1", "m3"]);
    assert!(problems.iter().all(|p| p.field == "vuln_source"));
    // A seed after its mutated task is found.
    let Outcome::Loaded(f) = both_ways(&tasks_bytes(&[
        v1("m", "CVE-1", false),
        v1("s", "CVE-1", true),
    ])) else {
        panic!("expected a valid file");
    };
    assert_eq!(f.dataset.tasks.len(), 2);
}

#[test]
fn file_level_errors_are_as_before() {
    for input in [
        &b"{}"[..],
        b"7",
        b"\"tasks\"",
        b"null",
        b"",
        b"  \n",
        b"[{",
        b"[1 2]",
        b"[] x",
        b"[]]",
        b"\xef\xbb\xbf[]",
        b"[{\"instance_id\": \"a\"}, {",
    ] {
        match both_ways(input) {
            Outcome::Failed(kind, message) => {
                assert!(kind == "json" || kind == "shape", "{kind}: {message}");
                assert!(message.starts_with("d.json: "), "{message}");
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(input)),
        }
    }
    // Past serde_json's nesting limit, counted from the top-level array.
    let deep = format!("[{}{}]", "[".repeat(127), "]".repeat(127));
    assert!(
        matches!(both_ways(deep.as_bytes()), Outcome::Failed("json", m) if m.contains("recursion"))
    );
    let shallow = format!("[{}{}]", "[".repeat(126), "]".repeat(126));
    assert!(matches!(both_ways(shallow.as_bytes()), Outcome::Invalid(_)));
    // Entries that are not objects are problems of the entry, not of the file.
    let problems = invalid(both_ways(b" [7, [], null] "));
    assert_eq!(problems.len(), 3);
    assert!(matches!(both_ways(b"\t[ ]\n"), Outcome::Loaded(f) if f.entries == 0));
}

#[test]
fn the_callback_gets_each_task_once_in_file_order() {
    let bytes = tasks_bytes(&[
        v1("m", "CVE-1", false),
        v2("a"),
        v1("s", "CVE-1", true),
        v2("a"),
        v2("b"),
    ]);
    let mut seen = Vec::new();
    let summary = visit_task_file(Path::new("d.json"), &bytes, |index, task| {
        seen.push((index, task.instance_id));
        Ok::<(), Infallible>(())
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            (0, "m".to_string()),
            (1, "a".to_string()),
            (2, "s".to_string()),
            (4, "b".to_string())
        ]
    );
    assert_eq!(summary.entries, 5);
    assert_eq!(summary.tasks, 4);
    assert_eq!(summary.repeated, ["a"]);
    assert_eq!(summary.sha256, raw::sha256_hex(&bytes));
}

#[test]
fn a_failing_callback_stops_the_walk() {
    let bytes = tasks_bytes(&[v2("a"), v2("b"), v2("c")]);
    let mut calls = 0;
    let err = visit_task_file(Path::new("d.json"), &bytes, |_, task| {
        calls += 1;
        if task.instance_id == "b" {
            return Err("full");
        }
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, VisitError::Callback("full")), "{err:?}");
    assert_eq!(calls, 2);
}

#[test]
fn no_task_is_handed_over_after_a_problem() {
    let mut broken = v2("b");
    broken["vuln_lines"] = json!("x");
    let bytes = tasks_bytes(&[v2("a"), broken, v2("c")]);
    let mut seen = Vec::new();
    let err = visit_task_file(Path::new("d.json"), &bytes, |_, task| {
        seen.push(task.instance_id);
        Ok::<(), Infallible>(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, VisitError::Dataset(DatasetError::Invalid { problems }) if problems.len() == 1),
        "{err:?}"
    );
    assert_eq!(seen, ["a"]);
}
