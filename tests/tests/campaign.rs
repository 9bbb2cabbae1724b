//! A campaign on a local cluster of real processes: `ase coordinator` (mutual TLS, sled) and
//! `ase worker`s (bare osemgrep), the project served through a `file://` URL template and the
//! model behind an OpenAI-compatible server that counts its calls.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::{count_files, slow_osemgrep, wait_until, LocalCluster, ModelBehaviour};
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn three_workers_run_a_campaign_to_completion_each_unit_once() {
    let Some(cluster) = LocalCluster::start(&["w1", "w2", "w3"], 4, 2, ModelBehaviour::default())
    else {
        return;
    };
    let _workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| cluster.start_worker(&cluster.worker_options(n, 2, 2)))
        .collect();
    let mut submit = cluster.submit_watch();
    cluster.wait_run_completed(&mut submit, RUN_TIMEOUT);
    cluster.assert_report_has_every_unit_once();
    cluster.assert_model_calls(0);
}

/// The victim only evaluates (no generate slot) with a scanner that takes seconds, so when it
/// is killed it holds evaluate leases whose generations are committed: finishing them elsewhere
/// must not call the model again. The generating worker is never killed, so exactly one call
/// per unit is the only correct count.
#[test]
fn killing_a_worker_that_holds_evaluate_leases_loses_nothing_and_calls_the_model_once_per_unit() {
    let Some(cluster) =
        LocalCluster::start(&["gen", "victim", "spare"], 3, 2, ModelBehaviour::default())
    else {
        return;
    };
    let marks = cluster.tmp.path().join("victim-scans");
    let slow = slow_osemgrep(cluster.tmp.path(), &cluster.osemgrep, &marks, 4000);
    let mut victim_opts = cluster.worker_options("victim", 0, 2);
    victim_opts.osemgrep = slow;
    let mut victim = cluster.start_worker(&victim_opts);
    let _gen = cluster.start_worker(&cluster.worker_options("gen", 2, 0));
    let mut submit = cluster.submit_watch();

    wait_until(
        "the victim scans (holds evaluate leases)",
        Duration::from_secs(120),
        || count_files(&marks) >= 1,
    );
    victim.kill9();
    let scans_started = count_files(&marks);
    assert!(
        !victim.log_text().contains("completed"),
        "the victim had not completed a unit when killed"
    );

    // Only now a worker that can evaluate at normal speed: the victim's units must come back
    // to the queue (lease expiry) and finish here.
    let _spare = cluster.start_worker(&cluster.worker_options("spare", 0, 2));
    cluster.wait_run_completed(&mut submit, RUN_TIMEOUT);
    cluster.assert_report_has_every_unit_once();
    cluster.assert_model_calls(0);
    assert_eq!(
        count_files(&marks),
        scans_started,
        "the killed worker scanned nothing more"
    );
}
