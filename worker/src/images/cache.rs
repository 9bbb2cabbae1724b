//! The task images this worker holds, and the disk budget of those it pulled.
//!
//! Every task image a unit needs goes through here: the need holds an [`ImageInUse`] guard
//! (by the reference the task names) from before the image is looked up until its evaluation
//! ends, whatever way it ends (a drop: returned, failed, cancelled or panicked). After a pull,
//! images this worker pulled are removed least-recently-used first until their sizes fit the
//! budget; an image a guard holds is never chosen. Images the worker only found on its daemon
//! (preloaded by the operator, or pulled by an earlier process) are reported as held but never
//! removed, nor is any image that is not a task image (the SAST image, the node image): only
//! what went through [`super::ImagePuller`]'s pulls is a candidate.
//!
//! Sizes are the daemon's `Size` of each image; layers shared between images count once per
//! image, so the sum overstates the disk used (the budget errs on the side of removing).
//!
//! The race between an eviction and a need that found the image present is closed by the
//! eviction lock: a need records its image under that lock after a fresh look at the daemon,
//! and an eviction picks and removes its victims under it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::RemoveImageOptionsBuilder;
use bollard::Docker;

/// The budget in bytes of the task images a worker pulled; unset, empty or `unlimited`: no
/// budget (upstream never removes an image).
pub const CACHE_BYTES_ENV: &str = "ASE_IMAGE_CACHE_BYTES";

/// An unreadable [`CACHE_BYTES_ENV`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{CACHE_BYTES_ENV}={value:?}: not a size (bytes, or a number with K, M, G or T: powers of 1024; or \"unlimited\")")]
pub struct BadBudget {
    pub value: String,
}

/// Reads a budget: `50G`, `512M`, `1073741824`; None/empty/`unlimited`: no budget.
pub fn budget_from(value: Option<&str>) -> Result<Option<u64>, BadBudget> {
    let bad = || BadBudget {
        value: value.unwrap_or_default().to_string(),
    };
    let v = match value.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(v) if v.eq_ignore_ascii_case("unlimited") => return Ok(None),
        Some(v) => v,
    };
    let v = v
        .strip_suffix(['B', 'b'])
        .filter(|s| s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(v);
    let (digits, shift) = match v.chars().last() {
        Some('K' | 'k') => (&v[..v.len() - 1], 10),
        Some('M' | 'm') => (&v[..v.len() - 1], 20),
        Some('G' | 'g') => (&v[..v.len() - 1], 30),
        Some('T' | 't') => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).map(Some).ok_or_else(bad)
}

/// One image the cache knows, as shown in stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// `sha256:…`
    pub id: String,
    /// The references tasks named it by, sorted.
    pub references: Vec<String>,
    pub size_bytes: u64,
    /// Guards holding it now.
    pub in_use: u32,
    /// Pulled by this worker (a candidate for eviction); false: found on the daemon.
    pub pulled: bool,
}

/// What the cache holds and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub budget_bytes: Option<u64>,
    /// Sum of the sizes of the images this worker pulled and still holds.
    pub pulled_bytes: u64,
    /// Sorted by id.
    pub images: Vec<CachedImage>,
    /// Images removed to meet the budget, and their sizes.
    pub evictions: u64,
    pub bytes_evicted: u64,
    /// Removals the daemon refused (a container of the image, another tag on it) or that
    /// failed; the image stays.
    pub evictions_refused: u64,
    /// Times the budget could not be met because every candidate was in use.
    pub over_budget_in_use: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    references: BTreeSet<String>,
    size: u64,
    pulled: bool,
    last_use: u64,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Entry>,
    /// Guards per reference, taken before the reference is resolved.
    in_use: HashMap<String, u32>,
    tick: u64,
    stats: CacheStats,
}

impl State {
    fn used(&self, e: &Entry) -> bool {
        e.references
            .iter()
            .any(|r| self.in_use.get(r).is_some_and(|n| *n > 0))
    }

    fn touch(&mut self, reference: &str) {
        self.tick += 1;
        let tick = self.tick;
        for e in self.by_id.values_mut() {
            if e.references.contains(reference) {
                e.last_use = tick;
            }
        }
    }

    fn pulled_bytes(&self) -> u64 {
        self.by_id
            .values()
            .filter(|e| e.pulled)
            .map(|e| e.size)
            .sum()
    }
}

pub(crate) struct CacheInner {
    docker: Docker,
    budget: Option<u64>,
    state: Mutex<State>,
    /// Held by an eviction for its whole pass and by a need while it records its image.
    evicting: tokio::sync::Mutex<()>,
}

/// The worker's task images; shared by its puller (cheap to clone).
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<CacheInner>,
}

/// A task image in use by one evaluation: never evicted while held; dropping it marks the
/// image's last use.
pub struct ImageInUse {
    inner: Arc<CacheInner>,
    reference: String,
}

impl std::fmt::Debug for ImageInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageInUse")
            .field("reference", &self.reference)
            .finish()
    }
}

impl Drop for ImageInUse {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(n) = st.in_use.get_mut(&self.reference) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.in_use.remove(&self.reference);
            }
        }
        st.touch(&self.reference);
    }
}

impl CacheInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ImageCache {
    pub fn new(docker: Docker, budget: Option<u64>) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                docker,
                budget,
                state: Mutex::new(State {
                    stats: CacheStats {
                        budget_bytes: budget,
                        ..CacheStats::default()
                    },
                    ..State::default()
                }),
                evicting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn budget(&self) -> Option<u64> {
        self.inner.budget
    }

