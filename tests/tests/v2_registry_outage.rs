//! The task images' registry down when a v2 run starts: `ase run` of the demo's v2 tasks with
//! their images only in a real loopback registry (Debian's `docker-registry`, htpasswd auth)
//! that is stopped before the run and started again once the run's evaluations have failed to
//! pull. With one attempt per phase, a failure counted against a unit would fail it for good:
//! instead the evaluations wait ("registry unreachable", no attempt spent, the answers kept)
//! and the run completes with the demo's expected scores once the registry is back.
//!
//! Alone in its binary: it sets `DOCKER_CONFIG` for the `ase` process it starts. Needs
//! `cargo build -p ase`, osemgrep, Docker with the demo images (deploy/images/build.sh), and
//! docker-registry + htpasswd (.ci/run installs them).

use ase_cluster_tests::registry_world::*;
use ase_test_support::registry::*;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// The registry stays down until this many evaluations gave up pulling (bounded below).
const FAILED_PULLS_BEFORE_RESTART: usize = 3;
const OUTAGE_LIMIT: Duration = Duration::from_secs(300);
/// How the coordinator logs a lease ended by the registry without spending an attempt.
const UNCOUNTED_REGISTRY_END: &str = "registry unreachable, no attempt counted";

#[test]
fn a_v2_run_waits_for_its_registry_without_spending_attempts_and_completes_once_it_is_back() {
    let Some(RegistryTestWorld {
        osemgrep,
        tmp,
        world,
        rt,
        docker,
    }) = registry_test_world()
    else {
        return;
    };

    let mut registry = TestRegistry::start();
    let tasks_path = tmp.path().join("v2-outage-tasks.json");
    let (renamed, _cleanup) = demo_v2_tasks_pushed(&rt, &docker, &registry, &world, &tasks_path);
    // A worker name of its own: an `ase run` starting elsewhere on this daemon reaps the v2
    // containers of its worker's name ("local" by default).
    let config = tmp.path().join("ase.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nname = \"outage-{}\"\nrepo_url_template = {:?}\ndocker = \"on\"\n\n[[runs]]\nmodel_name = \"reference\"\nbatch = \"outage-v2\"\ndataset = {:?}\ncontext = {:?}\nrounds = 3\nmodel = {{ provider = \"reference\" }}\n\n[runs.limits]\nmax_attempts = 1\n",
            std::process::id(),
            world.repo_url_template,
            tasks_path.display().to_string(),
            world.v2_context.as_ref().unwrap().display().to_string(),
        ),
    )
    .unwrap();
    let docker_config = registry.docker_config(PASSWORD);
    registry.stop();
    let mut run = ase_cluster_tests::spawn_ase_run_pulling_with(
        tmp.path(),
        &config,
        docker_config.path(),
        &osemgrep,
        "ase run (v2, registry down at the start)",
    );

    run.wait_for_count(
        UNCOUNTED_REGISTRY_END,
        FAILED_PULLS_BEFORE_RESTART,
        OUTAGE_LIMIT,
    );
    // Nothing was pulled, nothing failed for good, while the registry was down.
    let during = run.log_text();
    assert_eq!(during.matches("task image pulled").count(), 0, "{during}");
    registry.restart();

    let status = run
        .wait_exit(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("the run did not end; log:\n{}", run.log_text()));
    let log = run.log_text();
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(
        !log.contains("out_of_retries=true"),
        "a unit ran out of attempts; log:\n{log}"
    );
    // Each image pulled once, after the registry came back.
    assert_eq!(log.matches("task image pulled").count(), 2, "{log}");
    for r in &renamed {
        assert!(
            rt.block_on(docker.inspect_image(r)).is_ok(),
            "{r} not pulled"
        );
    }
    assert!(!log.contains(PASSWORD), "the password reached the log");

    let run_id = "reference__outage-v2";
    let report = report_of(tmp.path(), run_id);
    assert_scores_as_demo_reference_v2(&report, run_id, &log);
    assert_eq!(report["units"].as_array().unwrap().len(), 6);
}
