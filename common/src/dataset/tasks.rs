//! Task files (v1 and v2): loading, per-task version detection and validation.

use super::error::{DatasetError, EntryRef, Problem};
use super::raw::{self, FieldChecker};
use super::{DynamicSpec, OtherVulnFile, StaticSpec, Task, TaskSpec};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// A validated task file.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub path: PathBuf,
    /// sha256 (lowercase hex) of the file's bytes, for provenance.
    pub sha256: String,
    /// In file order; `instance_id`s are unique.
    pub tasks: Vec<Task>,
}

impl Dataset {
    /// The task with this id. Linear: datasets hold hundreds of tasks, and keeping no index
    /// lets callers build or edit `tasks` directly.
    pub fn get(&self, instance_id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.instance_id == instance_id)
    }

    /// The seed task whose context and project layout a v1 task uses: itself for a seed (and
    /// for v2 tasks), otherwise the seed with the same `vuln_source`. When several seeds share a
    /// `vuln_source`, the last one in file order wins, as in upstream (a dict keyed by CVE id
    /// filled in file order).
    pub fn seed_of<'a>(&'a self, task: &'a Task) -> Option<&'a Task> {
        match &task.spec {
            TaskSpec::V1(s) if !s.seed => self.tasks.iter().rev().find(|t| {
                matches!(&t.spec, TaskSpec::V1(s) if s.seed) && t.vuln_source == task.vuln_source
            }),
            _ => Some(task),
        }
    }
}

/// A task file as loaded, with what `ase validate` reports beyond the tasks themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFile {
    pub dataset: Dataset,
    /// Entries in the file's array, counting exact repeats.
    pub entries: usize,
    /// Ids of entries dropped because they repeat an earlier entry exactly (same JSON value),
    /// once per dropped entry. Upstream's `data_v2.json` lists one task twice; evaluating it
    /// twice would only write the same unit folders twice, so the repeat is not an error.
    pub repeated: Vec<String>,
}

/// Loads and validates a task file; every problem of every task is reported at once.
pub fn load_tasks(path: &Path) -> Result<Dataset, DatasetError> {
    load_task_file(path).map(|f| f.dataset)
}

/// [`load_tasks`], also telling how many entries the file had and which were exact repeats.
pub fn load_task_file(path: &Path) -> Result<TaskFile, DatasetError> {
    let (bytes, _) = raw::read_bounded(path)?;
    parse_task_file(path, &bytes)
}

/// Validates the bytes of a task file; `path` names the file in problems.
pub fn parse_tasks(path: &Path, bytes: &[u8]) -> Result<Dataset, DatasetError> {
    parse_task_file(path, bytes).map(|f| f.dataset)
}

/// [`parse_tasks`] with the entry count and exact repeats.
pub fn parse_task_file(path: &Path, bytes: &[u8]) -> Result<TaskFile, DatasetError> {
    let mut tasks = Vec::new();
    let summary = visit_task_file(path, bytes, |_, task| {
        tasks.push(task);
        Ok::<(), Infallible>(())
    })
    .map_err(|e| match e {
        VisitError::Dataset(e) => e,
        VisitError::Callback(never) => match never {},
    })?;
    Ok(TaskFile {
        dataset: Dataset {
            path: path.to_path_buf(),
            sha256: summary.sha256,
            tasks,
        },
        entries: summary.entries,
        repeated: summary.repeated,
    })
}

/// What [`visit_task_file`] tells besides the tasks it handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFileSummary {
    /// sha256 (lowercase hex) of the file's bytes.
    pub sha256: String,
    /// Entries in the file's array, counting exact repeats.
    pub entries: usize,
    /// Tasks handed to the callback.
    pub tasks: usize,
    /// As [`TaskFile::repeated`].
    pub repeated: Vec<String>,
}

/// Why [`visit_task_file`] failed: the file, or the callback.
#[derive(Debug, thiserror::Error)]
pub enum VisitError<E> {
    #[error(transparent)]
    Dataset(DatasetError),
    /// The callback failed and the walk stopped there.
    #[error(transparent)]
    Callback(E),
}

