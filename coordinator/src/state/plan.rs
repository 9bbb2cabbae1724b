//! Dataset planning: what a submitted run's spec and dataset say, checked before anything is
//! stored, and the second pass over the dataset that stores each task's inputs.
//!
//! The parsed dataset is never held whole (a 100,000-task dataset would take hundreds of MB): a
//! first pass validates it and learns what the second needs, and the second writes the tasks as
//! it parses them, in batches.

use super::affinity::evaluate_image_key;
use super::memory::{RepoIndex, TaskKeys};
use crate::outputs;
use crate::records::RunSpecHeader;
use crate::store::{Store, StoreError, TaskInputs};
use crate::CoordinatorError;
use ase_common::dataset::{self, ContextSet, DatasetVersion, TaskContext, TaskSpec, VisitError};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::Path;

/// Tasks written to the store per call while a run is submitted, so that only this many
/// tasks' inputs are in memory at once.
const SUBMIT_BATCH: usize = 1_000;

pub(super) use ase_common::digest::sha256_hex;

/// Reads the header fields the coordinator needs from the opaque spec.
pub fn parse_spec_header(spec_json: &[u8]) -> Result<RunSpecHeader, CoordinatorError> {
    let value: serde_json::Value = serde_json::from_slice(spec_json)
        .map_err(|e| CoordinatorError::Spec(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CoordinatorError::Spec("not a JSON object".into()));
    }
    let header: RunSpecHeader = serde_json::from_value(value)
        .map_err(|e| CoordinatorError::Spec(format!("a field has the wrong type: {e}")))?;
    if header.rounds == 0 {
        return Err(CoordinatorError::Spec("`rounds` must be at least 1".into()));
    }
    ase_common::upstream_io::run_name(&header.model_name, &header.batch)
        .map_err(|e| CoordinatorError::Spec(e.to_string()))?;
    Ok(header)
}

/// What a first pass over a dataset learns, so that a second pass can write each task's
/// inputs as it parses it.
pub(super) struct DatasetPlan {
    /// Tasks the run holds: the dataset's, less those a preflight found unavailable.
    pub(super) tasks: usize,
    /// instance_ids kept out of the run (the spec's `unavailable`).
    excluded: HashSet<String>,
    /// The seed of mutated v1 tasks by vuln_source: the last seed in file order, as
    /// `Dataset::seed_of` finds it (it may come after the mutated task). Only for vuln_sources
    /// that a mutated task has.
    seeds: HashMap<String, SeedRef>,
}

struct SeedRef {
    instance_id: String,
    repo: String,
}

fn dataset_error(name: &str) -> impl FnOnce(dataset::DatasetError) -> CoordinatorError + '_ {
    input_error("dataset", name)
}

fn input_error<'a>(
    what: &'static str,
    name: &'a str,
) -> impl FnOnce(dataset::DatasetError) -> CoordinatorError + 'a {
    move |source| CoordinatorError::Dataset {
        what,
        name: name.to_string(),
        source,
    }
}

/// Validates the dataset (every problem at once), checks it has tasks of one version, finds
/// the seeds of its mutated tasks, and checks that the tasks `unavailable` names are the
/// dataset's (each once, not all).
pub(super) fn plan_dataset(
    dataset_name: &str,
    dataset_bytes: &[u8],
    unavailable: &[ase_common::preflight::UnavailableTask],
) -> Result<DatasetPlan, CoordinatorError> {
    let mut ids: Vec<String> = Vec::new();
    // The first task of each version seen, to name both when they mix.
    let mut versions: Vec<(String, DatasetVersion)> = Vec::new();
    let mut seeds: HashMap<String, SeedRef> = HashMap::new();
    let mut mutated_sources: HashSet<String> = HashSet::new();
    let summary = dataset::visit_task_file(Path::new(dataset_name), dataset_bytes, |_, t| {
        if !versions.iter().any(|(_, v)| *v == t.version()) {
            versions.push((t.instance_id.clone(), t.version()));
        }
        if !unavailable.is_empty() {
            ids.push(t.instance_id.clone());
        }
        match &t.spec {
            TaskSpec::V1(s) if s.seed => {
                seeds.insert(
                    t.vuln_source,
                    SeedRef {
                        instance_id: t.instance_id,
                        repo: t.repo,
                    },
                );
            }
            TaskSpec::V1(_) => {
                mutated_sources.insert(t.vuln_source);
            }
            TaskSpec::V2(_) => {}
        }
        Ok::<(), Infallible>(())
    })
    .map_err(|e| match e {
        VisitError::Dataset(source) => dataset_error(dataset_name)(source),
        VisitError::Callback(never) => match never {},
    })?;
    if summary.tasks == 0 {
        return Err(CoordinatorError::Spec(format!(
            "dataset {dataset_name} has no task"
        )));
    }
    outputs::dataset_version(
        dataset_name,
        versions.iter().map(|(id, v)| (id.as_str(), *v)),
    )?;
    seeds.retain(|source, _| mutated_sources.contains(source));
    let id_set: HashSet<&str> = ids.iter().map(String::as_str).collect();
    ase_common::preflight::check_against(unavailable, &id_set)
        .map_err(|e| CoordinatorError::Spec(format!("dataset {dataset_name}: {e}")))?;
    let excluded: HashSet<String> = unavailable.iter().map(|u| u.instance_id.clone()).collect();
    Ok(DatasetPlan {
        tasks: summary.tasks - excluded.len(),
        excluded,
        seeds,
    })
}

