//! Run specs by digest. A lease names its run's spec by digest instead of carrying it; the
//! worker fetches each spec once (FetchRunSpec), checks the digest, and keeps the parsed spec
//! for the run's other leases. Bounded by count and bytes, least recently used out first.

use crate::pipeline::RunSpec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Specs kept at most, and their bytes (as fetched) at most.
pub const MAX_CACHED_SPECS: usize = 32;
pub const MAX_CACHED_SPEC_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpecFetchError {
    /// The coordinator could not be asked or did not answer (retrying may help).
    #[error("fetching the run spec {digest} of run {run}: {detail}")]
    Fetch {
        run: String,
        digest: String,
        detail: String,
        definite: bool,
    },
    #[error("the run spec of run {run} has digest {got}, not the {digest} its lease named")]
    Digest {
        run: String,
        digest: String,
        got: String,
    },
    #[error("the run spec {digest} of run {run} is not valid: {detail}")]
    Invalid {
        run: String,
        digest: String,
        detail: String,
    },
}

struct Entry {
    spec: Arc<RunSpec>,
    bytes: usize,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

#[derive(Default)]
pub struct SpecCache {
    inner: Mutex<Inner>,
    /// One fetch at a time: the leases of a new run arrive together and need one fetch.
    fetching: tokio::sync::Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

impl SpecCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Specs fetched so far (not served from the cache).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, digest: &str) -> Option<Arc<RunSpec>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let e = inner.entries.get_mut(digest)?;
        e.last_used = now;
        Some(e.spec.clone())
    }

    /// The spec of `digest`, from the cache or from `fetch` (called at most once at a time).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        run: &str,
        digest: &str,
        fetch: F,
    ) -> Result<Arc<RunSpec>, SpecFetchError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, SpecFetchError>>,
    {
        if let Some(spec) = self.get(digest) {
            return Ok(spec);
        }
        let _one = self.fetching.lock().await;
        if let Some(spec) = self.get(digest) {
            return Ok(spec);
        }
        let bytes = fetch().await?;
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let got = ase_common::digest::sha256_hex(&bytes);
        if got != digest {
            return Err(SpecFetchError::Digest {
                run: run.to_string(),
                digest: digest.to_string(),
                got,
            });
        }
        let spec: RunSpec =
            serde_json::from_slice(&bytes).map_err(|e| SpecFetchError::Invalid {
                run: run.to_string(),
                digest: digest.to_string(),
                detail: e.to_string(),
            })?;
        let spec = Arc::new(spec);
        self.insert(digest, spec.clone(), bytes.len());
        Ok(spec)
    }

    fn insert(&self, digest: &str, spec: Arc<RunSpec>, bytes: usize) {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.insert(
            digest.to_string(),
            Entry {
                spec,
                bytes,
                last_used: now,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        // The newest entry stays even when it alone is over the byte bound.
        while inner.entries.len() > 1
            && (inner.entries.len() > MAX_CACHED_SPECS || inner.bytes > MAX_CACHED_SPEC_BYTES)
        {
            let oldest = inner
                .entries
                .iter()
                .filter(|(d, _)| d.as_str() != digest)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(d, _)| d.clone())
                .expect("more than one entry");
            let e = inner.entries.remove(&oldest).expect("listed");
            inner.bytes -= e.bytes;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(batch: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "model_name": "m", "batch": batch, "rounds": 1,
            "model": {"provider": "original"}
        }))
        .unwrap()
    }

    fn digest(bytes: &[u8]) -> String {
        ase_common::digest::sha256_hex(bytes)
    }

    #[tokio::test]
    async fn a_spec_is_fetched_once_checked_and_the_cache_stays_bounded() {
        let cache = SpecCache::new();
        let one = spec_json("b0");
        for _ in 0..3 {
            let bytes = one.clone();
            let spec = cache
                .get_or_fetch("m__b0", &digest(&one), || async { Ok(bytes) })
                .await
                .unwrap();
            assert_eq!(spec.batch, "b0");
        }
        assert_eq!(cache.fetches(), 1);
        let wrong = cache
            .get_or_fetch("m__x", &"0".repeat(64), || async { Ok(spec_json("x")) })
            .await
            .unwrap_err();
        assert!(matches!(wrong, SpecFetchError::Digest { .. }), "{wrong}");
        for i in 0..(MAX_CACHED_SPECS + 5) {
            let bytes = spec_json(&format!("b{i}"));
            let d = digest(&bytes);
            cache
                .get_or_fetch("m", &d, || async { Ok(bytes) })
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), MAX_CACHED_SPECS);
    }
}
