//! Runs `osemgrep` in the SAST image (`deploy/images/build.sh`), one container per scan.
//!
//! The container has no network, a read-only root file system, a tmpfs `/tmp`, no
//! capabilities, memory/CPU/pid limits, and the scanned tree bind-mounted read-only at `/src`.
//! Every container is labelled with the unit and run and is removed on every path (success,
//! failure, timeout, and cancellation of the scan future).

use std::collections::HashMap;
use std::path::Path;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::bare::{osemgrep_args_for, ScanSettings, STDERR_TAIL_BYTES};
use super::outcome::{outcome_from_process, ProcessOutput, ScanFailure, ScanOutcome};
use crate::container::ContainerGuard;

/// Where the scanned tree appears inside the container.
pub const CONTAINER_SRC: &str = "/src";
/// Where build.sh puts the rule packs inside the image.
pub const IMAGE_RULES: &str = "/rules";
pub use crate::container_labels::{ROLE_LABEL, RUN_LABEL, UNIT_LABEL, WORKER_LABEL};
/// Role label value of the containers this module creates.
pub const ROLE_SAST: &str = "sast";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLimits {
    pub memory_bytes: i64,
    /// CPUs in billionths (1_000_000_000 = one CPU).
    pub nano_cpus: i64,
    pub pids: i64,
    /// tmpfs `/tmp` options (size bound).
    pub tmpfs_options: String,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 * 1024 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids: 256,
            tmpfs_options: "rw,nosuid,nodev,noexec,size=256m".to_string(),
        }
    }
}

/// Which unit of which run a scan belongs to, and which worker runs it; becomes the
/// container's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanLabels {
    pub unit: String,
    pub run: String,
    pub worker: String,
}

#[derive(Debug, Clone)]
pub struct ContainerScanner {
    docker: Docker,
    image: String,
    /// Rule file or directory inside the image.
    rules: String,
    settings: ScanSettings,
    limits: ContainerLimits,
}

impl ContainerScanner {
    /// The same scanner with another `--jobs`.
    pub fn with_jobs(&self, jobs: u32) -> Self {
        let mut s = self.clone();
        s.settings.jobs = jobs;
        s
    }

    pub fn new(
        docker: Docker,
        image: String,
        rules: String,
        settings: ScanSettings,
        limits: ContainerLimits,
    ) -> Self {
        Self {
            docker,
            image,
            rules,
            settings,
            limits,
        }
    }

    /// The request the scanner sends to create a container for `target` (a host directory).
    pub fn container_body(&self, target: &Path, labels: &ScanLabels) -> ContainerCreateBody {
        self.container_body_with(target, labels, &[String::new()])
    }

