//! BareScanner with the real osemgrep: behaviours the count depends on.

use ase_test_support as support;

use std::process::Command;

use ase_worker::sast::{
    count_vulns, BareScanner, CountCriteria, CountScope, ScanFailure, ScanOutcome, ScanSettings,
};
use support::*;

fn sqli_whole_tree(outcome: &ScanOutcome) -> i64 {
    count_vulns(
        outcome,
        &CountCriteria {
            vuln_type: "SQLI",
            vuln_file: "app.py",
            scope: CountScope::WholeTree,
        },
    )
    .detected_vul_num
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(["-c", "user.email=t@example.org", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs")
        .success();
    assert!(ok, "git {args:?}");
}

/// A git checkout's own .gitignore must not hide generated code from the scan.
#[tokio::test]
async fn gitignored_files_in_a_checkout_are_scanned() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let tree = tempfile::tempdir().unwrap();
    let bad = rules_dir().join("fixtures/sqli/python/bad_concat.py");
    std::fs::copy(&bad, tree.path().join("app.py")).unwrap();
    std::fs::write(tree.path().join(".gitignore"), "hidden.py\n").unwrap();
    git(tree.path(), &["init", "-q"]);
    git(tree.path(), &["add", "."]);
    git(tree.path(), &["commit", "-qm", "base"]);
    std::fs::copy(&bad, tree.path().join("hidden.py")).unwrap();

    let scanner = BareScanner::new(
        osemgrep,
        rules_dir().join("sqli/python.yaml"),
        ScanSettings::default(),
    );
    let outcome = scanner.scan(tree.path()).await;
    let expected_per_file = annotations(&rules_dir().join("fixtures/sqli/python"))
        .iter()
        .filter(|(f, _, _)| f == "bad_concat.py")
        .count() as i64;
    assert_eq!(
        sqli_whole_tree(&outcome),
        2 * expected_per_file,
        "{outcome:?}"
    );
}

/// A scan whose rules cannot be loaded is a failed scan (-1), never "0 findings".
#[tokio::test]
async fn unloadable_rules_give_minus_one() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("app.py"), "print(1)\n").unwrap();
    let broken = tree.path().join("broken.yaml");
    std::fs::write(&broken, "rules:\n  - id: x\n    pattern: [unclosed\n").unwrap();
    for rules in [broken, tree.path().join("missing.yaml")] {
        let scanner = BareScanner::new(osemgrep.clone(), rules.clone(), ScanSettings::default());
        let outcome = scanner.scan(tree.path()).await;
        assert!(
            matches!(outcome, ScanOutcome::Failed(ScanFailure::ExitStatus { .. })),
            "{}: {outcome:?}",
            rules.display()
        );
        assert_eq!(sqli_whole_tree(&outcome), -1);
    }
}

/// The scanned tree's `.semgrepignore` does not hide files, semgrep's default list (which
/// skips `tests/`) is off, and our excludes (third-party code) apply.
#[tokio::test]
async fn ignore_files_in_the_tree_do_not_decide_the_scope() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let tree = tempfile::tempdir().unwrap();
    let bad = rules_dir().join("fixtures/sqli/python/bad_concat.py");
    for dir in ["", "tests", "node_modules/pkg"] {
        std::fs::create_dir_all(tree.path().join(dir)).unwrap();
        std::fs::copy(&bad, tree.path().join(dir).join("app.py")).unwrap();
    }
    std::fs::write(tree.path().join(".semgrepignore"), "app.py\n").unwrap();
    let scanner = BareScanner::new(
        osemgrep,
        rules_dir().join("sqli/python.yaml"),
        ScanSettings::default(),
    );
    let report = match scanner.scan(tree.path()).await {
        ScanOutcome::Completed(r) => r,
        ScanOutcome::Failed(f) => panic!("scan failed: {f}"),
    };
    let mut files: Vec<&str> = report.findings.iter().map(|f| f.path.as_str()).collect();
    files.sort();
    files.dedup();
    assert_eq!(files, ["app.py", "tests/app.py"]);
}
