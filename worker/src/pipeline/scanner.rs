//! The scanner a worker evaluates v1 units with: the bare `osemgrep` process or the SAST
//! container, behind one type, with the identity that keys cached baselines.

use crate::sast::{BareScanner, ContainerScanner, RuleSet, ScanLabels, ScanOutcome};
use sha2::{Digest, Sha256};
use std::path::Path;

/// What makes two scans comparable: the same rules and the same engine. A baseline computed
/// under another identity is never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerIdentity {
    /// sha256 of the rule files ([`rules_digest`]).
    pub rules_digest: String,
    /// The engine's version (e.g. `osemgrep --version`, or the SAST image's content tag).
    pub version: String,
}

pub enum Scanner {
    Bare {
        scanner: BareScanner,
        identity: ScannerIdentity,
    },
    Container {
        scanner: ContainerScanner,
        identity: ScannerIdentity,
    },
}

impl Scanner {
    pub fn identity(&self) -> &ScannerIdentity {
        match self {
            Scanner::Bare { identity, .. } | Scanner::Container { identity, .. } => identity,
        }
    }

    /// Scan the directory `target` with the task's rule set (see
    /// [`crate::sast::RuleCatalog::select`]); finding paths are relative to it.
    pub async fn scan(&self, target: &Path, labels: &ScanLabels, rules: &RuleSet) -> ScanOutcome {
        match self {
            Scanner::Bare { scanner, .. } => scanner.scan_with(target, &rules.files).await,
            Scanner::Container { scanner, .. } => {
                scanner.scan_with(target, labels, &rules.files).await
            }
        }
    }

    /// Scan a directory of a few files with one semgrep job: starting a pool of workers costs
    /// more (about 0.25 s) than a few files take to scan.
    pub async fn scan_few(
        &self,
        target: &Path,
        labels: &ScanLabels,
        rules: &RuleSet,
    ) -> ScanOutcome {
        match self {
            Scanner::Bare { scanner, .. } => {
                scanner.with_jobs(1).scan_with(target, &rules.files).await
            }
            Scanner::Container { scanner, .. } => {
                scanner
                    .with_jobs(1)
                    .scan_with(target, labels, &rules.files)
                    .await
            }
        }
    }
}

/// sha256 over the relative paths and contents of every regular file under `rules` (a file or a
/// directory), in path order.
pub fn rules_digest(rules: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    if rules.is_file() {
        files.push((String::new(), rules.to_path_buf()));
    } else {
        let mut stack = vec![rules.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let ft = e.file_type()?;
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    let rel = e
                        .path()
                        .strip_prefix(rules)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    files.push((rel, e.path()));
                }
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for (rel, path) in files {
        let data = std::fs::read(&path)?;
        h.update((rel.len() as u64).to_be_bytes());
        h.update(rel.as_bytes());
        h.update((data.len() as u64).to_be_bytes());
        h.update(&data);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_names_and_contents() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sqli")).unwrap();
        std::fs::write(d.path().join("sqli/php.yaml"), "rules: []\n").unwrap();
        let a = rules_digest(d.path()).unwrap();
        assert_eq!(a, rules_digest(d.path()).unwrap());
        std::fs::write(d.path().join("sqli/php.yaml"), "rules: [] \n").unwrap();
        let b = rules_digest(d.path()).unwrap();
        assert_ne!(a, b);
        std::fs::rename(
            d.path().join("sqli/php.yaml"),
            d.path().join("sqli/py.yaml"),
        )
        .unwrap();
        assert_ne!(b, rules_digest(d.path()).unwrap());
    }
}
