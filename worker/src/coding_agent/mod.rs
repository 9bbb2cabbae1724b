//! Agent mode: a coding agent (mini-swe-agent, Claude Code, ...) completes a unit's masked file
//! in a sealed sandbox, its model reached only through this worker.
//!
//! Not to be confused with [`crate::agent`], the worker's own connection to the coordinator.
//!
//! One unit: the masked project tree is sealed ([`workspace::seal`]: no `.git`, no symlink, no
//! original block, nothing of the harness), copied into a fresh container on an internal network
//! ([`sandbox`]), the agent runs with a per-unit token for the worker's [`proxy`] (the real key
//! stays in the worker), and the files it changed come back through the same checks as a
//! model's patch ([`workspace::collect`]), to be evaluated exactly as an LLM's answer.

pub mod config;
pub mod presets;
pub mod proxy;
pub mod sandbox;
pub mod turn_budget;
pub mod workspace;

pub use config::{AgentApi, AgentConfig, AgentLimits, ResolvedAgent};
pub use presets::AgentPreset;

use crate::model::{ApiKey, ProviderFault, TokenUsage};
use ase_common::dataset::{Task, TaskContext};
use proxy::{CallPermits, SessionLimits, SessionStats, Upstream};
use sandbox::{RunRequest, Sandbox, SandboxError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use workspace::AgentResult;

/// The internal network of agent containers (see [`sandbox`]).
pub const NETWORK: &str = "ase-agents";

/// Where the prompt is put in the container (outside the workspace), for `{prompt_file}`.
pub const PROMPT_FILE: &str = "/ase-agent/prompt.md";

/// The coding agents of one worker: its sandbox network and proxy, made at the first unit.
pub struct CodingAgents {
    docker: bollard::Docker,
    network: String,
    sandbox: tokio::sync::OnceCell<Sandbox>,
    /// Grants each agent call after its first from the run's rate (the coordinator, once the
    /// worker connected); none: no rate limit (a worker without a coordinator, tests).
    call_permits: Mutex<Option<Arc<dyn CallPermits>>>,
}

/// One unit to run.
pub struct AgentUnit<'a> {
    pub run: &'a str,
    pub unit: &'a str,
    pub worker: &'a str,
    pub task: &'a Task,
    pub context: Option<&'a TaskContext>,
    /// The project root of the unit tree, with the masked file written.
    pub project_root: PathBuf,
    pub agent: &'a ResolvedAgent,
    pub api_key: Option<ApiKey>,
    /// Replaces the built-in agent prompt template.
    pub template: Option<&'a str>,
}

/// What the agent did, for the unit's record.
#[derive(Debug, Clone, Default)]
pub struct AgentReport {
    pub calls: u32,
    /// Calls the endpoint answered: the agent's turns.
    pub turns: u32,
    /// Calls the proxy refused.
    pub refused: u32,
    /// Calls the proxy held back for the run's rate.
    pub rate_limited: u32,
    pub usage: Option<TokenUsage>,
    pub cost_usd: Option<f64>,
    pub seconds: f64,
    pub exit_code: Option<i64>,
    pub output_tail: String,
    pub transcript: String,
    pub transcript_truncated: bool,
    /// The agent ran out of this budget (`max_turns`, `max_calls`, `max_tokens`) and its
    /// changes are taken as its answer (see [`turn_budget`]).
    pub stopped: Option<String>,
}

/// How a unit's agent ended.
#[derive(Debug)]
pub enum AgentOutcome {
    /// The agent exited 0; its changes, checked.
    Finished(AgentResult),
    /// The agent's fault (crash, timeout, a refused result): a failed generation.
    ModelFailure(String),
    /// The provider behind the proxy failed (auth, quota, rate limit...): the run's condition.
    Provider {
        fault: ProviderFault,
        detail: String,
    },
    /// The worker could not run the agent (no Docker answer, image missing, config).
    Infrastructure { configuration: bool, detail: String },
}

impl CodingAgents {
    /// The worker's agents' sandbox on `docker`: the network [`NETWORK`], shared by every
    /// worker of the daemon (one bridge, not one per worker: networks take address pools).
    pub fn new(docker: bollard::Docker) -> Self {
        CodingAgents {
            docker,
            network: NETWORK.to_string(),
            sandbox: tokio::sync::OnceCell::new(),
            call_permits: Mutex::new(None),
        }
    }

