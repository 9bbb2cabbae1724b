//! Harness of the cluster tests: real `ase coordinator` and `ase worker` processes (mutual TLS,
//! sled, bare osemgrep), a git project served through a `file://` URL template, a v1 dataset
//! and context for it, and an OpenAI-compatible model server speaking the real wire protocol
//! that counts its calls per task.
//!
//! The tests run the `ase` binary and do not build it: run `cargo build -p ase` first (`.ci/run`
//! does), or point `ASE_BIN` at a binary.

pub use ase_test_support as support;

pub mod agent_model;
pub mod anthropic_agent_model;
pub mod client;
pub mod demo_run;
pub mod docker_cluster;
pub mod join;
pub mod model_server;
pub mod process;
pub mod project;
pub mod registry_world;

pub use model_server::{FakeModel, FaultReport, FaultWindow, ModelBehaviour};
pub use process::{free_loopback_addr, Proc};
pub use project::{Project, TaskFixture};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `ASE_BIN`, else `target/release/ase`, else `target/debug/ase` (under `CARGO_TARGET_DIR` when
/// set, else the workspace's `target/`). Panics with the command to run when none exists.
pub fn ase_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ASE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "ASE_BIN={} is not a file", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let candidates = [
        target.join("release/ase"),
        target.join("debug/ase"),
        repo_root().join("target/release/ase"),
        repo_root().join("target/debug/ase"),
    ];
    // The newest one: a stale release binary must not hide a fresh debug build.
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "no `ase` binary under {}: run `cargo build -p ase` first, or set ASE_BIN",
                target.display()
            )
        })
}

/// Whether `ase --help` lists `subcommand` (the coordinator and worker land in stages).
pub fn ase_has_subcommand(subcommand: &str) -> bool {
    let out = Command::new(ase_bin())
        .arg("help")
        .output()
        .expect("run ase help");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .any(|l| l.split_whitespace().next() == Some(subcommand))
}

/// `ase certs init --out DIR --worker NAME...`: the cluster's certificates for the given worker
/// names (and the client `admin`); `extra_hosts` are more names the coordinator answers to.
pub fn certs_init(out: &Path, workers: &[&str], extra_hosts: &[&str]) -> PathBuf {
    let mut cmd = Command::new(ase_bin());
    cmd.args(["certs", "init", "--out"]).arg(out);
    for w in workers {
        cmd.args(["--worker", w]);
    }
    for h in extra_hosts {
        cmd.args(["--coordinator-name", h]);
    }
    let o = cmd.output().expect("run ase certs init");
    assert!(
        o.status.success(),
        "ase certs init: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_path_buf()
}

/// Where the coordinator listens and where its TLS material is, as a client sees it.
#[derive(Debug, Clone)]
pub struct CoordinatorAccess {
    pub url: String,
    pub tls_dir: PathBuf,
}

impl CoordinatorAccess {
    fn client_args(&self) -> Vec<String> {
        vec![
            "--coordinator".into(),
            self.url.clone(),
            "--tls-dir".into(),
            self.tls_dir.display().to_string(),
        ]
    }
}

/// Settings of `ase coordinator` in tests: short heartbeats and leases so that expiry happens
/// within seconds.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    pub heartbeat_ms: u64,
    pub lease_ttl_ms: u64,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            heartbeat_ms: 500,
            lease_ttl_ms: 3000,
        }
    }
}

/// Starts `ase coordinator` on `listen` with its sled data under `data` and waits for its
/// `listening on` line. `log` receives its stderr.
pub fn start_coordinator(
    listen: std::net::SocketAddr,
    data: &Path,
    tls_dir: &Path,
    opts: &CoordinatorOptions,
    log: PathBuf,
) -> Proc {
    start_coordinator_with(listen, data, tls_dir, opts, &[], log)
}

