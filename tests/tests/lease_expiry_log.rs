//! A worker killed (-9) while it holds a generate lease: the coordinator logs the lease's
//! expiry with its unit, worker and phase (the only trace of a worker that vanished), a
//! worker started later finishes the run with every unit once, and at most the killed
//! worker's call in flight is asked of the model again.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{wait_until, LocalCluster, ModelBehaviour};
use std::time::{Duration, Instant};

#[test]
fn a_killed_workers_lease_expiry_is_logged_with_unit_worker_and_phase() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_secs(3),
    };
    let Some(cluster) = LocalCluster::start(&["victim", "spare"], 2, 1, behaviour) else {
        return;
    };
    // One generate slot and no evaluate slot: when killed it holds exactly one lease.
    let mut victim = cluster.start_worker(&cluster.worker_options("victim", 1, 0));
    let mut submit = cluster.submit_watch();
    wait_until(
        "the victim's call at the model",
        Duration::from_secs(120),
        || cluster.model.in_flight() >= 1,
    );
    victim.kill9();
    let killed = Instant::now();
    let units = cluster.project.unit_names(cluster.rounds);
    let expiry = |log: &str| -> Option<String> {
        log.lines()
            .find(|l| {
                l.contains("lease ended without a result")
                    && l.contains("missed its heartbeats")
                    && l.contains("victim")
                    && l.contains("generate")
                    && units.iter().any(|u| l.contains(u.as_str()))
            })
            .map(str::to_string)
    };
    wait_until("the expiry logged", Duration::from_secs(60), || {
        expiry(&cluster.coordinator.log_text()).is_some()
    });
    let logged_after = killed.elapsed();

    let _spare = cluster.start_worker(&cluster.worker_options("spare", 2, 2));
    cluster.wait_run_completed(&mut submit, Duration::from_secs(240));
    cluster.assert_report_has_every_unit_once();
    // The killed worker's one call in flight may be asked again, nothing else.
    cluster.assert_model_calls(1);
    eprintln!(
        "{} units, {} model calls; expiry logged {logged_after:?} after the kill: {}",
        units.len(),
        cluster.model.total_calls(),
        expiry(&cluster.coordinator.log_text()).unwrap_or_default()
    );
}
