//! Submitting a run: what is stored per task (seeds, contexts, order) and what is refused.

mod support;

use ase_common::dataset::TaskContext;
use ase_coordinator::store::TaskInputs;
use ase_coordinator::*;
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;

/// An SQLI task with one finding on the original code.
fn sqli_task(id: &str, repo: &str, source: &str, seed: bool) -> Value {
    v1_task(id, repo, "SQLI", 1, source, seed)
}

fn context(id: &str) -> Value {
    json!({
        "instance_id": id,
        "hits": [{"docid": format!("src/{id}.php"), "score": 1.0}],
        "function_summary": format!("summary of {id}")
    })
}

/// The stored inputs of every task of `run_id`, in task index order.
fn stored_tasks(c: &Coordinator, run_id: &str) -> Vec<TaskInputs> {
    let seq = c
        .store()
        .run_seq_by_name(run_id)
        .unwrap()
        .expect("the run is stored");
    let mut tasks = Vec::new();
    c.store()
        .for_each_task(seq, |t| {
            tasks.push(t);
            Ok(())
        })
        .unwrap();
    tasks
}

fn context_id(t: &TaskInputs) -> String {
    let ctx: TaskContext = serde_json::from_slice(&t.context_json).unwrap();
    ctx.instance_id
}

#[tokio::test]
async fn a_mutated_task_gets_the_last_seed_of_its_source_even_when_it_comes_later() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let dataset = serde_json::to_vec(&json!([
        sqli_task("m", "o/mutant", "CVE-1", false),
        sqli_task("s0", "o/first-seed", "CVE-1", true),
        sqli_task("x", "o/x", "CVE-2", true),
        sqli_task("s1", "o/seed", "CVE-1", true),
    ]))
    .unwrap();
    // A context of the mutated task's own id is not what it is generated with.
    let contexts = serde_json::to_vec(&json!([
        context("m"),
        context("s0"),
        context("x"),
        context("s1")
    ]))
    .unwrap();
    let submitted = c
        .submit_run(SubmitRun {
            context: contexts,
            context_name: "contexts.json".into(),
            ..submit_req("seeds", 1, json!({}), dataset)
        })
        .await
        .unwrap();
    assert_eq!(submitted.total_units, 4);

    let tasks = stored_tasks(&c, &submitted.run_id);
    let ids: Vec<&str> = tasks.iter().map(|t| t.instance_id.as_str()).collect();
    assert_eq!(ids, ["m", "s0", "x", "s1"]);
    let m = &tasks[0];
    assert_eq!(m.repo, "o/mutant");
    assert_eq!(m.seed_repo, "o/seed");
    assert_eq!(context_id(m), "s1");
    for t in &tasks[1..] {
        assert_eq!(t.seed_repo, t.repo, "{}", t.instance_id);
        assert_eq!(context_id(t), t.instance_id);
    }

    // And so the worker gets it with its lease.
    let w = c.register("w", caps(8, 0, &[])).await.unwrap();
    let grants = c.lease_work(lease_req(&w, 8, 0)).await.unwrap().leases;
    assert_eq!(grants.len(), 4);
    let g = grants.iter().find(|g| g.instance_id == "m").unwrap();
    assert_eq!(g.seed_repo, "o/seed");
    let ctx: TaskContext = serde_json::from_slice(&g.context_json).unwrap();
    assert_eq!(ctx.instance_id, "s1");
    let task: Value = serde_json::from_slice(&g.task_json).unwrap();
    assert_eq!(task["instance_id"], "m");
}

