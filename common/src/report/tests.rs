//! Tests of the report: JSON, Markdown, breakdown and verdict tables.

use super::*;
use crate::scoring::v2::{score_v2, V2Input, V2Scan, V2Task};
use crate::scoring::{Generation, UnitId};

#[test]
fn redact_url_drops_credentials() {
    assert_eq!(
        redact_url("https://u:p@api.x.com/v1?key=abc"),
        "https://api.x.com/v1"
    );
    assert_eq!(redact_url("https://api.x.com/v1/"), "https://api.x.com/v1/");
    assert_eq!(redact_url("http://tok@host:8080"), "http://host:8080");
    assert_eq!(redact_url("host/p#frag"), "host/p");
}

fn sample() -> Report {
    let input = V2Input {
        rounds: 2,
        tasks: vec![V2Task {
            instance_id: "t|1".into(),
            cwe_id: "CWE-79".into(),
        }],
        generations: vec![Generation {
            unit: UnitId::new("t|1", 1),
            success: true,
            time_cost: 3.0,
        }],
        scans: [(
            UnitId::new("t|1", 1),
            V2Scan {
                completion: true,
                image_status_check: true,
                test_case_check: true,
                poc_check: true,
            },
        )]
        .into(),
    };
    let mut config = RunConfig {
        model: "m".into(),
        batch: "b".into(),
        rounds: 2,
        ..RunConfig::default()
    };
    config.set_base_url("https://user:pw@api.example/v1?api_key=zzz");
    config
        .extra
        .insert("OPENAI_API_KEY".into(), "sk-secret".into());
    config.extra.insert("scanner".into(), "ours".into());
    let provenance = Provenance {
        dataset_path: "d.json".into(),
        dataset_sha256: "ab".repeat(32),
        tool_versions: [("ase".to_string(), "0.1.0".to_string())].into(),
        config,
        ..Provenance::default()
    };
    Report::new(
        provenance,
        crate::scoring::v2::unit_outcomes(&input),
        Scores::V2(score_v2(&input).unwrap()),
    )
}

#[test]
fn write_report_writes_redacted_json_and_markdown() {
    let d = tempfile::tempdir().unwrap();
    let files = write_report(&d.path().join("out"), &sample()).unwrap();
    let json = std::fs::read_to_string(&files.json).unwrap();
    assert!(
        !json.contains("sk-secret") && !json.contains("zzz") && !json.contains("pw@"),
        "{json}"
    );
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.provenance.config.extra["OPENAI_API_KEY"], REDACTED);
    assert_eq!(back.provenance.config.extra["scanner"], "ours");
    assert_eq!(
        back.provenance.config.base_url.as_deref(),
        Some("https://api.example/v1")
    );
    assert_eq!(back.schema_version, REPORT_SCHEMA_VERSION);
    assert_eq!(back.units.len(), 2);
    let Scores::V2(s) = &back.scores else {
        panic!("v2 expected")
    };
    assert_eq!(s.all.code_security_score, 50.0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["scores"]["version"], "v2");
    assert_eq!(v["units"][1]["status"], "failed");
    assert_eq!(v["units"][1]["unit"]["round"], 2);

    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(
        md.contains("| all | 45.1 | 55.0 | 50.0 | 50.0 | 100.0 | 1.5 | 2 |"),
        "{md}"
    );
    assert!(md.contains("| CWE-79 |"));
    // Untrusted ids cannot break the table.
    assert!(md.contains("| t\\|1_cycle1 | secure |"), "{md}");
    assert!(md.contains("1 secure, 0 not secure, 1 failed."));
    assert!(!md.contains("sk-secret"));

    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(!html.contains("sk-secret") && !html.contains("zzz"));
    assert!(
        html.contains("data-key=\"/scores/all/overall_score\">45.1<"),
        "{html}"
    );
}

