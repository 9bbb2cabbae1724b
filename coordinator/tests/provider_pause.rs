//! Provider failures (429, quota, auth, 5xx) are the run's condition, not the unit's: they use
//! up no attempt, and the run's generate leases pause on every worker for the announced time,
//! with back-off; after consecutive failures the run shows `paused: KIND` and probes with one
//! generation at a time; a rate limit resumes by itself, an auth failure when the key is
//! supplied again. Time is the injected clock's.

mod support;

use ase_coordinator::metrics::Metrics;
use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

/// `n` tasks of one repo, `rounds` rounds, at most `max_attempts` attempts per phase.
async fn run_of(c: &Coordinator, batch: &str, n: usize, max_attempts: u32, key: bool) -> String {
    let ids: Vec<String> = (0..n).map(|i| format!("{batch}{i}")).collect();
    let tasks: Vec<(&str, &str, &str, i64)> = ids
        .iter()
        .map(|id| (id.as_str(), "o/a", "SQLI", 1))
        .collect();
    let mut req = submit_req(
        batch,
        1,
        json!({"max_attempts": max_attempts}),
        v1_dataset(&tasks),
    );
    if key {
        req.api_key = Some("sk-the-key".into());
    }
    c.submit_run(req).await.unwrap().run_id
}

async fn leases(
    c: &Coordinator,
    w: &Registration,
    generate: u32,
    evaluate: u32,
) -> Vec<LeaseGrant> {
    c.lease_work(lease_req(w, generate, evaluate))
        .await
        .unwrap()
        .leases
}

fn of_run<'a>(gs: &'a [LeaseGrant], run: &str, phase: Phase) -> Vec<&'a LeaseGrant> {
    gs.iter()
        .filter(|g| g.run_id == run && g.phase == phase)
        .collect()
}

async fn provider_failure(
    c: &Coordinator,
    w: &Registration,
    g: &LeaseGrant,
    fault: ProviderFault,
    retry_after_ms: Option<u64>,
) {
    let ack = c
        .fail(Failure {
            worker_id: w.worker_id.clone(),
            lease: g.lease,
            kind: FailureKind::Infrastructure,
            reason: format!("model endpoint: {}", fault.as_str()),
            infra: InfraKind::Provider(fault),
            retry_after_ms,
        })
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
}

async fn complete_generation(c: &Coordinator, w: &Registration, g: &LeaseGrant) {
    let ack = c
        .complete(completion(w, g, generation(&unit_of(g), true)))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
}

#[tokio::test]
async fn a_rate_limit_uses_no_attempt_and_pauses_the_runs_generations_for_the_announced_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    // One attempt per phase: a counted failure would fail the unit for good.
    let run = run_of(&c, "r", 4, 1, false).await;
    let w = c.register("w", caps(3, 2, &["o/a"])).await.unwrap();
    let first = leases(&c, &w, 3, 0).await;
    assert_eq!(first.len(), 3);
    // One generation commits: its evaluation is queued.
    complete_generation(&c, &w, &first[0]).await;
    clock.advance_ms(10);
    for g in &first[1..] {
        provider_failure(&c, &w, g, ProviderFault::RateLimited, Some(2_000)).await;
    }
    let units = c.units(&run).unwrap();
    for u in &units {
        assert_ne!(u.state, UnitState::Failed, "{u:?}");
        assert_eq!(u.phase_failures, 0, "no attempt used up: {u:?}");
    }
    let noted: Vec<_> = units.iter().flat_map(|u| &u.failures).collect();
    assert_eq!(noted.len(), 2);
    assert!(noted
        .iter()
        .all(|f| !f.counted && f.reason.contains("rate_limited")));
    assert_eq!(c.progress(&run).unwrap().retries, 0);

    // Another run submitted meanwhile is not paused.
    let other = run_of(&c, "o", 2, 1, false).await;
    clock.advance_ms(1_999);
    let during = leases(&c, &w, 3, 2).await;
    assert!(
        of_run(&during, &run, Phase::Generate).is_empty(),
        "no generation of the paused run: {during:?}"
    );
    assert_eq!(
        of_run(&during, &run, Phase::Evaluate).len(),
        1,
        "{during:?}"
    );
    assert_eq!(
        of_run(&during, &other, Phase::Generate).len(),
        2,
        "{during:?}"
    );
    let p = c.progress(&run).unwrap();
    assert_eq!(p.pause_remaining_ms, 1);
    assert_eq!(p.provider_failures, 2);
    // Two failures are below the visible threshold (3): still running.
    assert_eq!(p.state, "running");

    clock.advance_ms(1);
    let after = leases(&c, &w, 3, 0).await;
    assert_eq!(
        of_run(&after, &run, Phase::Generate).len(),
        1,
        "the pause is over: the run's generations go on ({after:?})"
    );
}

