//! Affinity, slots and per-run limits, with an injected clock.

mod support;

use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

fn many(n: usize, repos: &[&str]) -> Vec<u8> {
    let ids: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let tasks: Vec<(&str, &str, &str, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), repos[i % repos.len()], "SQLI", 1))
        .collect();
    v1_dataset(&tasks)
}

fn repo_of_grant(g: &LeaseGrant) -> String {
    let t: serde_json::Value = serde_json::from_slice(&g.task_json).unwrap();
    t["repo"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn workers_get_the_repos_they_cache_and_nobody_starves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    c.submit_run(submit_req(
        "a",
        1,
        json!({}),
        many(9, &["o/x", "o/y", "o/z"]),
    ))
    .await
    .unwrap();
    let wx = c.register("wx", caps(3, 0, &["o/x"])).await.unwrap();
    let wy = c.register("wy", caps(3, 0, &["o/y"])).await.unwrap();
    let gx = c.lease_work(lease_req(&wx, 3, 0)).await.unwrap().leases;
    let gy = c.lease_work(lease_req(&wy, 3, 0)).await.unwrap().leases;
    assert!(gx.iter().all(|g| repo_of_grant(g) == "o/x"));
    assert!(gy.iter().all(|g| repo_of_grant(g) == "o/y"));
    // A newcomer caching nothing gets the repo nobody caches (o/z) at once.
    let wn = c.register("wn", caps(3, 0, &[])).await.unwrap();
    let gn = c.lease_work(lease_req(&wn, 3, 0)).await.unwrap().leases;
    assert_eq!(gn.len(), 3);
    assert!(gn.iter().all(|g| repo_of_grant(g) == "o/z"));
}

#[tokio::test]
async fn a_repo_a_worker_is_generating_with_counts_as_held() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    // o/x's two tasks are queued before o/y's.
    c.submit_run(submit_req(
        "g",
        1,
        json!({}),
        many(4, &["o/x", "o/x", "o/y", "o/y"]),
    ))
    .await
    .unwrap();
    let w1 = c.register("w1", caps(1, 0, &[])).await.unwrap();
    let w2 = c.register("w2", caps(1, 0, &[])).await.unwrap();
    let g1 = c.lease_work(lease_req(&w1, 1, 0)).await.unwrap().leases;
    assert_eq!(repo_of_grant(&g1[0]), "o/x");
    // w1 is cloning o/x (or about to): w2 is given the repo nobody is on.
    let g2 = c.lease_work(lease_req(&w2, 1, 0)).await.unwrap().leases;
    assert_eq!(repo_of_grant(&g2[0]), "o/y");
}

#[tokio::test]
async fn affinity_falls_back_to_other_repos_rather_than_idling() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    c.submit_run(submit_req("b", 1, json!({}), many(2, &["o/x"])))
        .await
        .unwrap();
    let w = c.register("w", caps(2, 0, &["o/other"])).await.unwrap();
    assert_eq!(
        c.lease_work(lease_req(&w, 2, 0))
            .await
            .unwrap()
            .leases
            .len(),
        2
    );
}

#[tokio::test]
async fn per_worker_slots_bound_generate_and_evaluate_separately() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    c.submit_run(submit_req("s", 1, json!({}), many(6, &["o/x"])))
        .await
        .unwrap();
    let w = c.register("w", caps(2, 1, &[])).await.unwrap();
    let g = c.lease_work(lease_req(&w, 10, 10)).await.unwrap().leases;
    assert_eq!(g.len(), 2, "two generate slots");
    assert!(c
        .lease_work(lease_req(&w, 10, 10))
        .await
        .unwrap()
        .leases
        .is_empty());
    for l in &g {
        assert!(
            c.complete(completion(&w, l, generation(&unit_of(l), true)))
                .await
                .unwrap()
                .accepted
        );
    }
    let next = c.lease_work(lease_req(&w, 10, 10)).await.unwrap().leases;
    let eval = next.iter().filter(|l| l.phase == Phase::Evaluate).count();
    let gen = next.iter().filter(|l| l.phase == Phase::Generate).count();
    assert_eq!((gen, eval), (2, 1));
    assert_eq!(c.list_workers()[0].running, 3);
    // The worker's own request bounds it too.
    let w2 = c.register("w2", caps(5, 5, &[])).await.unwrap();
    assert_eq!(
        c.lease_work(lease_req(&w2, 1, 0))
            .await
            .unwrap()
            .leases
            .len(),
        1
    );
}

