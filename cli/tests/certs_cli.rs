//! `ase certs init` through the built binary: the files it writes load into the TLS configs
//! and carry a working mutual TLS handshake with the roles they claim; keys are 0600;
//! nothing is overwritten without `--force`.

use ase_proto::endpoint::{connect, server_builder, TransportSecurity};
use ase_proto::identity::{PeerIdentity, PeerRole, RequireRole};
use ase_proto::tls::{install_crypto_provider, TlsFiles};
use ase_proto::{tonic, tonic_health};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn ase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ase"))
        .args(args)
        .output()
        .expect("run ase")
}

fn init(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["certs", "init", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ase(&args)
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_the_cluster_with_private_keys_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("certs");
    let run = init(
        &out,
        &[
            "--coordinator-name",
            "coord.lan",
            "--workers",
            "12",
            "--client",
            "ops",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let names = file_names(&out);
    assert_eq!(names.len(), 2 + 2 + 12 * 2 + 2, "{names:?}");
    for expected in [
        "ca.pem",
        "ca.key",
        "coordinator.pem",
        "coordinator.key",
        "worker-w01.pem",
        "worker-w12.key",
        "client-ops.pem",
        "client-ops.key",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    for name in &names {
        let expected = if name.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&out.join(name)), expected, "{name}");
    }
    assert_eq!(mode(&out), 0o700);
    // stdout lists every file written.
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).lines().count(),
        names.len()
    );

    let coordinator = TlsFiles::in_dir(&out, "coordinator").load().unwrap();
    let identity = PeerIdentity::from_der(coordinator.certificate_der()).unwrap();
    assert_eq!(identity.role, PeerRole::Coordinator);
    assert_eq!(identity.dns_names, vec!["coord.lan", "localhost"]);
    let worker = TlsFiles::in_dir(&out, "worker-w07").load().unwrap();
    let identity = PeerIdentity::from_der(worker.certificate_der()).unwrap();
    assert_eq!(
        (identity.role, identity.name.as_str()),
        (PeerRole::Worker, "w07")
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    assert!(init(out, &["--worker", "a", "--worker", "b"])
        .status
        .success());
    let before = std::fs::read(out.join("ca.key")).unwrap();

    let again = init(out, &["--worker", "a"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("ca.pem"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("ca.key")).unwrap(), before);

    // A loosened key gets its 0600 back when --force rewrites it.
    std::fs::set_permissions(out.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = init(out, &["--worker", "a", "--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_ne!(std::fs::read(out.join("ca.key")).unwrap(), before);
    assert_eq!(mode(&out.join("ca.key")), 0o600);
    // No temporary files are left behind.
    assert!(file_names(out).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn init_rejects_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    for extra in [
        &["--worker", "a:b"][..],
        &["--worker", "a", "--worker", "a"],
        &["--workers", "0"],
        &["--client", "x y"],
        &["--coordinator-name", "bad_host!"],
        &["--workers", "2", "--worker", "a"],
    ] {
        let out = tmp.path().join("x");
        let run = init(&out, extra);
        assert!(!run.status.success(), "{extra:?} accepted");
        assert!(!out.join("ca.key").exists(), "{extra:?} wrote files");
    }
}

#[tokio::test]
async fn generated_files_carry_a_mutual_tls_handshake_with_roles() {
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let run = init(out, &["--worker", "w1", "--client", "admin"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let coordinator =
        TransportSecurity::MutualTls(TlsFiles::in_dir(out, "coordinator").load().unwrap());
    // The health service behind the worker role check stands in for WorkerApi here.
    let router = server_builder(addr, &coordinator).unwrap().add_service(
        tonic_health::pb::health_server::HealthServer::with_interceptor(
            health_service(),
            RequireRole::new(PeerRole::Worker, false),
        ),
    );
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));

    let uri = format!("https://localhost:{}", addr.port());
    let worker = TransportSecurity::MutualTls(TlsFiles::in_dir(out, "worker-w1").load().unwrap());
    let channel = connect(&uri, &worker, None).await.unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    let client =
        TransportSecurity::MutualTls(TlsFiles::in_dir(out, "client-admin").load().unwrap());
    let channel = connect(&uri, &client, None).await.unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

fn health_service() -> tonic_health::server::HealthService {
    tonic_health::server::HealthService::from_health_reporter(
        tonic_health::server::HealthReporter::new(),
    )
}
