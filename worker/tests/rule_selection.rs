//! A task's rule set with the real osemgrep and the project's own `rules/`: a unit is scanned
//! with its type's and language's pack only, or with its CVE's rule when there is one.

use ase_test_support as support;

use ase_common::dataset::{LineRange, StaticSpec, Task, TaskSpec};
use ase_worker::sast::{BareScanner, RuleCatalog, ScanOutcome, ScanSettings, Selection};
use support::*;

fn task(vuln_type: &str, language: &str, vuln_source: &str) -> Task {
    Task {
        instance_id: "t".into(),
        repo: "o/n".into(),
        base_commit: "abc".into(),
        vuln_file: "a".into(),
        vuln_lines: LineRange { start: 1, end: 2 },
        language: language.into(),
        vuln_source: vuln_source.into(),
        vuln_type: vuln_type.into(),
        cwe_id: "CWE-1".into(),
        spec: TaskSpec::V1(StaticSpec {
            seed: true,
            detected_tool: String::new(),
            detected_vul_num: 1,
            patch_commit: None,
        }),
        extra: Default::default(),
    }
}

fn rule_ids(outcome: &ScanOutcome) -> std::collections::BTreeSet<String> {
    match outcome {
        ScanOutcome::Completed(r) => r.findings.iter().map(|f| f.check_id.clone()).collect(),
        other => panic!("scan failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_unit_scans_with_the_rules_of_its_type_and_language_only() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    // One tree holding vulnerable code of three packs.
    let tree = tempfile::tempdir().unwrap();
    for (fixture, name) in [
        ("sqli/php/bad_query.php", "a.php"),
        ("xss/php/bad_echo.php", "b.php"),
        ("sqli/python/bad_concat.py", "c.py"),
    ] {
        std::fs::copy(
            rules_dir().join("fixtures").join(fixture),
            tree.path().join(name),
        )
        .unwrap();
    }
    let catalog = RuleCatalog::load(&rules_dir()).unwrap();
    let scanner = BareScanner::new(osemgrep, rules_dir(), ScanSettings::default());

    let everything = rule_ids(&scanner.scan(tree.path()).await);
    assert!(
        everything.len() >= 3,
        "all packs see all three: {everything:?}"
    );
    for (vuln_type, language, rule) in [
        ("SQLI", "php", "ase.sqli.php"),
        ("XSS", "php", "ase.xss.php"),
        ("SQLI", "python", "ase.sqli.python"),
    ] {
        let set = catalog.select(&task(vuln_type, language, "CVE-0000-0"));
        assert!(
            matches!(set.selection, Selection::Generic { .. }),
            "{set:?}"
        );
        let ids = rule_ids(&scanner.scan_with(tree.path(), &set.files).await);
        assert_eq!(
            ids,
            [rule.to_string()].into(),
            "{vuln_type}/{language} scans with {rule} only"
        );
    }
}

/// Every per-CVE rule (`rules/cve/<CVE>.yaml`): one rule, id `ase.cve.<CVE>`, an A.S.E
/// `vuln_type`, and fixtures in `rules/fixtures/cve/<CVE>/` (at least one vulnerable `bad*` and
/// one fixed `good*` file) on which it finds exactly the annotated lines; the selection gives
/// it to every task of that `vuln_source`.
#[tokio::test]
async fn each_cve_rule_flags_its_vulnerable_fixtures_and_clears_the_fixed_ones() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let catalog = RuleCatalog::load(&rules_dir()).unwrap();
    let mut cves: Vec<String> = std::fs::read_dir(rules_dir().join("cve"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    cves.sort();
    assert!(!cves.is_empty(), "rules/cve holds per-CVE rules");
    let mut problems = Vec::new();
    for cve in &cves {
        let rule = format!("cve/{cve}.yaml");
        let dir = rules_dir().join("fixtures/cve").join(cve);
        let files = fixture_files(&dir);
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        if !names.iter().any(|n| is_bad(n)) || !names.iter().any(|n| is_good(n)) {
            problems.push(format!(
                "{cve}: needs bad* and good* fixtures, has {names:?}"
            ));
        }
        let scanner = BareScanner::new(osemgrep.clone(), rules_dir(), ScanSettings::default());
        let report = match scanner.scan_with(&dir, std::slice::from_ref(&rule)).await {
            ScanOutcome::Completed(r) => r,
            other => panic!("{cve}: scan failed: {other:?}"),
        };
        if report.errors_total > 0 {
            problems.push(format!("{cve}: scan errors {:?}", report.errors));
        }
        let mut got: Vec<Expected> = report
            .findings
            .iter()
            .map(|f| (f.path.clone(), f.start_line, f.check_id.clone()))
            .collect();
        got.sort();
        let expected = annotations(&dir);
        if expected.is_empty() || got != expected {
            problems.push(format!(
                "{cve}: findings differ\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
        for f in &report.findings {
            if f.check_id != format!("ase.cve.{cve}") {
                problems.push(format!("{cve}: rule id {}", f.check_id));
            }
            let known = ["Command Injection", "XSS", "SQLI", "Path Traversal"];
            if !f.vuln_type.as_deref().is_some_and(|t| known.contains(&t)) {
                problems.push(format!("{cve}: vuln_type {:?}", f.vuln_type));
            }
        }
        let set = catalog.select(&task("SQLI", "php", cve));
        if set.files != [rule.clone()] {
            problems.push(format!("{cve}: selected {:?}", set.files));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
