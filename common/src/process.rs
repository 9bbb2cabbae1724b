//! The one way this project runs a child process (git, patch, osemgrep): bounded in time and
//! in output, never waiting on a terminal, never outliving what it was started for.
//!
//! - stdin is closed; stdout and stderr are read to their end on their own threads (a child
//!   never blocks on a full pipe) and a bounded part of each is kept: the head of stdout (a
//!   report), the head or the tail of stderr (where a tool says why it failed);
//! - the child leads its own process group, and at the deadline (or, when asked, once stdout
//!   overflows its bound) the whole group is killed: a tool that forked helpers (semgrep-core
//!   workers, git's remote helpers) leaves nothing behind;
//! - on Linux the child is killed when the thread that started it dies
//!   (`PR_SET_PDEATHSIG`): a worker killed with -9 leaves no clone writing into its cache;
//! - the child is always reaped.
//!
//! [`run`] blocks; [`run_async`] runs it on tokio's blocking pool.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which part of a stream is kept when it is longer than its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first bytes.
    Head,
    /// The last bytes (a tool's final words).
    Tail,
}

/// The bounds of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Wall-clock limit; the process group is killed when it expires.
    pub timeout: Duration,
    /// Bytes of stdout kept (its head).
    pub max_stdout: usize,
    /// Bytes of stderr kept.
    pub max_stderr: usize,
    pub stderr_keep: Keep,
    /// Kill the process group as soon as stdout is longer than its bound (a report past its
    /// budget is refused anyway; waiting for the rest only costs time).
    pub kill_on_stdout_overflow: bool,
}

impl Bounds {
    /// `timeout`, and `max_output` bytes of the head of each stream.
    pub fn new(timeout: Duration, max_output: usize) -> Bounds {
        Bounds {
            timeout,
            max_stdout: max_output,
            max_stderr: max_output,
            stderr_keep: Keep::Head,
            kill_on_stdout_overflow: false,
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    /// None when the status could not be read.
    pub status: Option<ExitStatus>,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Killed because stdout went past its bound.
    pub killed_on_overflow: bool,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
}

impl Finished {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && !self.killed_on_overflow && self.status.is_some_and(|s| s.success())
    }

    /// The exit code; None when killed by a signal (a timeout included).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The program could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnError {
    pub program: String,
    #[source]
    pub source: std::io::Error,
}

/// Runs `cmd` within `bounds` (stdin, stdout, stderr and the process group are set here).
pub fn run(mut cmd: Command, bounds: &Bounds) -> Result<Finished, SpawnError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child.id();
    let overflowed = Arc::new(AtomicBool::new(false));
    let out = child.stdout.take().map(|pipe| {
        let flag = bounds.kill_on_stdout_overflow.then(|| overflowed.clone());
        read_bounded(pipe, bounds.max_stdout, Keep::Head, flag)
    });
    let err = child
        .stderr
        .take()
        .map(|pipe| read_bounded(pipe, bounds.max_stderr, bounds.stderr_keep, None));
    let deadline = Instant::now() + bounds.timeout;
    let mut timed_out = false;
    let mut killed_on_overflow = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                kill_group(pid);
                break child.wait().ok();
            }
            Ok(None) if overflowed.load(Ordering::Relaxed) => {
                killed_on_overflow = true;
                kill_group(pid);
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => {
                kill_group(pid);
                break child.wait().ok();
            }
        }
    };
    // The leader is reaped; what it forked may still hold the pipes open: stop them too.
    if timed_out || killed_on_overflow {
        kill_group(pid);
    }
    let (stdout, stdout_truncated) = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stderr, stderr_truncated) = err.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Finished {
        status,
        timed_out,
        killed_on_overflow,
        stdout,
        stdout_truncated,
        stderr,
        stderr_truncated,
    })
}

/// [`run`] on tokio's blocking pool: an async caller's thread is not held for the run.
pub async fn run_async(cmd: Command, bounds: Bounds) -> Result<Finished, SpawnError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || run(cmd, &bounds))
        .await
        .unwrap_or_else(|e| {
            Err(SpawnError {
                program,
                source: std::io::Error::other(format!("the runner thread failed: {e}")),
            })
        })
}

