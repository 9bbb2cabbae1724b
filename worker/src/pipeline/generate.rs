//! The generate phase of one unit (protocol steps 1-7).

use super::spec::RunSpec;
use super::unit_code::{collect_changed, join_rel, relative_root, UnitCodeError};
use super::{InfraError, InfraKind, WorkerContext};
use crate::model::{ApiKey, ChatPrompt, FailureReason, UnitInput};
use crate::repo_cache::{RepoCacheError, UnitTree};
use ase_common::answer::extract::{extract_code, extract_patch};
use ase_common::answer::patch_apply::{apply_patch, ApplyFailure, ApplyStatus, AttemptKind};
use ase_common::answer::patch_paths::named_paths;
use ase_common::answer::splice::{splice, SpliceOutcome};
use ase_common::dataset::{DatasetVersion, Task, TaskContext, TaskSpec};
use ase_common::prompt::masking::{mask, strip_mask_lines, MaskedFile};
use ase_common::prompt::repo_files::{project_root, read_repo_file};
use ase_common::prompt::{build_prompt, PromptOptions, Templates};
use ase_common::scoring::UnitId;
use ase_common::unit::{
    ApplyMethod, ChangedFile, GenerationRecord, TokenUsage, MAX_RAW_ANSWER_BYTES,
};
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

/// How the answer went into the tree: the method, or why it did not.
type Applied = Result<ApplyMethod, String>;

fn apply_answer(
    unit: &mut UnitTree,
    prefix: &str,
    task: &Task,
    masked: &MaskedFile,
    answer: &str,
    apply: &ase_common::answer::patch_apply::ApplyOptions,
) -> Result<(Applied, BTreeSet<String>), InfraError> {
    let mut touched = BTreeSet::new();
    match task.version() {
        DatasetVersion::V1 => {
            let Some(patch) = extract_patch(answer) else {
                return Ok((Err("no patch in the answer".into()), touched));
            };
            let named = match named_paths(&patch.text) {
                Ok(n) => n,
                Err(r) => return Ok((Err(format!("patch refused: {r}")), touched)),
            };
            // The tools write in place: every file they may touch gets its own copy first, so
            // the shared tree (hard-linked into the unit) is never modified.
            for p in &named {
                let rel = join_rel(prefix, &p.relative());
                match unit.unshare(&rel) {
                    Ok(_) => {
                        touched.insert(rel);
                    }
                    Err(RepoCacheError::BadUnitPath(path)) => {
                        return Ok((
                            Err(format!(
                                "patch refused: path {path:?} is not inside the tree"
                            )),
                            touched,
                        ))
                    }
                    Err(e) => return Err(repo_error(&UnitId::new(&task.instance_id, 0), e)),
                }
            }
            let root = if prefix.is_empty() {
                unit.path().to_path_buf()
            } else {
                unit.path().join(prefix)
            };
            let outcome = apply_patch(&root, &patch.text, apply);
            match &outcome.status {
                // The answer's doing: scored.
                ApplyStatus::Failed {
                    failure: ApplyFailure::SnapshotTooLarge { max_bytes },
                } => {
                    let reason = format!(
                        "patch refused: the files the patch names exceed the snapshot limit of \
                         {max_bytes} bytes"
                    );
                    return Ok((Err(reason), touched));
                }
                // The worker's disk failed, not the patch: retry the unit rather than score it.
                ApplyStatus::Failed {
                    failure: ApplyFailure::TreeIo { message },
                } => {
                    return Err(InfraError::new(
                        &UnitId::new(&task.instance_id, 0),
                        InfraKind::Worker,
                        format!("applying the patch: {message}"),
                    ));
                }
                _ => {}
            }
            for c in &outcome.changes {
                touched.insert(join_rel(prefix, &c.path));
            }
            Ok((
                match outcome.status {
                    ApplyStatus::Applied { by } => Ok(match by {
                        AttemptKind::GitApply => ApplyMethod::GitApply,
                        AttemptKind::Patch => ApplyMethod::Patch,
                        AttemptKind::RepairedGitApply => ApplyMethod::RepairedGitApply,
                        AttemptKind::RepairedPatch => ApplyMethod::RepairedPatch,
                    }),
                    ApplyStatus::Failed { failure } => Err(format!(
                        "patch does not apply: {}",
                        serde_json::to_string(&failure).unwrap_or_default()
                    )),
                },
                touched,
            ))
        }
        DatasetVersion::V2 => {
            let Some(code) = extract_code(answer) else {
                return Ok((Err("no code in the answer".into()), touched));
            };
            match splice(masked, &code) {
                SpliceOutcome::Spliced(s) => {
                    let rel = join_rel(prefix, &task.vuln_file);
                    unit.write(&rel, s.file_text.as_bytes())
                        .map_err(|e| repo_error(&UnitId::new(&task.instance_id, 0), e))?;
                    touched.insert(rel);
                    Ok((Ok(ApplyMethod::Splice), touched))
                }
                SpliceOutcome::Failed(f) => Ok((Err(format!("splice failed: {f}")), touched)),
            }
        }
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
        let res = apply_answer(&mut unit, &prefix, &t, &masked, &answer, &apply).and_then(
            |(applied, mut touched)| {
                touched.insert(join_rel(&prefix, &t.vuln_file));
                match applied {
                    Ok(method) => match finish_code(&mut unit, &prefix, &touched) {
                        Ok(code) => Ok((Ok(method), code)),
                        Err(e) if e.is_model_fault() => {
                            Ok((Err(e.to_string()), (failed_code(&t, &masked), vec![])))
                        }
                        Err(e) => Err(InfraError::new(&uid, InfraKind::Worker, e.to_string())),
                    },
                    Err(reason) => Ok((Err(reason), (failed_code(&t, &masked), vec![]))),
                }
            },
        );
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
