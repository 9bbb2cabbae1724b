//! A worker's image stats (pulls, cache, pulls under way) as its heartbeats tell them: kept
//! per worker in memory, replaced by each heartbeat that carries them (one without them, from
//! an older worker, changes nothing), shown by `list_workers` and in `/metrics` with a
//! `worker` label; a worker that never sent any has no series.

mod support;

use ase_coordinator::metrics::Metrics;
use ase_coordinator::*;
use std::sync::Arc;
use support::*;

fn stats(pulls_total: u64, under_way: usize) -> ImageStats {
    ImageStats {
        pulls_total,
        pulls_failed: 1,
        pull_attempts: pulls_total + 2,
        bytes_downloaded: 5_000,
        cache_images: 2,
        cache_bytes: 9_000,
        cache_pulled_bytes: 7_000,
        cache_budget_bytes: Some(10_000),
        evictions: 3,
        bytes_evicted: 4_000,
        pulls: (0..under_way)
            .map(|i| PullUnderWay {
                image: format!("r/img{i}:1"),
                attempt: 1,
                layers_seen: 4,
                layers_done: 1,
                bytes_downloaded: 100,
                bytes_total: 400,
            })
            .collect(),
        pulls_not_shown: 0,
    }
}

async fn heartbeat(c: &Coordinator, w: &Registration, images: Option<ImageStats>) {
    c.heartbeat(Heartbeat {
        worker_id: w.worker_id.clone(),
        session: w.session,
        images,
        ..Heartbeat::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn heartbeats_image_stats_are_listed_and_exported_per_worker() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    let puller = c.register("puller", caps(1, 1, &[])).await.unwrap();
    let quiet = c.register("quiet", caps(1, 1, &[])).await.unwrap();
    heartbeat(&c, &puller, Some(stats(4, 2))).await;
    heartbeat(&c, &quiet, None).await;

    let metrics = Metrics::new().render(&c);
    for line in [
        "# TYPE ase_worker_image_pulls_total counter",
        "ase_worker_image_pulls_total{worker=\"puller\"} 4",
        "ase_worker_image_pulls_failed_total{worker=\"puller\"} 1",
        "ase_worker_image_pull_attempts_total{worker=\"puller\"} 6",
        "ase_worker_image_pull_bytes_total{worker=\"puller\"} 5000",
        "# TYPE ase_worker_image_pulls_in_progress gauge",
        "ase_worker_image_pulls_in_progress{worker=\"puller\"} 2",
        "ase_worker_image_pull_progress_bytes{worker=\"puller\"} 200",
        "ase_worker_image_pull_progress_layers{worker=\"puller\"} 2",
        "ase_worker_image_cache_images{worker=\"puller\"} 2",
        "ase_worker_image_cache_bytes{worker=\"puller\"} 9000",
        "ase_worker_image_cache_pulled_bytes{worker=\"puller\"} 7000",
        "ase_worker_image_cache_budget_bytes{worker=\"puller\"} 10000",
        "ase_worker_image_evictions_total{worker=\"puller\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert!(!metrics.contains("worker=\"quiet\""), "{metrics}");

    // A heartbeat without stats keeps the last; one with stats replaces them.
    heartbeat(&c, &puller, None).await;
    let listed = |name: &str| {
        c.list_workers()
            .into_iter()
            .find(|w| w.name == name)
            .unwrap()
            .images
    };
    assert_eq!(listed("puller"), Some(stats(4, 2)));
    heartbeat(&c, &puller, Some(stats(5, 0))).await;
    assert_eq!(listed("puller"), Some(stats(5, 0)));
    assert_eq!(listed("quiet"), None);
    let metrics = Metrics::new().render(&c);
    assert!(metrics
        .lines()
        .any(|l| l == "ase_worker_image_pulls_in_progress{worker=\"puller\"} 0"));
}
