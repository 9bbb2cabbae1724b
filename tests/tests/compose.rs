//! The Compose deployment for real: `deploy/compose.yaml` brought up under a unique project
//! name with the node image, certificates from `ase certs init` and the demo's repositories
//! (`ase_demo::materialise`) as the repos directory; the demo's v1 part with the `reference`
//! model (its fix commits) submitted from the host through the published port, 3 rounds; the
//! report's scores equal to those of `examples/demo/expected_scores.json`; `down -v` always, a
//! failing test included.
//!
//! Needs Docker with `docker compose` or `docker-compose`, and `deploy/images/build.sh` (the
//! test calls it for the node image, built from the `ase` binary under test).

use ase_cluster_tests::client::{ase_client, ase_client_output, worker_status};
use ase_cluster_tests::docker_cluster::{docker, node_image, unique_name};
use ase_cluster_tests::support::unavailable;
use ase_cluster_tests::{
    assert_every_unit_generated_and_scanned, certs_init, fetch_report, free_loopback_addr, submit,
    wait_until, CoordinatorAccess, RunFiles,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// As `examples/demo/expected_scores.json` has them.
const ROUNDS: u32 = 3;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// `docker compose` (v2 plugin) or `docker-compose` (v1), whichever answers.
fn compose_command() -> Option<Vec<String>> {
    let answers = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if answers(&["docker", "compose"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if answers(&["docker-compose"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// A Compose project of deploy/compose.yaml; `down -v` when dropped.
struct ComposeProject {
    command: Vec<String>,
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl ComposeProject {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("{:?} {args:?}: {e}", self.command))
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "compose {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let o = self.run(&["logs", "--no-color"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// Containers and volumes Docker still holds for the project.
    fn leftovers(&self) -> (String, String) {
        let label = format!("label=com.docker.compose.project={}", self.name);
        (
            docker(&["ps", "-aq", "--filter", &label]),
            docker(&["volume", "ls", "-q", "--filter", &label]),
        )
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let o = self.run(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        if !o.status.success() {
            eprintln!(
                "cleanup: compose down -v of {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

fn env_pair(k: &str, v: impl AsRef<std::ffi::OsStr>) -> (String, String) {
    (k.to_string(), v.as_ref().to_string_lossy().into_owned())
}

fn compose_env(
    image: &str,
    certs: &Path,
    repos: &Path,
    port: u16,
    metrics: u16,
) -> Vec<(String, String)> {
    vec![
        env_pair("ASE_IMAGE", image),
        env_pair("ASE_CERTS_DIR", certs),
        env_pair("ASE_REPOS_DIR", repos),
        env_pair("ASE_REPO_URL_TEMPLATE", "file:///repos/{repo}"),
        env_pair("ASE_COORDINATOR_PORT", port.to_string()),
        env_pair("ASE_METRICS_PORT", metrics.to_string()),
        env_pair("ASE_HEARTBEAT_MS", "500"),
        env_pair("ASE_LEASE_TTL_MS", "3000"),
        env_pair("ASE_GENERATE_SLOTS", "2"),
        env_pair("ASE_EVAL_SLOTS", "2"),
    ]
}

fn strip_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for f in ["gen_code_time_sum", "average_gen_code_time"] {
                m.remove(f);
            }
            m.values_mut().for_each(strip_timings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_timings),
        _ => {}
    }
}

/// `{instance_id}_cycle{k}` of every task of a v1 task file, sorted.
fn unit_names(tasks: &Path, rounds: u32) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tasks).unwrap()).expect("the demo's task file");
    let mut units: Vec<String> = v
        .as_array()
        .expect("a list of tasks")
        .iter()
        .flat_map(|t| {
            let id = t["instance_id"].as_str().expect("instance_id").to_string();
            (1..=rounds).map(move |r| format!("{id}_cycle{r}"))
        })
        .collect();
    units.sort();
    units
}

#[test]
fn the_compose_deployment_runs_the_demo_from_the_node_image() {
    if !ase_cluster_tests::docker_cluster::docker_or_skip() {
        return;
    }
    let Some(command) = compose_command() else {
        unavailable("neither `docker compose` nor `docker-compose` answers");
        return;
    };
    let image = node_image();
    let tmp = tempfile::tempdir().unwrap();
    let demo = ase_demo::materialise(&tmp.path().join("demo")).expect("materialise the demo");
    let certs = certs_init(&tmp.path().join("certs"), &WORKERS, &["coordinator"]);
    // As deploy/README.md says: the CA key stays out of what is deployed.
    std::fs::rename(certs.join("ca.key"), tmp.path().join("ca.key")).unwrap();
    let port = free_loopback_addr().port();
    let metrics = free_loopback_addr().port();

    let compose = ComposeProject {
        command,
        name: unique_name("asecompose"),
        file: ase_cluster_tests::repo_root().join("deploy/compose.yaml"),
        env: compose_env(&image, &certs, &demo.root.join("repos"), port, metrics),
    };
    compose.run_ok(&["up", "-d"]);

    let access = CoordinatorAccess {
        url: format!("https://localhost:{port}"),
        tls_dir: certs.clone(),
    };
    wait_until("three workers alive", Duration::from_secs(120), || {
        let o = ase_client_output(&access, "status", &[]);
        let status = String::from_utf8_lossy(&o.stdout);
        o.status.success()
            && WORKERS
                .iter()
                .all(|w| worker_status(&status, w).is_some_and(|(alive, ..)| alive))
    });

    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let spec = serde_json::json!({
        "model_name": "demo-reference",
        "batch": "v1",
        "rounds": ROUNDS,
        "model": {"provider": "reference"},
    });
    let parsed: ase_worker::pipeline::RunSpec =
        serde_json::from_value(spec.clone()).expect("the run spec is a RunSpec");
    let files = RunFiles {
        spec: run_dir.join("spec.json"),
        dataset: demo.v1_tasks.clone(),
        context: demo.v1_context.clone(),
        run_id: parsed.run_name(),
    };
    std::fs::write(&files.spec, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let mut submitted = submit(&access, &files, true, tmp.path().join("submit.log"));
    let status = submitted
        .wait_exit(Duration::from_secs(600))
        .unwrap_or_else(|| {
            panic!(
                "run not completed; submit:\n{}\ncompose logs:\n{}",
                submitted.log_text(),
                compose.logs()
            )
        });
    assert!(
        status.success(),
        "ase submit --watch: {}\ncompose logs:\n{}",
        submitted.log_text(),
        compose.logs()
    );

    // Every unit once, and the scores the demo promises for its reference model.
    let out = tmp.path().join("report");
    fetch_report(&access, &files.run_id, &out);
    let units = unit_names(&demo.v1_tasks, ROUNDS);
    assert_every_unit_generated_and_scanned(&out, &files.run_id, &units);
    let report_path = out.join(ase_common::report::REPORT_JSON);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let expected_path = ase_cluster_tests::repo_root().join("examples/demo/expected_scores.json");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
    // Wall-clock figures are no part of the expected scores (as in tests/tests/demo_scores.rs).
    let mut scores = report["scores"].clone();
    strip_timings(&mut scores);
    assert_eq!(
        scores,
        expected[&files.run_id],
        "scores of {} against {}",
        files.run_id,
        expected_path.display()
    );

    // Work was spread over the deployment's workers, and the metrics port answers.
    let status = ase_client(&access, "status", &[]);
    let completed: u64 = WORKERS
        .iter()
        .map(|w| worker_status(&status, w).map_or(0, |s| s.2))
        .sum();
    assert!(
        completed >= units.len() as u64,
        "workers completed the units: {status}"
    );
    let exposition = ase_cluster_tests::docker_cluster::http_get(metrics, "/metrics");
    assert!(
        exposition.contains("ase_workers_alive 3"),
        "metrics of the deployment: {exposition}"
    );

    // The workers run with the host's Docker socket (v2 evaluations): they pinged the daemon
    // at start, or they would have exited.
    for w in WORKERS {
        let id = compose.run_ok(&["ps", "-q", w]).trim().to_string();
        assert!(!id.is_empty(), "no container for {w}");
        assert_eq!(
            docker(&["inspect", "-f", "{{.State.Running}}", &id]),
            "true",
            "worker {w} is running"
        );
        let mounts = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Destination}} {{end}}",
            &id,
        ]);
        assert!(
            mounts.contains("/var/run/docker.sock") && mounts.contains("/cache"),
            "worker {w} mounts: {mounts}"
        );
    }

    compose.run_ok(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
    let (containers, volumes) = compose.leftovers();
    assert!(
        containers.is_empty() && volumes.is_empty(),
        "down -v left containers {containers:?} and volumes {volumes:?}"
    );
}
