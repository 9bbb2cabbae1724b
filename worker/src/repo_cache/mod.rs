//! The worker's disk cache of git repositories.
//!
//! Upstream copies every repo whole for every round (three full copies per task, 50 GB for the
//! v1 dataset). Here a repo costs one bare mirror, each (repo, commit) one shared tree, and each
//! unit only a hard-link farm of that tree plus real copies of the files it changes.
//!
//! Layout under the cache root:
//! - `mirrors/<key>.git`: one bare mirror per repo, cloned once, fetched when a revision is missing;
//! - `trees/<key>/<sha>` + `<sha>.meta.json`: the checked-out tree of one commit, shared read-only;
//! - `units/<name>`: per-unit hard-link farms, removed when the unit is dropped;
//! - `tmp/`: everything under construction. Entries are built here and renamed into place, so a
//!   half-done clone or checkout is never visible; `tmp/` and orphan units are swept at open.
//!
//! One process owns a cache root at a time (an exclusive lock on `root/.lock`); inside it, any
//! number of threads may ask for the same repo: one clones, the others wait for it. Entries in
//! use are pinned; the least recently used unpinned ones are evicted when the total size passes
//! the bound. The API is blocking (git runs as subprocesses): async callers use `spawn_blocking`.
//!
//! One concept per file:
//! - [`names`]: repo names (`owner/name` or an `https://` URL), their keys and source URLs;
//! - [`auth`]: the HTTPS token handed to git;
//! - [`pins`]: entries in use, one build per entry, the [`Pin`] guard;
//! - [`lru`]: eviction of unpinned entries past the size bound;
//! - [`mirror`]: bare mirrors, revisions and file reads;
//! - [`tree`]: the shared tree of one commit;
//! - [`unit_tree`]: a unit's private hard-link farm, [`UnitTree`];
//! - [`disk`]: disk usage and removal of directory trees;
//! - [`probe`]: whether a source has a commit, without a mirror (preflight).

mod auth;
mod disk;
mod lru;
mod mirror;
mod names;
mod pins;
pub mod probe;
mod tree;
mod unit_tree;

pub use pins::Pin;
pub use unit_tree::UnitTree;

use crate::git::GitError;
use disk::remove_tree;
use pins::State;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;

/// Settings of one cache.
#[derive(Debug, Clone)]
pub struct RepoCacheConfig {
    pub root: PathBuf,
    /// Bound on mirrors + trees, in bytes of disk actually used.
    pub max_bytes: u64,
    /// Where a repo comes from; `{repo}` is replaced by `owner/name`. Local paths and `file://`
    /// URLs work as well as `https://`.
    pub url_template: String,
    /// Name of an environment variable holding a token for HTTPS sources (e.g. `GITHUB_TOKEN`).
    /// The token is handed to git through its environment, never on a command line or in a log.
    pub token_env: Option<String>,
    /// Time limit of one git command (a clone of a large repo needs minutes).
    pub git_timeout: Duration,
    /// Clones running at once; more wait.
    pub max_concurrent_clones: usize,
}

impl RepoCacheConfig {
    pub const DEFAULT_URL_TEMPLATE: &'static str = "https://github.com/{repo}.git";

    pub fn new(root: impl Into<PathBuf>) -> Self {
        RepoCacheConfig {
            root: root.into(),
            max_bytes: 50 << 30,
            url_template: Self::DEFAULT_URL_TEMPLATE.to_string(),
            token_env: None,
            git_timeout: Duration::from_secs(1800),
            max_concurrent_clones: 2,
        }
    }
}

#[derive(Debug, Error)]
pub enum RepoCacheError {
    #[error("repo cache {root}: {source}")]
    Io {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("repo cache {0} is in use by another process (lock file {0}/.lock)")]
    Locked(PathBuf),
    #[error("repo name {0:?} is not of the form owner/name")]
    BadRepoName(String),
    #[error("repo {repo}: cannot clone from {url}: {source}")]
    Clone {
        repo: String,
        url: String,
        #[source]
        source: GitError,
    },
    #[error("repo {repo}: revision {rev:?} not found (after fetching from the source): {detail}")]
    UnknownRevision {
        repo: String,
        rev: String,
        detail: String,
    },
    #[error("repo {repo}: git failed: {source}")]
    Git {
        repo: String,
        #[source]
        source: GitError,
    },
    #[error("unit path {0:?} is not a relative path inside the tree")]
    BadUnitPath(String),
}

fn io_err(root: &Path) -> impl FnOnce(io::Error) -> RepoCacheError + '_ {
    move |source| RepoCacheError::Io {
        root: root.to_path_buf(),
        source,
    }
}

/// Counters for tests, metrics and benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheStats {
    pub clones: u64,
    pub fetches: u64,
    pub trees_built: u64,
    pub evictions: u64,
    pub bytes: u64,
}

struct Inner {
    cfg: RepoCacheConfig,
    state: Mutex<State>,
    changed: Condvar,
    /// Serialises fetches into one mirror (git's own ref locks would make the loser fail).
    fetch_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    nonce: AtomicU64,
    _lock_file: fs::File,
}

/// A handle on the cache; cheap to clone and share between threads.
#[derive(Clone)]
pub struct RepoCache {
    inner: Arc<Inner>,
}

impl RepoCache {
    /// Open (creating if needed) the cache at `cfg.root`: take the root's lock, sweep what a
    /// crashed process left under construction, and index the complete entries.
    pub fn open(mut cfg: RepoCacheConfig) -> Result<Self, RepoCacheError> {
        // git runs with other working directories (a mirror, a tree): a relative root would
        // name different places to it and to us.
        cfg.root = std::path::absolute(&cfg.root).map_err(io_err(&cfg.root))?;
        let root = cfg.root.clone();
        for sub in ["mirrors", "trees", "units", "tmp"] {
            fs::create_dir_all(root.join(sub)).map_err(io_err(&root))?;
        }
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(".lock"))
            .map_err(io_err(&root))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(RepoCacheError::Locked(root)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&root)(e)),
        }
        // Everything here is either half built or a unit of a dead process.
        for sub in ["tmp", "units"] {
            let dir = root.join(sub);
            for e in fs::read_dir(&dir).map_err(io_err(&root))?.flatten() {
                remove_tree(&e.path());
            }
        }
        let mut state = State::default();
        mirror::index_mirrors(&root, &mut state)?;
        tree::index_trees(&root, &mut state)?;
        Ok(RepoCache {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(state),
                changed: Condvar::new(),
                fetch_locks: Mutex::new(HashMap::new()),
                nonce: AtomicU64::new(0),
                _lock_file: lock_file,
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.cfg.root
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats.clone()
    }

    /// Repos whose mirror is on disk (a worker advertises them for repo affinity).
    pub fn cached_repos(&self) -> Vec<String> {
        self.lock().mirrored_repos()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bookkeeping behind; keep going.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number no other name made by this process has used.
    fn next_nonce(&self) -> u64 {
        self.inner.nonce.fetch_add(1, Ordering::Relaxed)
    }

    fn tmp_dir(&self, what: &str) -> PathBuf {
        let n = self.next_nonce();
        self.root()
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }
}
