//! `bench images`: what placement by image and pulls during generation save on a v2 campaign
//! whose task images are heavy. T v2 tasks over I images live in a real loopback registry
//! (Debian's `docker-registry` with htpasswd auth, test-support's helper); a real coordinator
//! (in process, durable store) places the units; W simulated workers lease them. A generation
//! takes `--model-ms` (a model with a set latency); an evaluation needs its image in the
//! worker's own store, pulled once per worker over the registry's HTTP API (blobs checked and
//! written, a worker's pulls taking turns on a link paced to `--link-mb-per-s`), then takes
//! `--eval-ms`.
//!
//! The same campaign runs twice on fresh stores: with the coordinator's placement by image and
//! the workers' pulls during generation (the worker's `prefetch_image` policy: a generate lease
//! starts the pull of its task's image, which every need of the image on that worker shares),
//! then with both off (`CoordinatorConfig::image_affinity = false`, no pull before the
//! evaluation). Each worker has its own store because W workers on one Docker daemon would
//! share its images: a real worker's pull goes through its own daemon. Prints `pulls_total=`,
//! `wall_s=` and, last, `ratio=` (wall with / wall without).

use crate::images_registry::RegistryClient;
use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, V2Scan};
use ase_coordinator::{
    Capabilities, Completion, Coordinator, CoordinatorConfig, Heartbeat, ImageStats, LeaseRef,
    LeaseWork, Phase, PullUnderWay, SubmitRun, SystemClock,
};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// v2 tasks (one round each).
    #[arg(long, default_value_t = 32)]
    tasks: usize,
    /// Distinct images the tasks use (task i uses image i mod I).
    #[arg(long, default_value_t = 8)]
    images: usize,
    /// Size of each image's layer, in MB (10^6 bytes of random data).
    #[arg(long, default_value_t = 50)]
    image_mb: usize,
    /// Download rate of each worker's link to the registry, in MB/s, shared by its pulls
    /// (0: as fast as loopback goes).
    #[arg(long, default_value_t = 20)]
    link_mb_per_s: u64,
    /// Latency of the model: one generation, in milliseconds.
    #[arg(long, default_value_t = 6000)]
    model_ms: u64,
    /// One evaluation once its image is there, in milliseconds.
    #[arg(long, default_value_t = 500)]
    eval_ms: u64,
    /// Generate slots and evaluate slots of each worker.
    #[arg(long, default_value_t = 2)]
    slots: u32,
}

type Pull = Shared<BoxFuture<'static, Result<(), String>>>;

/// One simulated worker's images: its store, the pulls under way, what it holds.
struct WorkerImages {
    registry: RegistryClient,
    store: PathBuf,
    rate: Option<u64>,
    /// The worker's link: its pulls take turns on it, so together they go at `rate`.
    link: tokio::sync::Mutex<()>,
    pulls: Mutex<HashMap<String, Pull>>,
    held: Mutex<HashSet<String>>,
    /// Repos it generated for (a real worker clones them and says so in its heartbeats).
    repos: Mutex<HashSet<String>>,
    pulls_total: Arc<AtomicU64>,
}

impl WorkerImages {
    /// The pull of `reference` (`name:tag` in the registry), shared by every need of it.
    fn pull(self: &Arc<Self>, reference: &str) -> Pull {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pulls.get(reference) {
            return p.clone();
        }
        let me = self.clone();
        let reference = reference.to_string();
        let key = reference.clone();
        let p = async move {
            // `HOST:PORT/NAME:TAG`: the registry is the client's, the rest its path.
            let path = reference
                .split_once('/')
                .map_or(reference.as_str(), |(_, p)| p);
            let (name, tag) = path.rsplit_once(':').expect("name:tag");
            let pulled = {
                let _link = me.link.lock().await;
                me.registry.pull_image(name, tag, &me.store, me.rate).await
            };
            match pulled {
                Ok(_) => {
                    me.pulls_total.fetch_add(1, Ordering::Relaxed);
                    me.held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(reference);
                    Ok(())
                }
                Err(e) => Err(format!("{e:#}")),
            }
        }
        .boxed()
        .shared();
        pulls.insert(key, p.clone());
        // Driven by its own task: a need that stops waiting does not stop the pull.
        tokio::spawn(p.clone());
        p
    }

