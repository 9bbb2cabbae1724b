//! The coordinator is killed (-9) mid-run and started again on the same data directory: the
//! run completes with every unit once, and no unit is asked of the model twice: neither a
//! generation committed before the kill nor one in flight at the kill.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{wait_until, LocalCluster, ModelBehaviour};
use std::time::Duration;

const GENERATE_SLOTS: u32 = 2;

#[test]
fn coordinator_killed_and_restarted_on_its_data_completes_the_run() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_millis(600),
    };
    let names = ["w1", "w2", "w3"];
    let Some(mut cluster) = LocalCluster::start(&names, 4, 3, behaviour) else {
        return;
    };
    let mut workers: Vec<_> = names
        .iter()
        .map(|n| cluster.start_worker(&cluster.worker_options(n, GENERATE_SLOTS, 2)))
        .collect();
    let mut first = cluster.submit_watch();
    let units = cluster.project.tasks.len() as u32 * cluster.rounds;
    wait_until("some generations done", Duration::from_secs(120), || {
        cluster.model.total_calls() >= 4
    });
    let calls_at_kill = cluster.model.total_calls();
    assert!(
        calls_at_kill < units,
        "killed mid-run ({calls_at_kill} of {units} calls)"
    );
    cluster.restart_coordinator_after_kill();
    // The watch of the first coordinator lost its stream: it ends or is ended here.
    first.kill9();

    // Every worker finds the new coordinator by itself and registers again.
    for w in workers.iter_mut() {
        w.wait_for_count("registered as", 2, Duration::from_secs(60));
    }
    // Submitting the same run again resumes it.
    let mut again = cluster.submit_watch();
    cluster.wait_run_completed(&mut again, Duration::from_secs(240));
    cluster.assert_report_has_every_unit_once();
    // A generation in flight at the kill is not asked again either: its worker keeps the
    // answer, registers again holding its lease, and the result is accepted. Exactly one
    // model call per unit.
    cluster.assert_model_calls(0);
    assert_eq!(
        cluster.model.total_calls(),
        units,
        "model calls for {units} units"
    );
}
