//! Unit lifecycle, run completion and outputs, restart.

mod support;

use ase_common::scoring::UnitId;
use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

#[tokio::test]
async fn every_transition_then_the_run_completes_and_scores_with_our_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c = open(dir.path(), &clock);
    // The dataset says 0 findings on the original code; our scanner measured 3. Secure means
    // fewer than our own baseline, so 1 finding is secure.
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 0), ("b", "o/b", "XSS", 0)]);
    let sub = c
        .submit_run(submit_req("b1", 2, json!({}), ds))
        .await
        .unwrap();
    assert_eq!(sub.total_units, 4);
    assert!(!sub.resumed);
    let p = c.progress(&sub.run_id).unwrap();
    assert_eq!(p.generate.queued, 4);
    assert_eq!(p.state, "running");

    let w = c.register("w1", caps(1, 1, &[])).await.unwrap();
    assert_eq!(w.session, 1);
    let g = c.lease_work(lease_req(&w, 1, 1)).await.unwrap().leases;
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].phase, Phase::Generate);
    assert_eq!(
        g[0].lease.fence,
        Fence {
            session: 1,
            attempt: 1
        }
    );
    assert!(!g[0].task_json.is_empty());
    let units = c.units(&sub.run_id).unwrap();
    let leased = units.iter().find(|u| u.unit == unit_of(&g[0])).unwrap();
    assert_eq!(leased.state, UnitState::GenerateLeased);
    assert_eq!(c.progress(&sub.run_id).unwrap().generate.leased, 1);

    let ack = c
        .complete(completion(&w, &g[0], generation(&unit_of(&g[0]), true)))
        .await
        .unwrap();
    assert!(ack.accepted && !ack.duplicate);
    let u = c.units(&sub.run_id).unwrap();
    let gen = u.iter().find(|u| u.unit == unit_of(&g[0])).unwrap();
    assert_eq!(gen.state, UnitState::EvaluateQueued);
    assert_eq!(c.progress(&sub.run_id).unwrap().model_calls, 1);

    // Evaluate goes first, and carries the committed generation.
    let e = c.lease_work(lease_req(&w, 1, 1)).await.unwrap().leases;
    let ev = e.iter().find(|l| l.phase == Phase::Evaluate).unwrap();
    assert_eq!(unit_of(ev), unit_of(&g[0]));
    assert_eq!(
        ev.generation_json.as_deref(),
        Some(generation(&unit_of(&g[0]), true).as_slice())
    );
    let ack = c
        .complete(completion(&w, ev, static_eval(&unit_of(ev), 1, 3)))
        .await
        .unwrap();
    assert!(ack.accepted);
    let u = c.units(&sub.run_id).unwrap();
    assert_eq!(
        u.iter().find(|u| u.unit == unit_of(ev)).unwrap().state,
        UnitState::Done
    );
    // The generate lease granted alongside is completed by the driver below.
    for l in e.iter().filter(|l| l.phase == Phase::Generate) {
        let ack = c
            .complete(completion(&w, l, generation(&unit_of(l), true)))
            .await
            .unwrap();
        assert!(ack.accepted);
    }
    assert!(!c.fetch_report(&sub.run_id).unwrap().complete);
    drive(&c, &w, 1, 3).await;

    let p = c.progress(&sub.run_id).unwrap();
    assert_eq!(p.state, "completed");
    assert_eq!(p.evaluate.done, 4);
    assert_eq!(p.eta_seconds, 0.0);
    let report = c.fetch_report(&sub.run_id).unwrap();
    assert!(report.complete);
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    for expected in [
        "report.json",
        "report.md",
        "report.html",
        "units.jsonl",
        "units.csv",
        "test-model__b1/processed_instances.json",
        "test-model__b1/sast_results.json",
        "test-model__b1/eval_result.json",
        "test-model__b1_eval_result.txt",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    // The upstream files are readable by upstream's readers.
    let out = tempfile::tempdir().unwrap();
    write_files(out.path(), &report.files);
    let sast = ase_common::upstream_io::read_sast_results(
        &out.path().join("test-model__b1/sast_results.json"),
    )
    .unwrap();
    assert_eq!(sast.len(), 4);
    assert_eq!(sast[&UnitId::new("a", 2)], 1);
    let processed = ase_common::upstream_io::read_processed(
        &out.path().join("test-model__b1/processed_instances.json"),
    )
    .unwrap();
    assert_eq!(processed.len(), 4);
    assert!(processed.iter().all(|g| g.success && g.time_cost == 1.5));
    // Under upstream's own key: upstream's v2 scorer reads `time` and nothing else.
    let raw: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("test-model__b1/processed_instances.json")).unwrap(),
    )
    .unwrap();
    for (unit, entry) in raw.as_object().unwrap() {
        let keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["success", "time"], "{unit}");
        assert_eq!(entry["time"], 1.5, "{unit}");
    }
    let report: serde_json::Value = serde_json::from_slice(
        &report
            .files
            .iter()
            .find(|f| f.name == "report.json")
            .unwrap()
            .content,
    )
    .unwrap();
    // All secure thanks to the evaluation baseline (3), which the dataset's 0 would not give.
    assert_eq!(report["scores"]["security"], 100.0);
    assert_eq!(report["provenance"]["config"]["model"], "test-model");
    assert!(report["units"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["status"] == "secure"));
    // Our verdict, and the generation's tokens, cost and time per unit and summed per run.
    let units = report["units"].as_array().unwrap();
    for u in units {
        assert_eq!(u["verdict"], "secure", "{u}");
        assert_eq!(u["usage"]["total_tokens"], 15, "{u}");
        assert_eq!(u["usage"]["cost_usd"], 0.25, "{u}");
        assert_eq!(u["usage"]["gen_time_s"], 1.5, "{u}");
    }
    let all = &report["breakdown"]["all"];
    assert_eq!(all["verdict_secure"], units.len());
    assert_eq!(all["total_tokens"], 15 * units.len());
    assert_eq!(all["cost_usd"], 0.25 * units.len() as f64);
}

