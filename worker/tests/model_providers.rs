//! The providers that make no HTTP call: predictions file, reference (upstream fix), original.

use ase_common::dataset::{DynamicSpec, LineRange, StaticSpec, Task, TaskSpec};
use ase_common::prompt::masking::{mask, MaskedFile};
use ase_worker::model::predictions::PredictionsError;
use ase_worker::model::reference::{fixed_block, mask_diff, patch_answer};
use ase_worker::model::{
    ChatPrompt, FailureReason, InfraFailure, ModelFailure, ModelProvider, Predictions,
    RevisionReadError, RevisionReader, UnitInput,
};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn v2_task(id: &str, file: &str, lines: (usize, usize)) -> Task {
    Task {
        instance_id: id.into(),
        repo: "acme/shop".into(),
        base_commit: "1111111".into(),
        vuln_file: file.into(),
        vuln_lines: LineRange {
            start: lines.0,
            end: lines.1,
        },
        language: "python".into(),
        vuln_source: "CVE-2024-0001".into(),
        vuln_type: "Command Injection".into(),
        cwe_id: "CWE-78".into(),
        spec: TaskSpec::V2(DynamicSpec {
            patch_commit: Some("2222222".into()),
            severity: "high".into(),
            image: "img".into(),
            image_inner_path: "/src".into(),
            image_run_cmd: String::new(),
            image_status_check_cmd: "check".into(),
            test_case_cmd: "test".into(),
            poc_cmd: "poc".into(),
            privileged: false,
            other_vuln_files: vec![],
            branch_origin: None,
            timeouts: Default::default(),
        }),
        extra: Default::default(),
    }
}

fn v1_task(id: &str, file: &str, lines: (usize, usize)) -> Task {
    let mut t = v2_task(id, file, lines);
    t.language = "php".into();
    t.spec = TaskSpec::V1(StaticSpec {
        seed: true,
        detected_tool: "tool".into(),
        detected_vul_num: 1,
        patch_commit: None,
    });
    t
}

fn masked_of(task: &Task, content: &str) -> MaskedFile {
    mask(&task.instance_id, &task.vuln_file, content, task.vuln_lines).unwrap()
}

fn prompt() -> ChatPrompt {
    ChatPrompt {
        system: "s".into(),
        user: "u".into(),
    }
}

async fn run(
    provider: &ModelProvider,
    task: &Task,
    round: u32,
    masked: &MaskedFile,
) -> ase_worker::model::Generation {
    let p = prompt();
    provider
        .generate(&UnitInput {
            task,
            round,
            prompt: &p,
            masked,
        })
        .await
}

const VULN: &str = "import os\n\ndef ping(host):\n    os.system('ping ' + host)\n    return True\n";
const FIXED: &str =
    "import os\nimport shlex\n\ndef ping(host):\n    os.system('ping ' + shlex.quote(host))\n    return True\n";

// ---------------------------------------------------------------- predictions

