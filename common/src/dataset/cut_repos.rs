//! `cut_repos.json` (v1 only): the reduced file set the SAST scan sees for some tasks.
//!
//! Meaning, from upstream v1 `run_security_scan.py` (`process_cut_repo_for_sast`): before the
//! scan, every generated unit folder `{instance_id}_cycle{k}` whose `instance_id` is a key of
//! this object is backed up to `{folder}_backup` and replaced by a folder holding ONLY the listed
//! files (repo-relative paths, copied with their directories). The scanner therefore only sees
//! those files; upstream does this to cut scan time on large repositories. Tasks not listed are
//! scanned whole. A listed file missing from the unit makes upstream's copy fail, and a list
//! without the task's `vuln_file` would hide the generated code from the scan.

use super::error::{DatasetError, EntryRef, Problem};
use super::raw;
use super::tasks::Dataset;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A validated `cut_repos.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct CutRepos {
    pub path: PathBuf,
    /// sha256 (lowercase hex) of the file's bytes, for provenance.
    pub sha256: String,
    /// `instance_id` -> the only repo-relative files kept for the SAST scan, in file order.
    pub files: BTreeMap<String, Vec<String>>,
}

impl CutRepos {
    /// The files the scan of this task keeps, when the task is cut.
    pub fn for_task(&self, instance_id: &str) -> Option<&[String]> {
        self.files.get(instance_id).map(Vec::as_slice)
    }

    /// Problems that only show against a dataset: a cut list that leaves out the task's own
    /// `vuln_file` (the generated code would not be scanned).
    pub fn check_against(&self, dataset: &Dataset) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (id, files) in &self.files {
            let Some(task) = dataset.get(id) else {
                continue;
            };
            if !files.iter().any(|f| f == &task.vuln_file) {
                problems.push(Problem {
                    file: self.path.clone(),
                    entry: EntryRef::Id(id.clone()),
                    field: "files".into(),
                    message: format!(
                        "the kept files do not include the task's vuln_file `{}`, so the generated code would not be scanned",
                        task.vuln_file
                    ),
                });
            }
        }
        problems
    }

    /// Ids that are not tasks of `dataset` (harmless: upstream skips them).
    pub fn unmatched<'a>(&'a self, dataset: &Dataset) -> Vec<&'a str> {
        self.files
            .keys()
            .filter(|id| dataset.get(id).is_none())
            .map(String::as_str)
            .collect()
    }
}

/// Loads and validates a `cut_repos.json`; every problem is reported at once.
pub fn load_cut_repos(path: &Path) -> Result<CutRepos, DatasetError> {
    let (bytes, _) = raw::read_bounded(path)?;
    parse_cut_repos(path, &bytes)
}

/// Validates the bytes of a `cut_repos.json`: an object mapping each `instance_id` to a
/// non-empty array of repo-relative paths without `..`.
pub fn parse_cut_repos(path: &Path, bytes: &[u8]) -> Result<CutRepos, DatasetError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| DatasetError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let Value::Object(obj) = value else {
        return Err(DatasetError::Shape {
            path: path.to_path_buf(),
            message: format!(
                "expected a JSON object mapping instance_id to a list of files, found {}",
                raw::kind(&value)
            ),
        });
    };
    let mut problems = Vec::new();
    let mut files = BTreeMap::new();
    let mut problem = |id: &str, field: String, message: String| {
        problems.push(Problem {
            file: path.to_path_buf(),
            entry: EntryRef::Id(id.to_string()),
            field,
            message,
        })
    };
    for (id, list) in &obj {
        if let Some(msg) = raw::id_problem(id) {
            problem(
                id,
                "instance_id".into(),
                format!("key is not a usable instance_id: {msg}"),
            );
            continue;
        }
        let Value::Array(items) = list else {
            problem(
                id,
                "files".into(),
                format!("expected an array of file paths, found {}", raw::kind(list)),
            );
            continue;
        };
        if items.is_empty() {
            problem(
                id,
                "files".into(),
                "empty list: the scan would see no file at all".into(),
            );
            continue;
        }
        let mut kept = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("files[{i}]");
            match item {
                Value::String(f) => match raw::relative_path_problem(f) {
                    Some(msg) => problem(id, field, msg),
                    None => kept.push(f.clone()),
                },
                other => problem(
                    id,
                    field,
                    format!("expected a file path string, found {}", raw::kind(other)),
                ),
            }
        }
        if kept.len() == items.len() {
            files.insert(id.clone(), kept);
        }
    }
    if !problems.is_empty() {
        return Err(DatasetError::Invalid { problems });
    }
    Ok(CutRepos {
        path: path.to_path_buf(),
        sha256: raw::sha256_hex(bytes),
        files,
    })
}
