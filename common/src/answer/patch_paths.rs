//! Safety vetting of a model's patch before `git apply` or `patch` may touch the tree.
//!
//! The two tools disagree on where a file section starts (hunk counts may be wrong, which is
//! the whole point of the repair step), so every line that either tool could read as a header
//! is vetted, wherever it stands. That may reject a patch whose removed line happens to read
//! `--- /something` (a SQL comment, say); safety wins over that rare loss.
//!
//! A patch is rejected when it:
//! - is larger than [`MAX_PATCH_BYTES`] (1 MiB: far above any real answer, small enough that
//!   vetting and the tools stay fast), or has a header line longer than
//!   [`MAX_HEADER_LINE_BYTES`] (`PATH_MAX`; no longer name can be opened anyway);
//! - names an absolute path (other than `/dev/null`), even where `-p1` would make it relative
//!   (`--- /etc/passwd` becomes `etc/passwd` under `patch -p1`; upstream would apply it, we do
//!   not guess what the model meant);
//! - names a path that leaves the tree after `..` normalisation, or has a component equal to
//!   `.git` in any letter case;
//! - names a path with a control character, a malformed quoted name or non-UTF-8 bytes, or
//!   has an unquoted `diff --git` line with more than [`MAX_GIT_HEADER_SPACES`] spaces;
//! - declares a symlink or submodule mode (`120000`, `160000`) on a mode or `index` line;
//! - contains a line made of a single `.`: that is how GNU patch recognises an ed script,
//!   which it runs through `ed` (CVE-2018-1000156 was command execution that way);
//! - (against the tree) reaches an existing symlink on any prefix of a named path, the final
//!   component included, or names an existing path that is neither a file nor a directory.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// Largest patch we vet or apply.
pub const MAX_PATCH_BYTES: usize = 1 << 20;
/// Longest header line we parse (Linux `PATH_MAX`).
pub const MAX_HEADER_LINE_BYTES: usize = 4096;
/// Most spaces in an unquoted `diff --git` line: each is a possible split between the two
/// names that must be vetted, and real names rarely hold more than a few.
pub const MAX_GIT_HEADER_SPACES: usize = 64;

/// Why a patch was refused before any apply attempt. `line` is 1-based in the patch text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PatchRejection {
    #[error("patch is {bytes} bytes, more than the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("line {line}: header line longer than {limit} bytes")]
    HeaderLineTooLong { line: usize, limit: usize },
    #[error("line {line}: path {path:?} has a control character, bad quoting, non-UTF-8 bytes or too many spaces")]
    BadPathCharacters { line: usize, path: String },
    #[error("line {line}: absolute path {path:?}")]
    AbsolutePath { line: usize, path: String },
    #[error("line {line}: path {path:?} leaves the tree")]
    OutsideTree { line: usize, path: String },
    #[error("line {line}: path {path:?} is inside a .git directory")]
    GitDirectory { line: usize, path: String },
    #[error("line {line}: the patch declares a symlink (mode 120000)")]
    CreatesSymlink { line: usize },
    #[error("line {line}: the patch declares a submodule (mode 160000)")]
    Submodule { line: usize },
    #[error("line {line}: a lone '.' line makes GNU patch treat the input as an ed script")]
    EdScript { line: usize },
    #[error("path {path:?} goes through the symlink {symlink:?} in the tree")]
    ThroughSymlink { path: String, symlink: String },
    #[error("path {path:?} exists in the tree but is not a regular file or directory")]
    NotRegularFile { path: String },
    #[error("cannot inspect {path:?} in the tree: {message}")]
    Inspect { path: String, message: String },
}

/// A path the patch may touch, relative to the tree, as the tools would spell it after `-p1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPath {
    /// Components as written (`.` and empty ones dropped, `..` kept): the OS walks these.
    pub literal: Vec<String>,
    /// Components after resolving `..` lexically: where the file really is when no prefix is
    /// a symlink (which [`check_against_tree`] ensures).
    pub normalized: Vec<String>,
}

impl NamedPath {
    /// The normalised relative path with `/` separators.
    pub fn relative(&self) -> String {
        self.normalized.join("/")
    }
}

