//! Preflight on real components: the demo's v2 tasks with their images in a real registry on
//! loopback (htpasswd auth), plus a task whose image tag the registry does not have (404) and
//! a task whose `base_commit` its repo does not have. `ase preflight` lists both (exit 1);
//! `ase run --preflight abort` refuses to start; `ase run` completes without them, every
//! report lists them apart, and the scores over the remaining tasks equal the demo's reference
//! v2 run (so the two were neither run nor scored as model failures).
//!
//! Alone in its binary: it sets `DOCKER_CONFIG` for the `ase` processes it starts. Needs
//! `cargo build -p ase`, osemgrep, Docker with the demo images (deploy/images/build.sh), and
//! docker-registry + htpasswd (.ci/run installs them).

use ase_cluster_tests::registry_world::*;
use ase_cluster_tests::{ase_bin, repo_root};
use ase_test_support::registry::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const MISSING_IMAGE: &str = "v2-missing-image";
const MISSING_COMMIT: &str = "v2-missing-commit";
const ABSENT_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn unavailable_tasks_are_listed_kept_out_of_the_run_and_shown_apart() {
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
    let registry = TestRegistry::start();
    let tasks_path = tmp.path().join("v2-preflight-tasks.json");
    let (renamed, _cleanup) = demo_v2_tasks_pushed(&rt, &docker, &registry, &world, &tasks_path);
    // Two more tasks, copies of the first: one names a tag never pushed, one a commit its repo
    // does not have.
    let mut tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&tasks_path).unwrap()).unwrap();
    let mut no_image = tasks[0].clone();
    no_image["instance_id"] = MISSING_IMAGE.into();
    no_image["image"] = registry.reference("never-pushed", "r1").into();
    let mut no_commit = tasks[0].clone();
    no_commit["instance_id"] = MISSING_COMMIT.into();
    no_commit["base_commit"] = ABSENT_SHA.into();
    tasks.push(no_image);
    tasks.push(no_commit);
    std::fs::write(&tasks_path, serde_json::to_vec_pretty(&tasks).unwrap()).unwrap();

    let docker_config = registry.docker_config(PASSWORD);
    std::env::set_var("DOCKER_CONFIG", docker_config.path());
    std::env::remove_var("ASE_IMAGE_PLATFORM");

    // `ase preflight`: both listed, with what is missing; the others' digests recorded.
    let json_path = tmp.path().join("preflight.json");
    let out = Command::new(ase_bin())
        .args(["preflight", "--dataset"])
        .arg(&tasks_path)
        .args(["--repo-url-template", &world.repo_url_template, "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ase preflight:\n{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 task(s)") && stdout.contains("2 unavailable"),
        "{stdout}"
    );
    let line_of = |id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in the table:\n{stdout}"))
            .to_string()
    };
    assert!(line_of(MISSING_IMAGE).contains("image"), "{stdout}");
    assert!(line_of(MISSING_IMAGE).contains("never-pushed"), "{stdout}");
    assert!(line_of(MISSING_COMMIT).contains("commit"), "{stdout}");
    assert!(line_of(MISSING_COMMIT).contains(ABSENT_SHA), "{stdout}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    let found: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let unavailable = found["unavailable"].as_array().unwrap();
    assert_eq!(unavailable.len(), 2, "{found:#}");
    for r in &renamed {
        let digest = found["image_digests"][r.as_str()]
            .as_str()
            .unwrap_or_default();
        assert!(digest.starts_with("sha256:"), "{r}: {found:#}");
    }
    // Nothing was pulled to answer.
    for r in &renamed {
        assert!(
            rt.block_on(docker.inspect_image(r)).is_err(),
            "{r} was pulled"
        );
    }

    // `ase submit --preflight abort`: refused on the submitting host, before any connection
    // (nothing listens at the coordinator address given).
    let spec = tmp.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"model_name":"reference","batch":"b","rounds":1,"model":{"provider":"reference"}}"#,
    )
    .unwrap();
    let refused = Command::new(ase_bin())
        .args(["submit", "--preflight", "abort", "--plaintext"])
        .args(["--coordinator", "http://127.0.0.1:1", "--spec"])
        .arg(&spec)
        .arg("--dataset")
        .arg(&tasks_path)
        .args(["--repo-url-template", &world.repo_url_template])
        .output()
        .unwrap();
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused_err}");
    assert!(
        refused_err.contains("not submitted")
            && refused_err.contains(MISSING_IMAGE)
            && refused_err.contains(MISSING_COMMIT),
        "{refused_err}"
    );

    let config = tmp.path().join("ase.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nrepo_url_template = {:?}\ndocker = \"on\"\n\n[[runs]]\nmodel_name = \"reference\"\nbatch = \"preflight-v2\"\ndataset = {:?}\ncontext = {:?}\nrounds = 3\nmodel = {{ provider = \"reference\" }}\n",
            world.repo_url_template,
            tasks_path.display().to_string(),
            world.v2_context.as_ref().unwrap().display().to_string(),
        ),
    )
    .unwrap();

    // --preflight abort: refused before anything starts, naming both tasks.
    let abort = Command::new(ase_bin())
        .args(["run", "--preflight", "abort", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(tmp.path().join("abort-data"))
        .env("ASE_RULES", repo_root().join("rules"))
        .env("ASE_OSEMGREP", &osemgrep)
        .output()
        .unwrap();
    let abort_err = String::from_utf8_lossy(&abort.stderr);
    assert!(!abort.status.success(), "{abort_err}");
    assert!(
        abort_err.contains(MISSING_IMAGE) && abort_err.contains(MISSING_COMMIT),
        "{abort_err}"
    );
    assert!(
        !tmp.path().join("abort-data/store").exists(),
        "a run was stored"
    );

    // The run (preflight = exclude, the default) completes without the two.
    let log = ase_cluster_tests::ase_run_pulling_with(
        tmp.path(),
        &config,
        docker_config.path(),
        &osemgrep,
        "ase run (v2 with unavailable tasks)",
        RUN_TIMEOUT,
    );
    assert_eq!(log.matches("task image pulled").count(), 2, "{log}");
    assert!(!log.contains("never-pushed:r1\" attempt"), "{log}");
    let run_id = "reference__preflight-v2";
    let report = report_of(tmp.path(), run_id);
    // Scored over the remaining tasks exactly as the demo's reference run.
    assert_scores_as_demo_reference_v2(&report, run_id, &log);
    assert_eq!(report["units"].as_array().unwrap().len(), 6);
    let ids: Vec<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["instance_id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&MISSING_IMAGE) && !ids.contains(&MISSING_COMMIT),
        "{ids:?}"
    );
    let listed: Vec<(&str, &str)> = report["unavailable"]
        .as_array()
        .unwrap_or_else(|| panic!("no `unavailable` in report.json"))
        .iter()
        .map(|u| {
            (
                u["instance_id"].as_str().unwrap(),
                u["missing"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![(MISSING_IMAGE, "image"), (MISSING_COMMIT, "commit")]
    );
    let dir = tmp.path().join(format!("data/results/{run_id}"));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Unavailable tasks"), "{md}");
    assert!(md.contains("Over 2 of the dataset's 4 tasks"), "{md}");
    assert!(
        md.contains(&format!("| {MISSING_COMMIT} | commit |")),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"unavailable\""));
    assert!(html.contains(MISSING_IMAGE) && html.contains(MISSING_COMMIT));
    // Not model failures: no unit of theirs exists in any export.
    let jsonl = std::fs::read_to_string(dir.join("units.jsonl")).unwrap();
    assert!(!jsonl.contains(MISSING_IMAGE) && !jsonl.contains(MISSING_COMMIT));

    // Run again without a preflight (the spec now names no task unavailable): the run is
    // resumed with the tasks it was first submitted with, so the two stay apart and no unit
    // is added or re-run.
    let config_off = tmp.path().join("ase-off.toml");
    std::fs::write(
        &config_off,
        format!(
            "preflight = \"off\"\n{}",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    let again = ase_cluster_tests::ase_run_pulling_with(
        tmp.path(),
        &config_off,
        docker_config.path(),
        &osemgrep,
        "ase run again (preflight off)",
        RUN_TIMEOUT,
    );
    assert!(
        again.contains(&format!("resumed run {run_id} (6 units)")),
        "{again}"
    );
    assert_eq!(again.matches("task image pulled").count(), 0, "{again}");
    let resumed = report_of(tmp.path(), run_id);
    assert_eq!(resumed["units"].as_array().unwrap().len(), 6);
    assert_eq!(resumed["unavailable"], report["unavailable"]);
    assert_eq!(resumed["scores"], report["scores"]);
}
