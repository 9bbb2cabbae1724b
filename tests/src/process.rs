//! Child processes of a test: stderr (and stdout) captured to files that the test reads while
//! the process runs, waiting for the lines the contract promises, and `kill -9`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running child; killed (SIGKILL) when dropped so that a failing test leaves nothing behind.
pub struct Proc {
    name: String,
    child: Option<Child>,
    pub log: PathBuf,
    pub stdout: PathBuf,
}

impl Proc {
    /// Runs `bin args` with `envs` added; stderr goes to `log`, stdout to `log` + `.out`.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> Proc {
        let stdout = log.with_extension("out");
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let out =
            std::fs::File::create(&stdout).unwrap_or_else(|e| panic!("{}: {e}", stdout.display()));
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", bin.display()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Waits until `needle` occurs `n` times in the stderr log; panics with the log's tail when
    /// the process exits first or `timeout` passes.
    pub fn wait_for_count(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= n {
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before printing `{needle}` {n}x; log:\n{}",
                    self.name,
                    tail(&text, 4000)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: no `{needle}` {n}x within {timeout:?}; log:\n{}",
                    self.name,
                    tail(&text, 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status when the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to end by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful stop), then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        if self.wait_exit(grace).is_none() {
            self.kill9();
        }
        self.child = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A loopback address with a port that was free a moment ago (the coordinator must come back
/// on the same one after a restart, so the port is chosen here, not by the OS at bind).
pub fn free_loopback_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap()
}
