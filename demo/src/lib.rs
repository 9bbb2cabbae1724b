//! The demo dataset of ase-cluster, written by us (`examples/demo/`, see its README): small
//! self-written repos with a vulnerable base commit and a fix commit, v1 tasks scored by our
//! semgrep rules, v2 tasks scored in self-built images (`deploy/images/build.sh`), their
//! context files and a pretend model's answers.
//!
//! Everything is compiled into the crate; [`materialise`] writes it out under a folder and
//! turns the repos into local git repositories whose commit ids are the ones the task files
//! name (deterministic commits, see [`git_repo`]).

mod embedded;
pub mod git_repo;
pub mod manifest;

use ase_common::dataset::{load_task_file, DatasetError, TaskSpec};
use serde::Serialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use manifest::DemoRepo;

/// Data files of the demo, relative to `examples/demo/` and to the materialised folder.
pub const V1_TASKS: &str = "v1/tasks.json";
pub const V1_CONTEXT: &str = "v1/context.json";
pub const V2_TASKS: &str = "v2/tasks.json";
pub const V2_CONTEXT: &str = "v2/context.json";
pub const PREDICTIONS_V1: &str = "v1/predictions.jsonl";
pub const PREDICTIONS_V2: &str = "v2/predictions.jsonl";
const MANIFEST: &str = "repos.json";
/// Where the git repos go under the materialised folder: `repos/{owner}/{name}`.
const REPOS_DIR: &str = "repos";

/// A materialised demo: where everything is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoWorld {
    /// Where it was materialised.
    pub root: PathBuf,
    /// For the worker's `--repo-url-template`: a local path with the `{repo}` placeholder.
    pub repo_url_template: String,
    pub v1_tasks: PathBuf,
    pub v1_context: PathBuf,
    pub v2_tasks: PathBuf,
    pub v2_context: Option<PathBuf>,
    /// The pretend model's answers, predictions JSONL (`worker/src/model/predictions.rs`).
    pub predictions_v1: PathBuf,
    pub predictions_v2: PathBuf,
    /// Stable image tags the v2 tasks need (built by `deploy/images/build.sh`).
    pub v2_images: Vec<String>,
}

impl DemoWorld {
    /// The local git repository of `repo` (`owner/name`).
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(REPOS_DIR).join(repo)
    }
}

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git in {dir}: {detail}")]
    Git { dir: PathBuf, detail: String },
    #[error("embedded demo file {0} is missing (examples/demo changed without a rebuild?)")]
    MissingFile(String),
    #[error("embedded demo file {file}: {source}")]
    Manifest {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("demo repo {repo}: no files under examples/demo/repos/{dir}/{tree}")]
    EmptyTree {
        repo: String,
        dir: String,
        tree: &'static str,
    },
    #[error(
        "demo repo {repo}: the {which} commit came out as {actual}, repos.json and the task files \
         name {expected} (did a tree, message or date change? update repos.json and the tasks)"
    )]
    CommitMismatch {
        repo: String,
        which: &'static str,
        expected: String,
        actual: String,
    },
    #[error("demo repo {repo}: `{path}` is not a path inside the repo")]
    BadRepoPath { repo: String, path: String },
    #[error("demo task file: {0}")]
    Dataset(#[from] DatasetError),
}

impl DemoError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DemoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The demo repos, as `examples/demo/repos.json` lists them.
pub fn repos() -> Result<Vec<DemoRepo>, DemoError> {
    let bytes = embedded::file(MANIFEST).ok_or_else(|| DemoError::MissingFile(MANIFEST.into()))?;
    manifest::parse(bytes).map_err(|source| DemoError::Manifest {
        file: MANIFEST.into(),
        source,
    })
}

