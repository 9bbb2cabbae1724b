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
        assert!(matches!(set.selection, Selection::Generic { .. }), "{set:?}");
        let ids = rule_ids(&scanner.scan_with(tree.path(), &set.files).await);
        assert_eq!(
            ids,
            [rule.to_string()].into(),
            "{vuln_type}/{language} scans with {rule} only"
        );
    }
}
