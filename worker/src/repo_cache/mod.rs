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

use crate::git::{run_git, GitError};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum EntryKey {
    Mirror(String),
    Tree(String, String),
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    bytes: u64,
    last_used: u64,
    pins: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<EntryKey, Entry>,
    building: HashSet<EntryKey>,
    clones_running: usize,
    clock: u64,
    stats: CacheStats,
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

/// Directory-safe, collision-free name for a repo.
fn repo_key(repo: &str) -> String {
    let digest = hex::encode(&Sha256::digest(repo.as_bytes())[..6]);
    let readable: String = repo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{readable}-{digest}")
}

/// A few upstream v2 tasks name their repo by a full `https://` URL (GitLab) instead of
/// `owner/name`: such a repo is cloned from that URL as it is.
fn is_url_repo(repo: &str) -> bool {
    repo.starts_with("https://")
}

fn validate_repo_name(repo: &str) -> Result<(), RepoCacheError> {
    if is_url_repo(repo) {
        let rest = &repo["https://".len()..];
        let host = rest.split('/').next().unwrap_or("");
        let ok = repo.len() <= 512
            && !host.is_empty()
            && !host.contains('@')
            && rest.contains('/')
            && !rest.split('/').any(|seg| seg == "..")
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./~:%+".contains(c));
        return if ok {
            Ok(())
        } else {
            Err(RepoCacheError::BadRepoName(repo.to_string()))
        };
    }
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        _ => Err(RepoCacheError::BadRepoName(repo.to_string())),
    }
}

/// Disk blocks used by a directory tree (hard links counted once per walk, symlinks not followed).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
        if seen.insert((md.dev(), md.ino())) {
            total += md.blocks() * 512;
        }
    }
    total
}

