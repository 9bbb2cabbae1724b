//! v1 patch application: upstream's four attempts, made safe.
//!
//! Order and semantics follow upstream (`try_patch` in v1 `run_code_generation.py`):
//! `git apply --verbose`, then `patch --batch --fuzz=5 -p1 -i`, then the same two with the
//! repaired patch ([`crate::answer::patch_repair`]); the tree is reset before each retry, an empty
//! patch fails without any attempt, and an empty repair skips attempts three and four.
//!
//! Deviations from upstream, and why:
//! - the patch is vetted first ([`crate::answer::patch_paths`]); a refused patch is a failed
//!   generation with the reason, and no tool runs;
//! - the patch file lives in a temporary directory outside the tree (upstream writes
//!   `patch.diff` into the tree and leaves it there, where the scanner then sees it);
//! - `patch` also gets `--no-backup-if-mismatch -r -`, so it leaves no `.orig` or `.rej`
//!   files (upstream's trees keep them); any other file a tool leaves beside the named paths
//!   is deleted too;
//! - "reset" restores a snapshot of exactly the paths the patch names (content, existence,
//!   permissions, created directories) instead of re-copying the whole repository, so the tree
//!   need not be a git repository and nothing else in it is touched;
//! - the tools run with a clean environment (`PATH`, `LC_ALL=C`, no user or system git
//!   config), stdin closed, output capped, a timeout that kills their process group, and
//!   `GIT_CEILING_DIRECTORIES` set to the tree's parent: `git apply` uses the tree's own
//!   repository when the tree root has one (as upstream, which ran in a full clone) and
//!   otherwise works as a plain patch tool; it never walks up into an enclosing repository,
//!   where it would read paths relative to that repository's top and skip files outside the
//!   tree.

use crate::answer::patch_paths::{self, is_absent, NamedPath, PatchRejection};
use crate::answer::patch_repair::repair_patch;
use crate::process::{self, Bounds};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How the tools are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Per attempt; the tool's process group is killed when it expires.
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept per attempt.
    pub max_output_bytes: usize,
    /// Total bytes of the named files the snapshot may hold; beyond it the patch is refused.
    pub max_snapshot_bytes: u64,
    pub git_program: PathBuf,
    pub patch_program: PathBuf,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            timeout: Duration::from_secs(60),
            max_output_bytes: 8 * 1024,
            max_snapshot_bytes: 256 * 1024 * 1024,
            git_program: PathBuf::from("git"),
            patch_program: PathBuf::from("patch"),
        }
    }
}

/// The four attempts, in upstream's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    GitApply,
    Patch,
    RepairedGitApply,
    RepairedPatch,
}

/// What one tool run did. Output is cut at `max_output_bytes` (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub kind: AttemptKind,
    /// None when killed by a signal (timeout included) or never started.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Why the tool could not be started at all.
    pub spawn_error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub output_truncated: bool,
}

impl AttemptRecord {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

/// Why no attempt applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ApplyFailure {
    /// Nothing to apply (upstream stops here too).
    EmptyPatch,
    /// Refused before any tool ran.
    Rejected { rejection: PatchRejection },
    /// Attempts one and two failed and the repair produced nothing (upstream stops here too).
    RepairEmpty,
    /// Attempts one and two failed and the repaired patch was refused.
    RepairRejected { rejection: PatchRejection },
    /// Every attempt ran and failed; see the attempt records.
    AllAttemptsFailed,
    /// The files the patch (or its repair) names hold more than `max_snapshot_bytes`: refused,
    /// the answer's doing; the tree is as it was.
    SnapshotTooLarge { max_bytes: u64 },
    /// Reading, snapshotting or restoring the tree failed; the tree may be modified.
    TreeIo { message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
}

/// A file the applied patch changed, relative to the tree with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ApplyStatus {
    Applied { by: AttemptKind },
    Failed { failure: ApplyFailure },
}

/// The result of [`apply_patch`]: never an error, always a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub status: ApplyStatus,
    /// Every attempt that ran, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Empty unless applied; sorted by path.
    pub changes: Vec<FileChange>,
}

impl ApplyOutcome {
    pub fn applied(&self) -> bool {
        matches!(self.status, ApplyStatus::Applied { .. })
    }

    pub fn applied_by(&self) -> Option<AttemptKind> {
        match self.status {
            ApplyStatus::Applied { by } => Some(by),
            ApplyStatus::Failed { .. } => None,
        }
    }

