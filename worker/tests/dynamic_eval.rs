//! The v2 evaluation against a real image implementing the contract (deploy/images/build.sh
//! builds `ase-v2-pathtrav`). Every test also checks that no container with its unit's labels
//! survives.

mod dynamic_fixtures;
use ase_test_support as support;

use std::time::{Duration, Instant};

use ase_common::dataset::DynamicSpec;
use ase_common::scoring::v2::V2Scan;
use ase_common::unit::{EvaluationRecord, StepLog};
use ase_worker::dynamic::{
    container_body, reap_orphans, split_command, DynamicError, DynamicEvaluator, DynamicSettings,
    UnitLabels, UNIT_LABEL, WORKER_LABEL,
};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use dynamic_fixtures::*;
use support::*;

async fn setup() -> Option<(Docker, DynamicEvaluator)> {
    let docker = docker_with(&v2_image()).await?;
    let ev = DynamicEvaluator::new(docker.clone(), DynamicSettings::default());
    Some((docker, ev))
}

fn parts(rec: EvaluationRecord) -> (V2Scan, Vec<StepLog>, Option<String>) {
    match rec {
        EvaluationRecord::Dynamic {
            checks,
            steps,
            reason,
            ..
        } => (checks, steps, reason),
        other => panic!("not a dynamic record: {other:?}"),
    }
}

async fn assert_no_container(docker: &Docker, labels: &UnitLabels) {
    // Removal by a dropped guard is spawned; give it a moment.
    for _ in 0..50 {
        if containers_labelled(docker, UNIT_LABEL, &labels.unit)
            .await
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("a container of unit {} was left behind", labels.unit);
}

async fn evaluate(
    docker: &Docker,
    ev: &DynamicEvaluator,
    spec: DynamicSpec,
    content: &str,
    test: &str,
) -> (V2Scan, Vec<StepLog>, Option<String>) {
    let labels = labels(test);
    let rec = ev
        .evaluate(&task(spec), &generation(&[(VULN_FILE, content)]), &labels)
        .await
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_no_container(docker, &labels).await;
    parts(rec)
}

fn step<'a>(steps: &'a [StepLog], name: &str) -> &'a StepLog {
    steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps:#?}"))
}

#[tokio::test]
async fn vulnerable_code_fails_the_poc_and_fixed_code_passes_everything() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let (checks, steps, reason) =
        evaluate(&docker, &ev, spec(&v2_image()), VULNERABLE, "vulnerable").await;
    assert_eq!(
        checks,
        V2Scan {
            completion: true,
            image_status_check: true,
            test_case_check: true,
            poc_check: false
        },
        "{steps:#?}"
    );
    assert_eq!(reason, None);
    let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(names, ["upload", "image_status_check", "test_case", "poc"]);
    assert!(step(&steps, "poc").output.contains("FLAG-7c1d"));
    assert_eq!(step(&steps, "poc").exit_code, Some(0));
    assert!(step(&steps, "upload")
        .output
        .contains(&ase_worker::dynamic::upload::md5_hex(VULNERABLE.as_bytes())));

    let (checks, steps, _) = evaluate(&docker, &ev, spec(&v2_image()), FIXED, "fixed").await;
    assert_eq!(
        checks,
        V2Scan {
            completion: true,
            image_status_check: true,
            test_case_check: true,
            poc_check: true
        },
        "{steps:#?}"
    );
    assert!(checks.is_secure());
}

#[tokio::test]
async fn an_empty_run_cmd_uses_the_image_cmd() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    s.image_run_cmd = String::new();
    let (checks, steps, _) = evaluate(&docker, &ev, s, FIXED, "empty-run-cmd").await;
    assert!(checks.poc_check && checks.test_case_check, "{steps:#?}");
}

#[tokio::test]
async fn code_that_breaks_the_functionality_fails_the_test_case() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let (checks, steps, _) = evaluate(&docker, &ev, spec(&v2_image()), BROKEN, "broken").await;
    assert!(checks.completion && checks.image_status_check, "{steps:#?}");
    assert!(!checks.test_case_check, "{steps:#?}");
    // The sequence goes on after a failed test case, as upstream's does.
    assert!(checks.poc_check);
    assert!(!checks.is_secure());
    assert!(step(&steps, "test_case")
        .output
        .contains("test case failed"));
}

#[tokio::test]
async fn a_failed_status_check_stops_the_sequence() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let (checks, steps, reason) = evaluate(
        &docker,
        &ev,
        spec(&v2_image()),
        "#!/bin/sh\ncase x in\n",
        "syntax-error",
    )
    .await;
    assert!(checks.completion && !checks.image_status_check);
    assert!(!checks.test_case_check && !checks.poc_check);
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert!(reason.unwrap().contains("status check"));
}

