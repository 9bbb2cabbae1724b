//! The worker's task image cache under a disk budget, against a real registry on loopback
//! (Debian's `docker-registry` with htpasswd auth, see test_registry/): three images of the
//! same shape (the v2 test image plus a half-MiB layer of its own) and a budget that fits two.
//! Pulled in sequence by real evaluations, the least recently used image not in use is evicted,
//! an image held by an evaluation never is, and no image the cache did not pull is touched;
//! a real worker agent tells a real coordinator (gRPC on loopback) which images it holds.

mod agent_support;
mod dynamic_fixtures;
use ase_test_support as support;

use std::time::Duration;

use ase_common::unit::EvaluationRecord;
use ase_test_support::registry::*;
use ase_worker::dynamic::{DynamicEvaluator, DynamicSettings};
use ase_worker::images::{CredentialSource, ImagePuller, PullSettings};
use bollard::query_parameters::ListImagesOptionsBuilder;
use bollard::Docker;
use dynamic_fixtures::*;
use support::*;

async fn prerequisites() -> Option<Docker> {
    if let Some(why) = missing_tools() {
        unavailable_unless(
            &why,
            "apt-get install docker-registry apache2-utils (.ci/run does)",
        );
        return None;
    }
    docker_with(&v2_image()).await
}

fn settings(config: &tempfile::TempDir, budget: Option<u64>) -> PullSettings {
    PullSettings {
        credentials: CredentialSource::config_dir(config.path()),
        attempts: 3,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(60),
        cache_bytes: budget,
        ..PullSettings::default()
    }
}

async fn on_daemon(docker: &Docker, reference: &str) -> bool {
    docker.inspect_image(reference).await.is_ok()
}

/// Ids of the images on the daemon that are not this test's (the SAST image, the node image,
/// the v2 test image, whatever else is there).
async fn other_images(docker: &Docker, registry: &str) -> Vec<(String, Vec<String>)> {
    let opts = ListImagesOptionsBuilder::new().all(false).build();
    let mut out: Vec<(String, Vec<String>)> = docker
        .list_images(Some(opts))
        .await
        .expect("list images")
        .into_iter()
        .filter(|i| !i.repo_tags.iter().any(|t| t.starts_with(registry)))
        .map(|i| (i.id, i.repo_tags))
        .collect();
    out.sort();
    out
}