    fn failed(failure: ApplyFailure, attempts: Vec<AttemptRecord>) -> Self {
        ApplyOutcome {
            status: ApplyStatus::Failed { failure },
            attempts,
            changes: Vec::new(),
        }
    }
}

/// Applies a v1 model patch to `tree` the way upstream does (see the module doc). On failure
/// the tree is left as it was; on success only the named files differ.
pub fn apply_patch(tree: &Path, patch: &str, opts: &ApplyOptions) -> ApplyOutcome {
    if patch.is_empty() {
        return ApplyOutcome::failed(ApplyFailure::EmptyPatch, Vec::new());
    }
    let paths = match patch_paths::vet_patch(tree, patch) {
        Ok(paths) => paths,
        Err(rejection) => {
            return ApplyOutcome::failed(ApplyFailure::Rejected { rejection }, Vec::new())
        }
    };
    let mut run = match Run::start(tree, opts, &paths) {
        Ok(run) => run,
        Err(failure) => return ApplyOutcome::failed(failure, Vec::new()),
    };
    for kind in [AttemptKind::GitApply, AttemptKind::Patch] {
        match run.attempt(kind, patch) {
            Ok(true) => return run.finish_applied(kind),
            Ok(false) => {}
            Err(e) => return run.finish_failed(tree_io(e)),
        }
    }
    let repaired = repair_patch(patch);
    if repaired.is_empty() {
        return run.finish_failed(ApplyFailure::RepairEmpty);
    }
    // The repair can put text at a line start that was mid-line before: vet it afresh and
    // snapshot any path only it names (the tree is back to its original state here).
    let repaired_paths = match patch_paths::vet_patch(tree, &repaired) {
        Ok(p) => p,
        Err(rejection) => return run.finish_failed(ApplyFailure::RepairRejected { rejection }),
    };
    if let Err(e) = run
        .snapshot
        .extend(tree, &repaired_paths, opts.max_snapshot_bytes)
    {
        return run.finish_failed(e.into());
    }
    for kind in [AttemptKind::RepairedGitApply, AttemptKind::RepairedPatch] {
        match run.attempt(kind, &repaired) {
            Ok(true) => return run.finish_applied(kind),
            Ok(false) => {}
            Err(e) => return run.finish_failed(tree_io(e)),
        }
    }
    run.finish_failed(ApplyFailure::AllAttemptsFailed)
}

fn tree_io(e: io::Error) -> ApplyFailure {
    ApplyFailure::TreeIo {
        message: e.to_string(),
    }
}

/// Why the snapshot of the named paths could not be taken.
#[derive(Debug)]
enum SnapshotError {
    TooLarge { max_bytes: u64 },
    Io(io::Error),
}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> Self {
        SnapshotError::Io(e)
    }
}

impl From<SnapshotError> for ApplyFailure {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::TooLarge { max_bytes } => ApplyFailure::SnapshotTooLarge { max_bytes },
            SnapshotError::Io(e) => tree_io(e),
        }
    }
}

/// State shared by the attempts of one application.
struct Run<'a> {
    tree: &'a Path,
    opts: &'a ApplyOptions,
    /// Holds the patch file, the git HOME, and nothing in the tree.
    scratch: tempfile::TempDir,
    snapshot: Snapshot,
    attempts: Vec<AttemptRecord>,
}

impl<'a> Run<'a> {
    fn start(
        tree: &'a Path,
        opts: &'a ApplyOptions,
        paths: &[NamedPath],
    ) -> Result<Self, ApplyFailure> {
        let mut snapshot = Snapshot::default();
        snapshot.extend(tree, paths, opts.max_snapshot_bytes)?;
        Ok(Run {
            tree,
            opts,
            scratch: tempfile::tempdir().map_err(tree_io)?,
            snapshot,
            attempts: Vec::new(),
        })
    }

    /// Runs one attempt; on failure puts the tree back. Ok(applied).
    fn attempt(&mut self, kind: AttemptKind, patch: &str) -> io::Result<bool> {
        let patch_file = self.scratch.path().join("patch.diff");
        fs::write(&patch_file, patch)?;
        let command = match kind {
            AttemptKind::GitApply | AttemptKind::RepairedGitApply => {
                self.git_apply_command(&patch_file)?
            }
            AttemptKind::Patch | AttemptKind::RepairedPatch => self.patch_command(&patch_file),
        };
        let record = run_bounded(command, kind, self.opts);
        let ok = record.succeeded();
        self.attempts.push(record);
        if ok {
            self.snapshot.sweep_strays(self.tree)?;
        } else {
            self.snapshot.restore(self.tree)?;
        }
        Ok(ok)
    }