pub(super) fn parse_context_file(
    context_name: &str,
    context_bytes: &[u8],
) -> Result<Option<ContextSet>, CoordinatorError> {
    if context_bytes.is_empty() {
        return Ok(None);
    }
    dataset::parse_contexts(Path::new(context_name), context_bytes)
        .map(Some)
        .map_err(input_error("context file", context_name))
}

/// Second pass over a dataset `plan_dataset` accepted: writes each task's inputs, as index `t`
/// for the `t`-th task, in batches; returns the repo index of the tasks. `answers`: a
/// predictions run's entries by instance_id (see `unit_answers`), taken as their tasks are
/// written.
pub(super) fn write_task_inputs(
    store: &Store,
    seq: u64,
    dataset_name: &str,
    dataset_bytes: &[u8],
    plan: &DatasetPlan,
    contexts: Option<&ContextSet>,
    answers: &mut HashMap<String, Vec<u8>>,
) -> Result<TaskKeys, CoordinatorError> {
    let context_of: HashMap<&str, &TaskContext> = contexts
        .map(|c| {
            c.contexts
                .iter()
                .map(|c| (c.instance_id.as_str(), c))
                .collect()
        })
        .unwrap_or_default();
    let mut repos = RepoIndex::with_capacity(plan.tasks);
    let mut images = RepoIndex::with_capacity(plan.tasks);
    let mut batch: Vec<TaskInputs> = Vec::with_capacity(SUBMIT_BATCH);
    let mut written: u32 = 0;
    let mut flush = |batch: &mut Vec<TaskInputs>| -> Result<(), StoreError> {
        let first = written;
        store.write_tasks(
            seq,
            batch.iter().enumerate().map(|(i, t)| (first + i as u32, t)),
        )?;
        written += batch.len() as u32;
        batch.clear();
        Ok(())
    };
    dataset::visit_task_file(Path::new(dataset_name), dataset_bytes, |_, t| {
        if plan.excluded.contains(&t.instance_id) {
            return Ok(());
        }
        // (instance_id, repo) of the task whose context and project layout `t` uses.
        let seed = match &t.spec {
            TaskSpec::V1(s) if !s.seed => plan
                .seeds
                .get(&t.vuln_source)
                .map(|s| (s.instance_id.as_str(), s.repo.as_str())),
            _ => Some((t.instance_id.as_str(), t.repo.as_str())),
        };
        let context_json = seed
            .and_then(|(id, _)| context_of.get(id))
            .map(|c| serde_json::to_vec(c).expect("a context serialises to JSON"))
            .unwrap_or_default();
        repos.push(&t.repo);
        images.push(&evaluate_image_key(&t).unwrap_or_default());
        batch.push(TaskInputs {
            instance_id: t.instance_id.clone(),
            repo: t.repo.clone(),
            seed_repo: seed.map_or(t.repo.as_str(), |(_, repo)| repo).to_string(),
            task_json: serde_json::to_vec(&t).expect("a task serialises to JSON"),
            context_json,
            predictions_jsonl: answers.remove(&t.instance_id).unwrap_or_default(),
        });
        if batch.len() == SUBMIT_BATCH {
            flush(&mut batch)?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        VisitError::Dataset(source) => dataset_error(dataset_name)(source),
        VisitError::Callback(e) => CoordinatorError::Store(e),
    })?;
    if !batch.is_empty() {
        flush(&mut batch)?;
    }
    Ok(TaskKeys {
        repos: repos.finish(),
        images: images.finish(),
    })
}
