//! A v2 campaign under a task image budget smaller than its images: `ase run` of the demo's v2
//! tasks, each image rebuilt with a layer of its own and living only in a real registry on
//! loopback (Debian's `docker-registry` with htpasswd auth), the worker's `image_cache_bytes`
//! set to 1 and one evaluation at a time. Each pull after the first evicts the image pulled
//! before (not in use), the campaign completes with the demo's expected scores, and the demo's
//! own images are untouched.
//!
//! Alone in its binary: it sets `DOCKER_CONFIG` for the `ase` process it starts. Needs
//! `cargo build -p ase`, osemgrep, Docker with the demo images (deploy/images/build.sh), and
//! docker-registry + htpasswd (.ci/run installs them).

use ase_cluster_tests::registry_world::*;
use ase_test_support::registry::*;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn a_v2_run_over_its_image_budget_evicts_images_not_in_use_and_scores_as_expected() {
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

    // The demo's images with a layer of their own (an image id of their own: the cache never
    // removes an id another tag names), in the registry only, under other names.
    let registry = TestRegistry::start();
    let tasks_path = tmp.path().join("v2-budget-tasks.json");
    let (renamed, _cleanup) =
        demo_v2_tasks_in_registry(&rt, &docker, &registry, &world, &tasks_path, |src, r| {
            let (docker, creds) = (&docker, registry.credentials(PASSWORD));
            async move { build_push_remove(docker, &src, &r, creds).await }
        });
    let demo_ids: Vec<String> = world
        .v2_images
        .iter()
        .map(|i| {
            rt.block_on(docker.inspect_image(i))
                .unwrap()
                .id
                .unwrap_or_default()
        })
        .collect();
    // A worker name of its own: an `ase run` starting elsewhere on this daemon reaps the v2
    // containers of its worker's name ("local" by default), which would kill this run's.
    let config = tmp.path().join("ase.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nname = \"budget-{}\"\nrepo_url_template = {:?}\ndocker = \"on\"\neval_slots = 1\nimage_cache_bytes = 1\n\n[[runs]]\nmodel_name = \"reference\"\nbatch = \"budget-v2\"\ndataset = {:?}\ncontext = {:?}\nrounds = 3\nmodel = {{ provider = \"reference\" }}\n",
            std::process::id(),
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
        "ase run (v2 over an image budget)",
        RUN_TIMEOUT,
    );

    // One evaluation at a time and a budget nothing fits: every pull after the first evicts
    // the one image held before it (not in use), none is removed under a unit, and one is
    // left at the end.
    let pulls = log.matches("task image pulled").count();
    let evictions = log.matches("task image evicted").count();
    assert!(pulls >= 2, "{log}");
    assert_eq!(evictions, pulls - 1, "pulls {pulls}; log:\n{log}");
    assert!(!log.contains("not removed; kept"), "{log}");
    // Held under its tag, or under the digest the run pinned its task to (a unit that pulled
    // by the pin leaves no tag).
    let provenance = report_of(tmp.path(), "reference__budget-v2")["provenance"].clone();
    let left = renamed
        .iter()
        .filter(|r| {
            let pinned = provenance["image_ids"][r.as_str()]
                .as_str()
                .unwrap_or(r.as_str());
            rt.block_on(docker.inspect_image(r.as_str())).is_ok()
                || rt.block_on(docker.inspect_image(pinned)).is_ok()
        })
        .count();
    assert_eq!(left, 1, "{renamed:?}");
    // The demo's own images (the layers under the pulled ones) are all there.
    for (image, id) in world.v2_images.iter().zip(&demo_ids) {
        let now = rt.block_on(docker.inspect_image(image)).unwrap().id;
        assert_eq!(now.as_ref(), Some(id), "{image}");
    }
    assert!(!log.contains(PASSWORD), "the password reached the log");
    eprintln!("pulls {pulls}, evictions {evictions}");

    let run_id = "reference__budget-v2";
    let report = report_of(tmp.path(), run_id);
    assert_scores_as_demo_reference_v2(&report, run_id, &log);
    assert_eq!(report["units"].as_array().unwrap().len(), 6);
}