async fn evaluate_secure(ev: &DynamicEvaluator, image: &str, unit: &str) {
    let rec = tokio::time::timeout(
        Duration::from_secs(300),
        ev.evaluate(
            &task(spec(image)),
            &generation(&[(VULN_FILE, FIXED)]),
            &labels(unit),
        ),
    )
    .await
    .expect("the evaluation ends within 300 s")
    .unwrap_or_else(|e| panic!("{unit}: {e}"));
    let EvaluationRecord::Dynamic { checks, steps, .. } = rec else {
        panic!("not a dynamic record")
    };
    assert!(checks.is_secure(), "{unit}: {steps:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_the_least_recently_used_image_not_in_use_is_evicted_and_nothing_else() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let pid = std::process::id();
    let [a, b, c] =
        ["a", "b", "c"].map(|n| registry.reference(&format!("cache-{n}"), &pid.to_string()));
    let _cleanup = ImageCleanup(vec![a.clone(), b.clone(), c.clone()]);
    for image in [&a, &b, &c] {
        build_push_remove(&docker, &v2_image(), image, registry.credentials(PASSWORD)).await;
    }
    let config = registry.docker_config(PASSWORD);
    let others_before = other_images(&docker, &registry.addr).await;
    let sast = std::env::var("ASE_SAST_IMAGE").ok();

    // One image's size as the daemon counts it (the three differ by a few bytes of their
    // marker), measured by a pull without budget; the budget then fits two, not three.
    let probe = ImagePuller::new(docker.clone(), settings(&config, None));
    let (probed, guard) = probe.acquire(&a).await.unwrap_or_else(|e| panic!("{e}"));
    drop(guard);
    let size = probed.size_bytes;
    assert!(size > 512 * 1024, "{probed:?}");
    assert_eq!(probe.cache().enforce_budget().await, Vec::<String>::new());
    remove_image(&docker, &a).await;
    let budget = 2 * size + size / 2;

    let puller = ImagePuller::new(docker.clone(), settings(&config, Some(budget)));
    let ev = DynamicEvaluator::new(docker.clone(), DynamicSettings::default())
        .with_puller(puller.clone());
    let cache = puller.cache();
    // The worker agent of this evaluator, registered with a real coordinator: what it holds is
    // what ListWorkers shows, after each heartbeat.
    let env = agent_support::WorkerEnv::new();
    let server = agent_support::Server::start("127.0.0.1:0".parse().unwrap(), &env.db()).await;
    // A name of its own: the agent reaps the v2 containers labelled with it at start.
    let name = format!("image-cache-{pid}");
    let mut config = agent_support::agent_config(&server.uri());
    config.name = name.clone();
    let agent = agent_support::RunningAgent::start_with(
        config,
        env.context_named(std::path::PathBuf::from("/nonexistent/osemgrep"), &name),
        Some(ev.clone()),
    );
    let coord = server.coord.clone();
    let reported = |want: Vec<String>, what: &'static str| {
        let coord = coord.clone();
        async move {
            agent_support::wait_until(20, what, || {
                coord
                    .list_workers()
                    .first()
                    .is_some_and(|w| w.task_images == want)
            })
            .await
        }
    };
    reported(vec![], "the worker registered, holding no task image").await;

    // A is held by a unit still at work (the guard an evaluation holds) while B and C come.
    let (got_a, held_a) = puller.acquire(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(got_a.pulled, "{got_a:?}");
    evaluate_secure(&ev, &b, "cache-b").await;
    assert_eq!(
        cache.stats().evictions,
        0,
        "two images fit: {:?}",
        cache.stats()
    );
    assert_eq!(cache.held(), vec![a.clone(), b.clone()]);
    reported(vec![a.clone(), b.clone()], "A and B reported").await;

    // C makes three: A is the oldest but in use, so B (least recently used of the others) goes.
    evaluate_secure(&ev, &c, "cache-c").await;
    let stats = cache.stats();
    assert_eq!(stats.evictions, 1, "{stats:?}");
    assert!(on_daemon(&docker, &a).await, "the image in use was evicted");
    assert!(
        !on_daemon(&docker, &b).await,
        "the LRU image is still there"
    );
    assert!(on_daemon(&docker, &c).await);
    assert_eq!(cache.held(), vec![a.clone(), c.clone()]);
    reported(vec![a.clone(), c.clone()], "B's eviction reported").await;
    assert!(stats.pulled_bytes <= budget, "{stats:?}");
    let in_use: Vec<u32> = stats.images.iter().map(|i| i.in_use).collect();
    assert_eq!(in_use.iter().sum::<u32>(), 1, "{stats:?}");
    assert!(stats.images.iter().all(|i| i.pulled), "{stats:?}");
    let evicted_bytes = stats.bytes_evicted;
    assert!(
        evicted_bytes >= size - 4096 && evicted_bytes <= size + 4096,
        "{stats:?}"
    );

    // A's unit ends (its last use is now), then B is needed again: C is now the LRU one.
    drop(held_a);
    evaluate_secure(&ev, &b, "cache-b-again").await;
    let stats = cache.stats();
    assert_eq!(stats.evictions, 2, "{stats:?}");
    assert!(
        !on_daemon(&docker, &c).await,
        "C (least recently used) stays"
    );
    assert!(on_daemon(&docker, &a).await && on_daemon(&docker, &b).await);
    assert_eq!(cache.held(), vec![a.clone(), b.clone()]);
    reported(vec![a.clone(), b.clone()], "C's eviction reported").await;
    agent.shutdown().await;
    server.stop().await;
    assert_eq!(stats.evictions_refused, 0, "{stats:?}");
    assert!(stats.images.iter().all(|i| i.in_use == 0), "{stats:?}");
    let pulls = puller.stats();
    assert_eq!(pulls.pulls_total, 4, "a, b, c, b again: {pulls:?}");
    eprintln!(
        "image size {size} B, budget {budget} B, evictions {}, bytes evicted {}, held {} B",
        stats.evictions, stats.bytes_evicted, stats.pulled_bytes
    );

    // Nothing the cache did not pull was touched: the v2 test image, the SAST image, the rest.
    let others_after = other_images(&docker, &registry.addr).await;
    for (id, tags) in &others_before {
        let interesting = tags
            .iter()
            .any(|t| t.contains("ase-sast") || t.contains("ase-node") || *t == v2_image());
        if interesting {
            assert!(
                others_after.iter().any(|(i, _)| i == id),
                "image {tags:?} ({id}) was removed"
            );
        }
    }
    assert!(on_daemon(&docker, &v2_image()).await);
    if let Some(sast) = sast {
        assert!(on_daemon(&docker, &sast).await, "{sast}");
    }
}

#[tokio::test]
async fn an_image_found_on_the_daemon_is_held_but_never_evicted() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    // The v2 test image is the operator's (built locally, not pulled): a budget of one byte
    // cannot make the cache remove it.
    let config = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(docker.clone(), settings(&config, Some(1)));
    let (found, guard) = puller
        .acquire(&v2_image())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!found.pulled, "{found:?}");
    drop(guard);
    assert_eq!(puller.cache().enforce_budget().await, Vec::<String>::new());
    assert!(on_daemon(&docker, &v2_image()).await);
    assert_eq!(puller.cache().held(), vec![v2_image()]);
    let stats = puller.cache().stats();
    assert_eq!((stats.evictions, stats.pulled_bytes), (0, 0), "{stats:?}");
    assert!(
        !stats.images[0].pulled && stats.images[0].size_bytes > 0,
        "{stats:?}"
    );
}

