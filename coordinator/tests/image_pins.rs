//! Run-wide image pins: the first v2 evaluation of a task that ran in an image pulled from a
//! registry pins the task to that digest; every later evaluate lease of the task carries it (a
//! tag moved mid-run changes nothing), generate leases and other tasks do not, a local image id
//! never pins, and the pins survive a restart of the coordinator.

mod support;

use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, V2Scan};
use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

const PIN: &str = "127.0.0.1:5000/ase/a@sha256:aaaa";

fn dynamic_eval(unit: &UnitId, image_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&EvaluationRecord::Dynamic {
        unit: unit.clone(),
        checks: V2Scan::default(),
        steps: vec![],
        reason: None,
        seconds: 0.1,
        image_digest: Some(image_digest.to_string()),
    })
    .unwrap()
}

async fn give_back(c: &Coordinator, w: &Registration, g: &LeaseGrant) {
    let ack = c
        .fail(Failure {
            worker_id: w.worker_id.clone(),
            lease: g.lease,
            kind: FailureKind::Released,
            reason: "given back".into(),
            infra: InfraKind::Unspecified,
            retry_after_ms: None,
        })
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
}

#[tokio::test]
async fn the_first_evaluation_pins_its_tasks_image_for_every_later_lease_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1), ("b", "o/a", "SQLI", 1)]);
    let run = {
        let c = open(dir.path(), &clock);
        let run = c
            .submit_run(submit_req("pins", 3, json!({}), ds))
            .await
            .unwrap()
            .run_id;
        let w = c.register("w", caps(6, 6, &["o/a"])).await.unwrap();
        let gens = c.lease_work(lease_req(&w, 6, 0)).await.unwrap().leases;
        assert_eq!(gens.len(), 6);
        for g in &gens {
            assert_eq!(g.pinned_image, None, "a generation runs no image");
            let ack = c
                .complete(completion(&w, g, generation(&unit_of(g), true)))
                .await
                .unwrap();
            assert!(ack.accepted, "{ack:?}");
        }
        // Every evaluation leased before any completed: nothing pinned yet.
        let evals = c.lease_work(lease_req(&w, 0, 6)).await.unwrap().leases;
        assert_eq!(evals.len(), 6, "{evals:?}");
        assert!(evals.iter().all(|g| g.pinned_image.is_none()), "{evals:?}");
        // One unit of each task completes: task a ran in an image from a registry, task b in
        // a local image (its id); the others are given back.
        let mut done = std::collections::BTreeSet::new();
        for g in &evals {
            if done.insert(g.instance_id.clone()) {
                let ran_in = if g.instance_id == "a" {
                    PIN
                } else {
                    "sha256:bbbb"
                };
                let ack = c
                    .complete(completion(&w, g, dynamic_eval(&unit_of(g), ran_in)))
                    .await
                    .unwrap();
                assert!(ack.accepted, "{ack:?}");
            } else {
                give_back(&c, &w, g).await;
            }
        }
        run
    };

    // After a restart, the four evaluations left: task a's carry its pin, task b's none.
    let c = open(dir.path(), &clock);
    let w = c.register("w2", caps(0, 4, &["o/a"])).await.unwrap();
    let evals = c.lease_work(lease_req(&w, 0, 4)).await.unwrap().leases;
    assert_eq!(evals.len(), 4, "{evals:?}");
    for g in &evals {
        assert_eq!(g.run_id, run);
        let expected = (g.instance_id == "a").then_some(PIN);
        assert_eq!(g.pinned_image.as_deref(), expected, "{g:?}");
    }
    // A unit of task a reporting another digest (it raced a moved tag) leaves the pin as it is.
    let a = evals.iter().find(|g| g.instance_id == "a").unwrap();
    let ack = c
        .complete(completion(
            &w,
            a,
            dynamic_eval(&unit_of(a), "127.0.0.1:5000/ase/a@sha256:cccc"),
        ))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
    for g in evals.iter().filter(|g| g.lease != a.lease) {
        give_back(&c, &w, g).await;
    }
    let again = c.lease_work(lease_req(&w, 0, 4)).await.unwrap().leases;
    assert_eq!(again.len(), 3, "{again:?}");
    for g in &again {
        let expected = (g.instance_id == "a").then_some(PIN);
        assert_eq!(g.pinned_image.as_deref(), expected, "{g:?}");
    }
}
