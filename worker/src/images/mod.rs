//! Task images on demand: a v2 unit's image is pulled by this worker's daemon when it is not
//! there yet, and the unit runs the image by the digest the pull resolved (a tag moved after
//! the pull changes nothing for the units that follow on this worker).
//!
//! - [`reference`]: which registry, name and tag an image reference names;
//! - [`credentials`]: the worker's registry credentials (Docker config or environment);
//! - [`pull`]: one pull with retries, and the typed [`PullError`];
//! - [`probe`]: whether an image can be had, asked of its registry without a pull;
//! - [`progress`]: counters and the bounded progress of pulls under way;
//! - [`cache`]: the task images held, in use, and evicted to meet the disk budget.
//!
//! Concurrent needs of one image on one worker share one pull: the first starts it (in a
//! task of its own, so a need that is cancelled does not cancel the others' pull) and every
//! need awaits the same outcome.

pub mod cache;
pub mod credentials;
pub mod probe;
pub mod progress;
pub mod pull;
pub mod reference;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::Docker;
use futures_util::future::{BoxFuture, FutureExt, Shared};

pub use cache::{BadBudget, CacheStats, CachedImage, ImageCache, ImageInUse, CACHE_BYTES_ENV};
pub use credentials::{CredentialSource, CredentialsError, RegistryAuth};
pub use progress::{PullProgress, PullStats};
pub use pull::PullError;
pub use reference::ImageRef;

/// The platform dataset images are pulled for unless told otherwise: upstream's images are
/// built for it, and an arm64 host must ask for it explicitly (it runs them emulated).
pub const DEFAULT_PLATFORM: &str = "linux/amd64";
/// `os/arch[/variant]`; empty or `native`: the daemon's own platform.
pub const PLATFORM_ENV: &str = "ASE_IMAGE_PLATFORM";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSettings {
    /// None: the daemon's own platform.
    pub platform: Option<String>,
    pub credentials: CredentialSource,
    /// Requests per pull, first try included (bounded: the coordinator retries the unit).
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A pull whose stream says nothing for this long is abandoned (and retried).
    pub stall_timeout: Duration,
    /// One request's bound, however steadily it trickles (several GB at a slow link).
    pub attempt_timeout: Duration,
    /// Budget of the task images this worker pulled ([`CACHE_BYTES_ENV`]); None: unlimited.
    pub cache_bytes: Option<u64>,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            platform: Some(DEFAULT_PLATFORM.to_string()),
            credentials: CredentialSource::anonymous(),
            attempts: 4,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(300),
            attempt_timeout: Duration::from_secs(3600),
            cache_bytes: None,
        }
    }
}

impl PullSettings {
    /// The worker process's settings: credentials from its Docker config and environment,
    /// the platform from `ASE_IMAGE_PLATFORM`, the cache budget from `ASE_IMAGE_CACHE_BYTES`.
    pub fn from_env() -> Result<Self, BadBudget> {
        Ok(Self {
            platform: platform_from(std::env::var(PLATFORM_ENV).ok()),
            credentials: CredentialSource::from_env(),
            cache_bytes: cache::budget_from(std::env::var(CACHE_BYTES_ENV).ok().as_deref())?,
            ..Self::default()
        })
    }
}

/// Unset: [`DEFAULT_PLATFORM`]; empty or `native`: the daemon's own.
pub fn platform_from(value: Option<String>) -> Option<String> {
    match value.as_deref().map(str::trim) {
        None => Some(DEFAULT_PLATFORM.to_string()),
        Some("") | Some("native") => None,
        Some(p) => Some(p.to_string()),
    }
}

/// An image on the daemon, and what a container of it is to be created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// As the task names it.
    pub reference: String,
    /// `name@sha256:…` from the registry (the manifest's digest), or the image id
    /// (`sha256:…`) for an image that never came from a registry.
    pub pinned: String,
    pub id: String,
    /// The daemon's `Size` of the image.
    pub size_bytes: u64,
    /// Whether this need pulled it (false: it was there, or another need pulled it).
    pub pulled: bool,
}

type SharedPull = Shared<BoxFuture<'static, Result<ResolvedImage, PullError>>>;

#[derive(Default)]
struct StatsState {
    stats: PullStats,
    in_progress: HashMap<String, PullProgress>,
}

/// Where pulls report what they do.
#[derive(Default)]
pub(crate) struct StatsCell(Mutex<StatsState>);