#[tokio::test]
async fn a_hanging_command_is_killed_at_its_timeout() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    s.test_case_cmd = "sleep 1000".into();
    s.timeouts.insert("test_case_cmd".into(), 2);
    let started = Instant::now();
    let (checks, steps, _) = evaluate(&docker, &ev, s, FIXED, "hanging").await;
    // Bounded far below the command's 1000 s: the timeout, not the command, ended the step.
    assert!(started.elapsed() < Duration::from_secs(120));
    let t = step(&steps, "test_case");
    assert!(t.timed_out && !t.passed && t.exit_code.is_none(), "{t:#?}");
    assert!(t.seconds >= 2.0);
    assert!(!checks.test_case_check);
    // The container was killed, started again, the status check re-run, and the PoC ran.
    assert!(step(&steps, "image_status_check_after_restart").passed);
    assert!(checks.poc_check, "{steps:#?}");
}

#[tokio::test]
async fn a_status_check_running_into_its_timeout_fails_even_with_the_marker() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    s.image_status_check_cmd = "sh -c 'sh /app/build.sh; sleep 1000'".into();
    s.timeouts.insert("image_status_check_cmd".into(), 2);
    let (checks, steps, _) = evaluate(&docker, &ev, s, FIXED, "status-timeout").await;
    let st = step(&steps, "image_status_check");
    assert!(st.timed_out && st.output.contains("[A.S.E] image startup successfully"));
    assert!(!checks.image_status_check && !checks.test_case_check);
}

#[tokio::test]
async fn unsafe_paths_are_refused_before_any_container_exists() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    for (i, bad) in ["../x", "/etc/passwd", "src/../../x"].iter().enumerate() {
        let labels = labels(&format!("bad-path-{i}"));
        let rec = ev
            .evaluate(
                &task(spec(&v2_image())),
                &generation(&[(VULN_FILE, FIXED), (bad, "x")]),
                &labels,
            )
            .await
            .unwrap();
        let (checks, steps, reason) = parts(rec);
        assert_eq!(checks, V2Scan::default());
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].step, "upload");
        assert!(reason.unwrap().contains("changed file"), "{bad}");
        assert_no_container(&docker, &labels).await;
    }
}

#[tokio::test]
async fn an_md5_mismatch_fails_the_upload_and_stops() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    // The image's main process keeps overwriting the vuln file: what md5sum reads inside is not
    // what was uploaded.
    s.image_run_cmd =
        "sh -c 'while :; do echo tampered > /app/src/view.sh; usleep 1000; done'".into();
    let (checks, steps, reason) = evaluate(&docker, &ev, s, FIXED, "md5").await;
    assert_eq!(checks, V2Scan::default(), "{steps:#?}");
    assert_eq!(steps.len(), 1);
    assert!(!steps[0].passed);
    assert!(reason.unwrap().contains("md5"));
}

#[tokio::test]
async fn a_missing_inner_path_fails_the_upload() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    s.image_inner_path = "/does/not/exist".into();
    let (checks, steps, _) = evaluate(&docker, &ev, s, FIXED, "no-inner-path").await;
    assert!(!checks.completion && !steps[0].passed, "{steps:#?}");
}

#[tokio::test]
async fn a_missing_image_is_a_retryable_error() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let labels = labels("missing-image");
    let err = ev
        .evaluate(
            &task(spec("ase-v2-no-such-image:0000")),
            &generation(&[(VULN_FILE, FIXED)]),
            &labels,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DynamicError::ImageMissing { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("pathtrav_01"));
    assert_no_container(&docker, &labels).await;
}