/// Validates a task file as [`parse_task_file`] does (same problems, all reported at once),
/// handing each valid task to `on_task` with its entry's index in the file's array, in file
/// order, without holding the parsed file: one entry is parsed at a time and dropped, and what
/// is kept per task is small (its id and a digest of its entry, to tell exact repeats from
/// conflicting duplicates; for v1, its vuln_source). Exact repeats are not handed over.
///
/// Once a problem is found `on_task` is no longer called, but problems found only at the end
/// (a mutated task whose seed never comes) mean tasks already handed over belong to an invalid
/// file: when this returns an error, the caller must discard what `on_task` built.
pub fn visit_task_file<E>(
    path: &Path,
    bytes: &[u8],
    mut on_task: impl FnMut(usize, Task) -> Result<(), E>,
) -> Result<TaskFileSummary, VisitError<E>> {
    let mut problems = Vec::new();
    let mut repeated = Vec::new();
    // Per id, the first entry's index and digest: a later entry with that id is an exact
    // repeat when its digest is the same (equal values, as `==` compares them).
    let mut first_of: HashMap<String, (usize, [u8; 32])> = HashMap::new();
    let mut seeds = SeedCheck::default();
    let mut entries = 0;
    let mut tasks = 0;
    let walk = raw::visit_array(path, bytes, |index, item| {
        entries += 1;
        let entry = entry_ref(&item, index);
        if let EntryRef::Id(id) = &entry {
            let digest = raw::value_digest(&item);
            if let Some(&(first, first_digest)) = first_of.get(id) {
                if first_digest == digest {
                    repeated.push(id.clone());
                } else {
                    problems.push(Problem {
                        file: path.to_path_buf(),
                        entry: entry.clone(),
                        field: "instance_id".into(),
                        message: format!(
                            "duplicate instance_id (entries #{first} and #{index} differ)"
                        ),
                    });
                    // Still checked, so that its own problems are reported in the same pass.
                    check_task(path, index, entry, &item, &mut problems);
                }
                return ControlFlow::Continue(());
            }
            first_of.insert(id.clone(), (index, digest));
        }
        let Some(task) = check_task(path, index, entry, &item, &mut problems) else {
            return ControlFlow::Continue(());
        };
        seeds.note(&task);
        tasks += 1;
        if !problems.is_empty() {
            return ControlFlow::Continue(());
        }
        match on_task(index, task) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    })
    .map_err(VisitError::Dataset)?;
    if let ControlFlow::Break(e) = walk {
        return Err(VisitError::Callback(e));
    }
    seeds.check(path, &mut problems);
    if !problems.is_empty() {
        return Err(VisitError::Dataset(DatasetError::Invalid { problems }));
    }
    Ok(TaskFileSummary {
        sha256: raw::sha256_hex(bytes),
        entries,
        tasks,
        repeated,
    })
}

/// How problems of entry `index` are labelled: by its id when it has a usable one.
pub(crate) fn entry_ref(item: &Value, index: usize) -> EntryRef {
    match item.get("instance_id").and_then(Value::as_str) {
        Some(id) if raw::id_problem(id).is_none() => EntryRef::Id(id.to_string()),
        _ => EntryRef::Index(index),
    }
}

/// Upstream looks a mutated task's seed up by `vuln_source` and crashes when there is none.
/// Fed task by task in file order; the seed may come after its mutated tasks.
#[derive(Default)]
struct SeedCheck {
    seed_sources: HashSet<String>,
    /// (instance_id, vuln_source) of mutated tasks whose seed had not come yet, in file order.
    waiting: Vec<(String, String)>,
}

impl SeedCheck {
    fn note(&mut self, t: &Task) {
        let TaskSpec::V1(spec) = &t.spec else {
            return;
        };
        if self.seed_sources.contains(&t.vuln_source) {
            return;
        }
        if spec.seed {
            self.seed_sources.insert(t.vuln_source.clone());
        } else {
            self.waiting
                .push((t.instance_id.clone(), t.vuln_source.clone()));
        }
    }

    fn check(self, path: &Path, problems: &mut Vec<Problem>) {
        for (id, source) in self.waiting {
            if self.seed_sources.contains(&source) {
                continue;
            }
            problems.push(Problem {
                file: path.to_path_buf(),
                entry: EntryRef::Id(id),
                field: "vuln_source".into(),
                message: format!(
                    "mutated task (seed false) but no seed task has vuln_source `{source}`; its context comes from that seed"
                ),
            });
        }
    }
}

