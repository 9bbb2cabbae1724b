//! Scans proportional to the change count what whole-tree scans count: on random units over
//! generated repositories of several languages (real osemgrep, the repository's 20 rules), the
//! baseline minus its findings in the changed files plus the unit's own findings in them
//! equals the whole-tree count of the unit's tree, for every vulnerability type, finding for
//! finding. The whole-tree side scans all units of a repository at once (each unit's tree a
//! directory of one scan), which keeps the test to a few scans.

use ase_test_support as support;

use ase_common::scan_findings::FindingAt;
use ase_worker::pipeline::baseline::BaselineResult;
use ase_worker::pipeline::incremental::{combine, scan_changed, FileScanCache};
use ase_worker::pipeline::{rules_digest, Scanner, ScannerIdentity};
use ase_worker::sast::{
    counted_findings, BareScanner, CountCriteria, CountScope, RuleCatalog, RuleSet, ScanLabels,
    ScanOutcome, ScanSettings, SemgrepReport,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use support::fixture_repo::{generate_repo, random_changes};

const TYPES: [&str; 4] = ["SQLI", "XSS", "Command Injection", "Path Traversal"];
const LANGUAGES: [&str; 4] = ["php", "py", "js", "go"];
const UNITS_PER_REPO: usize = 55;
const FILES_PER_REPO: usize = 24;

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

async fn full_scan(scanner: &Scanner, dir: &Path, rules: &RuleSet) -> SemgrepReport {
    let labels = ScanLabels {
        unit: "full".into(),
        run: "t".into(),
        worker: "w".into(),
    };
    match scanner.scan(dir, &labels, rules).await {
        ScanOutcome::Completed(r) => r,
        ScanOutcome::Failed(f) => panic!("{}: {f}", dir.display()),
    }
}

fn criteria(vuln_type: &str) -> CountCriteria<'_> {
    CountCriteria {
        vuln_type,
        vuln_file: "",
        scope: CountScope::WholeTree,
    }
}

fn sorted(mut f: Vec<FindingAt>) -> Vec<FindingAt> {
    f.sort();
    f
}

#[tokio::test]
async fn incremental_counts_equal_full_tree_counts_on_random_units() {
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rules = support::rules_dir();
    let scanner = Scanner::Bare {
        scanner: BareScanner::new(
            osemgrep,
            rules.clone(),
            ScanSettings {
                jobs: 2,
                ..ScanSettings::default()
            },
        ),
        identity: ScannerIdentity {
            rules_digest: rules_digest(&rules).unwrap(),
            version: "test".into(),
        },
    };
    // Every generic pack on both sides (all 20 rules, every type and language).
    let rule_set = RuleCatalog::load(&rules).unwrap().generic();
    let cache = FileScanCache::new(tmp.path().join("file_scans"));
    let scratch = tmp.path().join("scratch");
    let mut rng = fastrand::Rng::with_seed(14);
    let (mut units, mut moved, mut unparsable, mut checks) = (0usize, 0usize, 0usize, 0usize);
    for ext in LANGUAGES {
        let base = tmp.path().join(format!("base-{ext}"));
        let files = generate_repo(&base, ext, FILES_PER_REPO, &mut rng);
        let base_report = full_scan(&scanner, &base, &rule_set).await;
        let baselines: BTreeMap<&str, BaselineResult> = TYPES
            .iter()
            .map(|&t| {
                let findings = counted_findings(&base_report, &criteria(t));
                let result = BaselineResult {
                    detected_vul_num: findings.len() as i64,
                    findings,
                    ..BaselineResult::default()
                };
                (t, result)
            })
            .collect();
        assert!(
            baselines
                .values()
                .filter(|b| b.detected_vul_num > 0)
                .count()
                >= 2,
            "{ext}: the generated repo has findings of several types"
        );
        // Every unit's tree under one directory, for one whole-tree scan of them all.
        let all = tmp.path().join(format!("units-{ext}"));
        let mut incremental: Vec<BTreeMap<&str, Vec<FindingAt>>> = Vec::new();
        for u in 0..UNITS_PER_REPO {
            let root = all.join(format!("u{u:03}"));
            std::fs::create_dir_all(&root).unwrap();
            copy_tree(&base, &root);
            let changes = random_changes(&files, ext, &mut rng);
            for c in &changes {
                c.apply(&root);
            }
            let changed: BTreeSet<String> = changes.iter().map(|c| c.path().to_string()).collect();
            let labels = ScanLabels {
                unit: format!("u{u}"),
                run: "t".into(),
                worker: "w".into(),
            };
            let scan = scan_changed(
                &scanner, &cache, &scratch, &root, &changed, &labels, &rule_set,
            )
            .await
            .unwrap();
            if !ase_worker::sast::unparsable_paths(&scan.report).is_empty() {
                unparsable += 1;
            }
            let mut per_type = BTreeMap::new();
            for t in TYPES {
                let (n, findings) = combine(&baselines[t], &changed, &scan, &criteria(t));
                assert_eq!(n as usize, findings.len());
                per_type.insert(t, sorted(findings));
            }
            incremental.push(per_type);
        }
        let full = full_scan(&scanner, &all, &rule_set).await;
        for (u, per_type) in incremental.iter().enumerate() {
            let prefix = format!("u{u:03}/");
            let mine = SemgrepReport {
                findings: full
                    .findings
                    .iter()
                    .filter_map(|f| {
                        let rest = f.path.strip_prefix(&prefix)?;
                        let mut f = f.clone();
                        f.path = rest.to_string();
                        Some(f)
                    })
                    .collect(),
                ..SemgrepReport::default()
            };
            for t in TYPES {
                let whole = sorted(counted_findings(&mine, &criteria(t)));
                assert_eq!(
                    per_type[t], whole,
                    "{ext} unit {u}, {t}: incremental findings differ from the whole tree's"
                );
                if whole.len() as i64 != baselines[t].detected_vul_num {
                    moved += 1;
                }
                checks += 1;
            }
            units += 1;
        }
    }
    assert!(units >= 200, "{units} units");
    assert_eq!(checks, units * TYPES.len());
    // Not a vacuous equality: many counts moved off the baseline, some files did not parse,
    // and identical changed files were scanned once.
    assert!(moved >= units / 4, "only {moved} of {checks} counts moved");
    assert!(
        unparsable >= 10,
        "only {unparsable} units left an unparsable file"
    );
    assert!(
        cache.scanned() < units as u64 * 3,
        "{} files scanned",
        cache.scanned()
    );
}
