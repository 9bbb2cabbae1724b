//! The SAST image gives the same findings as the bare binary, and its containers never outlive
//! a scan. Needs Docker and `ase-sast:latest` (or `ASE_SAST_IMAGE`) from deploy/images/build.sh.

use ase_test_support as support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ase_worker::sast::{
    reap_orphans, BareScanner, ContainerLimits, ContainerScanner, ScanFailure, ScanLabels,
    ScanOutcome, ScanSettings, IMAGE_RULES, ROLE_LABEL, ROLE_SAST, UNIT_LABEL, WORKER_LABEL,
};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;
use support::*;

fn image() -> String {
    std::env::var("ASE_SAST_IMAGE").unwrap_or_else(|_| "ase-sast:latest".to_string())
}

async fn docker_with_image() -> Option<Docker> {
    let docker = match Docker::connect_with_unix_defaults() {
        Ok(d) => d,
        Err(e) => {
            unavailable(&format!("no Docker client: {e}"));
            return None;
        }
    };
    if let Err(e) = docker.ping().await {
        unavailable(&format!("Docker daemon does not answer: {e}"));
        return None;
    }
    if let Err(e) = docker.inspect_image(&image()).await {
        unavailable(&format!("image {} missing: {e}", image()));
        return None;
    }
    Some(docker)
}

fn scanner(docker: Docker, timeout: Duration) -> ContainerScanner {
    ContainerScanner::new(
        docker,
        image(),
        IMAGE_RULES.to_string(),
        ScanSettings {
            timeout,
            ..ScanSettings::default()
        },
        ContainerLimits::default(),
    )
}

fn labels(unit: &str) -> ScanLabels {
    ScanLabels {
        unit: format!("{unit}-{}", std::process::id()),
        run: "container-scan-test".to_string(),
        worker: format!("container-scan-test-{}", std::process::id()),
    }
}

async fn containers_with_unit(docker: &Docker, unit: &str) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("{UNIT_LABEL}={unit}")])]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .len()
}

fn keyed(outcome: ScanOutcome, what: &str) -> Vec<(String, u64, String)> {
    let report = match outcome {
        ScanOutcome::Completed(r) => r,
        ScanOutcome::Failed(f) => panic!("{what} scan failed: {f}"),
    };
    let mut v: Vec<_> = report
        .findings
        .into_iter()
        .map(|f| (f.path, f.start_line, f.check_id))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn container_scan_matches_the_bare_binary() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let Some(docker) = docker_with_image().await else {
        return;
    };
    let fixtures = rules_dir().join("fixtures");
    let bare = BareScanner::new(osemgrep, rules_dir(), ScanSettings::default());
    let t = Instant::now();
    let from_bare = keyed(bare.scan(&fixtures).await, "bare");
    let bare_time = t.elapsed();

    let l = labels("match");
    let container = scanner(docker.clone(), Duration::from_secs(120));
    let t = Instant::now();
    let from_container = keyed(container.scan(&fixtures, &l).await, "container");
    let container_time = t.elapsed();
    eprintln!("bare scan {bare_time:?}, container scan {container_time:?}");

    assert!(!from_bare.is_empty());
    assert_eq!(
        from_container, from_bare,
        "container and bare findings differ (a stale image? rerun deploy/images/build.sh)"
    );
    assert_eq!(
        containers_with_unit(&docker, &l.unit).await,
        0,
        "container left behind"
    );
}

#[tokio::test]
async fn a_timed_out_container_scan_fails_and_is_removed() {
    let Some(docker) = docker_with_image().await else {
        return;
    };
    let l = labels("timeout");
    let container = scanner(docker.clone(), Duration::from_millis(1));
    let out = container.scan(&rules_dir().join("fixtures"), &l).await;
    assert!(
        matches!(out, ScanOutcome::Failed(ScanFailure::Timeout { .. })),
        "{out:?}"
    );
    assert_eq!(
        containers_with_unit(&docker, &l.unit).await,
        0,
        "container left behind"
    );
}

