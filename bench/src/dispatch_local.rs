//! `bench dispatch-local`: the coordinator's dispatch rate in one process, without network:
//! simulated workers lease, generate and evaluate units with small records, and every
//! transition is durable (group commit) before it is acknowledged, as in production.

use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use ase_coordinator::{
    Capabilities, Completion, Coordinator, CoordinatorConfig, LeaseWork, Phase, SubmitRun,
    SystemClock,
};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Units to dispatch (tasks x 1 round).
    #[arg(long, default_value_t = 2000)]
    units: usize,
    /// Simulated workers running at once.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Generate and evaluate slots of each worker.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Database directory (default: a temporary one).
    #[arg(long)]
    db: Option<std::path::PathBuf>,
}

pub(crate) fn dataset(n: usize) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "instance_id": format!("bench_{i:06}"),
                "repo": format!("bench/repo{}", i % 16),
                "base_commit": "0123456789abcdef0123456789abcdef01234567",
                "vuln_file": "src/a.php",
                "vuln_lines": [1, 3],
                "language": "php",
                "vuln_source": format!("CVE-{i}"),
                "seed": true,
                "vuln_type": "SQLI",
                "cwe_id": "CWE-89",
                "detected_tool": "bench",
                "detected_vul_num": 1
            })
        })
        .collect();
    serde_json::to_vec(&items).expect("JSON")
}

pub(crate) fn generation(unit: UnitId) -> Vec<u8> {
    serde_json::to_vec(&GenerationRecord {
        unit,
        success: true,
        reason: None,
        method: None,
        raw_answer: Some("x".repeat(512)),
        answer_truncated: false,
        changed_files: vec![],
        deleted_files: vec![],
        usage: None,
        cost_usd: None,
        time_cost: 0.0,
        model_attempts: 1,
        prompt_tokens_estimate: None,
        agent: None,
    })
    .expect("JSON")
}

pub(crate) fn evaluation(unit: UnitId) -> Vec<u8> {
    serde_json::to_vec(&EvaluationRecord::Static {
        unit,
        detected_vul_num: 0,
        baseline: 1,
        reason: None,
        seconds: 0.0,
        scan: None,
    })
    .expect("JSON")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = args.db.clone().unwrap_or_else(|| tmp.path().join("db"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let c = Coordinator::open(&db, CoordinatorConfig::default(), Arc::new(SystemClock))?;
        let spec = serde_json::json!({"model_name": "bench", "batch": "dispatch", "rounds": 1});
        let sub = c
            .submit_run(SubmitRun {
                run_spec_json: serde_json::to_vec(&spec)?,
                dataset: dataset(args.units),
                dataset_name: "bench.json".into(),
                ..SubmitRun::default()
            })
            .await?;
        let flushes_before = c.store().flush_count();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..args.workers {
            let c = c.clone();
            let slots = args.slots;
            tasks.push(tokio::spawn(async move {
                let caps = Capabilities {
                    eval_slots: slots,
                    generate_slots: slots,
                    docker: true,
                    cached_repos: vec![format!("bench/repo{}", w % 16)],
                    version: "bench".into(),
                    task_images: vec![],
                    unprivileged: false,
                };
                let r = c.register(&format!("bench-{w}"), caps).await?;
                let mut transitions = 0u64;
                loop {
                    let reply = c
                        .lease_work(LeaseWork {
                            worker_id: r.worker_id.clone(),
                            session: r.session,
                            max_generate: slots,
                            max_evaluate: slots,
                            wait_ms: 50,
                        })
                        .await?;
                    transitions += 1;
                    if reply.leases.is_empty() {
                        return anyhow::Ok(transitions);
                    }
                    for g in reply.leases {
                        let unit = UnitId::new(g.instance_id.clone(), g.round);
                        let result_json = match g.phase {
                            Phase::Generate => generation(unit),
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
                        transitions += 1;
                    }
                }
            }));
        }
        let mut transitions = 0;
        for t in tasks {
            transitions += t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        let p = c.progress(&sub.run_id)?;
        anyhow::ensure!(
            p.state == "completed" && p.evaluate.done == args.units as u64,
            "run did not complete: {p:?}"
        );
        let flushes = c.store().flush_count() - flushes_before;
        println!(
            "units={} workers={} slots={}",
            args.units, args.workers, args.slots
        );
        println!("seconds={secs:.3}");
        println!("durable_transitions={transitions} flushes={flushes}");
        println!(
            "transitions_per_flush={:.1}",
            transitions as f64 / flushes.max(1) as f64
        );
        println!("units_per_sec={:.1}", args.units as f64 / secs);
        anyhow::Ok(())
    })
}