#[tokio::test]
async fn predictions_answer_by_round_with_roundless_fallback() {
    let file = concat!(
        "{\"instance_id\": \"a\", \"round\": 2, \"answer\": \"A2\"}\n",
        "{\"instance_id\": \"a\", \"answer\": \"A-any\", \"model_name_or_path\": \"m\"}\r\n",
        "\n",
        "   \n",
        "{\"instance_id\": \"b\", \"model_patch\": \"--- a/x\\n+++ b/x\\n\"}\n",
        "{\"instance_id\": \"c\", \"round\": 1, \"answer\": null}\n",
        "{\"instance_id\": \"d\", \"round\": null, \"answer\": \"  \"}",
    );
    let p = Predictions::parse(Path::new("preds.jsonl"), file.as_bytes()).unwrap();
    assert_eq!(p.len(), 5);
    assert_eq!(p.get("a", 2), Some(Some("A2")));
    assert_eq!(p.get("a", 1), Some(Some("A-any")));
    assert_eq!(p.get("a", 3), Some(Some("A-any")));
    assert_eq!(p.get("b", 1), Some(Some("--- a/x\n+++ b/x\n")));
    assert_eq!(p.get("c", 1), Some(None));
    assert_eq!(p.get("c", 2), None);
    assert_eq!(p.get("zzz", 1), None);

    let provider = ModelProvider::Predictions(p);
    let t = v2_task("a", "app.py", (4, 4));
    let m = masked_of(&t, VULN);
    let g = run(&provider, &t, 2, &m).await;
    assert_eq!(g.answer.as_deref(), Some("A2"));
    assert_eq!(g.attempts, 0);

    let missing = run(&provider, &v2_task("nobody", "app.py", (4, 4)), 1, &m).await;
    assert_eq!(
        missing.failure,
        Some(FailureReason::Model(ModelFailure::NoPrediction))
    );
    assert_eq!(
        missing.failure.unwrap().to_string(),
        "failed generation: no prediction"
    );

    for (id, round) in [("c", 1), ("d", 1)] {
        let g = run(&provider, &v2_task(id, "app.py", (4, 4)), round, &m).await;
        assert!(
            matches!(
                g.failure,
                Some(FailureReason::Model(ModelFailure::EmptyContent { .. }))
            ),
            "{id}: {g:?}"
        );
    }
}

#[test]
fn predictions_errors_name_every_bad_line() {
    let mut file = String::new();
    file.push_str("{\"instance_id\": \"ok\", \"answer\": \"x\"}\n"); // 1
    file.push_str("{\"instance_id\": \"ok2\", \"answer\": \"x\"\n"); // 2 truncated JSON
    file.push_str("[1, 2]\n"); // 3
    file.push_str("{\"answer\": \"x\"}\n"); // 4
    file.push_str("{\"instance_id\": \"r\", \"round\": 0, \"answer\": \"x\"}\n"); // 5
    file.push_str("{\"instance_id\": \"r\", \"round\": \"2\", \"answer\": \"x\"}\n"); // 6
    file.push_str("{\"instance_id\": \"both\", \"answer\": \"x\", \"model_patch\": \"y\"}\n"); // 7
    file.push_str("{\"instance_id\": \"none\"}\n"); // 8
    file.push_str("{\"instance_id\": \"ok\", \"answer\": \"again\"}\n"); // 9
    file.push_str("{\"instance_id\": \"num\", \"answer\": 5}\n"); // 10
    let mut bytes = file.into_bytes();
    bytes.extend_from_slice(b"{\"instance_id\": \"\xff\"}\n"); // 11
    let err = Predictions::parse(Path::new("/data/preds.jsonl"), &bytes).unwrap_err();
    let PredictionsError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let text = err.to_string();
    assert!(text.contains("/data/preds.jsonl"), "{text}");
    assert!(text.contains("line 2: not JSON"), "{text}");
    assert!(text.contains("line 4: missing `instance_id`"), "{text}");
    assert!(
        text.contains("line 5: instance_id \"r\": `round` must be an integer >= 1"),
        "{text}"
    );
    assert!(
        text.contains("line 7: instance_id \"both\": both `answer` and `model_patch`"),
        "{text}"
    );
    assert!(
        text.contains("line 9: instance_id \"ok\" (all rounds) was already given on line 1"),
        "{text}"
    );
    assert!(text.contains("line 11: not valid UTF-8"), "{text}");
}

#[test]
fn predictions_load_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.jsonl");
    std::fs::write(
        &path,
        "\u{feff}{\"instance_id\": \"a\", \"answer\": \"x\"}\n",
    )
    .unwrap();
    let p = Predictions::load(&path).unwrap();
    assert_eq!(p.get("a", 1), Some(Some("x")));
    assert_eq!(p.path(), path);
    let err = Predictions::load(&dir.path().join("missing.jsonl")).unwrap_err();
    assert!(matches!(err, PredictionsError::Io { .. }));
    assert!(err.to_string().contains("missing.jsonl"));
}

