//! The worker as `ase worker` assembles it (`setup::build`) finds its registry credentials
//! where `DOCKER_CONFIG` points, as the docker CLI does, and pulls a v2 unit's image from a
//! real registry on loopback. Alone in its binary: it sets this process's environment.

mod dynamic_fixtures;
use ase_test_support as support;

use ase_common::unit::EvaluationRecord;
use ase_test_support::registry::*;
use ase_worker::images::credentials::{PASSWORD_ENV, SERVER_ENV, USERNAME_ENV};
use ase_worker::images::{CACHE_BYTES_ENV, PLATFORM_ENV};
use ase_worker::setup::{build, DockerUse, ScannerKind, WorkerSetup};
use dynamic_fixtures::*;
use support::*;

#[tokio::test]
async fn a_worker_pulls_with_the_credentials_docker_config_names() {
    if let Some(why) = missing_tools() {
        unavailable_unless(
            &why,
            "apt-get install docker-registry apache2-utils (.ci/run does)",
        );
        return;
    }
    let Some(docker) = docker_with(&v2_image()).await else {
        return;
    };
    let registry = TestRegistry::start();
    let image = registry.reference("pathtrav", &format!("env-{}", std::process::id()));
    let _cleanup = ImageCleanup(vec![image.clone()]);
    let pushed =
        build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;

    let config = registry.docker_config(PASSWORD);
    std::env::set_var("DOCKER_CONFIG", config.path());
    for var in [USERNAME_ENV, PASSWORD_ENV, SERVER_ENV, PLATFORM_ENV] {
        std::env::remove_var(var);
    }
    let cache = tempfile::tempdir().unwrap();
    let setup = WorkerSetup {
        name: "w-pull-env".into(),
        cache: cache.path().to_path_buf(),
        cache_max_bytes: Some(1 << 30),
        repo_url_template: Some("/nowhere/{repo}".into()),
        scanner: ScannerKind::Bare,
        osemgrep: "/nonexistent/osemgrep".into(),
        rules: rules_dir(),
        sast_image: None,
        docker: DockerUse::On,
        image_cache_bytes: None,
        scan: Default::default(),
        privileged: true,
    };

    // The image cache budget: a size the worker cannot read stops it, naming the variable;
    // the worker's own setting (flag or config file) wins over the environment.
    std::env::set_var(CACHE_BYTES_ENV, "lots");
    let err = match build(&setup).await {
        Err(e) => format!("{e}: {}", std::error::Error::source(&e).unwrap()),
        Ok(_) => panic!("a budget of \"lots\" was accepted"),
    };
    assert!(
        err.contains(CACHE_BYTES_ENV) && err.contains("lots"),
        "{err}"
    );
    std::env::set_var(CACHE_BYTES_ENV, "3G");
    {
        // Its own parts, dropped before the next build takes the repo cache's lock.
        let own = build(&WorkerSetup {
            image_cache_bytes: Some(12345),
            ..setup.clone()
        })
        .await
        .unwrap();
        let own = own.dynamic.expect("Docker is on");
        assert_eq!(own.puller().unwrap().settings().cache_bytes, Some(12345));
    }

    let parts = build(&setup).await.unwrap();
    let dynamic = parts.dynamic.expect("Docker is on");
    let puller = dynamic.puller().expect("a puller").clone();
    assert_eq!(puller.settings().platform.as_deref(), Some("linux/amd64"));
    assert_eq!(puller.settings().cache_bytes, Some(3 << 30));
    assert_eq!(puller.cache().budget(), Some(3 << 30));

    let labels = labels("pull-env");
    let rec = dynamic
        .evaluate(
            &task(spec(&image)),
            &generation(&[(VULN_FILE, FIXED)]),
            &labels,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let EvaluationRecord::Dynamic {
        checks,
        image_digest,
        ..
    } = rec
    else {
        panic!("not a dynamic record")
    };
    assert!(checks.is_secure());
    let name = image.rsplit_once(':').unwrap().0;
    assert_eq!(image_digest, Some(format!("{name}@{pushed}")));
    assert_eq!(puller.stats().pulls_total, 1);
}
