//! A container this worker started, owned until it is gone: removed (killed when running, its
//! anonymous volumes with it) on every path. SAST scans and v2 evaluations hold one each.
//!
//! The normal path awaits [`ContainerGuard::remove_now`]. When the future holding the guard is
//! cancelled (a revoked lease, a timeout) or returns early, `Drop` spawns the removal on the
//! current Tokio runtime instead: `Drop` cannot await, and blocking on the runtime from inside
//! one of its own tasks would deadlock it. Without a runtime (the guard outlived it) nothing
//! can be sent; the labelled container is reaped at the worker's next start
//! ([`crate::container_labels::reap_labelled`]).

use crate::container_labels::remove_options;
use bollard::errors::Error as DockerError;
use bollard::Docker;

pub struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl ContainerGuard {
    /// Takes ownership of the created container `id`.
    pub fn new(docker: Docker, id: String) -> Self {
        Self {
            docker,
            id: Some(id),
        }
    }

    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Removes the container now and waits for the daemon's answer.
    pub async fn remove_now(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.docker, &id).await;
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let docker = self.docker.clone();
                handle.spawn(async move { remove(&docker, &id).await });
            }
            Err(_) => tracing::warn!(
                container = %id,
                "no runtime to remove the container; it is reaped at the worker's next start"
            ),
        }
    }
}

async fn remove(docker: &Docker, id: &str) {
    match docker.remove_container(id, Some(remove_options())).await {
        // 404: already gone (removed by hand, or reaped).
        Ok(())
        | Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => tracing::warn!(container = %id, error = %e, "cannot remove the container"),
    }
}
