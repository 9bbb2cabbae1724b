//! The model API key after a restart (`waiting_for_key`), progress reports, per-phase status and
//! worker load, and store failures being fatal; all on a real sled store.

mod support;

use ase_coordinator::grpc::{ServeError, ServeOptions, Server};
use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn with_key(mut req: SubmitRun, key: &str) -> SubmitRun {
    req.api_key = Some(key.to_string());
    req
}

#[tokio::test]
async fn after_a_restart_a_run_with_a_key_waits_for_it_and_resumes_when_it_is_supplied() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1), ("b", "o/b", "SQLI", 1)]);
    let run_id = {
        let c = open(dir.path(), &clock);
        let sub = c
            .submit_run(with_key(
                submit_req("k", 1, json!({}), ds.clone()),
                "sk-secret-1",
            ))
            .await
            .unwrap();
        let w = c.register("w1", caps(1, 1, &[])).await.unwrap();
        let reply = c.lease_work(lease_req(&w, 1, 1)).await.unwrap();
        assert_eq!(reply.leases.len(), 1);
        assert_eq!(reply.leases[0].api_key.as_deref(), Some("sk-secret-1"));
        // One generation committed before the restart: its evaluation needs no key.
        let g = &reply.leases[0];
        let ack = c
            .complete(completion(&w, g, generation(&unit_of(g), true)))
            .await
            .unwrap();
        assert!(ack.accepted);
        assert_eq!(c.progress(&sub.run_id).unwrap().state, "running");
        sub.run_id
    };
    // The key is in no file of the store.
    for entry in walk(&dir.path().join("db")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(b"sk-secret-1".len())
                .any(|w| w == b"sk-secret-1"),
            "the key is written in {}",
            entry.display()
        );
    }

    let c = open(dir.path(), &clock);
    let p = c.progress(&run_id).unwrap();
    assert_eq!(p.state, "waiting_for_key");
    assert_eq!(p.generate.queued, 1);
    let w = c.register("w1", caps(1, 1, &[])).await.unwrap();
    // Evaluation goes on; no generate lease is granted, and no unit fails.
    let reply = c.lease_work(lease_req(&w, 1, 1)).await.unwrap();
    assert_eq!(reply.leases.len(), 1);
    assert_eq!(reply.leases[0].phase, Phase::Evaluate);
    let e = &reply.leases[0];
    assert!(
        c.complete(completion(&w, e, static_eval(&unit_of(e), 0, 1)))
            .await
            .unwrap()
            .accepted
    );
    let reply = c.lease_work(lease_req(&w, 1, 1)).await.unwrap();
    assert!(reply.leases.is_empty(), "{:?}", reply.leases);
    let p = c.progress(&run_id).unwrap();
    assert_eq!(p.state, "waiting_for_key");
    assert_eq!((p.generate.failed, p.evaluate.failed), (0, 0));

    // A long poll waiting for work is answered once the key is supplied again.
    let poll = {
        let c = c.clone();
        let mut req = lease_req(&w, 1, 1);
        req.wait_ms = 10_000;
        tokio::spawn(async move { c.lease_work(req).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = c
        .submit_run(with_key(submit_req("k", 1, json!({}), ds), "sk-secret-2"))
        .await
        .unwrap();
    assert!(again.resumed);
    let reply = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll is woken by the key")
        .unwrap()
        .unwrap();
    assert_eq!(reply.leases.len(), 1);
    assert_eq!(reply.leases[0].phase, Phase::Generate);
    assert_eq!(reply.leases[0].api_key.as_deref(), Some("sk-secret-2"));
    assert_eq!(c.progress(&run_id).unwrap().state, "running");
}

#[tokio::test]
async fn a_run_submitted_without_a_key_never_waits_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1)]);
    let run_id = {
        let c = open(dir.path(), &clock);
        c.submit_run(submit_req("n", 1, json!({}), ds))
            .await
            .unwrap()
            .run_id
    };
    let c = open(dir.path(), &clock);
    assert_eq!(c.progress(&run_id).unwrap().state, "running");
    let w = c.register("w1", caps(1, 1, &[])).await.unwrap();
    let reply = c.lease_work(lease_req(&w, 1, 1)).await.unwrap();
    assert_eq!(reply.leases.len(), 1);
    assert_eq!(reply.leases[0].api_key, None);
}

