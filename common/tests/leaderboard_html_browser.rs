//! `leaderboard.html` in a real browser: Debian's chromium renders the page
//! `write_leaderboard` wrote for four runs (three v1 runs over one dataset, one v2 run), and
//! the rendered DOM is checked against `leaderboard.json`: every keyed value equals the JSON's,
//! every figure and interval bound of every row is on the page, rows are in rank order, the
//! paper's figures are labelled as not comparable, and a run name carrying a script is shown
//! as text and never runs.

mod browser;

use ase_common::leaderboard::paper::{PaperRow, PaperTable};
use ase_common::leaderboard::{write_leaderboard, Leaderboard, LEADERBOARD_JSON};
use ase_common::report::{Provenance, Report, RunConfig, Scores, TaskInfo};
use ase_common::scoring::v1::{self, V1Input, V1Task};
use ase_common::scoring::v2::{self, V2Input, V2Scan, V2Task};
use ase_common::scoring::{Generation, UnitId};
use browser::{chromium, parse_tags, run_chromium, unavailable};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const HOSTILE: &str = "<script>document.title='PWNED';document.body.appendChild(document.createElement('pwned-marker'))</script>|x";

fn provenance(model: &str, dataset: &str, sha: &str) -> Provenance {
    Provenance {
        dataset_path: dataset.into(),
        dataset_sha256: sha.repeat(32),
        config: RunConfig {
            model: model.into(),
            batch: "b1".into(),
            rounds: 3,
            ..RunConfig::default()
        },
        ..Provenance::default()
    }
}

/// A v1 run over 8 tasks of 4 types: task i is secure in the rounds `secure[i]` says.
fn v1_run(model: &str, secure: [u8; 8]) -> Report {
    let types = ["XSS", "SQLI", "Command Injection", "Path Traversal"];
    let mut input = V1Input {
        rounds: 3,
        ..V1Input::default()
    };
    let mut infos = Vec::new();
    for (i, &s) in secure.iter().enumerate() {
        let id = format!("task_{i}");
        let vt = types[i % 4];
        input.tasks.push(V1Task {
            instance_id: id.clone(),
            vuln_type: vt.into(),
            baseline: 1,
        });
        infos.push(TaskInfo {
            instance_id: id.clone(),
            vuln_type: vt.into(),
            cwe_id: format!("CWE-{}", 20 + i % 4),
            language: "python".into(),
        });
        for k in 1..=3u32 {
            let unit = UnitId::new(id.clone(), k);
            // Round 3 of every other task did not apply (not scanned).
            let applied = !(k == 3 && i % 2 == 1);
            input.generations.push(Generation {
                unit: unit.clone(),
                success: applied,
                time_cost: 0.0,
            });
            if applied {
                input
                    .scans
                    .insert(unit, if u32::from(s) >= k { 0 } else { 1 });
            }
        }
    }
    let score = v1::score_v1(&input).unwrap();
    Report::new(
        provenance(model, "data_v1.json", "a1"),
        v1::unit_outcomes(&input),
        Scores::V1(score),
    )
    .with_tasks(infos)
}

fn v2_run(model: &str) -> Report {
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
    let grid = [
        [pass, pass, vuln],
        [vuln, vuln, vuln],
        [pass, pass, pass],
        [V2Scan::default(), pass, vuln],
    ];
    let mut input = V2Input {
        rounds: 3,
        ..V2Input::default()
    };
    let mut infos = Vec::new();
    for (i, row) in grid.iter().enumerate() {
        let id = format!("CVE-2024-000{i}");
        input.tasks.push(V2Task {
            instance_id: id.clone(),
            cwe_id: "CWE-79".into(),
        });
        infos.push(TaskInfo {
            instance_id: id.clone(),
            vuln_type: "XSS".into(),
            cwe_id: "CWE-79".into(),
            language: "php".into(),
        });
        for (k, scan) in (1..=3).zip(row) {
            let unit = UnitId::new(id.clone(), k);
            input.generations.push(Generation {
                unit: unit.clone(),
                success: true,
                time_cost: 1.0,
            });
            input.scans.insert(unit, *scan);
        }
    }
    let score = v2::score_v2(&input).unwrap();
    Report::new(
        provenance(model, "data_v2.json", "b2"),
        v2::unit_outcomes(&input),
        Scores::V2(score),
    )
    .with_tasks(infos)
}