    /// Its pulls under way, as a real worker's heartbeat lists them (the coordinator counts
    /// them as held for placement).
    fn stats(&self) -> ImageStats {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        ImageStats {
            pulls_total: held.len() as u64,
            pulls: pulls
                .keys()
                .filter(|r| !held.contains(*r))
                .map(|r| PullUnderWay {
                    image: r.clone(),
                    attempt: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn held(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// A v2 image holds its project: tasks that share an image share a repo (the rounds and the
/// mutations of one task), so task i's repo goes with its image i mod I.
fn repo_of(task: usize, images: usize) -> String {
    format!("bench/repo{}", task % images)
}

fn dataset(tasks: usize, images: &[String]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..tasks)
        .map(|i| {
            serde_json::json!({
                "instance_id": format!("img_{i:04}"),
                "repo": repo_of(i, images.len()),
                "base_commit": "0123456789abcdef0123456789abcdef01234567",
                "vuln_file": "src/a.c",
                "vuln_lines": [1, 3],
                "language": "c",
                "vuln_source": format!("CVE-{i}"),
                "cwe_id": "CWE-125",
                "vuln_type": "Out-of-bounds Read",
                "severity": "high",
                "image": images[i % images.len()],
                "image_inner_path": "/src",
                "image_run_cmd": "",
                "image_status_check_cmd": "true",
                "test_case_cmd": "true",
                "poc_cmd": "true",
                "patch_commit": "0123456789abcdef0123456789abcdef01234567"
            })
        })
        .collect();
    serde_json::to_vec(&items).expect("JSON")
}

fn evaluation(unit: UnitId, seconds: f64) -> Vec<u8> {
    serde_json::to_vec(&EvaluationRecord::Dynamic {
        unit,
        checks: V2Scan {
            completion: true,
            image_status_check: true,
            test_case_check: true,
            poc_check: true,
        },
        steps: vec![],
        reason: None,
        seconds,
        image_digest: None,
    })
    .expect("JSON")
}

struct Outcome {
    wall_s: f64,
    pulls_total: u64,
}

/// One campaign on a fresh coordinator store and fresh worker stores.
async fn campaign(
    args: &Args,
    registry: &RegistryClient,
    references: &[String],
    by_image: bool,
) -> anyhow::Result<Outcome> {
    let tmp = tempfile::tempdir()?;
    let c = Coordinator::open(
        &tmp.path().join("db"),
        CoordinatorConfig {
            heartbeat_interval_ms: 500,
            lease_ttl_ms: 10_000,
            image_affinity: by_image,
            ..CoordinatorConfig::default()
        },
        Arc::new(SystemClock),
    )?;
    let image_of: HashMap<String, (String, String)> = (0..args.tasks)
        .map(|i| {
            let image = references[i % references.len()].clone();
            (format!("img_{i:04}"), (repo_of(i, references.len()), image))
        })
        .collect();
    let image_of = Arc::new(image_of);
    let spec = serde_json::json!({"model_name": "bench", "batch": "images", "rounds": 1});
    let sub = c
        .submit_run(SubmitRun {
            run_spec_json: serde_json::to_vec(&spec)?,
            dataset: dataset(args.tasks, references),
            dataset_name: "bench-images.json".into(),
            ..SubmitRun::default()
        })
        .await?;
    let pulls_total = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.workers {
        let store = tmp.path().join(format!("worker-{w}"));
        std::fs::create_dir_all(&store)?;
        let images = Arc::new(WorkerImages {
            registry: registry.clone(),
            store,
            rate: (args.link_mb_per_s > 0).then(|| args.link_mb_per_s * 1_000_000),
            link: tokio::sync::Mutex::new(()),
            pulls: Mutex::new(HashMap::new()),
            held: Mutex::new(HashSet::new()),
            repos: Mutex::new(HashSet::new()),
            pulls_total: pulls_total.clone(),
        });
        workers.push(tokio::spawn(worker(
            c.clone(),
            format!("images-{w}"),
            args.clone(),
            images,
            image_of.clone(),
            by_image,
            done.clone(),
        )));
    }
    // Bounded: every unit's phases are bounded by the leases' TTL and the pulls' timeout.
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let p = c.progress(&sub.run_id)?;
        if p.state == "completed" {
            anyhow::ensure!(
                p.evaluate.done == args.tasks as u64,
                "the campaign completed with failures: {p:?}"
            );
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the campaign did not end: {p:?}");
        if let Some(ended) = workers.iter().position(|w| w.is_finished()) {
            let w = workers.remove(ended);
            w.await??;
            anyhow::bail!("a worker stopped before the campaign ended");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall_s = start.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.await??;
    }
    Ok(Outcome {
        wall_s,
        pulls_total: pulls_total.load(Ordering::Relaxed),
    })
}

/// Leases what its free slots allow until `done`; heartbeats (leases renewed, images held)
/// on a task of its own.
async fn worker(
    c: Arc<Coordinator>,
    name: String,
    args: Args,
    images: Arc<WorkerImages>,
    image_of: Arc<HashMap<String, (String, String)>>,
    prefetch: bool,
    done: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let caps = Capabilities {
        eval_slots: args.slots,
        generate_slots: args.slots,
        docker: true,
        cached_repos: vec![],
        version: "bench".into(),
        task_images: vec![],
        unprivileged: false,
    };
    let r = c.register(&name, caps).await?;
    let active: Arc<Mutex<HashMap<u64, LeaseRef>>> = Arc::default();
    let busy = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let heartbeat = tokio::spawn({
        let (c, r, active, images, done) = (
            c.clone(),
            r.clone(),
            active.clone(),
            images.clone(),
            done.clone(),
        );
        async move {
            while !done.load(Ordering::SeqCst) {
                let leases: Vec<LeaseRef> = active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .copied()
                    .collect();
                let cached_repos: Vec<String> = images
                    .repos
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                c.heartbeat(Heartbeat {
                    worker_id: r.worker_id.clone(),
                    session: r.session,
                    active: leases,
                    task_images: images.held(),
                    images: Some(images.stats()),
                    cached_repos,
                    ..Heartbeat::default()
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            anyhow::Ok(())
        }
    });
    let mut units = tokio::task::JoinSet::new();
    while !done.load(Ordering::SeqCst) {
        let free_gen = args.slots.saturating_sub(busy[0].load(Ordering::SeqCst));
        let free_eval = args.slots.saturating_sub(busy[1].load(Ordering::SeqCst));
        if free_gen == 0 && free_eval == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let reply = c
            .lease_work(LeaseWork {
                worker_id: r.worker_id.clone(),
                session: r.session,
                max_generate: free_gen,
                max_evaluate: free_eval,
                wait_ms: 50,
            })
            .await?;
        for g in reply.leases {
            let i = if g.phase == Phase::Generate { 0 } else { 1 };
            busy[i].fetch_add(1, Ordering::SeqCst);
            active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(g.lease.lease_id, g.lease);
            let (c, r, active, busy, images) = (
                c.clone(),
                r.clone(),
                active.clone(),
                busy.clone(),
                images.clone(),
            );
            let (repo, image) = image_of[&g.instance_id].clone();
            let (model_ms, eval_ms) = (args.model_ms, args.eval_ms);
            units.spawn(async move {
                let unit = UnitId::new(g.instance_id.clone(), g.round);
                let result_json = match g.phase {
                    Phase::Generate => {
                        if prefetch {
                            drop(images.pull(&image));
                        }
                        images
                            .repos
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(repo);
                        tokio::time::sleep(Duration::from_millis(model_ms)).await;
                        crate::dispatch_local::generation(unit)
                    }
                    Phase::Evaluate => {
                        let t = Instant::now();
                        images
                            .pull(&image)
                            .await
                            .map_err(|e| anyhow::anyhow!("pull of {image}: {e}"))?;
                        tokio::time::sleep(Duration::from_millis(eval_ms)).await;
                        evaluation(unit, t.elapsed().as_secs_f64())
                    }
                };
                let ack = c
                    .complete(Completion {
                        worker_id: r.worker_id.clone(),
                        lease: g.lease,
                        phase: g.phase,
                        result_json,
                    })
                    .await?;
                anyhow::ensure!(ack.accepted, "refused: {}", ack.reason);
                active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&g.lease.lease_id);
                busy[i].fetch_sub(1, Ordering::SeqCst);
                anyhow::Ok(())
            });
        }
        while let Some(ended) = units.try_join_next() {
            ended??;
        }
    }
    while let Some(ended) = units.join_next().await {
        ended??;
    }
    heartbeat.await??;
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workers > 0 && args.tasks > 0 && args.images > 0 && args.slots > 0,
        "--workers, --tasks, --images and --slots must be positive"
    );
    if let Some(why) = ase_test_support::registry::missing_tools() {
        anyhow::bail!("{why}: apt-get install docker-registry apache2-utils");
    }
    let registry = ase_test_support::registry::TestRegistry::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = RegistryClient::new(
            &registry.addr,
            ase_test_support::registry::USER,
            ase_test_support::registry::PASSWORD,
        )?;
        let mut references = Vec::new();
        for i in 0..args.images {
            let name = format!("ase-bench/img{i}");
            client
                .push_image(&name, "1", args.image_mb * 1_000_000)
                .await?;
            references.push(format!("{}/{name}:1", registry.addr));
        }
        println!(
            "workers={} tasks={} images={} image_mb={} link_mb_per_s={} model_ms={} eval_ms={} slots={}",
            args.workers,
            args.tasks,
            args.images,
            args.image_mb,
            args.link_mb_per_s,
            args.model_ms,
            args.eval_ms,
            args.slots
        );
        let with = campaign(&args, &client, &references, true).await?;
        println!(
            "with placement and background pulls: pulls_total={} wall_s={:.2}",
            with.pulls_total, with.wall_s
        );
        let without = campaign(&args, &client, &references, false).await?;
        println!(
            "without: pulls_total={} wall_s={:.2}",
            without.pulls_total, without.wall_s
        );
        println!("pulls_total={}", with.pulls_total);
        println!("wall_s={:.2}", with.wall_s);
        println!("ratio={:.3}", with.wall_s / without.wall_s);
        drop(registry);
        anyhow::Ok(())
    })
}