/// [`start_coordinator`] with more flags (e.g. `--join-ca-key`).
pub fn start_coordinator_with(
    listen: std::net::SocketAddr,
    data: &Path,
    tls_dir: &Path,
    opts: &CoordinatorOptions,
    extra: &[String],
    log: PathBuf,
) -> Proc {
    let mut args: Vec<String> = vec![
        "coordinator".into(),
        "--listen".into(),
        listen.to_string(),
        "--data".into(),
        data.display().to_string(),
        "--tls-dir".into(),
        tls_dir.display().to_string(),
        "--heartbeat-ms".into(),
        opts.heartbeat_ms.to_string(),
        "--lease-ttl-ms".into(),
        opts.lease_ttl_ms.to_string(),
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn("coordinator", &ase_bin(), &args, &[], log);
    p.wait_for_count("listening on", 1, Duration::from_secs(30));
    p
}

/// A coordinator under `tmp` with the default test options: certificates for `workers` in
/// `tmp/certs`, its data in `tmp/coordinator-data`, its log in `tmp/logs/coordinator.log`, on
/// a free loopback port; returns the process and how clients reach it.
pub fn start_coordinator_under(tmp: &Path, workers: &[&str]) -> (Proc, CoordinatorAccess) {
    std::fs::create_dir_all(tmp.join("logs")).unwrap();
    let certs = certs_init(&tmp.join("certs"), workers, &[]);
    let listen = free_loopback_addr();
    let coordinator = start_coordinator(
        listen,
        &tmp.join("coordinator-data"),
        &certs,
        &CoordinatorOptions::default(),
        tmp.join("logs/coordinator.log"),
    );
    let access = CoordinatorAccess {
        url: format!("https://localhost:{}", listen.port()),
        tls_dir: certs,
    };
    (coordinator, access)
}

/// Settings of one `ase worker` in tests.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub name: String,
    pub generate_slots: u32,
    pub eval_slots: u32,
    pub osemgrep: PathBuf,
    pub repo_url_template: String,
}

/// Starts `ase worker` (bare scanner, no Docker) and waits for `registered as NAME`.
pub fn start_worker(
    coord: &CoordinatorAccess,
    cache: &Path,
    opts: &WorkerOptions,
    log: PathBuf,
) -> Proc {
    let mut p = spawn_worker(coord, cache, opts, log);
    p.wait_for_count(
        &format!("registered as {}", opts.name),
        1,
        Duration::from_secs(30),
    );
    p
}

/// Starts `ase worker` without waiting for it to register.
pub fn spawn_worker(
    coord: &CoordinatorAccess,
    cache: &Path,
    opts: &WorkerOptions,
    log: PathBuf,
) -> Proc {
    let args = worker_args(coord, cache, opts);
    Proc::spawn(
        &format!("worker {}", opts.name),
        &ase_bin(),
        &args,
        &[],
        log,
    )
}

/// Starts `ase worker` with the local Docker daemon (v2 units run in their images; the SAST
/// scan stays bare) and waits for `registered as NAME`.
pub fn start_docker_worker(
    coord: &CoordinatorAccess,
    cache: &Path,
    opts: &WorkerOptions,
    log: PathBuf,
) -> Proc {
    let args: Vec<String> = worker_args(coord, cache, opts)
        .into_iter()
        .filter(|a| a != "--no-docker")
        .collect();
    let mut p = Proc::spawn(
        &format!("worker {}", opts.name),
        &ase_bin(),
        &args,
        &[],
        log,
    );
    p.wait_for_count(
        &format!("registered as {}", opts.name),
        1,
        Duration::from_secs(30),
    );
    p
}

pub(crate) fn worker_args(
    coord: &CoordinatorAccess,
    cache: &Path,
    opts: &WorkerOptions,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "worker".into(),
        "--coordinator".into(),
        coord.url.clone(),
        "--name".into(),
        opts.name.clone(),
        "--tls-dir".into(),
        coord.tls_dir.display().to_string(),
        "--tls-domain".into(),
        "localhost".into(),
        "--cache".into(),
        cache.display().to_string(),
        "--generate-slots".into(),
        opts.generate_slots.to_string(),
        "--eval-slots".into(),
        opts.eval_slots.to_string(),
        "--scanner".into(),
        "bare".into(),
        "--osemgrep".into(),
        opts.osemgrep.display().to_string(),
        "--rules".into(),
        repo_root().join("rules").display().to_string(),
        "--no-docker".into(),
        "--repo-url-template".into(),
        opts.repo_url_template.clone(),
    ];
    args.shrink_to_fit();
    args
}

