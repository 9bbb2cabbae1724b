//! The generate phase of one unit (protocol steps 1-7).

use super::spec::RunSpec;
use super::unit_code::{collect_changed, join_rel, relative_root, ProjectTree, UnitCodeError};
use super::{InfraError, InfraKind, WorkerContext};
use crate::model::{ApiKey, ChatPrompt, FailureReason, UnitInput};
use crate::repo_cache::{RepoCacheError, UnitTree};
use ase_common::answer::apply::{apply_answer, AnswerError, Applied, TreeError};
use ase_common::dataset::{DatasetVersion, Task, TaskContext, TaskSpec};
use ase_common::prompt::masking::{mask, strip_mask_lines, MaskedFile};
use ase_common::prompt::repo_files::{project_root, read_repo_file};
use ase_common::prompt::{build_prompt, PromptOptions, Templates};
use ase_common::scoring::UnitId;
use ase_common::unit::{ChangedFile, GenerationRecord, TokenUsage, MAX_RAW_ANSWER_BYTES};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// One unit to generate.
pub struct GenerateInput<'a> {
    pub run_id: String,
    pub task: Task,
    pub context: Option<TaskContext>,
    /// The seed task's `repo` of a mutated v1 task (for its project root).
    pub seed_repo: Option<String>,
    /// 1-based.
    pub round: u32,
    pub spec: &'a RunSpec,
    /// Handed over in the lease; wins over the run's configured key source.
    pub api_key: Option<ApiKey>,
}

/// The unit tree with the masked file written and the prompt built.
struct Prepared {
    unit: UnitTree,
    /// Project root relative to the unit tree (`""`: the tree itself).
    prefix: String,
    masked: MaskedFile,
    prompt: ChatPrompt,
    prompt_tokens: usize,
}

fn branch_origin(task: &Task) -> Option<String> {
    match &task.spec {
        TaskSpec::V2(d) => d.branch_origin.clone(),
        TaskSpec::V1(_) => None,
    }
}

fn repo_error(unit: &UnitId, e: RepoCacheError) -> InfraError {
    InfraError::new(unit, InfraKind::Repository, e.to_string())
}

fn templates(spec: &RunSpec, unit: &UnitId) -> Result<Templates, InfraError> {
    let mut t = Templates::default();
    let config = |e: ase_common::prompt::PromptError| {
        InfraError::new(unit, InfraKind::Configuration, e.to_string())
    };
    if let Some(src) = &spec.prompt.v1_template {
        t = t
            .with_source(DatasetVersion::V1, src.clone(), "run v1 template")
            .map_err(config)?;
    }
    if let Some(src) = &spec.prompt.v2_template {
        t = t
            .with_source(DatasetVersion::V2, src.clone(), "run v2 template")
            .map_err(config)?;
    }
    Ok(t)
}

// One call site; the arguments are the unit's inputs moved onto the blocking pool.
#[allow(clippy::too_many_arguments)]
fn prepare(
    ctx_cache: crate::repo_cache::RepoCache,
    unit_id: UnitId,
    run_id: String,
    task: Arc<Task>,
    context: Option<TaskContext>,
    seed_repo: Option<String>,
    opts: PromptOptions,
    templates: Templates,
) -> Result<Prepared, InfraError> {
    let sha = ctx_cache
        .resolve(
            &task.repo,
            &task.base_commit,
            branch_origin(&task).as_deref(),
        )
        .map_err(|e| repo_error(&unit_id, e))?;
    let name = format!("{run_id}-{}", unit_id.dir_name());
    let mut unit = ctx_cache
        .unit(&task.repo, &sha, &name)
        .map_err(|e| repo_error(&unit_id, e))?;
    let root = project_root(unit.path(), &task, seed_repo.as_deref());
    let prefix = relative_root(unit.path(), &root);
    let original = read_repo_file(&root, &task.vuln_file, opts.max_file_bytes).map_err(|e| {
        InfraError::new(
            &unit_id,
            InfraKind::Repository,
            format!("task {}: vuln_file at {sha}: {e}", task.instance_id),
        )
    })?;
    let masked = mask(
        &task.instance_id,
        &task.vuln_file,
        &original.text,
        task.vuln_lines,
    )
    .map_err(|e| InfraError::new(&unit_id, InfraKind::Configuration, e.to_string()))?;
    // The model's patch is made against the masked file, so that is what it must apply to.
    unit.write(&join_rel(&prefix, &task.vuln_file), masked.text.as_bytes())
        .map_err(|e| repo_error(&unit_id, e))?;
    let prompt = build_prompt(&task, &masked, context.as_ref(), &root, &opts, &templates)
        .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))?;
    Ok(Prepared {
        unit,
        prefix,
        masked,
        prompt_tokens: prompt.tokens,
        prompt: ChatPrompt {
            system: prompt.system,
            user: prompt.user,
        },
    })
}