    /// [`Self::container_body`] scanning with the rule files `files`, relative to the image's
    /// rules (a task's [`super::RuleSet`]); `""` is the rules themselves.
    pub fn container_body_with(
        &self,
        target: &Path,
        labels: &ScanLabels,
        files: &[String],
    ) -> ContainerCreateBody {
        let configs: Vec<String> = files
            .iter()
            .map(|f| match f.as_str() {
                "" => self.rules.clone(),
                f => format!("{}/{f}", self.rules.trim_end_matches('/')),
            })
            .collect();
        let label_map = HashMap::from([
            (ROLE_LABEL.to_string(), ROLE_SAST.to_string()),
            (UNIT_LABEL.to_string(), labels.unit.clone()),
            (RUN_LABEL.to_string(), labels.run.clone()),
            (WORKER_LABEL.to_string(), labels.worker.clone()),
        ]);
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(osemgrep_args_for(&configs, CONTAINER_SRC, &self.settings)),
            labels: Some(label_map),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_string()),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    self.limits.tmpfs_options.clone(),
                )])),
                memory: Some(self.limits.memory_bytes),
                memory_swap: Some(self.limits.memory_bytes),
                nano_cpus: Some(self.limits.nano_cpus),
                pids_limit: Some(self.limits.pids),
                cap_drop: Some(vec!["ALL".to_string()]),
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                // A mount, not a `binds` string: a host path holding `:` cannot break it.
                mounts: Some(vec![Mount {
                    typ: Some(MountType::BIND),
                    source: Some(target.to_string_lossy().into_owned()),
                    target: Some(CONTAINER_SRC.to_string()),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                privileged: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Scans the host directory `target`. Finding paths are relative to it.
    pub async fn scan(&self, target: &Path, labels: &ScanLabels) -> ScanOutcome {
        self.scan_with(target, labels, &[String::new()]).await
    }

    /// Scans `target` with the rule files `files` (see [`Self::container_body_with`]).
    ///
    /// As the bare scanner does, the script sections of `.vue` components are scanned too, as
    /// JavaScript twins, in a second container (only when there are components; see
    /// [`super::vue_script`]).
    pub async fn scan_with(
        &self,
        target: &Path,
        labels: &ScanLabels,
        files: &[String],
    ) -> ScanOutcome {
        let outcome = self.scan_once(target, labels, files).await;
        let ScanOutcome::Completed(report) = outcome else {
            return outcome;
        };
        super::vue_script::with_twins(
            report,
            target,
            &self.settings.exclude,
            super::vue_script::Staging::BesideTarget,
            |stage| async move { self.scan_once(&stage, labels, files).await },
        )
        .await
    }

    async fn scan_once(&self, target: &Path, labels: &ScanLabels, files: &[String]) -> ScanOutcome {
        let target = match std::path::absolute(target) {
            Ok(t) if t.is_dir() => t,
            _ => {
                return ScanOutcome::Failed(ScanFailure::Start(format!(
                    "{} is not a directory",
                    target.display()
                )))
            }
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions::default()),
                self.container_body_with(&target, labels, files),
            )
            .await;
        let id = match created {
            Ok(c) => c.id,
            Err(e) => return runtime_failure("create", &e),
        };
        let guard = ContainerGuard::new(self.docker.clone(), id.clone());
        let outcome = match tokio::time::timeout(self.settings.timeout, self.run(&id)).await {
            Ok(Ok(output)) => outcome_from_process(&output, &self.settings.limits, CONTAINER_SRC),
            Ok(Err(failure)) => ScanOutcome::Failed(failure),
            Err(_) => {
                let _ = self
                    .docker
                    .kill_container(&id, None::<KillContainerOptions>)
                    .await;
                ScanOutcome::Failed(ScanFailure::Timeout {
                    secs: self.settings.timeout.as_secs(),
                })
            }
        };
        guard.remove_now().await;
        outcome
    }

    async fn run(&self, id: &str) -> Result<ProcessOutput, ScanFailure> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| ScanFailure::Runtime(format!("start {id}: {e}")))?;
        let mut logs = self.docker.logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let max = self.settings.limits.max_bytes;
        let mut stdout = Vec::new();
        let mut stdout_overflowed = false;
        let mut stderr: Vec<u8> = Vec::new();
        while let Some(item) = logs.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) => {
                    if stdout.len() + message.len() > max {
                        let room = max - stdout.len();
                        stdout.extend_from_slice(&message[..room]);
                        stdout_overflowed = true;
                        let _ = self
                            .docker
                            .kill_container(id, None::<KillContainerOptions>)
                            .await;
                        break;
                    }
                    stdout.extend_from_slice(&message);
                }
                Ok(LogOutput::StdErr { message }) => {
                    stderr.extend_from_slice(&message);
                    if stderr.len() > STDERR_TAIL_BYTES {
                        stderr.drain(..stderr.len() - STDERR_TAIL_BYTES);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(ScanFailure::Runtime(format!("logs of {id}: {e}"))),
            }
        }
        drop(logs);
        let exit_code = self.exit_code(id).await?;
        Ok(ProcessOutput {
            exit_code,
            stdout,
            stdout_overflowed,
            stderr_tail: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn exit_code(&self, id: &str) -> Result<Option<i32>, ScanFailure> {
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(r)) => Ok(Some(clamp_code(r.status_code))),
            // bollard reports a non-zero exit as this error.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                Ok(Some(clamp_code(code)))
            }
            Some(Err(e)) => Err(ScanFailure::Runtime(format!("wait for {id}: {e}"))),
            None => Err(ScanFailure::Runtime(format!("wait for {id}: no answer"))),
        }
    }
}

fn clamp_code(code: i64) -> i32 {
    i32::try_from(code).unwrap_or(i32::MAX)
}

fn runtime_failure(step: &str, e: &DockerError) -> ScanOutcome {
    ScanOutcome::Failed(ScanFailure::Runtime(format!("{step}: {e}")))
}

/// Removes the SAST containers a previous life of worker `worker` left behind (labels
/// `ase.role=sast` and `ase.worker=<worker>`); call it when the worker starts, before scanning.
/// Returns how many were removed.
pub async fn reap_orphans(docker: &Docker, worker: &str) -> Result<usize, DockerError> {
    crate::container_labels::reap_labelled(docker, ROLE_SAST, worker).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_is_locked_down_and_labelled() {
        let docker = Docker::connect_with_unix_defaults().expect("client builds without a daemon");
        let s = ContainerScanner::new(
            docker,
            "ase-sast:latest".into(),
            IMAGE_RULES.into(),
            ScanSettings::default(),
            ContainerLimits::default(),
        );
        let body = s.container_body(
            Path::new("/work/tree"),
            &ScanLabels {
                unit: "t1_cycle1".into(),
                run: "m__b".into(),
                worker: "w1".into(),
            },
        );
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert!(hc.tmpfs.as_ref().unwrap().contains_key("/tmp"));
        assert_eq!(hc.memory, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory, "no swap beyond the memory limit");
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(256));
        assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(hc.privileged, Some(false));
        let m = &hc.mounts.as_ref().unwrap()[0];
        assert_eq!(m.typ, Some(MountType::BIND));
        assert_eq!(m.source.as_deref(), Some("/work/tree"));
        assert_eq!(m.target.as_deref(), Some(CONTAINER_SRC));
        assert_eq!(m.read_only, Some(true));
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[UNIT_LABEL], "t1_cycle1");
        assert_eq!(labels[RUN_LABEL], "m__b");
        assert_eq!(labels[ROLE_LABEL], ROLE_SAST);
        assert_eq!(labels[WORKER_LABEL], "w1");
        let cmd = body.cmd.as_ref().unwrap();
        assert_eq!(cmd.last().map(String::as_str), Some(CONTAINER_SRC));
        assert!(cmd
            .windows(2)
            .any(|w| w[0] == "--config" && w[1] == IMAGE_RULES));
    }
}