    fn base_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.tree)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("HOME", self.scratch.path());
        cmd
    }

    fn git_apply_command(&self, patch_file: &Path) -> io::Result<Command> {
        let mut cmd = self.base_command(&self.opts.git_program);
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0");
        // Git compares ceilings with its real working directory, so give it the real parent.
        if let Some(parent) = fs::canonicalize(self.tree)?.parent() {
            cmd.env("GIT_CEILING_DIRECTORIES", parent);
        }
        cmd.arg("apply").arg("--verbose").arg(patch_file);
        Ok(cmd)
    }

    fn patch_command(&self, patch_file: &Path) -> Command {
        let mut cmd = self.base_command(&self.opts.patch_program);
        cmd.args([
            "--batch",
            "--fuzz=5",
            "-p1",
            "--no-backup-if-mismatch",
            "-r",
            "-",
            "-i",
        ])
        .arg(patch_file);
        cmd
    }

    fn finish_applied(self, by: AttemptKind) -> ApplyOutcome {
        match self.snapshot.changes(self.tree) {
            Ok(changes) => ApplyOutcome {
                status: ApplyStatus::Applied { by },
                attempts: self.attempts,
                changes,
            },
            Err(e) => ApplyOutcome::failed(tree_io(e), self.attempts),
        }
    }

    fn finish_failed(self, failure: ApplyFailure) -> ApplyOutcome {
        ApplyOutcome::failed(failure, self.attempts)
    }
}

/// What an ancestor of a named path was before the first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DirState {
    Missing,
    /// A file or other non-directory: nothing can be below it; left alone.
    NotDir,
    Listed(BTreeSet<OsString>),
}

/// What a named path was before the first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Absent,
    File { content: Vec<u8>, mode: u32 },
    Dir,
}

/// The named paths, their parent directories and those directories' listings, so that any
/// attempt can be undone exactly and leftovers (backups, rejects, temporaries) found.
#[derive(Debug, Default)]
struct Snapshot {
    /// Named paths (normalised, relative) and what they were.
    entries: BTreeMap<PathBuf, Entry>,
    /// Every ancestor directory of a named path (the root is "") and what it was.
    dirs: BTreeMap<PathBuf, DirState>,
    bytes: u64,
}

impl Snapshot {
    fn extend(
        &mut self,
        tree: &Path,
        paths: &[NamedPath],
        max_bytes: u64,
    ) -> Result<(), SnapshotError> {
        for path in paths {
            let rel: PathBuf = path.normalized.iter().collect();
            if !self.entries.contains_key(&rel) {
                let entry = read_entry(&tree.join(&rel))?;
                if let Entry::File { content, .. } = &entry {
                    self.bytes += content.len() as u64;
                    if self.bytes > max_bytes {
                        return Err(SnapshotError::TooLarge { max_bytes });
                    }
                }
                self.entries.insert(rel.clone(), entry);
            }
            let mut dir = rel.clone();
            while dir.pop() {
                if !self.dirs.contains_key(&dir) {
                    let listing = list_dir(&tree.join(&dir))?;
                    self.dirs.insert(dir.clone(), listing);
                }
            }
        }
        Ok(())
    }

    /// Puts every named path back, removes directories that did not exist, then leftovers.
    fn restore(&self, tree: &Path) -> io::Result<()> {
        // git removes directories it emptied; their files cannot be written back without them.
        for (rel, before) in &self.dirs {
            if matches!(before, DirState::Listed(_)) && !tree.join(rel).is_dir() {
                remove_any(&tree.join(rel))?;
                fs::create_dir(tree.join(rel))?;
            }
        }
        for (rel, entry) in &self.entries {
            let full = tree.join(rel);
            let now = fs::symlink_metadata(&full);
            match entry {
                Entry::Absent => {
                    if now.is_ok() {
                        remove_any(&full)?;
                    }
                }
                Entry::File { content, mode } => {
                    if let Ok(meta) = &now {
                        if !meta.is_file() {
                            remove_any(&full)?;
                        }
                    }
                    fs::write(&full, content)?;
                    fs::set_permissions(&full, fs::Permissions::from_mode(*mode))?;
                }
                Entry::Dir => {
                    if let Ok(meta) = &now {
                        if !meta.is_dir() {
                            remove_any(&full)?;
                        }
                    }
                    if fs::symlink_metadata(&full).is_err() {
                        fs::create_dir(&full)?;
                    }
                }
            }
        }
        // Shallow first: removing a created directory removes the created ones below it.
        for (rel, before) in &self.dirs {
            if *before == DirState::Missing && fs::symlink_metadata(tree.join(rel)).is_ok() {
                remove_any(&tree.join(rel))?;
            }
        }
        self.sweep_strays(tree)
    }