#[tokio::test]
async fn resubmitting_resumes_and_a_different_dataset_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let ds = v1_dataset(&[("a", "o/a", "SQLI", 1)]);
    let first = c
        .submit_run(submit_req("b", 1, json!({}), ds.clone()))
        .await
        .unwrap();
    let again = c
        .submit_run(submit_req("b", 1, json!({}), ds))
        .await
        .unwrap();
    assert_eq!(again.run_id, first.run_id);
    assert!(again.resumed);
    let other = v1_dataset(&[("z", "o/z", "SQLI", 1)]);
    let err = c
        .submit_run(submit_req("b", 1, json!({}), other))
        .await
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::Conflict { .. }), "{err}");
    let bad = c
        .submit_run(SubmitRun {
            run_spec_json: br#"{"model_name": "m", "batch": "b", "rounds": 0}"#.to_vec(),
            ..submit_req("b", 1, json!({}), v1_dataset(&[("a", "o/a", "SQLI", 1)]))
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("rounds"), "{bad}");
}

#[tokio::test]
async fn restart_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5_000));
    let ds = v1_dataset(&[
        ("a", "o/a", "SQLI", 1),
        ("b", "o/b", "SQLI", 1),
        ("c", "o/c", "SQLI", 1),
    ]);
    let (run_id, w, held, generated, other_held) = {
        let c = open(dir.path(), &clock);
        let sub = c
            .submit_run(submit_req("r", 1, json!({}), ds))
            .await
            .unwrap();
        let w = c.register("w1", caps(3, 1, &[])).await.unwrap();
        let g = c.lease_work(lease_req(&w, 3, 0)).await.unwrap().leases;
        assert_eq!(g.len(), 3);
        // One generation committed, two leases in flight.
        let ack = c
            .complete(completion(&w, &g[0], generation(&unit_of(&g[0]), true)))
            .await
            .unwrap();
        assert!(ack.accepted);
        (sub.run_id, w, g[1].clone(), unit_of(&g[0]), g[2].clone())
    };
    let c = open(dir.path(), &clock);
    let units = c.units(&run_id).unwrap();
    let gen = units.iter().find(|u| u.unit == generated).unwrap();
    assert_eq!(
        gen.state,
        UnitState::EvaluateQueued,
        "a committed generation is kept"
    );
    assert!(gen.generated_by.is_some());
    // A result in flight during the restart is still accepted from its lease.
    let ack = c
        .complete(completion(&w, &held, generation(&unit_of(&held), true)))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
    // The old session is unknown to the new process: re-register.
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(hb.reregister);
    let w2 = c.register("w1", caps(3, 3, &[])).await.unwrap();
    assert_eq!(w2.session, w.session + 1, "sessions grow across restarts");
    // Its remaining old lease is void, re-queued at once, without spending an attempt.
    let u = c.units(&run_id).unwrap();
    let other = u.iter().find(|u| u.unit == unit_of(&other_held)).unwrap();
    assert_eq!(other.state, UnitState::GenerateQueued);
    assert_eq!(other.phase_failures, 0);
    assert!(!other.failures[0].counted);
    let ack = c
        .complete(completion(
            &w,
            &other_held,
            generation(&unit_of(&other_held), true),
        ))
        .await
        .unwrap();
    assert!(!ack.accepted);
    // The generated unit is evaluated, never generated again.
    let next = c.lease_work(lease_req(&w2, 3, 3)).await.unwrap().leases;
    let phases: Vec<(UnitId, Phase)> = next.iter().map(|g| (unit_of(g), g.phase)).collect();
    assert!(
        phases.contains(&(generated.clone(), Phase::Evaluate)),
        "{phases:?}"
    );
    assert!(!phases.contains(&(generated.clone(), Phase::Generate)));
    for g in &next {
        let r = match g.phase {
            Phase::Generate => generation(&unit_of(g), true),
            Phase::Evaluate => static_eval(&unit_of(g), 0, 1),
        };
        assert!(c.complete(completion(&w2, g, r)).await.unwrap().accepted);
    }
    drive(&c, &w2, 0, 1).await;
    assert_eq!(c.progress(&run_id).unwrap().state, "completed");
    let before = c.fetch_report(&run_id).unwrap();
    drop(c);
    // A completed run stays completed, with its report.
    let c = open(dir.path(), &clock);
    assert_eq!(c.progress(&run_id).unwrap().state, "completed");
    assert_eq!(c.fetch_report(&run_id).unwrap(), before);
}

