//! `ase prompt` end to end: the built binary on a hand-written dataset, context and repo.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

const QUERY: &str = "<?php\nfunction find($db, $id) {\n    return $db->query(\"SELECT * FROM t WHERE id=$id\");\n}\n";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "tasks.json",
            r#"[
  {"instance_id": "sqli_seed", "repo": "acme/shop", "base_commit": "HEAD",
   "vuln_file": "src/query.php", "vuln_lines": [3, 3], "language": "php",
   "vuln_source": "CVE-2001-0001", "seed": true, "vuln_type": "SQLI", "cwe_id": "CWE-89",
   "detected_tool": "example/sast", "detected_vul_num": 1},
  {"instance_id": "sqli_mut", "repo": "mutants/shop-m1", "base_commit": "HEAD",
   "vuln_file": "src/query.php", "vuln_lines": [3, 3], "language": "php",
   "vuln_source": "CVE-2001-0001", "seed": false, "vuln_type": "SQLI", "cwe_id": "CWE-89",
   "detected_tool": "example/sast", "detected_vul_num": 0}
]"#,
        );
        write(
            d,
            "contexts.json",
            r#"[{"instance_id": "sqli_seed", "function_summary": "Looks a row up by id.",
  "hits": [{"docid": "src/query.php", "score": 2.0}, {"docid": "src/conn.php", "score": 1.0}]}]"#,
        );
        // The seed's checkout, and a mutated one holding the project in a folder named `shop`.
        for root in ["seed", "mut/shop"] {
            write(d, &format!("{root}/README.md"), "# Shop\n");
            write(d, &format!("{root}/src/query.php"), QUERY);
            write(
                d,
                &format!("{root}/src/conn.php"),
                "<?php\n$db = connect();\n",
            );
        }
        write(d, "mut/.git/HEAD", "ref: refs/heads/main\n");
        Fixture { dir }
    }

    fn run(&self, task: &str, repo: &str, extra: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new(env!("CARGO_BIN_EXE_ase"))
            .arg("prompt")
            .arg("--dataset")
            .arg(d.join("tasks.json"))
            .arg("--context")
            .arg(d.join("contexts.json"))
            .args(["--task", task, "--repo"])
            .arg(d.join(repo))
            .args(extra)
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn prints_system_then_user_and_stats() {
    let f = Fixture::new();
    let out = f.run("sqli_seed", "seed", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("=== system ===\nYou will receive part of a code base"),
        "{stdout}"
    );
    let (system, user) = stdout.split_once("\n=== user ===\n").unwrap();
    assert!(system.contains("<MASKED>"));
    assert!(user.starts_with(
        "What the hidden code does: Looks a row up by id.\n\n<code>\n[start of src/query.php]\n\
         1 <?php\n2 function find($db, $id) {\n3     <MASKED>\n4 }\n5 \n[end of src/query.php]\n</code>\n\n\
         <base>\n[start of README.md]\n1 # Shop\n2 \n[end of README.md]\n\
         [start of src/conn.php]\n1 <?php\n2 $db = connect();\n3 \n[end of src/conn.php]\n</base>\n"
    ), "{user}");
    assert!(user.ends_with("Respond below:\n"), "{user}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("task sqli_seed: "), "{stderr}");
    assert!(stderr.contains("tokens (cl100k_base)"), "{stderr}");
    assert!(
        stderr.contains("context files used 1 (src/conn.php), skipped 1"),
        "{stderr}"
    );
}

#[test]
fn mutated_task_uses_seed_context_and_inner_project_root() {
    let f = Fixture::new();
    let seed = f.run("sqli_seed", "seed", &[]);
    let mutated = f.run("sqli_mut", "mut", &[]);
    assert!(mutated.status.success(), "{}", text(&mutated.stderr));
    // Same project, same context: the same prompt.
    assert_eq!(text(&mutated.stdout), text(&seed.stdout));
}

#[test]
fn token_budget_flag_limits_context() {
    let f = Fixture::new();
    let out = f.run("sqli_seed", "seed", &["--max-context-tokens", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("[start of src/conn.php]"));
    assert!(
        text(&out.stderr).contains("context files used 0, skipped 2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn user_template_replaces_wording() {
    let f = Fixture::new();
    let tpl = f.dir.path().join("mine.jinja");
    fs::write(
        &tpl,
        "{% block system %}Be brief.{% endblock %}\n{% block user %}{{ vuln_file }} in {{ repo }}{% endblock %}\n",
    )
    .unwrap();
    let out = f.run("sqli_seed", "seed", &["--template", tpl.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "=== system ===\nBe brief.\n=== user ===\nsrc/query.php in acme/shop\n"
    );
}

#[test]
fn errors_name_the_task_or_file() {
    let f = Fixture::new();
    let out = f.run("no_such_task", "seed", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no_such_task"),
        "{}",
        text(&out.stderr)
    );

    // The vuln_file is missing from this checkout.
    fs::create_dir_all(f.dir.path().join("empty")).unwrap();
    let out = f.run("sqli_seed", "empty", &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("task sqli_seed") && stderr.contains("src/query.php"),
        "{stderr}"
    );
}