#[tokio::test]
async fn progress_reports_show_in_status_and_renew_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = open(dir.path(), &clock);
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1), ("b", "o/b", "SQLI", 1)]);
    let sub = c
        .submit_run(submit_req("p", 1, json!({}), ds))
        .await
        .unwrap();
    let w = c.register("w1", caps(2, 1, &[])).await.unwrap();
    let reply = c.lease_work(lease_req(&w, 2, 1)).await.unwrap();
    assert_eq!(reply.leases.len(), 2);
    let (first, second) = (&reply.leases[0], &reply.leases[1]);
    let ack = c.report_progress(Progress {
        worker_id: w.worker_id.clone(),
        lease: first.lease,
        step: "running".into(),
    });
    assert!(ack.accepted, "{ack:?}");
    let p = c.progress(&sub.run_id).unwrap();
    assert_eq!(p.leased_by_step.get("generate: running"), Some(&1));
    assert_eq!(p.leased_by_step.get("generate: leased"), Some(&1));
    let workers = c.list_workers();
    assert_eq!(
        (workers[0].running_generate, workers[0].running_evaluate),
        (2, 0)
    );

    // Another worker cannot report on this lease; a stale fence is refused.
    let other = c.register("w2", caps(1, 1, &[])).await.unwrap();
    assert!(
        !c.report_progress(Progress {
            worker_id: other.worker_id.clone(),
            lease: first.lease,
            step: "running".into(),
        })
        .accepted
    );

    // Past most of the TTL, the report renews the first lease; the silent one expires.
    clock.advance_ms(u64::from(TTL_MS) - 100);
    assert!(
        c.report_progress(Progress {
            worker_id: w.worker_id.clone(),
            lease: first.lease,
            step: "running".into(),
        })
        .accepted
    );
    clock.advance_ms(200);
    assert_eq!(c.sweep().await.unwrap(), 1);
    let ack = c
        .complete(completion(&w, first, generation(&unit_of(first), true)))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
    let late = c
        .complete(completion(&w, second, generation(&unit_of(second), true)))
        .await
        .unwrap();
    assert!(!late.accepted);
    let p = c.progress(&sub.run_id).unwrap();
    assert_eq!((p.generate.done, p.generate.queued), (1, 1));
    // One unit through generate in the elapsed time: the generate ETA is known.
    assert!(p.generate_eta_seconds > 0.0, "{p:?}");
}

#[tokio::test]
async fn a_store_failure_fails_every_later_operation_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1)]);
    c.submit_run(submit_req("f", 1, json!({}), ds))
        .await
        .unwrap();
    let w = c.register("w1", caps(1, 1, &[])).await.unwrap();
    let mut failed = c.store().failed();
    assert!(!*failed.borrow());
    c.store().inject_failure_after(0);
    let err = c.lease_work(lease_req(&w, 1, 1)).await.unwrap_err();
    assert!(
        matches!(err, CoordinatorError::Store(_)),
        "a store error, not {err}"
    );
    assert!(*failed.borrow_and_update());
    assert!(c.store().failure().unwrap().contains("injected failure"));
    // Reads fail too: what is on disk is unknown.
    let again = c.register("w2", caps(1, 1, &[])).await.unwrap_err();
    assert!(again.to_string().contains("failed earlier"), "{again}");
}

#[tokio::test]
async fn the_server_stops_with_an_error_when_the_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::open(&dir.path().join("db"), config(), Arc::new(SystemClock)).unwrap();
    let server = Server::bind(
        c.clone(),
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            security: ase_proto::endpoint::TransportSecurity::Plaintext,
            metrics_listen: None,
            sweep_interval: Duration::from_millis(50),
        },
    )
    .await
    .unwrap();
    let serving = tokio::spawn(server.serve(std::future::pending()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.store().inject_failure_after(0);
    // Any transition now fails: here a registration.
    assert!(c.register("w1", caps(1, 1, &[])).await.is_err());
    let result = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops by itself")
        .unwrap();
    match result {
        Err(ServeError::StoreFailed(why)) => assert!(why.contains("injected"), "{why}"),
        other => panic!("expected a store failure, got {other:?}"),
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