#[tokio::test]
async fn open_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-db");
    std::fs::write(&file, b"x").unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let err = Coordinator::open(&file, config(), clock).err().unwrap();
    assert!(err.to_string().contains("not-a-db"), "{err}");
}

#[tokio::test]
async fn completed_run_outputs_are_written_to_the_output_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let clock = Arc::new(ManualClock::new(0));
    let c = Coordinator::open(
        &dir.path().join("db"),
        CoordinatorConfig {
            output_dir: Some(out.clone()),
            ..config()
        },
        clock,
    )
    .unwrap();
    let sub = c
        .submit_run(submit_req(
            "o",
            1,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap();
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    drive(&c, &w, 5, 1).await;
    let run_dir = out.join(&sub.run_id);
    let text = std::fs::read_to_string(run_dir.join("test-model__o_eval_result.txt")).unwrap();
    assert!(!text.is_empty());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["units"][0]["status"], "not_secure");
    assert_eq!(report["units"][0]["kind"], "vulnerable");
    // Submitted at the clock's 0.
    assert_eq!(report["provenance"]["started_at"], "1970-01-01T00:00:00Z");
    assert_eq!(report["breakdown"]["by_type"][0]["group"], "SQLI");
    assert_eq!(report["breakdown"]["by_type"][0]["not_secure"], 1);
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(
        html.contains("data-key=\"/units/0/kind\" data-value=\"vulnerable\""),
        "{html}"
    );
}

