//! `ase submit --watch` outlives a coordinator restart: the coordinator is killed (-9) and
//! started again on its data and address mid-run; the same watch process reconnects by itself
//! and exits 0 when the run completes, having said it lost and found the coordinator.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{wait_until, LocalCluster, ModelBehaviour};
use std::time::Duration;

#[test]
fn a_watch_reconnects_across_a_coordinator_restart() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_millis(400),
    };
    let Some(mut cluster) = LocalCluster::start(&["w1"], 3, 2, behaviour) else {
        return;
    };
    let _worker = cluster.start_worker(&cluster.worker_options("w1", 1, 1));
    let mut watch = cluster.submit_watch();
    let units = cluster.project.tasks.len() as u32 * cluster.rounds;
    wait_until("a first generation", Duration::from_secs(120), || {
        cluster.model.total_calls() >= 1
    });
    assert!(cluster.model.total_calls() < units, "restarted mid-run");
    cluster.restart_coordinator_after_kill();

    // No second submit: the watch that was cut off follows the run to its end.
    cluster.wait_run_completed(&mut watch, Duration::from_secs(240));
    let log = watch.log_text();
    assert!(log.contains("lost the coordinator"), "{log}");
    assert!(log.contains("reconnected to the coordinator"), "{log}");
    cluster.assert_report_has_every_unit_once();
}