#[tokio::test]
async fn an_unreachable_daemon_is_a_retryable_error() {
    // A path that exists but where no daemon listens.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    std::fs::write(&sock, b"").unwrap();
    let docker = Docker::connect_with_unix(sock.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
        .expect("client builds");
    let ev = DynamicEvaluator::new(docker, DynamicSettings::default());
    let err = ev
        .evaluate(
            &task(spec(&v2_image())),
            &generation(&[(VULN_FILE, FIXED)]),
            &labels("no-daemon"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DynamicError::Docker { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_worker_that_may_not_start_privileged_containers_refuses_such_a_task_before_docker() {
    // No daemon listens: the refusal comes before any Docker call.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    std::fs::write(&sock, b"").unwrap();
    let docker = Docker::connect_with_unix(sock.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
        .expect("client builds");
    let ev = DynamicEvaluator::new(
        docker,
        DynamicSettings {
            privileged: false,
            ..DynamicSettings::default()
        },
    );
    let mut s = spec(&v2_image());
    s.privileged = true;
    let err = ev
        .evaluate(
            &task(s),
            &generation(&[(VULN_FILE, FIXED)]),
            &labels("unprivileged"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DynamicError::Unprivileged { .. }), "{err}");
    // Another worker may: retried there, not failed for the model.
    assert!(err.is_retryable());
    assert!(err.to_string().contains("pathtrav_01"), "{err}");
}

#[tokio::test]
async fn a_privileged_task_creates_a_privileged_container() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    s.privileged = true;
    let labels = labels("privileged");
    // The creation path the evaluator takes, inspected before anything starts.
    let created = docker
        .create_container(
            Some(CreateContainerOptions::default()),
            container_body(&s, split_command(&s.image_run_cmd), &labels),
        )
        .await
        .unwrap();
    let inspected = docker.inspect_container(&created.id, None).await.unwrap();
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(inspected.host_config.unwrap().privileged, Some(true));
    let labels_seen = inspected.config.unwrap().labels.unwrap();
    assert_eq!(labels_seen[UNIT_LABEL], labels.unit);

    // Not privileged unless asked.
    let plain = ev.container_body(&spec(&v2_image()), &labels);
    assert_eq!(plain.host_config.unwrap().privileged, Some(false));

    // The whole evaluation: privileged containers cannot start on some machines (this one);
    // either way nothing is left behind.
    match ev
        .evaluate(&task(s), &generation(&[(VULN_FILE, FIXED)]), &labels)
        .await
    {
        Ok(rec) => assert!(parts(rec).0.completion),
        Err(e) => assert!(
            matches!(e, DynamicError::Docker { ref op, .. } if op.contains("start")),
            "{e}"
        ),
    }
    assert_no_container(&docker, &labels).await;
}

#[tokio::test]
async fn a_cancelled_evaluation_removes_its_container() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let mut s = spec(&v2_image());
    s.test_case_cmd = "sleep 1000".into();
    let labels = labels("cancelled");
    let t = task(s);
    let g = generation(&[(VULN_FILE, FIXED)]);
    let fut = ev.evaluate(&t, &g, &labels);
    let poll = async {
        // Cancel once the container exists.
        loop {
            if !containers_labelled(&docker, UNIT_LABEL, &labels.unit)
                .await
                .is_empty()
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = fut => panic!("finished before cancellation: {r:?}"),
        _ = poll => {}
    }
    assert_no_container(&docker, &labels).await;
}

#[tokio::test]
async fn reap_orphans_removes_only_this_workers_leftovers() {
    let Some((docker, _)) = setup().await else {
        return;
    };
    let mine = labels("orphan-mine");
    let mut theirs = labels("orphan-theirs");
    theirs.worker = format!("{}-other", theirs.worker);
    let s = spec(&v2_image());
    for l in [&mine, &mine, &theirs] {
        let c = docker
            .create_container(
                Some(CreateContainerOptions::default()),
                container_body(&s, split_command(&s.image_run_cmd), l),
            )
            .await
            .unwrap();
        docker.start_container(&c.id, None).await.unwrap();
    }
    assert_eq!(reap_orphans(&docker, &mine.worker).await.unwrap(), 2);
    assert!(containers_labelled(&docker, WORKER_LABEL, &mine.worker)
        .await
        .is_empty());
    assert_eq!(
        containers_labelled(&docker, WORKER_LABEL, &theirs.worker)
            .await
            .len(),
        1
    );
    assert_eq!(reap_orphans(&docker, &theirs.worker).await.unwrap(), 1);
    assert_no_container(&docker, &theirs).await;
}

#[tokio::test]
async fn a_failed_generation_is_not_evaluated() {
    // No Docker call happens: a client to nowhere is enough.
    let docker = Docker::connect_with_unix_defaults().expect("client builds");
    let ev = DynamicEvaluator::new(docker, DynamicSettings::default());
    let mut g = generation(&[(VULN_FILE, FIXED)]);
    g.success = false;
    let (checks, steps, reason) = parts(
        ev.evaluate(&task(spec(&v2_image())), &g, &labels("failed-generation"))
            .await
            .unwrap(),
    );
    assert_eq!(checks, V2Scan::default());
    assert!(steps.is_empty());
    assert!(reason.unwrap().contains("generation failed"));
}

#[tokio::test]
async fn a_new_file_in_new_folders_lands_under_the_inner_path() {
    let Some((docker, ev)) = setup().await else {
        return;
    };
    let labels = labels("new-folders");
    let mut t = task(spec(&v2_image()));
    // The md5 check reads the file where upstream expects it: <inner path>/<vuln_file>.
    t.vuln_file = "lib/new/helper.sh".into();
    let rec = ev
        .evaluate(
            &t,
            &generation(&[(VULN_FILE, FIXED), ("lib/new/helper.sh", "echo helper\n")]),
            &labels,
        )
        .await
        .unwrap();
    let (checks, steps, _) = parts(rec);
    assert!(
        checks.completion && step(&steps, "upload").passed,
        "{steps:#?}"
    );
    assert!(step(&steps, "upload").output.contains("2 file(s)"));
    assert!(checks.poc_check, "view.sh was replaced too");
    assert_no_container(&docker, &labels).await;
}
