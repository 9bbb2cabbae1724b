//! The two phases of a unit, chained from the building blocks of `ase-common` and the worker:
//! [`generate()`] (repo at `base_commit`, mask, prompt, model, answer applied, protocol step 7,
//! changed files recorded) and [`evaluate_static()`] (the unit's code rebuilt from the record on
//! any worker, scanned, counted, compared with the cached baseline of the original code); the
//! v2 evaluation is [`crate::dynamic`]'s. [`run_phase()`] is the one entry that runs whichever
//! of them a lease names.
//!
//! A phase returns `Err(InfraError)` only when nothing was learned about the model (a repo that
//! cannot be fetched, a disk error, an endpoint that keeps failing): the coordinator retries
//! those. Everything the model is to blame for is a record with `success == false`.

pub mod baseline;
pub mod evaluate_static;
pub mod generate;
mod generate_agent;
pub mod incremental;
pub mod provider;
pub mod run;
pub mod scanner;
pub mod spec;
pub mod unit_code;

pub use baseline::{BaselineCache, BaselineKey};
pub use evaluate_static::{evaluate_static, EvaluateInput};
pub use generate::{generate, GenerateInput};
pub use incremental::FileScanCache;
pub use provider::{ProviderFactory, RepoCacheReader};
pub use run::{run_phase, PhaseInput, PhaseRecord, PhaseWork};
pub use scanner::{rules_digest, Scanner, ScannerIdentity};
pub use spec::{
    CountScopeSetting, EvaluationSettings, ModelSpec, PromptSettings, RunLimits, RunSpec,
};

use crate::model::{InfraFailure, ProviderFault};
use crate::repo_cache::RepoCache;
use crate::sast::{RuleCatalog, RuleSet};
use ase_common::answer::patch_apply::ApplyOptions;
use ase_common::scoring::UnitId;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a worker holds for every unit it runs.
pub struct WorkerContext {
    pub repo_cache: RepoCache,
    pub providers: ProviderFactory,
    pub scanner: Scanner,
    /// The rule files the scanner's rules hold, from which each task's rule set is chosen;
    /// None: every task scans with the scanner's whole rules.
    pub rules: Option<RuleCatalog>,
    pub baselines: BaselineCache,
    /// Findings of single changed files, for scans proportional to the change.
    pub file_scans: FileScanCache,
    pub apply: ApplyOptions,
    /// The worker's name, in messages.
    pub worker_id: String,
    /// Labels the containers this worker starts, and names those its next start reaps: the
    /// name and this worker's cache folder ([`container_owner`]), so that two workers of one
    /// name on one daemon (two `ase run` on a laptop, each "local") never reap each other's.
    pub container_owner: String,
    /// The sandbox of agent runs; `None` without Docker (agent units then fail as
    /// configuration problems).
    pub coding_agents: Option<std::sync::Arc<crate::coding_agent::CodingAgents>>,
}

/// The owner label of a worker's containers: `{name}@{12 hex of its cache folder's digest}`.
pub fn container_owner(name: &str, cache: &std::path::Path) -> String {
    let cache = std::fs::canonicalize(cache).unwrap_or_else(|_| cache.to_path_buf());
    let digest = ase_common::digest::sha256_hex(cache.to_string_lossy().as_bytes());
    format!("{name}@{}", &digest[..12])
}

impl WorkerContext {
    /// A context whose baselines live under `cache_root/baselines`.
    pub fn new(
        repo_cache: RepoCache,
        scanner: Scanner,
        cache_root: PathBuf,
        worker_id: String,
    ) -> Self {
        // The bare scanner's rules are on this host; the container scanner's are in its image,
        // and setup gives their host folder with [`WorkerContext::with_rules`].
        let rules = match &scanner {
            Scanner::Bare { scanner, .. } => match RuleCatalog::load(scanner.rules()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "no rule catalog: every task scans with all rules");
                    None
                }
            },
            Scanner::Container { .. } => None,
        };
        WorkerContext {
            providers: ProviderFactory::new(repo_cache.clone()),
            repo_cache,
            scanner,
            rules,
            baselines: BaselineCache::new(cache_root.join("baselines")),
            file_scans: FileScanCache::new(cache_root.join("file_scans")),
            apply: ApplyOptions::default(),
            container_owner: container_owner(&worker_id, &cache_root),
            worker_id,
            coding_agents: None,
        }
    }
}

impl WorkerContext {
    /// Sets the catalog tasks' rule sets are chosen from.
    pub fn with_rules(mut self, rules: Option<RuleCatalog>) -> Self {
        self.rules = rules;
        self
    }

    /// The rules `task` is scanned with (its baseline too).
    pub fn rule_set(&self, task: &ase_common::dataset::Task) -> RuleSet {
        match &self.rules {
            Some(c) => c.select(task),
            None => RuleSet::whole(&self.scanner.identity().rules_digest),
        }
    }
}

/// Who is to blame for an infrastructure failure; the coordinator keeps it across the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfraKind {
    /// The repo could not be cloned, fetched or checked out, or a revision is missing.
    Repository,
    /// The model endpoint refused the client in a way no wait mends (wrong URL or model).
    ModelEndpoint,
    /// The model provider failed without an answer (429, quota, credentials, 5xx, timeout,
    /// network): the run's condition, which uses up no attempt of the unit.
    Provider(ProviderFault),
    /// The run's settings cannot be used on this worker (bad template, missing key).
    Configuration,
    /// The worker's disk or a blocking task failed.
    Worker,
    /// The scanner (v1), or the Docker daemon running a v2 evaluation, could not run at all.
    Scanner,
    /// A task image's registry is unreachable or limiting this worker: wait and retry.
    Registry,
    /// The task's image does not exist (404, unknown manifest, bad reference): the task's
    /// problem, the same on every worker.
    TaskImage,
}

/// A phase failed for a reason that says nothing about the model: retry the unit later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unit {unit}: {kind:?} failure: {reason}")]
pub struct InfraError {
    pub unit: UnitId,
    pub kind: InfraKind,
    pub reason: String,
    /// The endpoint's `Retry-After`, when it sent one.
    pub retry_after_secs: Option<u64>,
}

impl InfraKind {
    /// Who is to blame when the model provider gave no answer.
    pub fn of_model_failure(f: &InfraFailure) -> InfraKind {
        match (f.provider_fault(), f) {
            (Some(p), _) => InfraKind::Provider(p),
            (None, InfraFailure::Repository { .. }) => InfraKind::Repository,
            (None, _) => InfraKind::ModelEndpoint,
        }
    }
}

impl InfraError {
    /// The failure of a generation whose provider gave no answer, kind and `Retry-After` kept.
    pub fn of_model_failure(unit: &UnitId, f: &InfraFailure) -> Self {
        InfraError {
            unit: unit.clone(),
            kind: InfraKind::of_model_failure(f),
            reason: f.to_string(),
            retry_after_secs: f.retry_after_secs(),
        }
    }

    pub fn new(unit: &UnitId, kind: InfraKind, reason: impl Into<String>) -> Self {
        InfraError {
            unit: unit.clone(),
            kind,
            reason: reason.into(),
            retry_after_secs: None,
        }
    }
}