// ---------------------------------------------------------------- original

#[tokio::test]
async fn original_v2_answer_is_the_hidden_block_in_a_fence() {
    let t = v2_task("t1", "app.py", (4, 4));
    let m = masked_of(&t, VULN);
    let g = run(&ModelProvider::Original, &t, 1, &m).await;
    assert_eq!(
        g.answer.as_deref(),
        Some("```python\n    os.system('ping ' + host)\n```\n")
    );
}

/// Apply `diff` with `git apply` (as upstream's first attempt does) to a tree holding `path`
/// with `content`, and return the result.
fn git_apply(path: &str, content: &str, diff: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, content).unwrap();
    let patch = dir.path().join("answer.diff");
    std::fs::write(&patch, diff).unwrap();
    let out = Command::new("git")
        .args(["apply", "--verbose", "answer.diff"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git apply failed: {}\n{diff}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&file).unwrap()
}

/// The body of the first `<patch>` tag, as upstream's extractor takes it.
fn patch_body(answer: &str) -> &str {
    let start = answer.find("<patch>").unwrap() + "<patch>".len();
    let end = answer[start..].find("</patch>").unwrap() + start;
    &answer[start..end]
}

#[tokio::test]
async fn original_v1_patch_restores_the_file_with_git_apply() {
    let cases: &[(&str, (usize, usize))] = &[
        (VULN, (4, 4)),
        (VULN, (1, 1)),
        (VULN, (3, 5)),
        (
            "<?php\r\n$a = $_GET['a'];\r\necho \"<b>$a</b>\";\r\n?>\r\n",
            (2, 3),
        ),
        ("a\nb\nlast line without newline", (3, 3)),
        ("a\nb\nc\nd\ne\nf\ng\nh\ni", (2, 8)),
        ("only", (1, 1)),
    ];
    for (content, lines) in cases {
        let t = v1_task("v1", "web/index.php", *lines);
        let m = masked_of(&t, content);
        let g = run(&ModelProvider::Original, &t, 1, &m).await;
        let answer = g.answer.unwrap();
        assert!(
            answer.starts_with("<patch>\n--- a/web/index.php\n"),
            "{answer}"
        );
        assert_eq!(
            git_apply(&t.vuln_file, &m.text, patch_body(&answer)),
            *content
        );
    }
}

/// The deletion probe's patch applies with `git apply` and leaves the file without its block.
#[tokio::test]
async fn deletion_v1_patch_removes_the_block_with_git_apply() {
    let t = v1_task("v1", "web/index.php", (2, 3));
    let content = "<?php\n$a = $_GET['a'];\necho \"<b>$a</b>\";\n?>\n";
    let m = masked_of(&t, content);
    let g = run(&ModelProvider::Deletion, &t, 1, &m).await;
    assert_eq!(ModelProvider::Deletion.kind(), "deletion");
    let answer = g.answer.unwrap();
    let applied = git_apply(&t.vuln_file, &m.text, patch_body(&answer));
    assert_eq!(applied, "<?php\n\n?>\n", "{answer}");
}

// ---------------------------------------------------------------- reference

struct FakeRepo {
    files: HashMap<(String, String), String>,
    fail: bool,
}

impl RevisionReader for FakeRepo {
    fn read_file(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
    ) -> Result<Option<String>, RevisionReadError> {
        if self.fail {
            return Err(RevisionReadError {
                repo: repo.into(),
                revision: revision.into(),
                path: path.into(),
                detail: "mirror unreachable".into(),
            });
        }
        assert_eq!(repo, "acme/shop");
        Ok(self
            .files
            .get(&(revision.to_string(), path.to_string()))
            .cloned())
    }
}

fn reader(fail: bool) -> Arc<dyn RevisionReader> {
    let mut files = HashMap::new();
    files.insert(
        ("2222222".to_string(), "app.py".to_string()),
        FIXED.to_string(),
    );
    Arc::new(FakeRepo { files, fail })
}