#[tokio::test]
async fn inflight_model_calls_are_limited_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = c
        .submit_run(submit_req(
            "i",
            1,
            json!({"max_inflight_model_calls": 3}),
            many(10, &["o/x"]),
        ))
        .await
        .unwrap()
        .run_id;
    let a = c.register("a", caps(5, 0, &[])).await.unwrap();
    let b = c.register("b", caps(5, 0, &[])).await.unwrap();
    let ga = c.lease_work(lease_req(&a, 5, 0)).await.unwrap().leases;
    let gb = c.lease_work(lease_req(&b, 5, 0)).await.unwrap().leases;
    assert_eq!(ga.len() + gb.len(), 3);
    assert_eq!(c.progress(&run).unwrap().generate.leased, 3);
    // A completed (or failed) call frees its place.
    let l = &ga[0];
    assert!(
        c.complete(completion(&a, l, generation(&unit_of(l), true)))
            .await
            .unwrap()
            .accepted
    );
    assert_eq!(
        c.lease_work(lease_req(&b, 5, 0))
            .await
            .unwrap()
            .leases
            .len(),
        1
    );
    assert!(c
        .lease_work(lease_req(&b, 5, 0))
        .await
        .unwrap()
        .leases
        .is_empty());
}

#[tokio::test]
async fn requests_per_minute_are_limited_by_a_token_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    c.submit_run(submit_req(
        "p",
        1,
        json!({"requests_per_minute": 2}),
        many(10, &["o/x"]),
    ))
    .await
    .unwrap();
    let w = c.register("w", caps(10, 0, &[])).await.unwrap();
    assert_eq!(
        c.lease_work(lease_req(&w, 10, 0))
            .await
            .unwrap()
            .leases
            .len(),
        2
    );
    assert!(c
        .lease_work(lease_req(&w, 10, 0))
        .await
        .unwrap()
        .leases
        .is_empty());
    clock.advance_ms(29_000);
    assert!(c
        .lease_work(lease_req(&w, 10, 0))
        .await
        .unwrap()
        .leases
        .is_empty());
    clock.advance_ms(1_000);
    assert_eq!(
        c.lease_work(lease_req(&w, 10, 0))
            .await
            .unwrap()
            .leases
            .len(),
        1
    );
}

#[tokio::test]
async fn a_long_poll_wakes_when_work_appears() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let poller = {
        let c = c.clone();
        let req = LeaseWork {
            wait_ms: 60_000,
            ..lease_req(&w, 1, 1)
        };
        tokio::spawn(async move { c.lease_work(req).await })
    };
    tokio::task::yield_now().await;
    c.submit_run(submit_req("l", 1, json!({}), many(1, &["o/x"])))
        .await
        .unwrap();
    let reply = poller.await.unwrap().unwrap();
    assert_eq!(
        reply.leases.len(),
        1,
        "a worker waiting gets work submitted mid-poll"
    );
}