/// Every path any header line of `patch` could name, vetted without looking at a tree.
pub fn named_paths(patch: &str) -> Result<Vec<NamedPath>, PatchRejection> {
    if patch.len() > MAX_PATCH_BYTES {
        return Err(PatchRejection::TooLarge {
            bytes: patch.len(),
            limit: MAX_PATCH_BYTES,
        });
    }
    let mut found = BTreeSet::new();
    for (idx, raw_line) in patch.split('\n').enumerate() {
        let line_no = idx + 1;
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        if line == "." {
            return Err(PatchRejection::EdScript { line: line_no });
        }
        // GNU patch accepts headers indented by blanks or mailer `X`s.
        let line = line.trim_start_matches([' ', '\t', 'X']);
        let Some(kind) = HeaderKind::of(line) else {
            continue;
        };
        if line.len() > MAX_HEADER_LINE_BYTES {
            return Err(PatchRejection::HeaderLineTooLong {
                line: line_no,
                limit: MAX_HEADER_LINE_BYTES,
            });
        }
        for name in kind
            .candidates(line)
            .map_err(|path| PatchRejection::BadPathCharacters {
                line: line_no,
                path,
            })?
        {
            if let Some(path) = vet_name(&name, line_no)? {
                found.insert(path);
            }
        }
        kind.vet_mode(line, line_no)?;
    }
    Ok(found.into_iter().collect())
}

/// Checks the named paths against the tree: no symlink on the way, nothing exotic at the end.
pub fn check_against_tree(tree: &Path, paths: &[NamedPath]) -> Result<(), PatchRejection> {
    for path in paths {
        let mut walked = PathBuf::new();
        for component in &path.literal {
            walked.push(component);
            let full = tree.join(&walked);
            let meta = match std::fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                Err(e) if is_absent(&e) => break,
                Err(e) => {
                    return Err(PatchRejection::Inspect {
                        path: path.relative(),
                        message: e.to_string(),
                    })
                }
            };
            if meta.file_type().is_symlink() {
                return Err(PatchRejection::ThroughSymlink {
                    path: path.relative(),
                    symlink: walked.to_string_lossy().into_owned(),
                });
            }
            if !meta.is_file() && !meta.is_dir() {
                return Err(PatchRejection::NotRegularFile {
                    path: path.relative(),
                });
            }
        }
    }
    Ok(())
}

/// `named_paths` then `check_against_tree`.
pub fn vet_patch(tree: &Path, patch: &str) -> Result<Vec<NamedPath>, PatchRejection> {
    let paths = named_paths(patch)?;
    check_against_tree(tree, &paths)?;
    Ok(paths)
}

/// Errors meaning "this prefix does not exist (as a directory)", so nothing below it exists.
pub(crate) fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Header lines that name paths or modes, for git apply or GNU patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    /// `diff --git a/X b/Y`: names with one component stripped.
    GitDiff,
    /// `--- X`, `+++ X`, `*** X`, `Index: X`: one name, one component stripped, maybe a date.
    Stripped(usize),
    /// `rename from X`, `copy to X`, ...: a name used as is.
    Unstripped(usize),
    /// `new file mode M`, `old mode M`, ...
    Mode(usize),
    /// `index H..H M`
    Index,
}

impl HeaderKind {
    fn of(line: &str) -> Option<Self> {
        const STRIPPED: [&str; 4] = ["--- ", "+++ ", "*** ", "Index: "];
        const UNSTRIPPED: [&str; 6] = [
            "rename from ",
            "rename to ",
            "rename old ",
            "rename new ",
            "copy from ",
            "copy to ",
        ];
        const MODE: [&str; 4] = [
            "new file mode ",
            "deleted file mode ",
            "old mode ",
            "new mode ",
        ];
        if line.starts_with("diff --git ") {
            return Some(Self::GitDiff);
        }
        if line.starts_with("index ") {
            return Some(Self::Index);
        }
        let prefixed = |set: &[&str]| set.iter().find(|p| line.starts_with(**p)).map(|p| p.len());
        prefixed(&STRIPPED)
            .map(Self::Stripped)
            .or_else(|| prefixed(&UNSTRIPPED).map(Self::Unstripped))
            .or_else(|| prefixed(&MODE).map(Self::Mode))
    }

