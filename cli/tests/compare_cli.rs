//! `ase compare` end to end: the built binary on result folders written by `ase-common`'s own
//! report writer (`write_report`, the one `ase run`/`ase score` use), with verdicts chosen so
//! that every p-value is known exactly:
//!
//! 12 tasks (t01..t06 CWE-79/XSS/php, t07..t12 CWE-89/SQLI/go), 2 rounds.
//! - A: secure only on t11, t12 (both rounds).
//! - B: secure everywhere but t10, t11.
//! - C: as A, plus round 2 secure on t01..t05.
//!
//! A vs B: B better on t01..t09, A on t11, tied t10, t12: n = 10, k = 1, p = 22/1024 =
//! 0.021484375. A vs C: C better on t01..t05 alone: n = 5, k = 0, p = 2/32 = 0.0625. B vs C: B
//! better on t01..t09, C on t11: again 0.021484375.

use ase_common::report::{write_report, Provenance, Report, RunConfig, Scores, TaskInfo};
use ase_common::scoring::v2::{score_v2, unit_outcomes, V2Input, V2Scan, V2Task};
use ase_common::scoring::{Generation, UnitId};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ASE: &str = env!("CARGO_BIN_EXE_ase");
const ROUNDS: u32 = 2;

fn task_id(i: u32) -> String {
    format!("t{i:02}")
}

fn info(i: u32) -> TaskInfo {
    let (vt, cwe, lang) = if i <= 6 {
        ("XSS", "CWE-79", "php")
    } else {
        ("SQLI", "CWE-89", "go")
    };
    TaskInfo {
        instance_id: task_id(i),
        vuln_type: vt.into(),
        cwe_id: cwe.into(),
        language: lang.into(),
    }
}

/// Writes a v2 run whose unit (task i, round r) is secure iff `secure(i, r)`.
fn write_run(
    dir: &Path,
    model: &str,
    tasks: &[u32],
    rounds: u32,
    dataset_sha: &str,
    secure: impl Fn(u32, u32) -> bool,
) -> PathBuf {
    let mut input = V2Input {
        rounds,
        tasks: tasks
            .iter()
            .map(|&i| V2Task {
                instance_id: task_id(i),
                cwe_id: info(i).cwe_id,
            })
            .collect(),
        ..V2Input::default()
    };
    for &i in tasks {
        for r in 1..=rounds {
            let unit = UnitId::new(task_id(i), r);
            input.generations.push(Generation {
                unit: unit.clone(),
                success: true,
                time_cost: 1.0,
            });
            input.scans.insert(
                unit,
                V2Scan {
                    completion: true,
                    image_status_check: true,
                    test_case_check: true,
                    poc_check: secure(i, r),
                },
            );
        }
    }
    let provenance = Provenance {
        dataset_path: "data.json".into(),
        dataset_sha256: dataset_sha.into(),
        config: RunConfig {
            model: model.into(),
            batch: "b1".into(),
            rounds,
            ..RunConfig::default()
        },
        ..Provenance::default()
    };
    let report = Report::new(
        provenance,
        unit_outcomes(&input),
        Scores::V2(score_v2(&input).unwrap()),
    )
    .with_tasks(tasks.iter().map(|&i| info(i)));
    let out = dir.join(model);
    write_report(&out, &report).unwrap();
    out
}

const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn all_tasks() -> Vec<u32> {
    (1..=12).collect()
}

fn three_runs(dir: &Path) -> [PathBuf; 3] {
    let t = all_tasks();
    [
        write_run(dir, "A", &t, ROUNDS, SHA, |i, _| i >= 11),
        write_run(dir, "B", &t, ROUNDS, SHA, |i, _| i != 10 && i != 11),
        write_run(dir, "C", &t, ROUNDS, SHA, |i, r| {
            i >= 11 || (i <= 5 && r == 2)
        }),
    ]
}