    /// Who grants agents' calls from the run's rate from now on.
    pub fn set_call_permits(&self, permits: Arc<dyn CallPermits>) {
        *self.call_permits.lock().unwrap_or_else(|p| p.into_inner()) = Some(permits);
    }

    /// What the agent of unit `unit` (its folder name) of run `run` spent so far, while it
    /// runs on this worker: the worker reports it with its heartbeats.
    pub fn live_usage(
        &self,
        run: &str,
        unit: &str,
    ) -> Option<ase_common::agent_record::AttemptUsage> {
        self.sandbox.get()?.proxy().live_usage(run, unit)
    }

    /// The network's name (agents' containers are on it and on nothing else).
    pub fn network(&self) -> &str {
        &self.network
    }

    pub async fn sandbox(&self) -> Result<&Sandbox, SandboxError> {
        self.sandbox
            .get_or_try_init(|| Sandbox::start(self.docker.clone(), &self.network))
            .await
    }

    /// Runs one unit's agent. Never panics; every problem is an [`AgentOutcome`].
    pub async fn run_unit(&self, u: AgentUnit<'_>) -> (AgentOutcome, AgentReport) {
        let mut report = AgentReport::default();
        let infra = |configuration: bool, detail: String| AgentOutcome::Infrastructure {
            configuration,
            detail,
        };
        let sandbox = match self.sandbox().await {
            Ok(s) => s,
            Err(e) => return (infra(false, e.to_string()), report),
        };
        let a = u.agent;
        let prompt = match ase_common::prompt::agent::build_agent_prompt(
            u.task,
            u.context,
            a.limits.max_turns,
            u.template,
        ) {
            Ok(p) => p,
            Err(e) => return (infra(true, e.to_string()), report),
        };
        let root = u.project_root.clone();
        let max_ws = a.limits.max_workspace_bytes;
        let sealed = match tokio::task::spawn_blocking(move || workspace::seal(&root, max_ws)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return (infra(false, e.to_string()), report),
            Err(e) => return (infra(false, e.to_string()), report),
        };
        let upstream = Upstream {
            api: a.api,
            base_url: a.upstream.base_url.clone(),
            model: a.upstream.model.clone(),
            key: u.api_key.clone(),
            pricing: a.upstream.prices.get(&a.upstream.model).cloned(),
            request_timeout: a.upstream.request_timeout,
        };
        let session = sandbox.proxy().register_unit(
            u.run,
            u.unit,
            upstream,
            SessionLimits {
                max_calls: a.limits.call_budget(),
                max_tokens: a.limits.max_tokens,
                max_transcript: a.limits.max_transcript_bytes,
                permits: self
                    .call_permits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            },
        );
        let proxy = sandbox.proxy().addr();
        let base_url = match a.api {
            AgentApi::Anthropic => format!("http://{proxy}"),
            _ => format!("http://{proxy}/v1"),
        };
        let vars: BTreeMap<&str, String> = BTreeMap::from([
            ("prompt", prompt.clone()),
            ("prompt_file", PROMPT_FILE.to_string()),
            ("file", u.task.vuln_file.clone()),
            ("workspace", "/workspace".to_string()),
            ("max_turns", a.limits.max_turns.to_string()),
            ("budget", a.limits.max_turns.to_string()),
            ("wall_secs", a.limits.wall_secs.to_string()),
            ("model", a.upstream.model.clone()),
            ("base_url", base_url),
            ("token", session.token().to_string()),
        ]);
        let argv: Vec<String> = a
            .command
            .iter()
            .map(|s| config::substitute(s, &vars))
            .collect();
        // A writable home for the agent's own files; the run's `env` may name another.
        let mut env: Vec<String> = vec!["HOME=/tmp/agent-home".into()];
        env.extend(
            a.env
                .iter()
                .map(|(k, v)| format!("{k}={}", config::substitute(v, &vars))),
        );
        for (to, from) in &a.env_from {
            if let Ok(v) = std::env::var(from) {
                env.push(format!("{to}={v}"));
            }
        }
        // The sealed tree plus the prompt file, in one archive unpacked at `/`.
        let mut tar = sealed.tar.clone();
        if let Err(e) = append_prompt(&mut tar, &prompt) {
            return (infra(false, e.to_string()), report);
        }
        let ran = sandbox
            .run(RunRequest {
                image: a.image.clone(),
                argv,
                env,
                limits: a.limits.clone(),
                run: u.run.to_string(),
                unit: u.unit.to_string(),
                worker: u.worker.to_string(),
                tar,
            })
            .await;
        let stats: SessionStats = session.stats();
        drop(session);
        report.calls = stats.calls;
        report.turns = stats.answered;
        report.refused = stats.refused;
        report.rate_limited = stats.rate_limited;
        report.usage = stats.usage_reported.then_some(stats.usage);
        report.cost_usd = stats.cost_usd;
        report.transcript = stats.transcript;
        report.transcript_truncated = stats.transcript_truncated;
        let out = match ran {
            Ok(o) => o,
            Err(SandboxError::NoImage { image }) => {
                return (
                    infra(true, format!("the agent image {image} is not on this worker's daemon (deploy/images/build.sh agent)")),
                    report,
                )
            }
            Err(SandboxError::Archive(detail)) => {
                return (AgentOutcome::ModelFailure(format!("the agent's workspace: {detail}")), report)
            }
            Err(e) => return (infra(false, e.to_string()), report),
        };
        report.seconds = out.seconds;
        report.exit_code = out.exit_code;
        report.output_tail = out.output_tail.clone();
        let failed = out.timed_out || out.exit_code != Some(0);
        report.stopped = turn_budget::ran_out(out.exit_code, &out.output_tail, stats.budget_spent);
        // An agent that failed because its provider did (bad key, no credit, 429s) says nothing
        // about the model: the run's condition, as for the OpenAI provider.
        // So is one whose every call failed on the provider, however it exited (an agent may
        // catch the error and exit 0 with nothing done).
        if failed || stats.answered == 0 {
            if let Some((fault, detail)) = stats.last_fault {
                return (AgentOutcome::Provider { fault, detail }, report);
            }
        }
        if out.timed_out {
            return (
                AgentOutcome::ModelFailure(format!(
                    "the agent was killed at its time limit of {} s; output tail: {}",
                    a.limits.wall_secs,
                    tail_line(&out.output_tail)
                )),
                report,
            );
        }
        if out.exit_code != Some(0) && report.stopped.is_none() {
            return (
                AgentOutcome::ModelFailure(format!(
                    "the agent exited with code {}; output tail: {}",
                    out.exit_code.map_or("?".to_string(), |c| c.to_string()),
                    tail_line(&out.output_tail)
                )),
                report,
            );
        }
        let Some(archive) = out.workspace else {
            return (
                AgentOutcome::ModelFailure("no workspace came back".into()),
                report,
            );
        };
        let max = a.limits.max_result_bytes;
        let collected = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(archive.path())?;
            Ok::<_, std::io::Error>(workspace::collect(&sealed, std::io::BufReader::new(f), max))
        })
        .await;
        match collected {
            Ok(Ok(Ok(result))) => (AgentOutcome::Finished(result), report),
            Ok(Ok(Err(refused))) => (
                AgentOutcome::ModelFailure(format!("the agent's result is refused: {refused}")),
                report,
            ),
            Ok(Err(e)) => (infra(false, e.to_string()), report),
            Err(e) => (infra(false, e.to_string()), report),
        }
    }
}

