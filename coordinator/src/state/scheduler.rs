//! Which queued unit a worker gets: queues per (run, phase), split by repo for affinity.
//!
//! A worker first gets units of repos it caches (no clone, warm mirror); then units of repos no
//! live worker caches (someone has to clone them, and nobody is better placed); then anything,
//! so no worker idles while work is queued and no repo starves.

use std::collections::{BTreeMap, HashSet, VecDeque};

/// Queued unit indexes of one phase of one run, by repo, FIFO within a repo.
#[derive(Debug, Default, Clone)]
pub struct RepoQueues {
    by_repo: BTreeMap<String, VecDeque<u32>>,
    len: usize,
}

impl RepoQueues {
    pub fn push(&mut self, repo: &str, unit: u32) {
        self.by_repo
            .entry(repo.to_string())
            .or_default()
            .push_back(unit);
        self.len += 1;
    }

    /// Puts a unit back at the head of its repo's queue (a retry goes first).
    pub fn push_front(&mut self, repo: &str, unit: u32) {
        self.by_repo
            .entry(repo.to_string())
            .or_default()
            .push_front(unit);
        self.len += 1;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pop_repo(&mut self, repo: &str) -> Option<u32> {
        let q = self.by_repo.get_mut(repo)?;
        let unit = q.pop_front()?;
        if q.is_empty() {
            self.by_repo.remove(repo);
        }
        self.len -= 1;
        Some(unit)
    }

    /// The next unit for a worker caching `cached`, given the repos some live worker caches.
    pub fn pop_for(
        &mut self,
        cached: &HashSet<String>,
        cached_by_anyone: &HashSet<String>,
    ) -> Option<(String, u32)> {
        let pick = self
            .by_repo
            .keys()
            .find(|r| cached.contains(*r))
            .or_else(|| self.by_repo.keys().find(|r| !cached_by_anyone.contains(*r)))
            .or_else(|| self.by_repo.keys().next())
            .cloned()?;
        let unit = self.pop_repo(&pick)?;
        Some((pick, unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefers_cached_then_uncached_by_anyone_then_anything() {
        let mut q = RepoQueues::default();
        q.push("a/a", 0);
        q.push("b/b", 1);
        q.push("c/c", 2);
        // Worker caches c; someone caches a.
        let anyone = set(&["a/a", "c/c"]);
        assert_eq!(q.pop_for(&set(&["c/c"]), &anyone), Some(("c/c".into(), 2)));
        assert_eq!(q.pop_for(&set(&["c/c"]), &anyone), Some(("b/b".into(), 1)));
        assert_eq!(q.pop_for(&set(&["c/c"]), &anyone), Some(("a/a".into(), 0)));
        assert_eq!(q.pop_for(&set(&["c/c"]), &anyone), None);
        assert!(q.is_empty());
    }

    #[test]
    fn retries_go_first() {
        let mut q = RepoQueues::default();
        q.push("a/a", 0);
        q.push_front("a/a", 7);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_for(&set(&[]), &set(&[])), Some(("a/a".into(), 7)));
    }
}