fn ase(args: &[&str]) -> Output {
    Command::new(ASE).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn flipped_ids(pair: &Value) -> Vec<String> {
    pair["flipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["instance_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn three_runs_give_exact_p_values_flips_and_both_outputs() {
    let d = tempfile::tempdir().unwrap();
    let [a, b, c] = three_runs(d.path());
    let out = d.path().join("cmp");
    let o = ase(&["compare", s(&a), s(&b), s(&c), "--out", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8(o.stdout).unwrap();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("compare.md")).unwrap(), md);
    // The runs' leaderboard beside the comparison: one dataset, one row per run with its
    // report's overall and interval, best first.
    assert!(out.join("leaderboard.html").is_file() && out.join("leaderboard.md").is_file());
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    let tables = board["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{board}");
    let rows = tables[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let mut last = f64::INFINITY;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["rank"], i as u64 + 1);
        let dir = [&a, &b, &c]
            .into_iter()
            .find(|p| {
                let r: Value =
                    serde_json::from_slice(&std::fs::read(p.join("report.json")).unwrap()).unwrap();
                format!(
                    "{}__{}",
                    r["provenance"]["config"]["model"].as_str().unwrap(),
                    r["provenance"]["config"]["batch"].as_str().unwrap()
                ) == row["run"]
            })
            .unwrap_or_else(|| panic!("no report for {}", row["run"]));
        let report: Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        let overall = match report["scores"]["version"].as_str() {
            Some("v1") => &report["scores"]["overall"],
            _ => &report["scores"]["all"]["overall_score"],
        };
        assert_eq!(&row["overall"], overall, "{row}");
        assert_eq!(row["security_interval"], report["uncertainty"]["security"]);
        let o = row["overall"].as_f64().unwrap();
        assert!(o <= last, "not sorted by overall");
        last = o;
    }

    assert_eq!(json["tasks_compared"], 12);
    assert_eq!(json["shared_tasks_only"], false);
    let pairs = json["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3);
    let ab = &pairs[0];
    assert_eq!(
        (ab["a"].as_str(), ab["b"].as_str()),
        (Some("A__b1"), Some("B__b1"))
    );
    assert_eq!(ab["p_value"].as_f64(), Some(0.021484375));
    assert_eq!(
        (
            ab["a_better"].as_u64(),
            ab["b_better"].as_u64(),
            ab["ties"].as_u64()
        ),
        (Some(1), Some(9), Some(2))
    );
    let mut want: Vec<String> = (1..=9).map(task_id).collect();
    want.push(task_id(11));
    assert_eq!(flipped_ids(ab), want);
    // Security: A 4/24, B 20/24; delta 66.67 points.
    assert!((ab["security_a"].as_f64().unwrap() - 100.0 / 6.0).abs() < 1e-9);
    assert!((ab["delta"]["estimate"].as_f64().unwrap() - 200.0 / 3.0).abs() < 1e-9);
    assert!(ab["delta"]["low"].as_f64().unwrap() > 0.0, "{ab}");
    // Per CWE: t01..t06 all B; t07..t12: B better on 3, A on 1 (n = 4, k = 1: p = 10/16).
    let cwe = ab["by_cwe"].as_array().unwrap();
    assert_eq!(cwe[0]["group"], "CWE-79");
    assert_eq!(cwe[0]["p_value"].as_f64(), Some(0.03125));
    assert_eq!(cwe[1]["p_value"].as_f64(), Some(0.625));
    assert_eq!(ab["by_language"][1]["group"], "go");
    assert!((cwe[0]["delta"].as_f64().unwrap() - 100.0).abs() < 1e-9);
    // CWE-89's per-task differences are +1 x3, -1, 0 x2: its interval spans 0.
    assert!(cwe[1]["delta_low"].as_f64().unwrap() < 0.0, "{cwe:?}");
    assert!(cwe[1]["delta_high"].as_f64().unwrap() > 0.0, "{cwe:?}");
    // A flipped task carries both sides' verdicts and reasons.
    let t11 = &ab["flipped"][9];
    assert_eq!(t11["better"], "A__b1");
    assert_eq!(t11["a"]["secure"], 2);
    assert_eq!(t11["b"]["units"][0]["verdict"], "vulnerable");
    assert_eq!(
        t11["b"]["units"][0]["reason"],
        "the PoC found the vulnerability"
    );

    let ac = &pairs[1];
    assert_eq!(ac["b"], "C__b1");
    assert_eq!(ac["p_value"].as_f64(), Some(0.0625));
    assert_eq!(flipped_ids(ac), (1..=5).map(task_id).collect::<Vec<_>>());
    let bc = &pairs[2];
    assert_eq!(bc["p_value"].as_f64(), Some(0.021484375));

    // Per run: interval and pass@2 / pass^2 (C: secure at least once on 7 of 12, always on 2).
    let run_c = &json["runs"][2]["uncertainty"];
    assert_eq!(run_c["rounds"], 2);
    assert!((run_c["pass_k"][1]["pass_at_k"].as_f64().unwrap() - 700.0 / 12.0).abs() < 1e-9);
    assert!((run_c["pass_k"][1]["pass_hat_k"].as_f64().unwrap() - 200.0 / 12.0).abs() < 1e-9);
    let sec = &run_c["security"];
    assert!(sec["low"].as_f64().unwrap() <= sec["estimate"].as_f64().unwrap());
    assert!((sec["estimate"].as_f64().unwrap() - 900.0 / 24.0).abs() < 1e-9);

    // The Markdown says the same.
    assert!(md.contains("### A = A__b1 vs B = B__b1"), "{md}");
    assert!(md.contains("p = 0.0215 over 10 differing tasks"), "{md}");
    assert!(md.contains("p = 0.0625 over 5 differing tasks"), "{md}");
    assert!(
        md.contains("| t11 | SQLI | CWE-89 | go | A | 2/2 secure; r1 secure"),
        "{md}"
    );
    assert!(
        md.contains("r1 vulnerable: the PoC found the vulnerability"),
        "{md}"
    );
    assert!(
        md.contains(
            "| CWE-79 | 6 | 0.00 | 100.00 | +100.00 | +100.00 to +100.00 | 0 | 6 | 0.0312 |"
        ),
        "{md}"
    );

    // The same seed gives the same output; --json prints the JSON.
    let again = ase(&["compare", s(&a), s(&b), s(&c), "--json"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again, json);
}

#[test]
fn a_unit_verdict_overrides_its_status() {
    let d = tempfile::tempdir().unwrap();
    let [a, b, _] = three_runs(d.path());
    // B's t12 round 1 is "secure" by status, "broken" by a three-way verdict: A is now better
    // on t12 too: n = 11, k = 2, p = 2 * (1 + 11 + 55) / 2048.
    let path = b.join("report.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for u in v["units"].as_array_mut().unwrap() {
        let secure = u["status"] == "secure";
        u["verdict"] = Value::from(if secure { "secure" } else { "vulnerable" });
        if u["unit"]["instance_id"] == "t12" && u["unit"]["round"] == 1 {
            u["verdict"] = Value::from("broken");
        }
    }
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let o = ase(&["compare", s(&a), s(&b), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ab = &json["pairs"][0];
    assert_eq!(ab["p_value"].as_f64(), Some(134.0 / 2048.0));
    let t12 = ab["flipped"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(t12["instance_id"], "t12");
    assert_eq!(t12["b"]["units"][0]["verdict"], "broken");
}

#[test]
fn different_datasets_are_refused_unless_shared_tasks() {
    let d = tempfile::tempdir().unwrap();
    let [a, _, _] = three_runs(d.path());
    let other_sha = "b".repeat(64);
    let fewer: Vec<u32> = (3..=14).collect();
    let e = write_run(d.path(), "E", &fewer, ROUNDS, &other_sha, |_, _| true);

    let o = ase(&["compare", s(&a), s(&e)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("different datasets") && err.contains("--shared-tasks"),
        "{err}"
    );
    assert!(err.contains(&other_sha) && err.contains(SHA), "{err}");

    let o = ase(&["compare", s(&a), s(&e), "--shared-tasks", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only their 10 shared tasks"));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["shared_tasks_only"], true);
    assert_eq!(json["tasks_compared"], 10);
    assert_eq!(json["datasets"].as_array().unwrap().len(), 2);
    assert_eq!(json["runs"][0]["tasks_left_out"], 2);
    // t03..t10 flip to E (8 tasks), t11, t12 are tied: p = 2/256.
    assert_eq!(json["pairs"][0]["p_value"].as_f64(), Some(0.0078125));
    let out = d.path().join("cmp");
    let md = ase(&["compare", s(&a), s(&e), "--shared-tasks", "--out", s(&out)]);
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(
        md.contains("only the 10 tasks they share are compared"),
        "{md}"
    );
    // The page says so too.
    let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(
        html.contains("different datasets: only the 10 tasks they share are compared"),
        "{html}"
    );
}

#[test]
fn one_round_says_what_is_not_available() {
    let d = tempfile::tempdir().unwrap();
    let t = all_tasks();
    let a = write_run(d.path(), "A", &t, 1, SHA, |i, _| i > 6);
    let b = write_run(d.path(), "B", &t, 1, SHA, |i, _| i > 2);
    let o = ase(&["compare", s(&a), s(&b)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8(o.stdout).unwrap();
    assert!(md.contains("p = 0.1250 over 4 differing tasks"), "{md}");
    assert!(
        md.contains("A__b1: not available: pass@k and pass^k for k >= 2, and stability"),
        "{md}"
    );
    assert!(md.contains("| A__b1 | v2 | 1 | 50.00 |"), "{md}");
    // Its units by verdict: 6 secure, 6 vulnerable, none broken.
    assert!(md.contains("| n/a | n/a | 0 | 6 | 6 | 0 |"), "{md}");
}

#[test]
fn fewer_than_two_runs_or_a_missing_folder_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let o = ase(&["compare", s(d.path())]);
    assert!(!o.status.success());
    let missing = d.path().join("nope");
    let o = ase(&["compare", s(&missing), s(&missing)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope/report.json") && err.contains("cannot read"),
        "{err}"
    );
}

/// Keyed numbers of compare.html for two runs over 12 tasks of 2 types, CWEs and languages.
const KEYED: usize = 117;

/// What an injected script would do if it ran: retitle the page and add an element.
const INJECTED: &str = "<script>document.title='PWNED';document.body.appendChild(document.createElement('pwned-marker'))</script>";

/// Chromium: `ASE_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ASE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Every `data-key="PTR" data-fmt="F">TEXT<` of `html`.
fn keyed_values(html: &str) -> Vec<(String, String, String)> {
    html.split("data-key=\"")
        .skip(1)
        .map(|rest| {
            let (key, rest) = rest.split_once('"').unwrap();
            let rest = rest.split_once("data-fmt=\"").unwrap().1;
            let (fmt, rest) = rest.split_once('"').unwrap();
            let text = rest.split_once('>').unwrap().1.split('<').next().unwrap();
            (key.to_string(), fmt.to_string(), text.to_string())
        })
        .collect()
}

fn check_keyed(html: &str, json: &Value) -> usize {
    let values = keyed_values(html);
    for (key, fmt, text) in &values {
        let v = json
            .pointer(key)
            .unwrap_or_else(|| panic!("{key} not in the JSON"));
        let want = match fmt.as_str() {
            "pct" => format!("{:.2}", v.as_f64().unwrap()),
            "signed" => format!("{:+.2}", v.as_f64().unwrap()),
            "p" => ase_common::compare::markdown::p_text(v.as_f64().unwrap()),
            "int" => v.as_u64().unwrap().to_string(),
            other => panic!("unknown data-fmt {other}"),
        };
        assert_eq!(text, &want, "{key}");
    }
    values.len()
}

/// compare.html: its numbers equal compare.json's, before and after chromium renders it, and
/// an injected script in a model name and a reason stays text.
#[test]
fn compare_html_numbers_equal_the_json_and_escaping_holds_in_chromium() {
    let d = tempfile::tempdir().unwrap();
    let [a, b, _] = three_runs(d.path());
    let path = b.join("report.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["provenance"]["config"]["model"] = Value::from(INJECTED);
    v["units"][0]["reason"] = Value::from(INJECTED);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let out = d.path().join("cmp");
    let o = ase(&["compare", s(&a), s(&b), "--out", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let page = out.join("compare.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;document.title="));
    // Runs: 2 x 10 numbers; the pair: 10 + 3 groupings x 2 groups x 9. Charts: each run's 3
    // verdict counts and its security with its interval's low and high; the pair's delta
    // with its interval, overall and for each of the 6 groups.
    assert_eq!(KEYED, 20 + 10 + 54 + 2 * 3 + 2 * 3 + 7 * 3);
    assert_eq!(check_keyed(&html, &json), KEYED);
    // Every run's verdicts add up to its units of the compared tasks (12 tasks x 2 rounds).
    for r in json["runs"].as_array().unwrap() {
        let v = &r["verdicts"];
        let sum: u64 = ["secure", "vulnerable", "broken"]
            .iter()
            .map(|f| v[f].as_u64().unwrap())
            .sum();
        assert_eq!(sum, 24, "{r}");
    }
    // Each whisker has its two caps: 2 runs, 7 bars of the pair.
    assert_eq!(html.matches("class=\"cap\"").count(), 2 * (2 + 7));

    let Some(bin) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium is missing; apt-get install -y chromium");
        }
        eprintln!("skipped the browser half: no chromium (apt-get install -y chromium)");
        return;
    };
    let profile = d.path().join("profile");
    let rendered = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let dom = String::from_utf8(rendered.stdout).unwrap();
    assert!(dom.contains("<title>A.S.E comparison</title>"), "{dom}");
    assert!(
        !dom.contains("PWNED</title>") && !dom.contains("<pwned-marker"),
        "{dom}"
    );
    assert_eq!(check_keyed(&dom, &json), KEYED);
}
