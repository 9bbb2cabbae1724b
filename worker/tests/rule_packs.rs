//! Every rule of `rules/` against its fixtures, with the real osemgrep.

use ase_test_support as support;

use std::time::Duration;

use ase_worker::sast::{
    count_vulns, BareScanner, CountCriteria, CountScope, ScanOutcome, ScanSettings, SemgrepReport,
};
use support::*;

fn settings() -> ScanSettings {
    ScanSettings {
        timeout: Duration::from_secs(120),
        ..ScanSettings::default()
    }
}

fn completed(outcome: ScanOutcome, what: &str) -> SemgrepReport {
    match outcome {
        ScanOutcome::Completed(r) => r,
        ScanOutcome::Failed(f) => panic!("{what}: scan failed: {f}"),
    }
}

#[test]
fn every_type_and_language_has_a_rule_and_fixtures() {
    let mut problems = Vec::new();
    for (slug, vuln_type, cwe) in TYPES {
        for lang in LANGUAGES {
            let rule = rules_dir().join(slug).join(format!("{lang}.yaml"));
            let Ok(text) = std::fs::read_to_string(&rule) else {
                problems.push(format!("missing {}", rule.display()));
                continue;
            };
            for needle in [
                format!("id: ase.{slug}.{lang}\n"),
                format!("cwe: \"{cwe}\"\n"),
                format!("vuln_type: \"{vuln_type}\"\n"),
                format!("language: {lang}\n"),
                format!("languages: [{lang}]\n"),
            ] {
                if !text.contains(&needle) {
                    problems.push(format!("{}: no `{}`", rule.display(), needle.trim()));
                }
            }
            let dir = rules_dir().join("fixtures").join(slug).join(lang);
            if !dir.is_dir() {
                problems.push(format!("missing fixtures {}", dir.display()));
                continue;
            }
            let expected = annotations(&dir);
            let files = fixture_files(&dir);
            let names: Vec<String> = files
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            for name in &names {
                let n = expected.iter().filter(|(f, _, _)| f == name).count();
                if is_bad(name) && n == 0 {
                    problems.push(format!(
                        "{slug}/{lang}/{name}: a bad fixture without ruleid"
                    ));
                } else if is_good(name) && n > 0 {
                    problems.push(format!("{slug}/{lang}/{name}: a good fixture with ruleid"));
                } else if !is_bad(name) && !is_good(name) {
                    problems.push(format!("{slug}/{lang}/{name}: neither bad* nor good*"));
                }
            }
            if !names.iter().any(|n| is_bad(n)) || !names.iter().any(|n| is_good(n)) {
                problems.push(format!("{slug}/{lang}: needs bad* and good* fixtures"));
            }
            let rule_id = format!("ase.{slug}.{lang}");
            if let Some(e) = expected.iter().find(|(_, _, id)| *id != rule_id) {
                problems.push(format!("{slug}/{lang}: annotation for another rule: {e:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "rule pack problems:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn each_rule_finds_exactly_the_annotated_lines() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let mut problems = Vec::new();
    for (slug, vuln_type, cwe) in TYPES {
        for lang in LANGUAGES {
            let rule = rules_dir().join(slug).join(format!("{lang}.yaml"));
            let dir = rules_dir().join("fixtures").join(slug).join(lang);
            let scanner = BareScanner::new(osemgrep.clone(), rule, settings());
            let report = completed(scanner.scan(&dir).await, &format!("{slug}/{lang}"));
            if report.errors_total > 0 {
                problems.push(format!("{slug}/{lang}: scan errors {:?}", report.errors));
            }
            let mut got: Vec<Expected> = report
                .findings
                .iter()
                .map(|f| (f.path.clone(), f.start_line, f.check_id.clone()))
                .collect();
            got.sort();
            let expected = annotations(&dir);
            if got != expected {
                problems.push(format!(
                    "{slug}/{lang}: findings differ\n  expected {expected:?}\n  got      {got:?}"
                ));
            }
            for f in &report.findings {
                let meta = (
                    f.vuln_type.as_deref(),
                    f.cwe.as_deref(),
                    f.language.as_deref(),
                );
                if meta != (Some(vuln_type), Some(cwe), Some(lang)) {
                    problems.push(format!("{slug}/{lang}: metadata {meta:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The twenty generic packs together (what a task with no pack of its own is scanned with, the
/// rule selection's `Everything`; per-CVE rules are only ever used alone): per fixture file,
/// the count for its own type in that file equals its annotations, so good files count 0.
#[tokio::test]
async fn the_whole_pack_counts_per_vuln_file() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let fixtures = rules_dir().join("fixtures");
    let generic: Vec<String> = TYPES
        .iter()
        .flat_map(|(slug, _, _)| LANGUAGES.iter().map(move |l| format!("{slug}/{l}.yaml")))
        .collect();
    let scanner = BareScanner::new(osemgrep, rules_dir(), settings());
    let report = completed(scanner.scan_with(&fixtures, &generic).await, "whole pack");
    let outcome = ScanOutcome::Completed(report);
    let mut checked = 0;
    for (slug, vuln_type, _) in TYPES {
        for lang in LANGUAGES {
            let dir = fixtures.join(slug).join(lang);
            let expected = annotations(&dir);
            for file in fixture_files(&dir) {
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                let vuln_file = format!("{slug}/{lang}/{name}");
                let want = expected.iter().filter(|(f, _, _)| *f == name).count() as i64;
                let got = count_vulns(
                    &outcome,
                    &CountCriteria {
                        vuln_type,
                        vuln_file: &vuln_file,
                        scope: CountScope::VulnFileOnly,
                    },
                );
                assert_eq!(got.detected_vul_num, want, "{vuln_file}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} fixture files checked");
}
