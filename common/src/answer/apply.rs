//! Protocol steps 5-6: a model's answer into a project's tree. A v1 answer's patch is vetted,
//! every file it names is given its own copy, and it is applied with upstream's four attempts;
//! a v2 answer's code is spliced into the masked file. The tree is anything that implements
//! [`AnswerTree`] (the worker's unit tree; a temporary directory in the tests).
//!
//! Two kinds of failure, kept apart because they are blamed differently: a [`Refusal`] is the
//! answer's doing (the unit's generation fails with its reason, and is scored); an
//! [`AnswerError`] is the tree's (its disk failed: the unit is retried, not scored).

use super::extract::{extract_code, extract_patch};
use super::patch_apply::{apply_patch, ApplyFailure, ApplyOptions, ApplyStatus, AttemptKind};
use super::patch_paths::{named_paths, PatchRejection};
use super::splice::{splice, SpliceFailure, SpliceOutcome};
use crate::dataset::DatasetVersion;
use crate::prompt::masking::MaskedFile;
use crate::unit::ApplyMethod;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A project's files as the answer sees them: paths are relative to the project root, `/`
/// separated.
pub trait AnswerTree {
    /// What the tree's own operations fail with.
    type Error: std::error::Error;

    /// The project root on disk: where the patch tools run.
    fn root(&self) -> PathBuf;

    /// Give `rel` its own copy of the data (a tool is about to modify it in place, and the
    /// data may be shared with other trees). A missing file is fine (the patch may create it).
    fn make_private(&mut self, rel: &str) -> Result<(), TreeError<Self::Error>>;

    /// Write `rel` (new file or replacement).
    fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), TreeError<Self::Error>>;
}

/// Why an [`AnswerTree`] operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E> {
    /// The path is not a plain relative path inside the tree (absolute, `..`, `.git`, through a
    /// symlink). `path` is as the tree names it.
    #[error("path {path:?} is not inside the tree: {source}")]
    Outside {
        path: String,
        #[source]
        source: E,
    },
    /// The tree itself failed (its disk).
    #[error(transparent)]
    Failed(E),
}

/// The answer's doing: the generation fails with this reason (and is scored).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NoPatch,
    PatchRejected(PatchRejection),
    /// A path the patch names is not inside the tree.
    Outside(String),
    /// The files the patch names are larger than the snapshot may hold.
    SnapshotTooLarge {
        max_bytes: u64,
    },
    DoesNotApply(ApplyFailure),
    NoCode,
    SpliceFailed(SpliceFailure),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoPatch => write!(f, "no patch in the answer"),
            Refusal::PatchRejected(r) => write!(f, "patch refused: {r}"),
            Refusal::Outside(path) => {
                write!(f, "patch refused: path {path:?} is not inside the tree")
            }
            Refusal::SnapshotTooLarge { max_bytes } => write!(
                f,
                "patch refused: the files the patch names exceed the snapshot limit of \
                 {max_bytes} bytes"
            ),
            Refusal::DoesNotApply(failure) => write!(
                f,
                "patch does not apply: {}",
                serde_json::to_string(failure).unwrap_or_default()
            ),
            Refusal::NoCode => write!(f, "no code in the answer"),
            Refusal::SpliceFailed(failure) => write!(f, "splice failed: {failure}"),
        }
    }
}

/// The tree's doing: the unit is retried rather than scored.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError<E> {
    #[error(transparent)]
    Tree(TreeError<E>),
    /// A patch tool could not read or restore the tree (reported by [`apply_patch`]).
    #[error("applying the patch: {0}")]
    ToolIo(String),
}

/// What applying an answer did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// How the answer went in, or why it did not.
    pub outcome: Result<ApplyMethod, Refusal>,
    /// Project-relative paths the answer wrote or may have written (given their own copy).
    pub touched: BTreeSet<String>,
}

/// Apply `answer` to `tree`, whose masked file (`vuln_file`) already holds `masked`.
pub fn apply_answer<T: AnswerTree>(
    tree: &mut T,
    version: DatasetVersion,
    vuln_file: &str,
    masked: &MaskedFile,
    answer: &str,
    opts: &ApplyOptions,
) -> Result<Applied, AnswerError<T::Error>> {
    let mut touched = BTreeSet::new();
    let outcome = match version {
        DatasetVersion::V1 => apply_patch_answer(tree, answer, opts, &mut touched)?,
        DatasetVersion::V2 => splice_answer(tree, vuln_file, masked, answer, &mut touched)?,
    };
    Ok(Applied { outcome, touched })
}

fn apply_patch_answer<T: AnswerTree>(
    tree: &mut T,
    answer: &str,
    opts: &ApplyOptions,
    touched: &mut BTreeSet<String>,
) -> Result<Result<ApplyMethod, Refusal>, AnswerError<T::Error>> {
    let Some(patch) = extract_patch(answer) else {
        return Ok(Err(Refusal::NoPatch));
    };
    let named = match named_paths(&patch.text) {
        Ok(n) => n,
        Err(r) => return Ok(Err(Refusal::PatchRejected(r))),
    };
    // The tools write in place: every file they may touch gets its own copy first, so data
    // the tree shares (the worker's hard-linked base tree) is never modified.
    for p in &named {
        let rel = p.relative();
        match tree.make_private(&rel) {
            Ok(()) => {
                touched.insert(rel);
            }
            Err(TreeError::Outside { path, .. }) => return Ok(Err(Refusal::Outside(path))),
            Err(e) => return Err(AnswerError::Tree(e)),
        }
    }
    let outcome = apply_patch(&tree.root(), &patch.text, opts);
    match outcome.status {
        // The answer's doing: scored.
        ApplyStatus::Failed {
            failure: ApplyFailure::SnapshotTooLarge { max_bytes },
        } => Ok(Err(Refusal::SnapshotTooLarge { max_bytes })),
        // The tree's disk failed, not the patch: retry the unit rather than score it.
        ApplyStatus::Failed {
            failure: ApplyFailure::TreeIo { message },
        } => Err(AnswerError::ToolIo(message)),
        ApplyStatus::Failed { failure } => Ok(Err(Refusal::DoesNotApply(failure))),
        ApplyStatus::Applied { by } => {
            touched.extend(outcome.changes.into_iter().map(|c| c.path));
            Ok(Ok(match by {
                AttemptKind::GitApply => ApplyMethod::GitApply,
                AttemptKind::Patch => ApplyMethod::Patch,
                AttemptKind::RepairedGitApply => ApplyMethod::RepairedGitApply,
                AttemptKind::RepairedPatch => ApplyMethod::RepairedPatch,
            }))
        }
    }
}

fn splice_answer<T: AnswerTree>(
    tree: &mut T,
    vuln_file: &str,
    masked: &MaskedFile,
    answer: &str,
    touched: &mut BTreeSet<String>,
) -> Result<Result<ApplyMethod, Refusal>, AnswerError<T::Error>> {
    let Some(code) = extract_code(answer) else {
        return Ok(Err(Refusal::NoCode));
    };
    match splice(masked, &code) {
        SpliceOutcome::Spliced(s) => {
            tree.write(vuln_file, s.file_text.as_bytes())
                .map_err(AnswerError::Tree)?;
            touched.insert(vuln_file.to_string());
            Ok(Ok(ApplyMethod::Splice))
        }
        SpliceOutcome::Failed(f) => Ok(Err(Refusal::SpliceFailed(f))),
    }
}

#[cfg(test)]
mod tests;
