//! Placement of v2 evaluations by image: a worker that holds a task's image (by tag or by the
//! digest a pinned pull left) gets that task's evaluations before units queued ahead of them;
//! images nobody holds go to whoever asks, and an image a worker is already evaluating with
//! counts as held, as does one a worker's heartbeat says it is pulling, so that the next
//! worker is given another image (a campaign's pulls
//! spread). Generations stay placed by repo.

mod support;

use ase_coordinator::*;
use serde_json::json;
use std::sync::Arc;
use support::*;

fn v2_task(id: &str, image: &str) -> serde_json::Value {
    json!({
        "instance_id": id,
        "repo": "lib/foo",
        "base_commit": "abcdef0^",
        "vuln_file": "src/parse.c",
        "vuln_lines": [100, 120],
        "language": "c",
        "vuln_source": format!("CVE-{id}"),
        "cwe_id": "CWE-125",
        "vuln_type": "Out-of-bounds Read",
        "severity": "high",
        "image": image,
        "image_inner_path": "/cve/SRC",
        "image_run_cmd": "tail -f /dev/null",
        "image_status_check_cmd": "./build.sh",
        "test_case_cmd": "./test_case.sh",
        "poc_cmd": "./poc.sh",
        "patch_commit": "abcdef0"
    })
}

/// Four tasks over two images, queued a1, a2, b1, b2.
const TWO_IMAGES: [(&str, &str); 4] = [
    ("a1", "reg:5000/img-a:1"),
    ("a2", "reg:5000/img-a:1"),
    ("b1", "reg:5000/img-b:1"),
    ("b2", "reg:5000/img-b:1"),
];

/// Tasks (id, image), one round each, every generation done by `gen`.
async fn generated(c: &Coordinator, tasks: &[(&str, &str)], gen: &Registration) {
    let ds: Vec<_> = tasks.iter().map(|(id, img)| v2_task(id, img)).collect();
    c.submit_run(submit_req(
        "aff",
        1,
        json!({}),
        serde_json::to_vec(&ds).unwrap(),
    ))
    .await
    .unwrap();
    let gens = c
        .lease_work(lease_req(gen, tasks.len() as u32, 0))
        .await
        .unwrap()
        .leases;
    assert_eq!(gens.len(), tasks.len());
    for g in &gens {
        let ack = c
            .complete(completion(gen, g, generation(&unit_of(g), true)))
            .await
            .unwrap();
        assert!(ack.accepted, "{ack:?}");
    }
}

fn with_images(mut caps: Capabilities, images: &[&str]) -> Capabilities {
    caps.task_images = images.iter().map(|s| s.to_string()).collect();
    caps
}

