//! Durability under `kill -9`: a child process commits transitions and prints each one once it
//! is acknowledged; the parent kills it at a random moment, reopens the store, and checks that
//! every acknowledged transition is there.

mod support;

use ase_common::scoring::UnitId;
use ase_coordinator::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use support::*;

const DB_ENV: &str = "ASE_TEST_COORDINATOR_DB";
const TASKS: usize = 400;

fn dataset() -> Vec<u8> {
    let ids: Vec<String> = (0..TASKS).map(|i| format!("k{i:04}")).collect();
    let tasks: Vec<(&str, &str, &str, i64)> = ids
        .iter()
        .map(|id| (id.as_str(), "o/r", "SQLI", 1))
        .collect();
    v1_dataset(&tasks)
}

/// Not a test on its own: the child process of `every_acknowledged_transition_survives_kill_9`.
#[test]
#[ignore]
fn child_commits_until_killed() {
    let Ok(db) = std::env::var(DB_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = CoordinatorConfig {
            lease_ttl_ms: 600_000,
            ..config()
        };
        let c = Coordinator::open(std::path::Path::new(&db), cfg, Arc::new(SystemClock)).unwrap();
        let sub = c
            .submit_run(submit_req("k", 1, json!({}), dataset()))
            .await
            .unwrap();
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        writeln!(out.lock().unwrap(), "ACK submit {}", sub.run_id).unwrap();
        // Several workers at once, so acknowledgements share flushes.
        let mut tasks = Vec::new();
        for w in 0..4 {
            let c = c.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                let r = c.register(&format!("w{w}"), caps(2, 2, &[])).await.unwrap();
                loop {
                    let leases = c.lease_work(lease_req(&r, 2, 2)).await.unwrap().leases;
                    if leases.is_empty() {
                        return;
                    }
                    for g in leases {
                        let (result, tag) = match g.phase {
                            Phase::Generate => (generation(&unit_of(&g), true), "gen"),
                            Phase::Evaluate => (static_eval(&unit_of(&g), 0, 1), "eval"),
                        };
                        let ack = c.complete(completion(&r, &g, result)).await.unwrap();
                        assert!(ack.accepted);
                        let mut o = out.lock().unwrap();
                        writeln!(o, "ACK {tag} {} {}", g.instance_id, g.round).unwrap();
                        o.flush().unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        writeln!(out.lock().unwrap(), "ACK finished").unwrap();
    });
}

#[test]
fn every_acknowledged_transition_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    // Kill after a random number of acknowledgements, somewhere in the run.
    let kill_after = fastrand::usize(10..(2 * TASKS - 10));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_commits_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(DB_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            acked.push(rest.to_string());
            if acked.len() >= kill_after {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
                           // Whatever was printed before the kill was acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("ACK ") {
            acked.push(rest.to_string());
        }
    }
    child.wait().unwrap();
    assert!(
        acked.len() >= kill_after.min(2),
        "child acknowledged too little: {acked:?}"
    );
    assert!(acked[0].starts_with("submit "), "{acked:?}");
    let run_id = acked[0].trim_start_matches("submit ").to_string();

    let clock = Arc::new(ManualClock::new(u64::MAX / 4));
    let c = Coordinator::open(&db, config(), clock).unwrap();
    let units = c.units(&run_id).unwrap();
    assert_eq!(units.len(), TASKS);
    let mut generated = BTreeSet::new();
    let mut evaluated = BTreeSet::new();
    for a in &acked[1..] {
        let parts: Vec<&str> = a.split(' ').collect();
        if parts[0] == "finished" {
            continue;
        }
        let unit = UnitId::new(parts[1], parts[2].parse().unwrap());
        match parts[0] {
            "gen" => generated.insert(unit),
            "eval" => evaluated.insert(unit),
            other => panic!("unexpected line {other}"),
        };
    }
    for u in &units {
        if evaluated.contains(&u.unit) {
            assert_eq!(
                u.state,
                UnitState::Done,
                "{} was acknowledged evaluated",
                u.unit
            );
            assert!(u.evaluated_by.is_some());
        }
        if generated.contains(&u.unit) {
            assert!(
                matches!(
                    u.state,
                    UnitState::EvaluateQueued | UnitState::EvaluateLeased | UnitState::Done
                ),
                "{} was acknowledged generated, is {:?}",
                u.unit,
                u.state
            );
            assert!(u.generated_by.is_some());
        }
    }
    // The reopened coordinator carries on to completion.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let w = c.register("after", caps(8, 8, &[])).await.unwrap();
        // Leases of the killed process expire (the clock is far ahead) and are redone.
        c.sweep().await.unwrap();
        drive(&c, &w, 0, 1).await;
        let p = c.progress(&run_id).unwrap();
        assert_eq!(p.state, "completed", "{p:?}");
        assert_eq!(p.evaluate.done, TASKS as u64);
    });
    eprintln!(
        "killed after {} acknowledgements ({} generated, {} evaluated)",
        acked.len(),
        generated.len(),
        evaluated.len()
    );
}