/// `ase submit` of the project's run; returns the process (its stdout's first line is the
/// run id). With `watch` the process ends when the run completes.
pub fn submit(coord: &CoordinatorAccess, files: &RunFiles, watch: bool, log: PathBuf) -> Proc {
    submit_with_key(coord, files, watch, None, log)
}

/// Environment variable through which [`submit_with_key`] hands `ase submit` the key.
pub const TEST_KEY_ENV: &str = "ASE_TEST_MODEL_KEY";

/// [`submit`], supplying the model API key `key` (`--api-key-env`) when given.
pub fn submit_with_key(
    coord: &CoordinatorAccess,
    files: &RunFiles,
    watch: bool,
    key: Option<&str>,
    log: PathBuf,
) -> Proc {
    // The projects' repos are local to the workers (their `--repo-url-template`), not where a
    // submitter's preflight would look (GitHub): tests/tests/preflight.rs tests the preflight.
    let mut args = vec!["submit".to_string(), "--preflight".into(), "off".into()];
    args.extend(coord.client_args());
    args.extend([
        "--spec".into(),
        files.spec.display().to_string(),
        "--dataset".into(),
        files.dataset.display().to_string(),
        "--context".into(),
        files.context.display().to_string(),
    ]);
    if watch {
        args.push("--watch".into());
    }
    let mut envs = Vec::new();
    if let Some(key) = key {
        args.extend(["--api-key-env".into(), TEST_KEY_ENV.into()]);
        envs.push((TEST_KEY_ENV, key));
    }
    Proc::spawn("submit", &ase_bin(), &args, &envs, log)
}

