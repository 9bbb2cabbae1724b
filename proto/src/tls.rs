//! TLS material (cluster CA, own certificate and key) and the tonic TLS configurations built
//! from it.
//!
//! Both sides authenticate: the coordinator requires a client certificate signed by the cluster
//! CA, and workers and clients verify the coordinator's certificate against the same CA (never
//! the system roots). The crypto provider is ring, and only ring: two rustls providers in one
//! process make rustls panic at the first handshake, so binaries call
//! [`install_crypto_provider`] at the start of `main`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of one PEM file; cluster material is a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} file {path} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge { what: &'static str, path: PathBuf },
    #[error("the {what} ({origin}) holds no valid PEM {expected}: {reason}")]
    BadPem {
        what: &'static str,
        origin: String,
        expected: &'static str,
        reason: String,
    },
}

/// Installs ring as the process-wide rustls crypto provider. Idempotent; call it at the start
/// of every binary's `main`, before any TLS connection is made.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed; with ring the only provider in the
        // dependency graph, that one is ring as well.
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a rustls crypto provider was already installed");
        }
    });
}

/// Where a node's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The layout `ase certs init` writes: `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let ca = read_pem_file("CA certificate", &self.ca)?;
        let cert = read_pem_file("certificate", &self.cert)?;
        let key = read_pem_file("private key", &self.key)?;
        TlsMaterial::from_pem_named(
            ca,
            cert,
            key,
            [
                self.ca.display().to_string(),
                self.cert.display().to_string(),
                self.key.display().to_string(),
            ],
        )
    }
}

fn read_pem_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// A node's TLS material, checked to parse: the cluster CA certificate, its own certificate
/// chain and its private key.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsMaterial")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Material from PEM bytes held in memory.
    pub fn from_pem(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        Self::from_pem_named(
            ca_pem.into(),
            cert_pem.into(),
            key_pem.into(),
            ["memory".into(), "memory".into(), "memory".into()],
        )
    }

    fn from_pem_named(
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        origins: [String; 3],
    ) -> Result<Self, TlsError> {
        let [ca_origin, cert_origin, key_origin] = origins;
        first_certificate(&ca_pem, "CA certificate", ca_origin)?;
        let cert_der = first_certificate(&cert_pem, "certificate", cert_origin)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
            what: "private key",
            origin: key_origin,
            expected: "private key",
            reason: e.to_string(),
        })?;
        Ok(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            cert_der,
        })
    }

    /// The DER of this node's own (end-entity) certificate.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The coordinator's server configuration: presents its certificate and REQUIRES a client
    /// certificate signed by the cluster CA (tonic's verifier makes client auth mandatory once a
    /// client CA root is set).
    pub fn server_config(&self) -> ServerTlsConfig {
        self.server_config_with(false)
    }

    /// [`Self::server_config`], or with `anonymous_clients` a handshake without a client
    /// certificate is let through too (for the token-authenticated `JoinApi`; every other
    /// service refuses such a peer in its role check, see [`crate::identity::RequireRole`]).
    /// A certificate that is presented must still be one of the cluster CA.
    pub fn server_config_with(&self, anonymous_clients: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(anonymous_clients)
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// A worker's or client's configuration: trusts the cluster CA only, presents its own
    /// certificate, and expects the coordinator's certificate to name `domain` in its SANs.
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(domain)
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }
}

fn first_certificate(
    pem: &[u8],
    what: &'static str,
    origin: String,
) -> Result<CertificateDer<'static>, TlsError> {
    let bad = |reason: String| TlsError::BadPem {
        what,
        origin: origin.clone(),
        expected: "certificate",
        reason,
    };
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(bad(e.to_string())),
        None => Err(bad("no CERTIFICATE section".into())),
    }
}
