//! What every container this worker starts carries, and how leftovers are found and removed.
//!
//! SAST scans and v2 evaluations label their containers alike so that a restarted worker reaps
//! exactly its own orphans (per role and worker name) on a daemon it may share with others.

use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, RemoveContainerOptionsBuilder,
};
use bollard::{errors::Error as DockerError, Docker};
use std::collections::HashMap;

/// Which part of the worker created the container (`sast`, `dynamic`).
pub const ROLE_LABEL: &str = "ase.role";
pub const RUN_LABEL: &str = "ase.run";
pub const UNIT_LABEL: &str = "ase.unit";
/// The worker that started the container; orphans are reaped per worker, so one worker
/// starting up never removes another's running containers on a shared daemon.
pub const WORKER_LABEL: &str = "ase.worker";

/// Removal that never leaves anything behind: running containers are killed, volumes go too.
pub fn remove_options() -> RemoveContainerOptions {
    RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build()
}

/// Removes every container (running or not) labelled with `role` and `worker`. Returns how many
/// were removed.
pub async fn reap_labelled(
    docker: &Docker,
    role: &str,
    worker: &str,
) -> Result<usize, DockerError> {
    // Several label filters are ANDed by the daemon.
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{ROLE_LABEL}={role}"),
            format!("{WORKER_LABEL}={worker}"),
        ],
    )]);
    let found = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut removed = 0;
    for c in found {
        if let Some(id) = c.id {
            docker.remove_container(&id, Some(remove_options())).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