/// Reads a pipe to its end on a thread, keeping `limit` bytes of it; `overflow` is raised once
/// more than `limit` came.
fn read_bounded<R: Read + Send + 'static>(
    mut pipe: R,
    limit: usize,
    keep: Keep,
    overflow: Option<Arc<AtomicBool>>,
) -> JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut truncated = false;
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = &buf[..n];
                    match keep {
                        Keep::Head => {
                            let room = limit.saturating_sub(kept.len());
                            kept.extend_from_slice(&chunk[..n.min(room)]);
                            truncated |= n > room;
                        }
                        Keep::Tail => {
                            kept.extend_from_slice(chunk);
                            if kept.len() > limit {
                                let cut = kept.len() - limit;
                                kept.drain(..cut);
                                truncated = true;
                            }
                        }
                    }
                    if truncated {
                        if let Some(flag) = &overflow {
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        (kept, truncated)
    })
}

/// SIGKILL to the process group the child leads (`process_group(0)` made its pid the group
/// id). Never this process's own group, nor init's.
fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn alive(pid: i32) -> bool {
        // A killed but unreaped process is a zombie (`Z`): not alive.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    #[test]
    fn output_is_kept_within_its_bounds() {
        let r = run(
            sh("printf 'hello'; printf 'err' >&2; exit 3"),
            &Bounds::new(Duration::from_secs(10), 1024),
        )
        .unwrap();
        assert_eq!(r.code(), Some(3));
        assert!(!r.success());
        assert_eq!(r.stdout, b"hello");
        assert_eq!(r.stderr, b"err");
        let mut b = Bounds::new(Duration::from_secs(10), 4);
        b.stderr_keep = Keep::Tail;
        let r = run(sh("printf '0123456789'; printf 'abcdefgh' >&2"), &b).unwrap();
        assert!(r.success());
        assert_eq!(
            (r.stdout.as_slice(), r.stdout_truncated),
            (&b"0123"[..], true)
        );
        assert_eq!(
            (r.stderr.as_slice(), r.stderr_truncated),
            (&b"efgh"[..], true)
        );
    }

    #[test]
    fn stdin_is_closed() {
        let r = run(
            sh("cat; echo done"),
            &Bounds::new(Duration::from_secs(10), 64),
        )
        .unwrap();
        assert!(r.success());
        assert_eq!(r.stdout_lossy(), "done\n");
    }

    #[test]
    fn a_timeout_kills_the_whole_group_forked_children_included() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let started = Instant::now();
        let r = run(sh(&script), &Bounds::new(Duration::from_millis(300), 64)).unwrap();
        assert!(r.timed_out && !r.success() && r.code().is_none());
        assert!(started.elapsed() < Duration::from_secs(30));
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The kill is immediate but the child's reaping by init is not: bounded wait.
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !alive(child)
        });
        assert!(gone, "forked child {child} survived the timeout");
    }

    #[test]
    fn stdout_past_its_bound_can_stop_the_child() {
        let mut b = Bounds::new(Duration::from_secs(30), 1024);
        b.kill_on_stdout_overflow = true;
        let started = Instant::now();
        let r = run(sh("while :; do echo xxxxxxxxxxxxxxxx; done"), &b).unwrap();
        assert!(r.killed_on_overflow && r.stdout_truncated && !r.success());
        assert_eq!(r.stdout.len(), 1024);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it() {
        let e = run(
            Command::new("/nonexistent/tool"),
            &Bounds::new(Duration::from_secs(1), 8),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tool"), "{e}");
    }

    #[tokio::test]
    async fn the_async_front_runs_the_same() {
        let r = run_async(sh("echo hi"), Bounds::new(Duration::from_secs(10), 64))
            .await
            .unwrap();
        assert_eq!(r.stdout_lossy(), "hi\n");
    }
}
