//! Shared helpers of the coordinator tests: datasets and records written here, real sled in
//! temporary directories, a manual clock.
#![allow(dead_code)]

use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use ase_coordinator::*;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

pub const TTL_MS: u32 = 10_000;

/// Writes fetched report files under `dir` (to read them back with upstream's readers).
pub fn write_files(dir: &Path, files: &[ReportFile]) {
    for f in files {
        assert!(outputs::is_safe_name(&f.name), "{}", f.name);
        let path = dir.join(&f.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &f.content).unwrap();
    }
}
pub const GEN_DEADLINE_MS: u64 = 60_000;

pub fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        heartbeat_interval_ms: 1_000,
        lease_ttl_ms: TTL_MS,
        generate_deadline_ms: GEN_DEADLINE_MS,
        evaluate_deadline_ms: 120_000,
        output_dir: None,
        ..CoordinatorConfig::default()
    }
}

pub fn open(dir: &Path, clock: &Arc<ManualClock>) -> Arc<Coordinator> {
    Coordinator::open(&dir.join("db"), config(), clock.clone()).unwrap()
}

/// A v1 task as the dataset holds it; `source` is its `vuln_source` (a mutated task, `seed`
/// false, takes its context from the seed with the same source).
pub fn v1_task(
    id: &str,
    repo: &str,
    vuln_type: &str,
    detected: i64,
    source: &str,
    seed: bool,
) -> serde_json::Value {
    json!({
        "instance_id": id,
        "repo": repo,
        "base_commit": "0123456789abcdef0123456789abcdef01234567",
        "vuln_file": "src/a.php",
        "vuln_lines": [1, 3],
        "language": "php",
        "vuln_source": source,
        "seed": seed,
        "vuln_type": vuln_type,
        "cwe_id": "CWE-89",
        "detected_tool": "example/sast:latest",
        "detected_vul_num": detected
    })
}

/// A v1 task: (instance_id, repo, vuln_type, detected_vul_num); every one is a seed.
pub fn v1_dataset(tasks: &[(&str, &str, &str, i64)]) -> Vec<u8> {
    let items: Vec<_> = tasks
        .iter()
        .map(|(id, repo, ty, n)| v1_task(id, repo, ty, *n, &format!("CVE-{id}"), true))
        .collect();
    serde_json::to_vec(&items).unwrap()
}

pub fn spec(batch: &str, rounds: u32, limits: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model_name": "test-model",
        "batch": batch,
        "rounds": rounds,
        "limits": limits,
        "temperature": 0.0,
        "something_else": {"ignored": true}
    }))
    .unwrap()
}

pub fn submit_req(
    batch: &str,
    rounds: u32,
    limits: serde_json::Value,
    dataset: Vec<u8>,
) -> SubmitRun {
    SubmitRun {
        run_spec_json: spec(batch, rounds, limits),
        dataset,
        dataset_name: "tasks.json".into(),
        context: Vec::new(),
        context_name: String::new(),
        api_key: None,
    }
}

pub fn caps(generate: u32, eval: u32, repos: &[&str]) -> Capabilities {
    Capabilities {
        eval_slots: eval,
        generate_slots: generate,
        docker: true,
        cached_repos: repos.iter().map(|s| s.to_string()).collect(),
        version: "test".into(),
        task_images: vec![],
        unprivileged: false,
    }
}

pub fn generation(unit: &UnitId, success: bool) -> Vec<u8> {
    serde_json::to_vec(&GenerationRecord {
        unit: unit.clone(),
        success,
        reason: None,
        method: None,
        raw_answer: Some("answer".into()),
        answer_truncated: false,
        changed_files: vec![],
        deleted_files: vec![],
        // What the model API reported: the report carries it per unit and sums it per run.
        usage: Some(ase_common::unit::TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        }),
        cost_usd: Some(0.25),
        time_cost: 1.5,
        model_attempts: 1,
        prompt_tokens_estimate: None,
        agent: None,
    })
    .unwrap()
}

pub fn static_eval(unit: &UnitId, detected: i64, baseline: i64) -> Vec<u8> {
    serde_json::to_vec(&EvaluationRecord::Static {
        unit: unit.clone(),
        detected_vul_num: detected,
        baseline,
        reason: None,
        seconds: 0.1,
        scan: None,
    })
    .unwrap()
}

pub fn unit_of(g: &LeaseGrant) -> UnitId {
    UnitId::new(g.instance_id.clone(), g.round)
}

pub fn lease_req(r: &Registration, max_generate: u32, max_evaluate: u32) -> LeaseWork {
    LeaseWork {
        worker_id: r.worker_id.clone(),
        session: r.session,
        max_generate,
        max_evaluate,
        wait_ms: 0,
    }
}

pub fn completion(r: &Registration, g: &LeaseGrant, result: Vec<u8>) -> Completion {
    Completion {
        worker_id: r.worker_id.clone(),
        lease: g.lease,
        phase: g.phase,
        result_json: result,
    }
}

/// Generates then evaluates every unit it gets until the run has nothing left to lease, then
/// waits for the background finisher to be done with the runs that left (completed, or failed
/// to write their files).
pub async fn drive(c: &Coordinator, r: &Registration, detected: i64, baseline: i64) {
    loop {
        let reply = c.lease_work(lease_req(r, 8, 8)).await.unwrap();
        if reply.leases.is_empty() {
            c.finish_pending().await;
            return;
        }
        for g in &reply.leases {
            let result = match g.phase {
                Phase::Generate => generation(&unit_of(g), true),
                Phase::Evaluate => static_eval(&unit_of(g), detected, baseline),
            };
            let ack = c.complete(completion(r, g, result)).await.unwrap();
            assert!(ack.accepted, "{ack:?}");
        }
    }
}
