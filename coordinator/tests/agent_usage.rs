//! Agent mode: the usage a worker reports with its heartbeats for a generate lease's coding
//! agent is kept per attempt, across a coordinator restart; an attempt whose worker was lost
//! is counted in the report as an abandoned attempt, apart from the committed one, whose
//! figures and transcript come from its generation record.

mod support;

use ase_common::agent_record::{AgentRecord, AttemptUsage};
use ase_common::scoring::UnitId;
use ase_common::unit::{GenerationRecord, TokenUsage};
use ase_coordinator::*;
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;

fn usage(calls: u32, tokens: u64) -> AttemptUsage {
    AttemptUsage {
        turns: calls,
        model_calls: calls,
        usage: TokenUsage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            total_tokens: tokens,
        },
        cost_usd: Some(0.01 * f64::from(calls)),
    }
}

async fn beat(c: &Coordinator, w: &Registration, g: &LeaseGrant, u: AttemptUsage) {
    let hb = c
        .heartbeat(Heartbeat {
            worker_id: w.worker_id.clone(),
            session: w.session,
            active: vec![g.lease],
            agent_usage: vec![LeaseUsage {
                lease: g.lease,
                usage: u,
            }],
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    assert!(hb.revoked.is_empty(), "{hb:?}");
}

fn agent_generation(unit: &UnitId) -> Vec<u8> {
    let mut g: GenerationRecord = serde_json::from_slice(&generation(unit, true)).unwrap();
    g.agent = Some(Box::new(AgentRecord {
        turns: 4,
        model_calls: 4,
        refused_calls: 0,
        usage: g.usage,
        cost_usd: g.cost_usd,
        wall_seconds: 7.5,
        exit_code: Some(0),
        output_tail: "submitted".into(),
        transcript: "=== call 1 POST /v1/chat/completions\n{}\n".into(),
        transcript_truncated: false,
        ..AgentRecord::default()
    }));
    serde_json::to_vec(&g).unwrap()
}

#[tokio::test]
async fn an_abandoned_attempts_calls_are_kept_across_a_restart_and_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let run = c
        .submit_run(submit_req(
            "agent",
            1,
            json!({}),
            v1_dataset(&[("a", "o/a", "SQLI", 1)]),
        ))
        .await
        .unwrap()
        .run_id;
    let w1 = c.register("w1", caps(1, 1, &[])).await.unwrap();
    let g1 = c
        .lease_work(lease_req(&w1, 1, 0))
        .await
        .unwrap()
        .leases
        .remove(0);
    beat(&c, &w1, &g1, usage(2, 200)).await;
    beat(&c, &w1, &g1, usage(3, 300)).await;
    // A report for a lease this worker does not hold changes nothing.
    let mut stale = g1.lease;
    stale.fence.attempt += 7;
    c.heartbeat(Heartbeat {
        worker_id: w1.worker_id.clone(),
        session: w1.session,
        agent_usage: vec![LeaseUsage {
            lease: stale,
            usage: usage(50, 1),
        }],
        ..Heartbeat::default()
    })
    .await
    .unwrap();
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.agent_attempts.len(), 1, "{u:?}");
    assert_eq!(u.agent_attempts[0].attempt, g1.lease.fence.attempt);
    assert_eq!(u.agent_attempts[0].usage, usage(3, 300));

    // The coordinator restarts (its worker died with it); the lease lapses.
    drop(c);
    let c = open(dir.path(), &clock);
    clock.advance_ms(u64::from(TTL_MS) * 3);
    c.sweep().await.unwrap();
    let w2 = c.register("w2", caps(1, 1, &[])).await.unwrap();
    let g2 = c
        .lease_work(lease_req(&w2, 1, 0))
        .await
        .unwrap()
        .leases
        .remove(0);
    assert_ne!(g2.lease.fence.attempt, g1.lease.fence.attempt);
    beat(&c, &w2, &g2, usage(1, 100)).await;
    let ack = c
        .complete(completion(&w2, &g2, agent_generation(&unit_of(&g2))))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
    // The committed attempt is not abandoned: only the first one stays.
    let u = &c.units(&run).unwrap()[0];
    assert_eq!(u.agent_attempts.len(), 1, "{u:?}");
    assert_eq!(u.agent_attempts[0].usage.model_calls, 3);
    let e = c
        .lease_work(lease_req(&w2, 0, 1))
        .await
        .unwrap()
        .leases
        .remove(0);
    let ack = c
        .complete(completion(&w2, &e, static_eval(&unit_of(&e), 0, 1)))
        .await
        .unwrap();
    assert!(ack.accepted, "{ack:?}");
    c.finish_pending().await;

    let files = c.fetch_report(&run).unwrap().files;
    let file = |name: &str| {
        let f = files.iter().find(|f| f.name == name);
        String::from_utf8(f.unwrap_or_else(|| panic!("no {name}")).content.clone()).unwrap()
    };
    let report: Value = serde_json::from_str(&file("report.json")).unwrap();
    let t = &report["agent"]["totals"];
    assert_eq!(t["units"], 1, "{t}");
    assert_eq!(t["turns"], 4);
    assert_eq!(t["model_calls"], 4);
    assert_eq!(t["abandoned_attempts"], 1);
    assert_eq!(t["abandoned_calls"], 3);
    assert_eq!(t["abandoned_tokens"], 300);
    assert_eq!(t["all_calls"], 7);
    assert_eq!(t["all_tokens"], 315);
    let row = &report["agent"]["units"][0];
    assert_eq!(row["unit"]["instance_id"], "a");
    assert_eq!(row["wall_seconds"], 7.5);
    assert_eq!(row["abandoned_calls"], 3);
    assert_eq!(row["transcript"], "transcripts/a_1.txt");
    assert_eq!(
        file("transcripts/a_1.txt"),
        "=== call 1 POST /v1/chat/completions\n{}\n"
    );
    assert!(file("report.md").contains("## Agent"));
    assert!(file("report.html").contains("href=\"transcripts/a_1.txt\""));
    let csv = file("units.csv");
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(
        ",agent_turns,agent_model_calls,agent_wall_s,agent_transcript,agent_abandoned_calls"
    ));
    assert!(
        lines
            .next()
            .unwrap()
            .ends_with(",4,4,7.5,transcripts/a_1.txt,3"),
        "{csv}"
    );
}
