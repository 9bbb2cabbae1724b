//! Certificate contents (roles, SANs, validity, key usages), identity parsing, TLS material
//! loading, and the single crypto provider.

use ase_proto::certs::{ClusterCa, DEFAULT_VALIDITY_DAYS};
use ase_proto::identity::{IdentityError, PeerIdentity, PeerRole};
use ase_proto::tls::{install_crypto_provider, TlsError, TlsFiles, TlsMaterial};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::IpAddr;
use x509_parser::prelude::{FromDer, X509Certificate};

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn the_coordinator_certificate_names_the_hosts_plus_localhost() {
    let ca = ClusterCa::generate("t", DEFAULT_VALIDITY_DAYS).unwrap();
    let cert = ca
        .issue_coordinator(&[
            "coord.example.org".into(),
            "10.0.0.5".into(),
            "localhost".into(),
        ])
        .unwrap();
    let identity = PeerIdentity::from_der(&der(&cert.cert_pem)).unwrap();
    assert_eq!(identity.role, PeerRole::Coordinator);
    assert_eq!(identity.name, "coord.example.org");
    assert_eq!(identity.dns_names, vec!["coord.example.org", "localhost"]);
    assert_eq!(
        identity.ip_addresses,
        vec![
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "127.0.0.1".parse().unwrap()
        ]
    );

    let default = ca.issue_coordinator(&[]).unwrap();
    let identity = PeerIdentity::from_der(&der(&default.cert_pem)).unwrap();
    assert_eq!(identity.common_name, "coordinator:coordinator");
    assert_eq!(identity.dns_names, vec!["localhost"]);
    assert_eq!(
        identity.ip_addresses,
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );

    assert!(ca.issue_coordinator(&["bad name".into()]).is_err());
}

#[test]
fn roles_names_validity_and_usages() {
    let ca = ClusterCa::generate("t", DEFAULT_VALIDITY_DAYS).unwrap();
    let ca_der = der(ca.cert_pem());
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca_cert.is_ca());
    let days = (ca_cert.validity().not_after.timestamp()
        - ca_cert.validity().not_before.timestamp())
        / 86_400;
    // 5 years plus the day of clock-skew margin before issue.
    assert_eq!(days, i64::from(DEFAULT_VALIDITY_DAYS) + 1);

    let worker = ca.issue_worker("gpu-01").unwrap();
    let worker_der = der(&worker.cert_pem);
    let identity = PeerIdentity::from_der(&worker_der).unwrap();
    assert_eq!(
        (identity.role, identity.name.as_str()),
        (PeerRole::Worker, "gpu-01")
    );
    assert!(identity.check_worker_name("gpu-01").is_ok());
    assert!(identity.check_worker_name("gpu-02").is_err());
    let (_, cert) = X509Certificate::from_der(&worker_der).unwrap();
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(cert.issuer(), ca_cert.subject());

    let client = ca.issue_client("admin").unwrap();
    let identity = PeerIdentity::from_der(&der(&client.cert_pem)).unwrap();
    assert_eq!(
        (identity.role, identity.name.as_str()),
        (PeerRole::Client, "admin")
    );
    assert!(identity.check_worker_name("admin").is_err());

    assert!(ca.issue_worker("w:1").is_err());
    assert!(ca.issue_client("").is_err());
}

#[test]
fn a_certificate_without_the_role_convention_has_no_identity() {
    let mut params = rcgen::CertificateParams::new(vec!["x.test".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "plain-name");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(
        PeerIdentity::from_der(cert.der()),
        Err(IdentityError::NoRole("plain-name".into()))
    );
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin:root");
    let cert = params.self_signed(&key).unwrap();
    assert!(matches!(
        PeerIdentity::from_der(cert.der()),
        Err(IdentityError::NoRole(_))
    ));
    assert!(matches!(
        PeerIdentity::from_der(b"not der"),
        Err(IdentityError::Parse(_))
    ));
}

#[test]
fn tls_files_load_and_errors_name_the_file() {
    let ca = ClusterCa::generate("t", DEFAULT_VALIDITY_DAYS).unwrap();
    let worker = ca.issue_worker("w1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("worker-w1.pem"), &worker.cert_pem).unwrap();
    std::fs::write(dir.path().join("worker-w1.key"), &worker.key_pem).unwrap();
    let files = TlsFiles::in_dir(dir.path(), "worker-w1");
    let material = files.load().unwrap();
    assert_eq!(
        PeerIdentity::from_der(material.certificate_der())
            .unwrap()
            .name,
        "w1"
    );
    // The key never shows in debug output.
    assert!(!format!("{material:?}").contains("PRIVATE KEY"));

    let missing = TlsFiles::in_dir(dir.path(), "worker-w2")
        .load()
        .unwrap_err();
    assert!(matches!(missing, TlsError::Read { .. }));
    assert!(missing.to_string().contains("worker-w2.pem"), "{missing}");

    std::fs::write(dir.path().join("worker-w1.key"), "garbage").unwrap();
    let bad = files.load().unwrap_err();
    assert!(
        matches!(
            bad,
            TlsError::BadPem {
                what: "private key",
                ..
            }
        ),
        "{bad}"
    );
    assert!(bad.to_string().contains("worker-w1.key"), "{bad}");

    // A key where the certificate should be.
    assert!(TlsMaterial::from_pem(ca.cert_pem(), worker.key_pem.clone(), worker.key_pem).is_err());

    std::fs::write(dir.path().join("ca.pem"), vec![b'A'; 2 << 20]).unwrap();
    assert!(matches!(files.load(), Err(TlsError::TooLarge { .. })));
}

#[test]
fn ring_is_the_installed_crypto_provider_and_installing_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
    // ring's key provider debug-prints as `Ring` (aws-lc-rs's as `AwsLcRs`).
    assert_eq!(format!("{:?}", provider.key_provider), "Ring");
    assert_eq!(
        format!(
            "{:?}",
            rustls::crypto::ring::default_provider().key_provider
        ),
        "Ring"
    );
}

#[test]
fn aws_lc_is_nowhere_in_the_dependency_graph() {
    // Two rustls providers in one graph make rustls panic at the first handshake.
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let lock = std::fs::read_to_string(&lock).unwrap();
    for package in ["aws-lc-rs", "aws-lc-sys", "aws-lc-fips-sys"] {
        assert!(
            !lock.contains(&format!("name = \"{package}\"")),
            "{package} is in Cargo.lock"
        );
    }
}