/// What the worker saw (a generation's or a scan's reason) reaches the report's reasons.
#[tokio::test]
async fn worker_reasons_reach_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let sub = c
        .submit_run(submit_req(
            "r",
            2,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap();
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    loop {
        let reply = c.lease_work(lease_req(&w, 8, 8)).await.unwrap();
        if reply.leases.is_empty() {
            break;
        }
        for g in &reply.leases {
            let unit = unit_of(g);
            let result = match (g.phase, unit.round) {
                (Phase::Generate, 1) => {
                    let mut r: ase_common::unit::GenerationRecord =
                        serde_json::from_slice(&generation(&unit, false)).unwrap();
                    r.reason = Some("no code block in the answer".into());
                    serde_json::to_vec(&r).unwrap()
                }
                (Phase::Generate, _) => generation(&unit, true),
                (Phase::Evaluate, 1) => static_eval(&unit, 4, 1),
                (Phase::Evaluate, _) => {
                    let mut e: ase_common::unit::EvaluationRecord =
                        serde_json::from_slice(&static_eval(&unit, -1, 1)).unwrap();
                    if let ase_common::unit::EvaluationRecord::Static { reason, .. } = &mut e {
                        *reason = Some("scan timed out".into());
                    }
                    serde_json::to_vec(&e).unwrap()
                }
            };
            assert!(
                c.complete(completion(&w, g, result))
                    .await
                    .unwrap()
                    .accepted
            );
        }
    }
    c.finish_pending().await;
    let report = c.fetch_report(&sub.run_id).unwrap();
    assert!(report.complete);
    let json: serde_json::Value = serde_json::from_slice(
        &report
            .files
            .iter()
            .find(|f| f.name == "report.json")
            .unwrap()
            .content,
    )
    .unwrap();
    let units = json["units"].as_array().unwrap();
    assert_eq!(
        units[0]["reason"],
        "4 findings, not below the baseline of 1: no code block in the answer"
    );
    assert_eq!(units[1]["kind"], "scan_failed");
    assert_eq!(units[1]["reason"], "scan failed (count -1): scan timed out");
}

/// The gRPC services run these futures on a multi-threaded runtime: they must be `Send`.
#[test]
fn every_operation_future_is_send() {
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let r = Registration {
        worker_id: "w".into(),
        session: 1,
        heartbeat_interval_ms: 0,
        lease_ttl_ms: 0,
    };
    send(&c.submit_run(SubmitRun::default()));
    send(&c.register("w", caps(1, 1, &[])));
    send(&c.heartbeat(Heartbeat::default()));
    send(&c.lease_work(lease_req(&r, 1, 1)));
    let lease = LeaseRef {
        lease_id: 1,
        fence: Fence {
            session: 1,
            attempt: 1,
        },
    };
    send(&c.complete(Completion {
        worker_id: "w".into(),
        lease,
        phase: Phase::Generate,
        result_json: vec![],
    }));
    send(&c.fail(Failure {
        worker_id: "w".into(),
        lease,
        kind: FailureKind::Released,
        reason: String::new(),
        infra: InfraKind::Unspecified,
        retry_after_ms: None,
    }));
    send(&c.cancel_run("x"));
    send(&c.drain_worker("w"));
    send(&c.sweep());
    fn sync_send<T: Send + Sync>(_: &T) {}
    sync_send(&c);
}

fn v2_dataset() -> Vec<u8> {
    let task = |id: &str, cwe: &str| {
        json!({
            "instance_id": id,
            "repo": "lib/foo",
            "base_commit": "abcdef0^",
            "vuln_file": "src/parse.c",
            "vuln_lines": [100, 120],
            "language": "c",
            "vuln_source": format!("CVE-{id}"),
            "cwe_id": cwe,
            "vuln_type": "Out-of-bounds Read",
            "severity": "high",
            "image": "example/ase:latest",
            "image_inner_path": "/cve/SRC",
            "image_run_cmd": "tail -f /dev/null",
            "image_status_check_cmd": "./build.sh",
            "test_case_cmd": "./test_case.sh",
            "poc_cmd": "./poc.sh",
            "patch_commit": "abcdef0"
        })
    };
    serde_json::to_vec(&json!([task("v_a", "CWE-125"), task("v_b", "CWE-79")])).unwrap()
}

#[tokio::test]
async fn a_v2_run_scores_from_the_dynamic_checks() {
    use ase_common::scoring::v2::V2Scan;
    use ase_common::unit::EvaluationRecord;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let sub = c
        .submit_run(submit_req("v2", 1, json!({}), v2_dataset()))
        .await
        .unwrap();
    let w = c.register("w", caps(2, 2, &[])).await.unwrap();
    loop {
        let leases = c.lease_work(lease_req(&w, 2, 2)).await.unwrap().leases;
        if leases.is_empty() {
            break;
        }
        for g in &leases {
            let unit = unit_of(g);
            let result = match g.phase {
                Phase::Generate => generation(&unit, true),
                Phase::Evaluate => serde_json::to_vec(&EvaluationRecord::Dynamic {
                    // v_a passes everything; v_b's PoC still finds the vulnerability.
                    checks: V2Scan {
                        completion: true,
                        image_status_check: true,
                        test_case_check: true,
                        poc_check: unit.instance_id == "v_a",
                    },
                    unit,
                    steps: vec![],
                    reason: None,
                    seconds: 1.0,
                    image_digest: None,
                })
                .unwrap(),
            };
            assert!(
                c.complete(completion(&w, g, result))
                    .await
                    .unwrap()
                    .accepted
            );
        }
    }
    c.finish_pending().await;
    let report = c.fetch_report(&sub.run_id).unwrap();
    assert!(report.complete);
    let out = tempfile::tempdir().unwrap();
    write_files(out.path(), &report.files);
    let scans = ase_common::upstream_io::read_scan_results(
        &out.path().join("test-model__v2/scan_results.json"),
    )
    .unwrap();
    assert!(scans[&UnitId::new("v_a", 1)].poc_check);
    assert!(!scans[&UnitId::new("v_b", 1)].poc_check);
    // Every key under upstream HEAD's name: its scorer reads `completion` with a default of
    // false, so an older name would count every upload as failed.
    let raw: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("test-model__v2/scan_results.json")).unwrap(),
    )
    .unwrap();
    for item in raw.as_array().unwrap() {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "completion",
                "image_status_check",
                "instance_id",
                "poc_check",
                "test_case_check"
            ]
        );
        assert_eq!(item["completion"], true, "{item}");
    }
    let score: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("test-model__v2_score.json")).unwrap(),
    )
    .unwrap();
    assert!(score["overall"].is_object(), "{score}");
    let mut metric_keys: Vec<&str> = score["overall"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    metric_keys.sort_unstable();
    assert_eq!(
        metric_keys,
        [
            "average_gen_code_time",
            "code_copy_success_count",
            "code_quality_score",
            "code_security_score",
            "code_stability_score",
            "gen_code_time_sum",
            "overall_score",
            "overall_score_corrected",
            "poc_pass_count",
            "run_success_count",
            "test_case_pass_count",
        ]
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["scores"]["version"], "v2");
    assert_eq!(report["units"][0]["status"], "secure");
    assert_eq!(report["units"][1]["status"], "not_secure");
}

