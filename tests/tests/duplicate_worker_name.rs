//! Two `ase worker --name w1` processes with w1's certificate. The second is refused with a
//! message that says the name is held by a live worker, waits a bounded time for it to lapse
//! (an earlier life of the same worker would), then exits with a clear error. The first keeps
//! its one session throughout (no supersession back and forth), and the run completes on it
//! with every unit once.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{spawn_worker, LocalCluster, ModelBehaviour};
use std::time::Duration;

/// Refusals a newcomer may get before it gives up: its back-off doubles from 200 ms to 10 s
/// over its 30 s wait, so about 8; a storm would be thousands.
const MAX_REFUSALS: usize = 20;

#[test]
fn a_second_worker_with_the_same_name_is_refused_and_exits_while_the_first_runs_on() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_millis(300),
    };
    let Some(cluster) = LocalCluster::start(&["w1"], 3, 2, behaviour) else {
        return;
    };
    let opts = cluster.worker_options("w1", 2, 2);
    let mut first = cluster.start_worker(&opts);
    let mut second = spawn_worker(
        &cluster.access,
        &cluster.tmp.path().join("cache-w1-second"),
        &opts,
        cluster.log_path("worker-w1-second"),
    );
    let mut submit = cluster.submit_watch();
    cluster.wait_run_completed(&mut submit, Duration::from_secs(240));
    cluster.assert_report_has_every_unit_once();
    cluster.assert_model_calls(0);

    let status = second
        .wait_exit(Duration::from_secs(120))
        .expect("the second worker gives up and exits");
    let second_log = second.log_text();
    assert!(!status.success(), "{status}; log:\n{second_log}");
    assert!(
        second_log.contains("another live worker is registered as w1")
            && second_log.contains("in use by a live session"),
        "the second worker says why it exits; log:\n{second_log}"
    );
    assert_eq!(
        second_log.matches("registered as w1 session").count(),
        0,
        "the second worker never got the name; log:\n{second_log}"
    );

    let first_log = first.log_text();
    assert!(first.exited().is_none(), "the first worker runs on");
    assert_eq!(
        first_log.matches("registered as w1 session").count(),
        1,
        "the first worker kept its session; log:\n{first_log}"
    );
    let coordinator_log = cluster.coordinator.log_text();
    let registrations = coordinator_log.matches("worker registered").count();
    let refusals = coordinator_log.matches("registration refused").count();
    assert_eq!(registrations, 1, "coordinator log:\n{coordinator_log}");
    assert!(
        (1..=MAX_REFUSALS).contains(&refusals),
        "{refusals} refusals; coordinator log:\n{coordinator_log}"
    );
    eprintln!(
        "duplicate name: {registrations} registration, {refusals} refusals, the second worker \
         exited with {status}"
    );
}

/// The other side of the refusal: a worker killed (-9) and started again at once under its name
/// finds its earlier session still live. It waits (no exit, no storm) until that session has
/// missed its heartbeats for the lease TTL, then gets the name and finishes the run.
#[test]
fn a_worker_restarted_at_once_under_its_name_gets_it_back_when_the_old_session_lapses() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_secs(2),
    };
    let Some(cluster) = LocalCluster::start(&["w1"], 2, 2, behaviour) else {
        return;
    };
    let opts = cluster.worker_options("w1", 2, 2);
    let mut first = cluster.start_worker(&opts);
    let mut submit = cluster.submit_watch();
    ase_cluster_tests::wait_until("a call at the model", Duration::from_secs(120), || {
        cluster.model.in_flight() >= 1
    });
    first.kill9();
    let in_flight = cluster.model.in_flight();
    let restarted = std::time::Instant::now();
    let mut again = cluster.start_worker(&opts);
    let waited = restarted.elapsed();
    cluster.wait_run_completed(&mut submit, Duration::from_secs(240));
    cluster.assert_report_has_every_unit_once();
    // The killed process's calls in flight may be asked again, nothing else.
    cluster.assert_model_calls(in_flight.max(1));
    let log = again.log_text();
    assert!(
        again.exited().is_none(),
        "the restarted worker runs on; log:\n{log}"
    );
    let refusals = log
        .matches("worker name in use by another live worker")
        .count();
    assert!(refusals <= MAX_REFUSALS, "{refusals} refusals; log:\n{log}");
    eprintln!(
        "restarted worker: registered {waited:?} after its start ({refusals} refusals first; \
         lease TTL {} ms), {} model calls for {} units",
        cluster.opts.lease_ttl_ms,
        cluster.model.total_calls(),
        cluster.project.unit_names(cluster.rounds).len()
    );
}
