//! Agent mode end to end: `ase run` (embedded coordinator, local worker) with the `agent`
//! provider, preset `mini-swe-agent` (the real agent from PyPI, in the image
//! `deploy/images/build.sh agent` builds), one real container per unit on the worker's internal
//! network, its model reached only through the worker's proxy, which forwards to the test's
//! scripted OpenAI-compatible server (tool calls: the agent's bash commands).
//!
//! - The demo's v1 tasks, 1 round: the scripted agents write the fix for some tasks, put the
//!   vulnerable code back for others, change nothing for one; the scores equal
//!   `tests/expected/agent_v1_scores.json` and every unit's verdict is the script's.
//! - Leak test: one task's agent first runs `git log --all`, `git show`, lists the workspace,
//!   greps the container's file system for the original block and for the real API key,
//!   prints its environment and tries to reach the real endpoint, the host and a public
//!   address: what it saw (the tool outputs it sent back) holds none of them.
//! - The real key reaches the endpoint (every forwarded call carries it) and never the agent.
//! - A hung agent is killed at its wall time: the unit is a failed generation with the reason.
//!
//! Needs Docker, the agent image, osemgrep and `cargo build -p ase` (skipped outside CI).

use ase_cluster_tests::agent_model::{
    agent_image_or_skip, demo_file, sh_quote, tool_outputs, write_file, ScriptedAgentModel,
};
use ase_cluster_tests::{ase_bin, repo_root, support, Proc};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(1500);
const MODEL: &str = "scripted-agent";
const HUNG_MODEL: &str = "scripted-hang";

/// (task, repo dir, vuln_file, what the scripted agent writes)
#[derive(Clone, Copy, PartialEq, Debug)]
enum Act {
    Fix,
    Original,
    Nothing,
    ProbeThenFix,
}

const TASKS: &[(&str, &str, &str, Act)] = &[
    ("demo_sqli_py_bookshelf", "py-bookshelf", "db.py", Act::Fix),
    (
        "demo_cmdi_py_bookshelf",
        "py-bookshelf",
        "backup.py",
        Act::ProbeThenFix,
    ),
    (
        "demo_xss_php_guestbook",
        "php-guestbook",
        "lib/render.php",
        Act::Fix,
    ),
    (
        "demo_pathtrav_php_guestbook",
        "php-guestbook",
        "lib/attachments.php",
        Act::Nothing,
    ),
    (
        "demo_cmdi_go_netdiag",
        "go-netdiag",
        "diag/ping.go",
        Act::Original,
    ),
    (
        "demo_sqli_go_netdiag",
        "go-netdiag",
        "store/hosts.go",
        Act::Original,
    ),
    (
        "demo_xss_js_notes",
        "js-notes",
        "lib/render.js",
        Act::Original,
    ),
    (
        "demo_pathtrav_js_notes",
        "js-notes",
        "lib/files.js",
        Act::Fix,
    ),
];

const V2_TASKS: &[(&str, &str, &str, Act)] = &[
    (
        "demo_v2_pathtrav_py_docserver",
        "py-docserver",
        "docstore.py",
        Act::Fix,
    ),
    (
        "demo_v2_cmdi_py_logstat",
        "py-logstat",
        "logstat.py",
        Act::Original,
    ),
];

/// A command that greps the container's file system for `needle`, with the needle split in
/// the command line so that the command itself (in the agent's memory) never matches.
fn grep_fs(label: &str, needle: &str) -> String {
    let mid = needle.len() / 2;
    let mut cut = mid;
    while !needle.is_char_boundary(cut) {
        cut += 1;
    }
    format!(
        "A={}; B={}; for d in /workspace /ase-agent /tmp /etc /root /opt /usr /bin /var; do \
         [ -e \"$d\" ] && grep -rlF -- \"$A$B\" \"$d\" 2>/dev/null; done; echo {label}-scan-done",
        sh_quote(&needle[..cut]),
        sh_quote(&needle[cut..])
    )
}

