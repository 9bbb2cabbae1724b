//! Joining the cluster with a token instead of a certificate made in advance (as Swarm, Nomad
//! and the kubelet's TLS bootstrap do).
//!
//! - The token: `asejt.ID.SECRET`, ID 16 hex digits (public, names the token in `ase token
//!   list` and `revoke`), SECRET 64 hex digits (256 random bits). The coordinator keeps only
//!   the SHA-256 of SECRET.
//! - The worker makes its own key pair and sends a PKCS#10 request ([`make_csr`]); its private
//!   key never leaves it. The coordinator ([`JoinSigner`]) signs the request's public key into
//!   a `worker:NAME` certificate of its own choosing: the request's subject, names and
//!   extensions are ignored, so a token can never yield a client, coordinator or CA
//!   certificate, nor a name the coordinator did not grant.
//! - The join call itself runs over TLS that authenticates the server by the cluster CA the
//!   worker was given; the worker presents no certificate (it has none yet).

use crate::certs::{check_name, CertError};
use crate::endpoint::{EndpointError, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use crate::identity::PeerRole;
use crate::tls::TLS_HANDSHAKE_TIMEOUT;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Uri};

const TOKEN_PREFIX: &str = "asejt";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("not a join token: expected asejt.ID.SECRET as `ase token create` prints it")]
    BadToken,
    #[error("no randomness from the system")]
    Random,
    #[error("the certificate request is not valid: {0}")]
    BadCsr(String),
    #[error("the CA certificate or key cannot be used to sign: {0}")]
    BadCa(String),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("signing the certificate: {0}")]
    Sign(String),
}

/// A join token as handed to a worker.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn random_hex(n: usize) -> Result<String, JoinError> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| JoinError::Random)?;
    Ok(hex::encode(bytes))
}

impl JoinToken {
    /// A fresh token from the system's secure random source.
    pub fn generate() -> Result<Self, JoinError> {
        Ok(JoinToken {
            id: random_hex(ID_BYTES)?,
            secret: random_hex(SECRET_BYTES)?,
        })
    }

    /// Reads `asejt.ID.SECRET` (surrounding white space, e.g. a secret file's newline, is
    /// ignored).
    pub fn parse(s: &str) -> Result<Self, JoinError> {
        let mut parts = s.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoinError::BadToken);
        };
        let hex_of =
            |s: &str, n: usize| s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(id, ID_BYTES) || !hex_of(secret, SECRET_BYTES) {
            return Err(JoinError::BadToken);
        }
        Ok(JoinToken {
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }

    /// The SHA-256 of the secret, hex: what the coordinator stores and compares.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// The whole token, secret included: print it once, to the operator.
    pub fn reveal(&self) -> String {
        format!("{TOKEN_PREFIX}.{}.{}", self.id, self.secret)
    }
}

/// A new key pair and a certificate request for it: (private key PEM, request PEM).
pub fn make_csr() -> Result<(String, String), JoinError> {
    let key = KeyPair::generate().map_err(|e| JoinError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "ase-cluster join request");
    let csr = params
        .serialize_request(&key)
        .map_err(|e| JoinError::Sign(e.to_string()))?;
    let pem = csr.pem().map_err(|e| JoinError::Sign(e.to_string()))?;
    Ok((key.serialize_pem(), pem))
}

/// The coordinator's side: signs workers' requests with the cluster CA.
pub struct JoinSigner {
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate the signer issued.
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub cert_pem: String,
    pub not_after: SystemTime,
}