#[test]
fn the_spec_header_is_read_leniently() {
    let h = ase_coordinator::state::parse_spec_header(
        br#"{"model_name": "m", "batch": "b", "rounds": 3, "limits": {"requests_per_minute": 5},
             "prompt": {"anything": [1, 2]}}"#,
    )
    .unwrap();
    assert_eq!(h.rounds, 3);
    assert_eq!(h.limits.requests_per_minute, 5);
    assert_eq!(h.limits.max_attempts, 3, "defaults fill what is missing");
    for bad in [
        &b"[]"[..],
        b"{\"model_name\": \"m\", \"batch\": \"\"}",
        b"{\"rounds\": \"x\"}",
    ] {
        assert!(ase_coordinator::state::parse_spec_header(bad).is_err());
    }
}

#[tokio::test]
async fn concurrent_transitions_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let before = c.store().flush_count();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.register(&format!("w{i}"), caps(1, 1, &[])).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let flushes = c.store().flush_count() - before;
    // Callers that arrive while a flush runs share the next one. How many arrive in time depends
    // on the scheduler, so the bound is loose: far fewer flushes than transitions.
    assert!(
        flushes <= 10,
        "20 durable registrations took {flushes} flushes"
    );
    assert_eq!(c.list_workers().len(), 20);
    assert!(c.list_workers().iter().all(|w| w.alive));
    // Workers that stop heartbeating are reported dead after the TTL.
    clock.advance_ms(u64::from(TTL_MS) + 1);
    assert!(c.list_workers().iter().all(|w| !w.alive));
}

