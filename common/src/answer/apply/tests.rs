//! Tests of [`super`] over a temporary directory standing for the worker's unit tree.

use super::*;
use crate::dataset::LineRange;
use crate::prompt::masking::mask;
use std::fs;
use std::path::Path;

/// A project in a temporary directory; paths in `refused` are "outside", paths in `broken`
/// fail as a broken disk would. Records what was made private.
struct DirTree {
    dir: tempfile::TempDir,
    refused: BTreeSet<String>,
    broken: BTreeSet<String>,
    private: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DirError(String);

impl DirTree {
    fn new(files: &[(&str, &str)]) -> DirTree {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, text).unwrap();
        }
        DirTree {
            dir,
            refused: BTreeSet::new(),
            broken: BTreeSet::new(),
            private: Vec::new(),
        }
    }

    fn check(&self, rel: &str) -> Result<(), TreeError<DirError>> {
        if self.refused.contains(rel) {
            return Err(TreeError::Outside {
                path: format!("unit/{rel}"),
                source: DirError(format!("bad path {rel}")),
            });
        }
        if self.broken.contains(rel) {
            return Err(TreeError::Failed(DirError(format!("disk failed at {rel}"))));
        }
        Ok(())
    }

    fn text(&self, rel: &str) -> String {
        fs::read_to_string(self.dir.path().join(rel)).unwrap()
    }
}

impl AnswerTree for DirTree {
    type Error = DirError;

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn make_private(&mut self, rel: &str) -> Result<(), TreeError<DirError>> {
        self.check(rel)?;
        self.private.push(rel.to_string());
        Ok(())
    }

    fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), TreeError<DirError>> {
        self.check(rel)?;
        let full = self.dir.path().join(rel);
        fs::create_dir_all(full.parent().unwrap_or(Path::new("."))).unwrap();
        fs::write(full, data).map_err(|e| TreeError::Failed(DirError(e.to_string())))
    }
}

const FILE: &str = "1\n2\n3\n4\n5\n6\n7\n";
const CLEAN: &str = "```diff\n--- a/src/f\n+++ b/src/f\n@@ -4,3 +4,3 @@\n 4\n-5\n+five\n 6\n```\n";

fn v1(
    tree: &mut DirTree,
    answer: &str,
    opts: &ApplyOptions,
) -> Result<Applied, AnswerError<DirError>> {
    let masked = mask("t", "src/f", FILE, LineRange { start: 5, end: 5 }).unwrap();
    apply_answer(tree, DatasetVersion::V1, "src/f", &masked, answer, opts)
}

#[test]
fn a_v1_patch_is_applied_after_its_files_are_made_private() {
    let mut tree = DirTree::new(&[("src/f", FILE)]);
    let applied = v1(&mut tree, CLEAN, &ApplyOptions::default()).unwrap();
    assert_eq!(applied.outcome, Ok(ApplyMethod::GitApply));
    assert_eq!(applied.touched, BTreeSet::from(["src/f".to_string()]));
    assert_eq!(tree.private, ["src/f"]);
    assert_eq!(tree.text("src/f"), "1\n2\n3\n4\nfive\n6\n7\n");
}

#[test]
fn what_the_answer_did_wrong_is_a_refusal_with_its_reason() {
    let opts = ApplyOptions::default();
    let mut tree = DirTree::new(&[("src/f", FILE)]);
    let none = v1(&mut tree, " \n", &opts).unwrap();
    assert_eq!(none.outcome, Err(Refusal::NoPatch));
    assert_eq!(
        none.outcome.unwrap_err().to_string(),
        "no patch in the answer"
    );

    let escaping = "```diff\n--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n```\n";
    let rejected = v1(&mut tree, escaping, &opts).unwrap().outcome.unwrap_err();
    assert!(
        matches!(rejected, Refusal::PatchRejected(_)),
        "{rejected:?}"
    );
    assert!(
        rejected.to_string().starts_with("patch refused: "),
        "{rejected}"
    );

    tree.refused.insert("src/f".into());
    let outside = v1(&mut tree, CLEAN, &opts).unwrap().outcome.unwrap_err();
    assert_eq!(outside, Refusal::Outside("unit/src/f".into()));
    assert_eq!(
        outside.to_string(),
        "patch refused: path \"unit/src/f\" is not inside the tree"
    );
    tree.refused.clear();

    let small = ApplyOptions {
        max_snapshot_bytes: 4,
        ..ApplyOptions::default()
    };
    let too_large = v1(&mut tree, CLEAN, &small).unwrap().outcome.unwrap_err();
    assert_eq!(too_large, Refusal::SnapshotTooLarge { max_bytes: 4 });
    assert_eq!(
        too_large.to_string(),
        "patch refused: the files the patch names exceed the snapshot limit of 4 bytes"
    );
    assert_eq!(
        tree.text("src/f"),
        FILE,
        "a refused patch leaves the tree as it was"
    );

    let wrong =
        "```diff\n--- a/src/f\n+++ b/src/f\n@@ -1,2 +1,2 @@\n-nothing\n+like\n-this\n+file\n```\n";
    let fails = v1(&mut tree, wrong, &opts).unwrap().outcome.unwrap_err();
    assert_eq!(
        fails,
        Refusal::DoesNotApply(ApplyFailure::AllAttemptsFailed)
    );
    assert_eq!(
        fails.to_string(),
        "patch does not apply: {\"reason\":\"all_attempts_failed\"}"
    );
    assert_eq!(tree.text("src/f"), FILE);
}

