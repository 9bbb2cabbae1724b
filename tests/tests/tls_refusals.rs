//! Mutual TLS between real processes: a worker whose certificate comes from another CA never
//! registers and the coordinator's log says why; a plaintext worker is refused too.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN).

use ase_cluster_tests::{
    certs_init, free_loopback_addr, spawn_worker, start_coordinator, CoordinatorAccess,
    CoordinatorOptions, Proc, Project, WorkerOptions,
};
use std::time::Duration;

fn worker_opts(project: &Project, name: &str) -> WorkerOptions {
    WorkerOptions {
        name: name.into(),
        generate_slots: 1,
        eval_slots: 1,
        // Never reached: the worker does not get as far as a unit.
        osemgrep: "/nonexistent/osemgrep".into(),
        repo_url_template: project.url_template(),
    }
}

#[test]
fn a_worker_of_another_ca_and_a_plaintext_worker_never_register() {
    let tmp = tempfile::tempdir().unwrap();
    let project = Project::create(tmp.path(), 1);
    let ours = certs_init(&tmp.path().join("ours"), &["w1"], &[]);
    let theirs = certs_init(&tmp.path().join("theirs"), &["w1"], &[]);
    let listen = free_loopback_addr();
    // TLS handshake refusals are logged at debug level by the server's transport; this is the
    // only test in its process, so the variable reaches exactly the processes started here.
    std::env::set_var("ASE_LOG", "debug");
    let mut coordinator = start_coordinator(
        listen,
        &tmp.path().join("data"),
        &ours,
        &CoordinatorOptions::default(),
        tmp.path().join("coordinator.log"),
    );

    let foreign = CoordinatorAccess {
        url: format!("https://localhost:{}", listen.port()),
        tls_dir: theirs,
    };
    let mut stranger: Proc = spawn_worker(
        &foreign,
        &tmp.path().join("cache-stranger"),
        &worker_opts(&project, "w1"),
        tmp.path().join("stranger.log"),
    );
    // The plaintext worker: http:// to the TLS port.
    let plain_log = tmp.path().join("plain.log");
    let mut plain = Proc::spawn(
        "plaintext worker",
        &ase_cluster_tests::ase_bin(),
        &[
            "worker".into(),
            "--coordinator".into(),
            format!("http://127.0.0.1:{}", listen.port()),
            "--name".into(),
            "w1".into(),
            "--plaintext".into(),
            "--cache".into(),
            tmp.path().join("cache-plain").display().to_string(),
            "--osemgrep".into(),
            "/nonexistent/osemgrep".into(),
            "--no-docker".into(),
        ],
        &[],
        plain_log,
    );

    // Long enough for several connection attempts with back-off.
    std::thread::sleep(Duration::from_secs(6));
    let stranger_log = stranger.log_text();
    let plain_text = plain.log_text();
    stranger.kill9();
    plain.kill9();
    coordinator.terminate(Duration::from_secs(5));
    let coord_log = coordinator.log_text();

    assert!(
        !stranger_log.contains("registered as"),
        "a foreign certificate registered:\n{stranger_log}"
    );
    assert!(
        !plain_text.contains("registered as"),
        "a plaintext worker registered:\n{plain_text}"
    );
    assert!(!coord_log.contains("registered"), "{coord_log}");
    // The coordinator says why it refused the foreign client (the TLS layer names the issuer
    // problem), and the stranger says it could not connect.
    let lower = coord_log.to_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("issuer") || lower.contains("handshake"),
        "the coordinator's log names the refusal:\n{coord_log}"
    );
    // Each is told what is wrong, not only "transport error".
    assert!(
        plain_text.contains("speaks TLS"),
        "the plaintext worker is told the coordinator speaks TLS:\n{plain_text}"
    );
    assert!(
        stranger_log.contains("not signed by the CA"),
        "the stranger is told the coordinator is of another CA:\n{stranger_log}"
    );
    let s = stranger_log.to_lowercase();
    assert!(
        s.contains("tls")
            || s.contains("certificate")
            || s.contains("connect")
            || s.contains("transport"),
        "the worker's log names the failure:\n{stranger_log}"
    );
}
