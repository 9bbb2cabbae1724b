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

const LEASES_DB_ENV: &str = "ASE_TEST_COORDINATOR_LEASES_DB";
const LEASED: usize = 6;

/// Not a test on its own: the child process of
/// `leases_held_through_a_kill_9_are_kept_when_their_worker_registers_again`.
#[test]
#[ignore]
fn child_leases_then_waits_to_be_killed() {
    let Ok(db) = std::env::var(LEASES_DB_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let c =
            Coordinator::open(std::path::Path::new(&db), config(), Arc::new(SystemClock)).unwrap();
        let ids: Vec<String> = (0..LEASED).map(|i| format!("h{i}")).collect();
        let tasks: Vec<(&str, &str, &str, i64)> = ids
            .iter()
            .map(|id| (id.as_str(), "o/r", "SQLI", 1))
            .collect();
        let sub = c
            .submit_run(submit_req("held", 1, json!({}), v1_dataset(&tasks)))
            .await
            .unwrap();
        let r = c.register("w", caps(LEASED as u32, 0, &[])).await.unwrap();
        let leases = c
            .lease_work(lease_req(&r, LEASED as u32, 0))
            .await
            .unwrap()
            .leases;
        let mut out = std::io::stdout();
        writeln!(out, "RUN {}", sub.run_id).unwrap();
        // Each grant is durable once lease_work returns: the worker has it in hand.
        for g in &leases {
            writeln!(
                out,
                "LEASE {} {} {} {} {}",
                g.lease.lease_id,
                g.lease.fence.session,
                g.lease.fence.attempt,
                g.instance_id,
                g.round
            )
            .unwrap();
        }
        writeln!(out, "READY").unwrap();
        out.flush().unwrap();
        // Model calls in flight: the parent kills this process now.
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    });
}

#[test]
fn leases_held_through_a_kill_9_are_kept_when_their_worker_registers_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_leases_then_waits_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(LEASES_DB_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut run_id = String::new();
    let mut leases: Vec<(LeaseRef, UnitId)> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("RUN ") {
            run_id = id.to_string();
        } else if let Some(rest) = line.strip_prefix("LEASE ") {
            let p: Vec<&str> = rest.split(' ').collect();
            leases.push((
                LeaseRef {
                    lease_id: p[0].parse().unwrap(),
                    fence: Fence {
                        session: p[1].parse().unwrap(),
                        attempt: p[2].parse().unwrap(),
                    },
                },
                UnitId::new(p[3], p[4].parse().unwrap()),
            ));
        } else if line == "READY" {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, with every lease in the worker's hands
    child.wait().unwrap();
    assert_eq!(leases.len(), LEASED, "every unit leased before the kill");

    // Back at once: the leases' execution deadlines (set by the child's clock) are ahead.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Arc::new(ManualClock::new(now_ms));
    let c = Coordinator::open(&db, config(), clock).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The worker comes back holding the first half: their model calls were answered
        // while the coordinator was down. The others it lost (say, it restarted too).
        let (kept, lost) = leases.split_at(LEASED / 2);
        let held: Vec<LeaseRef> = kept.iter().map(|(l, _)| *l).collect();
        let w = c
            .register_holding("w", caps(LEASED as u32, 4, &[]), &held)
            .await
            .unwrap();
        for (lease, unit) in kept {
            let ack = c
                .complete(Completion {
                    worker_id: w.worker_id.clone(),
                    lease: *lease,
                    phase: Phase::Generate,
                    result_json: generation(unit, true),
                })
                .await
                .unwrap();
            assert!(ack.accepted && !ack.duplicate, "{unit}: {ack:?}");
        }
        let units = c.units(&run_id).unwrap();
        for (_, unit) in kept {
            let u = units.iter().find(|u| &u.unit == unit).unwrap();
            assert_eq!(u.state, UnitState::EvaluateQueued, "{unit}");
            assert_eq!(u.attempt, 1, "{unit} never leased again");
            assert!(u.failures.is_empty(), "{unit}: {:?}", u.failures);
        }
        for (_, unit) in lost {
            let u = units.iter().find(|u| &u.unit == unit).unwrap();
            assert_eq!(u.state, UnitState::GenerateQueued, "{unit}");
            assert_eq!(
                u.phase_failures, 0,
                "{unit}: the restart lost it, not the unit"
            );
        }
        drive(&c, &w, 0, 1).await;
        let p = c.progress(&run_id).unwrap();
        assert_eq!(p.state, "completed", "{p:?}");
        let units = c.units(&run_id).unwrap();
        let generations: u32 = units.iter().map(|u| u.model_calls).sum();
        assert_eq!(generations, LEASED as u32, "one generation per unit");
    });
}
