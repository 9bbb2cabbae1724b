//! The agent's sandbox: one container per unit on an internal Docker network this worker
//! creates (no route out of it), whose only service is the worker's model proxy listening on
//! the network's gateway address. The sealed workspace goes in as a tar before the agent starts
//! and comes back out as a tar after it exits; the container is killed at its wall time and
//! always removed.

use super::config::AgentLimits;
use super::proxy::ModelProxy;
use crate::container::ContainerGuard;
use crate::container_labels::{ROLE_LABEL, RUN_LABEL, UNIT_LABEL, WORKER_LABEL};
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, KillContainerOptions, LogsOptions,
    UploadToContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The role label of agent containers (reaped per worker like the others).
pub const ROLE_AGENT: &str = "agent";
/// Bytes of the agent's output kept (its tail) for the record.
pub const OUTPUT_TAIL_BYTES: usize = 8 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("docker: {what}: {source}")]
    Docker {
        what: String,
        #[source]
        source: DockerError,
    },
    #[error("the network {network} exists and is not internal: agents would have a route out")]
    NotInternal { network: String },
    #[error("the agent network {network} has no IPv4 gateway")]
    NoGateway { network: String },
    #[error("the model proxy cannot listen on {addr}: {source}")]
    Proxy {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent image {image} is not on this worker's daemon (build it: deploy/images/build.sh agent)")]
    NoImage { image: String },
    #[error("the agent's workspace archive: {0}")]
    Archive(String),
}

fn docker_err(what: impl Into<String>) -> impl FnOnce(DockerError) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Docker { what, source }
}

/// Removes this worker's agent containers left by an earlier life of it (a killed worker).
pub async fn reap_orphans(docker: &Docker, worker: &str) -> Result<usize, DockerError> {
    crate::container_labels::reap_labelled(docker, ROLE_AGENT, worker).await
}

/// The network and proxy of one worker, made at its first agent unit.
pub struct Sandbox {
    docker: Docker,
    network: String,
    proxy: ModelProxy,
}

/// One agent run.
pub struct RunRequest {
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub limits: AgentLimits,
    pub run: String,
    pub unit: String,
    pub worker: String,
    /// Entries under `workspace/` (and the prompt file), unpacked at `/`.
    pub tar: Vec<u8>,
}

/// How it went.
pub struct RunOutcome {
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub output_tail: String,
    /// The container's `/workspace` after the agent, as a tar; `None` when it timed out.
    pub workspace: Option<tempfile::NamedTempFile>,
    pub seconds: f64,
}

