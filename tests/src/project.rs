//! The project the cluster tests run on: a tiny PHP application in a local git repository
//! (deterministic commits), one SQL injection per module file, and the v1 tasks and contexts
//! that point at them. Workers clone it through a `file://` URL template.

use ase_common::dataset::{ContextHit, LineRange, StaticSpec, Task, TaskContext, TaskSpec};
use ase_common::prompt::masking::mask;
use ase_worker::model::reference::patch_answer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `owner/name` of the project; the URL template maps it under [`Project::src`].
pub const REPO: &str = "local/shop";
/// Lines of the injected block in every module file (1-based, inclusive).
const VULN_LINES: LineRange = LineRange { start: 4, end: 5 };

/// One task of the fixture: its module file and the function whose body is masked. The
/// function name is what the model server recognises a prompt by.
#[derive(Debug, Clone)]
pub struct TaskFixture {
    pub instance_id: String,
    pub file: String,
    pub function: String,
    pub table: String,
    /// The answer that fixes the injection: a `<patch>` against the masked file.
    pub fix_answer: String,
}

fn module_source(function: &str, table: &str) -> String {
    format!(
        "<?php
function {function}($conn, $name)
{{
    $sql = \"SELECT * FROM {table} WHERE name = '\" . $name . \"'\";
    return mysqli_query($conn, $sql);
}}

function count_{table}($conn)
{{
    return mysqli_query($conn, \"SELECT COUNT(*) FROM {table}\");
}}
"
    )
}

fn fixed_block(table: &str) -> String {
    format!(
        "    $stmt = $conn->prepare(\"SELECT * FROM {table} WHERE name = ?\");
    $stmt->execute(array($name));
    return $stmt->fetchAll();"
    )
}

/// The git project and its tasks.
pub struct Project {
    /// Root under which `{repo}` resolves (the repo is at `src/local/shop`).
    pub src: PathBuf,
    pub tasks: Vec<TaskFixture>,
    pub base_commit: String,
}

impl Project {
    /// Creates the repository under `dir/src/local/shop` with `n_tasks` (>= 1) module files.
    pub fn create(dir: &Path, n_tasks: usize) -> Project {
        assert!(n_tasks >= 1);
        let src = dir.join("src");
        let repo = src.join(REPO);
        std::fs::create_dir_all(repo.join("lib")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "# shop\nA tiny shop.\n").unwrap();
        std::fs::write(
            repo.join("lib/db.php"),
            "<?php\nfunction db_connect() { return mysqli_connect('localhost'); }\n",
        )
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..n_tasks {
            let table = format!("items{i}");
            let function = format!("find_item{i}");
            let file = format!("module{i}.php");
            let text = module_source(&function, &table);
            std::fs::write(repo.join(&file), &text).unwrap();
            let instance_id = format!("shop_sqli_{i}");
            let masked = mask(&instance_id, &file, &text, VULN_LINES).expect("mask the fixture");
            tasks.push(TaskFixture {
                fix_answer: patch_answer(&file, &masked, &fixed_block(&table)),
                instance_id,
                file,
                function,
                table,
            });
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "shop"]);
        git(&repo, &["tag", "v1.0"]);
        let base_commit = git(&repo, &["rev-parse", "HEAD"]);
        Project {
            src,
            tasks,
            base_commit,
        }
    }

    /// `--repo-url-template` for workers on this host.
    pub fn url_template(&self) -> String {
        format!("file://{}/{{repo}}", self.src.display())
    }

    pub fn task(&self, t: &TaskFixture) -> Task {
        Task {
            instance_id: t.instance_id.clone(),
            repo: REPO.into(),
            base_commit: self.base_commit.clone(),
            vuln_file: t.file.clone(),
            vuln_lines: VULN_LINES,
            language: "php".into(),
            vuln_source: "CVE-0000-0001".into(),
            vuln_type: "SQLI".into(),
            cwe_id: "CWE-89".into(),
            spec: TaskSpec::V1(StaticSpec {
                seed: true,
                detected_tool: "aiseceval/ai_gen_code".into(),
                detected_vul_num: 1,
                patch_commit: None,
            }),
            extra: Default::default(),
        }
    }

    /// The v1 task file in upstream's layout (a JSON array; `vuln_lines` as `[start, end]`,
    /// the v1 fields flat).
    pub fn dataset_json(&self) -> Vec<u8> {
        let tasks: Vec<serde_json::Value> = self
            .tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "instance_id": t.instance_id,
                    "repo": REPO,
                    "base_commit": self.base_commit,
                    "vuln_file": t.file,
                    "vuln_lines": [VULN_LINES.start, VULN_LINES.end],
                    "language": "php",
                    "vuln_source": "CVE-0000-0001",
                    "seed": true,
                    "vuln_type": "SQLI",
                    "cwe_id": "CWE-89",
                    "detected_tool": "aiseceval/ai_gen_code",
                    "detected_vul_num": 1
                })
            })
            .collect();
        serde_json::to_vec_pretty(&tasks).unwrap()
    }

    /// The context file: each task retrieves the database helper and its own module.
    pub fn context_json(&self) -> Vec<u8> {
        let contexts: Vec<TaskContext> = self
            .tasks
            .iter()
            .map(|t| TaskContext {
                instance_id: t.instance_id.clone(),
                hits: vec![ContextHit {
                    docid: "lib/db.php".into(),
                    score: Some(1.0),
                    startline: None,
                    endline: None,
                }],
                function_summary: format!("{} looks a row up by name", t.function),
            })
            .collect();
        serde_json::to_vec_pretty(&contexts).unwrap()
    }

    /// Units of a run of `rounds` rounds.
    pub fn unit_names(&self, rounds: u32) -> Vec<String> {
        let mut v: Vec<String> = self
            .tasks
            .iter()
            .flat_map(|t| (1..=rounds).map(move |r| format!("{}_cycle{r}", t.instance_id)))
            .collect();
        v.sort();
        v
    }
}

/// git with a fixed identity and fixed dates, so that the fixture's commits are the same on
/// every run.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=fixture",
            "-c",
            "user.email=fixture@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
