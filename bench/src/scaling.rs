//! `bench scaling`: how the coordinator's dispatch scales with workers when units take real
//! time. Simulated workers (one generate slot each) sleep `--unit-ms` per generation and
//! evaluate at once; every transition is durable. For each worker count W the same units are
//! run on a fresh store; efficiency is T1 / (W * TW). Last line `efficiency_{Wmax}=...`.

use crate::dispatch_local::{dataset, evaluation, generation};
use ase_common::scoring::UnitId;
use ase_coordinator::{
    Capabilities, Completion, Coordinator, CoordinatorConfig, LeaseWork, Phase, SubmitRun,
    SystemClock,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Time one unit takes on a worker (its generate phase), in milliseconds.
    #[arg(long, default_value_t = 250)]
    unit_ms: u64,
    /// Worker counts to measure, comma-separated; the first is the reference (normally 1).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    workers: Vec<usize>,
    /// Units per measurement (default: 4 per worker of the largest count).
    #[arg(long)]
    units: Option<usize>,
}

/// Seconds to run `units` units on `workers` simulated workers.
async fn measure(units: usize, workers: usize, unit_ms: u64) -> anyhow::Result<f64> {
    let tmp = tempfile::tempdir()?;
    let c = Coordinator::open(
        &tmp.path().join("db"),
        CoordinatorConfig::default(),
        Arc::new(SystemClock),
    )?;
    let spec = serde_json::json!({"model_name": "bench", "batch": "scaling", "rounds": 1});
    let sub = c
        .submit_run(SubmitRun {
            run_spec_json: serde_json::to_vec(&spec)?,
            dataset: dataset(units),
            dataset_name: "bench.json".into(),
            ..SubmitRun::default()
        })
        .await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let caps = Capabilities {
                eval_slots: 1,
                generate_slots: 1,
                docker: true,
                cached_repos: vec![],
                version: "bench".into(),
                task_images: vec![],
                unprivileged: false,
            };
            let r = c.register(&format!("scale-{w}"), caps).await?;
            loop {
                let reply = c
                    .lease_work(LeaseWork {
                        worker_id: r.worker_id.clone(),
                        session: r.session,
                        max_generate: 1,
                        max_evaluate: 1,
                        wait_ms: 50,
                    })
                    .await?;
                if reply.leases.is_empty() {
                    return anyhow::Ok(());
                }
                for g in reply.leases {
                    let unit = UnitId::new(g.instance_id.clone(), g.round);
                    let result_json = match g.phase {
                        Phase::Generate => {
                            tokio::time::sleep(Duration::from_millis(unit_ms)).await;
                            generation(unit)
                        }
                        Phase::Evaluate => evaluation(unit),
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
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let p = c.progress(&sub.run_id)?;
    anyhow::ensure!(
        p.state == "completed" && p.evaluate.done == units as u64,
        "run with {workers} workers did not complete: {p:?}"
    );
    Ok(secs)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!args.workers.is_empty(), "--workers: at least one count");
    let max = *args.workers.iter().max().unwrap_or(&1);
    let units = args.units.unwrap_or(4 * max);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let reference = args.workers[0];
        let mut t_ref = None;
        let mut last = (0, 0.0);
        println!("units={units} unit_ms={}", args.unit_ms);
        for &w in &args.workers {
            let secs = measure(units, w, args.unit_ms).await?;
            let t1 = *t_ref.get_or_insert(secs * reference as f64);
            let efficiency = t1 / (w as f64 * secs);
            println!("workers={w} seconds={secs:.3} efficiency={efficiency:.3}");
            last = (w, efficiency);
        }
        println!("efficiency_{}={:.3}", last.0, last.1);
        anyhow::Ok(())
    })
}
