//! The model API key lives only in the coordinator's memory. After the coordinator is killed
//! (-9) and restarted on its data, a run that was given a key shows `waiting_for_key` (no unit
//! fails) until `ase submit` of the same run supplies the key again; the key is in no file of
//! the coordinator's data nor its log.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN). No worker runs: the run stays queued.

use ase_cluster_tests::{
    ase_bin, certs_init, free_loopback_addr, start_coordinator, write_run_files,
    CoordinatorOptions, Project,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-key-after-restart-0123456789";

fn client_args(url: &str, certs: &Path) -> Vec<String> {
    vec![
        "--coordinator".into(),
        url.into(),
        "--tls-dir".into(),
        certs.display().to_string(),
    ]
}

fn submit(url: &str, certs: &Path, files: &ase_cluster_tests::RunFiles, with_key: bool) {
    let mut cmd = Command::new(ase_bin());
    // The project's repos are local to the workers (see `ase_cluster_tests::submit`).
    cmd.args(["submit", "--preflight", "off"])
        .args(client_args(url, certs));
    cmd.arg("--spec").arg(&files.spec);
    cmd.arg("--dataset").arg(&files.dataset);
    cmd.arg("--context").arg(&files.context);
    if with_key {
        cmd.args(["--api-key-env", "ASE_TEST_MODEL_KEY"]);
        cmd.env("ASE_TEST_MODEL_KEY", KEY);
    }
    let out = cmd.output().expect("run ase submit");
    assert!(
        out.status.success(),
        "ase submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ase status` output once it mentions `want` (it is polled: status changes asynchronously).
fn status_with(url: &str, certs: &Path, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(ase_bin())
            .arg("status")
            .args(client_args(url, certs))
            .output()
            .expect("run ase status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "ase status never showed {want:?}; last: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn after_a_restart_a_run_waits_for_its_key_until_it_is_submitted_again() {
    let tmp = tempfile::tempdir().unwrap();
    let project = Project::create(tmp.path(), 2);
    let certs = certs_init(&tmp.path().join("certs"), &["w1"], &[]);
    let files = write_run_files(
        &tmp.path().join("run"),
        &project,
        "http://127.0.0.1:9/v1",
        1,
    );
    let listen = free_loopback_addr();
    let data = tmp.path().join("coordinator-data");
    let opts = CoordinatorOptions::default();
    let url = format!("https://localhost:{}", listen.port());
    let log = tmp.path().join("coordinator-0.log");
    let mut coordinator = start_coordinator(listen, &data, &certs, &opts, log.clone());
    submit(&url, &certs, &files, true);
    let before = status_with(&url, &certs, &files.run_id);
    assert!(!before.contains("waiting_for_key"), "{before}");

    coordinator.kill9();
    let log2 = tmp.path().join("coordinator-1.log");
    let mut coordinator = start_coordinator(listen, &data, &certs, &opts, log2.clone());
    let waiting = status_with(&url, &certs, "waiting_for_key");
    eprintln!("after the restart:\n{waiting}");
    // Submitting without the key does not unblock it.
    submit(&url, &certs, &files, false);
    status_with(&url, &certs, "waiting_for_key");
    submit(&url, &certs, &files, true);
    let after = status_with(&url, &certs, "running");
    assert!(!after.contains("waiting_for_key"), "{after}");
    coordinator.kill9();

    let mut written = files_under(&data);
    written.extend([log, log2]);
    for path in written {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is written in {}",
            path.display()
        );
    }
}
