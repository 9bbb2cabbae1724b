//! Reading files of a checked-out repository for a prompt, without trusting the repository.
//!
//! A path from a dataset or a context file (`vuln_file`, a hit's `docid`) is untrusted: it must be
//! relative, must not climb out with `..`, and may not pass through a symbolic link. We do not
//! follow symbolic links at all, not even ones that stay inside the tree: every component below
//! the project root is checked with `symlink_metadata`, and a link anywhere is an error. (The
//! project root itself may be reached through links: it is the caller's choice, not the repo's.)
//! Only regular files are read (a FIFO would block, a device would never end), and at most
//! `max_bytes` of them.
//!
//! Text decoding: upstream reads prompt files as UTF-8 with `errors="ignore"`, so invalid byte
//! sequences vanish and everything else is kept. We do the same (the number of dropped bytes is
//! reported). A file with a NUL byte is binary: upstream would paste it in (or, in a helper it does
//! not use for prompts, replace it with `[BINARY DATA FILE]`); we refuse it with
//! [`RepoFileError::Binary`] so that the prompt builder can skip it instead of spending the
//! budget on bytes no model can use.

use crate::dataset::{Task, TaskSpec};
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Default cap on the size of one file read for a prompt. Larger files could never fit the
/// prompt budgets anyway (98,000 characters).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum RepoFileError {
    #[error("{path}: empty path")]
    Empty { path: String },
    #[error("{path}: absolute path; repository paths are relative to the project root")]
    Absolute { path: String },
    #[error("{path}: `..` would leave the project root")]
    ParentDir { path: String },
    #[error("{path}: {component} is a symbolic link; links are not followed")]
    Symlink { path: String, component: String },
    #[error("{path}: not found under {root}")]
    NotFound { path: String, root: PathBuf },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: {size} bytes, over the limit of {limit} bytes")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: binary file (contains a NUL byte)")]
    Binary { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A text file read from the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoText {
    /// The path, normalised: `/`-separated, no `.` or empty components.
    pub path: String,
    pub text: String,
    /// Bytes dropped because they were not valid UTF-8 (upstream's `errors="ignore"`).
    pub invalid_bytes_dropped: usize,
}

/// Check that `path` is a plain relative path and return it normalised (`a/./b//c` -> `a/b/c`).
pub fn normalize_repo_path(path: &str) -> Result<String, RepoFileError> {
    let err_path = || path.to_string();
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => parts.push(c.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(RepoFileError::ParentDir { path: err_path() }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(RepoFileError::Absolute { path: err_path() })
            }
        }
    }
    if parts.is_empty() {
        return Err(RepoFileError::Empty { path: err_path() });
    }
    Ok(parts.join("/"))
}

/// Read `path` (relative to `root`) as text, under the rules of this module.
pub fn read_repo_file(root: &Path, path: &str, max_bytes: u64) -> Result<RepoText, RepoFileError> {
    let normalized = normalize_repo_path(path)?;
    let mut current = root.to_path_buf();
    let components: Vec<&str> = normalized.split('/').collect();
    let mut meta = None;
    for (i, component) in components.iter().enumerate() {
        current.push(component);
        let m = fs::symlink_metadata(&current).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RepoFileError::NotFound {
                path: normalized.clone(),
                root: root.to_path_buf(),
            },
            _ => RepoFileError::Io {
                path: normalized.clone(),
                source: e,
            },
        })?;
        if m.file_type().is_symlink() {
            return Err(RepoFileError::Symlink {
                path: normalized.clone(),
                component: components[..=i].join("/"),
            });
        }
        meta = Some(m);
    }
    let meta = meta.expect("a normalised path has at least one component");
    if !meta.is_file() {
        return Err(RepoFileError::NotAFile { path: normalized });
    }
    if meta.len() > max_bytes {
        return Err(RepoFileError::TooLarge {
            path: normalized,
            size: meta.len(),
            limit: max_bytes,
        });
    }
    let io_err = |e| RepoFileError::Io {
        path: normalized.clone(),
        source: e,
    };
    let file = fs::File::open(&current).map_err(io_err)?;
    let mut bytes = Vec::new();
    // The file may have grown since `stat`: never read more than the limit allows.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(RepoFileError::TooLarge {
            path: normalized,
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    if bytes.contains(&0) {
        return Err(RepoFileError::Binary { path: normalized });
    }
    let (text, invalid_bytes_dropped) = decode_utf8_ignoring_errors(&bytes);
    Ok(RepoText {
        path: normalized,
        text,
        invalid_bytes_dropped,
    })
}