    /// Deletes what appeared in a listed directory but is neither a named path nor on the way
    /// to one: `.orig`/`.rej` files and temporaries of a killed tool.
    fn sweep_strays(&self, tree: &Path) -> io::Result<()> {
        for (rel, before) in &self.dirs {
            let DirState::Listed(now) = list_dir(&tree.join(rel))? else {
                continue;
            };
            for name in now {
                if matches!(before, DirState::Listed(b) if b.contains(&name)) {
                    continue;
                }
                let child = rel.join(&name);
                if self.entries.contains_key(&child) || self.dirs.contains_key(&child) {
                    continue;
                }
                remove_any(&tree.join(&child))?;
            }
        }
        Ok(())
    }

    /// Named files whose existence, content or permissions differ from the snapshot.
    fn changes(&self, tree: &Path) -> io::Result<Vec<FileChange>> {
        let mut out = Vec::new();
        for (rel, before) in &self.entries {
            let now = read_entry(&tree.join(rel))?;
            let kind = match (before, &now) {
                (Entry::File { .. } | Entry::Dir, Entry::Absent) => Some(ChangeKind::Deleted),
                (Entry::Absent | Entry::Dir, Entry::File { .. }) => Some(ChangeKind::Created),
                (Entry::File { .. }, Entry::File { .. }) if before != &now => {
                    Some(ChangeKind::Modified)
                }
                _ => None,
            };
            if let Some(kind) = kind {
                out.push(FileChange {
                    path: rel.to_string_lossy().into_owned(),
                    kind,
                });
            }
        }
        Ok(out)
    }
}

fn read_entry(full: &Path) -> io::Result<Entry> {
    match fs::symlink_metadata(full) {
        Err(e) if is_absent(&e) => Ok(Entry::Absent),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => Ok(Entry::Dir),
        Ok(meta) if meta.is_file() => Ok(Entry::File {
            content: fs::read(full)?,
            mode: meta.permissions().mode() & 0o7777,
        }),
        Ok(_) => Err(io::Error::other(format!(
            "{} is neither a file nor a directory",
            full.display()
        ))),
    }
}

fn list_dir(full: &Path) -> io::Result<DirState> {
    match fs::symlink_metadata(full) {
        Err(e) if is_absent(&e) => Ok(DirState::Missing),
        Err(e) => Err(e),
        Ok(meta) if !meta.is_dir() => Ok(DirState::NotDir),
        Ok(_) => fs::read_dir(full)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<BTreeSet<_>>>()
            .map(DirState::Listed),
    }
}

/// Removes a file, symlink or directory tree (never following symlinks).
fn remove_any(full: &Path) -> io::Result<()> {
    match fs::symlink_metadata(full) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(full),
        Ok(_) => fs::remove_file(full),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs a tool through the project's one runner ([`crate::process`]): stdin closed, output
/// capped, in its own process group that is killed when `opts.timeout` expires.
fn run_bounded(cmd: Command, kind: AttemptKind, opts: &ApplyOptions) -> AttemptRecord {
    let mut record = AttemptRecord {
        kind,
        exit_code: None,
        timed_out: false,
        spawn_error: None,
        stdout: String::new(),
        stderr: String::new(),
        output_truncated: false,
    };
    match process::run(cmd, &Bounds::new(opts.timeout, opts.max_output_bytes)) {
        Err(e) => record.spawn_error = Some(format!("{}: {}", e.program, e.source)),
        Ok(done) => {
            record.exit_code = done.code();
            record.timed_out = done.timed_out;
            record.output_truncated = done.stdout_truncated || done.stderr_truncated;
            record.stdout = done.stdout_lossy();
            record.stderr = done.stderr_lossy();
        }
    }
    record
}

#[cfg(test)]
mod tests;
