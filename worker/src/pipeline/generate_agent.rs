//! The generate phase of an `agent` run's unit: the coding agent edits the sealed masked tree,
//! and the files it changed become the unit's code through the same steps as an LLM's answer
//! (protocol step 7, the changed files against the base tree), so that evaluation (v1 scan, v2
//! container) cannot tell the two apart.

use super::generate::{bounded_answer, failed_code, finish_code};
use super::spec::{ModelSpec, RunSpec};
use super::unit_code::join_rel;
use super::{InfraError, InfraKind, WorkerContext};
use crate::coding_agent::{AgentOutcome, AgentReport, AgentUnit};
use crate::model::ApiKey;
use crate::repo_cache::UnitTree;
use ase_common::agent_record::AgentRecord;
use ase_common::dataset::{Task, TaskContext};
use ase_common::prompt::masking::MaskedFile;
use ase_common::scoring::UnitId;
use ase_common::unit::{ApplyMethod, GenerationRecord, TokenUsage};
use std::collections::BTreeSet;
use std::sync::Arc;

pub(super) struct AgentInput<'a> {
    pub run_id: &'a str,
    pub unit_id: UnitId,
    pub task: Arc<Task>,
    pub context: Option<TaskContext>,
    pub spec: &'a RunSpec,
    pub api_key: Option<ApiKey>,
    pub unit: UnitTree,
    pub prefix: String,
    pub masked: MaskedFile,
    pub prompt_tokens: usize,
}

/// The record's answer text: the agent's exit, calls and output tail, for people reading the
/// record; the figures and the transcript are typed fields of [`AgentRecord`].
fn summary(report: &AgentReport) -> String {
    format!(
        "agent: exit {}, {} turns, {} model calls, {:.1} s\n--- output tail\n{}\n",
        report
            .exit_code
            .map_or("none (killed)".to_string(), |c| c.to_string()),
        report.turns,
        report.calls,
        report.seconds,
        report.output_tail.trim_end(),
    )
}

/// What the unit's record keeps of the agent's run, as typed fields.
fn agent_record(report: &AgentReport) -> AgentRecord {
    AgentRecord {
        turns: report.turns,
        model_calls: report.calls,
        refused_calls: report.refused,
        rate_limited_calls: report.rate_limited,
        stopped: report.stopped.clone(),
        usage: report.usage.map(|u| TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        cost_usd: report.cost_usd,
        wall_seconds: report.seconds,
        exit_code: report.exit_code,
        output_tail: report.output_tail.clone(),
        transcript: report.transcript.clone(),
        transcript_truncated: report.transcript_truncated,
    }
    .bounded()
}

pub(super) async fn generate_agent(
    ctx: &WorkerContext,
    input: AgentInput<'_>,
) -> Result<GenerationRecord, InfraError> {
    let AgentInput {
        run_id,
        unit_id,
        task,
        context,
        spec,
        api_key,
        mut unit,
        prefix,
        masked,
        prompt_tokens,
    } = input;
    let config_err = |d: String| InfraError::new(&unit_id, InfraKind::Configuration, d);
    let ModelSpec::Agent { config } = &spec.model else {
        return Err(config_err("not an agent run".into()));
    };
    let agent = config.resolve().map_err(|e| config_err(e.to_string()))?;
    let Some(agents) = ctx.coding_agents.clone() else {
        return Err(config_err(
            "agent runs need Docker on the worker (none answered)".into(),
        ));
    };
    let api_key = match api_key {
        Some(k) => Some(k),
        None => agent
            .upstream
            .api_key
            .resolve()
            .map_err(|e| config_err(format!("the endpoint's key: {e}")))?,
    };
    let run_provider = ctx
        .providers
        .for_run(spec, None)
        .map_err(|e| config_err(e.to_string()))?;
    let project_root = if prefix.is_empty() {
        unit.path().to_path_buf()
    } else {
        unit.path().join(&prefix)
    };
    let (outcome, report) = {
        let _permit = run_provider
            .inflight
            .acquire()
            .await
            .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))?;
        agents
            .run_unit(AgentUnit {
                run: run_id,
                unit: &unit_id.dir_name(),
                worker: &ctx.container_owner,
                task: &task,
                context: context.as_ref(),
                project_root,
                agent: &agent,
                api_key,
                template: None,
            })
            .await
    };
    let mut record = GenerationRecord {
        unit: unit_id.clone(),
        success: false,
        reason: None,
        method: None,
        raw_answer: None,
        answer_truncated: false,
        changed_files: Vec::new(),
        deleted_files: Vec::new(),
        usage: report.usage.map(|u| TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        cost_usd: report.cost_usd,
        time_cost: report.seconds,
        model_attempts: report.calls,
        prompt_tokens_estimate: Some(prompt_tokens as u64),
        agent: Some(Box::new(agent_record(&report))),
    };
    let (kept, truncated) = bounded_answer(&summary(&report));
    record.raw_answer = Some(kept);
    record.answer_truncated = truncated;
    let result = match outcome {
        AgentOutcome::Finished(r) => r,
        AgentOutcome::ModelFailure(reason) => {
            record.reason = Some(format!("failed generation: {reason}"));
            record.changed_files = failed_code(&task, &masked);
            return Ok(record);
        }
        AgentOutcome::Provider { fault, detail } => {
            let mut e = InfraError::new(
                &unit_id,
                InfraKind::Provider(fault),
                format!("the agent's model provider failed: {detail}"),
            );
            e.retry_after_secs = None;
            return Err(e);
        }
        AgentOutcome::Infrastructure {
            configuration,
            detail,
        } => {
            let kind = if configuration {
                InfraKind::Configuration
            } else {
                InfraKind::Scanner
            };
            return Err(InfraError::new(&unit_id, kind, format!("agent: {detail}")));
        }
    };
    if result.changed.is_empty() && result.deleted.is_empty() {
        record.reason = Some(match &report.stopped {
            Some(budget) => format!(
                "failed generation: the agent ran out of its budget ({budget}) and changed no file"
            ),
            None => "failed generation: the agent changed no file".into(),
        });
        record.changed_files = failed_code(&task, &masked);
        return Ok(record);
    }
    let uid = unit_id.clone();
    let t = task.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut touched = BTreeSet::new();
        touched.insert(join_rel(&prefix, &t.vuln_file));
        for (path, (data, _mode)) in &result.changed {
            let rel = join_rel(&prefix, path);
            if let Err(e) = unit.write(&rel, data) {
                return Ok(Err(format!("the agent's file {path:?}: {e}")));
            }
            touched.insert(rel);
        }
        for path in &result.deleted {
            let rel = join_rel(&prefix, path);
            if let Err(e) = unit.remove(&rel) {
                return Ok(Err(format!("the agent's deletion of {path:?}: {e}")));
            }
            touched.insert(rel);
        }
        match finish_code(&mut unit, &prefix, &touched) {
            Ok(code) => Ok(Ok(code)),
            Err(e) if e.is_model_fault() => Ok(Err(e.to_string())),
            Err(e) => Err(InfraError::new(&uid, InfraKind::Worker, e.to_string())),
        }
    })
    .await
    .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))??;
    match outcome {
        Ok((changed, deleted)) => {
            record.success = true;
            record.method = Some(ApplyMethod::Agent);
            record.changed_files = changed;
            record.deleted_files = deleted;
        }
        Err(reason) => {
            record.reason = Some(format!("failed generation: {reason}"));
            record.changed_files = failed_code(&task, &masked);
        }
    }
    Ok(record)
}