/// Fields that only v1 tasks have.
const V1_FIELDS: &[&str] = &["seed", "detected_tool", "detected_vul_num"];
/// Fields that only v2 tasks have (`patch_commit` is in both: upstream's v1 data lacks it, but
/// a v1 dataset may name each task's fix, which `ase calibrate` and the reference model use).
const V2_FIELDS: &[&str] = &[
    "severity",
    "image",
    "image_inner_path",
    "image_run_cmd",
    "image_status_check_cmd",
    "test_case_cmd",
    "poc_cmd",
    "privileged",
    "other_vuln_files",
    "branch_origin",
];
const COMMON_FIELDS: &[&str] = &[
    "patch_commit",
    "instance_id",
    "repo",
    "base_commit",
    "vuln_file",
    "vuln_lines",
    "language",
    "vuln_source",
    "vuln_type",
    "cwe_id",
];
/// The v2 commands upstream runs with a timeout, overridable by `<cmd_key>_timeout`
/// (`image_run_cmd` is the container's main process and has none).
const TIMED_COMMANDS: &[&str] = &["image_status_check_cmd", "test_case_cmd", "poc_cmd"];

fn check_task(
    path: &Path,
    index: usize,
    entry: EntryRef,
    item: &Value,
    problems: &mut Vec<Problem>,
) -> Option<Task> {
    let obj = match item {
        Value::Object(obj) => obj,
        other => {
            problems.push(Problem {
                file: path.to_path_buf(),
                entry: EntryRef::Index(index),
                field: "(entry)".into(),
                message: format!("expected an object, found {}", raw::kind(other)),
            });
            return None;
        }
    };
    let mut c = FieldChecker::new(path, entry, obj, problems);

    let instance_id = c.string("instance_id");
    if let Some(id) = &instance_id {
        if let Some(msg) = raw::id_problem(id) {
            c.problem("instance_id", msg);
        }
    }
    let repo = c.string("repo");
    if let Some(r) = &repo {
        if let Some(msg) = repo_problem(r) {
            c.problem("repo", msg);
        }
    }
    let base_commit = revision(&mut c, "base_commit");
    let vuln_file = c.string("vuln_file");
    if let Some(f) = &vuln_file {
        if let Some(msg) = raw::relative_path_problem(f) {
            c.problem("vuln_file", msg);
        }
    }
    let vuln_lines = c.line_range("vuln_lines");
    let language = c.string("language");
    if let Some(l) = &language {
        if let Some(msg) = language_problem(l) {
            c.problem("language", msg);
        }
    }
    let vuln_source = c.nonempty_string("vuln_source");
    let vuln_type = c.nonempty_string("vuln_type");
    let cwe_id = c.nonempty_string("cwe_id");

    let spec = match detect_version(obj) {
        Ok(Version::V1) => check_v1(&mut c).map(TaskSpec::V1),
        Ok(Version::V2) => check_v2(&mut c).map(TaskSpec::V2),
        Err((field, msg)) => {
            c.problem(field, msg);
            None
        }
    };
    let extra = extra_fields(obj, matches!(spec, Some(TaskSpec::V2(_))));

    if c.found_problem() {
        return None;
    }
    Some(Task {
        instance_id: instance_id?,
        repo: repo?,
        base_commit: base_commit?,
        vuln_file: vuln_file?,
        vuln_lines: vuln_lines?,
        language: language?,
        vuln_source: vuln_source?,
        vuln_type: vuln_type?,
        cwe_id: cwe_id?,
        spec: spec?,
        extra,
    })
}

enum Version {
    V1,
    V2,
}

/// A task is v1 when it has a v1-only field (`seed`, `detected_*`), v2 when it has a v2-only
/// field; having both or neither is a problem, reported on the field that decides.
fn detect_version(obj: &Map<String, Value>) -> Result<Version, (&'static str, String)> {
    let v1 = V1_FIELDS.iter().find(|f| obj.contains_key(**f));
    let v2 = V2_FIELDS.iter().find(|f| obj.contains_key(**f));
    match (v1, v2) {
        (Some(_), None) => Ok(Version::V1),
        (None, Some(_)) => Ok(Version::V2),
        (Some(a), Some(b)) => Err((
            b,
            format!("a v2 field in a task that also has the v1 field `{a}`; a task is either v1 or v2"),
        )),
        (None, None) => Err((
            "seed",
            "missing: neither v1 fields (`seed`, `detected_tool`) nor v2 fields (`image`, `poc_cmd`) are present".into(),
        )),
    }
}

