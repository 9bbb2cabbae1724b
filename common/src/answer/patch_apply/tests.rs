//! Tests of [`super`]: kept beside it so that the module itself reads on one screen.

use super::*;
use std::os::unix::fs::symlink;
use std::time::Instant;

/// A tree to patch and a sibling directory standing for "outside".
struct Fixture {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    outside: PathBuf,
}

fn fixture(files: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&tree).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("x"), "outside\n").unwrap();
    for (path, content) in files {
        let full = tree.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    Fixture {
        _dir: dir,
        tree,
        outside,
    }
}

/// Every entry below `root` (not following symlinks) with its content and mode.
fn state(root: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(
                    rel,
                    (
                        "link".into(),
                        target.into_os_string().into_encoded_bytes(),
                        mode,
                    ),
                );
            } else if meta.is_dir() {
                out.insert(rel, ("dir".into(), Vec::new(), mode));
                stack.push(path);
            } else {
                out.insert(rel, ("file".into(), fs::read(&path).unwrap(), mode));
            }
        }
    }
    out
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

fn apply(fx: &Fixture, patch: &str) -> ApplyOutcome {
    apply_patch(&fx.tree, patch, &ApplyOptions::default())
}

fn modified(path: &str) -> FileChange {
    FileChange {
        path: path.into(),
        kind: ChangeKind::Modified,
    }
}

const CLEAN: &str = "--- a/f\n+++ b/f\n@@ -4,3 +4,3 @@\n 4\n-5\n+five\n 6\n";

#[test]
fn clean_patch_applies_with_git_apply() {
    let fx = fixture(&[("f", &numbered(10))]);
    let out = apply(&fx, CLEAN);
    assert_eq!(out.applied_by(), Some(AttemptKind::GitApply), "{out:?}");
    assert_eq!(out.attempts.len(), 1);
    assert_eq!(out.changes, vec![modified("f")]);
    assert_eq!(
        fs::read_to_string(fx.tree.join("f")).unwrap(),
        numbered(10).replace("5\n", "five\n")
    );
}

#[test]
fn wrong_context_needs_fuzz_and_leaves_no_backup() {
    let fx = fixture(&[("f", &numbered(10))]);
    let patch = "--- a/f\n+++ b/f\n@@ -2,7 +2,7 @@\n X\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n";
    let out = apply(&fx, patch);
    assert_eq!(out.applied_by(), Some(AttemptKind::Patch), "{out:?}");
    assert!(!out.attempts[0].succeeded());
    assert!(out.attempts[0].stderr.contains("patch does not apply"));
    assert!(fs::read_to_string(fx.tree.join("f"))
        .unwrap()
        .contains("five"));
    let names: Vec<_> = state(&fx.tree).into_keys().collect();
    assert_eq!(names, vec![PathBuf::from("f")]);
}

#[test]
fn wrong_hunk_counts_apply_only_after_repair() {
    let fx = fixture(&[("f", &numbered(10))]);
    let patch = "--- a/f\n+++ b/f\n@@ -4,9 +4,9 @@\n 4\n-5\n+five\n 6\n";
    let out = apply(&fx, patch);
    assert_eq!(
        out.applied_by(),
        Some(AttemptKind::RepairedGitApply),
        "{out:?}"
    );
    let kinds: Vec<_> = out.attempts.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        vec![
            AttemptKind::GitApply,
            AttemptKind::Patch,
            AttemptKind::RepairedGitApply
        ]
    );
    assert!(out.attempts[0].stderr.contains("corrupt patch"));
    assert_eq!(out.changes, vec![modified("f")]);
}

#[test]
fn garbage_fails_with_each_tool_reason_and_no_repair() {
    let fx = fixture(&[("f", &numbered(3))]);
    let before = state(&fx.tree);
    let out = apply(&fx, "Sorry, I cannot produce a patch for this.\n");
    assert_eq!(
        out.status,
        ApplyStatus::Failed {
            failure: ApplyFailure::RepairEmpty
        }
    );
    assert_eq!(out.attempts.len(), 2);
    assert!(
        out.attempts[0].stderr.contains("No valid patches"),
        "{out:?}"
    );
    assert!(out.attempts[1].stderr.contains("garbage"), "{out:?}");
    assert!(out.changes.is_empty());
    assert_eq!(state(&fx.tree), before);
}

#[test]
fn empty_patch_fails_without_attempts() {
    let fx = fixture(&[("f", "a\n")]);
    let out = apply(&fx, "");
    assert_eq!(
        out.status,
        ApplyStatus::Failed {
            failure: ApplyFailure::EmptyPatch
        }
    );
    assert!(out.attempts.is_empty());
}

