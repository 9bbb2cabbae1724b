//! Task images pulled on demand from a real registry on loopback (Debian's `docker-registry`
//! with htpasswd auth, see test_registry/), then evaluated by digest. Each test starts its own
//! registry, builds and pushes an image of its own and removes it from the daemon first, so
//! the evaluation must pull it; everything it creates is removed again.

mod dynamic_fixtures;
use ase_test_support as support;

use std::time::Duration;

use ase_common::unit::EvaluationRecord;
use ase_test_support::registry::*;
use ase_worker::dynamic::{DynamicError, DynamicEvaluator, DynamicSettings, UNIT_LABEL};
use ase_worker::images::{CredentialSource, ImagePuller, PullError, PullSettings};
use bollard::Docker;
use dynamic_fixtures::*;
use support::*;

/// The daemon, the v2 test image and the registry's tools, or None after `unavailable`.
async fn prerequisites() -> Option<Docker> {
    if let Some(why) = missing_tools() {
        unavailable_unless(
            &why,
            "apt-get install docker-registry apache2-utils (.ci/run does)",
        );
        return None;
    }
    docker_with(&v2_image()).await
}

/// Quick retries: the tests do not wait out real back-offs.
fn settings(credentials: CredentialSource) -> PullSettings {
    PullSettings {
        credentials,
        attempts: 3,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(60),
        ..PullSettings::default()
    }
}

fn evaluator(docker: &Docker, s: PullSettings) -> (DynamicEvaluator, ImagePuller) {
    let puller = ImagePuller::new(docker.clone(), s);
    let ev = DynamicEvaluator::new(docker.clone(), DynamicSettings::default())
        .with_puller(puller.clone());
    (ev, puller)
}

/// A unit name unique to this process and test (also the image's tag).
fn unique(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

async fn no_container_left(docker: &Docker, unit: &str) {
    for _ in 0..50 {
        if containers_labelled(docker, UNIT_LABEL, unit)
            .await
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("a container of unit {unit} was left behind");
}

async fn evaluate(
    docker: &Docker,
    ev: &DynamicEvaluator,
    image: &str,
    unit: &str,
) -> Result<EvaluationRecord, DynamicError> {
    let labels = labels(unit);
    let out = ev
        .evaluate(
            &task(spec(image)),
            &generation(&[(VULN_FILE, FIXED)]),
            &labels,
        )
        .await;
    no_container_left(docker, &labels.unit).await;
    out
}

#[tokio::test]
async fn a_missing_image_is_pulled_with_the_docker_config_run_by_digest_and_not_pulled_again() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let tag = unique("pull-once");
    let image = registry.reference("pathtrav", &tag);
    let _cleanup = ImageCleanup(vec![image.clone()]);
    let pushed =
        build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "the image is still on the daemon"
    );

    let config = registry.docker_config(PASSWORD);
    let (ev, puller) = evaluator(
        &docker,
        settings(CredentialSource::config_dir(config.path())),
    );
    let rec = evaluate(&docker, &ev, &image, "pull-once-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let EvaluationRecord::Dynamic {
        checks,
        image_digest,
        steps,
        ..
    } = rec
    else {
        panic!("not a dynamic record")
    };
    assert!(checks.is_secure(), "{steps:#?}");
    // Pinned: the digest the registry gave the push, under the name the task used.
    let name = image.rsplit_once(':').unwrap().0;
    assert_eq!(image_digest, Some(format!("{name}@{pushed}")));

    let stats = puller.stats();
    assert_eq!(
        (stats.pulls_total, stats.pull_attempts),
        (1, 1),
        "{stats:?}"
    );
    assert!(
        stats.layers_done >= 1 && stats.bytes_downloaded > 0,
        "{stats:?}"
    );
    assert!(stats.in_progress.is_empty(), "{stats:?}");

    // Second need: the image is there, nothing is pulled.
    let rec = evaluate(&docker, &ev, &image, "pull-once-2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let EvaluationRecord::Dynamic { image_digest, .. } = rec else {
        panic!("not a dynamic record")
    };
    assert_eq!(image_digest, Some(format!("{name}@{pushed}")));
    let stats = puller.stats();
    assert_eq!(
        (stats.pulls_total, stats.pull_attempts),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.already_present, 1, "{stats:?}");
}

