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
    /// Claude Code (`claude`, bundled in PyPI's `claude-agent-sdk`), image built by
    /// `deploy/images/build.sh agent-claude`.
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
            // Checked with Claude Code 2.1.332 (claude-agent-sdk 0.2.189) in the image
            // `deploy/images/build.sh agent-claude` builds: `-p` runs headless; bypassing the
            // permission prompts (its Bash, Read, Write and Edit tools then need no approval) is
            // refused as root, so the image runs as uid 1000; `--max-turns` ends it with exit 1
            // (`error_max_turns`); `--output-format json` puts its result (turns, stop reason)
            // in the output tail. With CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC it makes no
            // connection but to ANTHROPIC_BASE_URL (`POST /v1/messages?beta=true`, streamed).
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
                    "bypassPermissions",
                    "--output-format",
                    "json",
                ],
                api: AgentApi::Anthropic,
                env: &[
                    ("ANTHROPIC_BASE_URL", "{base_url}"),
                    ("ANTHROPIC_API_KEY", "{token}"),
                    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                    ("DISABLE_TELEMETRY", "1"),
                    ("DISABLE_AUTOUPDATER", "1"),
                    ("DISABLE_ERROR_REPORTING", "1"),
                    // Its default (10 retries with back-off) spends minutes on a 401 or 429;
                    // the worker reports the provider's fault and the coordinator backs off.
                    ("CLAUDE_CODE_MAX_RETRIES", "2"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_code_runs_headless_without_prompts_within_its_turns() {
        let d = AgentPreset::ClaudeCode.defaults();
        let cmd = d.command.join(" ");
        // As checked with the real CLI (see the comment on the preset): `acceptEdits` would
        // deny its Bash tool in `-p` mode, and `Grep`/`Glob` are no tools of 2.1.x.
        assert!(cmd.starts_with("claude -p {prompt} "), "{cmd}");
        assert!(cmd.contains("--permission-mode bypassPermissions"), "{cmd}");
        assert!(cmd.contains("--max-turns {max_turns}"), "{cmd}");
        let env: std::collections::BTreeMap<_, _> = d.env.iter().copied().collect();
        assert_eq!(env["ANTHROPIC_BASE_URL"], "{base_url}");
        assert_eq!(env["ANTHROPIC_API_KEY"], "{token}");
        assert_eq!(env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
        assert_eq!(d.api, AgentApi::Anthropic);
    }
}
