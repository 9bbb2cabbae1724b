//! Agent mode across a crash: `ase run` is killed with SIGKILL while a unit's agent runs in its
//! container. The container outlives the worker (nobody can remove it then); the next `ase run`
//! removes it (orphans of its earlier life, by label), runs the unit again in a fresh container,
//! and the run completes with the unit once, scored from the second agent's files; the report
//! counts the killed attempt's model calls (reported with the worker's heartbeats while it
//! ran) apart, exactly as many as the model server saw before the kill.
//!
//! Needs Docker, the agent image (`deploy/images/build.sh agent`), osemgrep and
//! `cargo build -p ase` (skipped outside CI).

use ase_cluster_tests::agent_model::{
    agent_image_or_skip, demo_file, write_file, ScriptedAgentModel,
};
use ase_cluster_tests::{ase_bin, repo_root, support, wait_until, Proc};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const RUN_ID: &str = "killed-agent__agent-kill";

fn agent_containers() -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=ase.role=agent", "--filter"])
        .arg(format!("label=ase.run={RUN_ID}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn a_worker_killed_mid_agent_leaves_no_container_and_the_unit_completes_once() {
    if !agent_image_or_skip() {
        return;
    }
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let demo = ase_demo::materialise(&tmp.path().join("demo")).unwrap();
    let model = ScriptedAgentModel::start();
    // The agent takes a while (long enough to be killed in), then writes the fix.
    model.script(
        "slow-agent",
        "db.py",
        vec![
            "sleep 20".into(),
            write_file("db.py", &demo_file("py-bookshelf", "fix", "db.py")),
        ],
    );
    let tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&demo.v1_tasks).unwrap()).unwrap();
    let one: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["instance_id"] == "demo_sqli_py_bookshelf")
        .collect();
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("one.json"), serde_json::to_vec(&one).unwrap()).unwrap();
    let config = run_dir.join("ase.toml");
    std::fs::write(
        &config,
        format!(
            r#"[coordinator]
heartbeat_ms = 500
lease_ttl_ms = 3000

[worker]
osemgrep = {osemgrep:?}
rules = {rules:?}
repo_url_template = {template:?}
docker = "on"

[[runs]]
model_name = "killed-agent"
batch = "agent-kill"
dataset = "one.json"
rounds = 1
[runs.model]
provider = "agent"
preset = "mini-swe-agent"
base_url = {base_url:?}
model = "slow-agent"
[runs.model.limits]
wall_secs = 300
"#,
            osemgrep = osemgrep.display().to_string(),
            rules = repo_root().join("rules").display().to_string(),
            template = demo.repo_url_template,
            base_url = model.base_url(),
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    // The coordinator's record of each attempt's agent usage (heartbeats) is logged at debug.
    let log_filter = "info,ase_coordinator::state::agent_usage=debug";
    let launch = |n: u32| {
        Proc::spawn(
            "ase run (agent kill)",
            &ase_bin(),
            &[
                "run".into(),
                "--config".into(),
                config.display().to_string(),
                "--data".into(),
                data.display().to_string(),
            ],
            &[("ASE_LOG", log_filter)],
            tmp.path().join(format!("run-{n}.log")),
        )
    };
    let mut first = launch(1);
    // The agent is running (its first command sent) when the worker dies.
    wait_until(
        "the agent's first model call",
        Duration::from_secs(300),
        || !model.requests().is_empty(),
    );
    // ... and the coordinator has stored (durably, before it logs) the calls the model server
    // saw so far, from the worker's heartbeats: the agent sleeps after its first command.
    wait_until(
        "the coordinator to record the killed attempt's calls",
        Duration::from_secs(60),
        || {
            let seen = model.requests().len() as u64;
            last_recorded_calls(&first.log_text()) == Some(seen)
        },
    );
    let during = agent_containers();
    assert_eq!(during.len(), 1, "one agent container: {during:?}");
    first.kill9();
    assert_eq!(
        agent_containers(),
        during,
        "the container outlives the killed worker"
    );
    let calls_first = model.requests().len();

    let mut second = launch(2);
    let status = second
        .wait_exit(Duration::from_secs(600))
        .unwrap_or_else(|| panic!("ase run did not end; log:\n{}", second.log_text()));
    assert!(
        status.success(),
        "ase run: {status}; log:\n{}",
        second.log_text()
    );
    assert!(
        second
            .log_text()
            .contains("removed orphan agent containers"),
        "{}",
        second.log_text()
    );
    assert!(agent_containers().is_empty(), "{:?}", agent_containers());

    // The unit once, secure: the second agent's fix (it made its own calls after the first's).
    let rows: Vec<Value> =
        std::fs::read_to_string(data.join(format!("results/{RUN_ID}/units.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["verdict"], "secure", "{}", rows[0]);
    assert!(
        model.requests().len() >= calls_first + 3,
        "{} calls",
        model.requests().len()
    );

    // The report counts the killed attempt's calls apart, as many as the model server saw
    // before the kill, and the second attempt's as the unit's own.
    let results = data.join(format!("results/{RUN_ID}"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(results.join("report.json")).unwrap()).unwrap();
    let t = &report["agent"]["totals"];
    let total = model.requests().len() as u64;
    assert!(calls_first > 0);
    assert_eq!(t["abandoned_attempts"], 1, "{t}");
    assert_eq!(t["abandoned_calls"], calls_first as u64, "{t}");
    assert_eq!(t["model_calls"], total - calls_first as u64, "{t}");
    assert_eq!(t["all_calls"], total, "{t}");
    let row = &report["agent"]["units"][0];
    assert_eq!(row["abandoned_calls"], calls_first as u64, "{row}");
    assert_eq!(
        rows[0]["agent_abandoned_calls"], calls_first as u64,
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["agent_model_calls"], total - calls_first as u64);
    // The committed attempt's transcript, linked from the report.
    let transcript = row["transcript"].as_str().unwrap();
    assert_eq!(transcript, "transcripts/demo_sqli_py_bookshelf_1.txt");
    let text = std::fs::read_to_string(results.join(transcript)).unwrap();
    assert!(text.contains("=== call 1 POST"), "{text}");
    let markdown = std::fs::read_to_string(results.join("report.md")).unwrap();
    assert!(markdown.contains("## Agent"), "{markdown}");
}

/// The model calls the coordinator last recorded for an attempt's agent, from its debug log
/// (`agent usage of an attempt recorded ... model_calls=N`).
fn last_recorded_calls(log: &str) -> Option<u64> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("agent usage of an attempt recorded"))
        .filter_map(|l| {
            let rest = &l[l.find("model_calls=")? + "model_calls=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .next_back()
}

/// The log without its terminal colour codes (`ESC [ ... m`), which surround field names.
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
