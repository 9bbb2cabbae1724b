//! Who the peer is, from the certificate it presented in the mutual TLS handshake.
//!
//! Convention (see [`crate::certs`]): the subject common name is `ROLE:NAME`, ROLE one of
//! `coordinator`, `worker`, `client`. The coordinator wraps `WorkerApi` in
//! `RequireRole::new(PeerRole::Worker, ..)` and `ClientApi` in
//! `RequireRole::new(PeerRole::Client, ..)`; a handler reads the checked identity from the
//! request's extensions (`req.extensions().get::<PeerIdentity>()`) and binds a worker session to
//! it with [`PeerIdentity::check_worker_name`].

use std::net::IpAddr;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The kind of node a certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    Coordinator,
    Worker,
    Client,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Coordinator => "coordinator",
            PeerRole::Worker => "worker",
            PeerRole::Client => "client",
        }
    }

    /// The common name of a certificate of this role: `ROLE:NAME`.
    pub fn common_name(self, name: &str) -> String {
        format!("{}:{name}", self.as_str())
    }

    fn from_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            "coordinator" => Some(PeerRole::Coordinator),
            "worker" => Some(PeerRole::Worker),
            "client" => Some(PeerRole::Client),
            _ => None,
        }
    }
}

impl std::fmt::Display for PeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's identity as its certificate states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: PeerRole,
    /// NAME of the `ROLE:NAME` common name.
    pub name: String,
    pub common_name: String,
    /// DNS names of the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses of the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the certificate is not valid DER X.509: {0}")]
    Parse(String),
    #[error("the certificate has no subject common name")]
    NoCommonName,
    #[error("the common name {0:?} is not ROLE:NAME with ROLE coordinator, worker or client")]
    NoRole(String),
    #[error("the common name {common_name:?} has an invalid name: {reason}")]
    BadName { common_name: String, reason: String },
}

/// Longest NAME of a `ROLE:NAME` common name.
const MAX_NAME_LEN: usize = 64;

/// What is wrong with a peer's NAME, if anything: the convention's rules, here beside the roles
/// so that reading an identity needs nothing of the certificate module.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with(['.', '-']) {
        return Some("must not start with '.' or '-'");
    }
    None
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(IdentityError::NoCommonName)?
            .to_string();
        let (prefix, name) = common_name
            .split_once(':')
            .ok_or_else(|| IdentityError::NoRole(common_name.clone()))?;
        let role = PeerRole::from_prefix(prefix)
            .ok_or_else(|| IdentityError::NoRole(common_name.clone()))?;
        if let Some(reason) = name_problem(name) {
            return Err(IdentityError::BadName {
                common_name: common_name.clone(),
                reason: format!("invalid {role} name {name:?}: {reason}"),
            });
        }
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for general_name in &san.value.general_names {
                match general_name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(PeerIdentity {
            role,
            name: name.to_string(),
            common_name: common_name.clone(),
            dns_names,
            ip_addresses,
        })
    }

    /// Binds a worker session to its certificate: the worker name claimed in `Register` must
    /// be the NAME of a `worker:` certificate.
    pub fn check_worker_name(&self, claimed: &str) -> Result<(), Status> {
        if self.role != PeerRole::Worker {
            return Err(Status::permission_denied(format!(
                "certificate {:?} is not a worker certificate",
                self.common_name
            )));
        }
        if self.name != claimed {
            return Err(Status::permission_denied(format!(
                "worker name {claimed:?} does not match the certificate {:?}",
                self.common_name
            )));
        }
        Ok(())
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// The identity of the peer of a server-side request: its end-entity certificate's. `None` on
/// a plaintext connection, without a client certificate, or when the certificate does not
/// follow the `ROLE:NAME` convention.
pub fn peer_identity<T>(req: &Request<T>) -> Option<PeerIdentity> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    match PeerIdentity::from_der(leaf) {
        Ok(identity) => Some(identity),
        Err(e) => {
            tracing::warn!(error = %e, "peer certificate without a usable identity");
            None
        }
    }
}

/// Interceptor admitting only peers of one role; the checked [`PeerIdentity`] is put into the
/// request's extensions for the handler.
#[derive(Debug, Clone)]
pub struct RequireRole {
    role: PeerRole,
    allow_anonymous: bool,
}

impl RequireRole {
    /// `plaintext` is the server's explicit loopback-only plaintext mode, where no peer has a
    /// certificate: requests without one are then let through, without an identity.
    pub fn new(role: PeerRole, plaintext: bool) -> Self {
        RequireRole {
            role,
            allow_anonymous: plaintext,
        }
    }
}

impl Interceptor for RequireRole {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let has_certs = req.peer_certs().is_some_and(|c| !c.is_empty());
        if !has_certs && self.allow_anonymous {
            return Ok(req);
        }
        let identity = peer_identity(&req).ok_or_else(|| {
            Status::unauthenticated(format!(
                "a {} certificate of the cluster is required",
                self.role
            ))
        })?;
        if identity.role != self.role {
            return Err(Status::permission_denied(format!(
                "certificate {:?} is a {} certificate; this service takes {} certificates",
                identity.common_name, identity.role, self.role
            )));
        }
        req.extensions_mut().insert(identity);
        Ok(req)
    }
}
