//! Known coding agents: their image tag, command line and the API they speak. The command lines
//! follow each agent's non-interactive mode; `{token}` is the per-unit token the worker's proxy
//! knows the unit by and `{base_url}` the proxy's address (the real key and endpoint never enter
//! the container).

use super::config::AgentApi;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentPreset {
    /// mini-swe-agent (PyPI `mini-swe-agent`), image built by `deploy/images/build.sh agent`.
    MiniSweAgent,
    /// Claude Code (`claude`, e.g. bundled in PyPI's `claude-agent-sdk`); image built by you.
    ClaudeCode,
    /// OpenAI Codex CLI (npm `@openai/codex`); image built by you.
    Codex,
    /// Gemini CLI (npm `@google/gemini-cli`); speaks the Gemini API, not served by the proxy yet.
    GeminiCli,
    /// aider (PyPI `aider-chat`); image built by you.
    Aider,
}

/// What a preset fills in.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetDefaults {
    pub image: &'static str,
    pub command: &'static [&'static str],
    pub api: AgentApi,
    pub env: &'static [(&'static str, &'static str)],
}

impl AgentPreset {
    pub fn defaults(self) -> PresetDefaults {
        match self {
            AgentPreset::MiniSweAgent => PresetDefaults {
                image: "ase-agent-mini-swe-agent:latest",
                command: &[
                    "mini",
                    "-m",
                    "openai/{model}",
                    "-t",
                    "{prompt}",
                    "-y",
                    "--exit-immediately",
                    "-c",
                    "mini.yaml",
                    "-c",
                    "agent.step_limit={max_turns}",
                    "-c",
                    "agent.cost_limit=0",
                    "-o",
                    "/tmp/trajectory.json",
                ],
                api: AgentApi::Openai,
                env: &[
                    ("MSWEA_CONFIGURED", "true"),
                    ("OPENAI_API_BASE", "{base_url}"),
                    ("OPENAI_API_KEY", "{token}"),
                    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
                    ("MSWEA_COST_TRACKING", "ignore_errors"),
                ],
            },
            AgentPreset::ClaudeCode => PresetDefaults {
                image: "ase-agent-claude-code:latest",
                command: &[
                    "claude",
                    "-p",
                    "{prompt}",
                    "--model",
                    "{model}",
                    "--max-turns",
                    "{max_turns}",
                    "--permission-mode",
                    "acceptEdits",
                    "--allowedTools",
                    "Read,Write,Edit,Grep,Glob",
                ],
                api: AgentApi::Anthropic,
                env: &[
                    ("ANTHROPIC_BASE_URL", "{base_url}"),
                    ("ANTHROPIC_API_KEY", "{token}"),
                    ("DISABLE_TELEMETRY", "1"),
                    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                ],
            },
            AgentPreset::Codex => PresetDefaults {
                image: "ase-agent-codex:latest",
                command: &[
                    "codex",
                    "exec",
                    "--full-auto",
                    "--skip-git-repo-check",
                    "-m",
                    "{model}",
                    "{prompt}",
                ],
                api: AgentApi::Openai,
                env: &[
                    ("OPENAI_BASE_URL", "{base_url}"),
                    ("OPENAI_API_KEY", "{token}"),
                ],
            },
            AgentPreset::GeminiCli => PresetDefaults {
                image: "ase-agent-gemini-cli:latest",
                command: &["gemini", "--yolo", "-m", "{model}", "-p", "{prompt}"],
                api: AgentApi::Gemini,
                env: &[
                    ("GOOGLE_GEMINI_BASE_URL", "{base_url}"),
                    ("GEMINI_API_KEY", "{token}"),
                ],
            },
            AgentPreset::Aider => PresetDefaults {
                image: "ase-agent-aider:latest",
                command: &[
                    "aider",
                    "--yes-always",
                    "--no-git",
                    "--no-auto-commits",
                    "--no-check-update",
                    "--no-show-model-warnings",
                    "--model",
                    "openai/{model}",
                    "--message",
                    "{prompt}",
                    "{file}",
                ],
                api: AgentApi::Openai,
                env: &[
                    ("OPENAI_API_BASE", "{base_url}"),
                    ("OPENAI_API_KEY", "{token}"),
                ],
            },
        }
    }
}
