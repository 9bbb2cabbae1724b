//! Turns a demo repo's two trees into a local git repository with stable commit ids.
//!
//! A commit id hashes the tree (paths, modes, contents), the parent, the author and committer
//! (name, email, date, time zone) and the message. All of them are fixed here: files are
//! written in sorted order with mode 0644, identities and dates come from the environment of
//! each git call, and no configuration of the user or the system is read
//! (`GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_NOSYSTEM=1`, no templates, no hooks, no signing).

use crate::manifest::DemoRepo;
use crate::DemoError;
use std::path::Path;
use std::process::Command;

const AUTHOR_NAME: &str = "A.S.E Demo";
const AUTHOR_EMAIL: &str = "demo@ase-cluster.invalid";

/// The branch holding the fix commit.
pub(crate) const BRANCH: &str = "main";

/// The ids of `dir`'s base and fix commits when it is a repo whose `main` is the fix commit
/// on top of the base commit; `None` otherwise (missing, partial or foreign).
pub fn existing_commits(dir: &Path) -> Option<(String, String)> {
    if !dir.join(".git").is_dir() {
        return None;
    }
    let fix = rev_parse(dir, &format!("refs/heads/{BRANCH}")).ok()?;
    let base = rev_parse(dir, &format!("{fix}^")).ok()?;
    Some((base, fix))
}

/// Creates the repo in `dir` (which must not exist): the base tree committed, then replaced
/// by the fix tree and committed. Returns (base id, fix id).
pub(crate) fn create(
    dir: &Path,
    entry: &DemoRepo,
    base: &[(&str, &[u8])],
    fix: &[(&str, &[u8])],
) -> Result<(String, String), DemoError> {
    std::fs::create_dir_all(dir).map_err(|e| DemoError::io(dir, e))?;
    git(
        dir,
        &[
            "init",
            "--quiet",
            "--template=",
            &format!("--initial-branch={BRANCH}"),
        ],
        None,
    )?;
    write_tree(dir, base)?;
    commit(dir, &entry.base_message, &entry.date)?;
    // The fix tree replaces the base tree whole: files it drops disappear from the commit.
    git(dir, &["rm", "-r", "--quiet", "--cached", "."], None)?;
    for (rel, _) in base {
        let p = dir.join(rel);
        std::fs::remove_file(&p).map_err(|e| DemoError::io(&p, e))?;
    }
    write_tree(dir, fix)?;
    commit(dir, &entry.fix_message, &entry.fix_date)?;
    let (b, f) = existing_commits(dir).ok_or_else(|| DemoError::Git {
        dir: dir.to_path_buf(),
        detail: "the new repo has no base and fix commit".into(),
    })?;
    Ok((b, f))
}

fn write_tree(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), DemoError> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, bytes) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DemoError::io(parent, e))?;
        }
        std::fs::write(&p, bytes).map_err(|e| DemoError::io(&p, e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| DemoError::io(&p, e))?;
    }
    // Paths one by one, in order: `git add -A` would also pick up anything else in the folder.
    let mut args = vec!["add", "--"];
    args.extend(files.iter().map(|(rel, _)| *rel));
    git(dir, &args, None)
}

fn commit(dir: &Path, message: &str, date: &str) -> Result<(), DemoError> {
    git(
        dir,
        &[
            "commit",
            "--quiet",
            "--no-verify",
            "--no-gpg-sign",
            "--allow-empty-message",
            "-m",
            message,
        ],
        Some(date),
    )
}

fn rev_parse(dir: &Path, rev: &str) -> Result<String, DemoError> {
    let out = git_command(dir, None)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .output()
        .map_err(|e| DemoError::Git {
            dir: dir.to_path_buf(),
            detail: format!("cannot run git: {e}"),
        })?;
    if !out.status.success() {
        return Err(DemoError::Git {
            dir: dir.to_path_buf(),
            detail: format!("revision {rev} not found"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit id `rev` names in the repo at `dir`.
pub fn resolve(dir: &Path, rev: &str) -> Result<String, DemoError> {
    rev_parse(dir, rev)
}

fn git(dir: &Path, args: &[&str], date: Option<&str>) -> Result<(), DemoError> {
    let out = git_command(dir, date)
        .args(args)
        .output()
        .map_err(|e| DemoError::Git {
            dir: dir.to_path_buf(),
            detail: format!("cannot run git: {e}"),
        })?;
    if !out.status.success() {
        return Err(DemoError::Git {
            dir: dir.to_path_buf(),
            detail: format!(
                "git {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn git_command(dir: &Path, date: Option<&str>) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir);
    // Variables that would point git at another repository or index, or change its output.
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_CEILING_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_TEMPLATE_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("LC_ALL", "C")
        .args(["-c", "core.autocrlf=false", "-c", "core.filemode=true"]);
    if let Some(d) = date {
        cmd.env("GIT_AUTHOR_DATE", d).env("GIT_COMMITTER_DATE", d);
    }
    cmd
}