/// The optional `patch_commit` of a v1 or v2 task, checked as a git revision.
fn patch_commit(c: &mut FieldChecker) -> Option<Option<String>> {
    match c.optional_string("patch_commit") {
        Some(Some(rev)) => match revision_problem(&rev) {
            Some(msg) => {
                c.problem("patch_commit", msg);
                None
            }
            None => Some(Some(rev)),
        },
        other => other,
    }
}

fn check_v1(c: &mut FieldChecker) -> Option<StaticSpec> {
    let patch_commit = patch_commit(c);
    let seed = c.bool("seed");
    let detected_tool = c.string("detected_tool");
    let detected_vul_num = c.count("detected_vul_num");
    Some(StaticSpec {
        seed: seed?,
        detected_tool: detected_tool?,
        detected_vul_num: detected_vul_num?,
        patch_commit: patch_commit?,
    })
}

fn check_v2(c: &mut FieldChecker) -> Option<DynamicSpec> {
    let patch_commit = patch_commit(c);
    let severity = c.string("severity");
    let image = c.nonempty_string("image");
    if let Some(img) = &image {
        if img.chars().any(char::is_whitespace) || img.starts_with('-') {
            c.problem("image", format!("`{img}` is not a Docker image reference"));
        }
    }
    let image_inner_path = c.nonempty_string("image_inner_path");
    if let Some(p) = &image_inner_path {
        if !p.starts_with('/') || p.split('/').any(|s| s == "..") {
            c.problem(
                "image_inner_path",
                format!("`{p}` must be an absolute path inside the image, without `..`"),
            );
        }
    }
    let image_run_cmd = c.string("image_run_cmd");
    let image_status_check_cmd = c.nonempty_string("image_status_check_cmd");
    let test_case_cmd = c.nonempty_string("test_case_cmd");
    let poc_cmd = c.nonempty_string("poc_cmd");
    let privileged = c.optional_bool("privileged").map(|p| p.unwrap_or(false));
    let other_vuln_files = other_vuln_files(c);
    let branch_origin = match c.optional_string("branch_origin") {
        Some(Some(b)) => match revision_problem(&b) {
            Some(msg) => {
                c.problem("branch_origin", msg);
                None
            }
            None => Some(Some(b)),
        },
        other => other,
    };
    let timeouts = timeouts(c);
    Some(DynamicSpec {
        patch_commit: patch_commit?,
        severity: severity?,
        image: image?,
        image_inner_path: image_inner_path?,
        image_run_cmd: image_run_cmd?,
        image_status_check_cmd: image_status_check_cmd?,
        test_case_cmd: test_case_cmd?,
        poc_cmd: poc_cmd?,
        privileged: privileged?,
        other_vuln_files: other_vuln_files?,
        branch_origin: branch_origin?,
        timeouts: timeouts?,
    })
}

