//! `ase compare --coordinator URL RUN_ID...` across real processes: a coordinator and a worker
//! (mutual TLS, sled, bare osemgrep) run the demo's v1 dataset with its three models (the
//! original code, the reference fix, the pretend model's answers), 3 rounds; the comparison of
//! the runs named by id, their report.json fetched through `FetchReport`, is the comparison of
//! the folders `ase report` writes for them, and says what the demo's comparison must say.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN) and osemgrep (skipped outside CI without it).

use ase_cluster_tests::demo_run::{assert_demo_v1_comparison, write_demo_run};
use ase_cluster_tests::{
    ase_bin, fetch_report, start_coordinator_under, start_worker, submit, support, WorkerOptions,
};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const ROUNDS: u32 = 3;
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// In the order of the demo's comparison: original, reference, pretend.
const PROVIDERS: [&str; 3] = ["original", "reference", "predictions"];

fn compare(args: &[String]) -> Output {
    Command::new(ase_bin())
        .arg("compare")
        .args(args)
        .output()
        .expect("run ase compare")
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The comparison without each run's `path` (a folder, or `RUN_ID at URL`), which says where
/// the report came from; the paths are returned apart.
fn without_paths(mut c: Value) -> (Value, Vec<String>) {
    let paths = c["runs"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .map(|r| r.as_object_mut().unwrap().remove("path").unwrap())
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    (c, paths)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

#[test]
fn compare_by_run_id_on_a_coordinator_equals_compare_of_the_fetched_folders() {
    let Some(osemgrep) = support::osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let world = ase_demo::materialise(&tmp.path().join("demo")).unwrap();
    let (_coordinator, access) = start_coordinator_under(tmp.path(), &["w1"]);
    let _worker = start_worker(
        &access,
        &tmp.path().join("cache-w1"),
        &WorkerOptions {
            name: "w1".into(),
            generate_slots: 4,
            eval_slots: 2,
            osemgrep,
            repo_url_template: world.repo_url_template.clone(),
        },
        tmp.path().join("logs/worker-w1.log"),
    );
    let mut runs: Vec<_> = PROVIDERS
        .iter()
        .map(|provider| {
            let files = write_demo_run(
                &tmp.path().join(format!("run-{provider}")),
                "v1",
                provider,
                ROUNDS,
                &world.v1_tasks,
                &world.v1_context,
                &world.predictions_v1,
            );
            let log = tmp.path().join(format!("logs/submit-{provider}.log"));
            let proc = submit(&access, &files, true, log);
            (files, proc)
        })
        .collect();
    for (files, proc) in &mut runs {
        let status = proc
            .wait_exit(RUN_TIMEOUT)
            .unwrap_or_else(|| panic!("{} not completed; log:\n{}", files.run_id, proc.log_text()));
        assert!(status.success(), "{}: {}", files.run_id, proc.log_text());
    }
    let ids: Vec<String> = runs.iter().map(|(f, _)| f.run_id.clone()).collect();
    let folders: Vec<String> = ids
        .iter()
        .map(|id| {
            let out = tmp.path().join(format!("report-{id}"));
            fetch_report(&access, id, &out);
            out.display().to_string()
        })
        .collect();

    let mut local_args = folders.clone();
    local_args.push("--json".into());
    let (local, local_paths) = without_paths(json_of(&compare(&local_args)));
    assert_eq!(local_paths, folders);
    assert_demo_v1_comparison(&local);

    let out = tmp.path().join("cmp");
    let mut remote_args: Vec<String> = vec![
        "--coordinator".into(),
        access.url.clone(),
        "--tls-dir".into(),
        access.tls_dir.display().to_string(),
    ];
    remote_args.extend(ids.iter().cloned());
    remote_args.extend(["--json".into(), "--out".into(), out.display().to_string()]);
    let printed = json_of(&compare(&remote_args));
    // The files written with --out say the same as the JSON printed.
    assert_eq!(read_json(&out.join("compare.json")), printed);
    let (remote, remote_paths) = without_paths(printed);
    assert_eq!(remote, local, "by run id and by folder differ");
    assert_eq!(
        remote_paths,
        ids.iter()
            .map(|id| format!("{id} at {}", access.url))
            .collect::<Vec<_>>()
    );
    let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(html.contains("demo-reference__v1"), "{html}");
    // The runs' leaderboard from the fetched reports: one table, a row per run.
    let board = read_json(&out.join("leaderboard.json"));
    assert_eq!(board["tables"].as_array().unwrap().len(), 1, "{board}");
    assert_eq!(board["tables"][0]["rows"].as_array().unwrap().len(), 3);

    // A run the coordinator does not know is an error naming it.
    let mut unknown = remote_args[..4].to_vec();
    unknown.extend([ids[0].clone(), "no-such-run__v1".into()]);
    let o = compare(&unknown);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-run__v1"), "{err}");
    // Without the TLS material (or --plaintext) it says what is missing.
    let o = compare(&[
        "--coordinator".into(),
        access.url.clone(),
        ids[0].clone(),
        ids[1].clone(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--coordinator needs --tls-dir"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
