//! `ase run` as a user runs it: one process with the embedded coordinator (gRPC over mutual
//! TLS on loopback, sled in the data folder) and a local worker (bare osemgrep, git through a
//! `file://` URL template), driven by a TOML config, against the OpenAI-compatible fake model
//! that counts its calls. Interrupting and re-running resumes without repeating model calls.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{
    ase_bin, repo_root, reported_units, scanned_units, support, FakeModel, ModelBehaviour, Proc,
    Project,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const RUN_ID: &str = "fake-model__all-in-one";

struct Setup {
    tmp: tempfile::TempDir,
    project: Project,
    model: FakeModel,
    config: PathBuf,
    data: PathBuf,
    rounds: u32,
    launches: u32,
}

impl Setup {
    fn new(n_tasks: usize, rounds: u32, generate_slots: u32, model_delay: Duration) -> Option<Setup> {
        let osemgrep = support::osemgrep_or_skip()?;
        let tmp = tempfile::tempdir().unwrap();
        let project = Project::create(tmp.path(), n_tasks);
        let model = FakeModel::start(
            "127.0.0.1:0".parse().unwrap(),
            &project.tasks,
            ModelBehaviour { delay: model_delay },
        );
        let run_dir = tmp.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("tasks.json"), project.dataset_json()).unwrap();
        std::fs::write(run_dir.join("context.json"), project.context_json()).unwrap();
        // Paths relative to the config file on purpose: that is how the file resolves them.
        let config = run_dir.join("ase.toml");
        std::fs::write(
            &config,
            format!(
                r#"[coordinator]
heartbeat_ms = 500
lease_ttl_ms = 3000

[worker]
generate_slots = {generate_slots}
eval_slots = 2
osemgrep = {osemgrep:?}
rules = {rules:?}
repo_url_template = {template:?}
docker = "off"

[[runs]]
model_name = "fake-model"
batch = "all-in-one"
dataset = "tasks.json"
context = "context.json"
rounds = {rounds}

[runs.model]
provider = "openai"
base_url = {base_url:?}
model = "fake-model"
request_timeout_secs = 60.0
"#,
                osemgrep = osemgrep.display().to_string(),
                rules = repo_root().join("rules").display().to_string(),
                template = project.url_template(),
                base_url = model.base_url(),
            ),
        )
        .unwrap();
        let data = tmp.path().join("data");
        Some(Setup {
            tmp,
            project,
            model,
            config,
            data,
            rounds,
            launches: 0,
        })
    }

    fn launch(&mut self) -> Proc {
        self.launches += 1;
        let args: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            self.config.display().to_string(),
            "--data".into(),
            self.data.display().to_string(),
        ];
        Proc::spawn(
            "ase run",
            &ase_bin(),
            &args,
            &[("ASE_LOG", "warn")],
            self.tmp.path().join(format!("run-{}.log", self.launches)),
        )
    }

    fn report_dir(&self) -> PathBuf {
        self.data.join("results").join(RUN_ID)
    }

    fn wait_success(&self, p: &mut Proc) {
        let status = p
            .wait_exit(RUN_TIMEOUT)
            .unwrap_or_else(|| panic!("ase run did not end; log:\n{}", p.log_text()));
        assert!(
            status.success(),
            "ase run: {status}; log:\n{}\nstdout:\n{}",
            p.log_text(),
            p.stdout_text()
        );
    }

    /// Every unit once in processed_instances.json and in sast_results.json, each generated
    /// and scanned with the unit's own injection fixed.
    fn assert_report_has_every_unit_once(&self) {
        let expected = self.project.unit_names(self.rounds);
        let mut processed: Vec<(String, bool)> = reported_units(&self.report_dir(), RUN_ID);
        processed.sort();
        let names: Vec<String> = processed.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, expected, "processed units");
        assert!(processed.iter().all(|(_, ok)| *ok), "{processed:?}");
        let mut scanned = scanned_units(&self.report_dir(), RUN_ID);
        scanned.sort();
        let scanned_names: Vec<String> = scanned.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(scanned_names, expected, "scanned units");
        let fixed = self.project.tasks.len() as i64 - 1;
        assert!(scanned.iter().all(|(_, n)| *n == fixed), "{scanned:?}");
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.report_dir().join("report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            report["units"].as_array().map(Vec::len),
            Some(expected.len()),
            "report.json units"
        );
    }

    /// Model calls per task: `rounds` each, plus at most `extra` in total.
    fn assert_model_calls(&self, extra: u32) {
        let calls = self.model.calls();
        for t in &self.project.tasks {
            let n = calls.get(&t.instance_id).copied().unwrap_or(0);
            if extra == 0 {
                assert_eq!(n, self.rounds, "model calls of {}: {calls:?}", t.instance_id);
            } else {
                assert!(n >= self.rounds, "model calls of {}: {calls:?}", t.instance_id);
            }
        }
        let units = self.project.tasks.len() as u32 * self.rounds;
        assert!(
            self.model.total_calls() <= units + extra,
            "{} calls for {units} units: {calls:?}",
            self.model.total_calls()
        );
        assert!(self.model.unrecognised().is_empty(), "unrecognised prompts");
    }

    /// The score table's row of the run: (quality, security, units ok, failed).
    fn score_row(&self, stdout: &str) -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(RUN_ID))
            .unwrap_or_else(|| panic!("no row for {RUN_ID} in:\n{stdout}"));
        line.split_whitespace().map(String::from).collect()
    }
}

