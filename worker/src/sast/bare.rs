//! Runs the host's `osemgrep` as a subprocess.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ase_common::process::{self, Bounds, Keep};
use std::process::Command;

use super::outcome::{outcome_from_process, ProcessOutput, ScanFailure, ScanOutcome};
use super::report::ParseLimits;
use super::vue_script;

/// stderr kept for failure reasons.
pub const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// How a scan runs, whichever the runtime (bare process or container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSettings {
    /// Wall-clock limit for the whole scan; past it the scanner is killed.
    pub timeout: Duration,
    pub limits: ParseLimits,
    /// semgrep's `--jobs`.
    pub jobs: u32,
    /// `--exclude` patterns (gitignore syntax). These replace semgrep's default ignore list,
    /// which is switched off together with the scanned tree's own `.semgrepignore` files.
    pub exclude: Vec<String>,
}

/// Third-party code and VCS data: large, not what the model wrote, and skipped by semgrep's
/// own defaults too.
pub const DEFAULT_EXCLUDES: [&str; 5] = [
    ".git",
    "node_modules",
    "bower_components",
    "vendor",
    "*.min.js",
];

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            limits: ParseLimits::default(),
            jobs: 1,
            exclude: DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The `osemgrep` command line after the program name.
///
/// Beyond `scan --experimental --config RULES --json --metrics=off PATH`:
/// `--no-git-ignore` because inside a git checkout semgrep otherwise honours the repository's
/// `.gitignore`, which the scanned code itself controls (a model could hide a file that way);
/// `--x-ignore-semgrepignore-files` for the same reason with `.semgrepignore` (a repository's
/// or model's `.semgrepignore` can list the vulnerable file); it also drops semgrep's default
/// ignore list, replaced by `settings.exclude`;
/// `--no-rewrite-rule-ids` keeps `check_id` equal to the rule's `id`;
/// `--disable-version-check` keeps the scan off the network.
pub fn osemgrep_args(rules: &str, target: &str, settings: &ScanSettings) -> Vec<String> {
    osemgrep_args_for(&[rules.to_string()], target, settings)
}

/// [`osemgrep_args`] with one `--config` per rule file or folder (a task's rule set).
pub fn osemgrep_args_for(configs: &[String], target: &str, settings: &ScanSettings) -> Vec<String> {
    let mut args: Vec<String> = ["scan", "--experimental"]
        .into_iter()
        .map(str::to_string)
        .collect();
    for c in configs {
        args.push("--config".to_string());
        args.push(c.clone());
    }
    args.extend(
        [
            "--json",
            "--metrics=off",
            "--no-git-ignore",
            "--x-ignore-semgrepignore-files",
            "--no-rewrite-rule-ids",
            "--disable-version-check",
            "--jobs",
            &settings.jobs.max(1).to_string(),
        ]
        .into_iter()
        .map(str::to_string),
    );
    for pattern in &settings.exclude {
        args.push(format!("--exclude={pattern}"));
    }
    // Last and after `--`, so that a target path starting with `-` is not read as an option.
    args.push("--".to_string());
    args.push(target.to_string());
    args
}

/// Runs `osemgrep` on the host, with a timeout and a bounded output.
#[derive(Debug, Clone)]
pub struct BareScanner {
    osemgrep: PathBuf,
    rules: PathBuf,
    settings: ScanSettings,
}

impl BareScanner {
    /// `osemgrep`: the binary (a symlink named `osemgrep` to `semgrep-core`); `rules`: a rule
    /// file or a directory of rule files.
    pub fn new(osemgrep: PathBuf, rules: PathBuf, settings: ScanSettings) -> Self {
        Self {
            osemgrep,
            rules,
            settings,
        }
    }

    /// The same scanner with another `--jobs`.
    pub fn with_jobs(&self, jobs: u32) -> Self {
        let mut s = self.clone();
        s.settings.jobs = jobs;
        s
    }

    /// Scans `target` (a directory or a file). Finding paths in the report are relative to it.
    /// The scanner runs through the project's one process runner: its own process group
    /// (semgrep-core forks workers when --jobs > 1), killed whole at the timeout or as soon as
    /// its report goes past the byte budget.
    pub async fn scan(&self, target: &Path) -> ScanOutcome {
        self.scan_with(target, &[String::new()]).await
    }

    /// The rules (a file or folder) this scanner was made with.
    pub fn rules(&self) -> &Path {
        &self.rules
    }

    /// Scans `target` with the rule files `files`, relative to this scanner's rules (a task's
    /// [`super::RuleSet`]); `""` is the rules themselves.
    ///
    /// The script sections of `.vue` components under `target` are scanned too, as JavaScript
    /// twins in a staging folder (a second scanner run, only when there are components; see
    /// [`super::vue_script`]); their findings carry the component's path and lines.
    pub async fn scan_with(&self, target: &Path, files: &[String]) -> ScanOutcome {
        let outcome = self.scan_once(target, files).await;
        let ScanOutcome::Completed(report) = outcome else {
            return outcome;
        };
        vue_script::with_twins(
            report,
            target,
            &self.settings.exclude,
            vue_script::Staging::Temp,
            |stage| async move { self.scan_once(&stage, files).await },
        )
        .await
    }

