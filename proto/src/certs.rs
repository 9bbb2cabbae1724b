//! Certificates of a cluster: one CA, one coordinator certificate, and worker and client
//! certificates, all ECDSA P-256.
//!
//! Role convention (checked by [`crate::identity`]): the subject common name is
//! `ROLE:NAME` with ROLE one of `coordinator`, `worker`, `client`, and NAME a short operator
//! name (`[A-Za-z0-9._-]`, at most 64 characters). The coordinator refuses a `client:`
//! certificate on `WorkerApi` and a `worker:` certificate on `ClientApi`, and binds a worker's
//! session to the NAME of its certificate. Worker and client certificates carry only the
//! `clientAuth` extended key usage, the coordinator's only `serverAuth`, so no leaf can stand
//! in for another kind of node in the TLS layer either.
//!
//! Validity and rotation: the CA and the leaves are valid [`DEFAULT_VALIDITY_DAYS`] (5 years)
//! from one day before issue (clock skew). Nothing renews them automatically. To rotate,
//! generate a new set (`ase certs init --out NEWDIR`), install it on every node and restart the
//! coordinator, then the workers and clients; a node holding the old set is refused once the
//! coordinator runs with the new CA. Rotate before the CA expires, and at once if `ca.key`
//! leaked: whoever holds it can mint worker and client certificates.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

use crate::identity::{name_problem, PeerRole};

/// Validity of the CA and of the leaves it issues.
pub const DEFAULT_VALIDITY_DAYS: u32 = 5 * 365 + 1;

/// Names every coordinator certificate carries besides the operator's, so that a coordinator
/// and its clients on one machine work without extra flags.
pub const DEFAULT_COORDINATOR_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

const ORGANIZATION: &str = "ase-cluster";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid {role} name {name:?}: {reason}")]
    InvalidName {
        role: PeerRole,
        name: String,
        reason: &'static str,
    },
    #[error("invalid coordinator host name {name:?}: {reason}")]
    InvalidHost { name: String, reason: &'static str },
    #[error("validity of {days} days is out of range (1..=36500)")]
    InvalidValidity { days: u32 },
    #[error("cannot create the {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The cluster's certificate authority, held in memory while issuing.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    validity_days: u32,
}

impl ClusterCa {
    /// A new self-signed CA named `ase-cluster CA: LABEL`, valid `validity_days`; the leaves it
    /// issues have the same validity.
    pub fn generate(label: &str, validity_days: u32) -> Result<Self, CertError> {
        check_validity(validity_days)?;
        let what = || "cluster CA".to_string();
        let key = KeyPair::generate().map_err(|source| CertError::Generate {
            what: what(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("{ORGANIZATION} CA: {label}"));
        // pathlen 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity_days);
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertError::Generate {
                what: what(),
                source,
            })?;
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            validity_days,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key: keep it offline; every node only needs `ca.pem`.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The coordinator's server certificate. `hosts` are DNS names or IP addresses clients use
    /// to reach it; [`DEFAULT_COORDINATOR_SANS`] are always added. Its common name is
    /// `coordinator:NAME` with NAME the first host (`coordinator` when none is given).
    pub fn issue_coordinator(&self, hosts: &[String]) -> Result<IssuedCert, CertError> {
        let mut sans: Vec<SanType> = Vec::new();
        let mut push = |san: SanType| {
            if !sans.contains(&san) {
                sans.push(san);
            }
        };
        for host in hosts
            .iter()
            .map(String::as_str)
            .chain(DEFAULT_COORDINATOR_SANS)
        {
            push(host_san(host)?);
        }
        let name = match hosts.first() {
            Some(h) if check_name(PeerRole::Coordinator, h).is_ok() => h.as_str(),
            _ => "coordinator",
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&PeerRole::Coordinator.common_name(name));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params, format!("coordinator certificate {name}"))
    }

    /// A worker's client certificate, common name `worker:NAME`.
    pub fn issue_worker(&self, name: &str) -> Result<IssuedCert, CertError> {
        self.issue_client_role(PeerRole::Worker, name)
    }

    /// A submitting client's certificate, common name `client:NAME`.
    pub fn issue_client(&self, name: &str) -> Result<IssuedCert, CertError> {
        self.issue_client_role(PeerRole::Client, name)
    }

    fn issue_client_role(&self, role: PeerRole, name: &str) -> Result<IssuedCert, CertError> {
        check_name(role, name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&role.common_name(name));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params, format!("{role} certificate {name}"))
    }

    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        what: String,
    ) -> Result<IssuedCert, CertError> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, self.validity_days);
        let key = KeyPair::generate().map_err(|source| CertError::Generate {
            what: what.clone(),
            source,
        })?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CertError::Generate { what, source })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Checks a worker, client or coordinator name for the `ROLE:NAME` common name (the rules are
/// [`crate::identity::name_problem`]'s).
pub fn check_name(role: PeerRole, name: &str) -> Result<(), CertError> {
    match name_problem(name) {
        Some(reason) => Err(CertError::InvalidName {
            role,
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn host_san(host: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = |reason| CertError::InvalidHost {
        name: host.to_string(),
        reason,
    };
    if host.is_empty() || host.len() > 253 {
        return Err(invalid("a DNS name has 1 to 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each DNS label has 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(invalid(
                "DNS labels are letters, digits and inner '-' (or give an IP address)",
            ));
        }
    }
    let dns = host
        .to_ascii_lowercase()
        .try_into()
        .map_err(|_| invalid("not an IA5 string"))?;
    Ok(SanType::DnsName(dns))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn check_validity(days: u32) -> Result<(), CertError> {
    if days == 0 || days > 36_500 {
        return Err(CertError::InvalidValidity { days });
    }
    Ok(())
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(i64::from(days));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name(PeerRole::Worker, "worker-01.rack_a").is_ok());
        for bad in ["", "-x", ".x", "a b", "a:b", "ü", &"x".repeat(65)] {
            assert!(check_name(PeerRole::Worker, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_dns_names_or_ips() {
        assert!(matches!(host_san("10.0.0.7"), Ok(SanType::IpAddress(_))));
        assert!(matches!(host_san("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(
            host_san("coord.example.org"),
            Ok(SanType::DnsName(_))
        ));
        for bad in ["", "a..b", "-a.b", "a_b", "a b", "a/b"] {
            assert!(host_san(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validity_bounds() {
        assert!(ClusterCa::generate("t", 0).is_err());
        assert!(ClusterCa::generate("t", 36_501).is_err());
    }
}
