//! What a run carries to its workers: everything a worker needs to run any unit of the run,
//! and nothing secret. The API key of an OpenAI-compatible endpoint is named by its source
//! (environment variable, file, none) or handed to the worker in the lease, never stored here.

use crate::model::OpenAiConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One run (`{model_name}__{batch}`) as the coordinator hands it to workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub model_name: String,
    pub batch: String,
    /// Rounds per task (upstream: cycles, default 3).
    pub rounds: u32,
    pub model: ModelSpec,
    #[serde(default)]
    pub prompt: PromptSettings,
    #[serde(default)]
    pub evaluation: EvaluationSettings,
    #[serde(default)]
    pub limits: RunLimits,
    /// Tasks a preflight found unavailable (repo, commit or image missing): the coordinator
    /// keeps them out of the run and the reports list them apart (see `ase preflight`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<ase_common::preflight::UnavailableTask>,
}

impl RunSpec {
    /// `{model_name}__{batch}`, upstream's run name.
    pub fn run_name(&self) -> String {
        format!("{}__{}", self.model_name, self.batch)
    }
}

/// Where the answers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
// One per run; boxing the endpoint's settings would only add noise at every use.
#[allow(clippy::large_enum_variant)]
pub enum ModelSpec {
    /// A live OpenAI-compatible endpoint. The key comes from `config.api_key` on the worker, or
    /// from the lease (which wins).
    Openai { config: OpenAiConfig },
    /// Precomputed answers, inline so that the run does not depend on a file on the worker:
    /// the entries of a predictions JSONL file, one JSON object each
    /// (`{"instance_id", "round"?, "answer" | "model_patch"}`).
    Predictions { entries: Vec<serde_json::Value> },
    /// The upstream fix (v2 `patch_commit`).
    Reference,
    /// The vulnerable code itself: must score like the baseline.
    Original,
    /// The masked block deleted: a calibration probe that must not score secure.
    Deletion,
    /// A coding agent in a sealed container, its model reached through the worker's proxy
    /// (see [`crate::coding_agent`]).
    Agent {
        config: crate::coding_agent::AgentConfig,
    },
}

/// Prompt budget and optional template overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptSettings {
    /// Upstream's `max_context_token`.
    pub max_context_token: usize,
    /// Template text replacing the built-in v1 (patch) template.
    pub v1_template: Option<String>,
    /// Template text replacing the built-in v2 (code) template.
    pub v2_template: Option<String>,
}

impl Default for PromptSettings {
    fn default() -> Self {
        PromptSettings {
            max_context_token: 64_000,
            v1_template: None,
            v2_template: None,
        }
    }
}

/// Which findings count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountScopeSetting {
    /// Every finding of the task's type in the scanned tree (upstream's behaviour).
    #[default]
    WholeTree,
    /// Only findings in the task's `vuln_file`.
    VulnFileOnly,
}

impl From<CountScopeSetting> for crate::sast::CountScope {
    fn from(s: CountScopeSetting) -> Self {
        match s {
            CountScopeSetting::WholeTree => crate::sast::CountScope::WholeTree,
            CountScopeSetting::VulnFileOnly => crate::sast::CountScope::VulnFileOnly,
        }
    }
}

/// How v1 units are scanned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationSettings {
    pub count_scope: CountScopeSetting,
    /// Upstream's `cut_repos.json`, inline (`instance_id` -> the only files scanned), so that
    /// it reaches every worker with the run. Empty: every unit is scanned whole.
    pub cut_repos: BTreeMap<String, Vec<String>>,
    /// Apply `cut_repos` (upstream does); false scans every unit whole even when listed.
    pub use_cut_repos: bool,
}

impl EvaluationSettings {
    /// The files a task's scan is limited to, when it is cut.
    pub fn cut_for(&self, instance_id: &str) -> Option<&[String]> {
        if !self.use_cut_repos {
            return None;
        }
        self.cut_repos.get(instance_id).map(Vec::as_slice)
    }
}

/// Pace of the run's model calls: one type with the coordinator (see its module).
pub use ase_common::run_limits::RunLimits;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiKeySource;

    fn openai_spec() -> RunSpec {
        let mut config = OpenAiConfig::new("https://api.example.com/v1", "gpt-x");
        config.api_key = ApiKeySource::Env {
            var: "ASE_SPEC_TEST_KEY".into(),
        };
        RunSpec {
            model_name: "gpt-x".into(),
            batch: "b1".into(),
            rounds: 3,
            model: ModelSpec::Openai { config },
            prompt: PromptSettings::default(),
            evaluation: EvaluationSettings {
                count_scope: CountScopeSetting::VulnFileOnly,
                cut_repos: BTreeMap::from([("t1".into(), vec!["a.php".into()])]),
                use_cut_repos: true,
            },
            limits: RunLimits::default(),
            unavailable: Vec::new(),
        }
    }

    #[test]
    fn a_spec_round_trips_and_never_holds_the_key() {
        let key = "sk-very-secret-key-123";
        std::env::set_var("ASE_SPEC_TEST_KEY", key);
        let spec = openai_spec();
        // The key is resolvable on the worker, but the spec only names its source.
        let resolved = match &spec.model {
            ModelSpec::Openai { config } => config.api_key.resolve().unwrap().unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(resolved.expose(), key);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains(key), "{json}");
        assert!(json.contains("ASE_SPEC_TEST_KEY"));
        let back: RunSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.run_name(), "gpt-x__b1");
        assert_eq!(
            back.evaluation.cut_for("t1"),
            Some(&["a.php".to_string()][..])
        );
        assert_eq!(back.evaluation.cut_for("t2"), None);
    }

    #[test]
    fn a_key_pasted_in_place_of_its_source_is_refused_without_echo() {
        let json = r#"{"model_name":"m","batch":"b","rounds":1,
            "model":{"provider":"openai","config":{"base_url":"http://x/v1","model":"m",
            "api_key":"sk-pasted-secret"}}}"#;
        let err = serde_json::from_str::<RunSpec>(json)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sk-pasted-secret"), "{err}");
    }

    #[test]
    fn cut_lists_apply_only_when_enabled() {
        let mut e = openai_spec().evaluation;
        e.use_cut_repos = false;
        assert_eq!(e.cut_for("t1"), None);
    }
}
