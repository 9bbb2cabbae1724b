//! Fencing, expiry, retries, drain and cancel.

mod support;

use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

async fn one_unit_run(c: &Coordinator, limits: serde_json::Value) -> String {
    c.submit_run(submit_req(
        "f",
        1,
        limits,
        v1_dataset(&[("a", "o/a", "SQLI", 1)]),
    ))
    .await
    .unwrap()
    .run_id
}

/// The first lease of a request for `max_generate` / `max_evaluate` units (there must be one).
async fn first_lease(
    c: &Coordinator,
    w: &Registration,
    max_generate: u32,
    max_evaluate: u32,
) -> LeaseGrant {
    c.lease_work(lease_req(w, max_generate, max_evaluate))
        .await
        .unwrap()
        .leases
        .remove(0)
}

#[tokio::test]
async fn fencing_refuses_stale_reports_and_accepts_a_repeat_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = one_unit_run(&c, json!({})).await;
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let g = first_lease(&c, &w, 1, 0).await;
    let unit = unit_of(&g);
    let good = generation(&unit, true);

    // Stale attempt.
    let mut stale = completion(&w, &g, good.clone());
    stale.lease.fence.attempt += 1;
    let ack = c.complete(stale).await.unwrap();
    assert!(
        !ack.accepted && ack.reason.contains("stale attempt"),
        "{ack:?}"
    );
    // Stale session.
    let mut stale = completion(&w, &g, good.clone());
    stale.lease.fence.session = 0;
    let ack = c.complete(stale).await.unwrap();
    assert!(
        !ack.accepted && ack.reason.contains("stale session"),
        "{ack:?}"
    );
    // Another worker.
    let mut other = completion(&w, &g, good.clone());
    other.worker_id = "intruder".into();
    assert!(!c.complete(other).await.unwrap().accepted);
    // A result for another unit.
    let wrong = completion(
        &w,
        &g,
        generation(&ase_common::scoring::UnitId::new("zz", 1), true),
    );
    assert!(!c.complete(wrong).await.unwrap().accepted);
    // Not a record at all.
    assert!(
        !c.complete(completion(&w, &g, b"{}".to_vec()))
            .await
            .unwrap()
            .accepted
    );
    assert_eq!(c.units(&run).unwrap()[0].state, UnitState::GenerateLeased);

    // First commit wins; the same result again is a duplicate; another result is refused.
    let ack = c.complete(completion(&w, &g, good.clone())).await.unwrap();
    assert!(ack.accepted && !ack.duplicate);
    let ack = c.complete(completion(&w, &g, good.clone())).await.unwrap();
    assert!(ack.accepted && ack.duplicate, "{ack:?}");
    let ack = c
        .complete(completion(&w, &g, generation(&unit, false)))
        .await
        .unwrap();
    assert!(!ack.accepted && ack.reason.contains("different"), "{ack:?}");
    assert_eq!(c.units(&run).unwrap()[0].state, UnitState::EvaluateQueued);
}

#[tokio::test]
async fn reregistering_voids_old_leases_and_counts_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = one_unit_run(&c, json!({})).await;
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let g = first_lease(&c, &w, 1, 0).await;
    // While its session is live the name is not taken over.
    let refused = c.register("w", caps(1, 1, &[])).await.unwrap_err();
    assert!(
        matches!(refused, CoordinatorError::NameInUse { .. }),
        "{refused}"
    );
    // Not heard from for the TTL: the name is free, and a new process takes it.
    clock.advance_ms(u64::from(TTL_MS) + 1);
    let w2 = c.register("w", caps(1, 1, &[])).await.unwrap();
    assert_eq!(w2.session, w.session + 1);
    let ack = c
        .complete(completion(&w, &g, generation(&unit_of(&g), true)))
        .await
        .unwrap();
    assert!(!ack.accepted, "a void lease's result is refused");
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.state, UnitState::GenerateQueued);
    assert_eq!(u.phase_failures, 1);
    assert!(u.failures[0].reason.contains("re-registered"));
    // The old session's requests are told to re-register.
    assert!(c.lease_work(lease_req(&w, 1, 0)).await.unwrap().reregister);
    let g2 = first_lease(&c, &w2, 1, 0).await;
    assert_eq!(
        g2.lease.fence,
        Fence {
            session: w2.session,
            attempt: 2
        }
    );
}

