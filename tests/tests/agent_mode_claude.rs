//! Agent mode with Claude Code, end to end: `ase run` (embedded coordinator, local worker) with
//! the `agent` provider, preset `claude-code` (the real Claude Code CLI that PyPI's
//! claude-agent-sdk bundles, in the image `deploy/images/build.sh agent-claude` builds), one
//! real container per unit on the worker's internal network, run as its preset says (`claude -p`,
//! `--permission-mode bypassPermissions`, `--max-turns`), its model reached only through the
//! worker's proxy, which forwards to the test's scripted Anthropic Messages API server (streamed
//! server-sent events, `tool_use` blocks of Claude Code's own Bash, Read, Write and Edit tools).
//!
//! - The demo's v1 tasks, 1 round, the same acts as `agent_mode.rs` (so the same expected
//!   scores): the scripted agents read and rewrite the file with the fix for some tasks, put the
//!   vulnerable code back for others (with Edit, replacing the mask line by the original block,
//!   or with a Bash here-document), change nothing for one; the scores equal
//!   `tests/expected/agent_v1_scores.json` and every unit's verdict is the script's. The v2
//!   tasks likewise (`tests/expected/agent_v2_scores.json`).
//! - The proxy counted every call: each unit's tokens are exactly the scripted server's tokens
//!   per answer times the calls it received for that task, one per step plus the last.
//! - Every call reached the endpoint with the real key (the agent had its unit token only),
//!   `anthropic-version`, streaming on, Claude Code's tools offered.
//! - Leak test: one agent runs `git`, lists the workspace, greps the container for the original
//!   block and the real key, prints its environment and tries to connect to the real endpoint,
//!   the host and public addresses: what it saw holds none of them, every connection failed.
//!
//! Needs Docker, the Claude Code image, the demo's v2 images, osemgrep and `cargo build -p ase`
//! (skipped outside CI).

use ase_cluster_tests::agent_model::{demo_file, sh_quote, write_file};
use ase_cluster_tests::anthropic_agent_model::{
    claude_image_or_skip, tool_outputs, ScriptedAnthropicModel, ToolStep, INPUT_TOKENS,
    OUTPUT_TOKENS,
};
use ase_cluster_tests::{ase_bin, repo_root, support, Proc};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(1500);
const MODEL: &str = "scripted-claude";
const MASK: &str = "<MASKED>";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Act {
    /// Read the file, Write the fix.
    Fix,
    /// Read the file, Edit: the mask line becomes the original block.
    OriginalByEdit,
    /// A Bash here-document with the original file.
    OriginalByBash,
    /// Bash `ls`, nothing changed.
    Nothing,
    /// Probes (git, ls, grep, env, connections), then Fix.
    ProbeThenFix,
}

/// (task, repo dir, vuln_file, what the scripted agent does)
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
        Act::OriginalByEdit,
    ),
    (
        "demo_sqli_go_netdiag",
        "go-netdiag",
        "store/hosts.go",
        Act::OriginalByBash,
    ),
    (
        "demo_xss_js_notes",
        "js-notes",
        "lib/render.js",
        Act::OriginalByEdit,
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
        Act::OriginalByEdit,
    ),
];