#[tokio::test]
async fn a_dataset_larger_than_a_write_batch_is_stored_in_file_order_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let names: Vec<(String, String)> = (0..2_345)
        .map(|i| (format!("t{i:05}"), format!("o/r{}", i % 7)))
        .collect();
    let rows: Vec<(&str, &str, &str, i64)> = names
        .iter()
        .map(|(id, repo)| (id.as_str(), repo.as_str(), "SQLI", 1))
        .collect();
    let run_id = {
        let c = open(dir.path(), &clock);
        let submitted = c
            .submit_run(submit_req("big", 2, json!({}), v1_dataset(&rows)))
            .await
            .unwrap();
        assert_eq!(submitted.total_units, 2 * 2_345);
        let tasks = stored_tasks(&c, &submitted.run_id);
        assert_eq!(tasks.len(), 2_345);
        for (t, (id, repo)) in tasks.iter().zip(&names) {
            assert_eq!((&t.instance_id, &t.repo), (id, repo));
            assert!(t.context_json.is_empty());
        }
        submitted.run_id
    };
    // Reopening checks there is one task record per task of the run.
    let c = open(dir.path(), &clock);
    assert_eq!(c.progress(&run_id).unwrap().total_units, 2 * 2_345);
}

#[tokio::test]
async fn a_refused_dataset_names_its_file_and_task_and_creates_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let submit = |dataset: Value| {
        c.submit_run(submit_req(
            "bad",
            1,
            json!({}),
            serde_json::to_vec(&dataset).unwrap(),
        ))
    };

    let orphan = json!([sqli_task("m", "o/m", "CVE-none", false)]);
    let err = submit(orphan).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::Dataset { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("tasks.json: task m: field vuln_source"),
        "{msg}"
    );

    let err = submit(json!([])).await.unwrap_err();
    assert!(err.to_string().contains("has no task"), "{err}");

    let mut v2 = sqli_task("v", "o/v", "CVE-9", true);
    let obj = v2.as_object_mut().unwrap();
    for f in ["seed", "detected_tool", "detected_vul_num"] {
        obj.remove(f);
    }
    for (k, val) in [
        ("severity", "high"),
        ("image", "img:1"),
        ("image_inner_path", "/src"),
        ("image_run_cmd", ""),
        ("image_status_check_cmd", "./c.sh"),
        ("test_case_cmd", "./t.sh"),
        ("poc_cmd", "./p.sh"),
    ] {
        obj.insert(k.into(), json!(val));
    }
    let err = submit(json!([sqli_task("a", "o/a", "CVE-1", true), v2]))
        .await
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::Outputs(_)), "{err}");

    let err = c
        .submit_run(SubmitRun {
            context: br#"[{"instance_id": "a"}]"#.to_vec(),
            context_name: "ctx.json".into(),
            ..submit_req(
                "bad",
                1,
                json!({}),
                serde_json::to_vec(&json!([sqli_task("a", "o/a", "CVE-1", true)])).unwrap(),
            )
        })
        .await
        .unwrap_err();
    let msg = err.to_string();
    // The context file is named as what it is, not as the dataset.
    assert!(msg.starts_with("context file ctx.json: "), "{msg}");
    assert!(msg.contains("ctx.json: task a: field hits"), "{msg}");

    assert!(c.list_runs().is_empty());
}

/// A batch name that can never become a file name is refused at submit, naming the field and
/// the limit without echoing the name; nothing is stored.
#[tokio::test]
async fn a_run_name_that_cannot_be_a_file_is_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = open(dir.path(), &clock);
    let dataset = serde_json::to_vec(&json!([sqli_task("a", "o/a", "CVE-1", true)])).unwrap();
    let long = "b".repeat(5_000);
    for (batch, says) in [
        (long.as_str(), "is 5000 bytes long; the limit is 64"),
        ("x/y", "`/`"),
        ("ok\u{202e}gpj.exe", "U+202E"),
    ] {
        let err = c
            .submit_run(submit_req(batch, 1, json!({}), dataset.clone()))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`batch`") && msg.contains(says), "{msg}");
        assert!(!msg.contains("bbbbbbbbbb"), "the name is not echoed: {msg}");
    }
    assert!(c.list_runs().is_empty());
    assert!(c.store().runs().unwrap().is_empty());
}
