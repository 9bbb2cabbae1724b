//! `report.html` in a real browser: Debian's chromium renders the file written by
//! `write_report` headless, and the rendered DOM is checked against `report.json` (every keyed
//! value), for its sections (tables, SVG charts), and for an injected `<script>` that must not
//! have run. A screenshot is left for people to look at (`ASE_REPORT_SCREENSHOT_DIR`).
//!
//! Chromium: `ASE_CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on PATH.
//! Missing, the test fails under CI=true and says "skipped" elsewhere.

use ase_common::report::agent::{transcript_path, AgentSection, AgentUnitRow};
use ase_common::report::{write_report, Provenance, Report, RunConfig, Scores, TaskInfo};
use ase_common::scoring::v1::{self, V1Input, V1Task, SCAN_FAILED};
use ase_common::scoring::v2::{self, V2Input, V2Scan, V2Task};
use ase_common::scoring::{Generation, OutcomeKind, UnitId, UnitOutcome};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What the injected script would do if it ran: retitle the page and add an element.
const INJECTED: &str = "<script>document.title='PWNED';document.body.appendChild(document.createElement('pwned-marker'))</script>";

mod browser;
use browser::{chromium, parse_tags, run_chromium, unavailable};

/// Pointers of every number (and null) under `value`, except the fields named in `skip`.
fn numeric_leaves(value: &Value, path: String, skip: &[&str], out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if !skip.contains(&k.as_str()) {
                    let seg = k.replace('~', "~0").replace('/', "~1");
                    numeric_leaves(v, format!("{path}/{seg}"), skip, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                numeric_leaves(v, format!("{path}/{i}"), skip, out);
            }
        }
        Value::Number(_) | Value::Null => {
            out.insert(path);
        }
        _ => {}
    }
}

fn task_info(id: &str, vuln_type: &str, cwe: &str, language: &str) -> TaskInfo {
    TaskInfo {
        instance_id: id.into(),
        vuln_type: vuln_type.into(),
        cwe_id: cwe.into(),
        language: language.into(),
    }
}

fn provenance(model: &str, dataset: &str, rounds: u32) -> Provenance {
    let mut config = RunConfig {
        model: model.into(),
        batch: "2026-11-25".into(),
        rounds,
        temperature: Some(0.2),
        max_gen_token: Some(4096),
        ..RunConfig::default()
    };
    config.set_base_url("https://api.example.test/v1");
    config.extra.insert("run_id".into(), format!("{model}__b"));
    Provenance {
        dataset_path: dataset.into(),
        dataset_sha256: "5e".repeat(32),
        context_sha256: Some("c0".repeat(32)),
        tool_versions: [
            ("ase".to_string(), "0.1.0".to_string()),
            ("osemgrep".to_string(), "1.100.0".to_string()),
        ]
        .into(),
        image_ids: BTreeMap::new(),
        config,
        started_at: Some("2026-11-25T09:12:00Z".into()),
    }
}

