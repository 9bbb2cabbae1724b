//! A v2 campaign whose task images live only in a real registry on loopback (Debian's
//! `docker-registry` with htpasswd auth): `ase run` of the demo's v2 tasks with their images
//! renamed to `127.0.0.1:PORT/ase-demo/…`, the worker finding its credentials where
//! `DOCKER_CONFIG` points. Every unit completes with the demo's expected scores, and each image
//! is pulled once for its three rounds.
//!
//! Alone in its binary: it sets `DOCKER_CONFIG` for the `ase` process it starts. Needs
//! `cargo build -p ase`, osemgrep, Docker with the demo images (deploy/images/build.sh), and
//! docker-registry + htpasswd (.ci/run installs them).

use ase_cluster_tests::registry_world::*;
use ase_test_support::registry::*;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn a_v2_run_pulls_each_image_once_from_a_registry_with_credentials_and_scores_as_expected() {
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

    // The demo's images, in the registry only, under other names.
    let registry = TestRegistry::start();
    let tasks_path = tmp.path().join("v2-registry-tasks.json");
    let (renamed, _cleanup) = demo_v2_tasks_pushed(&rt, &docker, &registry, &world, &tasks_path);
    let config = tmp.path().join("ase.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nrepo_url_template = {:?}\ndocker = \"on\"\n\n[[runs]]\nmodel_name = \"reference\"\nbatch = \"registry-v2\"\ndataset = {:?}\ncontext = {:?}\nrounds = 3\nmodel = {{ provider = \"reference\" }}\n",
            world.repo_url_template,
            tasks_path.display().to_string(),
            world.v2_context.as_ref().unwrap().display().to_string(),
        ),
    )
    .unwrap();
    let docker_config = registry.docker_config(PASSWORD);
    let log = ase_cluster_tests::ase_run_pulling_with(
        tmp.path(),
        &config,
        docker_config.path(),
        &osemgrep,
        "ase run (v2 from a registry)",
        RUN_TIMEOUT,
    );

    // 2 tasks x 3 rounds evaluated, each image pulled once, while its first unit generated
    // (so no evaluation waited for a pull).
    let pulled = log.matches("task image pulled").count();
    assert_eq!(pulled, 2, "{log}");
    // The coordinator's view of the worker, printed by `ase run` once its worker stopped (the
    // line of `ase status`): the same pulls, carried by the heartbeats.
    let worker = log
        .lines()
        .find(|l| l.starts_with("worker local ") && l.contains("| images: "))
        .unwrap_or_else(|| panic!("no worker line with image stats; log:\n{log}"));
    assert!(
        worker.contains(&format!("| images: pulled {pulled} failed 0 ")),
        "{worker}"
    );
    assert!(worker.contains("| cache 2 images "), "{worker}");
    assert_eq!(
        log.matches("task image fetched during generation").count(),
        2,
        "{log}"
    );
    for r in &renamed {
        assert!(
            rt.block_on(docker.inspect_image(r)).is_ok(),
            "{r} not pulled"
        );
    }
    assert!(!log.contains(PASSWORD), "the password reached the log");

    let run_id = "reference__registry-v2";
    let report = report_of(tmp.path(), run_id);
    assert_scores_as_demo_reference_v2(&report, run_id, &log);
    assert_eq!(report["units"].as_array().unwrap().len(), 6);
    // The provenance names the image each task ran in, by digest: one per task (its three
    // rounds ran in the image the first pinned).
    for r in &renamed {
        let name = r.rsplit_once(':').unwrap().0;
        let ran_in = report["provenance"]["image_ids"][r.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("{r} in provenance.image_ids: {:#}", report["provenance"]));
        assert!(
            ran_in.starts_with(&format!("{name}@sha256:")) && !ran_in.contains(' '),
            "{r}: {ran_in}"
        );
    }
}
