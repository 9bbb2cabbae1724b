//! The Swarm stack for real (issue 17): `deploy/stack.yaml` deployed with the node image built
//! from the `ase` binary under test, on a single-node swarm on 127.0.0.1 (initialised here when
//! the daemon is in none, and left as found). The demo's v1 campaign with the `reference` model
//! runs through it with 1 worker; mid-run the workers are scaled to 3 and one worker task's
//! container is killed (Swarm starts a new task, which joins again under a new name). Beside
//! it, a run of the harness's project goes through the fake OpenAI-compatible server, bound on
//! the swarm's `docker_gwbridge` gateway so that the tasks reach it. Then: every unit of both
//! runs exactly once, the demo's expected scores, the model server saw one call per unit (plus
//! at most the killed worker's call in flight), and `docker stack rm` leaves no service,
//! secret or network. Scaled down to 1 at the end, the removed workers stop cleanly.
//!
//! Needs Docker (CI=true: missing Docker is a failure) and `deploy/images/build.sh`.

use ase_cluster_tests::client::{ase_client_output, phase_done, worker_status};
use ase_cluster_tests::docker_cluster::{docker, docker_output, node_image, unique_name};
use ase_cluster_tests::{
    ase_bin, assert_every_unit_generated_and_scanned, certs_init, fetch_report, free_loopback_addr,
    submit, wait_until, write_run_files, CoordinatorAccess, FakeModel, ModelBehaviour, Project,
    RunFiles,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// As `examples/demo/expected_scores.json` has them.
const ROUNDS: u32 = 3;
/// The harness project's run through the model server.
const MODEL_TASKS: usize = 4;
const MODEL_ROUNDS: u32 = 2;
/// Generations a worker runs at once (ASE_GENERATE_SLOTS of the stack): the calls a killed
/// worker can have had in flight.
const GENERATE_SLOTS: u32 = 1;

/// The swarm of the test: initialised here when the daemon was in none (then left on drop),
/// and this node labelled for the coordinator (the label removed on drop when we added it).
struct SwarmGuard {
    initialised: bool,
    node: String,
    labelled: bool,
}

impl SwarmGuard {
    fn join_or_init() -> SwarmGuard {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let initialised = match state.trim() {
            "active" => false,
            "inactive" => {
                docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
                true
            }
            other => panic!("the daemon's swarm state is {other:?}: neither active nor inactive"),
        };
        let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"])
            .trim()
            .to_string();
        let labels = docker(&["node", "inspect", "-f", "{{json .Spec.Labels}}", &node]);
        let labelled = !labels.contains("\"ase.coordinator\"");
        if labelled {
            docker(&[
                "node",
                "update",
                "--label-add",
                "ase.coordinator=true",
                &node,
            ]);
        }
        SwarmGuard {
            initialised,
            node,
            labelled,
        }
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if self.initialised {
            let o = docker_output(&["swarm", "leave", "--force"]);
            if !o.status.success() {
                eprintln!(
                    "cleanup: swarm leave: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        } else if self.labelled {
            let _ = docker_output(&[
                "node",
                "update",
                "--label-rm",
                "ase.coordinator",
                &self.node,
            ]);
        }
    }
}

/// A deployed stack; `docker stack rm` (and its volume removed) when dropped.
struct Stack {
    name: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn deploy(&self) {
        let mut cmd = Command::new("docker");
        cmd.args(["stack", "deploy", "-c"])
            .arg(ase_cluster_tests::repo_root().join("deploy/stack.yaml"))
            .arg(&self.name);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("docker stack deploy");
        assert!(
            o.status.success(),
            "docker stack deploy: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn service(&self, s: &str) -> String {
        format!("{}_{s}", self.name)
    }

    fn logs(&self, s: &str) -> String {
        let o = docker_output(&["service", "logs", "--raw", &self.service(s)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn filter(&self) -> String {
        format!("label=com.docker.stack.namespace={}", self.name)
    }

    /// Services, secrets and networks of the stack Docker still holds.
    fn leftovers(&self) -> String {
        let f = self.filter();
        [
            docker(&["service", "ls", "-q", "--filter", &f]),
            docker(&["secret", "ls", "-q", "--filter", &f]),
            docker(&["network", "ls", "-q", "--filter", &f]),
        ]
        .join("")
        .trim()
        .to_string()
    }

    fn remove(&self) {
        let _ = docker_output(&["stack", "rm", &self.name]);
        // The volume goes once no container of the stack uses it any more.
        let volume = format!("{}_coordinator-data", self.name);
        for _ in 0..60 {
            let containers = docker(&["ps", "-aq", "--filter", &self.filter()]);
            if containers.trim().is_empty()
                && (docker_output(&["volume", "rm", &volume]).status.success()
                    || docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")])
                        .trim()
                        .is_empty())
            {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("cleanup: the volume {volume} of the stack is still there");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.remove();
    }
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

/// The names of the alive workers in `ase status`.
fn alive_workers(status: &str) -> Vec<String> {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("worker "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| worker_status(status, name).is_some_and(|(alive, ..)| alive))
        .map(str::to_string)
        .collect()
}

/// The gateway of the swarm's bridge to the host. A daemon that never was in a swarm creates
/// `docker_gwbridge` shortly after `swarm init` returns (seen on a fresh machine: not there
/// yet right after init), so it is waited for, bounded.
fn swarm_gateway() -> String {
    let args = [
        "network",
        "inspect",
        "docker_gwbridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ];
    for _ in 0..60 {
        let o = docker_output(&args);
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    docker(&args)
}

#[test]
fn the_swarm_stack_runs_the_demo_while_workers_join_scale_and_die() {
    if !ase_cluster_tests::docker_cluster::docker_or_skip() {
        return;
    }
    let image = node_image();
    let tmp = tempfile::tempdir().unwrap();
    let demo = ase_demo::materialise(&tmp.path().join("demo")).expect("materialise the demo");
    let secrets = certs_init(&tmp.path().join("secrets"), &["unused"], &["coordinator"]);
    let token = Command::new(ase_bin())
        .args(["certs", "join-token"])
        .output()
        .expect("ase certs join-token");
    assert!(token.status.success());
    std::fs::write(secrets.join("join.token"), &token.stdout).unwrap();
    // Docker refuses an empty secret; white space only means no key.
    std::fs::write(secrets.join("api.key"), "\n").unwrap();
    let port = free_loopback_addr().port();
    let metrics = free_loopback_addr().port();

    let _swarm = SwarmGuard::join_or_init();
    // The tasks reach the host through the swarm's gateway bridge: the model server listens
    // there, and the harness's project is served from the repos directory with the demo's.
    let gateway: std::net::IpAddr = swarm_gateway()
        .parse()
        .expect("the gateway of docker_gwbridge");
    let project = Project::create(&tmp.path().join("project"), MODEL_TASKS);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(project.src.join("local"))
        .arg(demo.root.join("repos/local"))
        .status()
        .expect("cp");
    assert!(copied.success());
    let model = FakeModel::start(
        std::net::SocketAddr::new(gateway, 0),
        &project.tasks,
        ModelBehaviour {
            delay: Duration::from_millis(300),
        },
    );
    let model_files = write_run_files(
        &tmp.path().join("model-run"),
        &project,
        &model.base_url(),
        MODEL_ROUNDS,
    );
    let stack = Stack {
        name: unique_name("asestack").replace('-', ""),
        env: [
            ("ASE_IMAGE", image.clone()),
            ("ASE_SECRETS_DIR", secrets.display().to_string()),
            (
                "ASE_REPOS_DIR",
                demo.root.join("repos").display().to_string(),
            ),
            ("ASE_REPO_URL_TEMPLATE", "file:///repos/{repo}".into()),
            ("ASE_COORDINATOR_PORT", port.to_string()),
            ("ASE_METRICS_PORT", metrics.to_string()),
            ("ASE_WORKERS", "1".into()),
            ("ASE_HEARTBEAT_MS", "500".into()),
            ("ASE_LEASE_TTL_MS", "3000".into()),
            ("ASE_GENERATE_SLOTS", GENERATE_SLOTS.to_string()),
            ("ASE_EVAL_SLOTS", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    stack.deploy();
    let access = CoordinatorAccess {
        url: format!("https://localhost:{port}"),
        tls_dir: secrets.clone(),
    };
    let status_text = || {
        let o = ase_client_output(&access, "status", &[]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    wait_until("one joined worker alive", Duration::from_secs(180), || {
        status_text().is_some_and(|s| alive_workers(&s).len() == 1)
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
    let mut model_submitted = submit(
        &access,
        &model_files,
        true,
        tmp.path().join("submit-model.log"),
    );

    // Mid-run: three workers, then one of their containers killed.
    wait_until("a first unit evaluated", Duration::from_secs(300), || {
        status_text().is_some_and(|s| phase_done(&s, "evaluate").is_some_and(|n| n >= 1))
            || submitted.exited().is_some()
    });
    docker(&[
        "service",
        "scale",
        "--detach",
        &format!("{}=3", stack.service("worker")),
    ]);
    wait_until("three workers alive", Duration::from_secs(180), || {
        status_text().is_some_and(|s| alive_workers(&s).len() >= 3) || submitted.exited().is_some()
    });
    let service_filter = format!(
        "label=com.docker.swarm.service.name={}",
        stack.service("worker")
    );
    let workers = docker(&["ps", "-q", "--filter", &service_filter]);
    let victim = workers
        .lines()
        .next()
        .expect("a running worker container")
        .to_string();
    let run_was_going = submitted.exited().is_none() || model_submitted.exited().is_none();
    docker(&["kill", &victim]);

    let status = submitted
        .wait_exit(Duration::from_secs(900))
        .unwrap_or_else(|| {
            panic!(
                "run not completed; submit:\n{}\ncoordinator:\n{}",
                submitted.log_text(),
                stack.logs("coordinator")
            )
        });
    assert!(
        status.success(),
        "ase submit --watch: {}\ncoordinator:\n{}",
        submitted.log_text(),
        stack.logs("coordinator")
    );

    let model_status = model_submitted
        .wait_exit(Duration::from_secs(600))
        .unwrap_or_else(|| panic!("model run not completed: {}", model_submitted.log_text()));
    assert!(model_status.success(), "{}", model_submitted.log_text());

    // The run through the model server: every unit once, each with the unit's own injection
    // fixed, and one call per unit plus at most the killed worker's calls in flight.
    let model_out = tmp.path().join("model-report");
    fetch_report(&access, &model_files.run_id, &model_out);
    let model_units = project.unit_names(MODEL_ROUNDS);
    let scanned =
        assert_every_unit_generated_and_scanned(&model_out, &model_files.run_id, &model_units);
    let fixed = MODEL_TASKS as i64 - 1;
    assert!(
        scanned.iter().all(|(_, n)| *n == fixed),
        "every unit scans {fixed} findings: {scanned:?}"
    );
    let calls = model.calls();
    for t in &project.tasks {
        let n = calls.get(&t.instance_id).copied().unwrap_or(0);
        assert!(
            n >= MODEL_ROUNDS,
            "model calls of {}: {calls:?}",
            t.instance_id
        );
    }
    let total = model.total_calls();
    assert!(
        total <= model_units.len() as u32 + GENERATE_SLOTS,
        "{total} model calls for {} units: {calls:?}",
        model_units.len()
    );
    assert!(model.unrecognised().is_empty(), "unrecognised prompts");

    // Every unit once, and the demo's scores for its reference model.
    let out = tmp.path().join("report");
    fetch_report(&access, &files.run_id, &out);
    let units = unit_names(&demo.v1_tasks, ROUNDS);
    assert_every_unit_generated_and_scanned(&out, &files.run_id, &units);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(ase_common::report::REPORT_JSON)).unwrap())
            .unwrap();
    let expected_path = ase_cluster_tests::repo_root().join("examples/demo/expected_scores.json");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
    let mut scores = report["scores"].clone();
    strip_timings(&mut scores);
    assert_eq!(
        scores, expected[&files.run_id],
        "scores of {}",
        files.run_id
    );

    // Swarm replaced the killed task: three workers run again, and the new task joined under a
    // name of its own (each join is granted a new one).
    wait_until(
        "three worker tasks running",
        Duration::from_secs(120),
        || {
            docker(&["ps", "-q", "--filter", &service_filter])
                .lines()
                .count()
                == 3
        },
    );
    let status = status_text().expect("ase status");
    let joined = stack.logs("worker");
    let join_lines: Vec<&str> = joined
        .lines()
        .filter(|l| l.starts_with("joined as "))
        .collect();
    let mut names: Vec<&str> = join_lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    names.sort();
    names.dedup();
    assert!(
        names.len() >= 4 && names.len() == join_lines.len(),
        "1 + 2 scaled + 1 replacement joins, each its own name: {join_lines:?}\n{status}"
    );
    let completed: u64 = names
        .iter()
        .filter_map(|n| worker_status(&status, n))
        .map(|s| s.2)
        .sum();
    assert!(
        completed >= (units.len() + model_units.len()) as u64,
        "joined workers completed the units:\n{status}"
    );
    eprintln!(
        "swarm: {} + {} units, {total} model calls, workers {names:?}, killed {victim} while \
         a run was {}",
        units.len(),
        model_units.len(),
        if run_was_going {
            "going"
        } else {
            "already done"
        }
    );

    // Scaling down stops workers the way Swarm stops any task (SIGTERM): they shut down
    // cleanly, exit status 0 (the killed one exited 137).
    docker(&[
        "service",
        "scale",
        "--detach",
        &format!("{}=1", stack.service("worker")),
    ]);
    let exited_cleanly = || {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &service_filter,
            "--filter",
            "status=exited",
        ])
        .lines()
        .filter(|id| docker(&["inspect", "-f", "{{.State.ExitCode}}", id]) == "0")
        .count()
    };
    wait_until(
        "two workers stopped cleanly",
        Duration::from_secs(120),
        || exited_cleanly() >= 2,
    );
    // The swarm's log broker may hand over an exited task's last lines a moment after it
    // exited (seen once: both exited with 0, their "shutting down" not yet in the logs).
    let mut logs = stack.logs("worker");
    for _ in 0..30 {
        if logs.matches("shutting down").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        logs = stack.logs("worker");
    }
    assert!(
        logs.matches("shutting down").count() >= 2,
        "the removed workers say they shut down:\n{logs}"
    );

    // `docker stack rm` leaves nothing behind.
    let _ = docker_output(&["stack", "rm", &stack.name]);
    let mut left = String::new();
    for _ in 0..120 {
        left = stack.leftovers();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(left.is_empty(), "stack rm left: {left}");
}