const MIRROR_MARKER: &str = "ase-mirror-complete";

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
        for e in fs::read_dir(root.join("mirrors"))
            .map_err(io_err(&root))?
            .flatten()
        {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            let Some(key) = name.strip_suffix(".git") else {
                remove_tree(&path);
                continue;
            };
            let repo = match fs::read_to_string(path.join(MIRROR_MARKER)) {
                Ok(repo) if repo_key(repo.trim()) == key => repo.trim().to_string(),
                _ => {
                    tracing::warn!(path = %path.display(), "removing incomplete mirror");
                    remove_tree(&path);
                    continue;
                }
            };
            let bytes = disk_usage(&path);
            state.stats.bytes += bytes;
            state.entries.insert(
                EntryKey::Mirror(repo),
                Entry {
                    path,
                    bytes,
                    last_used: 0,
                    pins: 0,
                },
            );
        }
        for repo_dir in fs::read_dir(root.join("trees"))
            .map_err(io_err(&root))?
            .flatten()
        {
            let Ok(children) = fs::read_dir(repo_dir.path()) else {
                continue;
            };
            for e in children.flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "json") {
                    continue;
                }
                let meta = path.with_extension("meta.json");
                let parsed = fs::read(&meta)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<TreeMeta>(&b).ok());
                match parsed {
                    Some(m) if repo_key(&m.repo) == repo_dir.file_name().to_string_lossy() => {
                        state.stats.bytes += m.bytes;
                        state.entries.insert(
                            EntryKey::Tree(m.repo, m.sha),
                            Entry {
                                path,
                                bytes: m.bytes,
                                last_used: 0,
                                pins: 0,
                            },
                        );
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "removing tree without metadata");
                        remove_tree(&path);
                        let _ = fs::remove_file(&meta);
                    }
                }
            }
        }
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
        let st = self.lock();
        let mut v: Vec<String> = st
            .entries
            .keys()
            .filter_map(|k| match k {
                EntryKey::Mirror(r) => Some(r.clone()),
                EntryKey::Tree(..) => None,
            })
            .collect();
        v.sort();
        v
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bookkeeping behind; keep going.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tmp_dir(&self, what: &str) -> PathBuf {
        let n = self.inner.nonce.fetch_add(1, Ordering::Relaxed);
        self.root()
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    fn source_url(&self, repo: &str) -> String {
        if is_url_repo(repo) {
            return repo.to_string();
        }
        self.inner.cfg.url_template.replace("{repo}", repo)
    }

    /// Environment that hands an HTTPS token to git without putting it on a command line.
    /// Only for URLs made from the template: a repo given as its own URL may live on another
    /// host, which must never see the token.
    fn auth_env(&self, url: &str) -> Vec<(String, String)> {
        if is_url_repo(url) && !self.inner.cfg.url_template.starts_with("https://") {
            return vec![];
        }
        let template_host = self
            .inner
            .cfg
            .url_template
            .strip_prefix("https://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let url_host = url
            .strip_prefix("https://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        if template_host != url_host {
            return vec![];
        }
        let Some(var) = &self.inner.cfg.token_env else {
            return vec![];
        };
        let Ok(token) = std::env::var(var) else {
            return vec![];
        };
        if token.is_empty() || !url.starts_with("https://") {
            return vec![];
        }
        let basic = base64_encode(format!("x-access-token:{token}").as_bytes());
        vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!("Authorization: Basic {basic}"),
            ),
        ]
    }

    /// Wait until `key` is present (pinning it and returning its path) or nobody builds it
    /// (claiming the build and returning `None`).
    fn claim_or_pin(&self, key: &EntryKey) -> Option<PathBuf> {
        let mut st = self.lock();
        loop {
            st.clock += 1;
            let now = st.clock;
            if let Some(e) = st.entries.get_mut(key) {
                e.pins += 1;
                e.last_used = now;
                return Some(e.path.clone());
            }
            if !st.building.contains(key) {
                st.building.insert(key.clone());
                return None;
            }
            st = self
                .inner
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn finish_build(&self, key: &EntryKey, built: Option<(PathBuf, u64)>) {
        let mut st = self.lock();
        st.building.remove(key);
        if let Some((path, bytes)) = built {
            st.clock += 1;
            let now = st.clock;
            st.stats.bytes += bytes;
            st.entries.insert(
                key.clone(),
                Entry {
                    path,
                    bytes,
                    last_used: now,
                    pins: 1,
                },
            );
        }
        let victims = self.pick_victims(&mut st);
        drop(st);
        self.inner.changed.notify_all();
        for p in victims {
            remove_tree(&p);
            if let Some(meta) = tree_meta_path(&p) {
                let _ = fs::remove_file(meta);
            }
        }
    }

    fn unpin(&self, key: &EntryKey) {
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(key) {
            e.pins = e.pins.saturating_sub(1);
        }
        let victims = self.pick_victims(&mut st);
        drop(st);
        for p in victims {
            remove_tree(&p);
            if let Some(meta) = tree_meta_path(&p) {
                let _ = fs::remove_file(meta);
            }
        }
    }

    /// Least recently used unpinned entries to drop until the cache fits its bound. The caller
    /// deletes them after releasing the lock (deleting a large tree takes a while).
    fn pick_victims(&self, st: &mut State) -> Vec<PathBuf> {
        let mut victims = Vec::new();
        while st.stats.bytes > self.inner.cfg.max_bytes {
            let Some(key) = st
                .entries
                .iter()
                .filter(|(_, e)| e.pins == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let e = st.entries.remove(&key).expect("key just found");
            st.stats.bytes -= e.bytes;
            st.stats.evictions += 1;
            tracing::info!(path = %e.path.display(), bytes = e.bytes, "evicting from repo cache");
            // Move it out of sight at once so that nothing picks up a half-deleted entry.
            let grave = self.tmp_dir("evicted");
            match fs::rename(&e.path, &grave) {
                Ok(()) => {
                    if let Some(meta) = tree_meta_path(&e.path) {
                        let _ = fs::remove_file(meta);
                    }
                    victims.push(grave)
                }
                Err(_) => victims.push(e.path),
            }
        }
        victims
    }

    /// The bare mirror of `repo`, cloned on first use. Pinned until the guard is dropped.
    fn mirror(&self, repo: &str) -> Result<Pin, RepoCacheError> {
        validate_repo_name(repo)?;
        let key = EntryKey::Mirror(repo.to_string());
        if let Some(path) = self.claim_or_pin(&key) {
            return Ok(Pin {
                cache: self.clone(),
                key,
                path,
            });
        }
        let built = self.clone_mirror(repo);
        match built {
            Ok((path, bytes)) => {
                self.finish_build(&key, Some((path.clone(), bytes)));
                Ok(Pin {
                    cache: self.clone(),
                    key,
                    path,
                })
            }
            Err(e) => {
                self.finish_build(&key, None);
                Err(e)
            }
        }
    }

    fn clone_mirror(&self, repo: &str) -> Result<(PathBuf, u64), RepoCacheError> {
        {
            let mut st = self.lock();
            while st.clones_running >= self.inner.cfg.max_concurrent_clones.max(1) {
                st = self
                    .inner
                    .changed
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
            }
            st.clones_running += 1;
        }
        let result = self.clone_mirror_unbounded(repo);
        {
            let mut st = self.lock();
            st.clones_running -= 1;
            if result.is_ok() {
                st.stats.clones += 1;
            }
        }
        self.inner.changed.notify_all();
        result
    }

    fn clone_mirror_unbounded(&self, repo: &str) -> Result<(PathBuf, u64), RepoCacheError> {
        let root = self.root().to_path_buf();
        let url = self.source_url(repo);
        let tmp = self.tmp_dir("clone");
        let target = tmp.join("mirror.git");
        fs::create_dir_all(&tmp).map_err(io_err(&root))?;
        tracing::info!(repo, url = %url, "cloning mirror");
        let target_s = target.to_string_lossy().to_string();
        let res = run_git(
            None,
            &["clone", "--mirror", "--quiet", "--", &url, &target_s],
            &self.auth_env(&url),
            self.inner.cfg.git_timeout,
        );
        if let Err(source) = res {
            remove_tree(&tmp);
            return Err(RepoCacheError::Clone {
                repo: repo.to_string(),
                url,
                source,
            });
        }
        // The marker says "complete"; only a complete clone is ever renamed into mirrors/.
        fs::write(target.join(MIRROR_MARKER), repo).map_err(io_err(&root))?;
        let bytes = disk_usage(&target);
        let final_path = root.join("mirrors").join(format!("{}.git", repo_key(repo)));
        if final_path.exists() {
            remove_tree(&final_path);
        }
        fs::rename(&target, &final_path).map_err(io_err(&root))?;
        remove_tree(&tmp);
        Ok((final_path, bytes))
    }

    fn fetch_lock(&self, repo: &str) -> Arc<Mutex<()>> {
        let mut m = self
            .inner
            .fetch_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.entry(repo.to_string()).or_default().clone()
    }

    fn rev_parse(&self, repo: &str, mirror: &Path, rev: &str) -> Option<String> {
        let spec = format!("{rev}^{{commit}}");
        run_git(
            Some(mirror),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ],
            &[],
            self.inner.cfg.git_timeout,
        )
        .ok()
        .map(|o| o.stdout.trim().to_string())
        .filter(|s| s.len() >= 40)
        .inspect(|sha| tracing::debug!(repo, rev, sha, "resolved"))
    }

    /// Resolve `rev` (a sha, `sha^`, a tag, a branch) of `repo` to a commit id, cloning the mirror
    /// on first use and fetching when the revision is not there yet (first `branch_origin`, when
    /// the task names one, then every ref, then the revision itself).
    pub fn resolve(
        &self,
        repo: &str,
        rev: &str,
        branch_origin: Option<&str>,
    ) -> Result<String, RepoCacheError> {
        if rev.is_empty() || rev.starts_with('-') || rev.chars().any(|c| c.is_control()) {
            return Err(RepoCacheError::UnknownRevision {
                repo: repo.to_string(),
                rev: rev.to_string(),
                detail: "not a revision".into(),
            });
        }
        let mirror = self.mirror(repo)?;
        if let Some(sha) = self.rev_parse(repo, &mirror.path, rev) {
            return Ok(sha);
        }
        let lock = self.fetch_lock(repo);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have fetched while we waited.
        if let Some(sha) = self.rev_parse(repo, &mirror.path, rev) {
            return Ok(sha);
        }
        let url = self.source_url(repo);
        let env = self.auth_env(&url);
        let t = self.inner.cfg.git_timeout;
        let mut attempts: Vec<Vec<String>> = Vec::new();
        if let Some(b) = branch_origin.filter(|b| !b.is_empty() && !b.starts_with('-')) {
            attempts.push(vec![
                "fetch".into(),
                "--quiet".into(),
                "origin".into(),
                format!("+refs/heads/{b}:refs/heads/{b}"),
            ]);
        }
        attempts.push(vec![
            "fetch".into(),
            "--quiet".into(),
            "--prune".into(),
            "origin".into(),
        ]);
        let base = rev.trim_end_matches(['^', '~']).to_string();
        if base.len() >= 7 && base.chars().all(|c| c.is_ascii_hexdigit()) {
            // Servers that allow fetching reachable commits by id (GitHub does).
            attempts.push(vec![
                "fetch".into(),
                "--quiet".into(),
                "origin".into(),
                base,
            ]);
        }
        let mut detail = String::new();
        for args in attempts {
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            match run_git(Some(&mirror.path), &argv, &env, t) {
                Ok(_) => self.lock().stats.fetches += 1,
                Err(e) => detail = e.to_string(),
            }
            if let Some(sha) = self.rev_parse(repo, &mirror.path, rev) {
                return Ok(sha);
            }
        }
        Err(RepoCacheError::UnknownRevision {
            repo: repo.to_string(),
            rev: rev.to_string(),
            detail: if detail.is_empty() {
                "no such revision in the source".into()
            } else {
                detail
            },
        })
    }

    /// The content of `path` in `repo` at commit `sha` (a full id from
    /// [`RepoCache::resolve`]), read from the mirror without building a tree; `None` when the
    /// file does not exist at that commit.
    pub fn show_file(
        &self,
        repo: &str,
        sha: &str,
        path: &str,
    ) -> Result<Option<String>, RepoCacheError> {
        checked_rel(path)?;
        if sha.len() < 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RepoCacheError::UnknownRevision {
                repo: repo.to_string(),
                rev: sha.to_string(),
                detail: "files are read at full commit ids; resolve the revision first".into(),
            });
        }
        let mirror = self.mirror(repo)?;
        let t = self.inner.cfg.git_timeout;
        let spec = format!("{sha}:{path}");
        let exists = run_git(
            Some(&mirror.path),
            &["cat-file", "-e", "--end-of-options", &spec],
            &[],
            t,
        )
        .is_ok();
        if !exists {
            return Ok(None);
        }
        run_git(
            Some(&mirror.path),
            &["cat-file", "blob", "--end-of-options", &spec],
            &[],
            t,
        )
        .map(|o| Some(o.stdout))
        .map_err(|source| RepoCacheError::Git {
            repo: repo.to_string(),
            source,
        })
    }

    /// The shared tree of `repo` at commit `sha` (a full id from [`RepoCache::resolve`]), built
    /// once. Read it, never write it: units write through [`UnitTree`].
    pub fn tree(&self, repo: &str, sha: &str) -> Result<Pin, RepoCacheError> {
        validate_repo_name(repo)?;
        if sha.len() < 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RepoCacheError::UnknownRevision {
                repo: repo.to_string(),
                rev: sha.to_string(),
                detail: "trees are keyed by full commit ids; resolve the revision first".into(),
            });
        }
        let key = EntryKey::Tree(repo.to_string(), sha.to_string());
        if let Some(path) = self.claim_or_pin(&key) {
            return Ok(Pin {
                cache: self.clone(),
                key,
                path,
            });
        }
        let built = self.build_tree(repo, sha);
        match built {
            Ok((path, bytes)) => {
                self.finish_build(&key, Some((path.clone(), bytes)));
                Ok(Pin {
                    cache: self.clone(),
                    key,
                    path,
                })
            }
            Err(e) => {
                self.finish_build(&key, None);
                Err(e)
            }
        }
    }

    fn build_tree(&self, repo: &str, sha: &str) -> Result<(PathBuf, u64), RepoCacheError> {
        let root = self.root().to_path_buf();
        let mirror = self.mirror(repo)?;
        let tmp = self.tmp_dir("tree");
        let work = tmp.join("tree");
        fs::create_dir_all(&work).map_err(io_err(&root))?;
        // read-tree + checkout-index into a private index: exact tree contents (unlike
        // `git archive`, which honours export-ignore), and no shared index or HEAD touched, so
        // several trees of one mirror can be built at once.
        let index = tmp.join("index");
        let env = vec![(
            "GIT_INDEX_FILE".to_string(),
            index.to_string_lossy().to_string(),
        )];
        let t = self.inner.cfg.git_timeout;
        let git = |args: &[&str]| {
            run_git(Some(&mirror.path), args, &env, t).map_err(|source| RepoCacheError::Git {
                repo: repo.to_string(),
                source,
            })
        };
        let work_s = work.to_string_lossy().to_string();
        let res = git(&["read-tree", "--end-of-options", sha])
            .and_then(|_| git(&["--work-tree", &work_s, "checkout-index", "--all", "--force"]));
        if let Err(e) = res {
            remove_tree(&tmp);
            return Err(e);
        }
        make_read_only(&work);
        let bytes = disk_usage(&work);
        let repo_dir = root.join("trees").join(repo_key(repo));
        fs::create_dir_all(&repo_dir).map_err(io_err(&root))?;
        let final_path = repo_dir.join(sha);
        let meta = TreeMeta {
            repo: repo.to_string(),
            sha: sha.to_string(),
            bytes,
        };
        let meta_tmp = tmp.join("meta.json");
        fs::write(
            &meta_tmp,
            serde_json::to_vec(&meta).expect("meta serialises"),
        )
        .map_err(io_err(&root))?;
        if final_path.exists() {
            remove_tree(&final_path);
        }
        // Tree first, metadata second: a tree without metadata is swept at the next open.
        fs::rename(&work, &final_path).map_err(io_err(&root))?;
        fs::rename(&meta_tmp, final_path.with_extension("meta.json")).map_err(io_err(&root))?;
        remove_tree(&tmp);
        self.lock().stats.trees_built += 1;
        Ok((final_path, bytes))
    }

    /// A private tree for one unit: a hard-link farm of the shared tree (no file data copied).
    /// Files the unit changes must go through [`UnitTree::write`] or be
    /// [`UnitTree::unshare`]d first, so the shared tree is never modified.
    pub fn unit(&self, repo: &str, sha: &str, unit_name: &str) -> Result<UnitTree, RepoCacheError> {
        let tree = self.tree(repo, sha)?;
        let root = self.root().to_path_buf();
        let safe: String = unit_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        let n = self.inner.nonce.fetch_add(1, Ordering::Relaxed);
        let path = root
            .join("units")
            .join(format!("{safe}-{}-{n}", std::process::id()));
        link_farm(&tree.path, &path).map_err(|e| {
            remove_tree(&path);
            io_err(&root)(e)
        })?;
        Ok(UnitTree {
            path,
            tree,
            changed: Default::default(),
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TreeMeta {
    repo: String,
    sha: String,
    bytes: u64,
}

fn tree_meta_path(tree: &Path) -> Option<PathBuf> {
    let parent = tree.parent()?;
    (parent.parent()?.file_name()? == "trees").then(|| tree.with_extension("meta.json"))
}

/// A cache entry in use: it will not be evicted until this is dropped.
pub struct Pin {
    cache: RepoCache,
    key: EntryKey,
    path: PathBuf,
}

impl Pin {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.cache.unpin(&self.key);
    }
}

/// One unit's working tree. Removed from disk when dropped.
pub struct UnitTree {
    path: PathBuf,
    tree: Pin,
    changed: std::collections::BTreeSet<String>,
}

fn checked_rel(rel: &str) -> Result<PathBuf, RepoCacheError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(s) if s != ".git"));
    ok.then(|| p.to_path_buf())
        .ok_or_else(|| RepoCacheError::BadUnitPath(rel.to_string()))
}