/// A command that greps the container's file system for `needle`, with the needle split in
/// the command line so that the command itself (in the agent's memory) never matches.
fn grep_fs(label: &str, needle: &str) -> String {
    let mut cut = needle.len() / 2;
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

/// The lines `lines` (1-based, inclusive) of the demo's base file: the block the mask replaced.
fn base_block(dir: &str, file: &str, lines: (usize, usize)) -> String {
    let base = demo_file(dir, "base", file);
    base.split('\n')
        .skip(lines.0 - 1)
        .take(lines.1 - lines.0 + 1)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The block's most telling line that the fix does not also have.
fn original_line(dir: &str, file: &str, lines: (usize, usize)) -> String {
    let fix = demo_file(dir, "fix", file);
    let block = base_block(dir, file, lines);
    let line = block
        .lines()
        .map(str::trim)
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

fn lines_of(tasks: &[Value], id: &str) -> (usize, usize) {
    let t = tasks
        .iter()
        .find(|t| t["instance_id"] == id)
        .unwrap_or_else(|| panic!("no task {id}"));
    let l = t["vuln_lines"].as_array().unwrap();
    (
        l[0].as_u64().unwrap() as usize,
        l[1].as_u64().unwrap() as usize,
    )
}

/// The scripted steps of one task.
fn steps(
    act: Act,
    dir: &str,
    file: &str,
    lines: (usize, usize),
    probes: &[String],
) -> Vec<ToolStep> {
    let fix = || {
        vec![
            ToolStep::Read(file.to_string()),
            ToolStep::Write {
                file: file.to_string(),
                content: demo_file(dir, "fix", file),
            },
        ]
    };
    match act {
        Act::Fix => fix(),
        Act::OriginalByEdit => {
            // The mask line keeps the block's first indentation: the block goes in after it.
            let block = base_block(dir, file, lines);
            let new = block.trim_start_matches([' ', '\t']).to_string();
            vec![
                ToolStep::Read(file.to_string()),
                ToolStep::Edit {
                    file: file.to_string(),
                    old: MASK.to_string(),
                    new,
                },
            ]
        }
        Act::OriginalByBash => vec![ToolStep::Bash(write_file(
            file,
            &demo_file(dir, "base", file),
        ))],
        Act::Nothing => vec![ToolStep::Bash("ls".into())],
        Act::ProbeThenFix => probes
            .iter()
            .cloned()
            .map(ToolStep::Bash)
            .chain(fix())
            .collect(),
    }
}

#[test]
fn claude_code_runs_the_demo_in_a_sealed_sandbox_and_scores_as_scripted() {
    if !claude_image_or_skip() {
        return;
    }
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let demo = ase_demo::materialise(&tmp.path().join("demo")).unwrap();
    let key = format!("sk-ant-real-test-key-{:016x}", fastrand::u64(..));
    let model = ScriptedAnthropicModel::start();

    let tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&demo.v1_tasks).unwrap()).unwrap();
    let v2_tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&demo.v2_tasks).unwrap()).unwrap();
    let probe_line = original_line(
        "py-bookshelf",
        "backup.py",
        lines_of(&tasks, "demo_cmdi_py_bookshelf"),
    );
    let gateway = docker_bridge_gateway();
    let port = model.addr.port();
    let probes = vec![
        "git log --all 2>&1; git show 2>&1; echo git-done".to_string(),
        "ls -la; ls -la /; echo ls-done".into(),
        grep_fs("block", &probe_line),
        grep_fs("key", &key),
        "env; echo env-done".into(),
        // bash's /dev/tcp: the image has no other client; each attempt ends within 5 s.
        format!(
            "for a in 127.0.0.1:{port} {gateway}:{port} 1.1.1.1:80 151.101.0.223:443; do \
             if timeout 5 bash -c \"echo > /dev/tcp/${{a%:*}}/${{a#*:}}\" 2>/dev/null; \
             then echo REACHED $a; else echo FAILED $a; fi; done"
        ),
    ];
    let mut expected_calls: Vec<(&str, &str, usize)> = Vec::new();
    for (id, dir, file, act) in TASKS.iter().chain(V2_TASKS) {
        let lines = if id.starts_with("demo_v2_") {
            lines_of(&v2_tasks, id)
        } else {
            lines_of(&tasks, id)
        };
        let script = steps(*act, dir, file, lines, &probes);
        // One call per step, and the one whose answer ends the run.
        expected_calls.push((id, file, script.len() + 1));
        model.script(MODEL, file, script);
    }
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
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
model_name = "claude-code"
batch = "agent-v1"
dataset = {v1:?}
context = {v1c:?}
rounds = 1
[runs.model]
provider = "agent"
preset = "claude-code"
base_url = {base_url:?}
model = "{MODEL}"
api_key_env = "ASE_TEST_AGENT_KEY"
[runs.model.limits]
wall_secs = 300
max_turns = 12