#[test]
fn unsafe_patches_are_rejected_and_nothing_changes() {
    let fx = fixture(&[("f", "a\n"), ("real/g", "g\n")]);
    fs::create_dir_all(fx.tree.join(".git")).unwrap();
    fs::write(fx.tree.join(".git/config"), "[core]\n").unwrap();
    symlink(&fx.outside, fx.tree.join("link")).unwrap();
    let new_file = |path: &str| format!("--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,1 @@\n+pwned\n");
    let cases = [
            ("dotdot", new_file("../../x")),
            ("absolute", "--- /etc/passwd\n+++ /etc/passwd\n@@ -1,1 +1,1 @@\n-root\n+pwned\n".to_string()),
            ("git config", "--- a/.git/config\n+++ b/.git/config\n@@ -1,1 +1,2 @@\n [core]\n+\tfsmonitor = id\n".to_string()),
            ("through symlinked dir", new_file("link/x")),
            (
                "creates symlink",
                "diff --git a/s b/s\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/s\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n".to_string(),
            ),
        ];
    for (name, patch) in cases {
        let tree_before = state(&fx.tree);
        let outside_before = state(&fx.outside);
        let out = apply(&fx, &patch);
        assert!(
            matches!(
                out.status,
                ApplyStatus::Failed {
                    failure: ApplyFailure::Rejected { .. }
                }
            ),
            "{name}: {out:?}"
        );
        assert!(out.attempts.is_empty(), "{name}");
        assert_eq!(state(&fx.tree), tree_before, "{name}");
        assert_eq!(state(&fx.outside), outside_before, "{name}");
    }
}

#[test]
fn a_repaired_patch_is_vetted_again() {
    let fx = fixture(&[("f", &numbered(10))]);
    fs::create_dir_all(fx.tree.join(".git")).unwrap();
    fs::write(fx.tree.join(".git/config"), "[core]\n").unwrap();
    let before = state(&fx.tree);
    // Mid-line in the answer, the `diff` header starts a line once the repair drops the
    // text before the first file section.
    let patch = format!(
        "junk diff --git a/.git/config b/.git/config\n{}",
        CLEAN.replace("4,3 +4,3", "4,9 +4,9")
    );
    let out = apply(&fx, &patch);
    assert!(
        matches!(
            &out.status,
            ApplyStatus::Failed {
                failure: ApplyFailure::RepairRejected {
                    rejection: PatchRejection::GitDirectory { .. }
                }
            }
        ),
        "{out:?}"
    );
    assert_eq!(out.attempts.len(), 2);
    assert_eq!(state(&fx.tree), before);
}

#[test]
fn a_patch_naming_more_bytes_than_the_snapshot_holds_is_refused_untouched() {
    let fx = fixture(&[("f", &numbered(10))]);
    let before = state(&fx.tree);
    let opts = ApplyOptions {
        max_snapshot_bytes: 5,
        ..ApplyOptions::default()
    };
    let out = apply_patch(&fx.tree, CLEAN, &opts);
    assert_eq!(
        out.status,
        ApplyStatus::Failed {
            failure: ApplyFailure::SnapshotTooLarge { max_bytes: 5 }
        }
    );
    assert!(out.attempts.is_empty());
    assert_eq!(state(&fx.tree), before);
    // Within the bound the same patch applies.
    let roomy = ApplyOptions {
        max_snapshot_bytes: 21,
        ..ApplyOptions::default()
    };
    assert!(apply_patch(&fx.tree, CLEAN, &roomy).applied());
}