    /// Marks `reference` in use until the guard is dropped (before it is even resolved, so a
    /// pass running meanwhile leaves its image alone).
    pub fn hold(&self, reference: &str) -> ImageInUse {
        let mut st = self.inner.lock();
        *st.in_use.entry(reference.to_string()).or_default() += 1;
        st.touch(reference);
        ImageInUse {
            inner: self.inner.clone(),
            reference: reference.to_string(),
        }
    }

    /// The eviction lock, for a need recording its image.
    pub(crate) async fn recording(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.evicting.lock().await
    }

    /// `reference` is image `id` of `size` bytes on the daemon; `pulled`: this worker pulled it.
    pub(crate) fn record(&self, reference: &str, id: &str, size: u64, pulled: bool) {
        if id.is_empty() {
            return;
        }
        let mut st = self.inner.lock();
        st.tick += 1;
        let tick = st.tick;
        let e = st.by_id.entry(id.to_string()).or_insert_with(|| Entry {
            references: BTreeSet::new(),
            size,
            pulled,
            last_use: tick,
        });
        e.references.insert(reference.to_string());
        e.pulled |= pulled;
        if size > 0 {
            e.size = size;
        }
        e.last_use = tick;
    }

    /// The references of every task image held (pulled or found), sorted: what the worker
    /// tells the coordinator.
    pub fn held(&self) -> Vec<String> {
        let st = self.inner.lock();
        let refs: BTreeSet<String> = st
            .by_id
            .values()
            .flat_map(|e| e.references.iter().cloned())
            .collect();
        refs.into_iter().collect()
    }

    pub fn stats(&self) -> CacheStats {
        let st = self.inner.lock();
        let mut out = st.stats.clone();
        out.pulled_bytes = st.pulled_bytes();
        out.images = st
            .by_id
            .iter()
            .map(|(id, e)| CachedImage {
                id: id.clone(),
                references: e.references.iter().cloned().collect(),
                size_bytes: e.size,
                in_use: e
                    .references
                    .iter()
                    .map(|r| st.in_use.get(r).copied().unwrap_or(0))
                    .sum(),
                pulled: e.pulled,
            })
            .collect();
        out.images.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Removes pulled images not in use, least recently used first, until the pulled ones fit
    /// the budget (or only images in use are left). Returns the ids removed.
    pub async fn enforce_budget(&self) -> Vec<String> {
        let Some(budget) = self.inner.budget else {
            return Vec::new();
        };
        let _pass = self.inner.evicting.lock().await;
        let mut removed = Vec::new();
        let mut refused: BTreeSet<String> = BTreeSet::new();
        // Each round removes or refuses one candidate: bounded by the images held.
        let rounds = self.inner.lock().by_id.len() + 1;
        for _ in 0..rounds {
            let victim = {
                let mut st = self.inner.lock();
                let held = st.pulled_bytes();
                if held <= budget {
                    break;
                }
                let pick = st
                    .by_id
                    .iter()
                    .filter(|(id, e)| e.pulled && !refused.contains(*id) && !st.used(e))
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(id, e)| (id.clone(), e.clone()));
                if pick.is_none() {
                    st.stats.over_budget_in_use += 1;
                    tracing::warn!(
                        held_bytes = held,
                        budget_bytes = budget,
                        "task images over budget; the rest are in use or cannot be removed"
                    );
                }
                pick
            };
            let Some((id, entry)) = victim else { break };
            let opts = RemoveImageOptionsBuilder::new()
                .force(false)
                .noprune(false)
                .build();
            match self.inner.docker.remove_image(&id, Some(opts), None).await {
                Ok(_) => {
                    let mut st = self.inner.lock();
                    st.by_id.remove(&id);
                    st.stats.evictions += 1;
                    st.stats.bytes_evicted += entry.size;
                    tracing::info!(
                        image = %id,
                        references = ?entry.references,
                        size_bytes = entry.size,
                        budget_bytes = budget,
                        "task image evicted (least recently used, over budget)"
                    );
                    removed.push(id);
                }
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    // Removed by someone else: no longer held.
                    self.inner.lock().by_id.remove(&id);
                }
                Err(e) => {
                    // 409: a container (even a stopped one) uses it, or another tag names it.
                    self.inner.lock().stats.evictions_refused += 1;
                    tracing::warn!(
                        image = %id,
                        references = ?entry.references,
                        error = %e,
                        "task image over budget not removed; kept"
                    );
                    refused.insert(id);
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_bytes_and_binary_suffixes() {
        assert_eq!(budget_from(None), Ok(None));
        assert_eq!(budget_from(Some(" ")), Ok(None));
        assert_eq!(budget_from(Some("unlimited")), Ok(None));
        assert_eq!(budget_from(Some("1000")), Ok(Some(1000)));
        assert_eq!(budget_from(Some("2K")), Ok(Some(2048)));
        assert_eq!(budget_from(Some("3MB")), Ok(Some(3 << 20)));
        assert_eq!(budget_from(Some("50G")), Ok(Some(50 << 30)));
        assert_eq!(budget_from(Some("1t")), Ok(Some(1 << 40)));
        assert!(budget_from(Some("lots")).is_err());
        assert!(budget_from(Some("-5")).is_err());
        assert!(budget_from(Some("99999999999T")).is_err());
        let e = budget_from(Some("12Q")).unwrap_err().to_string();
        assert!(e.contains(CACHE_BYTES_ENV) && e.contains("12Q"), "{e}");
    }
}