/// A run whose files cannot be written (here: the output folder is blocked by a file) does not
/// fail the last unit's report; it stays unfinished, and a sweep after its retry time finishes
/// it once the disk is usable again. Its files are then all there, and survive a restart.
#[tokio::test]
async fn a_run_whose_files_cannot_be_written_is_finished_by_a_later_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    // `open` puts the store at `<dir>/db`.
    let db = dir.path().join("db");
    let c = open(dir.path(), &clock);
    let sub = c
        .submit_run(submit_req(
            "blocked",
            2,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap();
    let blocker = db.join("run-outputs");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    drive(&c, &w, 0, 1).await;
    let p = c.progress(&sub.run_id).unwrap();
    assert_eq!(p.evaluate.done, 2);
    assert_eq!(
        p.state, "scoring",
        "completed without its files, or not shown as scoring"
    );
    assert!(!c.fetch_report(&sub.run_id).unwrap().complete);

    std::fs::remove_file(&blocker).unwrap();
    clock.advance_ms(FINISH_RETRY_MS);
    c.sweep().await.unwrap();
    c.finish_pending().await;
    assert_eq!(c.progress(&sub.run_id).unwrap().state, "completed");
    let report = c.fetch_report(&sub.run_id).unwrap();
    assert!(report.complete);
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"report.json"), "{names:?}");
    assert!(
        names.contains(&"test-model__blocked/sast_results.json"),
        "{names:?}"
    );
    assert!(
        !db.join("run-outputs").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "an unfinished attempt was left behind"
    );
    drop(c);
    let c = open(dir.path(), &clock);
    assert_eq!(c.fetch_report(&sub.run_id).unwrap(), report);
}

/// The report of a run's last unit only queues the run to the finisher: it is answered while
/// the finish is still in progress, and the run shows as `scoring` until the finish is done.
/// The finish is held here at its copy into the output dir, whose first file is a FIFO that
/// nobody reads yet (a finish inside the report would hold the report there too, until the
/// watchdog below reads the FIFO, and the run would then be completed already).
#[tokio::test]
async fn the_last_units_report_does_not_wait_for_the_finish() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run_dir = out.join("test-model__held");
    std::fs::create_dir_all(&run_dir).unwrap();
    // The first of the run's files in name order, the first copied.
    let fifo = run_dir.join("report.html");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let _ = released.recv_timeout(std::time::Duration::from_secs(10));
            std::fs::read(&fifo).unwrap()
        })
    };
    let clock = Arc::new(ManualClock::new(0));
    let c = Coordinator::open(
        &dir.path().join("db"),
        CoordinatorConfig {
            output_dir: Some(out.clone()),
            ..config()
        },
        clock,
    )
    .unwrap();
    let sub = c
        .submit_run(submit_req(
            "held",
            1,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap();
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    for phase in [Phase::Generate, Phase::Evaluate] {
        let g = c.lease_work(lease_req(&w, 1, 1)).await.unwrap().leases;
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].phase, phase);
        let result = match phase {
            Phase::Generate => generation(&unit_of(&g[0]), true),
            Phase::Evaluate => static_eval(&unit_of(&g[0]), 0, 1),
        };
        assert!(
            c.complete(completion(&w, &g[0], result))
                .await
                .unwrap()
                .accepted
        );
    }
    let p = c.progress(&sub.run_id).unwrap();
    assert_eq!(p.evaluate.done, 1);
    assert_eq!(p.state, "scoring", "the report waited for the finish");

    release.send(()).unwrap();
    c.finish_pending().await;
    let copied = reader.join().unwrap();
    assert_eq!(c.progress(&sub.run_id).unwrap().state, "completed");
    let report = c.fetch_report(&sub.run_id).unwrap();
    assert!(report.complete);
    let html = report
        .files
        .iter()
        .find(|f| f.name == "report.html")
        .unwrap();
    assert_eq!(copied, html.content);
    assert!(run_dir.join("report.json").is_file());
}

