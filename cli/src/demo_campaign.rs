//! The demo campaign `ase run` runs when no run is configured: the demo dataset (`ase-demo`,
//! materialised under `<data>/demo`) on v1 and v2, each with three models: `original` (the
//! vulnerable code), `reference` (the upstream fix) and `pretend` (a pretend model's shipped
//! answers through the predictions provider), three rounds each.

use crate::config::{AseConfig, ModelSettings, RunSettings};
use anyhow::Context;
use ase_worker::pipeline::spec::{CountScopeSetting, PromptSettings, RunLimits};
use std::path::{Path, PathBuf};

pub const ROUNDS: u32 = 3;

/// The demo's run ids, in the order they run.
pub fn run_ids() -> Vec<String> {
    let mut v = Vec::new();
    for batch in ["demo-v1", "demo-v2"] {
        for model in ["original", "reference", "pretend"] {
            v.push(format!("{model}__{batch}"));
        }
    }
    v
}

fn run(
    model_name: &str,
    batch: &str,
    dataset: &Path,
    context: Option<PathBuf>,
    model: ModelSettings,
) -> RunSettings {
    RunSettings {
        model_name: model_name.into(),
        batch: batch.into(),
        dataset: dataset.to_path_buf(),
        context,
        cut_repos: None,
        rounds: ROUNDS,
        count_scope: CountScopeSetting::default(),
        max_context_token: PromptSettings::default().max_context_token,
        model,
        limits: RunLimits::default(),
    }
}

/// Materialises the demo under `<data>/demo` (idempotent: same files and commit ids every
/// time, so that a re-run resumes) and adds its runs to `config`. The worker clones the demo's
/// local repos unless the config names another URL template.
pub fn configure(config: &mut AseConfig, data: &Path) -> anyhow::Result<()> {
    let dest = data.join("demo");
    let world = ase_demo::materialise(&dest)
        .with_context(|| format!("materialising the demo dataset under {}", dest.display()))?;
    if config.worker.repo_url_template.is_none() {
        config.worker.repo_url_template = Some(world.repo_url_template.clone());
    }
    eprintln!(
        "demo campaign: dataset in {} (v2 needs Docker and the images {}, built by \
         deploy/images/build.sh)",
        world.root.display(),
        world.v2_images.join(", ")
    );
    for (batch, tasks, context, predictions) in [
        (
            "demo-v1",
            &world.v1_tasks,
            Some(world.v1_context.clone()),
            &world.predictions_v1,
        ),
        (
            "demo-v2",
            &world.v2_tasks,
            world.v2_context.clone(),
            &world.predictions_v2,
        ),
    ] {
        config.runs.push(run(
            "original",
            batch,
            tasks,
            context.clone(),
            ModelSettings::Original,
        ));
        config.runs.push(run(
            "reference",
            batch,
            tasks,
            context.clone(),
            ModelSettings::Reference,
        ));
        config.runs.push(run(
            "pretend",
            batch,
            tasks,
            context,
            ModelSettings::Predictions {
                file: predictions.clone(),
            },
        ));
    }
    debug_assert_eq!(
        config
            .runs
            .iter()
            .map(RunSettings::run_id)
            .collect::<Vec<_>>(),
        run_ids()
    );
    Ok(())
}
