//! The one entry that runs a unit's phase, whichever it is: generation, the static (v1)
//! evaluation, or the dynamic (v2) evaluation in the task's container. The agent turns a lease
//! into a [`PhaseInput`] and reports what comes back; it does not pick the phase's code itself.

use super::{evaluate_static, generate, EvaluateInput, GenerateInput};
use super::{InfraError, InfraKind, RunSpec, WorkerContext};
use crate::dynamic::{DynamicError, DynamicEvaluator, UnitLabels};
use crate::images::PullError;
use crate::model::ApiKey;
use ase_common::dataset::{Task, TaskContext, TaskSpec};
use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use serde::Serialize;
use tracing::Instrument;

/// What the phase works from besides the task.
#[derive(Debug, Clone)]
pub enum PhaseWork {
    Generate {
        context: Option<TaskContext>,
        /// Handed over in the lease; wins over the run's configured key source.
        api_key: Option<ApiKey>,
    },
    /// Evaluates the code this generation record carries (made on any worker).
    Evaluate { generation: GenerationRecord },
}

/// One unit's phase to run.
pub struct PhaseInput<'a> {
    pub run_id: String,
    pub task: Task,
    /// The seed task's `repo` of a mutated v1 task (for its project root).
    pub seed_repo: Option<String>,
    /// 1-based.
    pub round: u32,
    pub spec: &'a RunSpec,
    pub work: PhaseWork,
}

/// What a phase records; serialised, the result the coordinator's CompleteUnit takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PhaseRecord {
    Generation(GenerationRecord),
    Evaluation(EvaluationRecord),
}

