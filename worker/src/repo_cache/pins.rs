//! The cache's bookkeeping of entries (mirrors and trees): which are on disk, which are in use
//! (pinned, so never evicted), and which are being built, so that of several threads asking
//! for the same entry one builds it and the others wait for it.

use super::{RepoCache, RepoCacheError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum EntryKey {
    Mirror(String),
    Tree(String, String),
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) path: PathBuf,
    pub(super) bytes: u64,
    pub(super) last_used: u64,
    pub(super) pins: usize,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) entries: HashMap<EntryKey, Entry>,
    pub(super) building: HashSet<EntryKey>,
    pub(super) clones_running: usize,
    pub(super) clock: u64,
    pub(super) stats: super::CacheStats,
}

impl State {
    /// Records an entry found complete on disk when the cache is opened (never used yet).
    pub(super) fn insert_found(&mut self, key: EntryKey, path: PathBuf, bytes: u64) {
        self.stats.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                path,
                bytes,
                last_used: 0,
                pins: 0,
            },
        );
    }

    pub(super) fn mirrored_repos(&self) -> Vec<String> {
        let mut v: Vec<String> = self
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
}

impl RepoCache {
    /// The entry `key`, pinned: the one on disk, or built by `build` (returning its path and
    /// size) when nobody has it; a thread asking while another builds it waits for that build.
    pub(super) fn pinned_or_built(
        &self,
        key: EntryKey,
        build: impl FnOnce() -> Result<(PathBuf, u64), RepoCacheError>,
    ) -> Result<Pin, RepoCacheError> {
        if let Some(path) = self.claim_or_pin(&key) {
            return Ok(Pin {
                cache: self.clone(),
                key,
                path,
            });
        }
        match build() {
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
        super::lru::remove_victims(victims);
    }

    fn unpin(&self, key: &EntryKey) {
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(key) {
            e.pins = e.pins.saturating_sub(1);
        }
        let victims = self.pick_victims(&mut st);
        drop(st);
        super::lru::remove_victims(victims);
    }
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
