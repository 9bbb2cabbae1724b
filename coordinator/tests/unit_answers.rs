//! A predictions run's answers travel unit by unit: the spec workers fetch (by the digest each
//! lease names) holds none, each generate lease carries its own unit's entries, and one reply
//! never carries more than its byte budget.

mod support;

use ase_coordinator::*;
use ase_proto::limits::MAX_LEASE_REPLY_BYTES;
use serde_json::json;
use std::sync::Arc;
use support::*;

/// A predictions run of `tasks` tasks and `rounds` rounds whose every answer is `answer_bytes`
/// long and names its unit.
fn predictions_submit(tasks: usize, rounds: u32, answer_bytes: usize) -> SubmitRun {
    let ids: Vec<String> = (0..tasks).map(|i| format!("t{i}")).collect();
    let rows: Vec<(&str, &str, &str, i64)> = ids
        .iter()
        .map(|id| (id.as_str(), "o/r", "SQLI", 1))
        .collect();
    let mut entries = Vec::new();
    for id in &ids {
        for round in 1..=rounds {
            let mut answer = format!("answer of {id} round {round}:");
            answer.push_str(&"x".repeat(answer_bytes));
            entries.push(json!({"instance_id": id, "round": round, "answer": answer}));
        }
    }
    let spec = json!({
        "model_name": "pred",
        "batch": "split",
        "rounds": rounds,
        "model": {"provider": "predictions", "entries": entries},
    });
    SubmitRun {
        run_spec_json: serde_json::to_vec(&spec).unwrap(),
        dataset: v1_dataset(&rows),
        dataset_name: "tasks.json".into(),
        context: Vec::new(),
        context_name: String::new(),
        api_key: None,
    }
}

#[tokio::test]
async fn each_generate_lease_carries_only_its_units_answers_and_names_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let answer_bytes = 3 << 20;
    let req = predictions_submit(2, 2, answer_bytes);
    let submitted_bytes = req.run_spec_json.len();
    let run = c.submit_run(req).await.unwrap();
    let w = c.register("w", caps(8, 0, &[])).await.unwrap();
    let reply = c.lease_work(lease_req(&w, 8, 0)).await.unwrap();
    assert_eq!(reply.leases.len(), 4, "every unit at once");
    for g in &reply.leases {
        let lines = String::from_utf8(g.unit_predictions_jsonl.clone()).unwrap();
        let own = format!("answer of {} round {}:", g.instance_id, g.round);
        assert!(lines.contains(&own), "{} lacks its answer", g.instance_id);
        assert_eq!(lines.lines().count(), 1, "one entry, its own");
        assert!(g.unit_predictions_jsonl.len() < answer_bytes + 1024);
        assert!(!g.spec_digest.is_empty());
    }
    let spec_ref = |digest: &str| SpecRef {
        worker_id: w.worker_id.clone(),
        run_id: run.run_id.clone(),
        digest: digest.to_string(),
    };
    let spec = c
        .fetch_run_spec(&spec_ref(&reply.leases[0].spec_digest))
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&spec).unwrap();
    assert_eq!(value["model"]["entries"], json!([]));
    assert_eq!(value["model"]["provider"], "predictions");
    assert!(
        spec.len() < 1024,
        "{} of {submitted_bytes} bytes",
        spec.len()
    );
    let wrong = c.fetch_run_spec(&spec_ref(&"0".repeat(64))).unwrap_err();
    assert!(
        matches!(wrong, CoordinatorError::Conflict { .. }),
        "{wrong}"
    );

    // The answers are stored with their tasks: they survive a restart.
    drop(reply);
    drop(c);
    let c = open(dir.path(), &clock);
    clock.advance_ms(u64::from(TTL_MS) + 1);
    c.sweep().await.unwrap();
    let w = c.register("w", caps(8, 0, &[])).await.unwrap();
    let reply = c.lease_work(lease_req(&w, 8, 0)).await.unwrap();
    assert_eq!(reply.leases.len(), 4);
    assert!(reply
        .leases
        .iter()
        .all(|g| String::from_utf8_lossy(&g.unit_predictions_jsonl)
            .contains(&format!("answer of {} round {}:", g.instance_id, g.round))));
}

#[tokio::test]
async fn a_reply_stays_within_its_byte_budget_and_the_rest_is_given_back_uncounted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    // Six units of 7 MiB answers: more than one reply's budget asked for at once.
    let run = c
        .submit_run(predictions_submit(3, 2, 7 << 20))
        .await
        .unwrap();
    let w = c.register("w", caps(8, 0, &[])).await.unwrap();
    let mut leased = 0;
    for _ in 0..6 {
        let reply = c.lease_work(lease_req(&w, 8, 0)).await.unwrap();
        let bytes: usize = reply.leases.iter().map(LeaseGrant::payload_bytes).sum();
        assert!(bytes <= MAX_LEASE_REPLY_BYTES, "a reply of {bytes} bytes");
        leased += reply.leases.len();
        if leased == 6 {
            break;
        }
        assert!(
            !reply.leases.is_empty(),
            "the rest comes with the next request"
        );
    }
    assert_eq!(leased, 6, "every unit leased");
    assert_eq!(
        c.progress(&run.run_id).unwrap().retries,
        0,
        "no attempt counted"
    );
}