#[tokio::test]
async fn consecutive_rate_limits_show_paused_probe_one_call_and_resume_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    let run = run_of(&c, "r", 6, 3, false).await;
    let w = c.register("w", caps(4, 0, &["o/a"])).await.unwrap();
    let first = leases(&c, &w, 4, 0).await;
    assert_eq!(first.len(), 4);
    clock.advance_ms(10);
    // The calls of all slots fail at once (no Retry-After): one pause, not four in a row.
    for g in &first {
        provider_failure(&c, &w, g, ProviderFault::RateLimited, None).await;
    }
    let p = c.progress(&run).unwrap();
    assert_eq!(p.state, "paused: rate_limited");
    assert_eq!(p.pause_remaining_ms, 1_000, "level 1: the base back-off");
    let metrics = Metrics::new().render(&c);
    assert!(
        metrics.contains(&format!(
            "ase_run_paused{{run=\"{run}\",reason=\"rate_limited\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "ase_run_provider_failures_total{{run=\"{run}\"}} 4"
    )));

    clock.advance_ms(999);
    assert!(leases(&c, &w, 4, 0).await.is_empty());
    clock.advance_ms(1);
    // Paused: one probe at a time, however many slots ask.
    let probe = leases(&c, &w, 4, 0).await;
    assert_eq!(probe.len(), 1, "{probe:?}");
    assert!(leases(&c, &w, 3, 0).await.is_empty(), "one probe at a time");
    clock.advance_ms(10);
    provider_failure(&c, &w, &probe[0], ProviderFault::RateLimited, None).await;
    // The probe failed too: the back-off doubles.
    assert_eq!(c.progress(&run).unwrap().pause_remaining_ms, 2_000);
    clock.advance_ms(1_999);
    assert!(leases(&c, &w, 4, 0).await.is_empty());
    clock.advance_ms(1);
    let probe = leases(&c, &w, 4, 0).await;
    assert_eq!(probe.len(), 1, "{probe:?}");
    complete_generation(&c, &w, &probe[0]).await;
    // The provider answers again: the run resumes by itself, every slot is served.
    let p = c.progress(&run).unwrap();
    assert_eq!(p.state, "running");
    assert_eq!(p.pause_remaining_ms, 0);
    assert_eq!(p.provider_failures, 5);
    assert_eq!(leases(&c, &w, 4, 0).await.len(), 4);
    assert!(c
        .units(&run)
        .unwrap()
        .iter()
        .all(|u| u.phase_failures == 0 && u.state != UnitState::Failed));
}

#[tokio::test]
async fn auth_failures_pause_the_run_until_the_key_is_supplied_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    let run = run_of(&c, "r", 3, 1, true).await;
    let w = c.register("w", caps(1, 0, &["o/a"])).await.unwrap();
    // Auth failures one after another, each after the pause of the one before.
    for _ in 0..3 {
        let g = leases(&c, &w, 1, 0).await;
        assert_eq!(g.len(), 1, "{g:?}");
        provider_failure(&c, &w, &g[0], ProviderFault::Auth, None).await;
        clock.advance_ms(c.progress(&run).unwrap().pause_remaining_ms);
    }
    let p = c.progress(&run).unwrap();
    assert_eq!(p.state, "paused: auth");
    assert_eq!(p.generate.failed, 0);
    // Waiting does not mend a wrong key.
    clock.advance_ms(3_600_000);
    assert!(leases(&c, &w, 1, 0).await.is_empty());
    assert_eq!(c.progress(&run).unwrap().state, "paused: auth");
    // Submitted again without a key: still waiting for one.
    let mut again = submit_req("r", 1, json!({"max_attempts": 1}), Vec::new());
    again.dataset = v1_dataset(&[
        ("r0", "o/a", "SQLI", 1),
        ("r1", "o/a", "SQLI", 1),
        ("r2", "o/a", "SQLI", 1),
    ]);
    assert!(c.submit_run(again.clone()).await.unwrap().resumed);
    assert!(leases(&c, &w, 1, 0).await.is_empty());
    // With the key: the run goes on.
    again.api_key = Some("sk-the-new-key".into());
    assert!(c.submit_run(again).await.unwrap().resumed);
    assert_eq!(c.progress(&run).unwrap().state, "running");
    let g = leases(&c, &w, 1, 0).await;
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].api_key.as_deref(), Some("sk-the-new-key"));
    assert!(c
        .units(&run)
        .unwrap()
        .iter()
        .all(|u| u.phase_failures == 0 && u.state != UnitState::Failed));
}

#[tokio::test]
async fn a_failure_of_another_kind_still_uses_up_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    let run = run_of(&c, "r", 1, 1, false).await;
    let w = c.register("w", caps(1, 0, &["o/a"])).await.unwrap();
    let g = leases(&c, &w, 1, 0).await;
    let ack = c
        .fail(Failure {
            worker_id: w.worker_id.clone(),
            lease: g[0].lease,
            kind: FailureKind::Infrastructure,
            reason: "clone failed".into(),
            infra: InfraKind::Repository,
            retry_after_ms: None,
        })
        .await
        .unwrap();
    assert!(ack.accepted);
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.state, UnitState::Failed);
    assert_eq!(c.progress(&run).unwrap().provider_failures, 0);
}