#[tokio::test]
async fn missed_heartbeats_expire_the_lease_and_count_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = one_unit_run(&c, json!({})).await;
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let g = first_lease(&c, &w, 1, 0).await;
    // Heartbeats renew the lease past its first TTL.
    for _ in 0..3 {
        clock.advance_ms(u64::from(TTL_MS) - 1);
        let hb = c
            .heartbeat(Heartbeat {
                worker_id: w.worker_id.clone(),
                session: w.session,
                active: vec![g.lease],
                ..Heartbeat::default()
            })
            .await
            .unwrap();
        assert!(hb.revoked.is_empty(), "{hb:?}");
    }
    assert_eq!(c.sweep().await.unwrap(), 0);
    clock.advance_ms(u64::from(TTL_MS) + 1);
    assert_eq!(c.sweep().await.unwrap(), 1);
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.state, UnitState::GenerateQueued);
    assert_eq!(u.phase_failures, 1);
    assert!(u.failures[0].counted && u.failures[0].reason.contains("missed its heartbeats"));
    assert_eq!(c.progress(&run).unwrap().retries, 1);
    // The worker hears about it, and its late result is refused.
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            active: vec![g.lease],
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert_eq!(hb.revoked, vec![g.lease]);
    let ack = c
        .complete(completion(&w, &g, generation(&unit_of(&g), true)))
        .await
        .unwrap();
    assert!(!ack.accepted);
}

#[tokio::test]
async fn a_live_worker_stuck_past_the_execution_deadline_loses_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = one_unit_run(&c, json!({})).await;
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let g = first_lease(&c, &w, 1, 0).await;
    let mut elapsed = 0;
    while elapsed <= GEN_DEADLINE_MS {
        clock.advance_ms(1_000);
        elapsed += 1_000;
        c.heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            active: vec![g.lease],
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    }
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.state, UnitState::GenerateQueued);
    assert!(
        u.failures[0].reason.contains("execution deadline"),
        "{:?}",
        u.failures
    );
}

#[tokio::test]
async fn out_of_retries_the_unit_fails_with_reasons_and_the_run_still_scores() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = c
        .submit_run(submit_req(
            "r",
            1,
            json!({"max_attempts": 2}),
            v1_dataset(&[("a", "o/a", "SQLI", 1), ("b", "o/b", "SQLI", 1)]),
        ))
        .await
        .unwrap()
        .run_id;
    let w = c.register("w", caps(1, 1, &["o/a"])).await.unwrap();
    // Unit a fails twice (its repo is cached, so it comes first); a release in between
    // does not count.
    for (i, kind) in [
        FailureKind::Infrastructure,
        FailureKind::Released,
        FailureKind::Infrastructure,
    ]
    .into_iter()
    .enumerate()
    {
        let g = first_lease(&c, &w, 1, 0).await;
        assert_eq!(g.instance_id, "a");
        let ack = c
            .fail(Failure {
                worker_id: w.worker_id.clone(),
                lease: g.lease,
                kind,
                reason: format!("docker error {i}"),
                infra: InfraKind::Scanner,
                retry_after_ms: None,
            })
            .await
            .unwrap();
        assert!(ack.accepted);
    }
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.state, UnitState::Failed);
    assert_eq!(u.failures.len(), 3);
    assert_eq!(u.failures.iter().filter(|f| f.counted).count(), 2);
    assert_eq!(c.progress(&run).unwrap().generate.failed, 1);
    drive(&c, &w, 0, 1).await;
    let p = c.progress(&run).unwrap();
    assert_eq!(p.state, "completed");
    let report = c.fetch_report(&run).unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &report
            .files
            .iter()
            .find(|f| f.name == "report.json")
            .unwrap()
            .content,
    )
    .unwrap();
    let a = &json["units"][0];
    assert_eq!(a["status"], "failed");
    assert_eq!(a["kind"], "error");
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.contains("docker error 0") && reason.contains("docker error 2"),
        "{reason}"
    );
    assert!(
        !reason.contains("docker error 1"),
        "released is not a failure: {reason}"
    );
    // a failed, b secure: quality counts the failed unit.
    assert_eq!(json["scores"]["quality"], 50.0);
}