/// A v1 run: 10 tasks over the four types and four languages, 3 rounds, with secure,
/// vulnerable, failed-to-apply, scan-failed, unscanned and out-of-retries units, a task id
/// carrying a script and a reason too long to show.
fn v1_report() -> Report {
    let tasks = [
        task_info("php_xss_01", "XSS", "CWE-79", "php"),
        task_info("php_xss_02", "XSS", "CWE-79", "php"),
        task_info("js_xss_01", "XSS", "CWE-79", "javascript"),
        task_info("py_sqli_01", "SQLI", "CWE-89", "python"),
        task_info(INJECTED, "SQLI", "CWE-89", "python"),
        task_info("go_sqli_01", "SQLI", "CWE-89", "go"),
        task_info("py_cmdi_01", "Command Injection", "CWE-78", "python"),
        task_info("go_cmdi_01", "Command Injection", "CWE-78", "go"),
        task_info("php_path_01", "Path Traversal", "CWE-22", "php"),
        task_info("js_path_01", "Path Traversal", "CWE-22", "javascript"),
    ];
    let rounds = 3;
    let mut input = V1Input {
        rounds,
        tasks: tasks
            .iter()
            .map(|t| V1Task {
                instance_id: t.instance_id.clone(),
                vuln_type: t.vuln_type.clone(),
                baseline: 2,
            })
            .collect(),
        ..V1Input::default()
    };
    // Findings per task and round; None: generation failed (odd) or not scanned (even).
    let counts: [[Option<i64>; 3]; 10] = [
        [Some(0), Some(1), Some(0)],
        [Some(2), Some(0), None],
        [Some(3), Some(3), Some(0)],
        [Some(0), Some(0), Some(0)],
        [Some(SCAN_FAILED), Some(1), Some(4)],
        [Some(1), None, Some(0)],
        [Some(5), Some(2), Some(1)],
        [Some(0), Some(0), Some(1)],
        [None, Some(2), Some(0)],
        [Some(1), Some(1), Some(3)],
    ];
    for (t, row) in tasks.iter().zip(counts) {
        for (k, count) in (1..=rounds).zip(row) {
            let unit = UnitId::new(t.instance_id.clone(), k);
            input.generations.push(Generation {
                unit: unit.clone(),
                success: count.is_some() || k % 2 == 0,
                time_cost: 0.0,
            });
            if let Some(c) = count {
                input.scans.insert(unit, c);
            }
        }
    }
    let score = v1::score_v1(&input).unwrap();
    let mut units = v1::unit_outcomes(&input);
    // What the coordinator writes for a unit out of retries, and a generation's long reason.
    let lost = units
        .iter_mut()
        .find(|u| u.unit == UnitId::new("js_path_01", 3))
        .unwrap();
    *lost = UnitOutcome::new(
        lost.unit.clone(),
        OutcomeKind::Error,
        format!(
            "out of retries after 3 infrastructure failures: {}",
            "worker w2 stopped heart-beating <b>; ".repeat(40)
        ),
    );
    let not_applied = units
        .iter_mut()
        .find(|u| u.kind == OutcomeKind::NotApplied)
        .unwrap();
    not_applied.reason +=
        ": no code block in the answer <img src=x onerror=\"document.title='PWNED'\">";
    Report::new(
        provenance("gpt-test", "data_v1.json", rounds),
        units,
        Scores::V1(score),
    )
    .with_tasks(tasks)
}

/// A v2 run: 5 tasks over three CWEs, 3 rounds, every container outcome.
fn v2_report() -> Report {
    let tasks = [
        task_info("CVE-2024-0001", "XSS", "CWE-79", "javascript"),
        task_info("CVE-2024-0002", "SQLI", "CWE-89", "php"),
        task_info("CVE-2024-0003", "SQLI", "CWE-89", "java"),
        task_info("CVE-2024-0004", "Path Traversal", "CWE-22", "python"),
        task_info(INJECTED, "Path Traversal", "CWE-22", "python"),
    ];
    let pass = V2Scan {
        completion: true,
        image_status_check: true,
        test_case_check: true,
        poc_check: true,
    };
    let vuln = V2Scan {
        poc_check: false,
        ..pass
    };
    let no_tests = V2Scan {
        test_case_check: false,
        ..pass
    };
    let no_build = V2Scan {
        image_status_check: false,
        ..no_tests
    };
    let no_upload = V2Scan::default();
    let rounds = 3;
    let grid: [[Option<V2Scan>; 3]; 5] = [
        [Some(pass), Some(pass), Some(vuln)],
        [Some(vuln), Some(no_tests), Some(pass)],
        [Some(no_build), Some(pass), None],
        [Some(pass), Some(pass), Some(pass)],
        [Some(no_upload), Some(vuln), Some(pass)],
    ];
    let mut input = V2Input {
        rounds,
        tasks: tasks
            .iter()
            .map(|t| V2Task {
                instance_id: t.instance_id.clone(),
                cwe_id: t.cwe_id.clone(),
            })
            .collect(),
        generations: Vec::new(),
        scans: BTreeMap::new(),
    };
    for (t, row) in tasks.iter().zip(grid) {
        for (k, scan) in (1..=rounds).zip(row) {
            let unit = UnitId::new(t.instance_id.clone(), k);
            input.generations.push(Generation {
                unit: unit.clone(),
                success: scan.is_some(),
                time_cost: 12.5 + f64::from(k),
            });
            if let Some(s) = scan {
                input.scans.insert(unit, s);
            }
        }
    }
    let score = v2::score_v2(&input).unwrap();
    // An agent run: one unit with its transcript and an abandoned attempt, one whose agent
    // was killed (no exit code), one with only an abandoned attempt.
    let agent = |task: &str, k: u32| AgentUnitRow {
        unit: UnitId::new(task, k),
        turns: Some(5),
        model_calls: Some(6),
        refused_calls: Some(1),
        prompt_tokens: Some(900),
        completion_tokens: Some(120),
        total_tokens: Some(1020),
        cost_usd: Some(0.0125),
        wall_seconds: Some(42.5),
        exit_code: Some(0),
        transcript: Some(transcript_path(&UnitId::new(task, k))),
        ..AgentUnitRow::default()
    };
    let section = AgentSection::new(vec![
        AgentUnitRow {
            abandoned_attempts: 1,
            abandoned_turns: 2,
            abandoned_calls: 3,
            abandoned_tokens: 400,
            abandoned_cost_usd: Some(0.004),
            transcript_truncated: true,
            ..agent("CVE-2024-0001", 1)
        },
        AgentUnitRow {
            exit_code: None,
            ..agent("CVE-2024-0002", 2)
        },
        AgentUnitRow {
            unit: UnitId::new("CVE-2024-0003", 3),
            abandoned_attempts: 2,
            abandoned_calls: 7,
            ..AgentUnitRow::default()
        },
    ]);
    Report::new(
        provenance("claude-test", "data_v2.json", rounds),
        v2::unit_outcomes(&input),
        Scores::V2(score),
    )
    .with_tasks(tasks)
    .with_agent(section)
}