#[test]
fn what_the_tree_did_wrong_is_an_error_not_a_refusal() {
    let mut tree = DirTree::new(&[("src/f", FILE)]);
    tree.broken.insert("src/f".into());
    let err = v1(&mut tree, CLEAN, &ApplyOptions::default()).unwrap_err();
    assert!(
        matches!(&err, AnswerError::Tree(TreeError::Failed(DirError(m))) if m == "disk failed at src/f"),
        "{err:?}"
    );
}

fn v2(tree: &mut DirTree, answer: &str) -> Result<Applied, AnswerError<DirError>> {
    let original = "def f(x):\n    return x\n\nprint(f(1))\n";
    let masked = mask("t", "app.py", original, LineRange { start: 2, end: 2 }).unwrap();
    tree.write("app.py", masked.text.as_bytes()).unwrap();
    apply_answer(
        tree,
        DatasetVersion::V2,
        "app.py",
        &masked,
        answer,
        &ApplyOptions::default(),
    )
}

#[test]
fn a_v2_answer_is_spliced_into_the_masked_file() {
    let mut tree = DirTree::new(&[]);
    let applied = v2(&mut tree, "```python\n    return x + 1\n```\n").unwrap();
    assert_eq!(applied.outcome, Ok(ApplyMethod::Splice));
    assert_eq!(applied.touched, BTreeSet::from(["app.py".to_string()]));
    assert_eq!(
        tree.text("app.py"),
        "def f(x):\n    return x + 1\n\nprint(f(1))\n"
    );
    assert!(
        tree.private.is_empty(),
        "a splice writes a new file, no tool writes in place"
    );
}

#[test]
fn a_v2_answer_without_code_or_that_cannot_be_spliced_is_refused() {
    let mut tree = DirTree::new(&[]);
    let none = v2(&mut tree, " \n\n").unwrap().outcome.unwrap_err();
    assert_eq!(none, Refusal::NoCode);
    assert_eq!(none.to_string(), "no code in the answer");

    let mut masked = mask("t", "app.py", "a\nb\nc\n", LineRange { start: 2, end: 2 }).unwrap();
    masked.mask_span = 0..1;
    let applied = apply_answer(
        &mut tree,
        DatasetVersion::V2,
        "app.py",
        &masked,
        "```python\nB\n```\n",
        &ApplyOptions::default(),
    )
    .unwrap();
    let refusal = applied.outcome.unwrap_err();
    assert_eq!(refusal, Refusal::SpliceFailed(SpliceFailure::NoMaskLine));
    assert!(
        refusal
            .to_string()
            .starts_with("splice failed: the masked file has no"),
        "{refusal}"
    );
    assert!(applied.touched.is_empty());
}

#[test]
fn a_v2_write_the_tree_fails_is_an_error() {
    let mut tree = DirTree::new(&[]);
    let original = "a\nb\nc\n";
    let masked = mask("t", "app.py", original, LineRange { start: 2, end: 2 }).unwrap();
    tree.broken.insert("app.py".into());
    let err = apply_answer(
        &mut tree,
        DatasetVersion::V2,
        "app.py",
        &masked,
        "```python\nB\n```\n",
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AnswerError::Tree(TreeError::Failed(_))),
        "{err:?}"
    );
}