#[tokio::test]
async fn a_digest_pinned_before_its_tag_moved_is_pulled_and_run_as_pinned() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let tag = unique("pinned");
    let image = registry.reference("pathtrav", &tag);
    let name = image.rsplit_once(':').unwrap().0.to_string();
    // The run pinned the image the tag named first; then the tag moved to another image.
    let first =
        build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;
    let moved = push_as(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;
    assert_ne!(first, moved, "the tag names another image now");
    let pinned = format!("{name}@{first}");
    let _cleanup = ImageCleanup(vec![image.clone(), pinned.clone()]);
    assert!(docker.inspect_image(&pinned).await.is_err());

    let config = registry.docker_config(PASSWORD);
    let (ev, puller) = evaluator(
        &docker,
        settings(CredentialSource::config_dir(config.path())),
    );
    let rec = evaluate(&docker, &ev, &pinned, "pinned-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let EvaluationRecord::Dynamic {
        checks,
        image_digest,
        steps,
        ..
    } = rec
    else {
        panic!("not a dynamic record")
    };
    assert!(checks.is_secure(), "{steps:#?}");
    assert_eq!(
        image_digest.as_deref(),
        Some(pinned.as_str()),
        "ran as pinned"
    );
    assert_eq!(puller.stats().pulls_total, 1);
    // The tag, asked for now, is the moved image: what the pin protects against.
    let rec = evaluate(&docker, &ev, &image, "pinned-2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let EvaluationRecord::Dynamic { image_digest, .. } = rec else {
        panic!("not a dynamic record")
    };
    assert_eq!(image_digest, Some(format!("{name}@{moved}")));
}

#[tokio::test]
async fn concurrent_needs_of_one_image_share_one_pull() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let image = registry.reference("pathtrav", &unique("shared"));
    let _cleanup = ImageCleanup(vec![image.clone()]);
    build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;

    let config = registry.docker_config(PASSWORD);
    let (ev, puller) = evaluator(
        &docker,
        settings(CredentialSource::config_dir(config.path())),
    );
    let (a, b, c) = tokio::join!(
        evaluate(&docker, &ev, &image, "shared-a"),
        evaluate(&docker, &ev, &image, "shared-b"),
        puller.ensure(&image),
    );
    let digest = |r: Result<EvaluationRecord, DynamicError>| match r {
        Ok(EvaluationRecord::Dynamic {
            image_digest,
            checks,
            ..
        }) => {
            assert!(checks.is_secure());
            image_digest.expect("a digest")
        }
        other => panic!("{other:?}"),
    };
    let (da, db) = (digest(a), digest(b));
    let dc = c.expect("the third need").pinned;
    assert!(da == db && db == dc, "{da} {db} {dc}");
    let stats = puller.stats();
    // One pull, one request to the daemon, whichever need started it.
    assert_eq!(
        (stats.pulls_total, stats.pull_attempts),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.shared_waits + stats.already_present, 2, "{stats:?}");
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_an_auth_error_that_never_shows_the_password() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let image = registry.reference("pathtrav", &unique("auth"));
    let _cleanup = ImageCleanup(vec![image.clone()]);
    build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;

    let wrong = "wrong-Zk81-secret-pw";
    let config = registry.docker_config(wrong);
    let (ev, puller) = evaluator(
        &docker,
        settings(CredentialSource::config_dir(config.path())),
    );
    let err = evaluate(&docker, &ev, &image, "auth-wrong")
        .await
        .unwrap_err();
    let DynamicError::Pull {
        source: PullError::Unauthorized { .. },
        ..
    } = &err
    else {
        panic!("not an auth error: {err}")
    };
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("authentication failed"), "{shown}");
    assert!(shown.contains(USER), "names who was refused: {shown}");
    assert!(
        !shown.contains(wrong) && !shown.contains(PASSWORD),
        "{shown}"
    );
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{USER}:{wrong}"),
    );
    assert!(!shown.contains(&b64), "{shown}");
    assert!(err.is_retryable());
    // Not retried by the puller: the registry's answer will not change by asking again.
    assert_eq!(puller.stats().pull_attempts, 1);

    let (ev, _) = evaluator(&docker, settings(CredentialSource::anonymous()));
    let err = evaluate(&docker, &ev, &image, "auth-none")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            DynamicError::Pull {
                source: PullError::Unauthorized { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no credentials found"), "{err}");
}

#[tokio::test]
async fn a_stopped_registry_is_the_typed_registry_unreachable_failure() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let mut registry = TestRegistry::start();
    let image = registry.reference("pathtrav", &unique("stopped"));
    let _cleanup = ImageCleanup(vec![image.clone()]);
    build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;
    registry.stop();

    let config = registry.docker_config(PASSWORD);
    let (ev, puller) = evaluator(
        &docker,
        settings(CredentialSource::config_dir(config.path())),
    );
    let err = evaluate(&docker, &ev, &image, "stopped").await.unwrap_err();
    match &err {
        DynamicError::Pull {
            source: PullError::Unreachable { attempts, .. },
            ..
        } => assert_eq!(*attempts, 3),
        other => panic!("not an unreachable registry: {other}"),
    }
    assert!(err.to_string().contains("registry unreachable"), "{err}");
    assert!(err.is_retryable());
    let stats = puller.stats();
    assert_eq!(
        (stats.pulls_total, stats.pulls_failed, stats.pull_attempts),
        (0, 1, 3),
        "{stats:?}"
    );
    assert!(stats.in_progress.is_empty(), "{stats:?}");
}

