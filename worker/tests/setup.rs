//! Process assembly of a worker (`ase_worker::setup::build`) from its settings: a real repo
//! cache on disk, the repository's rules, and the real Docker daemon where one is asked for.

use ase_test_support as support;

use ase_worker::pipeline::{rules_digest, Scanner};
use ase_worker::setup::{build, DockerUse, ScannerKind, SetupError, UnknownScanner, WorkerSetup};
use std::path::Path;
use support::{docker_with, rules_dir, v2_image};

fn settings(cache: &Path, scanner: ScannerKind, docker: DockerUse) -> WorkerSetup {
    WorkerSetup {
        name: "w-setup".into(),
        cache: cache.to_path_buf(),
        cache_max_bytes: Some(1 << 30),
        repo_url_template: Some("/nowhere/{repo}".into()),
        scanner,
        osemgrep: "/nonexistent/osemgrep".into(),
        rules: rules_dir(),
        sast_image: None,
        docker,
        image_cache_bytes: None,
        scan: Default::default(),
        privileged: true,
    }
}

#[tokio::test]
async fn a_bare_worker_without_docker_opens_its_cache_and_keys_baselines_by_the_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let parts = build(&settings(tmp.path(), ScannerKind::Bare, DockerUse::Off))
        .await
        .unwrap();
    assert!(parts.dynamic.is_none(), "Docker off: no v2 evaluator");
    assert_eq!(parts.ctx.worker_id, "w-setup");
    assert_eq!(parts.ctx.repo_cache.root(), tmp.path().join("repos"));
    assert!(matches!(parts.ctx.scanner, Scanner::Bare { .. }));
    let identity = parts.ctx.scanner.identity();
    assert_eq!(identity.rules_digest, rules_digest(&rules_dir()).unwrap());
    assert_eq!(identity.version, "unknown", "no osemgrep to ask");

    // One process owns a cache: a second worker on it is refused while the first lives.
    let again = build(&settings(tmp.path(), ScannerKind::Bare, DockerUse::Off)).await;
    assert!(matches!(again, Err(SetupError::RepoCache(_))));
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let err = build(&settings(
        tmp.path(),
        ScannerKind::Container,
        DockerUse::Off,
    ))
    .await
    .err()
    .expect("a container scanner without Docker");
    assert!(matches!(err, SetupError::ContainerScannerWithoutDocker));

    let mut missing_rules = settings(&tmp.path().join("b"), ScannerKind::Bare, DockerUse::Off);
    missing_rules.rules = tmp.path().join("no-rules");
    match build(&missing_rules).await {
        Err(SetupError::Rules { path, .. }) => assert_eq!(path, tmp.path().join("no-rules")),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("rules that do not exist were accepted"),
    }
}

#[tokio::test]
async fn a_worker_with_docker_gets_the_v2_evaluator_and_the_container_scanner() {
    if docker_with(&v2_image()).await.is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let parts = build(&settings(
        &tmp.path().join("a"),
        ScannerKind::Bare,
        DockerUse::On,
    ))
    .await
    .unwrap();
    assert!(parts.dynamic.is_some());
    // Every worker with Docker pulls the task images it lacks, for the configured platform.
    let puller = parts
        .dynamic
        .as_ref()
        .unwrap()
        .puller()
        .expect("an image puller");
    assert_eq!(
        puller.settings().platform,
        ase_worker::images::platform_from(std::env::var(ase_worker::images::PLATFORM_ENV).ok())
    );

    let mut container = settings(&tmp.path().join("b"), ScannerKind::Container, DockerUse::On);
    let err = build(&container)
        .await
        .err()
        .expect("a container scanner without an image");
    assert!(matches!(err, SetupError::ContainerScannerWithoutImage));
    container.sast_image = Some("ase-sast:content-tag".into());
    let parts = build(&container).await.unwrap();
    assert!(matches!(parts.ctx.scanner, Scanner::Container { .. }));
    assert_eq!(
        parts.ctx.scanner.identity().rules_digest,
        "ase-sast:content-tag"
    );
}

#[test]
fn scanner_names_round_trip_as_config_and_flags_spell_them() {
    for k in ScannerKind::ALL {
        assert_eq!(k.name().parse::<ScannerKind>(), Ok(k));
        assert_eq!(
            serde_json::to_value(k).unwrap(),
            serde_json::Value::String(k.name().into())
        );
    }
    assert_eq!(
        "semgrep".parse::<ScannerKind>(),
        Err(UnknownScanner("semgrep".into()))
    );
}