/// Renders the report's files in chromium and checks the DOM against the JSON.
fn check_in_browser(name: &str, report: &Report) {
    let Some(bin) = chromium() else {
        unavailable("chromium not found on PATH (nor ASE_CHROMIUM)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(dir.path(), report).unwrap();
    let json: Value = serde_json::from_slice(&std::fs::read(&files.json).unwrap()).unwrap();
    let dom = run_chromium(
        &bin,
        &dir.path().join("profile"),
        &files.html,
        &["--dump-dom"],
    );
    let tags = parse_tags(&dom);

    // The page rendered, with its title, tables and charts; the injected script did not run.
    let model = json["provenance"]["config"]["model"].as_str().unwrap();
    // The document's title is the first; the others are the SVG bars' tooltips.
    let title = tags.iter().find(|t| t.name == "title").expect("a title");
    assert_eq!(
        title.text,
        format!("A.S.E report: {model}__2026-11-25"),
        "the page's title changed: a script ran?"
    );
    let count = |name: &str| tags.iter().filter(|t| t.name == name).count();
    assert_eq!(count("script"), 0, "a script element made it into the DOM");
    assert_eq!(count("pwned-marker"), 0, "the injected script ran");
    assert_eq!(count("img"), 0, "an injected image made it into the DOM");
    assert!(count("table") >= 6, "{} tables", count("table"));
    // Outcomes, security and languages (with whiskers), our verdicts by type / CWE / language,
    // and the intervals' whiskers.
    assert_eq!(count("svg"), 7);
    // Every bar of the security and language charts has its whisker: two caps each.
    let groups = |f: &str| json["uncertainty"][f].as_array().map_or(0, Vec::len);
    let scored = match json["scores"]["version"].as_str() {
        Some("v1") => groups("by_type"),
        _ => groups("by_cwe"),
    };
    assert!(scored > 0 && groups("by_language") > 0);
    let caps = tags
        .iter()
        .filter(|t| t.attrs.get("class").is_some_and(|c| c == "cap"))
        .count();
    assert_eq!(caps, 2 * (scored + groups("by_language")));
    let intervals = [
        "security",
        "security_verdict",
        "quality",
        "stability",
        "overall",
        "overall_corrected",
    ]
    .iter()
    .filter(|f| json["uncertainty"][**f].is_object())
    .count();
    assert!(intervals >= 5, "{intervals} intervals in report.json");
    assert_eq!(count("circle"), intervals, "one dot per interval");
    assert!(count("rect") >= 3, "charts without bars");
    let ids: BTreeSet<&str> = tags
        .iter()
        .filter_map(|t| t.attrs.get("id").map(String::as_str))
        .collect();
    for id in [
        "provenance",
        "scores",
        "charts",
        "breakdown",
        "verdicts",
        "verdict-table",
        "by-type",
        "by-cwe",
        "by-language",
        "matrix",
        "failure-list",
    ] {
        assert!(ids.contains(id), "no #{id}");
    }
    // The injected id is shown as text.
    assert!(
        tags.iter()
            .any(|t| t.name == "th" && t.text.contains("<script>document.title='PWNED'")),
        "the injected task id is not shown as text"
    );

    // Every keyed value equals report.json's.
    let mut keys = BTreeSet::new();
    let mut truncated = 0;
    for t in &tags {
        if let Some(key) = t.attrs.get("data-truncated-from") {
            let full = json
                .pointer(key)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{key}: not a string of report.json"));
            assert!(
                full.starts_with(&t.text) && full.len() > t.text.len(),
                "{key}: {:?} is not a cut of {full:?}",
                t.text
            );
            truncated += 1;
            continue;
        }
        let Some(key) = t.attrs.get("data-key") else {
            continue;
        };
        let expected = json
            .pointer(key)
            .unwrap_or_else(|| panic!("{key}: not in report.json"));
        let shown = t.attrs.get("data-value").unwrap_or(&t.text);
        match expected {
            // serde_json's parser (without its float_roundtrip feature) may land an ulp or
            // two off the written digits: equal to 12 significant digits.
            Value::Number(n) => {
                let (got, want) = (
                    shown.parse::<f64>().unwrap_or(f64::NAN),
                    n.as_f64().unwrap(),
                );
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{key}: page shows {shown:?}, report.json {want}"
                );
            }
            Value::Null => assert_eq!(shown, "n/a", "{key}"),
            Value::String(s) => assert_eq!(shown, s, "{key}"),
            other => panic!("{key}: keyed to {other}"),
        }
        keys.insert(key.clone());
    }
    assert!(truncated >= 1 || name == "v2", "no cut reason in {name}");

    // ...and every number of the scores and the breakdown is on the page, every unit too.
    let mut wanted = BTreeSet::new();
    numeric_leaves(
        &json["scores"],
        "/scores".into(),
        &["task_results", "task_counts", "rounds", "gen_code_time_sum"],
        &mut wanted,
    );
    numeric_leaves(&json["breakdown"], "/breakdown".into(), &[], &mut wanted);
    assert!(
        json["uncertainty"].is_object(),
        "report.json has its intervals"
    );
    numeric_leaves(
        &json["uncertainty"],
        "/uncertainty".into(),
        &["level", "rounds"],
        &mut wanted,
    );
    for i in 0..json["units"].as_array().unwrap().len() {
        wanted.insert(format!("/units/{i}/kind"));
        wanted.insert(format!("/units/{i}/verdict"));
    }
    if json["agent"].is_object() {
        for id in ["agent", "agent-totals", "agent-units"] {
            assert!(ids.contains(id), "no #{id}");
        }
        numeric_leaves(
            &json["agent"]["totals"],
            "/agent/totals".into(),
            &[],
            &mut wanted,
        );
        for i in 0..json["agent"]["units"].as_array().unwrap().len() {
            for f in ["turns", "model_calls", "abandoned_calls", "transcript"] {
                wanted.insert(format!("/agent/units/{i}/{f}"));
            }
        }
    }
    let missing: Vec<&String> = wanted.difference(&keys).collect();
    assert!(missing.is_empty(), "not on the page: {missing:?}");

    // A screenshot for people (kept when ASE_REPORT_SCREENSHOT_DIR is set).
    let png = dir.path().join(format!("report-{name}.png"));
    run_chromium(
        &bin,
        &dir.path().join("profile"),
        &files.html,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,2600",
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("ASE_REPORT_SCREENSHOT_DIR") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&png, keep.join(png.file_name().unwrap())).unwrap();
        std::fs::copy(&files.html, keep.join(format!("report-{name}.html"))).unwrap();
    }
}

#[test]
fn v1_report_renders_in_chromium_with_the_json_numbers() {
    check_in_browser("v1", &v1_report());
}

#[test]
fn v2_report_renders_in_chromium_with_the_json_numbers() {
    check_in_browser("v2", &v2_report());
}

#[test]
fn dom_parser_reads_quoted_attributes_and_entities() {
    let tags = parse_tags(
        "<!DOCTYPE html><p title=\"a > b\" data-key='/x'>1 &lt; 2 &amp; &#39;q&#x27;</p><!-- <i> --><br/><style>a>b{}</style>",
    );
    let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["p", "br", "style"]);
    assert_eq!(tags[0].attrs["title"], "a > b");
    assert_eq!(tags[0].attrs["data-key"], "/x");
    assert_eq!(tags[0].text, "1 < 2 & 'q'");
    assert_eq!(tags[2].text, "a>b{}");
}