impl UnitTree {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared tree this unit was made from (read-only).
    pub fn base(&self) -> &Path {
        self.tree.path()
    }

    /// Files this unit has written or unshared, as relative paths.
    pub fn changed_files(&self) -> Vec<String> {
        self.changed.iter().cloned().collect()
    }

    /// Check that `rel` names a place inside the unit tree reached without symlinks.
    fn resolve_inside(&self, rel: &str) -> Result<PathBuf, RepoCacheError> {
        let relp = checked_rel(rel)?;
        let mut cur = self.path.clone();
        let n = relp.components().count();
        for (i, c) in relp.components().enumerate() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(RepoCacheError::BadUnitPath(rel.to_string()))
                }
                Ok(md) if i + 1 < n && !md.is_dir() => {
                    return Err(RepoCacheError::BadUnitPath(rel.to_string()))
                }
                _ => {}
            }
        }
        Ok(cur)
    }

    /// Give `rel` its own copy of the data (breaking the hard link), so that a tool may modify
    /// it in place. Returns the absolute path.
    pub fn unshare(&mut self, rel: &str) -> Result<PathBuf, RepoCacheError> {
        let abs = self.resolve_inside(rel)?;
        let root = self.path.clone();
        if abs.is_file() {
            let data = fs::read(&abs).map_err(io_err(&root))?;
            replace_file(&abs, &data).map_err(io_err(&root))?;
        }
        self.changed.insert(rel.to_string());
        Ok(abs)
    }

    /// Write `rel` with `data` (new file or replacement), never touching the shared tree.
    pub fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), RepoCacheError> {
        let abs = self.resolve_inside(rel)?;
        let root = self.path.clone();
        if let Some(parent) = abs.parent() {
            fs::create_dir_all(parent).map_err(io_err(&root))?;
        }
        replace_file(&abs, data).map_err(io_err(&root))?;
        self.changed.insert(rel.to_string());
        Ok(())
    }

    /// Remove `rel` from this unit only (the shared tree keeps its link). Missing is fine.
    pub fn remove(&mut self, rel: &str) -> Result<(), RepoCacheError> {
        let abs = self.resolve_inside(rel)?;
        match fs::remove_file(&abs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&self.path)(e)),
        }
        self.changed.insert(rel.to_string());
        Ok(())
    }

    pub fn read(&self, rel: &str) -> Result<Vec<u8>, RepoCacheError> {
        let abs = self.resolve_inside(rel)?;
        fs::read(&abs).map_err(io_err(&self.path))
    }
}

