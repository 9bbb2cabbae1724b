//! Whether a repo's source has a commit, asked without a mirror: a preflight runs before any
//! worker has cloned anything, possibly on a host that never will. One commit object is
//! fetched into a throwaway bare repository (`--depth=1 --filter=tree:0`: no tree, no blob where
//! the server supports filters), so that a several-GB repo costs a few KB to check.

use super::auth::auth_env_for;
use super::names::{source_url_for, validate_repo_name};
use super::RepoCacheConfig;
use crate::git::{run_git, GitError};
use std::path::Path;
use std::time::Duration;

/// What the source said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitProbe {
    Present,
    /// The source answered: no such repository (or not readable with the token given).
    RepoMissing(String),
    /// The repository answered: no such commit.
    CommitMissing(String),
    /// No answer worth a verdict (network, timeout, a server error): the task is kept.
    Unchecked(String),
}

/// git's words for a repository that is not there, by transport (GitHub over HTTPS asks for
/// credentials it may not prompt for; a local path is "not a git repository").
const REPO_MISSING: &[&str] = &[
    "repository not found",
    "does not appear to be a git repository",
    "could not read username",
    "authentication failed",
    "returned error: 404",
    "not found",
];

/// git's words for a commit the repository does not have.
const COMMIT_MISSING: &[&str] = &[
    "not our ref",
    "couldn't find remote ref",
    "no such remote ref",
    "unadvertised object",
];

/// Fetches `sha` from `repo`'s source into a scratch repository under `scratch` (removed after).
pub fn probe_commit(
    cfg: &RepoCacheConfig,
    repo: &str,
    sha: &str,
    scratch: &Path,
    timeout: Duration,
) -> CommitProbe {
    if let Err(e) = validate_repo_name(repo) {
        return CommitProbe::RepoMissing(e.to_string());
    }
    // `<sha>^` and `<sha>~N` (upstream's way to name a fix's parent) exist when `<sha>` does.
    let rev = sha.find(['^', '~']).map_or(sha, |at| &sha[..at]);
    let is_hex = !rev.is_empty() && rev.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex && rev.len() != 40 {
        // An abbreviation cannot be fetched by name; only a full clone resolves it.
        return CommitProbe::Unchecked(format!(
            "base_commit {sha:?} is abbreviated: it can be checked only by a clone"
        ));
    }
    if rev.is_empty() || rev.starts_with('-') || rev.contains(char::is_whitespace) {
        return CommitProbe::CommitMissing(format!("base_commit {sha:?} is not a revision"));
    }
    let url = source_url_for(cfg, repo);
    let dir = match tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(scratch)
    {
        Ok(d) => d,
        Err(e) => return CommitProbe::Unchecked(format!("scratch folder: {e}")),
    };
    let git_dir = dir.path();
    if let Err(e) = run_git(
        None,
        &["init", "--quiet", "--bare", &git_dir.to_string_lossy()],
        &[],
        Duration::from_secs(30),
    ) {
        return CommitProbe::Unchecked(e.to_string());
    }
    let env = auth_env_for(cfg, &url);
    let fetched = run_git(
        Some(git_dir),
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--depth=1",
            "--filter=tree:0",
            &url,
            rev,
        ],
        &env,
        timeout,
    );
    match fetched {
        Ok(_) => CommitProbe::Present,
        Err(e) => classify(&url, rev, e),
    }
}

fn classify(url: &str, sha: &str, e: GitError) -> CommitProbe {
    let text = e.to_string();
    let lower = text.to_lowercase();
    let detail = |what: &str| format!("{what} ({url}): {}", last_line(&text));
    if let GitError::Failed { .. } = e {
        if COMMIT_MISSING.iter().any(|m| lower.contains(m)) {
            return CommitProbe::CommitMissing(detail(&format!("no commit {sha}")));
        }
        if REPO_MISSING.iter().any(|m| lower.contains(m)) {
            return CommitProbe::RepoMissing(detail("no such repository"));
        }
    }
    CommitProbe::Unchecked(detail("the source did not answer"))
}

/// git prints hints before the error that matters; the last line is the one to show.
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn a_commit_is_present_missing_or_its_repo_is() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("owner").join("proj");
        std::fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        std::fs::write(src.join("a.txt"), "a").unwrap();
        git(&src, &["add", "."]);
        git(&src, &["commit", "-q", "-m", "a"]);
        let head = git(&src, &["rev-parse", "HEAD"]);
        let scratch = root.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let mut cfg = RepoCacheConfig::new(root.path().join("cache"));
        cfg.url_template = format!("{}/{{repo}}", root.path().display());
        let t = Duration::from_secs(30);
        assert_eq!(
            probe_commit(&cfg, "owner/proj", &head, &scratch, t),
            CommitProbe::Present
        );
        let absent = "0123456789abcdef0123456789abcdef01234567";
        match probe_commit(&cfg, "owner/proj", absent, &scratch, t) {
            CommitProbe::CommitMissing(d) => assert!(d.contains(absent), "{d}"),
            other => panic!("{other:?}"),
        }
        match probe_commit(&cfg, "owner/gone", &head, &scratch, t) {
            CommitProbe::RepoMissing(d) => assert!(d.contains("owner/gone"), "{d}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            probe_commit(&cfg, "owner/proj", "abc123", &scratch, t),
            CommitProbe::Unchecked(_)
        ));
        // A fix's parent, and a tag by name.
        assert_eq!(
            probe_commit(&cfg, "owner/proj", &format!("{head}^"), &scratch, t),
            CommitProbe::Present
        );
        git(&src, &["tag", "v1.0"]);
        assert_eq!(
            probe_commit(&cfg, "owner/proj", "v1.0", &scratch, t),
            CommitProbe::Present
        );
        assert!(matches!(
            probe_commit(&cfg, "owner/proj", "v9.9", &scratch, t),
            CommitProbe::CommitMissing(_)
        ));
        // Nothing is left behind in the scratch folder.
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    }

    #[test]
    fn a_source_that_does_not_answer_is_unchecked_not_missing() {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = RepoCacheConfig::new(root.path().join("cache"));
        // A closed port on loopback: connection refused, which says nothing about the repo.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        cfg.url_template = format!("http://127.0.0.1:{port}/{{repo}}.git");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        match probe_commit(&cfg, "o/p", sha, root.path(), Duration::from_secs(30)) {
            CommitProbe::Unchecked(d) => assert!(d.contains("127.0.0.1"), "{d}"),
            other => panic!("{other:?}"),
        }
    }
}
