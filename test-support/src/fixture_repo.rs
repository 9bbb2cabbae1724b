//! Repositories generated from the rule fixtures (`rules/fixtures/<type>/<language>/`), and
//! random changes to them: inputs with real findings of every type for scan tests and for
//! `bench scan`, without network or third-party code.

use std::collections::BTreeMap;
use std::path::Path;

/// The languages of the fixtures, by file extension.
pub const EXTENSIONS: [&str; 5] = ["php", "py", "js", "go", "java"];

/// Every fixture file of one extension, over all types: (name, content).
pub fn fixture_sources(ext: &str) -> Vec<(String, String)> {
    let fixtures = crate::rules_dir().join("fixtures");
    let mut out = Vec::new();
    for t in crate::fixture_files_recursive(&fixtures) {
        if t.extension().and_then(|e| e.to_str()) == Some(ext) {
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&t).unwrap()));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no fixture of extension {ext}");
    out
}

/// Writes `n_files` files of extension `ext` under `root` (in a few directories), each a
/// fixture's content; returns path -> content (relative paths).
pub fn generate_repo(
    root: &Path,
    ext: &str,
    n_files: usize,
    rng: &mut fastrand::Rng,
) -> BTreeMap<String, String> {
    let sources = fixture_sources(ext);
    let mut files = BTreeMap::new();
    for i in 0..n_files {
        let (name, content) = &sources[rng.usize(..sources.len())];
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
        let dir = format!("pkg{}/sub{}", i % 7, i % 3);
        // Java wants the class name as the file name: keep it in a directory of its own.
        let rel = if ext == "java" {
            format!("{dir}/f{i}/{name}")
        } else {
            format!("{dir}/{stem}_{i}.{ext}")
        };
        write(root, &rel, content);
        files.insert(rel, content.clone());
    }
    files
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// One change a unit makes to its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Write { path: String, content: String },
    Delete { path: String },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Write { path, .. } | Change::Delete { path } => path,
        }
    }

    pub fn apply(&self, root: &Path) {
        match self {
            Change::Write { path, content } => write(root, path, content),
            Change::Delete { path } => std::fs::remove_file(root.join(path)).unwrap(),
        }
    }
}

/// One to three random changes to distinct files of `files`: another fixture's content, a
/// line that does not parse, a line removed, a new file, a deleted file.
pub fn random_changes(
    files: &BTreeMap<String, String>,
    ext: &str,
    rng: &mut fastrand::Rng,
) -> Vec<Change> {
    let sources = fixture_sources(ext);
    let paths: Vec<&String> = files.keys().collect();
    let mut out: Vec<Change> = Vec::new();
    for _ in 0..rng.usize(1..=3) {
        let path = paths[rng.usize(..paths.len())].clone();
        if out.iter().any(|c| c.path() == path) {
            continue;
        }
        let old = &files[&path];
        let lines: Vec<&str> = old.lines().collect();
        let change = match rng.u8(..5) {
            0 => Change::Write {
                path,
                content: sources[rng.usize(..sources.len())].1.clone(),
            },
            1 => {
                let at = rng.usize(..=lines.len());
                let mut l = lines.clone();
                l.insert(at, "this is not code ((((");
                Change::Write {
                    path,
                    content: l.join("\n") + "\n",
                }
            }
            2 if lines.len() > 1 => {
                let mut l = lines.clone();
                l.remove(rng.usize(..l.len()));
                Change::Write {
                    path,
                    content: l.join("\n") + "\n",
                }
            }
            3 => {
                let (name, content) = &sources[rng.usize(..sources.len())];
                let new = if ext == "java" {
                    format!("added/f{}/{name}", rng.u32(..))
                } else {
                    format!("added/new_{}.{ext}", rng.u32(..))
                };
                Change::Write {
                    path: new,
                    content: content.clone(),
                }
            }
            _ => Change::Delete { path },
        };
        out.push(change);
    }
    out
}