#[tokio::test]
async fn reference_v2_answer_is_the_fixed_block() {
    let t = v2_task("t1", "app.py", (4, 4));
    let m = masked_of(&t, VULN);
    let g = run(&ModelProvider::Reference(reader(false)), &t, 1, &m).await;
    assert_eq!(
        g.answer.as_deref(),
        Some("```python\n    os.system('ping ' + shlex.quote(host))\n```\n")
    );
}

#[tokio::test]
async fn reference_failures_are_typed() {
    let m = masked_of(&v2_task("t", "app.py", (4, 4)), VULN);
    // The file is gone at patch_commit: nothing to answer with, scored.
    let t = v2_task("t-gone", "gone.py", (4, 4));
    let g = run(&ModelProvider::Reference(reader(false)), &t, 1, &m).await;
    match g.failure.unwrap() {
        FailureReason::Model(ModelFailure::NoReference { detail }) => {
            assert!(
                detail.contains("t-gone") && detail.contains("gone.py"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A v1 task with a plain base has no fix commit, nor has a v2 task without patch_commit
    // and a plain base.
    let mut no_fix = v2_task("t-nofix", "app.py", (4, 4));
    if let TaskSpec::V2(spec) = &mut no_fix.spec {
        spec.patch_commit = None;
    }
    for t in [v1_task("t-v1", "app.py", (4, 4)), no_fix] {
        let g = run(&ModelProvider::Reference(reader(false)), &t, 1, &m).await;
        assert!(
            matches!(
                g.failure,
                Some(FailureReason::Model(ModelFailure::NoReference { .. }))
            ),
            "{g:?}"
        );
    }
    // A `<sha>^` base with no patch_commit: the fix is `<sha>`, as upstream derives it.
    let mut derived = v2_task("t-derived", "app.py", (4, 4));
    derived.base_commit = "2222222^".into();
    if let TaskSpec::V2(spec) = &mut derived.spec {
        spec.patch_commit = None;
    }
    let g = run(&ModelProvider::Reference(reader(false)), &derived, 1, &m).await;
    assert!(g.is_success(), "{g:?}");
    // The repository could not be read: retry later, do not score.
    let t = v2_task("t-io", "app.py", (4, 4));
    let g = run(&ModelProvider::Reference(reader(true)), &t, 1, &m).await;
    let failure = g.failure.unwrap();
    assert!(failure.is_retryable());
    match failure {
        FailureReason::Infrastructure(InfraFailure::Repository { detail }) => {
            assert!(
                detail.contains("t-io") && detail.contains("mirror unreachable"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exact_fixed_blocks_rebuild_the_fixed_file() {
    // (original, fixed, masked lines)
    let cases: &[(&str, &str, (usize, usize))] = &[
        (VULN, "import os\n\ndef ping(host):\n    check(host)\n    os.system('ping ' + host)\n    return True\n", (4, 4)),
        ("a\nb\nc\nd\ne\n", "a\nb\nX\nY\nZ\ne\n", (3, 4)),
        ("a\r\nb\r\nc\r\n", "a\r\nbb\r\nc\r\n", (2, 2)),
        ("x\ny", "x\nz", (2, 2)),
    ];
    for (original, fixed, lines) in cases {
        let range = LineRange {
            start: lines.0,
            end: lines.1,
        };
        let m = mask("t", "f", original, range).unwrap();
        let fb = fixed_block(original, fixed, range);
        assert!(fb.exact(), "{original:?} -> {fixed:?}: {fb:?}");
        assert_eq!(m.replace_mask(&fb.block), *fixed);
        // And as a v1 answer, through git apply.
        let diff = mask_diff("src/f.txt", &m, &fb.block);
        assert_eq!(git_apply("src/f.txt", &m.text, &diff), *fixed);
        // Upstream keeps the line break after the opening tag; git apply does not mind it.
        assert_eq!(
            patch_body(&patch_answer("src/f.txt", &m, &fb.block)),
            format!("\n{diff}")
        );
    }
}