/// The last 2 KiB of the output, on one line, for a reason.
fn tail_line(output: &str) -> String {
    let t = output.trim();
    let mut start = t.len().saturating_sub(2048);
    while !t.is_char_boundary(start) {
        start += 1;
    }
    t[start..].replace('\n', " | ")
}

/// Appends `ase-agent/prompt.md` to a finished tar (its two zero blocks dropped first).
fn append_prompt(tar: &mut Vec<u8>, prompt: &str) -> std::io::Result<()> {
    // A finished archive ends with two 512-byte zero blocks (the builder may pad to a record).
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|b| *b == 0) {
        tar.truncate(tar.len() - 512);
    }
    let mut b = tar::Builder::new(std::mem::take(tar));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o444);
    h.set_size(prompt.len() as u64);
    h.set_mtime(0);
    b.append_data(
        &mut h,
        PROMPT_FILE.trim_start_matches('/'),
        prompt.as_bytes(),
    )?;
    *tar = b.into_inner()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_file_joins_the_sealed_archive() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.py"), "x\n").unwrap();
        let s = workspace::seal(d.path(), 1 << 20).unwrap();
        let mut tar = s.tar.clone();
        append_prompt(&mut tar, "do it").unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            vec!["workspace/", "workspace/a.py", "ase-agent/prompt.md"]
        );
    }
}
