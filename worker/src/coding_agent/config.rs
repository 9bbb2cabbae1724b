//! The `agent` model provider's settings, as a run spec carries them: which image, which
//! command line (with placeholders), which environment, which limits, and the real endpoint
//! the worker's model proxy forwards to. Nothing secret: the endpoint's key is named by its
//! source (or handed over in the lease) and never reaches the agent's container.

use super::presets::AgentPreset;
use crate::model::OpenAiConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which API the agent speaks to its model (and so which one the proxy serves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentApi {
    /// `POST {base}/chat/completions` (mini-swe-agent, aider; Codex with a chat provider).
    Openai,
    /// `POST {base}/v1/messages` (Claude Code).
    Anthropic,
    /// Google's Gemini API (Gemini CLI): the proxy does not speak it yet, such runs are refused.
    Gemini,
}

impl AgentApi {
    /// True when the worker's proxy can serve this API.
    pub fn served(self) -> bool {
        matches!(self, AgentApi::Openai | AgentApi::Anthropic)
    }
}

/// Limits of one unit's agent container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLimits {
    /// Wall time of the agent, from its start to its exit; then it is killed with its container.
    pub wall_secs: u64,
    /// CPUs (fractions allowed).
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
    /// The agent's turn budget (the `{max_turns}` placeholder); the proxy also refuses model
    /// calls beyond it.
    pub max_turns: u32,
    /// Model calls the proxy forwards for one unit (0: `max_turns`); an agent that loops is
    /// answered 400 beyond it. Claude Code makes a few calls of its own besides its turns.
    pub max_calls: u32,
    /// Tokens (prompt + completion, as the endpoint counts them) one unit may spend; the
    /// proxy refuses calls once they are spent (0: no bound).
    pub max_tokens: u64,
    /// Bytes of the workspace the agent may hand back as changed files.
    pub max_result_bytes: u64,
    /// Bytes of the masked tree copied into the container.
    pub max_workspace_bytes: u64,
    /// Bytes of transcript (requests and answers through the proxy) kept per unit.
    pub max_transcript_bytes: usize,
}

impl AgentLimits {
    /// The calls the proxy forwards for one unit.
    pub fn call_budget(&self) -> u32 {
        if self.max_calls == 0 {
            self.max_turns
        } else {
            self.max_calls
        }
    }
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            wall_secs: 1800,
            cpus: 1.0,
            memory_bytes: 2 << 30,
            pids: 512,
            max_turns: 50,
            max_calls: 0,
            max_tokens: 0,
            max_result_bytes: ase_common::unit::MAX_CHANGED_BYTES as u64,
            max_workspace_bytes: 1 << 30,
            max_transcript_bytes: 256 << 10,
        }
    }
}

/// The `agent` provider of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Fills `image`, `command`, `api` and `env` when those are left empty.
    #[serde(default)]
    pub preset: Option<AgentPreset>,
    /// The agent's image on the worker's daemon (built locally, see `deploy/images/build.sh`).
    #[serde(default)]
    pub image: String,
    /// argv, no shell. Placeholders: `{prompt}`, `{prompt_file}`, `{file}`, `{workspace}`,
    /// `{max_turns}`, `{budget}` (= max_turns), `{wall_secs}`, `{model}`, `{base_url}`.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub api: Option<AgentApi>,
    /// Literal variables of the container (placeholders allowed, and `{token}`: the per-unit
    /// token the proxy knows the unit by).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container variable -> the worker's variable it is copied from (e.g. an agent option).
    /// The endpoint's key variable is refused here: the real key never enters the container.
    #[serde(default)]
    pub env_from: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: AgentLimits,
    /// The real endpoint the proxy forwards to (key, model, prices): the OpenAI provider's
    /// settings; for `api = "anthropic"` `base_url` is the Messages API's root.
    pub upstream: OpenAiConfig,
}

/// A setting that makes the run unusable, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentConfigError {
    #[error("agent: no image (set `image` or a `preset`)")]
    NoImage,
    #[error("agent: no command (set `command` or a `preset`)")]
    NoCommand,
    #[error("agent: the worker's model proxy does not speak the {0:?} API")]
    ApiNotServed(AgentApi),
    #[error("agent: env_from {var:?} names the endpoint's key variable; the key never enters the container")]
    KeyInEnv { var: String },
    #[error("agent: limit {0} must be positive")]
    Limit(&'static str),
    #[error("agent: unknown placeholder {placeholder:?} in {field}")]
    Placeholder { field: String, placeholder: String },
}

/// The settings of a run with the preset's defaults filled in and everything checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedAgent {
    pub image: String,
    pub command: Vec<String>,
    pub api: AgentApi,
    pub env: BTreeMap<String, String>,
    pub env_from: BTreeMap<String, String>,
    pub limits: AgentLimits,
    pub upstream: OpenAiConfig,
}

/// Every placeholder a command or env value may use.
pub const PLACEHOLDERS: &[&str] = &[
    "prompt",
    "prompt_file",
    "file",
    "workspace",
    "max_turns",
    "budget",
    "wall_secs",
    "model",
    "base_url",
    "token",
];

fn check_placeholders(field: &str, s: &str) -> Result<(), AgentConfigError> {
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else { break };
        let name = &after[..j];
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if plain && !PLACEHOLDERS.contains(&name) {
            return Err(AgentConfigError::Placeholder {
                field: field.to_string(),
                placeholder: format!("{{{name}}}"),
            });
        }
        rest = &after[j + 1..];
    }
    Ok(())
}

