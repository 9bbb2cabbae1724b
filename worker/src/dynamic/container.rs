//! The unit's container: its creation request, and command execution with a deadline and
//! bounded output (the guard that always removes it is [`crate::container::ContainerGuard`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ase_common::dataset::DynamicSpec;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::KillContainerOptions;
use bollard::Docker;
use futures_util::StreamExt;

use super::output::OutputCapture;
use super::UnitLabels;

pub use crate::container_labels::{ROLE_LABEL, RUN_LABEL, UNIT_LABEL, WORKER_LABEL};
pub const ROLE_DYNAMIC: &str = "dynamic";

/// Bytes per output frame asked of the daemon (bollard's default is 8 KiB).
const FRAME_CAPACITY: usize = 64 << 10;

/// Splits a dataset command as upstream's docker-py does (`shlex.split`, no shell).
/// `None` when quoting is unbalanced.
pub fn split_command(cmd: &str) -> Option<Vec<String>> {
    shlex::split(cmd)
}

/// The creation request: the task's image and `image_run_cmd` (empty: the image's own CMD, as
/// docker-py sends an empty command list), privileged only when the task asks, labelled.
pub fn container_body(
    spec: &DynamicSpec,
    run_cmd: Option<Vec<String>>,
    labels: &UnitLabels,
) -> ContainerCreateBody {
    let label_map = HashMap::from([
        (ROLE_LABEL.to_string(), ROLE_DYNAMIC.to_string()),
        (RUN_LABEL.to_string(), labels.run.clone()),
        (UNIT_LABEL.to_string(), labels.unit.clone()),
        (WORKER_LABEL.to_string(), labels.worker.clone()),
    ]);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: run_cmd.filter(|c| !c.is_empty()),
        labels: Some(label_map),
        host_config: Some(HostConfig {
            privileged: Some(spec.privileged),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What one command produced.
#[derive(Debug)]
pub struct ExecOutcome {
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub capture: OutputCapture,
    pub seconds: f64,
}

/// Runs `argv` in the container (no shell, the container's working directory, stdout and
/// stderr interleaved as upstream reads them) until it ends or `timeout` passes. The caller
/// kills the container when `timed_out` (see `mod.rs` for why). Transport errors of the output
/// stream are returned, never taken for the end of the output.
pub async fn exec(
    docker: &Docker,
    container: &str,
    argv: Vec<String>,
    timeout: Duration,
    capture: OutputCapture,
) -> Result<ExecOutcome, DockerError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut capture = capture;
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(argv),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let started_exec = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(FRAME_CAPACITY),
            }),
        )
        .await?;
    let mut timed_out = false;
    if let StartExecResults::Attached { mut output, .. } = started_exec {
        loop {
            match tokio::time::timeout_at(deadline, output.next()).await {
                Err(_) => {
                    timed_out = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some(Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::StdErr { message }
                    | LogOutput::Console { message },
                ))) => capture.push(&message),
                Ok(Some(Ok(LogOutput::StdIn { .. }))) => {}
                Ok(Some(Err(e))) => return Err(e),
            }
        }
    }
    let exit_code = if timed_out {
        None
    } else {
        docker.inspect_exec(&created.id).await?.exit_code
    };
    Ok(ExecOutcome {
        exit_code,
        timed_out,
        capture,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Kills every process of the container (SIGKILL) and starts it again: its file system, with
/// the uploaded code and whatever the status check built, is kept.
pub async fn kill_and_restart(docker: &Docker, container: &str) -> Result<(), DockerError> {
    match docker
        .kill_container(container, None::<KillContainerOptions>)
        .await
    {
        // 409: it was not running any more; starting it again is all that is needed.
        Ok(())
        | Err(DockerError::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => return Err(e),
    }
    docker.start_container(container, None).await
}