impl Sandbox {
    /// Creates (or reuses) the internal network `name` and binds the proxy on its gateway.
    pub async fn start(docker: Docker, name: &str) -> Result<Sandbox, SandboxError> {
        let inspect = match docker.inspect_network(name, None).await {
            Ok(n) => n,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                let created = docker
                    .create_network(NetworkCreateRequest {
                        name: name.to_string(),
                        driver: Some("bridge".into()),
                        internal: Some(true),
                        // Agents of different units do not reach one another, only the
                        // gateway (the proxies).
                        options: Some(HashMap::from([(
                            "com.docker.network.bridge.enable_icc".to_string(),
                            "false".to_string(),
                        )])),
                        labels: Some(HashMap::from([(
                            ROLE_LABEL.to_string(),
                            ROLE_AGENT.to_string(),
                        )])),
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(_)
                    | Err(DockerError::DockerResponseServerError {
                        status_code: 409, ..
                    }) => {}
                    Err(e) => return Err(docker_err(format!("create network {name}"))(e)),
                }
                docker
                    .inspect_network(name, None)
                    .await
                    .map_err(docker_err(format!("inspect network {name}")))?
            }
            Err(e) => return Err(docker_err(format!("inspect network {name}"))(e)),
        };
        // A network of that name made by someone else must not open a way out.
        if inspect.internal != Some(true) {
            return Err(SandboxError::NotInternal {
                network: name.to_string(),
            });
        }
        let gateway = inspect
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .filter_map(|g| g.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| SandboxError::NoGateway {
                network: name.to_string(),
            })?;
        let addr = SocketAddr::new(gateway, 0);
        let proxy = ModelProxy::bind(addr)
            .await
            .map_err(|source| SandboxError::Proxy {
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(network = %name, proxy = %proxy.addr(), "agent sandbox ready");
        Ok(Sandbox {
            docker,
            network: name.to_string(),
            proxy,
        })
    }

    pub fn proxy(&self) -> &ModelProxy {
        &self.proxy
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    /// Runs one agent to its end or its wall time; the container is removed on every path.
    pub async fn run(&self, req: RunRequest) -> Result<RunOutcome, SandboxError> {
        if self.docker.inspect_image(&req.image).await.is_err() {
            return Err(SandboxError::NoImage { image: req.image });
        }
        let labels = HashMap::from([
            (ROLE_LABEL.to_string(), ROLE_AGENT.to_string()),
            (RUN_LABEL.to_string(), req.run.clone()),
            (UNIT_LABEL.to_string(), req.unit.clone()),
            (WORKER_LABEL.to_string(), req.worker.clone()),
        ]);
        let l = &req.limits;
        let body = ContainerCreateBody {
            image: Some(req.image.clone()),
            cmd: Some(req.argv.clone()),
            env: Some(req.env.clone()),
            working_dir: Some("/workspace".into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                memory: Some(l.memory_bytes as i64),
                memory_swap: Some(l.memory_bytes as i64),
                nano_cpus: Some((l.cpus * 1e9) as i64),
                pids_limit: Some(l.pids),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                privileged: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(CreateContainerOptions::default()), body)
            .await
            .map_err(docker_err(format!(
                "create the agent container ({})",
                req.image
            )))?;
        let guard = ContainerGuard::new(self.docker.clone(), created.id);
        let id = guard.id().to_string();
        self.docker
            .upload_to_container(
                &id,
                Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                bollard::body_full(req.tar.into()),
            )
            .await
            .map_err(docker_err("upload the workspace"))?;
        let started = Instant::now();
        self.docker
            .start_container(&id, None)
            .await
            .map_err(docker_err("start the agent container"))?;
        let wall = Duration::from_secs(l.wall_secs);
        let mut wait = self
            .docker
            .wait_container(&id, None::<WaitContainerOptions>);
        let waited = tokio::time::timeout(wall, wait.next()).await;
        drop(wait);
        let (exit_code, timed_out) = match waited {
            Err(_) => {
                // Killed with its container: SIGKILL to every process, then removal below.
                let _ = self
                    .docker
                    .kill_container(&id, None::<KillContainerOptions>)
                    .await;
                (None, true)
            }
            Ok(Some(Ok(r))) => (Some(r.status_code), false),
            Ok(Some(Err(DockerError::DockerContainerWaitError { code, .. }))) => {
                (Some(code), false)
            }
            Ok(Some(Err(e))) => return Err(docker_err("wait for the agent")(e)),
            Ok(None) => {
                return Err(SandboxError::Archive(
                    "the daemon ended the wait without an answer".into(),
                ))
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let output_tail = self.output_tail(&id).await;
        let workspace = if timed_out {
            None
        } else {
            Some(
                self.download(
                    &id,
                    l.max_workspace_bytes
                        .saturating_add(l.max_result_bytes)
                        .saturating_mul(2),
                )
                .await?,
            )
        };
        guard.remove_now().await;
        Ok(RunOutcome {
            exit_code,
            timed_out,
            output_tail,
            workspace,
            seconds,
        })
    }

    /// The last [`OUTPUT_TAIL_BYTES`] of the agent's stdout and stderr, interleaved.
    async fn output_tail(&self, id: &str) -> String {
        let mut logs = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "400".into(),
                ..Default::default()
            }),
        );
        let mut out: Vec<u8> = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(item) = logs.next().await {
                match item {
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    ) => {
                        out.extend_from_slice(&message);
                        if out.len() > 4 * OUTPUT_TAIL_BYTES {
                            out.drain(..out.len() - OUTPUT_TAIL_BYTES);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
        let _ = read;
        if out.len() > OUTPUT_TAIL_BYTES {
            out.drain(..out.len() - OUTPUT_TAIL_BYTES);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `/workspace` of the stopped container, as a tar in a temporary file of at most `max`.
    async fn download(&self, id: &str, max: u64) -> Result<tempfile::NamedTempFile, SandboxError> {
        let mut file =
            tempfile::NamedTempFile::new().map_err(|e| SandboxError::Archive(e.to_string()))?;
        let mut stream = self.docker.download_from_container(
            id,
            Some(DownloadFromContainerOptions {
                path: "/workspace".into(),
            }),
        );
        let mut total = 0u64;
        let got = tokio::time::timeout(Duration::from_secs(600), async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(docker_err("download the workspace"))?;
                total += chunk.len() as u64;
                if total > max {
                    return Err(SandboxError::Archive(format!(
                        "the workspace grew over {max} bytes"
                    )));
                }
                file.write_all(&chunk)
                    .map_err(|e| SandboxError::Archive(e.to_string()))?;
            }
            Ok(())
        })
        .await;
        match got {
            Err(_) => Err(SandboxError::Archive(
                "downloading the workspace timed out".into(),
            )),
            Ok(r) => r.map(|()| file),
        }
    }
}