/// Pointers of every number under `value`, except fields named in `skip`.
fn numeric_leaves(value: &Value, path: String, skip: &[&str], out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if !skip.contains(&k.as_str()) {
                    numeric_leaves(v, format!("{path}/{k}"), skip, out);
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

#[test]
fn leaderboard_renders_in_chromium_with_the_json_numbers() {
    let Some(bin) = chromium() else {
        unavailable("chromium not found on PATH (nor ASE_CHROMIUM)");
        return;
    };
    let reports = vec![
        v1_run("weak", [0, 1, 0, 0, 1, 0, 0, 0]),
        v1_run(HOSTILE, [3, 2, 3, 1, 2, 3, 0, 3]),
        v2_run("v2-model"),
        v1_run("middle", [1, 2, 1, 3, 0, 2, 1, 1]),
    ];
    let mut board = Leaderboard::from_reports(&reports);
    // A paper table of fixture rows (not the paper's figures) to render its band and table;
    // one model name is hostile too.
    let shipped = board
        .paper
        .clone()
        .expect("a v1 table brings the paper's section");
    board.paper = Some(PaperTable {
        complete: false,
        note: "fixture rows of this test".into(),
        rows: vec![
            PaperRow {
                model: "fixture-model-a".into(),
                overall: 40.5,
                security: 30.25,
                quality: 70.0,
                stability: 80.0,
            },
            PaperRow {
                model: format!("fixture-{HOSTILE}"),
                overall: 55.0,
                security: 45.0,
                quality: 75.5,
                stability: 90.0,
            },
        ],
        ..shipped
    });
    let dir = tempfile::tempdir().unwrap();
    let page = write_leaderboard(dir.path(), &board).unwrap();
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(LEADERBOARD_JSON)).unwrap()).unwrap();
    assert!(dir.path().join("leaderboard.md").is_file());
    let dom = run_chromium(&bin, &dir.path().join("profile"), &page, &["--dump-dom"]);
    let tags = parse_tags(&dom);

    let title = tags.iter().find(|t| t.name == "title").expect("a title");
    assert_eq!(title.text, "A.S.E leaderboard", "a script ran?");
    let count = |name: &str| tags.iter().filter(|t| t.name == name).count();
    assert_eq!(count("script"), 0, "a script element made it into the DOM");
    assert_eq!(count("pwned-marker"), 0, "the injected script ran");
    // Two tables of runs (v1, v2) and the paper's.
    assert_eq!(count("table"), 3);
    assert_eq!(count("circle"), 4, "one dot per run");
    let bands = tags
        .iter()
        .filter(|t| {
            t.name == "rect" && t.attrs.get("class").map(String::as_str) == Some("paper-band")
        })
        .count();
    assert_eq!(bands, 1, "the paper's band behind the v1 chart only");
    assert!(
        tags.iter()
            .any(|t| t.name == "span" && t.text.starts_with("<script>document.title='PWNED'")),
        "the hostile run name is not shown as text"
    );
    assert!(
        tags.iter().any(|t| t
            .text
            .contains("measured with upstream's closed rules; not comparable with ours")),
        "the paper's figures are not labelled"
    );

    // Every keyed value equals leaderboard.json's, and the keys are met in rank order.
    let mut keys = BTreeSet::new();
    let mut ranks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for t in &tags {
        let Some(key) = t.attrs.get("data-key") else {
            continue;
        };
        let expected = json
            .pointer(key)
            .unwrap_or_else(|| panic!("{key}: not in leaderboard.json"));
        // An interval bound is shown rounded; its exact value is `data-value`.
        let shown = t.attrs.get("data-value").unwrap_or(&t.text);
        if let Some(exact) = t.attrs.get("data-value") {
            let (exact, text): (f64, f64) = (exact.parse().unwrap(), t.text.parse().unwrap());
            assert!(
                (exact - text).abs() <= 0.005 + 1e-9,
                "{key}: shows {text}, not {exact} rounded"
            );
        }
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
                    "{key}: page shows {shown:?}, leaderboard.json {want}"
                );
            }
            Value::Null => assert_eq!(shown, "n/a", "{key}"),
            Value::String(s) => assert_eq!(shown, s, "{key}"),
            other => panic!("{key}: keyed to {other}"),
        }
        if let Some(table) = key.strip_suffix("/rank") {
            let table = table.split("/rows/").next().unwrap().to_string();
            ranks
                .entry(table)
                .or_default()
                .push(expected.as_u64().unwrap());
        }
        keys.insert(key.clone());
    }
    assert_eq!(ranks["/tables/0"], [1, 2, 3]);
    assert_eq!(ranks["/tables/1"], [1]);
    let rows = json["tables"][0]["rows"].as_array().unwrap();
    let overall: Vec<f64> = rows
        .iter()
        .map(|r| r["overall"].as_f64().unwrap())
        .collect();
    assert!(
        overall.windows(2).all(|w| w[0] >= w[1]),
        "not sorted by overall: {overall:?}"
    );
    assert_eq!(rows[0]["model"], HOSTILE, "the best v1 run ranks first");

    // Every figure and interval bound of every row, and the paper's figures, are on the page.
    let mut wanted = BTreeSet::new();
    numeric_leaves(
        &json["tables"],
        "/tables".into(),
        &["estimate", "rounds"],
        &mut wanted,
    );
    numeric_leaves(
        &json["paper"]["rows"],
        "/paper/rows".into(),
        &[],
        &mut wanted,
    );
    for (t, table) in json["tables"].as_array().unwrap().iter().enumerate() {
        for (r, row) in table["rows"].as_array().unwrap().iter().enumerate() {
            for f in [
                "overall",
                "security",
                "security_ours",
                "quality",
                "stability",
            ] {
                assert!(
                    row[format!("{f}_interval")].is_object(),
                    "/tables/{t}/rows/{r}: no {f} interval"
                );
            }
            // v1 has no corrected overall: its table has no such column.
            if table["version"] == "v1" {
                assert!(row["overall_corrected"].is_null());
                wanted.remove(&format!("/tables/{t}/rows/{r}/overall_corrected"));
                wanted.remove(&format!("/tables/{t}/rows/{r}/overall_corrected_interval"));
            }
        }
    }
    let missing: Vec<&String> = wanted.difference(&keys).collect();
    assert!(missing.is_empty(), "not on the page: {missing:?}");
}
