//! The task images' registry failing (unreachable, its pull limit) is the run's condition, not
//! the unit's: a v2 evaluation that could not pull uses up no attempt, its answer is kept (no
//! generation is leased again), and the run's evaluations pause on every worker with back-off,
//! probing one at a time once the pause is visible (`paused: registry unreachable`), until an
//! evaluation succeeds. Time is the injected clock's.

mod support;

use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

async fn registry_failure(c: &Coordinator, w: &Registration, g: &LeaseGrant) {
    let ack = c
        .fail(Failure {
            worker_id: w.worker_id.clone(),
            lease: g.lease,
            kind: FailureKind::Infrastructure,
            reason: "image 127.0.0.1:5000/t:1: registry unreachable: connection refused".into(),
            infra: InfraKind::Registry,
            retry_after_ms: None,
        })
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
}

fn phase_of(gs: &[LeaseGrant], phase: Phase) -> Vec<&LeaseGrant> {
    gs.iter().filter(|g| g.phase == phase).collect()
}

#[tokio::test]
async fn registry_failures_use_no_attempt_keep_the_answer_and_pause_the_runs_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    // One attempt per phase: a counted failure would fail the unit for good.
    let tasks = [
        ("a", "o/a", "SQLI", 1),
        ("b", "o/a", "SQLI", 1),
        ("c", "o/a", "SQLI", 1),
    ];
    let run = c
        .submit_run(submit_req(
            "reg",
            1,
            json!({"max_attempts": 1}),
            v1_dataset(&tasks),
        ))
        .await
        .unwrap()
        .run_id;
    let w = c.register("w", caps(3, 3, &["o/a"])).await.unwrap();
    let gens = c.lease_work(lease_req(&w, 3, 0)).await.unwrap().leases;
    assert_eq!(gens.len(), 3);
    for g in &gens {
        let ack = c
            .complete(completion(&w, g, generation(&unit_of(g), true)))
            .await
            .unwrap();
        assert!(ack.accepted, "{ack:?}");
    }
    let generated_by: Vec<_> = c
        .units(&run)
        .unwrap()
        .iter()
        .map(|u| u.generated_by)
        .collect();

    // Every evaluation fails to pull: three in a row make the pause visible.
    let evals = c.lease_work(lease_req(&w, 0, 3)).await.unwrap().leases;
    assert_eq!(phase_of(&evals, Phase::Evaluate).len(), 3);
    clock.advance_ms(10);
    for g in &evals {
        registry_failure(&c, &w, g).await;
    }
    let units = c.units(&run).unwrap();
    for u in &units {
        assert_eq!(u.state, UnitState::EvaluateQueued, "{u:?}");
        assert_eq!(u.phase_failures, 0, "no attempt used up: {u:?}");
        assert!(u
            .failures
            .iter()
            .all(|f| !f.counted && f.reason.contains("registry unreachable")));
    }
    let p = c.progress(&run).unwrap();
    assert_eq!(p.retries, 0);
    assert_eq!(p.state, "paused: registry unreachable");
    assert_eq!(p.pause_remaining_ms, 1_000, "level 1: the base back-off");

    // During the pause: no evaluation, and no generation leased again (the answers are kept).
    clock.advance_ms(999);
    let during = c.lease_work(lease_req(&w, 3, 3)).await.unwrap().leases;
    assert!(during.is_empty(), "{during:?}");

    // The pause is over: one probe, which fails again; the back-off doubles.
    clock.advance_ms(1);
    let probe = c.lease_work(lease_req(&w, 3, 3)).await.unwrap().leases;
    assert_eq!(
        phase_of(&probe, Phase::Evaluate).len(),
        1,
        "one probe: {probe:?}"
    );
    assert_eq!(probe.len(), 1, "{probe:?}");
    clock.advance_ms(5);
    registry_failure(&c, &w, &probe[0]).await;
    assert_eq!(c.progress(&run).unwrap().pause_remaining_ms, 2_000);
    clock.advance_ms(1_999);
    assert!(c
        .lease_work(lease_req(&w, 0, 3))
        .await
        .unwrap()
        .leases
        .is_empty());

    // The registry is back: the next probe succeeds and the rest are granted together.
    clock.advance_ms(1);
    let probe = c.lease_work(lease_req(&w, 0, 3)).await.unwrap().leases;
    assert_eq!(probe.len(), 1, "{probe:?}");
    let ack = c
        .complete(completion(
            &w,
            &probe[0],
            static_eval(&unit_of(&probe[0]), 0, 1),
        ))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
    assert_eq!(c.progress(&run).unwrap().state, "running");
    let rest = c.lease_work(lease_req(&w, 0, 3)).await.unwrap().leases;
    assert_eq!(phase_of(&rest, Phase::Evaluate).len(), 2, "{rest:?}");
    for g in &rest {
        let ack = c
            .complete(completion(&w, g, static_eval(&unit_of(g), 0, 1)))
            .await
            .unwrap();
        assert!(ack.accepted, "{ack:?}");
    }
    let units = c.units(&run).unwrap();
    assert!(
        units.iter().all(|u| u.state == UnitState::Done),
        "{units:?}"
    );
    let after: Vec<_> = units.iter().map(|u| u.generated_by).collect();
    assert_eq!(after, generated_by, "each unit generated once");
    assert_eq!(c.progress(&run).unwrap().retries, 0);
}

#[tokio::test]
async fn a_registry_failure_reported_on_a_generation_is_counted_as_before() {
    // Only an evaluation pulls images: a generate lease naming the registry is not the
    // registry's pause (it counts, like any unclassified infrastructure failure).
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    let run = c
        .submit_run(submit_req(
            "gen",
            1,
            json!({"max_attempts": 1}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap()
        .run_id;
    let w = c.register("w", caps(1, 1, &["o/a"])).await.unwrap();
    let g = c.lease_work(lease_req(&w, 1, 0)).await.unwrap().leases;
    registry_failure(&c, &w, &g[0]).await;
    let units = c.units(&run).unwrap();
    assert_eq!(units[0].state, UnitState::Failed, "{units:?}");
    assert_eq!(units[0].phase_failures, 1);
}
