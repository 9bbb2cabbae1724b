//! The coordinator is killed (-9) while model calls are in flight and stays down until the
//! model has answered them: the answers wait in the workers. It comes back on its data, the
//! key is supplied again, and each worker registers again naming the leases it still holds;
//! their results are accepted, not refused and asked again. Every unit is asked of the model
//! exactly once.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{wait_until, LocalCluster, ModelBehaviour};
use std::time::{Duration, Instant};

const GENERATE_SLOTS: u32 = 2;
const KEY: &str = "sk-test-restart-in-flight-0123456789";

#[test]
fn answers_that_arrive_while_the_coordinator_is_down_are_accepted_after_it_restarts() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_secs(2),
    };
    let names = ["w1", "w2", "w3"];
    let Some(mut cluster) = LocalCluster::start(&names, 4, 3, behaviour) else {
        return;
    };
    let mut workers: Vec<_> = names
        .iter()
        .map(|n| cluster.start_worker(&cluster.worker_options(n, GENERATE_SLOTS, 2)))
        .collect();
    let units = cluster.project.tasks.len() as u32 * cluster.rounds;
    let mut first = cluster.submit_watch_with_key(KEY);
    wait_until("model calls in flight", Duration::from_secs(120), || {
        cluster.model.in_flight() >= GENERATE_SLOTS
    });
    cluster.kill_coordinator();
    let in_flight_at_kill = cluster.model.in_flight();
    let calls_at_kill = cluster.model.total_calls();
    first.kill9();
    assert!(
        in_flight_at_kill >= 1 && calls_at_kill < units,
        "killed with calls in flight ({in_flight_at_kill} in flight, {calls_at_kill} of {units})"
    );
    // Down until every call in flight was answered, and a while longer: the workers' report
    // retries back off to seconds apart, so that most answers are reported only after their
    // worker registered again (the case a restart used to pay twice for).
    wait_until(
        "the calls in flight answered",
        Duration::from_secs(60),
        || cluster.model.in_flight() == 0,
    );
    std::thread::sleep(Duration::from_secs(6));

    let restarted = Instant::now();
    cluster.start_coordinator_again();
    for w in workers.iter_mut() {
        w.wait_for_count("registered as", 2, Duration::from_secs(60));
    }
    let reregistered = restarted.elapsed();
    // The restarted process does not know the key: supplying it again resumes the run.
    let mut again = cluster.submit_watch_with_key(KEY);
    cluster.wait_run_completed(&mut again, Duration::from_secs(240));
    let completed = restarted.elapsed();
    cluster.assert_report_has_every_unit_once();
    cluster.assert_model_calls(0);
    assert_eq!(
        cluster.model.total_calls(),
        units,
        "model calls for {units} units"
    );

    // No worker had a report refused. An answer reported before its worker registered again
    // is accepted under the recovered lease; one reported after it, under the lease the
    // registration kept: at least one was.
    let log = cluster.coordinator.log_text();
    let kept = log.matches("lease kept across the re-registration").count();
    assert!(kept >= 1, "no lease kept; coordinator log:\n{log}");
    for w in &workers {
        let text = w.log_text();
        assert!(!text.contains("report refused"), "{text}");
    }
    eprintln!(
        "{units} units, {} model calls; {in_flight_at_kill} calls in flight at the kill, \
         {kept} leases kept; workers registered again {reregistered:?} after the restart, \
         run completed {completed:?} after it",
        cluster.model.total_calls()
    );
}
