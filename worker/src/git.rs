//! Running git as a subprocess: bounded in time and in output, never prompting.

use ase_common::process::{self, Bounds};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use thiserror::Error;

/// Output kept from one git command; the rest is dropped (a fetch can print a lot).
const MAX_OUTPUT: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum GitError {
    #[error("cannot start git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` timed out after {secs} s and was killed")]
    Timeout { args: String, secs: u64 },
    #[error("`git {args}` exited with {status}: {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
}

#[derive(Debug)]
pub struct GitOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Run `git [--git-dir DIR] ARGS` with extra environment, a time limit and no terminal prompts.
pub fn run_git(
    git_dir: Option<&Path>,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<GitOutput, GitError> {
    let mut cmd = Command::new("git");
    if let Some(d) = git_dir {
        cmd.arg("--git-dir").arg(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("SSH_ASKPASS", "true")
        .env("GCM_INTERACTIVE", "never")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The one runner: a worker killed with -9 leaves no clone writing into its cache (git
    // dies with the thread that started it), and a timeout kills git's helpers too.
    let shown = args.join(" ");
    let done = process::run(cmd, &Bounds::new(timeout, MAX_OUTPUT))
        .map_err(|e| GitError::Spawn(e.source))?;
    if done.timed_out {
        return Err(GitError::Timeout {
            args: shown,
            secs: timeout.as_secs(),
        });
    }
    let stdout = done.stdout_lossy();
    let stderr = done.stderr_lossy();
    if !done.success() {
        return Err(GitError::Failed {
            args: shown,
            status: done
                .status
                .map_or_else(|| "no status".to_string(), |s| s.to_string()),
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(GitOutput { stdout, stderr })
}