impl StatsCell {
    fn with<R>(&self, f: impl FnOnce(&mut StatsState) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn attempt(&self, image: &str, attempt: u32) {
        self.with(|s| {
            s.stats.pull_attempts += 1;
            if s.in_progress.len() < progress::MAX_PULLS_SHOWN || s.in_progress.contains_key(image)
            {
                s.in_progress.insert(
                    image.to_string(),
                    PullProgress {
                        image: image.to_string(),
                        attempt,
                        ..Default::default()
                    },
                );
            }
        })
    }

    fn progress(&self, p: PullProgress) {
        self.with(|s| {
            if let Some(slot) = s.in_progress.get_mut(&p.image) {
                *slot = p;
            }
        })
    }

    fn attempt_ended(&self, p: PullProgress) {
        self.with(|s| {
            s.stats.bytes_downloaded += p.bytes_downloaded;
            s.stats.layers_done += p.layers_done as u64;
        })
    }

    /// Returns the last attempt's progress (for the log).
    fn finished(&self, image: &str, ok: bool) -> Option<PullProgress> {
        self.with(|s| {
            if ok {
                s.stats.pulls_total += 1;
            } else {
                s.stats.pulls_failed += 1;
            }
            s.in_progress.remove(image)
        })
    }
}

struct Inner {
    docker: Docker,
    settings: PullSettings,
    /// Pulls under way, by reference as the task names it.
    pulls: Mutex<HashMap<String, SharedPull>>,
    stats: StatsCell,
    cache: ImageCache,
}

/// Gets task images onto this worker's daemon; cheap to clone and share.
#[derive(Clone)]
pub struct ImagePuller {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImagePuller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImagePuller")
            .field("platform", &self.inner.settings.platform)
            .finish_non_exhaustive()
    }
}

impl ImagePuller {
    pub fn new(docker: Docker, settings: PullSettings) -> Self {
        let cache = ImageCache::new(docker.clone(), settings.cache_bytes);
        Self {
            inner: Arc::new(Inner {
                cache,
                docker,
                settings,
                pulls: Mutex::new(HashMap::new()),
                stats: StatsCell::default(),
            }),
        }
    }

    pub fn settings(&self) -> &PullSettings {
        &self.inner.settings
    }

    /// What the pulls did so far, and those under way.
    pub fn stats(&self) -> PullStats {
        self.inner.stats.with(|s| {
            let mut out = s.stats.clone();
            out.in_progress = s.in_progress.values().cloned().collect();
            out.in_progress.sort_by(|a, b| a.image.cmp(&b.image));
            out
        })
    }

    /// The task images this worker holds.
    pub fn cache(&self) -> &ImageCache {
        &self.inner.cache
    }

    /// The image `reference` on the daemon (pulled first when it is not there), held in use
    /// until the returned guard is dropped; after a pull, images not in use are evicted to
    /// meet the budget.
    pub async fn acquire(&self, reference: &str) -> Result<(ResolvedImage, ImageInUse), PullError> {
        let cache = &self.inner.cache;
        let guard = cache.hold(reference);
        let image = ImageRef::parse(reference)?;
        // An eviction may remove the image between `ensure` and the record (a need that found
        // it before a pass that started after): looked at again under the eviction lock, and
        // got again when it went (bounded: each time, the guard already protects it).
        for _ in 0..3 {
            let ensured = self.ensure(reference).await?;
            let recording = cache.recording().await;
            let Some(found) = resolve(&self.inner.docker, &image).await? else {
                continue;
            };
            cache.record(reference, &found.id, found.size_bytes, ensured.pulled);
            drop(recording);
            if ensured.pulled {
                cache.enforce_budget().await;
            }
            return Ok((
                ResolvedImage {
                    pulled: ensured.pulled,
                    ..found
                },
                guard,
            ));
        }
        Err(PullError::Daemon {
            image: reference.to_string(),
            op: "keep the image (removed again after each of 3 pulls)",
            detail: "removed by something else than this worker's cache".into(),
        })
    }