/// `ase report --run ID --out DIR`.
pub fn fetch_report(coord: &CoordinatorAccess, run_id: &str, out: &Path) {
    let mut cmd = Command::new(ase_bin());
    cmd.arg("report").args(coord.client_args());
    cmd.args(["--run", run_id, "--out"]).arg(out);
    let o = cmd.output().expect("run ase report");
    assert!(
        o.status.success(),
        "ase report --run {run_id}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The files `ase submit` reads.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub spec: PathBuf,
    pub dataset: PathBuf,
    pub context: PathBuf,
    pub run_id: String,
}

/// A RunSpec (ase_worker::pipeline::RunSpec as JSON) whose model is the `openai` provider at
/// `base_url` without a key, written with the project's dataset and context under `dir`.
pub fn write_run_files(dir: &Path, project: &Project, base_url: &str, rounds: u32) -> RunFiles {
    let spec = serde_json::json!({
        "model_name": "fake-model",
        "batch": "cluster",
        "rounds": rounds,
        "model": {
            "provider": "openai",
            "config": {
                "base_url": base_url,
                "model": "fake-model",
                "api_key": {"from": "none"},
                "request_timeout": 60.0
            }
        }
    });
    // The spec must be what the workers accept: parse it with their type.
    let parsed: ase_worker::pipeline::RunSpec =
        serde_json::from_value(spec.clone()).expect("the test's run spec is a RunSpec");
    let run_id = parsed.run_name();
    std::fs::create_dir_all(dir).unwrap();
    let files = RunFiles {
        spec: dir.join("spec.json"),
        dataset: dir.join("tasks.json"),
        context: dir.join("context.json"),
        run_id,
    };
    std::fs::write(&files.spec, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    std::fs::write(&files.dataset, project.dataset_json()).unwrap();
    std::fs::write(&files.context, project.context_json()).unwrap();
    files
}

/// The units (`{instance_id}_cycle{k}`) of a fetched report and whether each generation
/// succeeded, from `{run}/processed_instances.json`.
pub fn reported_units(report_dir: &Path, run_id: &str) -> Vec<(String, bool)> {
    let path = report_dir
        .join(run_id)
        .join(ase_common::upstream_io::PROCESSED_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{}: not an object", path.display()));
    obj.iter()
        .map(|(k, v)| (k.clone(), v["success"].as_bool().unwrap_or(false)))
        .collect()
}

/// The units of `{run}/sast_results.json` (upstream's list of
/// `{"instance_id": UNIT, "detected_vul_num": N}`) with their counts.
pub fn scanned_units(report_dir: &Path, run_id: &str) -> Vec<(String, i64)> {
    let path = report_dir
        .join(run_id)
        .join(ase_common::upstream_io::SAST_RESULTS_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("{}: not a list", path.display()));
    items
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap_or_default().to_string(),
                i["detected_vul_num"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Asserts that the report lists every one of `units` (sorted) exactly once, each generated
/// with success and scanned; returns the scans with their finding counts.
pub fn assert_every_unit_generated_and_scanned(
    report_dir: &Path,
    run_id: &str,
    units: &[String],
) -> Vec<(String, i64)> {
    let mut processed: Vec<String> = reported_units(report_dir, run_id)
        .into_iter()
        .map(|(u, ok)| {
            assert!(ok, "generation of {u} failed");
            u
        })
        .collect();
    processed.sort();
    assert_eq!(processed, units, "processed units");
    let scanned = scanned_units(report_dir, run_id);
    let mut scanned_names: Vec<String> = scanned.iter().map(|(u, _)| u.clone()).collect();
    scanned_names.sort();
    assert_eq!(scanned_names, units, "scanned units");
    scanned
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; panics with `what` then.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A wrapper of `osemgrep` that records each scan (a file per invocation in `marks`) and
/// sleeps `delay_ms` before scanning, so that evaluate leases are held long enough to kill
/// their worker.
pub fn slow_osemgrep(dir: &Path, osemgrep: &Path, marks: &Path, delay_ms: u64) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(marks).unwrap();
    let script = dir.join("slow-osemgrep");
    let secs = format!("{}.{:03}", delay_ms / 1000, delay_ms % 1000);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n: > \"{marks}/scan.$$\"\nsleep {secs}\nexec \"{bin}\" \"$@\"\n",
            marks = marks.display(),
            bin = osemgrep.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Files in `dir` (0 when it does not exist).
pub fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// A coordinator on loopback with its certificates, the project, its run files and the model
/// server: the common ground of the local cluster tests. Workers are started by the test.
pub struct LocalCluster {
    pub tmp: tempfile::TempDir,
    pub project: Project,
    pub model: FakeModel,
    pub listen: std::net::SocketAddr,
    pub data: PathBuf,
    pub coordinator: Proc,
    pub access: CoordinatorAccess,
    pub files: RunFiles,
    pub osemgrep: PathBuf,
    pub rounds: u32,
    pub opts: CoordinatorOptions,
    /// More flags of every start of the coordinator.
    coordinator_extra: Vec<String>,
    restarts: u32,
}

impl LocalCluster {
    /// None (after saying why) when osemgrep is missing outside CI.
    pub fn start(
        workers: &[&str],
        n_tasks: usize,
        rounds: u32,
        behaviour: ModelBehaviour,
    ) -> Option<LocalCluster> {
        Self::start_with(workers, n_tasks, rounds, behaviour, None)
    }

    /// [`LocalCluster::start`] with a coordinator that admits workers joining with a token,
    /// their certificates valid `cert_ttl` (`24h`, `10s`).
    pub fn start_admitting_joins(
        workers: &[&str],
        n_tasks: usize,
        rounds: u32,
        behaviour: ModelBehaviour,
        cert_ttl: &str,
    ) -> Option<LocalCluster> {
        Self::start_with(workers, n_tasks, rounds, behaviour, Some(cert_ttl))
    }

    fn start_with(
        workers: &[&str],
        n_tasks: usize,
        rounds: u32,
        behaviour: ModelBehaviour,
        join_cert_ttl: Option<&str>,
    ) -> Option<LocalCluster> {
        let osemgrep = support::osemgrep_or_skip()?;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
        let project = Project::create(tmp.path(), n_tasks);
        let model = FakeModel::start("127.0.0.1:0".parse().unwrap(), &project.tasks, behaviour);
        let certs = certs_init(&tmp.path().join("certs"), workers, &[]);
        let files = write_run_files(&tmp.path().join("run"), &project, &model.base_url(), rounds);
        let listen = free_loopback_addr();
        let data = tmp.path().join("coordinator-data");
        let opts = CoordinatorOptions::default();
        let coordinator_extra = join_cert_ttl
            .map(|ttl| join::join_flags(&certs, ttl))
            .unwrap_or_default();
        let coordinator = start_coordinator_with(
            listen,
            &data,
            &certs,
            &opts,
            &coordinator_extra,
            tmp.path().join("logs/coordinator-0.log"),
        );
        let access = CoordinatorAccess {
            url: format!("https://localhost:{}", listen.port()),
            tls_dir: certs,
        };
        Some(LocalCluster {
            tmp,
            project,
            model,
            listen,
            data,
            coordinator,
            access,
            files,
            osemgrep,
            rounds,
            opts,
            coordinator_extra,
            restarts: 0,
        })
    }

    pub fn worker_options(
        &self,
        name: &str,
        generate_slots: u32,
        eval_slots: u32,
    ) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            generate_slots,
            eval_slots,
            osemgrep: self.osemgrep.clone(),
            repo_url_template: self.project.url_template(),
        }
    }

    /// Starts a worker with its own cache and log and waits for it to register.
    pub fn start_worker(&self, opts: &WorkerOptions) -> Proc {
        start_worker(
            &self.access,
            &self.tmp.path().join(format!("cache-{}", opts.name)),
            opts,
            self.log_path(&format!("worker-{}", opts.name)),
        )
    }

    /// The run's `ase status` line once it contains `needle` (polled every 200 ms, at most
    /// `timeout`).
    pub fn status_line_with(&self, run_id: &str, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let out = std::process::Command::new(ase_bin())
                .args([
                    "status",
                    "--coordinator",
                    &self.access.url,
                    "--tls-dir",
                    &self.access.tls_dir.display().to_string(),
                    "--run",
                    run_id,
                ])
                .output()
                .expect("run ase status");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some(line) = text
                .lines()
                .find(|l| l.contains(run_id) && l.contains(needle))
            {
                return line.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ase status never showed {needle:?}; last: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_path(&self, stem: &str) -> PathBuf {
        let dir = self.tmp.path().join("logs");
        let mut i = 0;
        loop {
            let p = dir.join(format!("{stem}-{i}.log"));
            if !p.exists() {
                return p;
            }
            i += 1;
        }
    }

    /// `kill -9` the coordinator and start it again on the same address and data directory.
    pub fn restart_coordinator_after_kill(&mut self) {
        self.coordinator.kill9();
        self.restarts += 1;
        self.coordinator = start_coordinator_with(
            self.listen,
            &self.data,
            &self.access.tls_dir,
            &self.opts,
            &self.coordinator_extra,
            self.log_path("coordinator"),
        );
    }

    /// `ase submit --watch`: returns the process (it ends when the run completes).
    pub fn submit_watch(&self) -> Proc {
        submit(&self.access, &self.files, true, self.log_path("submit"))
    }

    /// `ase submit --watch` supplying the model API key `key`.
    pub fn submit_watch_with_key(&self, key: &str) -> Proc {
        submit_with_key(
            &self.access,
            &self.files,
            true,
            Some(key),
            self.log_path("submit"),
        )
    }

    /// `kill -9` the coordinator, and only that (the test restarts it when it chooses).
    pub fn kill_coordinator(&mut self) {
        self.coordinator.kill9();
    }

    /// Starts the coordinator again on the same address and data directory (after
    /// [`LocalCluster::kill_coordinator`]).
    pub fn start_coordinator_again(&mut self) {
        self.restarts += 1;
        self.coordinator = start_coordinator_with(
            self.listen,
            &self.data,
            &self.access.tls_dir,
            &self.opts,
            &self.coordinator_extra,
            self.log_path("coordinator"),
        );
    }

    /// Waits for `ase submit --watch` to end successfully and checks the run id it printed.
    pub fn wait_run_completed(&self, submit: &mut Proc, timeout: Duration) {
        let status = submit.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "run not completed within {timeout:?}; submit log:\n{}\ncoordinator log:\n{}",
                submit.log_text(),
                self.coordinator.log_text()
            )
        });
        assert!(
            status.success(),
            "ase submit --watch: {status}; stderr:\n{}",
            submit.log_text()
        );
        let first = submit.stdout_text();
        assert_eq!(
            first.lines().next().map(str::trim),
            Some(self.files.run_id.as_str()),
            "submit prints the run id first"
        );
    }

    /// Fetches the report into a new directory and checks that it holds every unit of the
    /// run exactly once, with a successful generation and a scan each.
    pub fn assert_report_has_every_unit_once(&self) -> PathBuf {
        let out = self.tmp.path().join(format!("report-{}", self.restarts));
        fetch_report(&self.access, &self.files.run_id, &out);
        let expected = self.project.unit_names(self.rounds);
        let processed = reported_units(&out, &self.files.run_id);
        let mut names: Vec<String> = processed.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(names, expected, "processed units");
        let failed: Vec<&String> = processed
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n)
            .collect();
        assert!(failed.is_empty(), "failed generations: {failed:?}");
        let scanned = scanned_units(&out, &self.files.run_id);
        let mut scanned_names: Vec<String> = scanned.iter().map(|(n, _)| n.clone()).collect();
        scanned_names.sort();
        assert_eq!(scanned_names, expected, "scanned units");
        // Each module has one injection; the model's fix removes the unit's own one.
        let fixed = self.project.tasks.len() as i64 - 1;
        assert!(
            scanned.iter().all(|(_, n)| *n == fixed),
            "every unit scans {fixed} findings: {scanned:?}"
        );
        out
    }

    /// Every task's model calls, checked against the run's rounds: exactly `rounds` each
    /// (`extra_allowed` == 0), or at least `rounds` each and at most `extra_allowed` more in
    /// total.
    pub fn assert_model_calls(&self, extra_allowed: u32) {
        let calls = self.model.calls();
        let units = self.project.tasks.len() as u32 * self.rounds;
        for t in &self.project.tasks {
            let n = calls.get(&t.instance_id).copied().unwrap_or(0);
            if extra_allowed == 0 {
                assert_eq!(
                    n, self.rounds,
                    "model calls of {}: {calls:?}",
                    t.instance_id
                );
            } else {
                assert!(
                    n >= self.rounds,
                    "model calls of {}: {calls:?}",
                    t.instance_id
                );
            }
        }
        let total = self.model.total_calls();
        assert!(
            total <= units + extra_allowed,
            "{total} model calls for {units} units (at most {extra_allowed} repeated): {calls:?}"
        );
        assert!(self.model.unrecognised().is_empty(), "unrecognised prompts");
    }
}

/// `ase run --config CONFIG --data TMP/data` whose worker takes its registry credentials from
/// `docker_config` (a folder with a `config.json`, as `DOCKER_CONFIG` names it) and nothing
/// else: the other credential and image variables are cleared. Waits (bounded by `timeout`),
/// asserts success, and returns the run's log. The environment is the test process's: call it
/// from a test alone in its binary.
pub fn ase_run_pulling_with(
    tmp: &Path,
    config: &Path,
    docker_config: &Path,
    osemgrep: &Path,
    what: &str,
    timeout: Duration,
) -> String {
    let mut p = spawn_ase_run_pulling_with(tmp, config, docker_config, osemgrep, what);
    let status = p
        .wait_exit(timeout)
        .unwrap_or_else(|| panic!("{what} did not end; log:\n{}", p.log_text()));
    let log = p.log_text();
    assert!(status.success(), "{what}: {status}; log:\n{log}");
    log
}

/// [`ase_run_pulling_with`] without waiting: the process, its log in `tmp/ase-run.log`.
pub fn spawn_ase_run_pulling_with(
    tmp: &Path,
    config: &Path,
    docker_config: &Path,
    osemgrep: &Path,
    what: &str,
) -> Proc {
    std::env::set_var("DOCKER_CONFIG", docker_config);
    for var in [
        "ASE_REGISTRY_USERNAME",
        "ASE_REGISTRY_PASSWORD",
        "ASE_REGISTRY_SERVER",
        "ASE_IMAGE_PLATFORM",
        "ASE_IMAGE_CACHE_BYTES",
    ] {
        std::env::remove_var(var);
    }
    let rules = repo_root().join("rules").display().to_string();
    Proc::spawn(
        what,
        &ase_bin(),
        &[
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--data".into(),
            tmp.join("data").display().to_string(),
        ],
        &[
            ("ASE_OSEMGREP", osemgrep.to_str().unwrap()),
            ("ASE_RULES", &rules),
            ("ASE_LOG", "info"),
        ],
        tmp.join("ase-run.log"),
    )
}
