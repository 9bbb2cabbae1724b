//! One bare mirror per repo: cloned once (a bounded number at a time), fetched when a revision
//! is missing, and read for revisions and single files without building a tree.

use super::disk::{disk_usage, remove_tree};
use super::names::{repo_key, validate_repo_name};
use super::pins::{EntryKey, Pin, State};
use super::{io_err, RepoCache, RepoCacheError};
use crate::git::run_git;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Written into a clone once it is complete; a mirror without it is swept at open.
const MIRROR_MARKER: &str = "ase-mirror-complete";

/// Indexes the complete mirrors under `root/mirrors` and removes the others.
pub(super) fn index_mirrors(root: &Path, state: &mut State) -> Result<(), RepoCacheError> {
    for e in fs::read_dir(root.join("mirrors"))
        .map_err(io_err(root))?
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
        state.insert_found(EntryKey::Mirror(repo), path, bytes);
    }
    Ok(())
}

/// Checks that `sha` is a full commit id (trees and file reads are keyed by them).
pub(super) fn full_commit_id(repo: &str, sha: &str, detail: &str) -> Result<(), RepoCacheError> {
    if sha.len() < 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(RepoCacheError::UnknownRevision {
            repo: repo.to_string(),
            rev: sha.to_string(),
            detail: detail.into(),
        });
    }
    Ok(())
}

impl RepoCache {
    /// The bare mirror of `repo`, cloned on first use. Pinned until the guard is dropped.
    pub(super) fn mirror(&self, repo: &str) -> Result<Pin, RepoCacheError> {
        validate_repo_name(repo)?;
        self.pinned_or_built(EntryKey::Mirror(repo.to_string()), || {
            self.clone_mirror(repo)
        })
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
        if let Some(sha) = self.rev_parse(repo, mirror.path(), rev) {
            return Ok(sha);
        }
        let lock = self.fetch_lock(repo);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have fetched while we waited.
        if let Some(sha) = self.rev_parse(repo, mirror.path(), rev) {
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
            match run_git(Some(mirror.path()), &argv, &env, t) {
                Ok(_) => self.lock().stats.fetches += 1,
                Err(e) => detail = e.to_string(),
            }
            if let Some(sha) = self.rev_parse(repo, mirror.path(), rev) {
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
        super::unit_tree::checked_rel(path)?;
        full_commit_id(
            repo,
            sha,
            "files are read at full commit ids; resolve the revision first",
        )?;
        let mirror = self.mirror(repo)?;
        let t = self.inner.cfg.git_timeout;
        let spec = format!("{sha}:{path}");
        let exists = run_git(
            Some(mirror.path()),
            &["cat-file", "-e", "--end-of-options", &spec],
            &[],
            t,
        )
        .is_ok();
        if !exists {
            return Ok(None);
        }
        run_git(
            Some(mirror.path()),
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
}