/// `other_vuln_files` is optional. Upstream writes `{"vuln_file": "", "vuln_lines": []}` to mean
/// "no other file"; such placeholders are dropped rather than reported.
fn other_vuln_files(c: &mut FieldChecker) -> Option<Vec<OtherVulnFile>> {
    let items = match c.obj.get("other_vuln_files") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            c.problem(
                "other_vuln_files",
                format!("expected an array, found {}", raw::kind(other)),
            );
            return None;
        }
    };
    let mut files = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let field = format!("other_vuln_files[{i}]");
        let Value::Object(o) = item else {
            c.problem(
                &field,
                format!("expected an object, found {}", raw::kind(item)),
            );
            ok = false;
            continue;
        };
        if is_placeholder(o) {
            continue;
        }
        let file_field = format!("{field}.vuln_file");
        let lines_field = format!("{field}.vuln_lines");
        let vuln_file = match o.get("vuln_file") {
            None => {
                c.problem(&file_field, "missing");
                None
            }
            Some(v) => c.as_string(&file_field, v).and_then(|f| {
                match raw::relative_path_problem(f.trim()) {
                    Some(msg) => {
                        c.problem(&file_field, msg);
                        None
                    }
                    None => Some(f),
                }
            }),
        };
        let vuln_lines = match o.get("vuln_lines") {
            None => {
                c.problem(&lines_field, "missing");
                None
            }
            Some(v) => c.as_line_range(&lines_field, v),
        };
        match (vuln_file, vuln_lines) {
            (Some(vuln_file), Some(vuln_lines)) => files.push(OtherVulnFile {
                vuln_file,
                vuln_lines,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(files)
}

fn is_placeholder(o: &Map<String, Value>) -> bool {
    let empty_file = matches!(o.get("vuln_file"), Some(Value::String(s)) if s.is_empty());
    let empty_lines = matches!(o.get("vuln_lines"), Some(Value::Array(a)) if a.is_empty());
    empty_file && empty_lines
}

/// `<cmd_key>_timeout` fields, in seconds, > 0. Upstream reads them with Python's `int()`, so
/// a whole number written as a float (`300.0`) or as a string (`"300"`) is accepted as well; a
/// fractional value is refused rather than silently truncated as `int()` would.
fn timeouts(c: &mut FieldChecker) -> Option<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut ok = true;
    for cmd in TIMED_COMMANDS {
        let field = format!("{cmd}_timeout");
        let Some(v) = c.obj.get(&field) else { continue };
        match timeout_seconds(v) {
            Ok(n) => {
                out.insert(cmd.to_string(), n);
            }
            Err(msg) => {
                c.problem(&field, msg);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn timeout_seconds(v: &Value) -> Result<u64, String> {
    let whole: Option<i128> = match v {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| {
            n.as_u64().map(i128::from).or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 1e18)
                    .map(|x| x as i128)
            })
        }),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match whole {
        Some(n) if n > 0 => u64::try_from(n).map_err(|_| format!("{n} seconds is too large")),
        Some(_) => Err(format!("must be > 0 seconds, found {}", raw::describe(v))),
        None => Err(format!(
            "expected a whole number of seconds > 0, found {}",
            raw::describe(v)
        )),
    }
}

/// Everything not interpreted by this module, kept verbatim.
fn extra_fields(obj: &Map<String, Value>, is_v2: bool) -> Map<String, Value> {
    obj.iter()
        .filter(|(k, _)| {
            let known = COMMON_FIELDS.contains(&k.as_str())
                || V1_FIELDS.contains(&k.as_str())
                || V2_FIELDS.contains(&k.as_str())
                || (is_v2
                    && k.strip_suffix("_timeout")
                        .is_some_and(|cmd| TIMED_COMMANDS.contains(&cmd)));
            !known
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn revision(c: &mut FieldChecker, field: &str) -> Option<String> {
    let rev = c.string(field)?;
    if let Some(msg) = revision_problem(&rev) {
        c.problem(field, msg);
        return None;
    }
    Some(rev)
}

/// Revisions are passed to git as arguments: they must not be empty, contain whitespace or
/// control characters, or start with `-` (git would read them as options).
fn revision_problem(rev: &str) -> Option<String> {
    if rev.is_empty() {
        return Some("must not be empty".into());
    }
    if rev.starts_with('-') {
        return Some(format!(
            "`{rev}` starts with `-`; git would read it as an option"
        ));
    }
    if rev.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("`{}` contains whitespace", rev.escape_debug()));
    }
    None
}

/// `owner/name` on GitHub, or the https URL of a repository hosted elsewhere (upstream v2 has
/// a few, e.g. on gitlab.freedesktop.org).
fn repo_problem(repo: &str) -> Option<String> {
    if let Some(rest) = repo.strip_prefix("https://") {
        let mut parts = rest.split('/');
        let host = parts.next().unwrap_or("");
        let path: Vec<&str> = parts.collect();
        let ok = !host.is_empty()
            && !path.is_empty()
            && path
                .iter()
                .all(|s| !s.is_empty() && *s != "." && *s != "..")
            && !repo.chars().any(|c| c.is_whitespace() || c.is_control());
        return (!ok).then(|| format!("`{repo}` is not a repository URL (https://host/path)"));
    }
    let segments: Vec<&str> = repo.split('/').collect();
    let ok = segments.len() == 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    (!ok).then(|| format!("`{}` does not look like owner/name", repo.escape_debug()))
}

/// Languages are compared as lowercase names (`php`, `c++`) when picking tools and prompts.
fn language_problem(lang: &str) -> Option<String> {
    if lang.is_empty() {
        return Some("must not be empty".into());
    }
    let ok = lang.chars().all(|c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '#' | '-' | '_' | '.')
    });
    (!ok).then(|| {
        format!(
            "`{}` is not a lowercase language name such as php, python, c++",
            lang.escape_debug()
        )
    })
}

#[cfg(test)]
mod tests;