/// UTF-8 decoding that drops invalid sequences, as Python's `errors="ignore"`.
fn decode_utf8_ignoring_errors(bytes: &[u8]) -> (String, usize) {
    let mut text = String::with_capacity(bytes.len());
    let mut dropped = 0;
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        dropped += chunk.invalid().len();
    }
    (text, dropped)
}

/// Lines `start..=end` (1-based, inclusive) of `text`, joined with `\n`, as upstream slices a
/// context hit with `startline`/`endline` (`"\n".join(text.splitlines()[start-1:end])`). Lines end
/// at `\n` or `\r\n` (Python's `splitlines` also breaks at a few rarer separators, which source
/// files do not use as line ends). Out-of-range bounds are clamped; `start` 0 counts as 1.
pub fn slice_lines(text: &str, start: usize, end: usize) -> String {
    let first = start.max(1) - 1;
    if end <= first {
        return String::new();
    }
    text.lines()
        .skip(first)
        .take(end - first)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The target repository's top-level README files (names starting with `readme`, any case), as
/// names relative to `root`, sorted by byte order. Only regular files count: a link or a folder
/// named README is not one. Upstream lists these relative to the harness's working directory,
/// which picks up the harness's own README; we look in the repository (see the protocol).
pub fn readme_files(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.to_lowercase().starts_with("readme") {
            continue;
        }
        // `DirEntry::file_type` does not follow links.
        if entry.file_type()?.is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The folder that holds the project inside a checked-out `tree`.
///
/// A mutated v1 task's repo may hold the whole project inside one top-level folder named like the
/// seed repo's name (the part after `/`); then that folder is the project root. As upstream, the
/// folder must be the only top-level entry not starting with `.`; unlike upstream, it must also be
/// a directory (not a link), since a file cannot be a project root. Every other case: `tree`.
/// `seed_repo` is the seed task's `repo` (see `Dataset::seed_of`).
pub fn project_root(tree: &Path, task: &Task, seed_repo: Option<&str>) -> PathBuf {
    let is_mutated = matches!(&task.spec, TaskSpec::V1(s) if !s.seed);
    let Some(seed_name) = seed_repo
        .filter(|_| is_mutated)
        .and_then(|r| r.rsplit('/').next())
        .filter(|n| !n.is_empty())
    else {
        return tree.to_path_buf();
    };
    let Ok(entries) = fs::read_dir(tree) else {
        return tree.to_path_buf();
    };
    let visible: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    match visible.as_slice() {
        [only]
            if only.file_name().to_str() == Some(seed_name)
                && only.file_type().map(|t| t.is_dir()).unwrap_or(false) =>
        {
            only.path()
        }
        _ => tree.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{LineRange, StaticSpec};
    use serde_json::Map;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn v1_task(id: &str, repo: &str, seed: bool) -> Task {
        Task {
            instance_id: id.into(),
            repo: repo.into(),
            base_commit: "HEAD".into(),
            vuln_file: "a.php".into(),
            vuln_lines: LineRange { start: 1, end: 1 },
            language: "php".into(),
            vuln_source: "CVE-1".into(),
            vuln_type: "SQLI".into(),
            cwe_id: "CWE-89".into(),
            spec: TaskSpec::V1(StaticSpec {
                seed,
                detected_tool: "t".into(),
                detected_vul_num: 1,
                patch_commit: None,
            }),
            extra: Map::new(),
        }
    }

    #[test]
    fn normalises_and_rejects_escapes() {
        assert_eq!(normalize_repo_path("./src//a.c").unwrap(), "src/a.c");
        assert!(matches!(
            normalize_repo_path("/etc/passwd"),
            Err(RepoFileError::Absolute { .. })
        ));
        assert!(matches!(
            normalize_repo_path("src/../../x"),
            Err(RepoFileError::ParentDir { .. })
        ));
        assert!(matches!(
            normalize_repo_path("a/.."),
            Err(RepoFileError::ParentDir { .. })
        ));
        assert!(matches!(
            normalize_repo_path("."),
            Err(RepoFileError::Empty { .. })
        ));
        assert!(matches!(
            normalize_repo_path(""),
            Err(RepoFileError::Empty { .. })
        ));
    }

    #[test]
    fn reads_text_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "src/a.c", b"int x;\n");
        let t = read_repo_file(dir.path(), "./src/a.c", 100).unwrap();
        assert_eq!(t.path, "src/a.c");
        assert_eq!(t.text, "int x;\n");
        assert_eq!(t.invalid_bytes_dropped, 0);
    }

    #[test]
    fn rejects_traversal_even_when_target_exists() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "secret", b"s");
        write(dir.path(), "root/a", b"a");
        let root = dir.path().join("root");
        let err = read_repo_file(&root, "../secret", 100).unwrap_err();
        assert!(matches!(err, RepoFileError::ParentDir { .. }), "{err}");
        let abs = dir.path().join("secret");
        let err = read_repo_file(&root, abs.to_str().unwrap(), 100).unwrap_err();
        assert!(matches!(err, RepoFileError::Absolute { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "outside/secret.txt", b"s");
        write(dir.path(), "root/inside.txt", b"i");
        let root = dir.path().join("root");
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside/secret.txt"), root.join("filelink"))
            .unwrap();
        std::os::unix::fs::symlink(root.join("inside.txt"), root.join("innerlink")).unwrap();
        for p in ["dirlink/secret.txt", "filelink", "innerlink"] {
            let err = read_repo_file(&root, p, 100).unwrap_err();
            assert!(matches!(err, RepoFileError::Symlink { .. }), "{p}: {err}");
        }
        let err = read_repo_file(&root, "dirlink/secret.txt", 100).unwrap_err();
        assert!(
            err.to_string().contains("dirlink is a symbolic link"),
            "{err}"
        );
    }

    #[test]
    fn missing_dir_and_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "big.txt", &[b'x'; 101]);
        write(dir.path(), "ok.txt", &[b'x'; 100]);
        fs::create_dir(dir.path().join("d")).unwrap();
        assert!(matches!(
            read_repo_file(dir.path(), "nope.txt", 100),
            Err(RepoFileError::NotFound { .. })
        ));
        assert!(matches!(
            read_repo_file(dir.path(), "d", 100),
            Err(RepoFileError::NotAFile { .. })
        ));
        assert!(matches!(
            read_repo_file(dir.path(), "big.txt", 100),
            Err(RepoFileError::TooLarge {
                size: 101,
                limit: 100,
                ..
            })
        ));
        assert_eq!(
            read_repo_file(dir.path(), "ok.txt", 100)
                .unwrap()
                .text
                .len(),
            100
        );
    }

    #[test]
    fn nul_is_binary_and_invalid_utf8_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "img.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        write(dir.path(), "latin1.php", b"caf\xe9 ok\n");
        assert!(matches!(
            read_repo_file(dir.path(), "img.png", 100),
            Err(RepoFileError::Binary { .. })
        ));
        let t = read_repo_file(dir.path(), "latin1.php", 100).unwrap();
        assert_eq!(t.text, "caf ok\n");
        assert_eq!(t.invalid_bytes_dropped, 1);
    }

    #[test]
    fn slices_lines_one_based_inclusive() {
        let text = "l1\nl2\r\nl3\nl4\n";
        assert_eq!(slice_lines(text, 2, 3), "l2\nl3");
        assert_eq!(slice_lines(text, 1, 1), "l1");
        assert_eq!(slice_lines(text, 3, 99), "l3\nl4");
        assert_eq!(slice_lines(text, 0, 1), "l1");
        assert_eq!(slice_lines(text, 5, 9), "");
        assert_eq!(slice_lines(text, 3, 2), "");
    }

    #[test]
    fn readmes_are_top_level_regular_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "README.md", b"r");
        write(dir.path(), "readme.txt", b"r");
        write(dir.path(), "ReadMe", b"r");
        write(dir.path(), "docs/README.md", b"nested");
        write(dir.path(), "NOTREADME", b"x");
        fs::create_dir(dir.path().join("README.d")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("README.link")).unwrap();
        assert_eq!(
            readme_files(dir.path()).unwrap(),
            vec!["README.md", "ReadMe", "readme.txt"]
        );
    }

    #[test]
    fn project_root_rule() {
        let mutated = v1_task("m", "other/proj_mut", false);
        let seed = v1_task("s", "org/proj", true);

        // One visible top-level folder named like the seed repo: it is the root.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proj/a.php", b"x");
        write(dir.path(), ".git/HEAD", b"x");
        assert_eq!(
            project_root(dir.path(), &mutated, Some("org/proj")),
            dir.path().join("proj")
        );
        // Seed tasks and unknown seeds keep the tree.
        assert_eq!(
            project_root(dir.path(), &seed, Some("org/proj")),
            dir.path()
        );
        assert_eq!(project_root(dir.path(), &mutated, None), dir.path());
        // Another visible entry: the tree is the root.
        write(dir.path(), "README.md", b"x");
        assert_eq!(
            project_root(dir.path(), &mutated, Some("org/proj")),
            dir.path()
        );

        // A different name, or a file with the name, is not a root.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "other/a.php", b"x");
        assert_eq!(
            project_root(dir.path(), &mutated, Some("org/proj")),
            dir.path()
        );
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proj", b"x");
        assert_eq!(
            project_root(dir.path(), &mutated, Some("org/proj")),
            dir.path()
        );
    }
}