[[runs]]
model_name = "claude-code"
batch = "agent-v2"
dataset = {v2:?}
rounds = 1
[runs.model]
provider = "agent"
preset = "claude-code"
base_url = {base_url:?}
model = "{MODEL}"
api_key_env = "ASE_TEST_AGENT_KEY"
[runs.model.limits]
wall_secs = 300
max_turns = 12
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
        "ase run (claude code)",
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
    let requests = model.requests();

    // Every unit's verdict is what its script did, and its tokens are the calls the scripted
    // server answered for it, as the proxy counted them.
    let report_dir = data.join("results/claude-code__agent-v1");
    let v2_dir = data.join("results/claude-code__agent-v2");
    let rows = units(&report_dir);
    let v2_rows = units(&v2_dir);
    assert_eq!(rows.len(), TASKS.len(), "{rows:?}");
    assert_eq!(v2_rows.len(), V2_TASKS.len(), "{v2_rows:?}");
    for (id, _, file, act) in TASKS.iter().chain(V2_TASKS) {
        let row = rows
            .iter()
            .chain(&v2_rows)
            .find(|r| r["task"] == *id)
            .unwrap_or_else(|| panic!("no unit of {id}: {rows:?} {v2_rows:?}"));
        let verdict = match act {
            Act::Fix | Act::ProbeThenFix => "secure",
            Act::OriginalByEdit | Act::OriginalByBash => "vulnerable",
            Act::Nothing => "broken",
        };
        assert_eq!(row["verdict"], verdict, "{id}: {row}");
        if *act == Act::Nothing {
            assert!(
                row["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("the agent changed no file"),
                "{id}: {row}"
            );
        }
        let calls = requests
            .iter()
            .filter(|r| r.file.as_deref() == Some(*file) && !r.path.contains("count_tokens"))
            .count() as u64;
        let want = expected_calls
            .iter()
            .find(|(t, _, _)| t == id)
            .map(|(_, _, n)| *n as u64)
            .unwrap();
        assert_eq!(calls, want, "{id}: calls the scripted server answered");
        assert_eq!(
            row["prompt_tokens"].as_u64(),
            Some(INPUT_TOKENS * calls),
            "{id}: {row}"
        );
        assert_eq!(
            row["completion_tokens"].as_u64(),
            Some(OUTPUT_TOKENS * calls),
            "{id}: {row}"
        );
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/expected/agent_v1_scores.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["scores"], expected, "scores of the Claude Code run");
    let v2_report: Value =
        serde_json::from_slice(&std::fs::read(v2_dir.join("report.json")).unwrap()).unwrap();
    let v2_expected: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/expected/agent_v2_scores.json")).unwrap(),
    )
    .unwrap();
    for (field, want) in v2_expected.as_object().unwrap() {
        assert_eq!(&v2_report["scores"]["all"][field], want, "v2 all.{field}");
    }

    // Claude Code's calls, as they reached the endpoint through the proxy.
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.api_key.as_deref(), Some(key.as_str()), "{}", r.path);
        assert!(r.anthropic_version.is_some(), "{}", r.path);
        assert!(r.path.starts_with("/v1/messages"), "{}", r.path);
        assert_eq!(r.model, MODEL);
        assert!(r.stream, "Claude Code streams: {}", r.path);
        for tool in ["Bash", "Read", "Write", "Edit"] {
            assert!(r.tools.iter().any(|t| t == tool), "{tool}: {:?}", r.tools);
        }
        assert!(!r.body.to_string().contains(&key));
    }

    // What the probing agent saw: the tool outputs of its last request.
    let last_probe = requests
        .iter()
        .filter(|r| r.file.as_deref() == Some("backup.py"))
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
        seen.contains("ANTHROPIC_API_KEY=ase-unit-"),
        "the agent's key is its unit token:\n{seen}"
    );
    assert!(
        !seen.contains("REACHED"),
        "a connection got through:\n{seen}"
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

    // No agent container is left behind.
    for run in ["claude-code__agent-v1", "claude-code__agent-v2"] {
        let left = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                "label=ase.role=agent",
                "--filter",
                &format!("label=ase.run={run}"),
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&left.stdout).trim().is_empty(),
            "{run}"
        );
    }
}