#[tokio::test]
async fn a_missing_target_fails_without_a_container() {
    let Some(docker) = docker_with_image().await else {
        return;
    };
    let l = labels("missing");
    let out = scanner(docker.clone(), Duration::from_secs(10))
        .scan(&rules_dir().join("no-such-dir"), &l)
        .await;
    assert!(
        matches!(out, ScanOutcome::Failed(ScanFailure::Start(_))),
        "{out:?}"
    );
    assert_eq!(containers_with_unit(&docker, &l.unit).await, 0);
}

async fn create_labelled(docker: &Docker, worker: &str) -> String {
    let body = ContainerCreateBody {
        image: Some(image()),
        cmd: Some(vec!["--version".to_string()]),
        labels: Some(HashMap::from([
            (ROLE_LABEL.to_string(), ROLE_SAST.to_string()),
            (WORKER_LABEL.to_string(), worker.to_string()),
            (UNIT_LABEL.to_string(), format!("reap-{worker}")),
        ])),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptions::default()), body)
        .await
        .expect("create container")
        .id
}

#[tokio::test]
async fn reaping_removes_only_this_workers_containers() {
    let Some(docker) = docker_with_image().await else {
        return;
    };
    let me = format!("reap-me-{}", std::process::id());
    let other = format!("reap-other-{}", std::process::id());
    create_labelled(&docker, &me).await;
    create_labelled(&docker, &me).await;
    let other_id = create_labelled(&docker, &other).await;

    let removed = reap_orphans(&docker, &me).await.expect("reap");
    let other_left = containers_with_unit(&docker, &format!("reap-{other}")).await;
    docker
        .remove_container(
            &other_id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("clean up");
    assert_eq!(removed, 2);
    assert_eq!(
        containers_with_unit(&docker, &format!("reap-{me}")).await,
        0
    );
    assert_eq!(other_left, 1, "another worker's container was reaped");
}

/// A `.vue` component's `<script>` is scanned in the container as it is on the host (the pinned
/// semgrep parses no `.vue`: both scanners scan a JavaScript twin and report the component).
#[tokio::test]
async fn a_vue_components_script_is_scanned_in_the_container_as_on_the_host() {
    let Some(osemgrep) = osemgrep_or_skip() else {
        return;
    };
    let Some(docker) = docker_with_image().await else {
        return;
    };
    // The tree in a folder of its own: the container's twins are staged beside the tree.
    let outer = tempfile::tempdir().unwrap();
    let tree = outer.path().join("tree");
    std::fs::create_dir_all(tree.join("src/components")).unwrap();
    std::fs::write(
        tree.join("src/components/Comment.vue"),
        "<template>\n  <div ref=\"box\"></div>\n</template>\n\n<script>\nfunction showComment(el, comment) {\n  el.innerHTML = \"<p>\" + comment + \"</p>\";\n}\nexport default { mounted() { showComment(this.$refs.box, this.text) } }\n</script>\n",
    )
    .unwrap();
    let pack = ["xss/javascript.yaml".to_string()];
    let bare = BareScanner::new(osemgrep, rules_dir(), ScanSettings::default());
    let from_bare = keyed(bare.scan_with(&tree, &pack).await, "bare");
    let expected = vec![(
        "src/components/Comment.vue".to_string(),
        7,
        "ase.xss.javascript".to_string(),
    )];
    assert_eq!(
        from_bare, expected,
        "the host scan sees the component's script"
    );

    let l = labels("vue");
    let container = scanner(docker.clone(), Duration::from_secs(120));
    let from_container = keyed(container.scan_with(&tree, &l, &pack).await, "container");
    assert_eq!(from_container, expected, "the container scan sees it too");
    assert_eq!(
        containers_with_unit(&docker, &l.unit).await,
        0,
        "container left behind"
    );
    let beside: Vec<String> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["tree"], "staging folder left behind");
}