/// The one place an answer's tree failures become the worker's: the tree's own errors are the
/// repository cache's, a tool's failed I/O the worker's disk. Either way the unit is retried,
/// not scored.
fn answer_error(unit: &UnitId, e: AnswerError<RepoCacheError>) -> InfraError {
    match e {
        AnswerError::Tree(TreeError::Outside { source, .. } | TreeError::Failed(source)) => {
            repo_error(unit, source)
        }
        e @ AnswerError::ToolIo(_) => InfraError::new(unit, InfraKind::Worker, e.to_string()),
    }
}

/// Protocol step 7 on every touched file, then the files that differ from the base tree.
pub(super) fn finish_code(
    unit: &mut UnitTree,
    prefix: &str,
    touched: &BTreeSet<String>,
) -> Result<(Vec<ChangedFile>, Vec<String>), UnitCodeError> {
    for rel in touched {
        let abs = unit.path().join(rel);
        let Ok(md) = std::fs::symlink_metadata(&abs) else {
            continue;
        };
        if !md.is_file() {
            continue;
        }
        let data = unit.read(rel)?;
        if let Ok(text) = std::str::from_utf8(&data) {
            if let Some(stripped) = strip_mask_lines(text) {
                unit.write(rel, stripped.as_bytes())?;
            }
        }
    }
    collect_changed(unit, prefix, touched)
}

/// What a failed generation leaves for the scan: the masked file without its mask line.
pub(super) fn failed_code(task: &Task, masked: &MaskedFile) -> Vec<ChangedFile> {
    let text = strip_mask_lines(&masked.text).unwrap_or_else(|| masked.text.clone());
    vec![ChangedFile {
        path: task.vuln_file.clone(),
        content: Some(text),
        content_base64: None,
        mode: 0o644,
    }]
}

pub(super) fn bounded_answer(answer: &str) -> (String, bool) {
    if answer.len() <= MAX_RAW_ANSWER_BYTES {
        return (answer.to_string(), false);
    }
    let mut cut = MAX_RAW_ANSWER_BYTES;
    while !answer.is_char_boundary(cut) {
        cut -= 1;
    }
    (answer[..cut].to_string(), true)
}