#[test]
fn breakdown_counts_units_per_group_in_task_order() {
    use crate::scoring::OutcomeKind as K;
    let info = |id: &str, vt: &str, cwe: &str, lang: &str| TaskInfo {
        instance_id: id.into(),
        vuln_type: vt.into(),
        cwe_id: cwe.into(),
        language: lang.into(),
    };
    let units = vec![
        UnitOutcome::new(UnitId::new("b", 1), K::Secure, ""),
        UnitOutcome::new(UnitId::new("b", 2), K::Vulnerable, ""),
        UnitOutcome::new(UnitId::new("a", 1), K::NotApplied, ""),
        UnitOutcome::new(UnitId::new("c", 1), K::Secure, ""),
        UnitOutcome::new(UnitId::new("ghost", 1), K::Error, ""),
    ];
    let r = sample().clone();
    let r = Report::new(r.provenance, units, r.scores).with_tasks([
        info("a", "XSS", "CWE-79", "php"),
        info("b", "SQLI", "CWE-89", "go"),
        // Listed twice (upstream's data_v2 does): counted once.
        info("a", "XSS", "CWE-79", "php"),
        info("c", "XSS", "CWE-79", "go"),
    ]);
    assert_eq!(r.tasks.len(), 3);
    let b = &r.breakdown;
    let groups = |g: &[GroupTally]| -> Vec<(String, u32, u32, u32, u32, u32, f64)> {
        g.iter()
            .map(|t| {
                (
                    t.group.clone(),
                    t.tasks,
                    t.units,
                    t.secure,
                    t.not_secure,
                    t.failed,
                    t.secure_pct,
                )
            })
            .collect()
    };
    assert_eq!(
        groups(&b.by_type),
        [
            ("XSS".into(), 2, 2, 1, 0, 1, 50.0),
            ("SQLI".into(), 1, 2, 1, 1, 0, 50.0),
            (UNKNOWN_GROUP.into(), 0, 1, 0, 0, 1, 0.0),
        ]
    );
    assert_eq!(
        groups(&b.by_language),
        [
            ("php".into(), 1, 1, 0, 0, 1, 0.0),
            ("go".into(), 2, 3, 2, 1, 0, 66.67),
            (UNKNOWN_GROUP.into(), 0, 1, 0, 0, 1, 0.0),
        ]
    );
    assert_eq!(b.by_cwe[0].group, "CWE-79");
    assert_eq!(
        b.outcomes.iter().map(|(k, n)| (*k, *n)).collect::<Vec<_>>(),
        [
            (K::Secure, 2),
            (K::Vulnerable, 1),
            (K::NotApplied, 1),
            (K::Error, 1)
        ]
    );
    // The same tables in Markdown.
    let md = render_markdown(&r);
    assert!(md.contains("| go | 2 | 3 | 2 | 1 | 0 | 66.67 |"), "{md}");
    assert!(md.contains("| failed to apply | 1 |"), "{md}");
    assert!(
        md.contains("| a_cycle1 | failed | failed to apply |"),
        "{md}"
    );
    // Old reports without tasks still read (their breakdown is empty).
    let mut v = serde_json::to_value(&r).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("tasks");
    o.remove("breakdown");
    let back: Report = serde_json::from_value(v).unwrap();
    assert!(back.tasks.is_empty() && back.breakdown.by_type.is_empty());
}

#[test]
fn breakdown_counts_our_verdicts_beside_upstreams_status() {
    use crate::scoring::Generation;
    use crate::scoring::OutcomeKind as K;
    let failed = Generation {
        unit: UnitId::new("a", 2),
        success: false,
        time_cost: 0.0,
    };
    let units = vec![
        UnitOutcome::new(UnitId::new("a", 1), K::Secure, ""),
        // Scanned though the answer did not apply: secure for upstream, broken for us.
        UnitOutcome::judged(UnitId::new("a", 2), K::Secure, "", Some(&failed)),
        UnitOutcome::new(UnitId::new("a", 3), K::Vulnerable, ""),
        UnitOutcome::new(UnitId::new("a", 4), K::TestsFailed, ""),
    ];
    let mut units = units;
    // 0.1 + 0.2 is 0.30000000000000004 in f64: the run's cost is kept in micro-dollars.
    for (u, cost) in units.iter_mut().zip([0.1, 0.2]) {
        u.usage.total_tokens = Some(15);
        u.usage.cost_usd = Some(cost);
    }
    let r = sample();
    let r = Report::new(r.provenance, units, r.scores).with_tasks([TaskInfo {
        instance_id: "a".into(),
        vuln_type: "XSS".into(),
        cwe_id: "CWE-79".into(),
        language: "php".into(),
    }]);
    let all = &r.breakdown.all;
    assert_eq!((all.tasks, all.units), (1, 4));
    assert_eq!((all.secure, all.not_secure, all.failed), (2, 2, 0));
    assert_eq!(
        (
            all.verdict_secure,
            all.verdict_vulnerable,
            all.verdict_broken
        ),
        (1, 1, 2)
    );
    assert_eq!((all.secure_pct, all.verdict_secure_pct), (50.0, 25.0));
    assert_eq!(r.breakdown.by_type[0].verdict_broken, 2);
    let md = render_markdown(&r);
    assert!(md.contains("## Scores (upstream-compatible)"), "{md}");
    assert!(
        md.contains("## Verdicts (ours)\n\n| Units | Secure | Vulnerable | Broken | Security (ours) | Tokens | Cost (USD) |\n|---:|---:|---:|---:|---:|---:|---:|\n| 4 | 1 | 1 | 2 | 25.0 | 30 | 0.3 |"),
        "{md}"
    );
    assert!(
        md.contains("| XSS | 1 | 4 | 2 | 2 | 0 | 50.0 | 1 | 1 | 2 | 25.0 |"),
        "{md}"
    );
    assert!(
        md.contains("| a_cycle2 | secure | secure |  | broken | failed to apply |"),
        "{md}"
    );
    assert!(
        md.contains("Our verdicts: 1 secure, 1 vulnerable, 2 broken."),
        "{md}"
    );
    // A report from before the verdict reads, its verdict derived from its kind.
    let mut v = serde_json::to_value(&r).unwrap();
    for u in v["units"].as_array_mut().unwrap() {
        let o = u.as_object_mut().unwrap();
        o.remove("verdict");
        o.remove("broken_cause");
    }
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back.units[3].verdict, Verdict::Broken);
    assert_eq!(back.units[3].broken_cause, Some(K::TestsFailed));
    assert_eq!(back.units[2].verdict, Verdict::Vulnerable);
}