/// Writes the demo under `dest` (created when missing) and returns where everything is.
///
/// Idempotent: a repo already there with the expected commits is reused, anything else in its
/// place is rebuilt; data files are rewritten only when their content differs. Deterministic:
/// the commit ids are those of `repos.json` and the task files, or this fails.
pub fn materialise(dest: &Path) -> Result<DemoWorld, DemoError> {
    std::fs::create_dir_all(dest).map_err(|e| DemoError::io(dest, e))?;
    let root = std::path::absolute(dest).map_err(|e| DemoError::io(dest, e))?;
    for entry in repos()? {
        materialise_repo(&root, &entry)?;
    }
    for rel in [
        MANIFEST,
        V1_TASKS,
        V1_CONTEXT,
        V2_TASKS,
        V2_CONTEXT,
        PREDICTIONS_V1,
        PREDICTIONS_V2,
    ] {
        let bytes = embedded::file(rel).ok_or_else(|| DemoError::MissingFile(rel.into()))?;
        write_if_changed(&root.join(rel), bytes)?;
    }
    let v2 = load_task_file(&root.join(V2_TASKS))?;
    let mut v2_images: Vec<String> = v2
        .dataset
        .tasks
        .iter()
        .filter_map(|t| match &t.spec {
            TaskSpec::V2(s) => Some(s.image.clone()),
            TaskSpec::V1(_) => None,
        })
        .collect();
    v2_images.sort();
    v2_images.dedup();
    Ok(DemoWorld {
        repo_url_template: format!("{}/{REPOS_DIR}/{{repo}}", root.display()),
        v1_tasks: root.join(V1_TASKS),
        v1_context: root.join(V1_CONTEXT),
        v2_tasks: root.join(V2_TASKS),
        v2_context: Some(root.join(V2_CONTEXT)),
        predictions_v1: root.join(PREDICTIONS_V1),
        predictions_v2: root.join(PREDICTIONS_V2),
        v2_images,
        root,
    })
}

fn materialise_repo(root: &Path, entry: &DemoRepo) -> Result<(), DemoError> {
    if entry.repo.split('/').count() != 2
        || entry
            .repo
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(DemoError::BadRepoPath {
            repo: entry.repo.clone(),
            path: entry.repo.clone(),
        });
    }
    let target = root.join(REPOS_DIR).join(&entry.repo);
    let expected = (entry.base_commit.clone(), entry.fix_commit.clone());
    if git_repo::existing_commits(&target).as_ref() == Some(&expected) {
        return Ok(());
    }
    // Built aside and renamed into place, so that an interrupted run leaves no half repo under
    // the final name.
    let parent = target.parent().expect("repo path has a parent");
    std::fs::create_dir_all(parent).map_err(|e| DemoError::io(parent, e))?;
    let building = parent.join(format!(".building-{}-{}", entry.dir, std::process::id()));
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| DemoError::io(&building, e))?;
    }
    let result = build_repo(&building, entry);
    let (base_id, fix_id) = match result {
        Ok(ids) => ids,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
    };
    for (which, exp, actual) in [
        ("base", &entry.base_commit, &base_id),
        ("fix", &entry.fix_commit, &fix_id),
    ] {
        if exp != actual {
            let _ = std::fs::remove_dir_all(&building);
            return Err(DemoError::CommitMismatch {
                repo: entry.repo.clone(),
                which,
                expected: exp.clone(),
                actual: actual.clone(),
            });
        }
    }
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| DemoError::io(&target, e))?;
    }
    if let Err(e) = std::fs::rename(&building, &target) {
        let _ = std::fs::remove_dir_all(&building);
        // Another process materialising the same folder may have won the race.
        if git_repo::existing_commits(&target).as_ref() != Some(&expected) {
            return Err(DemoError::io(&target, e));
        }
    }
    Ok(())
}

/// Creates `entry`'s git repo in `dir` (which must not exist) from the embedded trees and
/// returns its (base, fix) commit ids, without comparing them with `repos.json`: what
/// materialising produces, for checking and for updating `repos.json` after a tree changed.
pub fn build_repo(dir: &Path, entry: &DemoRepo) -> Result<(String, String), DemoError> {
    let tree = |name: &'static str| {
        let files = embedded::files_under(&format!("{REPOS_DIR}/{}/{name}", entry.dir));
        if files.is_empty() {
            return Err(DemoError::EmptyTree {
                repo: entry.repo.clone(),
                dir: entry.dir.clone(),
                tree: name,
            });
        }
        Ok(files)
    };
    let (base, fix) = (tree("base")?, tree("fix")?);
    git_repo::create(dir, entry, &base, &fix)
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let parent = path.parent().expect("data file path has a parent");
    std::fs::create_dir_all(parent).map_err(|e| DemoError::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| DemoError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DemoError::io(path, e))
}
