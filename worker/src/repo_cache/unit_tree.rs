//! A unit's private tree: a hard-link farm of the shared tree (no file data copied) in which
//! every write replaces the link by a file of its own, so the shared tree is never modified.

use super::disk::remove_tree;
use super::pins::Pin;
use super::{io_err, RepoCache, RepoCacheError};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

impl RepoCache {
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
        let n = self.next_nonce();
        let path = root
            .join("units")
            .join(format!("{safe}-{}-{n}", std::process::id()));
        link_farm(tree.path(), &path).map_err(|e| {
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

/// One unit's working tree. Removed from disk when dropped.
pub struct UnitTree {
    path: PathBuf,
    tree: Pin,
    changed: BTreeSet<String>,
}

/// `rel` as a relative path that stays inside a tree and out of its `.git`.
pub(super) fn checked_rel(rel: &str) -> Result<PathBuf, RepoCacheError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