#[tokio::test]
async fn a_waiting_lease_request_gets_the_evaluate_slot_its_own_completion_frees() {
    // A worker asks with the slots free at that moment: here a free generate slot and a
    // busy evaluate slot. The evaluation it then finishes frees that slot while it waits; the
    // queued evaluation must come back in the same long poll, not one wait later.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    c.submit_run(submit_req("wake", 1, json!({}), many(2, &["o/x"])))
        .await
        .unwrap();
    let w = c.register("w", caps(2, 1, &[])).await.unwrap();
    let gens = c.lease_work(lease_req(&w, 2, 1)).await.unwrap().leases;
    assert_eq!(gens.len(), 2);
    let (first, second) = (&gens[0], &gens[1]);
    assert!(
        c.complete(completion(&w, first, generation(&unit_of(first), true)))
            .await
            .unwrap()
            .accepted
    );
    let eval = c.lease_work(lease_req(&w, 0, 1)).await.unwrap().leases;
    assert_eq!(eval.len(), 1);
    assert_eq!(eval[0].phase, Phase::Evaluate);
    assert!(
        c.complete(completion(&w, second, generation(&unit_of(second), true)))
            .await
            .unwrap()
            .accepted
    );

    // Evaluate slot busy: the worker can only ask for generate work, and there is none.
    let mut poll = lease_req(&w, 2, 0);
    poll.wait_ms = 60_000;
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.lease_work(poll).await })
    };
    tokio::task::yield_now().await;
    let done = &eval[0];
    assert!(
        c.complete(completion(&w, done, static_eval(&unit_of(done), 0, 1)))
            .await
            .unwrap()
            .accepted
    );
    let reply = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the long poll answered once the evaluate slot was free")
        .unwrap()
        .unwrap();
    assert_eq!(reply.leases.len(), 1, "{reply:?}");
    assert_eq!(reply.leases[0].phase, Phase::Evaluate);
    assert_eq!(unit_of(&reply.leases[0]), unit_of(second));
}

/// Agent mode: an agent's calls after its first take from the bucket generate leases take
/// from, so that `requests_per_minute` bounds every call of the run, whoever makes it.
#[tokio::test]
async fn agents_calls_take_from_the_runs_bucket_and_only_under_a_current_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    c.submit_run(submit_req(
        "p",
        1,
        json!({"requests_per_minute": 3}),
        many(10, &["o/x"]),
    ))
    .await
    .unwrap();
    let w = c.register("w", caps(1, 0, &[])).await.unwrap();
    // The lease takes one token (the agent's first call); two calls are left this minute.
    let g = c
        .lease_work(lease_req(&w, 1, 0))
        .await
        .unwrap()
        .leases
        .remove(0);
    for _ in 0..2 {
        assert_eq!(
            c.grant_model_call(&w.worker_id, g.lease),
            ModelCallGrant::Granted
        );
    }
    // The bucket is empty: a token comes back every 20 s.
    assert_eq!(
        c.grant_model_call(&w.worker_id, g.lease),
        ModelCallGrant::Wait {
            retry_after_ms: 20_000
        }
    );
    clock.advance_ms(5_000);
    assert_eq!(
        c.grant_model_call(&w.worker_id, g.lease),
        ModelCallGrant::Wait {
            retry_after_ms: 15_000
        }
    );
    // The agent's calls took the tokens new generate leases would take.
    let w2 = c.register("w2", caps(1, 0, &[])).await.unwrap();
    assert!(c
        .lease_work(lease_req(&w2, 1, 0))
        .await
        .unwrap()
        .leases
        .is_empty());
    clock.advance_ms(15_000);
    assert_eq!(
        c.grant_model_call(&w.worker_id, g.lease),
        ModelCallGrant::Granted
    );
    // Not for another worker, nor a stale attempt, nor an unknown lease.
    let refused = |r: ModelCallGrant| matches!(r, ModelCallGrant::Refused { .. });
    assert!(refused(c.grant_model_call(&w2.worker_id, g.lease)));
    let mut stale = g.lease;
    stale.fence.attempt += 1;
    assert!(refused(c.grant_model_call(&w.worker_id, stale)));
    let mut unknown = g.lease;
    unknown.lease_id += 1000;
    assert!(refused(c.grant_model_call(&w.worker_id, unknown)));
}