    /// The image `reference` on the daemon, pulled first when it is not there.
    pub async fn ensure(&self, reference: &str) -> Result<ResolvedImage, PullError> {
        let image = ImageRef::parse(reference)?;
        if let Some(found) = resolve(&self.inner.docker, &image).await? {
            self.inner.stats.with(|s| s.stats.already_present += 1);
            return Ok(found);
        }
        let (shared, started) = {
            let mut pulls = self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
            match pulls.get(&image.original) {
                Some(p) => (p.clone(), false),
                None => {
                    let p = self.start_pull(image.clone());
                    pulls.insert(image.original.clone(), p.clone());
                    (p, true)
                }
            }
        };
        if !started {
            self.inner.stats.with(|s| s.stats.shared_waits += 1);
        }
        let mut out = shared.await;
        if let (Ok(r), false) = (&mut out, started) {
            r.pulled = false;
        }
        out
    }

    fn start_pull(&self, image: ImageRef) -> SharedPull {
        let inner = self.inner.clone();
        let key = image.original.clone();
        let task = tokio::spawn(async move {
            let out = pull_and_resolve(&inner, &image).await;
            // Whatever the outcome, the next need looks afresh (a failure is not remembered:
            // the registry may be back).
            inner
                .pulls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&image.original);
            out
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(PullError::Daemon {
                    image: key,
                    op: "finish the pull (the pull task ended)",
                    detail: e.to_string(),
                })
            })
        }
        .boxed()
        .shared()
    }
}

async fn pull_and_resolve(inner: &Inner, image: &ImageRef) -> Result<ResolvedImage, PullError> {
    // A pull that ended between this need's look and its entry in the table left the image.
    if let Some(found) = resolve(&inner.docker, image).await? {
        inner.stats.with(|s| s.stats.already_present += 1);
        return Ok(found);
    }
    let auth = inner.settings.credentials.lookup(&image.registry)?;
    tracing::info!(
        image = %image.original,
        platform = ?inner.settings.platform,
        authenticated = auth.is_some(),
        "pulling the task image"
    );
    let started = std::time::Instant::now();
    let pulled = pull::pull_with_retries(
        &inner.docker,
        image,
        auth.as_ref(),
        &inner.settings,
        &inner.stats,
    )
    .await;
    let last = inner
        .stats
        .finished(&image.original, pulled.is_ok())
        .unwrap_or_default();
    pulled?;
    match resolve(&inner.docker, image).await? {
        Some(mut r) => {
            r.pulled = true;
            // This worker pulled it: a candidate for eviction from now on (even when the need
            // that started the pull is gone).
            inner
                .cache
                .record(&image.original, &r.id, r.size_bytes, true);
            tracing::info!(
                image = %image.original,
                pinned = %r.pinned,
                attempts = last.attempt,
                layers = last.layers_seen,
                bytes_downloaded = last.bytes_downloaded,
                seconds = started.elapsed().as_secs_f64(),
                "task image pulled"
            );
            Ok(r)
        }
        None => Err(PullError::Daemon {
            image: image.original.clone(),
            op: "find the image it just pulled",
            detail: "not on the daemon after a successful pull".into(),
        }),
    }
}

/// The image as the daemon has it, or None when it has not.
pub async fn resolve(
    docker: &Docker,
    image: &ImageRef,
) -> Result<Option<ResolvedImage>, PullError> {
    let info = match docker.inspect_image(&image.original).await {
        Ok(info) => info,
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => {
            return Err(PullError::Daemon {
                image: image.original.clone(),
                op: "inspect the image",
                detail: e.to_string(),
            })
        }
    };
    let id = info.id.unwrap_or_default();
    let size_bytes = info.size.map_or(0, |s| s.max(0) as u64);
    let repository = image.repository();
    let repo_digest = info.repo_digests.unwrap_or_default().into_iter().find(|d| {
        d.split_once('@')
            .is_some_and(|(name, _)| name == repository || name == image.name)
    });
    let pinned = match (image.is_digest, repo_digest) {
        (true, _) => image.original.clone(),
        (false, Some(d)) => d,
        (false, None) if !id.is_empty() => id.clone(),
        (false, None) => image.original.clone(),
    };
    Ok(Some(ResolvedImage {
        reference: image.original.clone(),
        pinned,
        id,
        size_bytes,
        pulled: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_defaults_to_amd64_and_can_be_the_daemons_own() {
        assert_eq!(platform_from(None).as_deref(), Some("linux/amd64"));
        assert_eq!(platform_from(Some("native".into())), None);
        assert_eq!(platform_from(Some(String::new())), None);
        assert_eq!(
            platform_from(Some("linux/arm64".into())).as_deref(),
            Some("linux/arm64")
        );
    }
}