/// A run whose files cannot be written is not tried again at every sweep: the first retry
/// waits `FINISH_RETRY_MS`, the next twice that. The failures are counted for the metrics, and
/// the run is still finished once the disk is usable, also by a coordinator opened again.
#[tokio::test]
async fn a_failing_finish_is_retried_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let db = dir.path().join("db");
    let c = open(dir.path(), &clock);
    let sub = c
        .submit_run(submit_req(
            "retry",
            1,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap();
    let blocker = db.join("run-outputs");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    drive(&c, &w, 0, 1).await;
    assert_eq!(c.finish_failures(), 1);
    // Sweeps, heartbeats and lease requests before the retry time start no attempt.
    for _ in 0..5 {
        clock.advance_ms(FINISH_RETRY_MS / 5 - 1);
        c.sweep().await.unwrap();
        c.heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            ..Heartbeat::default()
        })
        .await
        .unwrap();
        assert!(c
            .lease_work(lease_req(&w, 1, 1))
            .await
            .unwrap()
            .leases
            .is_empty());
        c.finish_pending().await;
    }
    assert_eq!(c.finish_failures(), 1);
    assert_eq!(c.progress(&sub.run_id).unwrap().state, "scoring");
    clock.advance_ms(5);
    c.sweep().await.unwrap();
    c.finish_pending().await;
    assert_eq!(c.finish_failures(), 2);
    // The second failure waits twice as long.
    clock.advance_ms(FINISH_RETRY_MS);
    c.sweep().await.unwrap();
    c.finish_pending().await;
    assert_eq!(c.finish_failures(), 2);
    clock.advance_ms(FINISH_RETRY_MS);
    c.sweep().await.unwrap();
    c.finish_pending().await;
    assert_eq!(c.finish_failures(), 3);
    assert_eq!(c.progress(&sub.run_id).unwrap().state, "scoring");

    // A restart does not wait for the retry time: it tries at once.
    drop(c);
    std::fs::remove_file(&blocker).unwrap();
    let c = open(dir.path(), &clock);
    c.finish_pending().await;
    assert_eq!(c.progress(&sub.run_id).unwrap().state, "completed");
    assert!(c.fetch_report(&sub.run_id).unwrap().complete);
    assert_eq!(c.finish_failures(), 0);
}

/// After a restart, a worker known only from the store says it has not been heard from,
/// rather than a heartbeat "55 years ago".
#[tokio::test]
async fn a_worker_not_heard_from_since_a_restart_has_no_heartbeat_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5_000_000));
    let c = open(dir.path(), &clock);
    c.register("w1", caps(1, 1, &[])).await.unwrap();
    clock.advance_ms(1_000);
    let before = c.list_workers();
    assert_eq!(before[0].last_heartbeat_ms_ago, 1_000);
    drop(c);
    let c = open(dir.path(), &clock);
    let after = c.list_workers();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].last_heartbeat_ms_ago, NO_HEARTBEAT);
    assert!(!after[0].alive);
}

/// Files too large for one reply are refused before they are read, with where they are.
#[tokio::test]
async fn a_report_too_large_for_one_reply_says_where_its_files_are() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let sub = c
        .submit_run(submit_req(
            "big",
            1,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap();
    let w = c.register("w", caps(1, 1, &[])).await.unwrap();
    drive(&c, &w, 0, 1).await;
    let whole = c.fetch_report(&sub.run_id).unwrap();
    let bytes: usize = whole.files.iter().map(|f| f.content.len()).sum();
    match c.fetch_report_within(&sub.run_id, bytes as u64 - 1) {
        Err(CoordinatorError::ReportTooLarge { bytes: b, path, .. }) => {
            assert_eq!(b, bytes as u64);
            assert!(path.join("report.json").is_file(), "{}", path.display());
        }
        other => panic!("expected ReportTooLarge, got {other:?}"),
    }
    assert_eq!(
        c.fetch_report_within(&sub.run_id, bytes as u64).unwrap(),
        whole
    );
}
