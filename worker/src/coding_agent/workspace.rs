//! The sealed workspace: what goes into an agent's container and what comes back out.
//!
//! In: the masked project tree only, as a tar whose entries all lie under `workspace/`: regular
//! files and directories, no `.git` (no history to read the original block or the fix from),
//! no symlink (nothing that points out of the tree), nothing of the harness. Out: the
//! container's `/workspace` as a tar, checked like a model's patch (every path inside the tree,
//! no symlink, no device, nothing under `.git`, bounded size) and reduced to the files that
//! differ from what went in.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path};

/// The name of the tree inside the tar (and of the folder in the container, under `/`).
pub const WORKSPACE_DIR: &str = "workspace";

/// The tar sent into the container, with a digest of each file to find the changes later.
pub struct SealedWorkspace {
    pub tar: Vec<u8>,
    /// Project-relative path -> (sha256, executable).
    pub files: BTreeMap<String, ([u8; 32], bool)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("the masked tree holds more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the masked tree at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent left: the files it changed or added and the ones it deleted.
#[derive(Debug, Default, PartialEq)]
pub struct AgentResult {
    /// Project-relative path -> (content, mode).
    pub changed: BTreeMap<String, (Vec<u8>, u32)>,
    pub deleted: Vec<String>,
}

/// Why the agent's result is refused: the agent's doing, scored as a failed generation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResultRefused {
    #[error("the agent left {path:?}, which is not a regular file inside the tree ({what})")]
    BadEntry { path: String, what: &'static str },
    #[error("the agent's changed files exceed {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the workspace archive is unreadable: {detail}")]
    Unreadable { detail: String },
}

fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Packs the project tree at `root` (the masked file already written into it).
pub fn seal(root: &Path, max_bytes: u64) -> Result<SealedWorkspace, WorkspaceError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut dir_header = tar::Header::new_gnu();
    dir_header.set_entry_type(tar::EntryType::Directory);
    dir_header.set_mode(0o777);
    dir_header.set_size(0);
    dir_header.set_mtime(0);
    builder
        .append_data(
            &mut dir_header,
            format!("{WORKSPACE_DIR}/"),
            std::io::empty(),
        )
        .map_err(io(root))?;
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = e.path();
            let md = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if md.is_dir() {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o777);
                h.set_size(0);
                h.set_mtime(0);
                builder
                    .append_data(
                        &mut h,
                        format!("{WORKSPACE_DIR}/{child}/"),
                        std::io::empty(),
                    )
                    .map_err(io(&path))?;
                stack.push(child);
            } else if md.is_file() {
                total += md.len();
                if total > max_bytes {
                    return Err(WorkspaceError::TooLarge { limit: max_bytes });
                }
                let data = std::fs::read(&path).map_err(io(&path))?;
                use std::os::unix::fs::PermissionsExt;
                let exec = md.permissions().mode() & 0o111 != 0;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                // World-writable: the agent may run as any user of its image.
                h.set_mode(if exec { 0o777 } else { 0o666 });
                h.set_size(data.len() as u64);
                h.set_mtime(0);
                builder
                    .append_data(&mut h, format!("{WORKSPACE_DIR}/{child}"), data.as_slice())
                    .map_err(io(&path))?;
                files.insert(child, (digest(&data), exec));
            }
            // Symlinks, sockets, devices: not part of the sealed tree.
        }
    }
    let tar = builder.into_inner().map_err(io(root))?;
    Ok(SealedWorkspace { tar, files })
}

