//! The shared tree of one commit: checked out once from the mirror, read-only, kept with a
//! metadata file (repo, sha, size) so that a reopened cache knows it.

use super::disk::{disk_usage, remove_tree};
use super::mirror::full_commit_id;
use super::names::{repo_key, validate_repo_name};
use super::pins::{EntryKey, Pin, State};
use super::{io_err, RepoCache, RepoCacheError};
use crate::git::run_git;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(serde::Serialize, serde::Deserialize)]
struct TreeMeta {
    repo: String,
    sha: String,
    bytes: u64,
}

/// The metadata file of a tree at `trees/<key>/<sha>`; `None` for any other path.
pub(super) fn tree_meta_path(tree: &Path) -> Option<PathBuf> {
    let parent = tree.parent()?;
    (parent.parent()?.file_name()? == "trees").then(|| tree.with_extension("meta.json"))
}

/// Indexes the trees under `root/trees` that have valid metadata and removes the others.
pub(super) fn index_trees(root: &Path, state: &mut State) -> Result<(), RepoCacheError> {
    for repo_dir in fs::read_dir(root.join("trees"))
        .map_err(io_err(root))?
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
                    state.insert_found(EntryKey::Tree(m.repo, m.sha), path, m.bytes);
                }
                _ => {
                    tracing::warn!(path = %path.display(), "removing tree without metadata");
                    remove_tree(&path);
                    let _ = fs::remove_file(&meta);
                }
            }
        }
    }
    Ok(())
}

impl RepoCache {
    /// The shared tree of `repo` at commit `sha` (a full id from [`RepoCache::resolve`]), built
    /// once. Read it, never write it: units write through [`super::UnitTree`].
    pub fn tree(&self, repo: &str, sha: &str) -> Result<Pin, RepoCacheError> {
        validate_repo_name(repo)?;
        full_commit_id(
            repo,
            sha,
            "trees are keyed by full commit ids; resolve the revision first",
        )?;
        self.pinned_or_built(EntryKey::Tree(repo.to_string(), sha.to_string()), || {
            self.build_tree(repo, sha)
        })
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
            run_git(Some(mirror.path()), args, &env, t).map_err(|source| RepoCacheError::Git {
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