impl Drop for UnitTree {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Write through a temporary file and a rename: the old inode (shared by hard links) is left
/// untouched, and readers never see a half-written file.
fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() | 0o200)
        .unwrap_or(0o644);
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    io::Write::write_all(&mut tmp, data)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Mirror `src` into `dst` with directories created, files hard-linked (copied when the file
/// system refuses links) and symlinks recreated verbatim (never followed).
fn link_farm(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((s, d)) = stack.pop() {
        for e in fs::read_dir(&s)? {
            let e = e?;
            let ft = e.file_type()?;
            let target = d.join(e.file_name());
            if ft.is_dir() {
                fs::create_dir(&target)?;
                stack.push((e.path(), target));
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(e.path())?, &target)?;
            } else if fs::hard_link(e.path(), &target).is_err() {
                fs::copy(e.path(), &target)?;
            }
        }
    }
    Ok(())
}

/// Shared trees are read-only so that a tool run without root cannot change them by accident.
fn make_read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if md.is_file() {
            let mode = md.permissions().mode() & !0o222;
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
        }
    }
}

fn remove_tree(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            if let Err(e) = fs::remove_dir_all(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove directory");
            }
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

pub(crate) fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(i.as_bytes()), o);
        }
    }

    #[test]
    fn repo_names_are_checked_and_keys_distinct() {
        assert!(validate_repo_name("cacti/cacti").is_ok());
        for bad in ["cacti", "../x", "a/..", "a/b/c", "a/b c", "/a"] {
            assert!(validate_repo_name(bad).is_err(), "{bad}");
        }
        assert_ne!(repo_key("a/b_c"), repo_key("a_b/c"));
        assert!(validate_repo_name("https://gitlab.com/group/sub/project.git").is_ok());
        for bad in [
            "https://",
            "https://host",
            "https://user:pw@host/x",
            "https://host/../x",
            "https://host/a b",
            "http://host/x",
        ] {
            assert!(validate_repo_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_repos_are_cloned_from_themselves_and_never_get_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RepoCacheConfig::new(dir.path());
        cfg.token_env = Some("ASE_TEST_URL_REPO_TOKEN".into());
        std::env::set_var("ASE_TEST_URL_REPO_TOKEN", "secret-token");
        let cache = RepoCache::open(cfg).unwrap();
        let gitlab = "https://gitlab.com/group/project.git";
        assert_eq!(cache.source_url(gitlab), gitlab);
        assert!(cache.auth_env(&cache.source_url(gitlab)).is_empty());
        let github = cache.source_url("owner/name");
        assert_eq!(github, "https://github.com/owner/name.git");
        assert!(!cache.auth_env(&github).is_empty());
        // A URL repo on the template's own host may use it.
        assert!(!cache
            .auth_env("https://github.com/other/repo.git")
            .is_empty());
    }

    #[test]
    fn unit_paths_must_stay_inside() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".git/config",
            "a/.git/x",
        ] {
            assert!(checked_rel(bad).is_err(), "{bad}");
        }
        assert!(checked_rel("src/a.php").is_ok());
    }
}
