//! A.S.E task files (v1 and v2) and context files: loading and validation.
//!
//! Tasks are read as raw JSON first and validated field by field, so that one pass reports
//! every problem of every task (naming the file, the `instance_id` and the field) instead of
//! stopping at the first. Fields we do not know are kept in `extra`, never rejected: upstream
//! adds fields between releases and a user's own dataset may carry annotations.
//!
//! Whether a task is v1 or v2 is decided per task from its fields (`seed`/`detected_*` vs the
//! container fields). Strings that later reach git, docker or the file system (`instance_id`,
//! `repo`, revisions, `vuln_file`, hit `docid`s) are checked here so that later steps can rely
//! on them: ids are single path components, paths are relative without `..`, revisions do not
//! start with `-`. Files are read with a size bound ([`MAX_FILE_BYTES`]).
//!
//! Also here: `cut_repos.json` (v1), see [`CutRepos`].

mod contexts;
mod cut_repos;
mod error;
mod raw;
mod tasks;

pub use contexts::{load_contexts, parse_contexts, ContextSet};
pub use cut_repos::{load_cut_repos, parse_cut_repos, CutRepos};
pub use error::{DatasetError, EntryRef, Problem};
pub use raw::{MAX_FILE_BYTES, MAX_ID_CHARS};
pub use tasks::{
    load_task_file, load_tasks, parse_task_file, parse_tasks, visit_task_file, Dataset, TaskFile,
    TaskFileSummary, VisitError,
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A 1-based, inclusive line range as written in `vuln_lines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRange {
    pub start: usize,
    pub end: usize,
}

/// Which evaluation a task belongs to: v1 is scored by SAST, v2 by build + tests + PoC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetVersion {
    V1,
    V2,
}

/// A run scores one version: its tasks must all be v1 or all v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mixes v1 and v2 tasks ({first} is {first_version:?}, {other} is {other_version:?})")]
pub struct MixedVersions {
    pub first: String,
    pub first_version: DatasetVersion,
    pub other: String,
    pub other_version: DatasetVersion,
}

/// The one version of `tasks` (`(instance_id, version)`), `None` when there is no task; the
/// one check of it, for submitting, finishing and re-scoring a run.
pub fn single_version<'a>(
    tasks: impl IntoIterator<Item = (&'a str, DatasetVersion)>,
) -> Result<Option<DatasetVersion>, MixedVersions> {
    let mut tasks = tasks.into_iter();
    let Some((first, first_version)) = tasks.next() else {
        return Ok(None);
    };
    match tasks.find(|(_, v)| *v != first_version) {
        Some((other, other_version)) => Err(MixedVersions {
            first: first.to_string(),
            first_version,
            other: other.to_string(),
            other_version,
        }),
        None => Ok(Some(first_version)),
    }
}

/// Fields only v1 (static, SAST-scored) tasks carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticSpec {
    pub seed: bool,
    /// Name of upstream's SAST image; kept for provenance, our scanner is our own.
    pub detected_tool: String,
    /// Findings of upstream's tool on the original code (the baseline upstream compares with).
    pub detected_vul_num: i64,
    /// The fix, when the dataset names it (upstream's v1 data does not; ours may).
    #[serde(default)]
    pub patch_commit: Option<String>,
}

/// An extra vulnerable file of a v2 task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherVulnFile {
    pub vuln_file: String,
    pub vuln_lines: LineRange,
}

/// Fields only v2 (dynamic, container-scored) tasks carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicSpec {
    /// The upstream fix; a few upstream v2 tasks do not name it.
    pub patch_commit: Option<String>,
    pub severity: String,
    pub image: String,
    pub image_inner_path: String,
    /// Keeps the container alive; may be empty.
    pub image_run_cmd: String,
    pub image_status_check_cmd: String,
    pub test_case_cmd: String,
    pub poc_cmd: String,
    /// Absent means false.
    pub privileged: bool,
    /// Informational: upstream neither masks nor uploads these files. Kept verbatim (one
    /// upstream path carries surrounding spaces; it is checked trimmed); upstream's
    /// `{"vuln_file": "", "vuln_lines": []}` "none" placeholders are dropped.
    pub other_vuln_files: Vec<OtherVulnFile>,
    pub branch_origin: Option<String>,
    /// Per-command timeouts in seconds (`<cmd_key>_timeout`), e.g. `poc_cmd` -> 300.
    pub timeouts: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
// A dataset holds a few hundred tasks; boxing the v2 spec would save little memory and make
// every construction and match in the workspace noisier.
#[allow(clippy::large_enum_variant)]
pub enum TaskSpec {
    V1(StaticSpec),
    V2(DynamicSpec),
}

/// One dataset entry (upstream: instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub instance_id: String,
    /// `owner/name`.
    pub repo: String,
    /// Any git revision: a sha, `sha^`, a tag.
    pub base_commit: String,
    pub vuln_file: String,
    pub vuln_lines: LineRange,
    pub language: String,
    /// The CVE id; mutated tasks share it with their seed.
    pub vuln_source: String,
    pub vuln_type: String,
    pub cwe_id: String,
    pub spec: TaskSpec,
    /// Fields we do not interpret, kept as they were.
    pub extra: Map<String, Value>,
}

impl Task {
    /// The commit that fixed the vulnerability: `patch_commit` (v2), or, when a task does not
    /// name it and `base_commit` is `<sha>^`, that `<sha>`, as upstream's `validateV2Data.py`
    /// derives it. v1 tasks have no `patch_commit`, but a `<sha>^` base names the fix the same
    /// way (19 upstream v1 tasks, and the demo dataset's); a v1 task may name it in
    /// `patch_commit` too. `None` when neither is available.
    pub fn fix_commit(&self) -> Option<&str> {
        let named = match &self.spec {
            TaskSpec::V2(s) => s.patch_commit.as_deref(),
            TaskSpec::V1(s) => s.patch_commit.as_deref(),
        };
        named
            .or_else(|| self.base_commit.strip_suffix('^'))
            .filter(|c| !c.is_empty())
    }

    pub fn version(&self) -> DatasetVersion {
        match self.spec {
            TaskSpec::V1(_) => DatasetVersion::V1,
            TaskSpec::V2(_) => DatasetVersion::V2,
        }
    }
}

/// One retrieved context file of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextHit {
    pub docid: String,
    pub score: Option<f64>,
    /// When both are set (v2), only these lines (1-based, inclusive) of the file are used.
    pub startline: Option<usize>,
    pub endline: Option<usize>,
}

/// The context of one task: retrieved files in rank order and the function summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskContext {
    pub instance_id: String,
    pub hits: Vec<ContextHit>,
    pub function_summary: String,
}
