//! Multi-host on Docker: the coordinator and three workers as containers of the `ase-node`
//! image on a private network, mutual TLS with certificates from `ase certs init`, the model
//! behind an OpenAI-compatible server the test binds on the network's gateway address, the git
//! project mounted read-only into the workers, the client on the host through a port published
//! on 127.0.0.1.
//!
//! `docker network disconnect` of a worker holding evaluate leases: they expire, its units are
//! re-leased and finish elsewhere; after `docker network connect` its late results are refused by
//! the fence (the coordinator's `ase_refused_reports_total`, the worker's log), and it finishes
//! the rest of the run (the other workers are drained by then).
//!
//! Needs Docker and `deploy/images/build.sh` (which the test calls for the node image; it builds
//! it from the `ase` binary under test: `cargo build -p ase` first, or ASE_BIN).

use ase_cluster_tests::client::{ase_client, assert_run_report, phase_done, worker_status};
use ase_cluster_tests::docker_cluster::{
    docker_or_skip, http_get, metric, mount, node_image, unique_name, Container, DockerNet,
};
use ase_cluster_tests::{
    certs_init, submit, wait_until, write_run_files, CoordinatorAccess, FakeModel, ModelBehaviour,
    Project,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// One round of 16 tasks rather than two of 8: a worker scans a changed file it already scanned
// (the same answer in another round) from its cache, without calling the scanner, and the test
// follows units by the scanner's calls.
const TASKS: usize = 16;
const ROUNDS: u32 = 1;
/// Every scan waits this long first, so that leases are held while the network goes away and
/// work is left when the worker comes back.
const SCAN_DELAY_MS: u64 = 2000;
const HEARTBEAT_MS: u64 = 500;
const LEASE_TTL_MS: u64 = 3000;
const COORD_PORT: u16 = 7700;
const METRICS_PORT: u16 = 9700;
const WAIT: Duration = Duration::from_secs(120);

/// A wrapper of the image's osemgrep that marks each scan's start and end in /marks (a host
/// directory), with its arguments, so the test knows which unit a worker scans and when.
fn write_slow_scanner(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("slow-osemgrep");
    let secs = format!("{}.{:03}", SCAN_DELAY_MS / 1000, SCAN_DELAY_MS % 1000);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$1\" in --version) exec /semgrep/bin/osemgrep \"$@\";; esac\n\
             echo \"$@\" > \"/marks/start.$$\"\n\
             sleep {secs}\n\
             /semgrep/bin/osemgrep \"$@\"\n\
             rc=$?\n\
             echo \"$@\" > \"/marks/done.$$\"\n\
             exit $rc\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Units whose scan has `kind` ("start" or "done") marked in `marks` (baseline scans of whole
/// trees name no unit and are left out).
fn marked_units(marks: &Path, kind: &str, units: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(marks) else {
        return out;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{kind}."))
        {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for u in units {
            // `shop_sqli_1_cycle1` must not match inside `shop_sqli_1_cycle10`.
            let hit = text.match_indices(u.as_str()).any(|(i, _)| {
                !text[i + u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            });
            if hit {
                out.insert(u.clone());
            }
        }
    }
    out
}

/// The text of a log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn refused_reports(metrics_port: u16) -> f64 {
    metric(
        &http_get(metrics_port, "/metrics"),
        "ase_refused_reports_total",
    )
    .expect("ase_refused_reports_total in /metrics")
}

#[test]
fn a_disconnected_worker_loses_its_leases_its_late_results_are_fenced_and_it_takes_work_again() {
    if !docker_or_skip() {
        return;
    }
    let image = node_image();
    let tmp = tempfile::tempdir().unwrap();
    let project = Project::create(tmp.path(), TASKS);
    let units = project.unit_names(ROUNDS);
    let workers = ["w1", "w2", "w3"];
    let certs = certs_init(&tmp.path().join("certs"), &workers, &["coord"]);
    let hooks = tmp.path().join("hooks");
    write_slow_scanner(&hooks);

    let net = DockerNet::create(&unique_name("ase-mh"));
    // The model server listens on the host's address on the private network only.
    let model = FakeModel::start(
        SocketAddr::new(net.gateway, 0),
        &project.tasks,
        ModelBehaviour::default(),
    );
    let files = write_run_files(&tmp.path().join("run"), &project, &model.base_url(), ROUNDS);

    let mut coord_extra: Vec<String> = vec![
        "-p".into(),
        format!("127.0.0.1::{COORD_PORT}"),
        "-p".into(),
        format!("127.0.0.1::{METRICS_PORT}"),
    ];
    coord_extra.extend(mount(&certs, "/certs", true));
    let coord = net.run(
        "coord",
        &coord_extra,
        &image,
        &[
            "coordinator".into(),
            "--listen".into(),
            format!("0.0.0.0:{COORD_PORT}"),
            "--data".into(),
            "/data".into(),
            "--tls-dir".into(),
            "/certs".into(),
            "--heartbeat-ms".into(),
            HEARTBEAT_MS.to_string(),
            "--lease-ttl-ms".into(),
            LEASE_TTL_MS.to_string(),
            "--metrics-listen".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ],
    );
    coord.wait_log("listening on", 1, WAIT);
    let access = CoordinatorAccess {
        url: format!("https://localhost:{}", coord.host_port(COORD_PORT)),
        tls_dir: certs.clone(),
    };
    let metrics_port = coord.host_port(METRICS_PORT);

    // w1 only evaluates: its leases hold committed generations, so finishing them elsewhere
    // calls no model, and one call per unit is the only right count.
    let start_worker = |name: &str, generate: u32, eval: u32| -> (Container, PathBuf) {
        let marks = tmp.path().join(format!("marks-{name}"));
        std::fs::create_dir_all(&marks).unwrap();
        let mut extra: Vec<String> = Vec::new();
        extra.extend(mount(&certs, "/certs", true));
        extra.extend(mount(&project.src, "/repos", true));
        extra.extend(mount(&hooks, "/hooks", true));
        extra.extend(mount(&marks, "/marks", false));
        let c = net.run(
            name,
            &extra,
            &image,
            &[
                "worker".into(),
                "--coordinator".into(),
                format!("https://coord:{COORD_PORT}"),
                "--name".into(),
                name.into(),
                "--tls-dir".into(),
                "/certs".into(),
                "--cache".into(),
                "/cache".into(),
                "--generate-slots".into(),
                generate.to_string(),
                "--eval-slots".into(),
                eval.to_string(),
                "--scanner".into(),
                "bare".into(),
                "--osemgrep".into(),
                "/hooks/slow-osemgrep".into(),
                "--rules".into(),
                "/rules".into(),
                "--no-docker".into(),
                "--repo-url-template".into(),
                "file:///repos/{repo}".into(),
            ],
        );
        (c, marks)
    };
    let (w1, w1_marks) = start_worker("w1", 0, 2);
    // w2 generates, w3 evaluates. (A worker with free generate slots long-polls for work with
    // the slot counts of the moment it asked: an evaluate slot freed meanwhile waits for the
    // poll to end, which would stretch the partition past the worker's RPC timeout.)
    let (w2, w2_marks) = start_worker("w2", 3, 0);
    let (w3, w3_marks) = start_worker("w3", 0, 2);
    for (w, name) in [(&w1, "w1"), (&w2, "w2"), (&w3, "w3")] {
        w.wait_log(&format!("registered as {name}"), 1, WAIT);
    }

    let mut submitted = submit(&access, &files, true, tmp.path().join("submit.log"));

    // w1 holds two evaluate leases (both slots scanning units) and every generation is
    // committed: cut it off.
    wait_until("w1 scans two units", WAIT, || {
        marked_units(&w1_marks, "start", &units).len() >= 2
    });
    wait_until("every generation committed", WAIT, || {
        phase_done(&ase_client(&access, "status", &[]), "generate") == Some(units.len() as u64)
    });
    // The units w1 is scanning now (a scan it finished is reported at once).
    let held: BTreeSet<String> = marked_units(&w1_marks, "start", &units)
        .difference(&marked_units(&w1_marks, "done", &units))
        .cloned()
        .collect();
    assert!(!held.is_empty(), "w1 holds evaluate leases");
    let before = ase_client(&access, "status", &[]);
    let (_, session_before, completed_before) =
        worker_status(&before, "w1").expect("w1 in ase status");
    net.disconnect(&w1);
    let cut_off = std::time::Instant::now();

    // Its leases expire (the coordinator declares it dead) and w2/w3 take its units.
    wait_until("the coordinator declares w1 dead", WAIT, || {
        worker_status(&ase_client(&access, "status", &[]), "w1").is_some_and(|(alive, ..)| !alive)
    });
    eprintln!("declared dead after {:?}", cut_off.elapsed());
    let taken_over = |kind: &str| {
        let mut marked = marked_units(&w2_marks, kind, &units);
        marked.extend(marked_units(&w3_marks, kind, &units));
        held.is_subset(&marked)
    };
    wait_until("w2/w3 take the units w1 held", WAIT, || taken_over("start"));
    eprintln!("its units re-leased after {:?}", cut_off.elapsed());
    // They finish what they hold and take no more: the rest of the run is left to w1.
    for w in ["w2", "w3"] {
        ase_client(&access, "drain", &["--worker", w]);
    }
    wait_until("w2/w3 finish the units w1 held", WAIT, || {
        taken_over("done")
    });
    eprintln!("its units finished by w2/w3 after {:?}", cut_off.elapsed());
    // w1's own scans of them ended while it was cut off: their results are late.
    wait_until("w1 finishes its scans offline", WAIT, || {
        held.is_subset(&marked_units(&w1_marks, "done", &units))
    });
    let during = ase_client(&access, "status", &[]);
    assert_eq!(
        worker_status(&during, "w1").map(|s| s.2),
        Some(completed_before),
        "w1 completed nothing while cut off: {during}"
    );
    assert!(
        phase_done(&during, "evaluate") < Some(units.len() as u64),
        "units are left for w1 when it comes back: {during}"
    );

    let refused_before = refused_reports(metrics_port);
    net.connect(&w1);
    // The worker's report calls wait in its channel for the connection (up to its RPC
    // timeout, 30 s), so a partition shorter than that has them reach the coordinator first.
    eprintln!("w1 cut off for {:?}", cut_off.elapsed());

    wait_until("w1's late results are refused", WAIT, || {
        refused_reports(metrics_port) >= refused_before + held.len() as f64
    });
    // The coordinator says whose results it refused. (w1's own log may miss the answer: a
    // heartbeat revoking the lease can cancel the unit while its report is on the wire.)
    let coord_log = strip_ansi(&coord.logs());
    let refused_w1 = coord_log
        .lines()
        .filter(|l| l.contains("result refused") && l.contains("worker=w1"))
        .count();
    assert!(
        refused_w1 >= held.len(),
        "the coordinator logs {refused_w1} refused results of w1 (held {held:?}):\n{coord_log}"
    );
    // Back on the network, its heartbeats reach the coordinator again (with the session it
    // had, or a new one when the coordinator asks it to register again).
    wait_until("the coordinator sees w1 alive again", WAIT, || {
        worker_status(&ase_client(&access, "status", &[]), "w1").is_some_and(|(alive, ..)| alive)
    });

    let status = submitted
        .wait_exit(Duration::from_secs(300))
        .unwrap_or_else(|| {
            panic!(
                "run not completed; submit:\n{}\ncoordinator:\n{}\nw1:\n{}",
                submitted.log_text(),
                coord.logs(),
                w1.logs()
            )
        });
    assert!(
        status.success(),
        "ase submit --watch: {}",
        submitted.log_text()
    );

    let after = ase_client(&access, "status", &[]);
    let (_, session_after, completed_after) =
        worker_status(&after, "w1").expect("w1 in ase status");
    eprintln!("w1: session {session_before} before the partition, {session_after} after");
    assert!(
        completed_after > completed_before,
        "w1 completed units after it came back: {after}"
    );
    let w1_later = marked_units(&w1_marks, "done", &units);
    assert!(
        w1_later.difference(&held).count() as u64 >= completed_after - completed_before,
        "w1 scanned new units after it came back: {w1_later:?} (held {held:?})"
    );

    // Every unit exactly once, each generated once, scanned, with the fixed unit's finding gone.
    assert_run_report(
        &access,
        &files,
        &project,
        ROUNDS,
        &model,
        &tmp.path().join("report"),
    );

    for w in [&w2, &w3] {
        assert!(w.running(), "{} still running", w.name);
    }
    let names = net.labelled_containers();
    assert_eq!(
        names.len(),
        4,
        "the coordinator and three workers: {names:?}"
    );
}