    async fn scan_once(&self, target: &Path, files: &[String]) -> ScanOutcome {
        let target_str = target.to_string_lossy().into_owned();
        let configs: Vec<String> = files
            .iter()
            .map(|f| match f.as_str() {
                "" => self.rules.to_string_lossy().into_owned(),
                f => self.rules.join(f).to_string_lossy().into_owned(),
            })
            .collect();
        let args = osemgrep_args_for(&configs, &target_str, &self.settings);
        let mut cmd = Command::new(&self.osemgrep);
        cmd.args(&args)
            .env("SEMGREP_SEND_METRICS", "off")
            .env("SEMGREP_ENABLE_VERSION_CHECK", "0");
        let bounds = Bounds {
            timeout: self.settings.timeout,
            max_stdout: self.settings.limits.max_bytes,
            max_stderr: STDERR_TAIL_BYTES,
            stderr_keep: Keep::Tail,
            kill_on_stdout_overflow: true,
        };
        let finished = match process::run_async(cmd, bounds).await {
            Ok(f) => f,
            Err(e) => {
                return ScanOutcome::Failed(ScanFailure::Start(format!(
                    "{}: {}",
                    self.osemgrep.display(),
                    e.source
                )))
            }
        };
        if finished.timed_out {
            return ScanOutcome::Failed(ScanFailure::Timeout {
                secs: self.settings.timeout.as_secs(),
            });
        }
        outcome_from_process(
            &ProcessOutput {
                exit_code: finished.code(),
                stderr_tail: finished.stderr_lossy(),
                stdout_overflowed: finished.stdout_truncated,
                stdout: finished.stdout,
            },
            &self.settings.limits,
            &target_str,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_follow_the_documented_command() {
        let settings = ScanSettings {
            jobs: 0,
            exclude: vec!["vendor".into()],
            ..ScanSettings::default()
        };
        let a = osemgrep_args("/rules", "/src", &settings);
        assert_eq!(
            &a[..6],
            [
                "scan",
                "--experimental",
                "--config",
                "/rules",
                "--json",
                "--metrics=off"
            ]
        );
        assert_eq!(a.last().map(String::as_str), Some("/src"));
        let j = a.iter().position(|x| x == "--jobs").unwrap();
        assert_eq!(a[j + 1], "1", "jobs is at least 1");
        assert!(a.contains(&"--exclude=vendor".to_string()));
        assert_eq!(a[a.len() - 2], "--");
        let two = osemgrep_args_for(&["/r/a.yaml".into(), "/r/b.yaml".into()], "/src", &settings);
        assert_eq!(
            &two[..7],
            [
                "scan",
                "--experimental",
                "--config",
                "/r/a.yaml",
                "--config",
                "/r/b.yaml",
                "--json"
            ]
        );
        assert_eq!(&two[7..], &a[5..], "the rest is the same");
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fake-osemgrep");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn settings(timeout_ms: u64, max_bytes: usize) -> ScanSettings {
        ScanSettings {
            timeout: Duration::from_millis(timeout_ms),
            limits: ParseLimits {
                max_bytes,
                ..ParseLimits::default()
            },
            jobs: 1,
            exclude: vec![],
        }
    }

    #[tokio::test]
    async fn a_hanging_scanner_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "exec sleep 30");
        let s = BareScanner::new(bin, "/rules".into(), settings(300, 1024));
        let started = std::time::Instant::now();
        let out = s.scan(dir.path()).await;
        assert!(
            matches!(out, ScanOutcome::Failed(ScanFailure::Timeout { .. })),
            "{out:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    fn alive(pid: i32) -> bool {
        // A killed but not yet reaped process is a zombie: state `Z` in /proc/<pid>/stat.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_timeout_also_kills_forked_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let bin = script(
            dir.path(),
            &format!(
                "sleep 30 >/dev/null 2>&1 &\necho $! > {}\nwait",
                pidfile.display()
            ),
        );
        let s = BareScanner::new(bin, "/rules".into(), settings(500, 1024));
        let out = s.scan(dir.path()).await;
        assert!(
            matches!(out, ScanOutcome::Failed(ScanFailure::Timeout { .. })),
            "{out:?}"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!alive(pid), "forked child {pid} survived the timeout");
    }

    #[tokio::test]
    async fn endless_output_is_cut_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "exec yes '{\"results\":[]}'");
        let s = BareScanner::new(bin, "/rules".into(), settings(10_000, 4096));
        let out = s.scan(dir.path()).await;
        assert!(
            matches!(
                out,
                ScanOutcome::Failed(ScanFailure::OutputTooLarge { max: 4096 })
            ),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn missing_binary_and_bad_exit_fail_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let s = BareScanner::new(
            dir.path().join("nope"),
            "/rules".into(),
            settings(5000, 1024),
        );
        assert!(matches!(
            s.scan(dir.path()).await,
            ScanOutcome::Failed(ScanFailure::Start(_))
        ));
        let bin = script(dir.path(), "echo 'invalid rules' >&2; exit 7");
        let s = BareScanner::new(bin, "/rules".into(), settings(5000, 1024));
        match s.scan(dir.path()).await {
            ScanOutcome::Failed(ScanFailure::ExitStatus { code: 7, detail }) => {
                assert!(detail.contains("invalid rules"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn arguments_reach_the_scanner_and_json_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        // Echo the target (last argument) back as a finding path.
        let bin = script(
            dir.path(),
            r#"for a; do last=$a; done
printf '{"results":[{"check_id":"r","path":"%s/x.py","start":{"line":3},"end":{"line":4},"extra":{"metadata":{"vuln_type":"XSS"}}}],"errors":[]}' "$last""#,
        );
        let s = BareScanner::new(bin, "/rules".into(), settings(5000, 1 << 20));
        match s.scan(dir.path()).await {
            ScanOutcome::Completed(r) => {
                assert_eq!(r.findings[0].path, "x.py");
                assert_eq!(r.findings[0].vuln_type.as_deref(), Some("XSS"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
