//! Scans proportional to the change. Our rules are intra-file (semgrep's taint mode follows
//! data within a function), so a file's findings depend on that file alone: a unit's count is
//! the baseline's count, minus the baseline's findings in the files the unit changed or
//! deleted, plus the unit's own findings in the changed files that remain. Only those files
//! are scanned (mirrored at their relative paths into a scratch directory, so the same
//! excludes apply as in a whole-tree scan), and a file already scanned with the same rules,
//! engine, path and content is not scanned again: its findings are kept on disk.

use super::baseline::BaselineResult;
use super::Scanner;
use crate::sast::{
    counted_findings, unparsable_paths, CountCriteria, Finding, RuleSet, ScanLabels, ScanOutcome,
    SemgrepReport,
};
use ase_common::digest::sha256_hex;
use ase_common::scan_findings::FindingAt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Up to this many files are scanned with one semgrep job (see [`Scanner::scan_few`]).
const FEW_FILES: usize = 8;

/// One finding of a file scan, as kept (every type: the count's filter applies later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeptFinding {
    check_id: String,
    start_line: u64,
    end_line: u64,
    vuln_type: Option<String>,
}

/// What scanning one file gave.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct FileScan {
    findings: Vec<KeptFinding>,
    unparsable: bool,
}

#[derive(Serialize)]
struct FileKey<'a> {
    rules_digest: &'a str,
    scanner_version: &'a str,
    /// The path decides the language (by extension) and the excludes.
    path: &'a str,
    content_sha256: &'a str,
}

/// Findings of single files on disk, one JSON file per (rules, engine, path, content).
pub struct FileScanCache {
    dir: PathBuf,
    scanned: AtomicU64,
}

impl FileScanCache {
    pub fn new(dir: PathBuf) -> Self {
        FileScanCache {
            dir,
            scanned: AtomicU64::new(0),
        }
    }

    /// Files this process scanned (cache misses), for tests and metrics.
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn load(&self, key: &str) -> Option<FileScan> {
        serde_json::from_slice(&std::fs::read(self.path(key)).ok()?).ok()
    }

    fn store(&self, key: &str, scan: &FileScan) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            serde_json::to_writer(&mut tmp, scan)?;
            tmp.persist(self.path(key)).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot keep a file scan");
        }
    }
}

/// The unit's own scan of its changed files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangedScan {
    /// Findings (every type) of the changed files present in the unit, with their paths.
    pub report: SemgrepReport,
    /// Changed files actually scanned now (the others came from the cache).
    pub scanned_now: usize,
}

/// Why the changed files could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    #[error("changed file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Scan(String),
}