#[tokio::test]
async fn drain_lets_leased_units_finish_and_takes_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = c
        .submit_run(submit_req(
            "d",
            2,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap()
        .run_id;
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let g = first_lease(&c, &w, 1, 0).await;
    assert!(c.drain_worker("w").await.unwrap().accepted);
    let reply = c.lease_work(lease_req(&w, 1, 1)).await.unwrap();
    assert!(reply.drain && reply.leases.is_empty());
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            active: vec![g.lease],
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(hb.drain && hb.revoked.is_empty());
    let ack = c
        .complete(completion(&w, &g, generation(&unit_of(&g), true)))
        .await
        .unwrap();
    assert!(ack.accepted);
    let info = c.list_workers();
    assert!(info[0].draining);
    assert_eq!(info[0].running, 0);
    assert_eq!(c.progress(&run).unwrap().generate.queued, 1);
    assert!(!c.drain_worker("nobody").await.unwrap().accepted);
}

#[tokio::test]
async fn cancel_revokes_leases_and_grants_nothing_until_resubmitted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1)]);
    let run = c
        .submit_run(submit_req("c", 1, json!({}), ds.clone()))
        .await
        .unwrap()
        .run_id;
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    let g = first_lease(&c, &w, 1, 0).await;
    assert!(c.cancel_run(&run).await.unwrap().accepted);
    assert_eq!(c.progress(&run).unwrap().state, "cancelled");
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            active: vec![g.lease],
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert_eq!(hb.revoked, vec![g.lease]);
    let ack = c
        .complete(completion(&w, &g, generation(&unit_of(&g), true)))
        .await
        .unwrap();
    assert!(!ack.accepted);
    assert!(c
        .lease_work(lease_req(&w, 1, 1))
        .await
        .unwrap()
        .leases
        .is_empty());
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.phase_failures, 0, "cancelling is not the unit's failure");
    // Resubmitting resumes it.
    assert!(
        c.submit_run(submit_req("c", 1, json!({}), ds))
            .await
            .unwrap()
            .resumed
    );
    assert_eq!(
        c.lease_work(lease_req(&w, 1, 0))
            .await
            .unwrap()
            .leases
            .len(),
        1
    );
}

#[tokio::test]
async fn a_run_whose_last_report_was_cancelled_midway_is_still_finished() {
    // A worker that gives up waiting for the last unit's report cancels that request; the run
    // must not stay in `scoring` forever. The report only queues the run to the finisher, in
    // the same step that applies it, so the cancellation cannot lose the finish.
    //
    // The report is cut off where it waits for the disk; a group commit that is already done
    // lets it finish at its first poll, which is not the case under test: then the attempt is
    // made again on a fresh store (bounded), and a run finished at once must be complete too.
    for _ in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let c = open(dir.path(), &clock);
        let run = one_unit_run(&c, json!({})).await;
        let w = c.register("w", caps(1, 1, &[])).await.unwrap();
        let g = first_lease(&c, &w, 1, 0).await;
        let unit = unit_of(&g);
        assert!(
            c.complete(completion(&w, &g, generation(&unit, true)))
                .await
                .unwrap()
                .accepted
        );
        let e = first_lease(&c, &w, 0, 1).await;
        // Poll the last report once, then drop it: the cancelled request.
        let mut last = Box::pin(c.complete(completion(&w, &e, static_eval(&unit, 0, 1))));
        let finished_at_once = tokio::select! {
            biased;
            r = &mut last => Some(r),
            _ = std::future::ready(()) => None,
        };
        drop(last);
        c.sweep().await.unwrap();
        c.finish_pending().await;
        assert_eq!(c.progress(&run).unwrap().state, "completed");
        assert!(c.fetch_report(&run).unwrap().complete);
        if finished_at_once.is_none() {
            return;
        }
    }
    panic!("the last report never waited for the disk in 50 attempts: not exercised");
}

#[tokio::test]
async fn a_second_worker_with_a_live_name_is_refused_until_the_first_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let first = c.register("w1", caps(1, 1, &[])).await.unwrap();
    // Heartbeats keep the name: a newcomer is refused however often it asks, and the first
    // session stays current (no supersession back and forth).
    for _ in 0..5 {
        clock.advance_ms(u64::from(TTL_MS) / 2);
        let hb = c
            .heartbeat(Heartbeat {
                worker_id: first.worker_id.clone(),
                session: first.session,
                ..Heartbeat::default()
            })
            .await
            .unwrap();
        assert!(!hb.reregister, "{hb:?}");
        let err = c.register("w1", caps(1, 1, &[])).await.unwrap_err();
        match &err {
            CoordinatorError::NameInUse {
                name,
                session,
                heard_ms_ago,
                ttl_ms,
            } => {
                assert_eq!(name, "w1");
                assert_eq!(*session, first.session);
                assert_eq!(*heard_ms_ago, 0);
                assert_eq!(*ttl_ms, TTL_MS);
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("w1") && text.contains("live session"),
            "{text}"
        );
    }
    // Silent for the whole TTL: the name is free again.
    clock.advance_ms(u64::from(TTL_MS));
    assert!(
        c.register("w1", caps(1, 1, &[])).await.is_err(),
        "heard exactly TTL ago"
    );
    clock.advance_ms(1);
    let second = c.register("w1", caps(1, 1, &[])).await.unwrap();
    assert_eq!(second.session, first.session + 1);
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: first.worker_id.clone(),
            session: first.session,
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(
        hb.reregister,
        "the lapsed session is told to register again"
    );
    // ... and the lapsed process is now the newcomer: refused while the second one lives.
    assert!(matches!(
        c.register("w1", caps(1, 1, &[])).await.unwrap_err(),
        CoordinatorError::NameInUse { .. }
    ));
    // Other names are not affected.
    c.register("w2", caps(1, 1, &[])).await.unwrap();
}