    /// Candidate names as the tools could read them, after `-p1` where it applies. Err carries
    /// the offending text of a malformed quoted name.
    fn candidates(self, line: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        match self {
            Self::GitDiff => {
                let rest = &line["diff --git ".len()..];
                // GNU patch: two whitespace-separated (or quoted) tokens.
                let mut tail = rest;
                for _ in 0..2 {
                    let Some((token, after)) = next_token(tail)? else {
                        break;
                    };
                    out.extend(strip_p1(&token));
                    tail = after;
                }
                // git: when unquoted, the split where both names agree after stripping.
                if !rest.contains('"') {
                    if rest.matches(' ').count() > MAX_GIT_HEADER_SPACES {
                        return Err(rest.to_string());
                    }
                    for (i, _) in rest.match_indices(' ') {
                        let (left, right) = (&rest[..i], &rest[i + 1..]);
                        if let (Some(l), Some(r)) = (git_strip_p1(left), git_strip_p1(right)) {
                            if l == r {
                                out.push(l);
                            }
                        }
                    }
                }
            }
            Self::Stripped(prefix) => {
                for name in names_with_dates(&line[prefix..])? {
                    if name == "/dev/null" {
                        continue;
                    }
                    // Absolute names are refused as written, before stripping hides them.
                    if name.starts_with('/') {
                        out.push(name);
                        continue;
                    }
                    out.extend(strip_p1(&name));
                }
            }
            Self::Unstripped(prefix) => {
                let rest = line[prefix..].trim_start();
                if rest.starts_with('"') {
                    out.extend(next_token(rest)?.map(|(t, _)| t));
                } else {
                    out.push(rest.trim_end().to_string());
                    out.extend(next_token(rest)?.map(|(t, _)| t));
                }
            }
            Self::Mode(_) | Self::Index => {}
        }
        Ok(out)
    }

    fn vet_mode(self, line: &str, line_no: usize) -> Result<(), PatchRejection> {
        let mode_text = match self {
            Self::Mode(prefix) => line[prefix..].split_whitespace().next(),
            Self::Index => line.split_whitespace().nth(2),
            _ => None,
        };
        let Some(mode_text) = mode_text else {
            return Ok(());
        };
        let octal: String = mode_text
            .chars()
            .take_while(|c| ('0'..='7').contains(c))
            .collect();
        let mode = u64::from_str_radix(&octal, 8).unwrap_or(0);
        match mode & 0o170000 {
            0o120000 => Err(PatchRejection::CreatesSymlink { line: line_no }),
            0o160000 => Err(PatchRejection::Submodule { line: line_no }),
            _ => Ok(()),
        }
    }
}

/// A name of a `---`-like line: quoted, or every reading GNU patch and git may take (up to
/// the first whitespace; up to the tab before a date, for names with spaces).
fn names_with_dates(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim_start();
    if rest.starts_with('"') {
        return Ok(next_token(rest)?.map(|(t, _)| t).into_iter().collect());
    }
    let mut out = Vec::new();
    if let Some(first) = rest.split_whitespace().next() {
        out.push(first.to_string());
    }
    let before_tab = rest.split('\t').next().unwrap_or(rest).trim_end();
    if !before_tab.is_empty() {
        out.push(before_tab.to_string());
    }
    Ok(out)
}

/// The next name: a C-quoted string or a run of non-whitespace; and the text after it.
fn next_token(s: &str) -> Result<Option<(String, &str)>, String> {
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(None);
    }
    if s.starts_with('"') {
        let (name, used) = unquote_c(s).ok_or_else(|| s.to_string())?;
        return Ok(Some((name, &s[used..])));
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Ok(Some((s[..end].to_string(), &s[end..])))
}

