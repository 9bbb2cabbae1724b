//! Running git as a subprocess: bounded in time and in output, never prompting.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
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

fn bounded_reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                // Keep reading past the bound so the child never blocks on a full pipe.
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    })
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("SSH_ASKPASS", "true")
        .env("GCM_INTERACTIVE", "never")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A worker killed with -9 must not leave a clone writing into its cache behind it: git
    // dies with the thread that started it.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let shown = args.join(" ");
    let mut child = cmd.spawn().map_err(GitError::Spawn)?;
    let out = bounded_reader(child.stdout.take().expect("piped"));
    let err = bounded_reader(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(GitError::Spawn)? {
            Some(s) => break s,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(GitError::Timeout {
                    args: shown,
                    secs: timeout.as_secs(),
                });
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    if !status.success() {
        return Err(GitError::Failed {
            args: shown,
            status: status.to_string(),
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(GitOutput { stdout, stderr })
}