/// The masked block's most telling line that the fix does not also have.
fn original_line(dir: &str, file: &str, lines: (usize, usize)) -> String {
    let base = demo_file(dir, "base", file);
    let fix = demo_file(dir, "fix", file);
    let block: Vec<&str> = base
        .lines()
        .skip(lines.0 - 1)
        .take(lines.1 - lines.0 + 1)
        .collect();
    let line = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| !fix.contains(*l))
        .max_by_key(|l| l.len())
        .unwrap_or_else(|| panic!("no line of {file}'s block is absent from the fix"));
    assert!(line.len() > 15, "{line:?}");
    line.to_string()
}

fn docker_bridge_gateway() -> String {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .output()
        .unwrap();
    let gw = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if gw.is_empty() {
        "172.17.0.1".into()
    } else {
        gw
    }
}

fn units(report_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(report_dir.join("units.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", report_dir.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn mini_swe_agent_runs_the_demo_in_a_sealed_sandbox_and_scores_as_scripted() {
    if !agent_image_or_skip() {
        return;
    }
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let demo = ase_demo::materialise(&tmp.path().join("demo")).unwrap();
    let key = format!("sk-real-test-key-{:016x}", fastrand::u64(..));
    let model = ScriptedAgentModel::start();

    let tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&demo.v1_tasks).unwrap()).unwrap();
    let lines_of = |id: &str| -> (usize, usize) {
        let t = tasks.iter().find(|t| t["instance_id"] == id).unwrap();
        let l = t["vuln_lines"].as_array().unwrap();
        (
            l[0].as_u64().unwrap() as usize,
            l[1].as_u64().unwrap() as usize,
        )
    };
    let real_endpoint = model.base_url();
    let probe_line = original_line(
        "py-bookshelf",
        "backup.py",
        lines_of("demo_cmdi_py_bookshelf"),
    );
    let gateway = docker_bridge_gateway();
    let port = model.addr.port();
    for (id, dir, file, act) in TASKS.iter().chain(V2_TASKS) {
        let steps = match act {
            Act::Fix => vec![write_file(file, &demo_file(dir, "fix", file))],
            Act::Original => vec![write_file(file, &demo_file(dir, "base", file))],
            Act::Nothing => vec!["ls".into()],
            Act::ProbeThenFix => vec![
                "git log --all 2>&1; git show 2>&1; echo git-done".into(),
                "ls -la; ls -la /; echo ls-done".into(),
                grep_fs("block", &probe_line),
                grep_fs("key", &key),
                "env; echo env-done".into(),
                format!(
                    "python3 -c \"import urllib.request as u\nfor a in ['{real_endpoint}/models', \
                     'http://{gateway}:{port}/v1/models', 'http://1.1.1.1/', 'https://pypi.org/']:\n  \
                     try:\n    u.urlopen(a, timeout=5); print('REACHED', a)\n  \
                     except Exception as e: print('FAILED', a, type(e).__name__)\""
                ),
                write_file(file, &demo_file(dir, "fix", file)),
            ],
        };
        let _ = id;
        model.script(MODEL, file, steps);
    }
    // The hung agent: a command longer than its wall time.
    model.script(HUNG_MODEL, "db.py", vec!["sleep 600".into()]);
    let hung_tasks: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["instance_id"] == "demo_sqli_py_bookshelf")
        .collect();
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(
        run_dir.join("hung.json"),
        serde_json::to_vec(&hung_tasks).unwrap(),
    )
    .unwrap();
    let config = run_dir.join("ase.toml");
    std::fs::write(
        &config,
        format!(
            r#"[worker]
generate_slots = 2
eval_slots = 2
osemgrep = {osemgrep:?}
rules = {rules:?}
repo_url_template = {template:?}
docker = "on"

[[runs]]
model_name = "mini-swe-agent"
batch = "agent-v1"
dataset = {v1:?}
context = {v1c:?}
rounds = 1
[runs.model]
provider = "agent"
preset = "mini-swe-agent"
base_url = {base_url:?}
model = "{MODEL}"
api_key_env = "ASE_TEST_AGENT_KEY"
[runs.model.limits]
wall_secs = 300
max_turns = 12

[[runs]]
model_name = "mini-swe-agent"
batch = "agent-v2"
dataset = {v2:?}
rounds = 1
[runs.model]
provider = "agent"
preset = "mini-swe-agent"
base_url = {base_url:?}
model = "{MODEL}"
api_key_env = "ASE_TEST_AGENT_KEY"
[runs.model.limits]
wall_secs = 300
max_turns = 12

[[runs]]
model_name = "crash-agent"
batch = "agent-v1"
dataset = "hung.json"
rounds = 1
[runs.model]
provider = "agent"
preset = "mini-swe-agent"
command = ["sh", "-c", "echo agent-crashed-here >&2; exit 3"]
base_url = {base_url:?}
model = "unused"
api_key_env = "ASE_TEST_AGENT_KEY"

[[runs]]
model_name = "hung-agent"
batch = "agent-v1"
dataset = "hung.json"
rounds = 1
[runs.model]
provider = "agent"
preset = "mini-swe-agent"
base_url = {base_url:?}
model = "{HUNG_MODEL}"
api_key_env = "ASE_TEST_AGENT_KEY"
[runs.model.limits]
wall_secs = 20
"#,
            osemgrep = osemgrep.display().to_string(),
            rules = repo_root().join("rules").display().to_string(),
            template = demo.repo_url_template,
            v1 = demo.v1_tasks.display().to_string(),
            v1c = demo.v1_context.display().to_string(),
            v2 = demo.v2_tasks.display().to_string(),
            base_url = model.base_url(),
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let mut p = Proc::spawn(
        "ase run (agents)",
        &ase_bin(),
        &[
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--data".into(),
            data.display().to_string(),
        ],
        &[("ASE_LOG", "info"), ("ASE_TEST_AGENT_KEY", key.as_str())],
        tmp.path().join("run.log"),
    );
    let status = p
        .wait_exit(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("ase run did not end; log:\n{}", p.log_text()));
    assert!(
        status.success(),
        "ase run: {status}; log:\n{}\nstdout:\n{}",
        p.log_text(),
        p.stdout_text()
    );

    // Every unit's verdict is what its script did.
    let report_dir = data.join("results/mini-swe-agent__agent-v1");
    let rows = units(&report_dir);
    assert_eq!(rows.len(), TASKS.len(), "{rows:?}");
    for (id, _, _, act) in TASKS {
        let row = rows
            .iter()
            .find(|r| r["task"] == *id)
            .unwrap_or_else(|| panic!("no unit of {id}: {rows:?}"));
        let (verdict, cause) = match act {
            Act::Fix | Act::ProbeThenFix => ("secure", ""),
            Act::Original => ("vulnerable", ""),
            Act::Nothing => ("broken", "not_generated"),
        };
        assert_eq!(row["verdict"], verdict, "{id}: {row}");
        if !cause.is_empty() {
            assert!(
                row["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("the agent changed no file"),
                "{id}: {row}"
            );
        }
        // Calls through the proxy are the unit's: one per step plus the final one, each
        // with the server's 110 tokens.
        assert!(
            row["total_tokens"].as_u64().unwrap_or(0) >= 220,
            "{id}: {row}"
        );
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/expected/agent_v1_scores.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["scores"], expected, "scores of the agent run");

    // The real key reached the endpoint on every call; the agent only ever had its token.
    let requests = model.requests();
    assert!(
        requests.len() >= TASKS.len() * 2,
        "{} requests",
        requests.len()
    );
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {key}").as_str())
        );
    }

    // The report's Agent section counts exactly the calls the endpoint saw (none abandoned),
    // each unit's answered calls as its turns, and links each unit's transcript file.
    // (The v2 run's calls are counted with it below: the runs share the server and model.)
    let t = &report["agent"]["totals"];
    assert_eq!(t["units"], TASKS.len() as u64, "{t}");
    assert_eq!(t["turns"], t["model_calls"], "{t}");
    assert_eq!(t["abandoned_calls"], 0, "{t}");
    assert_eq!(t["all_calls"], t["model_calls"], "{t}");
    for row in report["agent"]["units"].as_array().unwrap() {
        let file = row["transcript"]
            .as_str()
            .unwrap_or_else(|| panic!("{row}"));
        let text = std::fs::read_to_string(report_dir.join(file)).unwrap();
        let calls = row["model_calls"].as_u64().unwrap();
        assert!(calls >= 2, "{row}");
        assert!(text.starts_with("=== call 1 POST"), "{row}: {text}");
    }
    for row in &rows {
        assert_eq!(row["agent_turns"], row["agent_model_calls"], "{row}");
        assert!(row["agent_wall_s"].as_f64().unwrap() > 0.0, "{row}");
    }

    // What the probing agent saw: the tool outputs of its last request.
    let last_probe = requests
        .iter()
        .filter(|r| r.model == MODEL && r.file.as_deref() == Some("backup.py"))
        .max_by_key(|r| tool_outputs(&r.body).len())
        .expect("the probing agent's requests");
    let seen = tool_outputs(&last_probe.body).join("\n");
    for marker in [
        "git-done",
        "ls-done",
        "block-scan-done",
        "key-scan-done",
        "env-done",
        "FAILED",
    ] {
        assert!(
            seen.contains(marker),
            "{marker} not in what the agent saw:\n{seen}"
        );
    }
    assert!(
        !seen.contains(&probe_line),
        "the original block leaked:\n{seen}"
    );
    assert!(!seen.contains(&key), "the real key leaked:\n{seen}");
    assert!(
        !seen.contains("REACHED"),
        "an address but the proxy answered:\n{seen}"
    );
    assert_eq!(seen.matches("FAILED").count(), 4, "{seen}");
    assert!(
        !seen.lines().any(|l| l.trim_end().ends_with(" .git")),
        "the workspace has a .git:\n{seen}"
    );
    assert!(
        seen.contains("not found") || seen.contains("not a git repository"),
        "git found a history:\n{seen}"
    );
    // Nor did any request of any agent carry the key or the original block.
    for r in &requests {
        let body = r.body.to_string();
        assert!(!body.contains(&key));
    }

    // The hung agent was killed at its wall time: a failed generation with the reason.
    let hung = units(&data.join("results/hung-agent__agent-v1"));
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert_eq!(hung[0]["verdict"], "broken", "{}", hung[0]);
    assert!(
        hung[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("killed at its time limit of 20 s"),
        "{}",
        hung[0]
    );

    // The agent that crashed: a failed generation with its exit code and output tail.
    let crashed = units(&data.join("results/crash-agent__agent-v1"));
    assert_eq!(crashed.len(), 1, "{crashed:?}");
    let reason = crashed[0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("exited with code 3") && reason.contains("agent-crashed-here"),
        "{}",
        crashed[0]
    );

    // v2: the agents' files evaluated in the task's image, as an LLM's answer is.
    let v2_dir = data.join("results/mini-swe-agent__agent-v2");
    let v2 = units(&v2_dir);
    assert_eq!(v2.len(), V2_TASKS.len(), "{v2:?}");
    for (id, _, _, act) in V2_TASKS {
        let row = v2.iter().find(|r| r["task"] == *id).unwrap();
        let want = if *act == Act::Fix {
            "secure"
        } else {
            "vulnerable"
        };
        assert_eq!(row["verdict"], want, "{id}: {row}");
    }
    let v2_report: Value =
        serde_json::from_slice(&std::fs::read(v2_dir.join("report.json")).unwrap()).unwrap();
    let v2_expected: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/expected/agent_v2_scores.json")).unwrap(),
    )
    .unwrap();
    for (field, want) in v2_expected.as_object().unwrap() {
        assert_eq!(&v2_report["scores"]["all"][field], want, "v2 all.{field}");
    }
    // The two runs' Agent sections together count every call the server saw for their model.
    let calls = |r: &Value| r["agent"]["totals"]["all_calls"].as_u64().unwrap();
    let seen = requests.iter().filter(|r| r.model == MODEL).count() as u64;
    assert_eq!(
        calls(&report) + calls(&v2_report),
        seen,
        "calls of the v1 and v2 runs"
    );

    // No agent container is left behind.
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=ase.role=agent",
            "--filter",
            "label=ase.run=mini-swe-agent__agent-v1",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty());
}
