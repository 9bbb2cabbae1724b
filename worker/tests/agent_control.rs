//! The agent's reactions to the coordinator's orders and absence: a revoked lease cancels its
//! unit, drain stops new leases, connection refused is retried with back-off (no busy loop).

mod agent_support;

use agent_support::*;
use std::path::PathBuf;
use std::time::Duration;

fn no_scanner() -> PathBuf {
    PathBuf::from("/nonexistent/osemgrep")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_cancels_its_unit() {
    let env = WorkerEnv::new();
    // A model that takes far longer than the test: the unit is still at it when revoked.
    let model = ModelDouble::start(Duration::from_secs(600), "x").await;
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &env.db()).await;
    let run = submit(
        &server,
        spec("revoke", 1, openai_model(&model.base_url)),
        dataset(1, &env.commit),
    )
    .await;
    let agent = RunningAgent::start(agent_config(&server.uri()), env.context(no_scanner()));
    let calls = model.calls.clone();
    wait_until(30, "the unit at the model", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(stat(&agent.stats.revoked), 0);
    assert!(server.coord.cancel_run(&run).await.unwrap().accepted);
    let stats = agent.stats.clone();
    wait_until(10, "the unit is cancelled", || stat(&stats.revoked) == 1).await;
    // Cancelled, not reported: the coordinator had ended the lease itself.
    assert_eq!(
        stat(&stats.completed) + stat(&stats.failed) + stat(&stats.refused),
        0
    );
    let workers = server.coord.list_workers();
    wait_until(5, "the coordinator sees a free worker", || {
        server.coord.list_workers()[0].running == 0
    })
    .await;
    assert_eq!(workers.len(), 1);
    assert!(agent.is_running());
    agent.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_takes_no_new_leases() {
    let env = WorkerEnv::new();
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &env.db()).await;
    let agent = RunningAgent::start(agent_config(&server.uri()), env.context(no_scanner()));
    let stats = agent.stats.clone();
    wait_until(10, "registered", || stat(&stats.registrations) == 1).await;
    assert!(server.coord.drain_worker("w1").await.unwrap().accepted);
    let seen = stat(&stats.heartbeats);
    wait_until(10, "two heartbeats after the drain", || {
        stat(&stats.heartbeats) >= seen + 2
    })
    .await;
    let run = submit(
        &server,
        spec("drain", 1, original_model()),
        dataset(2, &env.commit),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stat(&stats.leases), 0);
    let progress = server.coord.progress(&run).unwrap();
    assert_eq!(progress.generate.queued, 2, "{progress:?}");
    assert!(server.coord.list_workers()[0].draining);
    // Still alive and heartbeating while drained.
    let hb = stat(&stats.heartbeats);
    wait_until(5, "heartbeats go on", || stat(&stats.heartbeats) > hb).await;
    agent.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried_with_backoff() {
    let env = WorkerEnv::new();
    // A port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let agent = RunningAgent::start(
        agent_config(&format!("http://{addr}")),
        env.context(no_scanner()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = stat(&agent.stats.connection_attempts);
    // Back-off from 100 ms doubling to 800 ms (jittered to [d/2, d]): about 6-9 attempts in
    // 3 s; a loop without back-off would make thousands.
    assert!((3..=14).contains(&attempts), "{attempts} attempts in 3 s");
    assert_eq!(stat(&agent.stats.registrations), 0);
    // The coordinator appears on that address: the worker connects and registers.
    let server = Server::start(addr, &env.db()).await;
    let stats = agent.stats.clone();
    wait_until(10, "registered once the coordinator is up", || {
        stat(&stats.registrations) == 1
    })
    .await;
    agent.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_unfinished_units_back_without_counting_an_attempt() {
    let env = WorkerEnv::new();
    let model = ModelDouble::start(Duration::from_secs(600), "x").await;
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &env.db()).await;
    let run = submit(
        &server,
        spec("shutdown", 1, openai_model(&model.base_url)),
        dataset(1, &env.commit),
    )
    .await;
    let agent = RunningAgent::start(agent_config(&server.uri()), env.context(no_scanner()));
    let calls = model.calls.clone();
    wait_until(30, "the unit at the model", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    let stats = agent.stats.clone();
    agent.shutdown().await;
    assert_eq!(stat(&stats.released), 1);
    let units = server.coord.units(&run).unwrap();
    assert_eq!(
        units[0].state,
        ase_coordinator::UnitState::GenerateQueued,
        "{units:?}"
    );
    assert_eq!(units[0].phase_failures, 0, "{units:?}");
    server.stop().await;
}
