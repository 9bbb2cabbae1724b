//! From a run's settings to the spec the coordinator hands to workers (reading the predictions
//! and `cut_repos` files it names).

use super::*;

impl RunSettings {
    pub fn run_id(&self) -> String {
        format!("{}__{}", self.model_name, self.batch)
    }

    /// The API key of this run's model calls (from `api_key_env`, else `ASE_API_KEY`).
    pub fn api_key(&self, env: Env<'_>) -> Option<String> {
        match &self.model {
            ModelSettings::Openai { api_key_env, .. }
            | ModelSettings::Agent { api_key_env, .. } => {
                env(api_key_env.as_deref().unwrap_or(FALLBACK_API_KEY_ENV))
            }
            _ => None,
        }
    }

    /// The spec the coordinator hands to workers. Reads the predictions and `cut_repos` files;
    /// errors name the run and the file.
    pub fn run_spec(&self, source: &str) -> Result<RunSpec, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: format!("runs[{}].{key}", self.run_id()),
            message,
        };
        let model = match &self.model {
            ModelSettings::Openai {
                base_url,
                model,
                temperature,
                top_p,
                max_gen_token,
                request_timeout_secs,
                ..
            } => {
                let mut config = OpenAiConfig::new(base_url.clone(), model.clone());
                // The key travels with the submission (memory only) and reaches the worker in
                // its lease; the spec names no source, so nothing on disk points at it.
                config.api_key = ApiKeySource::None;
                config.temperature = *temperature;
                config.top_p = *top_p;
                if let Some(n) = max_gen_token {
                    config.max_gen_token = *n;
                }
                if let Some(s) = request_timeout_secs {
                    config.request_timeout = Duration::from_secs_f64(*s);
                }
                ModelSpec::Openai { config }
            }
            ModelSettings::Predictions { file } => ModelSpec::Predictions {
                entries: read_jsonl(file).map_err(|m| invalid("model.file", m))?,
            },
            ModelSettings::Reference => ModelSpec::Reference,
            ModelSettings::Original => ModelSpec::Original,
            ModelSettings::Deletion => ModelSpec::Deletion,
            ModelSettings::Agent { .. } => ModelSpec::Agent {
                config: self.model.agent_config().expect("an agent"),
            },
        };
        let (cut_repos, use_cut_repos) = match &self.cut_repos {
            None => (BTreeMap::new(), false),
            Some(p) => (
                // The one reader: bounded, every entry checked, errors naming entry and field.
                ase_common::dataset::load_cut_repos(p)
                    .map_err(|e| invalid("cut_repos", e.to_string()))?
                    .files,
                true,
            ),
        };
        Ok(RunSpec {
            model_name: self.model_name.clone(),
            batch: self.batch.clone(),
            rounds: self.rounds,
            model,
            prompt: PromptSettings {
                max_context_token: self.max_context_token,
                ..PromptSettings::default()
            },
            evaluation: EvaluationSettings {
                count_scope: self.count_scope,
                cut_repos,
                use_cut_repos,
            },
            limits: self.limits,
            unavailable: Vec::new(),
        })
    }
}

/// Bytes of a predictions file read into a spec: the spec's own limit (the coordinator hands
/// each unit only its answers, so the file is not bounded by one message).
const MAX_PREDICTIONS_BYTES: u64 = ase_proto::limits::MAX_RUN_SPEC_BYTES;

/// The entries of a predictions JSONL file, checked by the worker's own parser (the one
/// reader of the format); errors name the file and every bad line.
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    ase_worker::model::predictions::read_entries(path, MAX_PREDICTIONS_BYTES)
        .map_err(|e| e.to_string())
}