impl JoinSigner {
    /// The CA of `ase certs init` (`ca.pem`, `ca.key`).
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Self, JoinError> {
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| JoinError::BadCa(e.to_string()))?;
        // A key that is not the certificate's would sign certificates nobody accepts.
        let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|e| JoinError::BadCa(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| JoinError::BadCa(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(JoinError::BadCa(
                "the key is not the CA certificate's key".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key)
            .map_err(|e| JoinError::BadCa(e.to_string()))?;
        Ok(JoinSigner { issuer })
    }

    /// Checks that `csr_pem` is a request signed by the key it names (before a name is
    /// granted for it).
    pub fn check_csr(csr_pem: &str) -> Result<(), JoinError> {
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| JoinError::BadCsr(e.to_string()))
    }

    /// A `worker:NAME` client certificate for the request's public key, valid `validity`
    /// from one minute ago (clock skew). The request's signature is checked (the joiner holds
    /// the key); everything else it asks for is ignored.
    pub fn sign_worker(
        &self,
        csr_pem: &str,
        name: &str,
        validity: Duration,
    ) -> Result<SignedCert, JoinError> {
        check_name(PeerRole::Worker, name)?;
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| JoinError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ase-cluster");
        dn.push(DnType::CommonName, PeerRole::Worker.common_name(name));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        let not_after = now + validity;
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = not_after;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| JoinError::Sign(e.to_string()))?;
        let not_after = UNIX_EPOCH + Duration::from_secs(not_after.unix_timestamp().max(0) as u64);
        Ok(SignedCert {
            cert_pem: cert.pem(),
            not_after,
        })
    }
}

/// The endpoint a joining worker calls: `https://` only, the server authenticated by the
/// cluster CA `ca_pem` and expected to name `tls_domain` (default: the URI's host); no client
/// certificate.
pub fn join_endpoint(
    uri: &str,
    ca_pem: &[u8],
    tls_domain: Option<&str>,
) -> Result<Endpoint, EndpointError> {
    let bad = |reason: String| EndpointError::BadUri {
        uri: uri.to_string(),
        reason,
    };
    let parsed = uri.parse::<Uri>().map_err(|e| bad(e.to_string()))?;
    if parsed.scheme_str() != Some("https") {
        return Err(EndpointError::HttpWithoutPlaintext {
            uri: uri.to_string(),
        });
    }
    let host = parsed
        .host()
        .ok_or_else(|| bad("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(tls_domain.unwrap_or(&host))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    Endpoint::from(parsed)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .tls_config(tls)
        .map_err(|source| EndpointError::Tls {
            target: uri.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::ClusterCa;
    use crate::identity::PeerIdentity;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let t = JoinToken::generate().unwrap();
        let back = JoinToken::parse(&format!("  {}\n", t.reveal())).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.secret_hash(), t.secret_hash());
        assert_ne!(JoinToken::generate().unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        for bad in [
            "",
            "asejt",
            "asejt.00.11",
            &t.reveal().replace("asejt", "xyz"),
            &format!("{}.00", t.reveal()),
            &t.reveal()[..t.reveal().len() - 1],
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_signed_request_is_a_worker_certificate_of_the_granted_name_only() {
        let ca = ClusterCa::generate("t", 30).unwrap();
        let signer = JoinSigner::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let (key_pem, csr_pem) = make_csr().unwrap();
        let signed = signer
            .sign_worker(&csr_pem, "worker-7", Duration::from_secs(3600))
            .unwrap();
        let der = CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
        let id = PeerIdentity::from_der(&der).unwrap();
        assert_eq!((id.role, id.name.as_str()), (PeerRole::Worker, "worker-7"));
        // The issued certificate and the worker's key form usable TLS material.
        crate::tls::TlsMaterial::from_pem(ca.cert_pem(), signed.cert_pem.clone(), key_pem).unwrap();
        let left = signed.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3000));
        // A name outside the rules, and a request that is no request, are refused.
        assert!(signer
            .sign_worker(&csr_pem, "a:b", Duration::from_secs(60))
            .is_err());
        assert!(matches!(
            signer.sign_worker("not a csr", "w", Duration::from_secs(60)),
            Err(JoinError::BadCsr(_))
        ));
        // The key of another CA does not sign for this one.
        let other = ClusterCa::generate("o", 30).unwrap();
        assert!(matches!(
            JoinSigner::from_pem(ca.cert_pem(), other.key_pem()),
            Err(JoinError::BadCa(_))
        ));
    }
}
