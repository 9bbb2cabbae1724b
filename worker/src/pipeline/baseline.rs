//! The baseline of a v1 task: the count of the same scan on the ORIGINAL (unmasked) code at
//! `base_commit`, computed once per task and scanner and kept on disk, because upstream's
//! `detected_vul_num` came from a closed tool and cannot be compared with our rules. With the
//! count the findings (rule, path, line) and the files that did not parse are kept, and a scan
//! that failed for a reason that would recur (a timeout, too many findings, bad output) is
//! kept as failed with its reason, so that a run does not pay for it again and again.

use crate::sast::VulnCount;
use ase_common::scan_findings::FindingAt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Everything the baseline count depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineKey {
    pub rules_digest: String,
    pub scanner_version: String,
    pub repo: String,
    /// Full commit id.
    pub commit: String,
    pub vuln_type: String,
    /// `whole_tree` or `vuln_file_only`.
    pub scope: String,
    /// Empty under `whole_tree`, where the count does not depend on it (every task of a
    /// repository, commit and type then shares one baseline).
    pub vuln_file: String,
    /// The cut list the scan was limited to, if any.
    pub cut: Option<Vec<String>>,
}

impl BaselineKey {
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key serialises");
        ase_common::digest::sha256_hex(&json)
    }
}

/// What a baseline scan gave: the count (-1 and `failure` when it failed), where its findings
/// are, and the files the scanner could not parse at the base commit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BaselineResult {
    pub detected_vul_num: i64,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub findings: Vec<FindingAt>,
    #[serde(default)]
    pub unparsable: Vec<String>,
    #[serde(default)]
    pub scanner_version: Option<String>,
    /// A failure that would recur on the same inputs (kept on disk); false for one of the
    /// machine (the scanner could not start, the container runtime failed), tried again.
    #[serde(default)]
    pub failure_is_lasting: bool,
}

impl BaselineResult {
    pub fn count(&self) -> VulnCount {
        VulnCount {
            detected_vul_num: self.detected_vul_num,
            failure: self.failure.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    key: BaselineKey,
    result: BaselineResult,
}

/// Baselines on disk under one directory, one JSON file per key.
pub struct BaselineCache {
    dir: PathBuf,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    computed: AtomicU64,
}

impl BaselineCache {
    pub fn new(dir: PathBuf) -> Self {
        BaselineCache {
            dir,
            in_flight: Mutex::new(HashMap::new()),
            computed: AtomicU64::new(0),
        }
    }

    /// Baseline scans this process ran (for tests and metrics).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// `.r2`: the layout that keeps the whole result (files of the count-only layout, named
    /// `<digest>.json`, are not read: they have no findings).
    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.r2.json"))
    }

    fn load(&self, key: &BaselineKey, digest: &str) -> Option<BaselineResult> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        (stored.key == *key).then_some(stored.result)
    }

    fn store(
        &self,
        key: &BaselineKey,
        digest: &str,
        result: &BaselineResult,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        serde_json::to_writer(
            &mut tmp,
            &Stored {
                key: key.clone(),
                result: result.clone(),
            },
        )?;
        tmp.persist(self.path(digest)).map_err(|e| e.error)?;
        Ok(())
    }

    /// The cached baseline of `key`, or the result of `compute` (run once however many units
    /// ask at the same time). A lasting failure is kept like a count; a passing one (the
    /// machine's) is returned but not kept, so a later unit tries again.
    pub async fn get_or_compute<F, Fut>(&self, key: &BaselineKey, compute: F) -> BaselineResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = BaselineResult>,
    {
        let digest = key.digest();
        if let Some(r) = self.load(key, &digest) {
            return r;
        }
        let gate = {
            let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(digest.clone()).or_default().clone()
        };
        let _held = gate.lock().await;
        if let Some(r) = self.load(key, &digest) {
            return r;
        }
        self.computed.fetch_add(1, Ordering::Relaxed);
        let result = compute().await;
        if result.failure.is_none() || result.failure_is_lasting {
            if let Err(e) = self.store(key, &digest, &result) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot store baseline");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BaselineKey {
        BaselineKey {
            rules_digest: "r".into(),
            scanner_version: "v".into(),
            repo: "o/n".into(),
            commit: "c".repeat(40),
            vuln_type: "SQLI".into(),
            scope: "whole_tree".into(),
            vuln_file: "a.php".into(),
            cut: None,
        }
    }

    fn counted(n: i64) -> BaselineResult {
        BaselineResult {
            detected_vul_num: n,
            findings: vec![FindingAt {
                rule: "ase.sqli.php".into(),
                path: "a.php".into(),
                line: 3,
                end_line: 3,
            }],
            ..BaselineResult::default()
        }
    }

    fn failed(lasting: bool) -> BaselineResult {
        BaselineResult {
            detected_vul_num: -1,
            failure: Some("boom".into()),
            failure_is_lasting: lasting,
            ..BaselineResult::default()
        }
    }

    #[tokio::test]
    async fn concurrent_requests_compute_once_and_passing_failures_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(BaselineCache::new(dir.path().join("b")));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = cache.clone();
            tasks.push(tokio::spawn(async move {
                c.get_or_compute(&key(), || async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    counted(2)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), counted(2));
        }
        assert_eq!(cache.computed(), 1);
        // Another process (a fresh cache on the same directory) reads it, findings and all.
        let again = BaselineCache::new(dir.path().join("b"));
        let n = again
            .get_or_compute(&key(), || async { panic!("must come from disk") })
            .await;
        assert_eq!(n, counted(2));
        assert_eq!(n.count().detected_vul_num, 2);
        // A different cut list is another baseline; a failure of the machine is not kept.
        let mut k2 = key();
        k2.cut = Some(vec!["a.php".into()]);
        let f = || async { failed(false) };
        assert_eq!(again.get_or_compute(&k2, f).await.detected_vul_num, -1);
        assert_eq!(again.get_or_compute(&k2, f).await.detected_vul_num, -1);
        assert_eq!(again.computed(), 2);
    }

    #[tokio::test]
    async fn a_lasting_failure_is_kept_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path().join("b"));
        let r = cache
            .get_or_compute(&key(), || async { failed(true) })
            .await;
        assert_eq!(r.count().failure.as_deref(), Some("boom"));
        let again = BaselineCache::new(dir.path().join("b"));
        let r = again
            .get_or_compute(&key(), || async {
                panic!("a lasting failure is not paid again")
            })
            .await;
        assert_eq!(
            (r.detected_vul_num, r.failure.as_deref()),
            (-1, Some("boom"))
        );
        assert_eq!(again.computed(), 0);
    }
}