/// `workspace/a/b` -> `a/b`; `None` for the folder itself; `Err` for anything outside.
fn project_path(raw: &Path) -> Result<Option<String>, ()> {
    let mut parts = Vec::new();
    for (i, c) in raw.components().enumerate() {
        match c {
            Component::Normal(s) if i == 0 => {
                if s != WORKSPACE_DIR {
                    return Err(());
                }
            }
            Component::Normal(s) => parts.push(s.to_str().ok_or(())?.to_string()),
            Component::CurDir if i == 0 => {}
            _ => return Err(()),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Reads the container's `/workspace` archive and keeps what the agent changed, checked.
pub fn collect(
    sealed: &SealedWorkspace,
    archive: impl Read,
    max_result_bytes: u64,
) -> Result<AgentResult, ResultRefused> {
    let unreadable = |e: std::io::Error| ResultRefused::Unreadable {
        detail: e.to_string(),
    };
    let mut ar = tar::Archive::new(archive);
    let mut out = AgentResult::default();
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    for entry in ar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry.path().map_err(unreadable)?.into_owned();
        let shown = raw.display().to_string();
        let Ok(path) = project_path(&raw) else {
            return Err(ResultRefused::BadEntry {
                path: shown,
                what: "outside the workspace",
            });
        };
        let Some(path) = path else { continue };
        // The agent's own scratch repository (`git init`, aider) is not part of its answer.
        if path.split('/').any(|c| c == ".git") {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            let what = if kind.is_symlink() {
                "a symlink"
            } else if kind.is_hard_link() {
                "a hard link"
            } else {
                "a special file"
            };
            return Err(ResultRefused::BadEntry { path, what });
        }
        let size = entry.header().size().map_err(unreadable)?;
        let mode = entry.header().mode().map_err(unreadable)?;
        let exec = mode & 0o111 != 0;
        let known = sealed.files.get(&path);
        // Unchanged files are compared by digest, so the bound counts only changes; a file
        // larger than what is left of the bound cannot be a change we accept.
        let remaining = max_result_bytes.saturating_sub(total);
        if known.is_none() && size > remaining {
            return Err(ResultRefused::TooLarge {
                limit: max_result_bytes,
            });
        }
        let mut data = Vec::new();
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut data)
            .map_err(unreadable)?;
        seen.insert(path.clone());
        if known.is_some_and(|(d, x)| *d == digest(&data) && *x == exec) {
            continue;
        }
        total += data.len() as u64;
        if total > max_result_bytes {
            return Err(ResultRefused::TooLarge {
                limit: max_result_bytes,
            });
        }
        out.changed
            .insert(path, (data, if exec { 0o755 } else { 0o644 }));
    }
    out.deleted = sealed
        .files
        .keys()
        .filter(|p| !seen.contains(*p))
        .cloned()
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".git/objects")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::create_dir_all(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("src/app.py"), "x = 1\n<MASKED>\n").unwrap();
        std::fs::write(d.path().join("README"), "hi\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        d
    }

    fn entries(tar: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn the_sealed_tree_has_no_history_and_no_symlink() {
        let d = tree();
        let s = seal(d.path(), 1 << 20).unwrap();
        let names = entries(&s.tar);
        assert!(
            names.contains(&"workspace/src/app.py".to_string()),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .all(|n| !n.contains(".git") && !n.ends_with("link")),
            "{names:?}"
        );
        assert_eq!(s.files.len(), 2);
        assert!(matches!(
            seal(d.path(), 3),
            Err(WorkspaceError::TooLarge { limit: 3 })
        ));
    }

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn only_changes_come_back_and_deletions_are_seen() {
        let d = tree();
        let s = seal(d.path(), 1 << 20).unwrap();
        let back = archive(|b| {
            file(b, "workspace/src/app.py", b"x = 1\ny = 2\n");
            file(b, "workspace/new.txt", b"n");
            file(b, "workspace/.git/config", b"[core]");
        });
        let r = collect(&s, back.as_slice(), 1 << 20).unwrap();
        assert_eq!(
            r.changed.keys().collect::<Vec<_>>(),
            vec!["new.txt", "src/app.py"]
        );
        assert_eq!(r.changed["src/app.py"].0, b"x = 1\ny = 2\n");
        assert_eq!(r.deleted, vec!["README".to_string()]);
        // The tree as it went in comes back as no change at all.
        let same = archive(|b| {
            file(b, "workspace/src/app.py", b"x = 1\n<MASKED>\n");
            file(b, "workspace/README", b"hi\n");
        });
        assert_eq!(
            collect(&s, same.as_slice(), 1 << 20).unwrap(),
            AgentResult::default()
        );
    }

    #[test]
    fn symlinks_and_oversized_results_are_refused() {
        let d = tree();
        let s = seal(d.path(), 1 << 20).unwrap();
        let link = archive(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "workspace/src/app.py", "/etc/passwd")
                .unwrap();
        });
        assert!(matches!(
            collect(&s, link.as_slice(), 1 << 20),
            Err(ResultRefused::BadEntry {
                what: "a symlink",
                ..
            })
        ));
        let big = archive(|b| file(b, "workspace/big.bin", &[7u8; 4096]));
        assert!(matches!(
            collect(&s, big.as_slice(), 1000),
            Err(ResultRefused::TooLarge { limit: 1000 })
        ));
        let outside = archive(|b| file(b, "etc/passwd", b"x"));
        assert!(matches!(
            collect(&s, outside.as_slice(), 1 << 20),
            Err(ResultRefused::BadEntry { .. })
        ));
    }
}
