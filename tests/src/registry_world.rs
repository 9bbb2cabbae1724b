//! The demo's v2 tasks with their images in a loopback registry only (renamed
//! `127.0.0.1:PORT/ase-pull-test/…`, pushed, then removed from the daemon), and the check that
//! such a run scores as the demo's reference v2 run: what the registry tests share.

use crate::repo_root;
use ase_test_support::registry::{ImageCleanup, TestRegistry};
use bollard::Docker;
use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};

/// What a registry test of the demo's v2 tasks starts from: osemgrep, the demo world under a
/// temporary folder, a runtime and a daemon holding the demo's images.
pub struct RegistryTestWorld {
    pub osemgrep: PathBuf,
    pub tmp: tempfile::TempDir,
    pub world: ase_demo::DemoWorld,
    pub rt: tokio::runtime::Runtime,
    pub docker: Docker,
}

/// The [`RegistryTestWorld`], or None once the test said why it cannot run (no osemgrep, no
/// registry tools, no daemon or demo images).
pub fn registry_test_world() -> Option<RegistryTestWorld> {
    let osemgrep = ase_test_support::osemgrep_or_skip()?;
    if let Some(why) = ase_test_support::registry::missing_tools() {
        ase_test_support::unavailable_unless(&why, "apt-get install docker-registry apache2-utils");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let world = ase_demo::materialise(&tmp.path().join("demo")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut docker = None;
    for image in &world.v2_images {
        docker = Some(rt.block_on(ase_test_support::docker_with(image))?);
    }
    Some(RegistryTestWorld {
        osemgrep,
        tmp,
        world,
        rt,
        docker: docker.expect("the demo has v2 images"),
    })
}

/// The demo's v2 task file rewritten to name images in `registry` (tag `r{pid}`), each put
/// there by `push(source, reference)`; written to `out`. The images are gone from the daemon
/// when it returns (checked); the guard removes what a run pulls back.
pub fn demo_v2_tasks_in_registry<F, Fut>(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    registry: &TestRegistry,
    world: &ase_demo::DemoWorld,
    out: &Path,
    mut push: F,
) -> (Vec<String>, ImageCleanup)
where
    F: FnMut(String, String) -> Fut,
    Fut: Future,
{
    let mut tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&world.v2_tasks).unwrap()).unwrap();
    let mut renamed = Vec::new();
    for task in &mut tasks {
        let source = task["image"].as_str().unwrap().to_string();
        let name = source
            .split(':')
            .next()
            .unwrap()
            .trim_start_matches("ase-demo-")
            .to_string();
        let reference = registry.reference(&name, &format!("r{}", std::process::id()));
        rt.block_on(push(source, reference.clone()));
        task["image"] = Value::String(reference.clone());
        renamed.push(reference);
    }
    let cleanup = ImageCleanup(renamed.clone());
    for r in &renamed {
        assert!(
            rt.block_on(docker.inspect_image(r)).is_err(),
            "{r} is still on the daemon"
        );
    }
    std::fs::write(out, serde_json::to_vec_pretty(&tasks).unwrap()).unwrap();
    (renamed, cleanup)
}

/// [`demo_v2_tasks_in_registry`] with each demo image pushed as it is (`push_as`, with the
/// registry's test credentials).
pub fn demo_v2_tasks_pushed(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    registry: &TestRegistry,
    world: &ase_demo::DemoWorld,
    out: &Path,
) -> (Vec<String>, ImageCleanup) {
    demo_v2_tasks_in_registry(rt, docker, registry, world, out, |src, r| {
        let creds = registry.credentials(ase_test_support::registry::PASSWORD);
        async move { ase_test_support::registry::push_as(docker, &src, &r, creds).await }
    })
}

/// `data/results/{run_id}/report.json` under `tmp`.
pub fn report_of(tmp: &Path, run_id: &str) -> Value {
    let path: PathBuf = tmp.join(format!("data/results/{run_id}/report.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The run's overall figures equal the demo's reference v2 run's (expected_scores.json), and
/// none of its units failed.
pub fn assert_scores_as_demo_reference_v2(report: &Value, run_id: &str, log: &str) {
    let expected_all: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("examples/demo/expected_scores.json")).unwrap(),
    )
    .unwrap();
    let expected = &expected_all["demo-reference__v2"]["all"];
    assert!(
        expected.is_object(),
        "demo-reference__v2 in expected_scores.json"
    );
    for field in [
        "code_quality_score",
        "code_security_score",
        "code_stability_score",
        "overall_score",
        "overall_score_corrected",
        "case_sum",
        "poc_pass_count",
    ] {
        assert_eq!(
            report["scores"]["all"][field], expected[field],
            "{run_id} all.{field}; log:\n{log}"
        );
    }
    let units = report["units"].as_array().unwrap();
    assert!(units.iter().all(|u| u["status"] != "failed"), "{units:#?}");
}
