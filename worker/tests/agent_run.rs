//! The agent against the real coordinator over gRPC on loopback: a v1 run end to end, a
//! coordinator restart survived by re-registering, and a late result with a stale fence.

mod agent_support;
use ase_test_support as support;

use agent_support::*;
use ase_coordinator::{CoordinatorConfig, UnitState};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn no_scanner() -> PathBuf {
    // These tests are about the agent: without a scanner, evaluations are records of a failed
    // scan (detected -1), which complete the run like any other.
    PathBuf::from("/nonexistent/osemgrep")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_run_completes_with_the_original_provider_and_osemgrep() {
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let env = WorkerEnv::new();
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &env.db()).await;
    let run = submit(
        &server,
        spec("e2e", 2, original_model()),
        dataset(2, &env.commit),
    )
    .await;
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let mut config = agent_config(&server.uri());
    let s = sessions.clone();
    config.on_register = Some(Arc::new(move |name: &str, session: u64| {
        s.lock().unwrap().push((name.to_string(), session));
    }));
    let agent = RunningAgent::start(config, env.context(osemgrep));
    wait_until(180, "the run completes", || {
        server.state(&run) == "completed"
    })
    .await;

    // 2 tasks x 2 rounds x (generate + evaluate), every report accepted once.
    assert_eq!(stat(&agent.stats.completed), 8);
    assert_eq!(stat(&agent.stats.refused), 0);
    assert_eq!(stat(&agent.stats.failed), 0);
    assert_eq!(*sessions.lock().unwrap(), vec![("w1".to_string(), 1)]);
    let units = server.coord.units(&run).unwrap();
    assert_eq!(units.len(), 4);
    assert!(
        units.iter().all(|u| u.state == UnitState::Done),
        "{units:?}"
    );
    // The original code scores like the baseline: one SQL injection found, in both scans.
    let report = server.coord.fetch_report(&run).unwrap();
    assert!(report.complete);
    let all: String = report
        .files
        .iter()
        .map(|f| String::from_utf8_lossy(&f.content).into_owned())
        .collect();
    assert!(all.contains("t0") && all.contains("t1"), "{all}");
    agent.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_gets_a_new_session_and_the_run_finishes() {
    let env = WorkerEnv::new();
    let model = ModelDouble::start(Duration::from_secs(3), "no patch here").await;
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &env.db()).await;
    let addr = server.addr;
    let run = submit(
        &server,
        spec("restart", 1, openai_model(&model.base_url)),
        dataset(2, &env.commit),
    )
    .await;
    let agent = RunningAgent::start(agent_config(&server.uri()), env.context(no_scanner()));
    let calls = model.calls.clone();
    wait_until(30, "both units at the model", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    server.stop().await;
    let stats = agent.stats.clone();
    let failures_before = stat(&stats.heartbeat_failures);
    wait_until(10, "a heartbeat fails", || {
        stat(&stats.heartbeat_failures) > failures_before
    })
    .await;
    assert!(agent.is_running());
    let server = Server::start(addr, &env.db()).await;
    wait_until(60, "the run completes after the restart", || {
        server.state(&run) == "completed"
    })
    .await;
    assert!(stat(&stats.registrations) >= 2, "re-registered");
    // The units of the first session went on across the restart and the re-registration:
    // nobody else was given them, so their results were accepted, not refused or revoked and
    // asked of the model again.
    let counts = format!(
        "completed {} refused {} revoked {} failed {} registrations {}",
        stat(&stats.completed),
        stat(&stats.refused),
        stat(&stats.revoked),
        stat(&stats.failed),
        stat(&stats.registrations)
    );
    assert_eq!(stat(&stats.revoked), 0, "{counts}");
    assert_eq!(stat(&stats.refused), 0, "{counts}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "each unit asked of the model once"
    );
    let units = server.coord.units(&run).unwrap();
    assert!(
        units.iter().all(|u| u.state == UnitState::Done),
        "{units:?}"
    );
    assert!(agent.is_running());
    agent.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_result_with_a_stale_fence_is_dropped_and_the_worker_goes_on() {
    let env = WorkerEnv::new();
    let model = ModelDouble::start(Duration::from_millis(1500), "no patch here").await;
    // Heartbeats far apart: the late result reaches the coordinator before any heartbeat
    // could revoke its unit.
    let config = CoordinatorConfig {
        heartbeat_interval_ms: 6_000,
        lease_ttl_ms: 30_000,
        ..coordinator_config()
    };
    let clock = Arc::new(ase_coordinator::ManualClock::new(1_000_000));
    let server = Server::start_with_clock(
        "127.0.0.1:0".parse().unwrap(),
        &env.db(),
        config,
        clock.clone(),
    )
    .await;
    let run = submit(
        &server,
        spec("stale", 1, openai_model(&model.base_url)),
        dataset(1, &env.commit),
    )
    .await;
    let mut agent_cfg = agent_config(&server.uri());
    // One generate slot: the lease loop stops polling while the unit runs, so the superseded
    // session is noticed by the late report first.
    agent_cfg.generate_slots = 1;
    agent_cfg.eval_slots = 0;
    let agent = RunningAgent::start(agent_cfg, env.context(no_scanner()));
    let calls = model.calls.clone();
    wait_until(30, "the unit at the model", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    // While the worker's session is live its name is not given to anyone else.
    let refused = server
        .coord
        .register("w1", ase_coordinator::Capabilities::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ase_coordinator::CoordinatorError::NameInUse { .. }),
        "{refused}"
    );
    // The worker's session is superseded while its unit runs (as when the coordinator
    // declared it dead and it came back): once it has not been heard from for the lease TTL,
    // another registration takes the name over and the lease in hand is void.
    clock.advance_ms(30_001);
    server
        .coord
        .register("w1", ase_coordinator::Capabilities::default())
        .await
        .unwrap();
    let stats = agent.stats.clone();
    wait_until(20, "the late result is refused", || {
        stat(&stats.refused) >= 1
    })
    .await;
    assert_eq!(stat(&stats.completed), 0);
    assert!(agent.is_running());
    agent.shutdown().await;
    let units = server.coord.units(&run).unwrap();
    assert_eq!(units[0].state, UnitState::GenerateQueued, "{units:?}");
    server.stop().await;
}
