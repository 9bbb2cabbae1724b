//! Eviction: when mirrors and trees together pass the cache's bound, the least recently used
//! unpinned entries go first.

use super::disk::remove_tree;
use super::pins::State;
use super::tree::tree_meta_path;
use super::RepoCache;
use std::fs;
use std::path::PathBuf;

impl RepoCache {
    /// Least recently used unpinned entries to drop until the cache fits its bound. The caller
    /// deletes them with [`remove_victims`] after releasing the lock (deleting a large tree
    /// takes a while).
    pub(super) fn pick_victims(&self, st: &mut State) -> Vec<PathBuf> {
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
}

/// Deletes what [`RepoCache::pick_victims`] chose (with a tree's metadata file).
pub(super) fn remove_victims(victims: Vec<PathBuf>) {
    for p in victims {
        remove_tree(&p);
        if let Some(meta) = tree_meta_path(&p) {
            let _ = fs::remove_file(meta);
        }
    }
}
