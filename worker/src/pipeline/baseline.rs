//! The baseline of a v1 task: the count of the same scan on the ORIGINAL (unmasked) code at
//! `base_commit`, computed once per task and scanner and kept on disk, because upstream's
//! `detected_vul_num` came from a closed tool and cannot be compared with our rules.

use crate::sast::VulnCount;
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

#[derive(Serialize, Deserialize)]
struct Stored {
    key: BaselineKey,
    detected_vul_num: i64,
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

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.json"))
    }

    fn load(&self, key: &BaselineKey, digest: &str) -> Option<i64> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        (stored.key == *key && stored.detected_vul_num >= 0).then_some(stored.detected_vul_num)
    }

    fn store(&self, key: &BaselineKey, digest: &str, n: i64) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        serde_json::to_writer(
            &mut tmp,
            &Stored {
                key: key.clone(),
                detected_vul_num: n,
            },
        )?;
        tmp.persist(self.path(digest)).map_err(|e| e.error)?;
        Ok(())
    }

    /// The cached baseline of `key`, or the result of `compute` (run once however many units
    /// ask at the same time). A failed scan (-1) is returned but not kept, so a later unit
    /// tries again.
    pub async fn get_or_compute<F, Fut>(&self, key: &BaselineKey, compute: F) -> VulnCount
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = VulnCount>,
    {
        let digest = key.digest();
        if let Some(n) = self.load(key, &digest) {
            return VulnCount {
                detected_vul_num: n,
                failure: None,
            };
        }
        let gate = {
            let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(digest.clone()).or_default().clone()
        };
        let _held = gate.lock().await;
        if let Some(n) = self.load(key, &digest) {
            return VulnCount {
                detected_vul_num: n,
                failure: None,
            };
        }
        self.computed.fetch_add(1, Ordering::Relaxed);
        let count = compute().await;
        if count.scan_worked() {
            if let Err(e) = self.store(key, &digest, count.detected_vul_num) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot store baseline");
            }
        }
        count
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

    #[tokio::test]
    async fn concurrent_requests_compute_once_and_failures_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(BaselineCache::new(dir.path().join("b")));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = cache.clone();
            tasks.push(tokio::spawn(async move {
                c.get_or_compute(&key(), || async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    VulnCount {
                        detected_vul_num: 2,
                        failure: None,
                    }
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().detected_vul_num, 2);
        }
        assert_eq!(cache.computed(), 1);
        // Another process (a fresh cache on the same directory) reads it from disk.
        let again = BaselineCache::new(dir.path().join("b"));
        let n = again
            .get_or_compute(&key(), || async { panic!("must come from disk") })
            .await;
        assert_eq!(n.detected_vul_num, 2);
        // A different cut list is another baseline; a failed scan is not kept.
        let mut k2 = key();
        k2.cut = Some(vec!["a.php".into()]);
        let failed = || async {
            VulnCount {
                detected_vul_num: -1,
                failure: Some("boom".into()),
            }
        };
        assert_eq!(again.get_or_compute(&k2, failed).await.detected_vul_num, -1);
        assert_eq!(again.get_or_compute(&k2, failed).await.detected_vul_num, -1);
        assert_eq!(again.computed(), 2);
    }
}