#[tokio::test]
async fn a_registry_back_within_the_retries_ends_the_wait_with_the_image() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let mut registry = TestRegistry::start();
    let image = registry.reference("pathtrav", &unique("back"));
    let _cleanup = ImageCleanup(vec![image.clone()]);
    build_push_remove(&docker, &v2_image(), &image, registry.credentials(PASSWORD)).await;
    registry.stop();

    let config = registry.docker_config(PASSWORD);
    // Enough attempts to outlast the restart below (bounded all the same: 100 x <= 250 ms).
    let s = PullSettings {
        attempts: 100,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..settings(CredentialSource::config_dir(config.path()))
    };
    let (_, puller) = evaluator(&docker, s);
    let pull = tokio::spawn({
        let puller = puller.clone();
        let image = image.clone();
        async move { puller.ensure(&image).await }
    });
    // The first request has failed: the need is waiting between retries.
    for _ in 0..200 {
        if puller.stats().pull_attempts >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = puller.stats();
    assert!(waiting.pull_attempts >= 2, "{waiting:?}");
    assert_eq!(waiting.in_progress.len(), 1, "{waiting:?}");
    assert_eq!(waiting.in_progress[0].image, image);
    registry.restart();
    let resolved = tokio::time::timeout(Duration::from_secs(60), pull)
        .await
        .expect("the pull ends within 60 s")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        resolved.pulled && resolved.pinned.contains("@sha256:"),
        "{resolved:?}"
    );
    let stats = puller.stats();
    assert_eq!((stats.pulls_total, stats.pulls_failed), (1, 0), "{stats:?}");
    // The attempt that succeeded came after the registry was back.
    assert!(stats.pull_attempts > waiting.pull_attempts, "{stats:?}");
}

#[tokio::test]
async fn a_missing_tag_is_image_not_found_and_not_retried() {
    let Some(docker) = prerequisites().await else {
        return;
    };
    let registry = TestRegistry::start();
    let image = registry.reference("pathtrav", &unique("never-pushed"));
    let _cleanup = ImageCleanup(vec![image.clone()]);
    let config = registry.docker_config(PASSWORD);
    let (ev, puller) = evaluator(
        &docker,
        settings(CredentialSource::config_dir(config.path())),
    );
    let err = evaluate(&docker, &ev, &image, "not-found")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            DynamicError::Pull {
                source: PullError::NotFound { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("image not found"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(puller.stats().pull_attempts, 1);
}
