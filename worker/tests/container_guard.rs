//! The one container guard of SAST scans and v2 evaluations, against the real daemon: removal
//! on the explicit path and from `Drop`, of running containers, with their anonymous volumes.

use ase_test_support as support;

use std::collections::HashMap;
use std::time::Duration;

use ase_worker::container::ContainerGuard;
use ase_worker::container_labels::UNIT_LABEL;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use support::{containers_labelled, docker_with, v2_image};

/// A running container of the test image labelled with `unit`, with an anonymous volume;
/// returns its id and the volume's name.
async fn running(docker: &Docker, unit: &str) -> (String, String) {
    let body = ContainerCreateBody {
        image: Some(v2_image()),
        labels: Some(HashMap::from([(UNIT_LABEL.to_string(), unit.to_string())])),
        volumes: Some(vec!["/scratch".to_string()]),
        ..Default::default()
    };
    let id = docker
        .create_container(Some(CreateContainerOptions::default()), body)
        .await
        .expect("create")
        .id;
    docker.start_container(&id, None).await.expect("start");
    let inspected = docker.inspect_container(&id, None).await.expect("inspect");
    let volume = inspected
        .mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some("/scratch"))
        .and_then(|m| m.name)
        .expect("an anonymous volume at /scratch");
    (id, volume)
}

/// Waits (bounded) until neither the container of `unit` nor `volume` exists.
async fn assert_gone(docker: &Docker, unit: &str, volume: &str) {
    for _ in 0..50 {
        let containers = containers_labelled(docker, UNIT_LABEL, unit).await;
        let volume_left = docker.inspect_volume(volume).await.is_ok();
        if containers.is_empty() && !volume_left {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the container of {unit} or its volume {volume} was left behind");
}

fn unit(name: &str) -> String {
    format!("guard-{name}-{}", std::process::id())
}

#[tokio::test]
async fn remove_now_removes_a_running_container_and_its_volume() {
    let Some(docker) = docker_with(&v2_image()).await else {
        return;
    };
    let unit = unit("now");
    let (id, volume) = running(&docker, &unit).await;
    let guard = ContainerGuard::new(docker.clone(), id.clone());
    assert_eq!(guard.id(), id);
    guard.remove_now().await;
    assert!(containers_labelled(&docker, UNIT_LABEL, &unit)
        .await
        .is_empty());
    assert_gone(&docker, &unit, &volume).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_guard_removes_its_container_from_a_cancelled_future() {
    let Some(docker) = docker_with(&v2_image()).await else {
        return;
    };
    let unit = unit("dropped");
    let (id, volume) = running(&docker, &unit).await;
    let guard = ContainerGuard::new(docker.clone(), id);
    // The guard's holder is cancelled mid-way, as a revoked lease cancels a unit's task.
    let holder = tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert_gone(&docker, &unit, &volume).await;
}

#[tokio::test]
async fn a_guard_of_a_container_already_gone_is_harmless() {
    let Some(docker) = docker_with(&v2_image()).await else {
        return;
    };
    let unit = unit("gone");
    let (id, volume) = running(&docker, &unit).await;
    ContainerGuard::new(docker.clone(), id.clone())
        .remove_now()
        .await;
    // A second owner of the same id (reaped meanwhile): removal finds nothing, both paths.
    ContainerGuard::new(docker.clone(), id.clone())
        .remove_now()
        .await;
    drop(ContainerGuard::new(docker.clone(), id));
    assert_gone(&docker, &unit, &volume).await;
}

/// Two workers of one name on one daemon (two `ase run` on one machine, each "local", with
/// their own data folders): the start of one reaps only its own orphans, never the other's
/// running containers.
#[tokio::test]
async fn a_worker_start_reaps_only_the_containers_of_its_own_cache() {
    use ase_worker::container_labels::{reap_labelled, ROLE_LABEL, WORKER_LABEL};
    use ase_worker::pipeline::container_owner;
    let Some(docker) = docker_with(&v2_image()).await else {
        return;
    };
    let caches = tempfile::tempdir().unwrap();
    let (a, b) = (caches.path().join("a"), caches.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (owner_a, owner_b) = (container_owner("local", &a), container_owner("local", &b));
    assert_ne!(owner_a, owner_b);
    assert!(owner_a.starts_with("local@"), "{owner_a}");
    let role = format!("reap-test-{}", std::process::id());
    let unit = unit("reap");
    let body = ContainerCreateBody {
        image: Some(v2_image()),
        labels: Some(HashMap::from([
            (UNIT_LABEL.to_string(), unit.clone()),
            (ROLE_LABEL.to_string(), role.clone()),
            (WORKER_LABEL.to_string(), owner_a.clone()),
        ])),
        ..Default::default()
    };
    let id = docker
        .create_container(Some(CreateContainerOptions::default()), body)
        .await
        .expect("create")
        .id;
    let guard = ContainerGuard::new(docker.clone(), id);
    // The other worker of the same name starts: nothing of worker a's is touched.
    assert_eq!(reap_labelled(&docker, &role, &owner_b).await.unwrap(), 0);
    assert_eq!(
        containers_labelled(&docker, UNIT_LABEL, &unit).await.len(),
        1
    );
    // Worker a's own next start reaps it.
    assert_eq!(reap_labelled(&docker, &role, &owner_a).await.unwrap(), 1);
    assert!(containers_labelled(&docker, UNIT_LABEL, &unit)
        .await
        .is_empty());
    drop(guard);
}
