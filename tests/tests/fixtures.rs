//! The harness's own fixtures against the worker's pipeline in one process: the model server
//! recognises each task's prompt, its answer applies to the masked file, and the fixed module
//! scans with one finding fewer than the original project. If these broke, the cluster tests
//! would fail for reasons that have nothing to do with the cluster.

use ase_cluster_tests::support::{osemgrep_or_skip, rules_dir};
use ase_cluster_tests::{write_run_files, FakeModel, ModelBehaviour, Project};
use ase_common::unit::EvaluationRecord;
use ase_worker::pipeline::{
    evaluate_static, generate, rules_digest, EvaluateInput, GenerateInput, RunSpec, Scanner,
    ScannerIdentity, WorkerContext,
};
use ase_worker::repo_cache::{RepoCache, RepoCacheConfig};
use ase_worker::sast::{BareScanner, ScanSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_is_answered_with_a_fix_that_applies_and_scans_cleaner() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let project = Project::create(tmp.path(), 3);
    let model = FakeModel::start(
        "127.0.0.1:0".parse().unwrap(),
        &project.tasks,
        ModelBehaviour::default(),
    );
    let files = write_run_files(&tmp.path().join("run"), &project, &model.base_url(), 2);
    let spec: RunSpec =
        serde_json::from_slice(&std::fs::read(&files.spec).unwrap()).expect("spec parses");

    let mut cfg = RepoCacheConfig::new(tmp.path().join("cache/repos"));
    cfg.url_template = project.url_template();
    let cache = RepoCache::open(cfg).unwrap();
    let rules = rules_dir().join("sqli/php.yaml");
    let scanner = BareScanner::new(osemgrep, rules.clone(), ScanSettings::default());
    let ctx = WorkerContext::new(
        cache,
        Scanner::Bare {
            scanner,
            identity: ScannerIdentity {
                rules_digest: rules_digest(&rules).unwrap(),
                version: "test".into(),
            },
        },
        tmp.path().join("cache"),
        "w".into(),
    );

    for t in &project.tasks {
        let task = project.task(t);
        let g = generate(
            &ctx,
            GenerateInput {
                run_id: files.run_id.clone(),
                task: task.clone(),
                context: None,
                seed_repo: None,
                round: 1,
                spec: &spec,
                api_key: None,
            },
        )
        .await
        .unwrap();
        assert!(
            g.success,
            "{}: {:?}; unrecognised prompts: {:?}",
            t.instance_id,
            g.reason,
            model.unrecognised()
        );
        assert_eq!(g.changed_files.len(), 1, "{g:?}");
        let e = evaluate_static(
            &ctx,
            EvaluateInput {
                run_id: &files.run_id,
                task: &task,
                seed_repo: None,
                generation: &g,
                spec: &spec,
            },
        )
        .await
        .unwrap();
        match e {
            EvaluationRecord::Static {
                detected_vul_num,
                baseline,
                reason,
                ..
            } => {
                assert!(reason.is_none(), "{reason:?}");
                assert_eq!(baseline, 3, "{}: one injection per module", t.instance_id);
                assert_eq!(
                    detected_vul_num, 2,
                    "{}: the fix removes one",
                    t.instance_id
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let calls = model.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.values().all(|&n| n == 1), "{calls:?}");
    assert!(model.unrecognised().is_empty());
}
