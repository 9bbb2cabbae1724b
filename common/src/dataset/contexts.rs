//! Context files: the retrieved files (hits) and function summary of each task.

use super::error::{DatasetError, EntryRef, Problem};
use super::raw::{self, FieldChecker};
use super::tasks::{entry_ref, Dataset};
use super::{ContextHit, Task, TaskContext, TaskSpec};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A validated context file.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSet {
    pub path: PathBuf,
    /// sha256 (lowercase hex) of the file's bytes, for provenance.
    pub sha256: String,
    /// In file order; `instance_id`s are unique.
    pub contexts: Vec<TaskContext>,
}

impl ContextSet {
    /// The entry whose `instance_id` is `instance_id`.
    pub fn get(&self, instance_id: &str) -> Option<&TaskContext> {
        self.contexts.iter().find(|c| c.instance_id == instance_id)
    }

    /// The context a task is generated with. A mutated v1 task (seed false) has no entry of its
    /// own: it uses its seed's (see [`Dataset::seed_of`]). Seeds and v2 tasks use their own id.
    pub fn for_task(&self, task: &Task, dataset: &Dataset) -> Option<&TaskContext> {
        match &task.spec {
            TaskSpec::V1(s) if !s.seed => {
                let seed = dataset.seed_of(task)?;
                self.get(&seed.instance_id)
            }
            _ => self.get(&task.instance_id),
        }
    }

    /// Entries whose id is not a task of `dataset`: not an error (upstream ships contexts for
    /// tasks it later removed), but worth reporting.
    pub fn unmatched<'a>(&'a self, dataset: &Dataset) -> Vec<&'a TaskContext> {
        self.contexts
            .iter()
            .filter(|c| dataset.get(&c.instance_id).is_none())
            .collect()
    }
}

/// Loads and validates a context file; every problem is reported at once.
pub fn load_contexts(path: &Path) -> Result<ContextSet, DatasetError> {
    let (bytes, _) = raw::read_bounded(path)?;
    parse_contexts(path, &bytes)
}

/// Validates the bytes of a context file; `path` names the file in problems.
pub fn parse_contexts(path: &Path, bytes: &[u8]) -> Result<ContextSet, DatasetError> {
    let items = raw::parse_array(path, bytes)?;
    let mut problems = Vec::new();
    let mut contexts = Vec::with_capacity(items.len());
    let mut first_index_of: HashMap<String, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let entry = entry_ref(item, index);
        if let EntryRef::Id(id) = &entry {
            if let Some(first) = first_index_of.get(id) {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    entry: entry.clone(),
                    field: "instance_id".into(),
                    message: format!("duplicate instance_id (entries #{first} and #{index})"),
                });
            } else {
                first_index_of.insert(id.clone(), index);
            }
        }
        if let Some(ctx) = check_context(path, index, entry, item, &mut problems) {
            contexts.push(ctx);
        }
    }
    if !problems.is_empty() {
        return Err(DatasetError::Invalid { problems });
    }
    Ok(ContextSet {
        path: path.to_path_buf(),
        sha256: raw::sha256_hex(bytes),
        contexts,
    })
}

fn check_context(
    path: &Path,
    index: usize,
    entry: EntryRef,
    item: &Value,
    problems: &mut Vec<Problem>,
) -> Option<TaskContext> {
    let Value::Object(obj) = item else {
        problems.push(Problem {
            file: path.to_path_buf(),
            entry: EntryRef::Index(index),
            field: "(entry)".into(),
            message: format!("expected an object, found {}", raw::kind(item)),
        });
        return None;
    };
    let mut c = FieldChecker::new(path, entry, obj, problems);
    let instance_id = c.string("instance_id");
    if let Some(id) = &instance_id {
        if let Some(msg) = raw::id_problem(id) {
            c.problem("instance_id", msg);
        }
    }
    let function_summary = c.string("function_summary");
    let hits = match obj.get("hits") {
        None => {
            c.problem("hits", "missing");
            None
        }
        Some(Value::Array(items)) => {
            let checked: Vec<Option<ContextHit>> = items
                .iter()
                .enumerate()
                .map(|(i, h)| check_hit(&mut c, i, h))
                .collect();
            checked.into_iter().collect::<Option<Vec<_>>>()
        }
        Some(other) => {
            c.problem(
                "hits",
                format!("expected an array, found {}", raw::kind(other)),
            );
            None
        }
    };
    if c.found_problem() {
        return None;
    }
    Some(TaskContext {
        instance_id: instance_id?,
        hits: hits?,
        function_summary: function_summary?,
    })
}

fn check_hit(c: &mut FieldChecker, i: usize, hit: &Value) -> Option<ContextHit> {
    let field = format!("hits[{i}]");
    let Value::Object(h) = hit else {
        c.problem(
            &field,
            format!("expected an object, found {}", raw::kind(hit)),
        );
        return None;
    };
    let docid_field = format!("{field}.docid");
    let docid = match h.get("docid") {
        None => {
            c.problem(&docid_field, "missing");
            None
        }
        Some(v) => {
            c.as_string(&docid_field, v)
                .and_then(|d| match raw::relative_path_problem(&d) {
                    Some(msg) => {
                        c.problem(&docid_field, msg);
                        None
                    }
                    None => Some(d),
                })
        }
    };
    let score = match h.get("score") {
        None | Some(Value::Null) => Some(None),
        Some(v) => match v.as_f64() {
            Some(x) => Some(Some(x)),
            None => {
                c.problem(
                    &format!("{field}.score"),
                    format!("expected a number, found {}", raw::kind(v)),
                );
                None
            }
        },
    };
    let mut line = |name: &str| -> Option<Option<usize>> {
        match h.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => c.line_number(&format!("{field}.{name}"), name, v).map(Some),
        }
    };
    let startline = line("startline");
    let endline = line("endline");
    let (startline, endline) = (startline?, endline?);
    match (startline, endline) {
        (Some(s), Some(e)) if s > e => {
            c.problem(
                &format!("{field}.startline"),
                format!("startline {s} is after endline {e}"),
            );
            return None;
        }
        (Some(_), None) | (None, Some(_)) => {
            let (present, absent) = if startline.is_some() {
                ("startline", "endline")
            } else {
                ("endline", "startline")
            };
            c.problem(
                &format!("{field}.{absent}"),
                format!("missing while {present} is set; a line range needs both"),
            );
            return None;
        }
        _ => {}
    }
    Some(ContextHit {
        docid: docid?,
        score: score?,
        startline,
        endline,
    })
}