impl PhaseRecord {
    /// The record's own JSON (the enum adds no wrapper).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// Runs the phase `input` names. `dynamic`: the v2 evaluator, when this worker has Docker.
pub async fn run_phase(
    ctx: &WorkerContext,
    dynamic: Option<&DynamicEvaluator>,
    input: PhaseInput<'_>,
) -> Result<PhaseRecord, InfraError> {
    let PhaseInput {
        run_id,
        task,
        seed_repo,
        round,
        spec,
        work,
    } = input;
    match work {
        PhaseWork::Generate { context, api_key } => generate(
            ctx,
            GenerateInput {
                run_id,
                task,
                context,
                seed_repo,
                round,
                spec,
                api_key,
            },
        )
        .instrument(tracing::info_span!("phase", name = "generate"))
        .await
        .map(PhaseRecord::Generation),
        PhaseWork::Evaluate { generation } => match &task.spec {
            TaskSpec::V1(_) => evaluate_static(
                ctx,
                EvaluateInput {
                    run_id: &run_id,
                    task: &task,
                    seed_repo: seed_repo.as_deref(),
                    generation: &generation,
                    spec,
                },
            )
            .instrument(tracing::info_span!("phase", name = "evaluate_static"))
            .await
            .map(PhaseRecord::Evaluation),
            TaskSpec::V2(_) => {
                let Some(dynamic) = dynamic else {
                    return Err(InfraError::new(
                        &UnitId::new(&task.instance_id, round),
                        InfraKind::Configuration,
                        format!(
                            "task {}: v2 evaluation needs Docker and worker {} has none",
                            task.instance_id, ctx.worker_id
                        ),
                    ));
                };
                let labels = UnitLabels {
                    run: run_id,
                    unit: generation.unit.dir_name(),
                    worker: ctx.container_owner.clone(),
                };
                dynamic
                    .evaluate(&task, &generation, &labels)
                    .instrument(tracing::info_span!("phase", name = "evaluate_dynamic"))
                    .await
                    .map(PhaseRecord::Evaluation)
                    .map_err(|e| dynamic_infra_error(&generation.unit, e))
            }
        },
    }
}

/// Who is to blame when a v2 evaluation could not take place.
fn dynamic_infra_error(unit: &UnitId, e: DynamicError) -> InfraError {
    let kind = match &e {
        // This worker cannot run what the run asks of it.
        DynamicError::NotV2 { .. }
        | DynamicError::ImageMissing { .. }
        | DynamicError::Unprivileged { .. } => InfraKind::Configuration,
        DynamicError::Docker { .. } => InfraKind::Scanner,
        DynamicError::Pull { source, .. } => match source {
            PullError::Unreachable { .. } | PullError::RateLimited { .. } => InfraKind::Registry,
            PullError::NotFound { .. } | PullError::BadReference(_) => InfraKind::TaskImage,
            PullError::Unauthorized { .. } | PullError::Credentials(_) => InfraKind::Configuration,
            PullError::Daemon { .. } => InfraKind::Scanner,
        },
    };
    let retry_after_secs = match &e {
        DynamicError::Pull {
            source: PullError::RateLimited {
                retry_after_secs, ..
            },
            ..
        } => *retry_after_secs,
        _ => None,
    };
    let mut out = InfraError::new(unit, kind, e.to_string());
    out.retry_after_secs = retry_after_secs;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ase_common::unit::GenerationRecord;

    fn generation(unit: &UnitId) -> GenerationRecord {
        GenerationRecord {
            unit: unit.clone(),
            success: false,
            reason: Some("failed generation: no answer".into()),
            method: None,
            raw_answer: None,
            answer_truncated: false,
            changed_files: vec![],
            deleted_files: vec![],
            usage: None,
            cost_usd: None,
            time_cost: 0.0,
            model_attempts: 1,
            prompt_tokens_estimate: None,
            agent: None,
        }
    }

    #[test]
    fn a_phase_record_serialises_as_the_record_itself() {
        let unit = UnitId::new("t1", 2);
        let g = generation(&unit);
        let record = PhaseRecord::Generation(g.clone());
        assert_eq!(
            serde_json::from_slice::<GenerationRecord>(&record.to_json().unwrap()).unwrap(),
            g
        );
        let e = EvaluationRecord::Static {
            unit,
            detected_vul_num: 1,
            baseline: 2,
            reason: None,
            seconds: 0.5,
            scan: None,
        };
        let record = PhaseRecord::Evaluation(e.clone());
        assert_eq!(
            serde_json::from_slice::<EvaluationRecord>(&record.to_json().unwrap()).unwrap(),
            e
        );
    }

    #[test]
    fn docker_failures_and_missing_images_are_blamed_apart() {
        let unit = UnitId::new("t1", 1);
        let missing = DynamicError::ImageMissing {
            unit: unit.to_string(),
            image: "img".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "no such image".into(),
            },
        };
        assert_eq!(
            dynamic_infra_error(&unit, missing).kind,
            InfraKind::Configuration
        );
        let docker = DynamicError::Docker {
            unit: unit.to_string(),
            op: "start the container".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            },
        };
        let e = dynamic_infra_error(&unit, docker);
        assert_eq!(e.kind, InfraKind::Scanner);
        assert!(e.reason.contains("start the container"), "{e}");
    }

    #[test]
    fn an_unreachable_registry_and_a_missing_image_are_blamed_apart() {
        let unit = UnitId::new("t1", 1);
        let pull = |source| DynamicError::Pull {
            unit: unit.to_string(),
            source,
        };
        let e = dynamic_infra_error(
            &unit,
            pull(PullError::Unreachable {
                image: "127.0.0.1:1/x:1".into(),
                registry: "127.0.0.1:1".into(),
                attempts: 4,
                detail: "connection refused".into(),
            }),
        );
        assert_eq!(e.kind, InfraKind::Registry);
        assert!(e.reason.contains("registry unreachable"), "{e}");
        let e = dynamic_infra_error(
            &unit,
            pull(PullError::NotFound {
                image: "r:1/x:nope".into(),
                registry: "r:1".into(),
                detail: "manifest unknown".into(),
            }),
        );
        assert_eq!(e.kind, InfraKind::TaskImage);
        assert!(e.reason.contains("image not found"), "{e}");
        let e = dynamic_infra_error(
            &unit,
            pull(PullError::RateLimited {
                image: "x:1".into(),
                registry: "docker.io".into(),
                attempts: 4,
                retry_after_secs: Some(60),
                detail: "toomanyrequests".into(),
            }),
        );
        assert_eq!(
            (e.kind, e.retry_after_secs),
            (InfraKind::Registry, Some(60))
        );
    }
}
