//! Tests of [`super`]: kept beside it so that the module itself reads on one screen.

use super::*;
use crate::report::{Provenance, RunConfig, TaskInfo};
use crate::scoring::v1::{score_v1, unit_outcomes, V1Input, V1Task, SCAN_FAILED};
use crate::scoring::{Generation, UnitId, UnitOutcome};

const HOSTILE_ID: &str = "<script>document.title='pwned'</script>";

fn report(extra_failures: usize, reason_len: usize) -> Report {
    let tasks = [
        ("php_1", "XSS", "CWE-79", "php"),
        (HOSTILE_ID, "SQLI", "CWE-89", "python"),
        ("go_1", "Command Injection", "CWE-78", "go"),
    ];
    let mut input = V1Input {
        rounds: 2,
        tasks: tasks
            .iter()
            .map(|(id, vt, _, _)| V1Task {
                instance_id: id.to_string(),
                vuln_type: vt.to_string(),
                baseline: 2,
            })
            .collect(),
        ..V1Input::default()
    };
    for (id, ..) in &tasks {
        for k in 1..=2 {
            input.generations.push(Generation {
                unit: UnitId::new(*id, k),
                success: true,
                time_cost: 1.0,
            });
        }
    }
    input.scans.insert(UnitId::new("php_1", 1), 0);
    input.scans.insert(UnitId::new("php_1", 2), 3);
    input.scans.insert(UnitId::new(HOSTILE_ID, 1), SCAN_FAILED);
    input.scans.insert(UnitId::new(HOSTILE_ID, 2), 1);
    input.scans.insert(UnitId::new("go_1", 1), 1);
    let mut units = unit_outcomes(&input);
    units[5].reason = format!("<img src=x onerror=alert(1)>{}", "r".repeat(reason_len));
    for n in 0..extra_failures {
        units.push(UnitOutcome::new(
            UnitId::new(format!("extra_{n}"), 1),
            OutcomeKind::Error,
            "worker lost",
        ));
    }
    let scores = Scores::V1(score_v1(&input).unwrap());
    let provenance = Provenance {
        dataset_path: "data_v1.json".into(),
        dataset_sha256: "ab".repeat(32),
        tool_versions: [("ase".to_string(), "0.1.0".to_string())].into(),
        config: RunConfig {
            model: "m<b>".into(),
            batch: "b1".into(),
            rounds: 2,
            ..RunConfig::default()
        },
        started_at: Some("2026-11-25T10:00:00Z".into()),
        ..Provenance::default()
    };
    Report::new(provenance, units, scores).with_tasks(tasks.iter().map(|(id, vt, cwe, lang)| {
        TaskInfo {
            instance_id: id.to_string(),
            vuln_type: vt.to_string(),
            cwe_id: cwe.to_string(),
            language: lang.to_string(),
        }
    }))
}

#[test]
fn the_rounds_matrix_shows_the_first_tasks_and_counts_the_rest() {
    // 3 tasks of 2 rounds, then one single-round task per extra failure.
    let html = render_html(&report(MAX_MATRIX_TASKS, 10));
    let matrix = &html[html.find("id=\"matrix\"").unwrap()..];
    let matrix = &matrix[..matrix.find("</table>").unwrap()];
    assert_eq!(
        matrix.matches("<th class=\"task\"").count(),
        MAX_MATRIX_TASKS
    );
    assert!(
        matrix.contains("title=\"extra_1996\""),
        "the last task shown"
    );
    assert!(
        !matrix.contains("title=\"extra_1997\""),
        "a task beyond the limit"
    );
    // Both rounds of a shown task have their cells.
    assert!(matrix.contains("data-key=\"/units/1/kind\""));
    assert!(
        html.contains("3 more tasks are not shown; report.json lists every unit."),
        "the hidden tasks are counted"
    );
}