/// Scans the files of `changed` (relative to `root`) that exist in `root` as regular files,
/// those not already in `cache`, in one scan of a scratch directory.
pub async fn scan_changed(
    scanner: &Scanner,
    cache: &FileScanCache,
    scratch: &Path,
    root: &Path,
    changed: &BTreeSet<String>,
    labels: &ScanLabels,
    rules: &RuleSet,
) -> Result<ChangedScan, IncrementalError> {
    let identity = scanner.identity();
    let io = |path: &str| {
        let path = path.to_string();
        move |source| IncrementalError::Io { path, source }
    };
    let mut per_file: BTreeMap<String, FileScan> = BTreeMap::new();
    let mut to_scan: Vec<(String, String, Vec<u8>)> = Vec::new();
    for rel in changed {
        let src = root.join(rel);
        match std::fs::symlink_metadata(&src) {
            Ok(md) if md.is_file() => {}
            // Deleted by the unit (or not a file a scan reads): no findings of its own.
            _ => continue,
        }
        let bytes = std::fs::read(&src).map_err(io(rel))?;
        let content = sha256_hex(&bytes);
        let key_json = serde_json::to_vec(&FileKey {
            rules_digest: &rules.digest,
            scanner_version: &identity.version,
            path: rel,
            content_sha256: &content,
        })
        .expect("a key serialises");
        let key = sha256_hex(&key_json);
        match cache.load(&key) {
            Some(scan) => {
                per_file.insert(rel.clone(), scan);
            }
            None => to_scan.push((rel.clone(), key, bytes)),
        }
    }
    let mut version = None;
    let scanned_now = to_scan.len();
    if !to_scan.is_empty() {
        std::fs::create_dir_all(scratch).map_err(io(&scratch.display().to_string()))?;
        // Named after the unit (its directory name), as a unit's tree is: a scan seen in a
        // process list or a scanner's arguments says whose it is.
        let prefix = format!("changed-{}-", labels.unit);
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(scratch)
            .map_err(io(&scratch.display().to_string()))?;
        for (rel, _, bytes) in &to_scan {
            let dst = dir.path().join(rel);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(io(rel))?;
            }
            std::fs::write(&dst, bytes).map_err(io(rel))?;
        }
        let outcome = if to_scan.len() <= FEW_FILES {
            scanner.scan_few(dir.path(), labels, rules).await
        } else {
            scanner.scan(dir.path(), labels, rules).await
        };
        let report = match outcome {
            ScanOutcome::Completed(r) => r,
            ScanOutcome::Failed(f) => return Err(IncrementalError::Scan(f.to_string())),
        };
        version = report.version.clone();
        let unparsable = unparsable_paths(&report);
        let mut found: BTreeMap<&str, Vec<KeptFinding>> = BTreeMap::new();
        for f in &report.findings {
            found.entry(f.path.as_str()).or_default().push(KeptFinding {
                check_id: f.check_id.clone(),
                start_line: f.start_line,
                end_line: f.end_line,
                vuln_type: f.vuln_type.clone(),
            });
        }
        for (rel, key, _) in &to_scan {
            let scan = FileScan {
                findings: found.remove(rel.as_str()).unwrap_or_default(),
                unparsable: unparsable.contains(rel),
            };
            cache.store(key, &scan);
            cache.scanned.fetch_add(1, Ordering::Relaxed);
            per_file.insert(rel.clone(), scan);
        }
    }
    let mut report = SemgrepReport {
        version,
        findings: Vec::new(),
        findings_total: 0,
        errors: Vec::new(),
        errors_total: 0,
    };
    for (rel, scan) in per_file {
        if scan.unparsable {
            report.errors.push(crate::sast::ScanError {
                kind: "PartialParsing".into(),
                level: "warn".into(),
                message: "kept from an earlier scan of the same file".into(),
                path: Some(rel.clone()),
            });
        }
        for k in scan.findings {
            report.findings.push(Finding {
                check_id: k.check_id,
                path: rel.clone(),
                start_line: k.start_line,
                end_line: k.end_line,
                vuln_type: k.vuln_type,
                cwe: None,
                language: None,
            });
        }
    }
    report.findings_total = report.findings.len();
    report.errors_total = report.errors.len();
    Ok(ChangedScan {
        report,
        scanned_now,
    })
}

/// The unit's count and findings from the baseline and its changed files' scan: the
/// baseline's findings outside `changed` and the changed files' own.
pub fn combine(
    baseline: &BaselineResult,
    changed: &BTreeSet<String>,
    scan: &ChangedScan,
    criteria: &CountCriteria<'_>,
) -> (i64, Vec<FindingAt>) {
    let mut findings: Vec<FindingAt> = baseline
        .findings
        .iter()
        .filter(|f| !changed.contains(&f.path))
        .cloned()
        .collect();
    findings.extend(counted_findings(&scan.report, criteria));
    (i64::try_from(findings.len()).unwrap_or(i64::MAX), findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, line: u64) -> FindingAt {
        FindingAt {
            rule: "r".into(),
            path: path.into(),
            line,
            end_line: line,
        }
    }

    #[test]
    fn combine_replaces_the_changed_files_findings() {
        let baseline = BaselineResult {
            detected_vul_num: 3,
            findings: vec![at("a.php", 1), at("a.php", 9), at("b.php", 2)],
            ..BaselineResult::default()
        };
        let changed: BTreeSet<String> = ["a.php".to_string(), "gone.php".to_string()].into();
        let mut scan = ChangedScan::default();
        scan.report.findings.push(Finding {
            check_id: "r".into(),
            path: "a.php".into(),
            start_line: 4,
            end_line: 4,
            vuln_type: Some("SQLI".into()),
            cwe: None,
            language: None,
        });
        scan.report.findings.push(Finding {
            vuln_type: Some("XSS".into()),
            ..scan.report.findings[0].clone()
        });
        let criteria = CountCriteria {
            vuln_type: "SQLI",
            vuln_file: "a.php",
            scope: crate::sast::CountScope::WholeTree,
        };
        let (n, f) = combine(&baseline, &changed, &scan, &criteria);
        assert_eq!(n, 2);
        assert_eq!(f, vec![at("b.php", 2), at("a.php", 4)]);
    }
}