#[test]
fn failed_attempts_leave_the_tree_byte_identical() {
    let fx = fixture(&[("a", &numbered(5)), ("keep/b", &numbered(5))]);
    fs::set_permissions(fx.tree.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    let before = state(&fx.tree);
    // The first file applies everywhere, the new file needs a new directory, the last
    // hunk never matches: every tool changes something before failing.
    let patch = "--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n-1\n+one\n 2\n\
--- /dev/null\n+++ b/new/dir/c\n@@ -0,0 +1,1 @@\n+c\n\
--- a/keep/b\n+++ b/keep/b\n@@ -1,2 +1,2 @@\n-nothing\n-like\n+this\n+at all\n";
    let out = apply(&fx, patch);
    assert_eq!(
        out.status,
        ApplyStatus::Failed {
            failure: ApplyFailure::AllAttemptsFailed
        },
        "{out:?}"
    );
    assert_eq!(out.attempts.len(), 4);
    assert_eq!(state(&fx.tree), before);
}

#[test]
fn directories_a_failed_attempt_emptied_come_back() {
    let fx = fixture(&[("sub/only", "x\n"), ("a", &numbered(3))]);
    let before = state(&fx.tree);
    // patch deletes sub/only (and the emptied sub/) before failing on `a`.
    let patch = "diff --git a/sub/only b/sub/only\ndeleted file mode 100644\n--- a/sub/only\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n\
diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,1 +1,1 @@\n-nope\n+no\n";
    let out = apply(&fx, patch);
    assert!(!out.applied(), "{out:?}");
    assert_eq!(out.attempts.len(), 4);
    assert_eq!(state(&fx.tree), before);
}

#[test]
fn multi_file_patch_reports_every_change() {
    let fx = fixture(&[("a", &numbered(3)), ("gone", "bye\n"), ("sub/b", "b\n")]);
    let patch = "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n 1\n-2\n+two\n 3\n\
diff --git a/gone b/gone\ndeleted file mode 100644\n--- a/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n\
diff --git a/new/dir/c b/new/dir/c\nnew file mode 100644\n--- /dev/null\n+++ b/new/dir/c\n@@ -0,0 +1 @@\n+c\n\
diff --git a/sub/b b/sub/b\n--- a/sub/b\n+++ b/sub/b\n@@ -1 +1 @@\n-b\n+bee\n";
    let out = apply(&fx, patch);
    assert_eq!(out.applied_by(), Some(AttemptKind::GitApply), "{out:?}");
    let created = |p: &str| FileChange {
        path: p.into(),
        kind: ChangeKind::Created,
    };
    let deleted = |p: &str| FileChange {
        path: p.into(),
        kind: ChangeKind::Deleted,
    };
    assert_eq!(
        out.changes,
        vec![
            modified("a"),
            deleted("gone"),
            created("new/dir/c"),
            modified("sub/b")
        ]
    );
    assert_eq!(
        fs::read_to_string(fx.tree.join("new/dir/c")).unwrap(),
        "c\n"
    );
}

#[test]
fn crlf_files_are_patched_keeping_their_line_ends() {
    let fx = fixture(&[("w.txt", "one\r\ntwo\r\nthree\r\n")]);
    let patch = "--- a/w.txt\r\n+++ b/w.txt\r\n@@ -1,3 +1,3 @@\r\n one\r\n-two\r\n+2\r\n three\r\n";
    let out = apply(&fx, patch);
    assert_eq!(out.applied_by(), Some(AttemptKind::GitApply), "{out:?}");
    assert_eq!(
        fs::read_to_string(fx.tree.join("w.txt")).unwrap(),
        "one\r\n2\r\nthree\r\n"
    );
}

#[test]
fn git_apply_does_not_walk_up_into_an_enclosing_repository() {
    let fx = fixture(&[("f", &numbered(10))]);
    let parent = fx.tree.parent().unwrap();
    let init = Command::new("git")
        .args(["init", "-q"])
        .current_dir(parent)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(init.success());
    // Read against the enclosing repository's top, `f` would be outside the current
    // directory and silently skipped with exit status 0.
    let patch = format!("diff --git a/f b/f\n{CLEAN}");
    let out = apply(&fx, &patch);
    assert_eq!(out.applied_by(), Some(AttemptKind::GitApply), "{out:?}");
    assert!(fs::read_to_string(fx.tree.join("f"))
        .unwrap()
        .contains("five"));
}

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-tool");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_hanging_tool_is_killed_at_the_timeout_and_the_tree_restored() {
    let fx = fixture(&[("f", &numbered(10))]);
    let tools = tempfile::tempdir().unwrap();
    let hang = script(tools.path(), "echo partial > f\nsleep 30");
    let opts = ApplyOptions {
        timeout: Duration::from_millis(300),
        git_program: hang.clone(),
        patch_program: hang,
        ..ApplyOptions::default()
    };
    let before = state(&fx.tree);
    let started = Instant::now();
    let out = apply_patch(&fx.tree, CLEAN, &opts);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.attempts.len(), 4);
    assert!(out
        .attempts
        .iter()
        .all(|a| a.timed_out && a.exit_code.is_none()));
    assert_eq!(state(&fx.tree), before);
}

#[test]
fn tool_output_is_capped_and_strays_are_swept() {
    let fx = fixture(&[("f", &numbered(10))]);
    let tools = tempfile::tempdir().unwrap();
    let noisy = script(
        tools.path(),
        "head -c 100000 /dev/zero | tr '\\0' x >&2\necho y > f.orig\necho z > f\nexit 0",
    );
    let opts = ApplyOptions {
        max_output_bytes: 1000,
        git_program: noisy.clone(),
        patch_program: noisy,
        ..ApplyOptions::default()
    };
    let out = apply_patch(&fx.tree, CLEAN, &opts);
    assert_eq!(out.applied_by(), Some(AttemptKind::GitApply));
    assert_eq!(out.attempts[0].stderr.len(), 1000);
    assert!(out.attempts[0].output_truncated);
    assert!(!fx.tree.join("f.orig").exists());
    assert_eq!(out.changes, vec![modified("f")]);
}

#[test]
fn a_missing_tool_is_a_recorded_failure() {
    let fx = fixture(&[("f", &numbered(10))]);
    let opts = ApplyOptions {
        git_program: PathBuf::from("/nonexistent/git"),
        patch_program: PathBuf::from("/nonexistent/patch"),
        ..ApplyOptions::default()
    };
    let out = apply_patch(&fx.tree, CLEAN, &opts);
    assert!(!out.applied());
    assert!(out.attempts.iter().all(|a| a.spawn_error.is_some()));
}