/// Replaces every `{name}` of `vars` in `s` (others are left as they are: JSON in an argument).
pub fn substitute(s: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

impl AgentConfig {
    pub fn resolve(&self) -> Result<ResolvedAgent, AgentConfigError> {
        let preset = self.preset.map(|p| p.defaults());
        let image = match (&self.image, &preset) {
            (i, _) if !i.trim().is_empty() => i.clone(),
            (_, Some(p)) => p.image.to_string(),
            _ => return Err(AgentConfigError::NoImage),
        };
        let command = match (&self.command, &preset) {
            (c, _) if !c.is_empty() => c.clone(),
            (_, Some(p)) => p.command.iter().map(|s| s.to_string()).collect(),
            _ => return Err(AgentConfigError::NoCommand),
        };
        let api = self
            .api
            .or(preset.as_ref().map(|p| p.api))
            .unwrap_or(AgentApi::Openai);
        if !api.served() {
            return Err(AgentConfigError::ApiNotServed(api));
        }
        let mut env: BTreeMap<String, String> = preset
            .as_ref()
            .map(|p| {
                p.env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        env.extend(self.env.clone());
        let key_var = match &self.upstream.api_key {
            crate::model::ApiKeySource::Env { var } => Some(var.clone()),
            _ => None,
        };
        for (to, from) in &self.env_from {
            let is_key = key_var.as_deref() == Some(from.as_str()) || from == "ASE_API_KEY";
            if is_key {
                return Err(AgentConfigError::KeyInEnv { var: from.clone() });
            }
            check_placeholders(&format!("env_from.{to}"), to)?;
        }
        let l = &self.limits;
        for (name, ok) in [
            ("wall_secs", l.wall_secs > 0),
            ("cpus", l.cpus > 0.0 && l.cpus.is_finite()),
            ("memory_bytes", l.memory_bytes > 0),
            ("pids", l.pids > 0),
            ("max_turns", l.max_turns > 0),
            ("max_result_bytes", l.max_result_bytes > 0),
            ("max_workspace_bytes", l.max_workspace_bytes > 0),
        ] {
            if !ok {
                return Err(AgentConfigError::Limit(name));
            }
        }
        for (i, a) in command.iter().enumerate() {
            check_placeholders(&format!("command[{i}]"), a)?;
        }
        for (k, v) in &env {
            check_placeholders(&format!("env.{k}"), v)?;
        }
        Ok(ResolvedAgent {
            image,
            command,
            api,
            env,
            env_from: self.env_from.clone(),
            limits: self.limits.clone(),
            upstream: self.upstream.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(preset: Option<AgentPreset>) -> AgentConfig {
        AgentConfig {
            preset,
            image: String::new(),
            command: vec![],
            api: None,
            env: BTreeMap::new(),
            env_from: BTreeMap::new(),
            limits: AgentLimits::default(),
            upstream: OpenAiConfig::new("http://127.0.0.1:1/v1", "m"),
        }
    }

    #[test]
    fn a_preset_fills_image_command_api_and_env() {
        let r = config(Some(AgentPreset::MiniSweAgent)).resolve().unwrap();
        assert_eq!(r.image, "ase-agent-mini-swe-agent:latest");
        assert_eq!(r.api, AgentApi::Openai);
        assert!(r.command.iter().any(|a| a.contains("{prompt}")));
        assert_eq!(r.env["OPENAI_API_KEY"], "{token}");
        let c = config(Some(AgentPreset::ClaudeCode)).resolve().unwrap();
        assert_eq!(c.api, AgentApi::Anthropic);
        assert_eq!(c.env["ANTHROPIC_API_KEY"], "{token}");
    }

    #[test]
    fn gemini_cli_is_refused_until_the_proxy_speaks_its_api() {
        assert_eq!(
            config(Some(AgentPreset::GeminiCli)).resolve().unwrap_err(),
            AgentConfigError::ApiNotServed(AgentApi::Gemini)
        );
    }

    #[test]
    fn the_key_variable_cannot_be_copied_into_the_container() {
        let mut c = config(Some(AgentPreset::Aider));
        c.upstream.api_key = crate::model::ApiKeySource::Env {
            var: "MY_KEY".into(),
        };
        c.env_from.insert("OPENAI_API_KEY".into(), "MY_KEY".into());
        assert_eq!(
            c.resolve().unwrap_err(),
            AgentConfigError::KeyInEnv {
                var: "MY_KEY".into()
            }
        );
    }

    #[test]
    fn unknown_placeholders_and_empty_settings_are_refused() {
        assert_eq!(
            config(None).resolve().unwrap_err(),
            AgentConfigError::NoImage
        );
        let mut c = config(None);
        c.image = "x".into();
        assert_eq!(c.resolve().unwrap_err(), AgentConfigError::NoCommand);
        c.command = vec!["run".into(), "{promt}".into()];
        assert!(matches!(
            c.resolve().unwrap_err(),
            AgentConfigError::Placeholder { .. }
        ));
        c.command = vec!["run".into(), "{prompt}".into(), "{\"json\": 1}".into()];
        assert!(c.resolve().is_ok());
        c.limits.wall_secs = 0;
        assert_eq!(
            c.resolve().unwrap_err(),
            AgentConfigError::Limit("wall_secs")
        );
    }

    #[test]
    fn placeholders_are_substituted() {
        let vars = BTreeMap::from([("file", "a/b.py".to_string()), ("max_turns", "7".into())]);
        assert_eq!(
            substitute("edit {file} in {max_turns}", &vars),
            "edit a/b.py in 7"
        );
    }
}