/// Run the generate phase of one unit.
pub async fn generate(
    ctx: &WorkerContext,
    input: GenerateInput<'_>,
) -> Result<GenerationRecord, InfraError> {
    let unit_id = UnitId::new(&input.task.instance_id, input.round);
    let spec = input.spec;
    let templates = templates(spec, &unit_id)?;
    let opts = PromptOptions {
        max_context_tokens: spec.prompt.max_context_token,
        ..PromptOptions::default()
    };
    let task = Arc::new(input.task);
    let prepared = {
        let (cache, uid, run, t) = (
            ctx.repo_cache.clone(),
            unit_id.clone(),
            input.run_id.clone(),
            task.clone(),
        );
        let (context, seed) = (input.context.clone(), input.seed_repo);
        tokio::task::spawn_blocking(move || {
            prepare(cache, uid, run, t, context, seed, opts, templates)
        })
        .await
        .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))??
    };
    let Prepared {
        mut unit,
        prefix,
        masked,
        prompt,
        prompt_tokens,
    } = prepared;
    if let super::spec::ModelSpec::Agent { .. } = &spec.model {
        return super::generate_agent::generate_agent(
            ctx,
            super::generate_agent::AgentInput {
                run_id: &input.run_id,
                unit_id,
                task,
                context: input.context,
                spec,
                api_key: input.api_key,
                unit,
                prefix,
                masked,
                prompt_tokens,
            },
        )
        .await;
    }

    let run_provider = ctx
        .providers
        .for_run(spec, input.api_key)
        .map_err(|e| InfraError::new(&unit_id, InfraKind::Configuration, e.to_string()))?;
    let started = Instant::now();
    let generation = {
        let _permit = run_provider
            .inflight
            .acquire()
            .await
            .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))?;
        run_provider
            .provider
            .generate(&UnitInput {
                task: &task,
                round: input.round,
                prompt: &prompt,
                masked: &masked,
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
        usage: generation.usage.map(|u| TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        cost_usd: generation.cost_usd,
        time_cost: 0.0,
        model_attempts: generation.attempts,
        prompt_tokens_estimate: Some(prompt_tokens as u64),
        agent: None,
    };
    let answer = match (generation.answer, generation.failure) {
        (_, Some(FailureReason::Infrastructure(f))) => {
            return Err(InfraError::of_model_failure(&unit_id, &f));
        }
        (_, Some(FailureReason::Model(m))) => {
            record.reason = Some(format!("failed generation: {m}"));
            record.changed_files = failed_code(&task, &masked);
            record.time_cost = started.elapsed().as_secs_f64();
            return Ok(record);
        }
        (None, None) => {
            record.reason = Some("failed generation: no answer".into());
            record.changed_files = failed_code(&task, &masked);
            record.time_cost = started.elapsed().as_secs_f64();
            return Ok(record);
        }
        (Some(a), None) => a,
    };
    let (kept, truncated) = bounded_answer(&answer);
    record.raw_answer = Some(kept);
    record.answer_truncated = truncated;

    let apply = ctx.apply.clone();
    let t = task.clone();
    let uid = unit_id.clone();
    let (unit_back, outcome) = tokio::task::spawn_blocking(move || {
        let mut project = ProjectTree {
            unit: &mut unit,
            prefix: &prefix,
        };
        let res = apply_answer(
            &mut project,
            t.version(),
            &t.vuln_file,
            &masked,
            &answer,
            &apply,
        )
        .map_err(|e| answer_error(&uid, e))
        .and_then(|Applied { outcome, touched }| {
            let mut touched: BTreeSet<String> =
                touched.iter().map(|rel| join_rel(&prefix, rel)).collect();
            touched.insert(join_rel(&prefix, &t.vuln_file));
            match outcome {
                Ok(method) => match finish_code(&mut unit, &prefix, &touched) {
                    Ok(code) => Ok((Ok(method), code)),
                    Err(e) if e.is_model_fault() => {
                        Ok((Err(e.to_string()), (failed_code(&t, &masked), vec![])))
                    }
                    Err(e) => Err(InfraError::new(&uid, InfraKind::Worker, e.to_string())),
                },
                Err(refusal) => Ok((Err(refusal.to_string()), (failed_code(&t, &masked), vec![]))),
            }
        });
        (unit, res)
    })
    .await
    .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))?;
    drop(unit_back);
    let (applied, (changed, deleted)) = outcome.map_err(|mut e| {
        e.unit = unit_id.clone();
        e
    })?;
    match applied {
        Ok(method) => {
            record.success = true;
            record.method = Some(method);
        }
        Err(reason) => record.reason = Some(reason),
    }
    record.changed_files = changed;
    record.deleted_files = deleted;
    record.time_cost = started.elapsed().as_secs_f64();
    Ok(record)
}