/// Removes the container when dropped (also on a panic).
struct ContainerCleanup(String);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn an_image_a_container_still_uses_is_kept_and_the_refusal_counted() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let image = registry.reference("cache-used", &std::process::id().to_string());
    let _cleanup = ImageCleanup(vec![image.clone()]);
    build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;
    let config = registry.docker_config(PASSWORD);
    // A budget nothing fits in: every pulled image not in use is a candidate.
    let puller = ImagePuller::new(docker.clone(), settings(&config, Some(1)));
    let (got, guard) = puller
        .acquire(&image)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(got.pulled, "{got:?}");
    // In use: the pass after the pull left it.
    assert_eq!(puller.cache().stats().evictions, 0);
    // A container of it that is not the cache's to know about (a stopped one is enough for
    // the daemon to refuse a removal without force).
    let body = bollard::models::ContainerCreateBody {
        image: Some(got.pinned.clone()),
        ..Default::default()
    };
    let container = docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions::default()),
            body,
        )
        .await
        .expect("create a container")
        .id;
    let _container = ContainerCleanup(container);
    drop(guard);
    assert_eq!(puller.cache().enforce_budget().await, Vec::<String>::new());
    let stats = puller.cache().stats();
    assert_eq!(
        (stats.evictions, stats.evictions_refused),
        (0, 1),
        "{stats:?}"
    );
    assert!(on_daemon(&docker, &image).await);
    assert_eq!(puller.cache().held(), vec![image.clone()]);
    // Once the container is gone, the next pass removes it.
    drop(_container);
    assert_eq!(puller.cache().enforce_budget().await, vec![got.id.clone()]);
    assert!(!on_daemon(&docker, &image).await);
    assert!(puller.cache().held().is_empty());
    assert_eq!(puller.cache().stats().evictions, 1);
}

#[tokio::test]
async fn the_in_use_guard_is_released_when_its_unit_is_cancelled_or_panics() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(docker.clone(), settings(&config, None));
    let in_use =
        |p: &ImagePuller| -> u32 { p.cache().stats().images.iter().map(|i| i.in_use).sum() };
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let cancelled = tokio::spawn({
        let puller = puller.clone();
        async move {
            let (_image, _guard) = puller.acquire(&v2_image()).await.expect("acquire");
            let _ = held_tx.send(());
            // A unit that never ends by itself.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(60), held_rx)
        .await
        .expect("held within 60 s")
        .unwrap();
    assert_eq!(in_use(&puller), 1);
    cancelled.abort();
    let _ = cancelled.await;
    assert_eq!(in_use(&puller), 0, "cancelled");

    let panicked = tokio::spawn({
        let puller = puller.clone();
        async move {
            let (_image, _guard) = puller.acquire(&v2_image()).await.expect("acquire");
            panic!("a unit that panics while it holds its image");
        }
    });
    assert!(panicked.await.unwrap_err().is_panic());
    assert_eq!(in_use(&puller), 0, "panicked");
}
