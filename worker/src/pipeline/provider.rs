//! Turns a run's [`ModelSpec`] into a [`ModelProvider`], once per run on a worker, and bounds
//! the run's model calls in flight.

use super::spec::{ModelSpec, RunSpec};
use crate::model::{
    ApiKey, ModelProvider, OpenAiClient, Predictions, RevisionReadError, RevisionReader,
};
use crate::repo_cache::RepoCache;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Reads files at revisions through the worker's repo cache (for the `reference` provider).
pub struct RepoCacheReader {
    cache: RepoCache,
}

impl RepoCacheReader {
    pub fn new(cache: RepoCache) -> Self {
        RepoCacheReader { cache }
    }
}

impl RevisionReader for RepoCacheReader {
    fn read_file(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
    ) -> Result<Option<String>, RevisionReadError> {
        let err = |detail: String| RevisionReadError {
            repo: repo.to_string(),
            revision: revision.to_string(),
            path: path.to_string(),
            detail,
        };
        let sha = self
            .cache
            .resolve(repo, revision, None)
            .map_err(|e| err(e.to_string()))?;
        self.cache
            .show_file(repo, &sha, path)
            .map_err(|e| err(e.to_string()))
    }
}

/// A run's provider and its in-flight bound.
pub struct RunProvider {
    pub provider: ModelProvider,
    pub inflight: Semaphore,
}

/// Providers by run name, built on first use.
pub struct ProviderFactory {
    cache: RepoCache,
    runs: Mutex<HashMap<String, Arc<RunProvider>>>,
}

/// Why a run's provider cannot be built (a configuration problem, never the model's fault).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("run {run}: the inline predictions are invalid: {detail}")]
    Predictions { run: String, detail: String },
    #[error("run {run}: model endpoint: {detail}")]
    OpenAi { run: String, detail: String },
    #[error("run {run}: {detail}")]
    Agent { run: String, detail: String },
}

impl ProviderFactory {
    pub fn new(cache: RepoCache) -> Self {
        ProviderFactory {
            cache,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// The provider of `spec`'s run. `api_key` (from the lease) wins over the configured key
    /// source.
    pub fn for_run(
        &self,
        spec: &RunSpec,
        api_key: Option<ApiKey>,
    ) -> Result<Arc<RunProvider>, ProviderError> {
        let run = spec.run_name();
        // A predictions run's spec holds only the unit's own answers (from its lease): built
        // for the unit, not kept, so memory does not grow with the units a worker ran.
        if matches!(spec.model, ModelSpec::Predictions { .. }) {
            return Ok(Arc::new(RunProvider {
                provider: self.build(&run, spec, api_key)?,
                inflight: Semaphore::new(
                    spec.limits.max_inflight_model_calls_per_worker.max(1) as usize
                ),
            }));
        }
        // Keyed by the model settings too: a run re-submitted under the same name with other
        // settings must not get the old provider; and by the lease's key, so that a key
        // supplied again (after `paused: auth`) is the one the next calls use.
        let settings = serde_json::to_vec(&(&spec.model, &spec.limits)).expect("spec serialises");
        let mut material = settings;
        material.extend_from_slice(api_key.as_ref().map_or("", |k| k.expose()).as_bytes());
        let key = format!("{run}/{}", ase_common::digest::sha256_hex(&material));
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let provider = self.build(&run, spec, api_key)?;
        let built = Arc::new(RunProvider {
            provider,
            inflight: Semaphore::new(
                spec.limits.max_inflight_model_calls_per_worker.max(1) as usize
            ),
        });
        let mut runs = self.lock();
        // The run's providers of other settings or keys are done with (calls in flight hold
        // their own reference).
        let prefix = format!("{run}/");
        runs.retain(|k, _| !k.starts_with(&prefix) || *k == key);
        Ok(runs.entry(key).or_insert(built).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunProvider>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn build(
        &self,
        run: &str,
        spec: &RunSpec,
        api_key: Option<ApiKey>,
    ) -> Result<ModelProvider, ProviderError> {
        Ok(match &spec.model {
            ModelSpec::Openai { config } => {
                let mut config = config.clone();
                config.retry.max_attempts = spec.limits.model_requests_per_attempt.max(1);
                let openai = |e: crate::model::OpenAiError| ProviderError::OpenAi {
                    run: run.to_string(),
                    detail: e.to_string(),
                };
                let client = match api_key {
                    Some(key) => OpenAiClient::with_key(config, Some(key)),
                    None => OpenAiClient::new(config),
                }
                .map_err(openai)?;
                ModelProvider::OpenAi(Box::new(client))
            }
            ModelSpec::Predictions { entries } => {
                let mut jsonl = Vec::new();
                for e in entries {
                    serde_json::to_writer(&mut jsonl, e).expect("a JSON value serialises");
                    jsonl.push(b'\n');
                }
                let origin = format!("run {run} (inline predictions)");
                let p = Predictions::parse(Path::new(&origin), &jsonl).map_err(|e| {
                    ProviderError::Predictions {
                        run: run.to_string(),
                        detail: e.to_string(),
                    }
                })?;
                ModelProvider::Predictions(p)
            }
            ModelSpec::Reference => {
                ModelProvider::Reference(Arc::new(RepoCacheReader::new(self.cache.clone())))
            }
            ModelSpec::Original => ModelProvider::Original,
            ModelSpec::Deletion => ModelProvider::Deletion,
            ModelSpec::Agent { config } => {
                let resolved = config.resolve().map_err(|e| ProviderError::Agent {
                    run: run.to_string(),
                    detail: e.to_string(),
                })?;
                ModelProvider::Agent(Box::new(resolved))
            }
        })
    }
}