#[tokio::test]
async fn a_held_lease_stays_current_across_a_restart_and_a_reregistration() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1), ("b", "o/b", "SQLI", 1)]);
    let (run, w, held, dropped) = {
        let c = open(dir.path(), &clock);
        let run = c
            .submit_run(submit_req("h", 1, json!({}), ds))
            .await
            .unwrap()
            .run_id;
        let w = c.register("w", caps(2, 1, &[])).await.unwrap();
        let g = c.lease_work(lease_req(&w, 2, 0)).await.unwrap().leases;
        assert_eq!(g.len(), 2);
        (run, w, g[0].clone(), g[1].clone())
    };
    // The coordinator restarts; the worker comes back still working on one unit (its model
    // call was answered during the outage) and no longer holding the other.
    let c = open(dir.path(), &clock);
    let w2 = c
        .register_holding("w", caps(2, 1, &[]), &[held.lease])
        .await
        .unwrap();
    assert_eq!(w2.session, w.session + 1);
    // The lease given up is queued again at once, without spending an attempt.
    let units = c.units(&run).unwrap();
    let gone = units.iter().find(|u| u.unit == unit_of(&dropped)).unwrap();
    assert_eq!(gone.state, UnitState::GenerateQueued);
    assert_eq!(gone.phase_failures, 0);
    assert!(!gone.failures[0].counted);
    // The held one is still leased: heartbeats of the new session renew it under its old
    // fence, and nobody else can get its unit.
    clock.advance_ms(u64::from(TTL_MS) / 2);
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: w2.worker_id.clone(),
            session: w2.session,
            active: vec![held.lease],
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(hb.revoked.is_empty() && !hb.reregister, "{hb:?}");
    clock.advance_ms(u64::from(TTL_MS) / 2 + 1);
    assert_eq!(c.sweep().await.unwrap(), 0, "renewed, not expired");
    let other = c.register("x", caps(2, 0, &[])).await.unwrap();
    let given = c.lease_work(lease_req(&other, 2, 0)).await.unwrap().leases;
    assert_eq!(given.len(), 1, "only the released unit is leased again");
    assert_eq!(unit_of(&given[0]), unit_of(&dropped));
    // The result computed under the held lease is accepted, once.
    let result = generation(&unit_of(&held), true);
    let ack = c
        .complete(completion(&w, &held, result.clone()))
        .await
        .unwrap();
    assert!(ack.accepted && !ack.duplicate, "{ack:?}");
    let ack = c.complete(completion(&w, &held, result)).await.unwrap();
    assert!(ack.accepted && ack.duplicate, "{ack:?}");
    let units = c.units(&run).unwrap();
    let done = units.iter().find(|u| u.unit == unit_of(&held)).unwrap();
    assert_eq!(done.state, UnitState::EvaluateQueued);
    assert_eq!(done.attempt, 1, "never leased again");
    assert!(done.failures.is_empty(), "{:?}", done.failures);
}

#[tokio::test]
async fn a_held_claim_with_a_wrong_fence_or_another_workers_lease_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1), ("b", "o/b", "SQLI", 1)]);
    let (run, g_w, g_v) = {
        let c = open(dir.path(), &clock);
        let run = c
            .submit_run(submit_req("x", 1, json!({}), ds))
            .await
            .unwrap()
            .run_id;
        let w = c.register("w", caps(1, 0, &[])).await.unwrap();
        let v = c.register("v", caps(1, 0, &[])).await.unwrap();
        let g_w = first_lease(&c, &w, 1, 0).await;
        let g_v = first_lease(&c, &v, 1, 0).await;
        (run, g_w, g_v)
    };
    let c = open(dir.path(), &clock);
    let mut wrong = g_w.lease;
    wrong.fence.attempt += 1;
    // w claims its lease under a wrong fence, and v's lease.
    c.register_holding("w", caps(1, 0, &[]), &[wrong, g_v.lease])
        .await
        .unwrap();
    let units = c.units(&run).unwrap();
    let of_w = units.iter().find(|u| u.unit == unit_of(&g_w)).unwrap();
    let of_v = units.iter().find(|u| u.unit == unit_of(&g_v)).unwrap();
    assert_eq!(
        of_w.state,
        UnitState::GenerateQueued,
        "a wrong fence keeps nothing"
    );
    assert_eq!(
        of_v.state,
        UnitState::GenerateLeased,
        "v's lease is v's to keep or lose"
    );
}