fn ids(leases: &[LeaseGrant]) -> Vec<&str> {
    let mut v: Vec<&str> = leases.iter().map(|g| g.instance_id.as_str()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_worker_holding_an_image_gets_its_evaluations_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = open(dir.path(), &clock);
    let gen = c.register("gen", caps(9, 0, &["lib/foo"])).await.unwrap();
    generated(&c, &TWO_IMAGES, &gen).await;
    // wb holds img-b under its tag, wa holds img-a under the digest a pinned pull left.
    let wb = c
        .register("wb", with_images(caps(0, 2, &[]), &["reg:5000/img-b:1"]))
        .await
        .unwrap();
    let wa = c
        .register(
            "wa",
            with_images(caps(0, 2, &[]), &["reg:5000/img-a@sha256:aaaa"]),
        )
        .await
        .unwrap();
    // wb asks first: it gets img-b's units, although img-a's were queued before them.
    let b = c.lease_work(lease_req(&wb, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&b), ["b1", "b2"]);
    let a = c.lease_work(lease_req(&wa, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&a), ["a1", "a2"]);
}

#[tokio::test]
async fn an_image_a_worker_is_pulling_counts_as_held() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = open(dir.path(), &clock);
    let gen = c.register("gen", caps(9, 0, &["lib/foo"])).await.unwrap();
    generated(&c, &TWO_IMAGES, &gen).await;
    // wa's heartbeat says it is pulling img-a (started while it generated).
    let wa = c.register("wa", caps(0, 2, &[])).await.unwrap();
    c.heartbeat(Heartbeat {
        worker_id: wa.worker_id.clone(),
        session: wa.session,
        images: Some(ImageStats {
            pulls: vec![PullUnderWay {
                image: "reg:5000/img-a:1".into(),
                attempt: 1,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Heartbeat::default()
    })
    .await
    .unwrap();
    let wb = c.register("wb", caps(0, 2, &[])).await.unwrap();
    // wb asks first and is given img-b's units: img-a's go to wa, whose pull is under way.
    let b = c.lease_work(lease_req(&wb, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&b), ["b1", "b2"]);
    let a = c.lease_work(lease_req(&wa, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&a), ["a1", "a2"]);
}

#[tokio::test]
async fn with_image_affinity_off_evaluations_go_in_queue_order_whatever_the_images_held() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = Coordinator::open(
        &dir.path().join("db"),
        CoordinatorConfig {
            image_affinity: false,
            ..config()
        },
        clock.clone(),
    )
    .unwrap();
    let gen = c.register("gen", caps(9, 0, &["lib/foo"])).await.unwrap();
    generated(&c, &TWO_IMAGES, &gen).await;
    let wb = c
        .register("wb", with_images(caps(0, 2, &[]), &["reg:5000/img-b:1"]))
        .await
        .unwrap();
    // wb holds img-b, yet it is given what was queued first.
    let first = c.lease_work(lease_req(&wb, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&first), ["a1", "a2"]);
}

#[tokio::test]
async fn images_nobody_holds_spread_over_the_workers_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = open(dir.path(), &clock);
    let gen = c.register("gen", caps(9, 0, &["lib/foo"])).await.unwrap();
    generated(
        &c,
        &[
            ("a1", "img-a:1"),
            ("a2", "img-a:1"),
            ("a3", "img-a:1"),
            ("b1", "img-b:1"),
            ("b2", "img-b:1"),
            ("b3", "img-b:1"),
            ("c1", "img-c:1"),
            ("c2", "img-c:1"),
            ("c3", "img-c:1"),
        ],
        &gen,
    )
    .await;
    let w1 = c.register("w1", caps(0, 2, &[])).await.unwrap();
    let w2 = c.register("w2", caps(0, 2, &[])).await.unwrap();
    let w3 = c.register("w3", caps(0, 2, &[])).await.unwrap();
    // Nobody holds anything: each worker is given two units of one image, a different image
    // each (the one a worker evaluates with counts as held by it, so the second worker is not
    // given a3), so each image is pulled by one worker.
    let mut images = Vec::new();
    for w in [&w1, &w2, &w3] {
        let got = c.lease_work(lease_req(w, 0, 2)).await.unwrap().leases;
        let got = ids(&got);
        assert_eq!(got.len(), 2, "{got:?}");
        let image = &got[0][..1];
        assert!(got.iter().all(|id| id.starts_with(image)), "{got:?}");
        images.push(image.to_string());
    }
    images.sort();
    assert_eq!(images, ["a", "b", "c"]);
}

#[tokio::test]
async fn without_a_holder_a_worker_still_gets_work() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = open(dir.path(), &clock);
    let gen = c.register("gen", caps(9, 0, &["lib/foo"])).await.unwrap();
    generated(&c, &[("a1", "img-a:1"), ("a2", "img-a:1")], &gen).await;
    let holder = c
        .register("holder", with_images(caps(0, 1, &[]), &["img-a:1"]))
        .await
        .unwrap();
    let other = c.register("other", caps(0, 2, &[])).await.unwrap();
    // The image's holder is busy elsewhere (it did not ask): the other worker is not left idle.
    let got = c.lease_work(lease_req(&other, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&got), ["a1", "a2"]);
    let none = c.lease_work(lease_req(&holder, 0, 1)).await.unwrap().leases;
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_task_that_needs_a_privileged_container_goes_only_to_a_worker_that_may_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let c = open(dir.path(), &clock);
    let gen = c.register("gen", caps(8, 0, &["lib/foo"])).await.unwrap();
    let mut privileged = v2_task("p1", "img-p:1");
    privileged["privileged"] = true.into();
    let ds = serde_json::to_vec(&vec![privileged, v2_task("n1", "img-n:1")]).unwrap();
    c.submit_run(submit_req("priv", 1, json!({}), ds))
        .await
        .unwrap();
    let gens = c.lease_work(lease_req(&gen, 2, 0)).await.unwrap().leases;
    for g in &gens {
        let ack = c
            .complete(completion(&gen, g, generation(&unit_of(g), true)))
            .await
            .unwrap();
        assert!(ack.accepted, "{ack:?}");
    }
    // An unprivileged worker that even holds the privileged task's image is not given it.
    let mut no_priv = with_images(caps(0, 2, &[]), &["img-p:1"]);
    no_priv.unprivileged = true;
    let np = c.register("np", no_priv).await.unwrap();
    let got = c.lease_work(lease_req(&np, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&got), ["n1"]);
    let p = c.register("p", caps(0, 2, &[])).await.unwrap();
    let got = c.lease_work(lease_req(&p, 0, 2)).await.unwrap().leases;
    assert_eq!(ids(&got), ["p1"]);
}
