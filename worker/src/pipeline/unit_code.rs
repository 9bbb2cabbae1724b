//! A unit's code as a record carries it: the files that differ from the shared tree at
//! `base_commit`. Collected after generation, written back into a fresh unit tree before
//! evaluation (possibly on another worker).

use crate::repo_cache::{RepoCacheError, UnitTree};
use ase_common::answer::apply::{AnswerTree, TreeError};
use ase_common::unit::{ChangedFile, MAX_CHANGED_BYTES};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnitCodeError {
    /// The changed files together exceed [`MAX_CHANGED_BYTES`]: the generation fails.
    #[error("the changed files hold {bytes} bytes, more than the {limit} a unit may change")]
    TooLarge { bytes: usize, limit: usize },
    /// A path that is not a plain file inside the project (a symlink, outside the root, `.git`).
    #[error("changed path {path:?} is not a regular file inside the project")]
    BadPath { path: String },
    #[error("changed file {path:?}: content is neither UTF-8 text nor valid base64")]
    BadContent { path: String },
    #[error("unit tree: {0}")]
    Tree(#[from] RepoCacheError),
    #[error("unit tree {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl UnitCodeError {
    /// True when the model's answer is to blame (the record fails), false for the worker.
    pub fn is_model_fault(&self) -> bool {
        match self {
            UnitCodeError::TooLarge { .. }
            | UnitCodeError::BadPath { .. }
            | UnitCodeError::BadContent { .. } => true,
            UnitCodeError::Tree(RepoCacheError::BadUnitPath(_)) => true,
            UnitCodeError::Tree(_) | UnitCodeError::Io { .. } => false,
        }
    }
}

/// The project root's path inside a unit tree, `/`-terminated, or empty for the tree itself.
pub fn join_rel(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// The project inside a unit tree (its root at `prefix`) as an answer is applied to it.
pub struct ProjectTree<'a> {
    pub unit: &'a mut UnitTree,
    pub prefix: &'a str,
}

fn tree_error(e: RepoCacheError) -> TreeError<RepoCacheError> {
    match &e {
        RepoCacheError::BadUnitPath(path) => TreeError::Outside {
            path: path.clone(),
            source: e,
        },
        _ => TreeError::Failed(e),
    }
}

impl AnswerTree for ProjectTree<'_> {
    type Error = RepoCacheError;

    fn root(&self) -> PathBuf {
        if self.prefix.is_empty() {
            self.unit.path().to_path_buf()
        } else {
            self.unit.path().join(self.prefix)
        }
    }

    fn make_private(&mut self, rel: &str) -> Result<(), TreeError<RepoCacheError>> {
        self.unit
            .unshare(&join_rel(self.prefix, rel))
            .map(drop)
            .map_err(tree_error)
    }

    fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), TreeError<RepoCacheError>> {
        self.unit
            .write(&join_rel(self.prefix, rel), data)
            .map_err(tree_error)
    }
}

/// The files of `unit` among `candidates` (unit-root-relative) that differ from its base tree,
/// with paths relative to the project root `prefix`; and the base files the unit deleted.
pub fn collect_changed(
    unit: &UnitTree,
    prefix: &str,
    candidates: &BTreeSet<String>,
) -> Result<(Vec<ChangedFile>, Vec<String>), UnitCodeError> {
    let mut changed = Vec::new();
    let mut deleted = Vec::new();
    let mut total = 0usize;
    for rel in candidates {
        let project_rel = if prefix.is_empty() {
            rel.as_str()
        } else {
            match rel.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
                Some(r) => r,
                None => {
                    return Err(UnitCodeError::BadPath { path: rel.clone() });
                }
            }
        };
        let here = unit.path().join(rel);
        let base = unit.base().join(rel);
        let md = match fs::symlink_metadata(&here) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if fs::symlink_metadata(&base).is_ok() {
                    deleted.push(project_rel.to_string());
                }
                continue;
            }
            Err(source) => {
                return Err(UnitCodeError::Io {
                    path: rel.clone(),
                    source,
                })
            }
        };
        if md.is_dir() {
            continue;
        }
        if !md.is_file() {
            return Err(UnitCodeError::BadPath { path: rel.clone() });
        }
        if md.len() as usize > MAX_CHANGED_BYTES.saturating_sub(total) {
            return Err(UnitCodeError::TooLarge {
                bytes: total.saturating_add(md.len() as usize),
                limit: MAX_CHANGED_BYTES,
            });
        }
        let data = fs::read(&here).map_err(|source| UnitCodeError::Io {
            path: rel.clone(),
            source,
        })?;
        let mode = md.mode() & 0o777;
        if let Ok(bmd) = fs::symlink_metadata(&base) {
            if bmd.is_file()
                && (bmd.mode() & 0o111) == (mode & 0o111)
                && fs::read(&base).ok().as_deref() == Some(&data[..])
            {
                continue;
            }
        }
        total += data.len();
        changed.push(ChangedFile::from_bytes(
            project_rel.to_string(),
            data,
            if mode & 0o111 != 0 { 0o755 } else { 0o644 },
        ));
    }
    Ok((changed, deleted))
}

/// Write a record's code into a fresh `unit` tree whose project root is `prefix`.
pub fn apply_changed(
    unit: &mut UnitTree,
    prefix: &str,
    changed: &[ChangedFile],
    deleted: &[String],
) -> Result<(), UnitCodeError> {
    let mut total = 0usize;
    for f in changed {
        let data = f.bytes().map_err(|_| UnitCodeError::BadContent {
            path: f.path.clone(),
        })?;
        total += data.len();
        if total > MAX_CHANGED_BYTES {
            return Err(UnitCodeError::TooLarge {
                bytes: total,
                limit: MAX_CHANGED_BYTES,
            });
        }
        let rel = join_rel(prefix, &f.path);
        unit.write(&rel, &data)?;
        let mode = if f.mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let abs = unit.path().join(&rel);
        fs::set_permissions(&abs, fs::Permissions::from_mode(mode)).map_err(|source| {
            UnitCodeError::Io {
                path: rel.clone(),
                source,
            }
        })?;
    }
    for d in deleted {
        unit.remove(&join_rel(prefix, d))?;
    }
    Ok(())
}

/// The project root of `tree` relative to it (`""` when it is the tree itself).
pub fn relative_root(tree: &Path, root: &Path) -> String {
    root.strip_prefix(tree)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"\xff\x00\xfe\x80binary"] {
            let f = ChangedFile {
                path: "p".into(),
                content: None,
                content_base64: Some(BASE64.encode(data)),
                mode: 0o644,
            };
            assert_eq!(f.bytes().unwrap(), data);
        }
        for bad in ["Zm9", "Zm=v", "Z===", "Zm9v!A=="] {
            let f = ChangedFile {
                path: "p".into(),
                content: None,
                content_base64: Some(bad.into()),
                mode: 0o644,
            };
            assert!(f.bytes().is_err(), "{bad}");
        }
        let binary = ChangedFile::from_bytes("b".into(), vec![0xff, 0], 0o644);
        assert_eq!(binary.bytes().unwrap(), [0xff, 0]);
        assert!(binary.content.is_none());
    }
}