fn sigterm(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {}", p.pid());
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ase_run_completes_a_configured_run_and_a_second_run_resumes_it_without_model_calls() {
    let Some(mut s) = Setup::new(3, 2, 2, Duration::ZERO) else {
        return;
    };
    let mut first = s.launch();
    s.wait_success(&mut first);
    let log = first.log_text();
    assert!(log.contains(&format!("submitted run {RUN_ID} (6 units)")), "{log}");
    // Not a terminal: the plain progress lines, not bars.
    assert!(log.contains(&format!("run {RUN_ID} [")), "{log}");
    s.assert_report_has_every_unit_once();
    s.assert_model_calls(0);
    // The certificates were generated into the data folder, keys private.
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(s.data.join("certs/worker-local.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // The fixture's model fixes every unit: secure, full quality.
    let out = first.stdout_text();
    let row = s.score_row(&out);
    assert_eq!(row[1], "fake-model", "{out}");
    assert_eq!(row[2], "v1", "{out}");
    assert_eq!(row[4], "100.0", "quality: {out}");
    assert_eq!(row[5], "100.0", "security: {out}");
    assert_eq!(row[row.len() - 2], "6", "units ok: {out}");
    assert_eq!(row[row.len() - 1], "0", "failed: {out}");

    let calls = s.model.total_calls();
    let mut second = s.launch();
    s.wait_success(&mut second);
    let log = second.log_text();
    assert!(log.contains(&format!("resumed run {RUN_ID} (6 units)")), "{log}");
    assert_eq!(s.model.total_calls(), calls, "a completed run calls nothing");
    assert_eq!(s.score_row(&second.stdout_text()), row, "same scores");
    s.assert_report_has_every_unit_once();
}

/// SIGTERM in the middle of generation: the running unit finishes, the process says how to
/// resume and exits 130; the same command then finishes the run with exactly one model call
/// per unit.
#[test]
fn an_interrupted_ase_run_resumes_where_it_stopped_with_one_model_call_per_unit() {
    // One generate slot and a slow model: generation takes seconds, so the interrupt lands in
    // the middle of it.
    let Some(mut s) = Setup::new(4, 3, 1, Duration::from_millis(400)) else {
        return;
    };
    let units = 12;
    let mut first = s.launch();
    wait_until("a few model calls", RUN_TIMEOUT, || s.model.total_calls() >= 3);
    sigterm(&first);
    let status = first
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", first.log_text()));
    assert_eq!(status.code(), Some(130), "log:\n{}", first.log_text());
    assert!(
        first
            .log_text()
            .contains("run the same command again to resume"),
        "{}",
        first.log_text()
    );
    let before = s.model.total_calls();
    assert!(before < units, "interrupted mid-run, not after it ({before} calls)");
    assert!(first.stdout_text().is_empty(), "no score table for an unfinished run");

    let mut second = s.launch();
    s.wait_success(&mut second);
    assert!(
        second
            .log_text()
            .contains(&format!("resumed run {RUN_ID} (12 units)")),
        "{}",
        second.log_text()
    );
    s.assert_model_calls(0);
    s.assert_report_has_every_unit_once();
}

/// `kill -9` loses only what was in flight: at most one repeated call per generate slot.
#[test]
fn a_killed_ase_run_resumes_and_repeats_at_most_the_calls_in_flight() {
    let generate_slots = 2;
    let Some(mut s) = Setup::new(4, 2, generate_slots, Duration::from_millis(300)) else {
        return;
    };
    let mut first = s.launch();
    wait_until("a few model calls", RUN_TIMEOUT, || s.model.total_calls() >= 3);
    first.kill9();
    assert!(s.model.total_calls() < 8, "killed mid-run");
    let mut second = s.launch();
    s.wait_success(&mut second);
    assert!(second.log_text().contains("resumed run"), "{}", second.log_text());
    s.assert_model_calls(generate_slots);
    s.assert_report_has_every_unit_once();
}

fn config_check(config: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(ase_bin());
    cmd.args(["config", "check", "--config"]).arg(config);
    cmd.env_remove("ASE_API_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn config_check_prints_the_effective_config_without_the_key_and_names_bad_keys() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.json"), "[]").unwrap();
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[[runs]]\nmodel_name = \"m\"\ndataset = \"t.json\"\n\
         [runs.model]\nprovider = \"openai\"\nbase_url = \"https://api.example/v1\"\n\
         model = \"m\"\napi_key_env = \"ASE_TEST_SECRET_KEY\"\n",
    )
    .unwrap();
    let secret = "sk-test-0123456789-never-printed";
    let o = config_check(
        &good,
        &[
            ("ASE_TEST_SECRET_KEY", secret),
            ("ASE_DATA_DIR", "/srv/ase-data"),
            ("ASE_EVAL_SLOTS", "7"),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains(secret) && !err.contains(secret), "{out}\n{err}");
    assert!(out.contains("api_key = \"<set from ASE_TEST_SECRET_KEY>\""), "{out}");
    assert!(out.contains("data = \"/srv/ase-data\""), "{out}");
    assert!(out.contains("tls_dir = \"/srv/ase-data/certs\""), "{out}");
    assert!(out.contains("eval_slots = 7"), "{out}");
    assert!(out.contains("rounds = 3"), "{out}");

    let o = config_check(&good, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("api_key = \"<unset: ASE_TEST_SECRET_KEY is empty>\""), "{out}");

    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[worker]\ngenerate_slots = 0\n").unwrap();
    let o = config_check(&bad, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{}: key `worker.generate_slots`", bad.display())), "{err}");

    std::fs::write(&bad, "[worker]\ngenerate_slot = 2\n").unwrap();
    let o = config_check(&bad, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&bad.display().to_string()) && err.contains("generate_slot"), "{err}");
}