#[test]
fn unix_ms_become_rfc3339() {
    assert_eq!(
        rfc3339_from_unix_ms(1_764_064_800_000).as_deref(),
        Some("2025-11-25T10:00:00Z")
    );
    assert_eq!(rfc3339_from_unix_ms(u64::MAX), None);
}

#[test]
fn v1_table_shows_missing_stability() {
    use crate::scoring::v1::{score_v1, V1Input, V1Task};
    let input = V1Input {
        rounds: 1,
        tasks: vec![V1Task {
            instance_id: "a".into(),
            vuln_type: "XSS".into(),
            baseline: 1,
        }],
        generations: vec![],
        scans: [(UnitId::new("a", 1), 0)].into(),
    };
    let t = scores_markdown(&Scores::V1(score_v1(&input).unwrap()));
    assert!(
        t.contains("| XSS | 66.67 | 100.0 | 0.0 | n/a | 1 / 1 |"),
        "{t}"
    );
    assert!(
        t.contains("| **all (types weighted equally)** | **66.67** |"),
        "{t}"
    );
}

/// A run with one round: pass@1 only, and every format (JSON, Markdown, HTML) says that
/// pass@k / pass^k for k >= 2 and stability are not available.
#[test]
fn one_round_says_in_every_format_which_figures_are_not_available() {
    let ids = ["t1", "t2"];
    let mut input = V2Input {
        rounds: 1,
        tasks: ids
            .iter()
            .map(|id| V2Task {
                instance_id: id.to_string(),
                cwe_id: "CWE-79".into(),
            })
            .collect(),
        ..V2Input::default()
    };
    for (i, id) in ids.iter().enumerate() {
        let unit = UnitId::new(*id, 1);
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
                poc_check: i == 0,
            },
        );
    }
    let provenance = Provenance {
        config: RunConfig {
            model: "m".into(),
            batch: "b".into(),
            rounds: 1,
            ..RunConfig::default()
        },
        ..Provenance::default()
    };
    let report = Report::new(
        provenance,
        crate::scoring::v2::unit_outcomes(&input),
        Scores::V2(score_v2(&input).unwrap()),
    )
    .with_tasks(ids.iter().map(|id| TaskInfo {
        instance_id: id.to_string(),
        vuln_type: "XSS".into(),
        cwe_id: "CWE-79".into(),
        language: "php".into(),
    }));
    let why = "pass@k and pass^k for k >= 2, and stability: they need at least two rounds per task";
    let json = serde_json::to_value(&report).unwrap();
    let u = &json["uncertainty"];
    assert_eq!(u["pass_k"].as_array().unwrap().len(), 1, "{u}");
    assert_eq!(u["pass_k"][0]["pass_at_k"].as_f64(), Some(50.0));
    assert!(
        u["not_available"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == why),
        "{u}"
    );
    let md = render_markdown(&report);
    assert!(md.contains(&format!("Not available: {why}.")), "{md}");
    assert!(md.contains("| 1 | 50.0 | 50.0 |"), "{md}");
    let html = html::render_html(&report);
    assert!(
        html.contains(&format!("Not available: {}.", html::escape(why))),
        "{html}"
    );
    assert!(html.contains("id=\"pass-k\""));
}