/// Decodes a git/GNU-patch C-style quoted name at the start of `s`: the name and the bytes
/// consumed. None when unterminated, badly escaped or not UTF-8 once decoded.
fn unquote_c(s: &str) -> Option<(String, usize)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return String::from_utf8(out).ok().map(|n| (n, i + 1)),
            b'\\' => {
                let esc = *bytes.get(i + 1)?;
                let simple = match esc {
                    b'a' => Some(7),
                    b'b' => Some(8),
                    b't' => Some(b'\t'),
                    b'n' => Some(b'\n'),
                    b'v' => Some(11),
                    b'f' => Some(12),
                    b'r' => Some(b'\r'),
                    b'"' => Some(b'"'),
                    b'\\' => Some(b'\\'),
                    _ => None,
                };
                if let Some(b) = simple {
                    out.push(b);
                    i += 2;
                } else {
                    let octal = bytes.get(i + 1..i + 4)?;
                    if !octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                        return None;
                    }
                    let value = octal
                        .iter()
                        .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                    out.push(u8::try_from(value).ok()?);
                    i += 4;
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// `-p1` as GNU patch does it: slash runs count once; too few slashes means no name.
fn strip_p1(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pos) = name.find('/') {
        let rest = name[pos..].trim_start_matches('/');
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out.extend(git_strip_p1(name));
    out
}

/// `-p1` as git apply does it: everything up to the first slash goes, then slash runs are
/// squashed. A result that is then absolute (`a//x` gives `/x`) is no name: git refuses it
/// ("invalid path") without touching anything, and counting it would reject removed lines
/// such as `-- see http://host/x` for nothing.
fn git_strip_p1(name: &str) -> Option<String> {
    let pos = name.find('/')?;
    let rest = &name[pos + 1..];
    if rest.is_empty() {
        return None;
    }
    let mut squashed = String::with_capacity(rest.len());
    for c in rest.chars() {
        if !(c == '/' && squashed.ends_with('/')) {
            squashed.push(c);
        }
    }
    (!squashed.starts_with('/')).then_some(squashed)
}

/// Vets one candidate name (already stripped). Ok(None): a name that names nothing (empty).
fn vet_name(name: &str, line: usize) -> Result<Option<NamedPath>, PatchRejection> {
    if name.chars().any(char::is_control) {
        return Err(PatchRejection::BadPathCharacters {
            line,
            path: name.escape_debug().to_string(),
        });
    }
    if name.starts_with('/') {
        return Err(PatchRejection::AbsolutePath {
            line,
            path: name.to_string(),
        });
    }
    let literal: Vec<String> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    if literal.iter().any(|c| c.eq_ignore_ascii_case(".git")) {
        return Err(PatchRejection::GitDirectory {
            line,
            path: name.to_string(),
        });
    }
    let mut normalized: Vec<String> = Vec::new();
    for component in &literal {
        if component == ".." {
            if normalized.pop().is_none() {
                return Err(PatchRejection::OutsideTree {
                    line,
                    path: name.to_string(),
                });
            }
        } else {
            normalized.push(component.clone());
        }
    }
    if normalized.is_empty() {
        return Ok(None);
    }
    Ok(Some(NamedPath {
        literal,
        normalized,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rels(patch: &str) -> Vec<String> {
        let mut v: Vec<String> = named_paths(patch)
            .unwrap()
            .iter()
            .map(NamedPath::relative)
            .collect();
        v.dedup();
        v
    }

    #[test]
    fn plain_unified_headers_are_stripped_like_p1() {
        let p = "--- a/src/x.py\t2024-01-01 10:00:00.000000000 +0000\n+++ b/src/x.py\t2024-01-01\n@@ -1,1 +1,1 @@\n-a\n+b\n";
        assert_eq!(rels(p), vec!["src/x.py"]);
    }

    #[test]
    fn names_with_spaces_before_a_tab_date_are_read_both_ways() {
        let p = "--- a/my file.c\t2024-01-01\n+++ b/my file.c\t2024-01-01\n";
        assert_eq!(rels(p), vec!["my", "my file.c"]);
    }

    #[test]
    fn git_headers_quoted_names_renames_and_copies() {
        let p = "diff --git \"a/sp ace.c\" \"b/sp ace.c\"\nrename from old/n.c\nrename to new/n.c\ncopy from c/f\ncopy to \"c/g h\"\n";
        assert_eq!(
            rels(p),
            vec!["c/f", "c/g h", "new/n.c", "old/n.c", "sp ace.c"]
        );
        let p = "diff --git a/x y b/x y\n";
        assert!(rels(p).contains(&"x y".to_string()));
    }

    #[test]
    fn dev_null_and_crlf_are_not_names() {
        assert_eq!(rels("--- /dev/null\r\n+++ b/new.c\r\n"), vec!["new.c"]);
    }

    #[test]
    fn dotdot_inside_the_tree_is_fine_outside_is_not() {
        assert_eq!(rels("--- a/d/../e.c\n"), vec!["e.c"]);
        assert!(matches!(
            named_paths("--- a/../../x\n+++ b/../../x\n"),
            Err(PatchRejection::OutsideTree { line: 1, .. })
        ));
        assert!(matches!(
            named_paths("rename to ../x\n"),
            Err(PatchRejection::OutsideTree { .. })
        ));
    }

    #[test]
    fn absolute_paths_are_refused_even_though_p1_would_strip_them() {
        assert!(matches!(
            named_paths("--- /etc/passwd\n+++ /etc/passwd\n"),
            Err(PatchRejection::AbsolutePath { .. })
        ));
        // git squashes `b//x` into `/x` and refuses it; patch -p1 reads `etc/x`.
        assert_eq!(rels("diff --git a//etc/x b//etc/x\n"), vec!["etc/x"]);
        assert_eq!(rels("--- -- see http://host/x\n"), vec!["host/x"]);
        assert!(matches!(
            named_paths("copy to /tmp/x\n"),
            Err(PatchRejection::AbsolutePath { .. })
        ));
    }

    #[test]
    fn git_directory_in_any_case_is_refused() {
        for p in [
            "--- a/.git/config\n",
            "+++ b/sub/.GIT/hooks/pre-commit\n",
            "diff --git a/.Git/x b/.Git/x\n",
            "  --- a/.git/config\n",
        ] {
            assert!(
                matches!(named_paths(p), Err(PatchRejection::GitDirectory { .. })),
                "{p}"
            );
        }
        // `.gitignore` is an ordinary file.
        assert_eq!(rels("--- a/.gitignore\n"), vec![".gitignore"]);
    }

    #[test]
    fn control_characters_bad_quotes_and_non_utf8_are_refused() {
        for p in [
            "--- \"a/x\\ty\"\n",
            "--- a/x\u{1b}y\n",
            "--- \"a/x\n",
            "--- \"a/\\377\"\n",
            "--- \"a/\\q\"\n",
        ] {
            assert!(
                matches!(
                    named_paths(p),
                    Err(PatchRejection::BadPathCharacters { .. })
                ),
                "{p:?}"
            );
        }
        assert_eq!(rels("--- \"a/\\303\\251t\\303\\251\"\n"), vec!["été"]);
    }

    #[test]
    fn symlink_and_submodule_modes_are_refused() {
        for (p, symlink) in [
            ("new file mode 120000\n", true),
            ("new mode 120000\n", true),
            ("index 0000000..1234567 120000\n", true),
            ("new file mode 160000\n", false),
        ] {
            let r = named_paths(p);
            if symlink {
                assert!(matches!(r, Err(PatchRejection::CreatesSymlink { line: 1 })));
            } else {
                assert!(matches!(r, Err(PatchRejection::Submodule { line: 1 })));
            }
        }
        assert!(named_paths("new file mode 100755\nindex 1..2 100644\n").is_ok());
    }

    #[test]
    fn ed_scripts_and_oversize_input_are_refused() {
        assert!(matches!(
            named_paths("1a\n!id\n.\n"),
            Err(PatchRejection::EdScript { line: 3 })
        ));
        let huge = "x".repeat(MAX_PATCH_BYTES + 1);
        assert!(matches!(
            named_paths(&huge),
            Err(PatchRejection::TooLarge { .. })
        ));
        let spaces = format!("diff --git a/{}x b/x\n", "d ".repeat(MAX_GIT_HEADER_SPACES));
        assert!(matches!(
            named_paths(&spaces),
            Err(PatchRejection::BadPathCharacters { line: 1, .. })
        ));
        let long = format!("--- a/{}\n", "d/".repeat(MAX_HEADER_LINE_BYTES));
        assert!(matches!(
            named_paths(&long),
            Err(PatchRejection::HeaderLineTooLong { line: 1, .. })
        ));
    }

    #[test]
    fn symlinks_anywhere_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("real")).unwrap();
        fs::write(tree.join("real/f.c"), "x").unwrap();
        std::os::unix::fs::symlink("real", tree.join("link")).unwrap();
        std::os::unix::fs::symlink("real/f.c", tree.join("flink.c")).unwrap();
        for p in [
            "--- a/link/f.c\n",
            "--- a/flink.c\n",
            "--- a/link/../real/f.c\n",
        ] {
            assert!(
                matches!(
                    vet_patch(&tree, p),
                    Err(PatchRejection::ThroughSymlink { .. })
                ),
                "{p}"
            );
        }
        assert!(vet_patch(&tree, "--- a/real/f.c\n+++ b/real/new/g.c\n").is_ok());
    }
}