#[test]
fn escape_covers_markup_quotes_and_controls() {
    assert_eq!(
        escape("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(escape("a\u{0}b\u{1b}c\nd"), "a\u{FFFD}b\u{FFFD}c\nd");
    assert_eq!(escape("été"), "été");
}

#[test]
fn truncate_counts_characters_not_bytes() {
    assert_eq!(truncate("ééééé", 3), ("ééé", 2));
    assert_eq!(truncate("abc", 3), ("abc", 0));
    assert_eq!(truncate("", 0), ("", 0));
}

#[test]
fn json_pointer_escapes_tilde_and_slash() {
    assert_eq!(json_pointer(&["a", "b/c", "d~e"]), "/a/b~1c/d~0e");
    let v = serde_json::json!({"a": {"b/c": {"d~e": 7}}});
    assert_eq!(
        v.pointer(&json_pointer(&["a", "b/c", "d~e"])),
        Some(&7.into())
    );
}

#[test]
fn untrusted_strings_are_escaped_everywhere() {
    let html = render_html(&report(0, 10));
    assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert!(html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("<title>A.S.E report: m&lt;b&gt;__b1</title>"));
}

#[test]
fn every_section_is_there_and_nothing_is_loaded() {
    let html = render_html(&report(0, 10));
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    for id in [
        "provenance",
        "scores",
        "scores-by-type",
        "charts",
        "chart-outcomes",
        "chart-security",
        "chart-languages",
        "chart-verdicts-type",
        "chart-verdicts-cwe",
        "chart-verdicts-language",
        "breakdown",
        "by-type",
        "by-cwe",
        "by-language",
        "rounds",
        "matrix",
        "failures",
        "failure-list",
        "intervals",
        "intervals-table",
        "chart-intervals",
        "pass-k",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "section {id} missing"
        );
    }
    // Outcomes, security, languages, verdicts by type / CWE / language, and the intervals'
    // whiskers.
    assert_eq!(html.matches("<svg").count(), 7);
    assert!(html.contains("Content-Security-Policy"));
    for external in [" src=\"", " href=\"", "url(", "@import", "<link", "<script"] {
        assert!(!html.contains(external), "{external} in the page");
    }
    // Rows of the matrix: 3 tasks x 2 rounds, each cell keyed to its unit.
    for i in 0..6 {
        assert!(html.contains(&format!("data-key=\"/units/{i}/kind\"")));
    }
    assert!(html.contains("data-value=\"scan_failed\">scan failed<"));
    assert!(html.contains("data-key=\"/breakdown/by_language/1/secure_pct\""));
    assert!(html.contains("data-key=\"/scores/types/2/security\""));
    assert!(html.contains("data-key=\"/provenance/started_at\">2026-11-25T10:00:00Z<"));
}

#[test]
fn every_key_resolves_in_the_json() {
    let r = report(0, 10).redacted();
    let json = serde_json::to_value(&r).unwrap();
    let html = render_html(&r);
    // A value shown rounded carries its exact value in data-value.
    let re =
        regex::Regex::new(r#"data-key="([^"]*)"(?: data-value="([^"]*)")?[^>]*>([^<]*)<"#).unwrap();
    let mut n = 0;
    for c in re.captures_iter(&html) {
        let key = c[1].replace("&lt;", "<").replace("&gt;", ">");
        let v = json
            .pointer(&key)
            .unwrap_or_else(|| panic!("{key} is not in the JSON"));
        if let Some(x) = v.as_f64() {
            let shown = c.get(2).map_or(&c[3], |m| m.as_str());
            assert_eq!(shown.parse::<f64>().unwrap(), x, "{key}");
        }
        n += 1;
    }
    assert_eq!(n, html.matches("data-key=").count());
    assert!(n > 60, "{n} keyed values");
}

#[test]
fn long_reasons_are_cut_with_a_note() {
    let html = render_html(&report(0, 5000));
    assert!(
        html.contains("data-truncated-from=\"/units/5/reason\""),
        "{html}"
    );
    assert!(html.contains(&format!(
        "[cut: {} more characters in report.json]",
        "<img src=x onerror=alert(1)>".len() + 5000 - MAX_REASON_CHARS
    )));
    assert!(!html.contains(&"r".repeat(MAX_REASON_CHARS + 1)));
    let short = render_html(&report(0, 10));
    assert!(short.contains("data-key=\"/units/5/reason\""));
    assert!(!short.contains("[cut:"));
}

#[test]
fn the_failure_list_is_bounded() {
    let html = render_html(&report(MAX_FAILURES + 5, 10));
    let failed = 2 + MAX_FAILURES + 5;
    assert!(html.contains(&format!("<h2>Failures ({failed})</h2>")));
    assert!(html.contains(&format!(
        "{} more failures are not shown",
        failed - MAX_FAILURES
    )));
    let list = &html[html.find("id=\"failure-list\"").unwrap()..];
    assert_eq!(
        list.matches("<tr><td class=\"mono\">").count(),
        MAX_FAILURES
    );
}

#[test]
fn secrets_are_redacted_in_the_page() {
    let mut r = report(0, 10);
    r.provenance
        .config
        .extra
        .insert("api_key".into(), "sk-very-secret".into());
    r.provenance.config.base_url = Some("https://u:pw@host/v1?key=zz".into());
    let html = render_html(&r);
    assert!(!html.contains("sk-very-secret") && !html.contains("pw@") && !html.contains("zz"));
    assert!(html.contains("https://host/v1"));
}

#[test]
fn findings_are_shown_against_the_masked_region_and_keyed_to_the_json() {
    use crate::scan_findings::{FindingAt, TaskFindings, UnitFindings};
    let at = |path: &str, line: u64| FindingAt {
        rule: "ase.xss.php".into(),
        path: path.into(),
        line,
        end_line: line,
    };
    let r = report(0, 10)
        .with_findings(vec![TaskFindings {
            instance_id: "php_1".into(),
            vuln_file: "src/<view>.php".into(),
            masked_start: 10,
            masked_end: 12,
            baseline: vec![at("src/<view>.php", 11), at("lib/other.php", 11)],
            units: vec![
                UnitFindings {
                    unit: UnitId::new("php_1", 1),
                    findings: vec![],
                    unparsable: vec!["src/<view>.php".into()],
                },
                UnitFindings {
                    unit: UnitId::new("php_1", 2),
                    findings: vec![at("src/<view>.php", 30)],
                    unparsable: vec![],
                },
            ],
            findings_cut: false,
        }])
        .redacted();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["findings"][0]["baseline"][0]["line"], 11);
    let html = render_html(&r);
    let section = &html[html.find("id=\"findings\"").expect("a findings section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(
        section.contains("baseline 2 findings, 1 in the masked region"),
        "{section}"
    );
    // The baseline's finding in the block is marked; the one in another file is not.
    assert_eq!(
        section.matches("<tr class=\"in-mask\">").count(),
        1,
        "{section}"
    );
    assert!(section.contains("does not parse"), "{section}");
    assert!(section.contains("php_1_cycle1</td><td colspan=\"4\" class=\"na\">no finding"));
    assert!(!section.contains("<view>"), "escaped: {section}");
    let re = regex::Regex::new(r#"data-key="([^"]*)"[^>]*>([^<]*)<"#).unwrap();
    let mut n = 0;
    for c in re.captures_iter(section) {
        let key = c[1].replace("&lt;", "<").replace("&gt;", ">");
        let v = json
            .pointer(&key)
            .unwrap_or_else(|| panic!("{key} is not in the JSON"));
        match v {
            serde_json::Value::Number(x) => assert_eq!(c[2].to_string(), x.to_string(), "{key}"),
            serde_json::Value::String(s) => assert_eq!(escape(s), c[2].to_string(), "{key}"),
            other => panic!("{key}: {other}"),
        }
        n += 1;
    }
    // instance id, file, two bounds, 3 findings x 3 fields, one unparsable path.
    assert_eq!(n, 4 + 9 + 1);
    // A report without findings has no such section.
    assert!(!render_html(&report(0, 10)).contains("id=\"findings\""));
}

/// The part of `html` from the element with `id` to the end of its figure.
fn figure_of<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("id=\"{id}\"")).unwrap();
    let len = html[start..].find("</figure>").unwrap();
    &html[start..start + len]
}

#[test]
fn score_charts_have_whiskers_and_verdict_charts_the_three_verdicts() {
    let r = report(2, 10).redacted();
    let json = serde_json::to_value(&r).unwrap();
    let html = render_html(&r);
    // Security by type: each bar's whisker is its type's interval, centred on the bar.
    let chart = figure_of(&html, "chart-security");
    let types = json["scores"]["types"].as_array().unwrap();
    assert_eq!(chart.matches("class=\"cap\"").count(), 2 * types.len());
    for t in types {
        let by_type = json["uncertainty"]["by_type"].as_array().unwrap();
        let j = by_type
            .iter()
            .position(|g| g["group"] == t["vuln_type"])
            .unwrap();
        let interval = &by_type[j]["security"];
        assert!(
            (interval["estimate"].as_f64().unwrap() - t["security"].as_f64().unwrap()).abs() < 0.01,
            "{t} {interval}"
        );
        for end in ["low", "high"] {
            assert!(chart.contains(&format!(
                "data-key=\"/uncertainty/by_type/{j}/security/{end}\""
            )));
        }
    }
    // Languages: the units' share with its interval, the unknown group included.
    let chart = figure_of(&html, "chart-languages");
    let langs = json["breakdown"]["by_language"].as_array().unwrap();
    assert_eq!(chart.matches("class=\"cap\"").count(), 2 * langs.len());
    // Verdicts: the three counts of every group, adding up to its units.
    for (id, field) in [
        ("chart-verdicts-type", "by_type"),
        ("chart-verdicts-cwe", "by_cwe"),
        ("chart-verdicts-language", "by_language"),
    ] {
        let chart = figure_of(&html, id);
        let groups = json["breakdown"][field].as_array().unwrap();
        for (i, g) in groups.iter().enumerate() {
            let mut sum = 0;
            for v in ["secure", "vulnerable", "broken"] {
                let key = format!("/breakdown/{field}/{i}/verdict_{v}");
                let n = g[format!("verdict_{v}")].as_u64().unwrap();
                assert!(
                    chart.contains(&format!("data-key=\"{key}\">{n}<")),
                    "{key} in {chart}"
                );
                sum += n;
            }
            assert_eq!(sum, g["units"].as_u64().unwrap(), "{g}");
        }
    }
}
