//! Where and how gRPC connections are made: the coordinator's bind rules and server builder,
//! and the workers' and clients' channels.
//!
//! Plaintext is for development on one machine only: it must be chosen explicitly, and then
//! the server binds loopback only and the client talks to a loopback host only. In TLS mode the
//! client refuses `http://` URIs, so a typo cannot silently disable TLS.

use crate::tls::TlsMaterial;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Server, Uri};

/// HTTP/2 ping interval, both sides: keeps NAT and load-balancer state alive and detects dead
/// peers well within a lease's lifetime.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect timeout of clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection is secured.
#[derive(Debug, Clone)]
pub enum TransportSecurity {
    /// Mutual TLS with the cluster CA; the normal mode.
    MutualTls(TlsMaterial),
    /// No TLS: loopback only, chosen with an explicit flag.
    Plaintext,
}

impl TransportSecurity {
    pub fn is_plaintext(&self) -> bool {
        matches!(self, TransportSecurity::Plaintext)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("plaintext mode binds loopback only; {addr} is not a loopback address")]
    PlaintextNonLoopback { addr: SocketAddr },
    #[error("plaintext mode talks to a loopback host only; {uri} is not one")]
    PlaintextRemoteHost { uri: String },
    #[error("{uri} is not https://; plaintext needs the explicit plaintext flag")]
    HttpWithoutPlaintext { uri: String },
    #[error("{uri} is https:// but plaintext mode was chosen")]
    HttpsInPlaintext { uri: String },
    #[error("invalid coordinator URI {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("TLS configuration for {target}: {source}")]
    Tls {
        target: String,
        source: tonic::transport::Error,
    },
    /// `cause`: the transport error and its sources; `hint`: what it most likely means.
    #[error("cannot connect to {uri}: {cause}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Connect {
        uri: String,
        cause: String,
        hint: Option<&'static str>,
    },
    #[error(
        "the coordinator at {uri} speaks TLS: connect with https://HOST:PORT and the cluster's \
         TLS folder (plaintext reaches only a coordinator started with --plaintext)"
    )]
    PlaintextToTls { uri: String },
}

/// The bind rule: any address with TLS; loopback only in plaintext mode.
pub fn check_bind(addr: SocketAddr, plaintext: bool) -> Result<(), EndpointError> {
    if plaintext && !is_loopback(addr.ip()) {
        return Err(EndpointError::PlaintextNonLoopback { addr });
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A server builder for `addr`, with keepalive and, unless plaintext, mutual TLS requiring a
/// client certificate of the cluster CA. Fails when `addr` breaks [`check_bind`].
pub fn server_builder(
    addr: SocketAddr,
    security: &TransportSecurity,
) -> Result<Server, EndpointError> {
    server_builder_with(addr, security, false)
}

/// [`server_builder`]; with `anonymous_clients` the TLS handshake also admits a peer without
/// a client certificate (see [`TlsMaterial::server_config_with`]).
pub fn server_builder_with(
    addr: SocketAddr,
    security: &TransportSecurity,
    anonymous_clients: bool,
) -> Result<Server, EndpointError> {
    check_bind(addr, security.is_plaintext())?;
    let server = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL));
    match security {
        TransportSecurity::Plaintext => Ok(server),
        TransportSecurity::MutualTls(material) => server
            .tls_config(material.server_config_with(anonymous_clients))
            .map_err(|source| EndpointError::Tls {
                target: addr.to_string(),
                source,
            }),
    }
}

/// A client endpoint for the coordinator at `uri` (`https://HOST:PORT`, or `http://` on a
/// loopback host in plaintext mode). `tls_domain` is the name expected in the coordinator's
/// certificate; by default the URI's host.
pub fn client_endpoint(
    uri: &str,
    security: &TransportSecurity,
    tls_domain: Option<&str>,
) -> Result<Endpoint, EndpointError> {
    let bad = |reason: String| EndpointError::BadUri {
        uri: uri.to_string(),
        reason,
    };
    let parsed = uri.parse::<Uri>().map_err(|e| bad(e.to_string()))?;
    let host = parsed
        .host()
        .ok_or_else(|| bad("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if parsed.port_u16().is_none() {
        return Err(bad("no port".into()));
    }
    let scheme = parsed.scheme_str().unwrap_or("");
    match (security, scheme) {
        (TransportSecurity::Plaintext, "http") => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(is_loopback);
            if !loopback {
                return Err(EndpointError::PlaintextRemoteHost {
                    uri: uri.to_string(),
                });
            }
        }
        (TransportSecurity::Plaintext, "https") => {
            return Err(EndpointError::HttpsInPlaintext {
                uri: uri.to_string(),
            })
        }
        (TransportSecurity::MutualTls(_), "https") => {}
        (TransportSecurity::MutualTls(_), "http") => {
            return Err(EndpointError::HttpWithoutPlaintext {
                uri: uri.to_string(),
            })
        }
        (_, other) => return Err(bad(format!("scheme {other:?} is neither https nor http"))),
    }
    let endpoint = Endpoint::from(parsed)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        // Workers idle between long polls; the pings keep their connection known-good.
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL));
    match security {
        TransportSecurity::Plaintext => Ok(endpoint),
        TransportSecurity::MutualTls(material) => endpoint
            .tls_config(material.client_config(tls_domain.unwrap_or(&host)))
            .map_err(|source| EndpointError::Tls {
                target: uri.to_string(),
                source,
            }),
    }
}

/// Connects to the coordinator (see [`client_endpoint`]).
pub async fn connect(
    uri: &str,
    security: &TransportSecurity,
    tls_domain: Option<&str>,
) -> Result<Channel, EndpointError> {
    let endpoint = client_endpoint(uri, security, tls_domain)?;
    connect_endpoint(&endpoint, uri, security).await
}

/// Connects an endpoint made by [`client_endpoint`] for `uri`; a failure says what it most
/// likely means (a plaintext client on a TLS port, a coordinator of another CA).
pub async fn connect_endpoint(
    endpoint: &Endpoint,
    uri: &str,
    security: &TransportSecurity,
) -> Result<Channel, EndpointError> {
    if security.is_plaintext() {
        let parsed = uri.parse::<Uri>().ok();
        if let Some((host, port)) = parsed
            .as_ref()
            .and_then(|u| Some((u.host()?, u.port_u16()?)))
        {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if crate::diagnose::speaks_tls(host, port).await {
                return Err(EndpointError::PlaintextToTls {
                    uri: uri.to_string(),
                });
            }
        }
    }
    endpoint.connect().await.map_err(|source| {
        let cause = crate::diagnose::error_chain(&source);
        EndpointError::Connect {
            uri: uri.to_string(),
            hint: crate::diagnose::server_certificate_hint(&cause),
            cause,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plaintext_binds_loopback_only() {
        for ok in [
            "127.0.0.1:50051",
            "127.8.9.1:1",
            "[::1]:50051",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert!(check_bind(addr(ok), true).is_ok(), "{ok}");
        }
        for refused in [
            "0.0.0.0:50051",
            "10.1.2.3:50051",
            "[::]:50051",
            "[2001:db8::1]:1",
        ] {
            assert!(
                matches!(
                    check_bind(addr(refused), true),
                    Err(EndpointError::PlaintextNonLoopback { .. })
                ),
                "{refused}"
            );
            assert!(
                check_bind(addr(refused), false).is_ok(),
                "{refused} with TLS"
            );
        }
        assert!(server_builder(addr("0.0.0.0:1"), &TransportSecurity::Plaintext).is_err());
        assert!(server_builder(addr("127.0.0.1:1"), &TransportSecurity::Plaintext).is_ok());
    }

    #[test]
    fn plaintext_client_rules() {
        let p = TransportSecurity::Plaintext;
        assert!(client_endpoint("http://127.0.0.1:50051", &p, None).is_ok());
        assert!(client_endpoint("http://localhost:50051", &p, None).is_ok());
        assert!(client_endpoint("http://[::1]:50051", &p, None).is_ok());
        assert!(matches!(
            client_endpoint("http://10.0.0.1:50051", &p, None),
            Err(EndpointError::PlaintextRemoteHost { .. })
        ));
        assert!(matches!(
            client_endpoint("https://127.0.0.1:50051", &p, None),
            Err(EndpointError::HttpsInPlaintext { .. })
        ));
        assert!(matches!(
            client_endpoint("ftp://127.0.0.1:50051", &p, None),
            Err(EndpointError::BadUri { .. })
        ));
        assert!(matches!(
            client_endpoint("http://127.0.0.1", &p, None),
            Err(EndpointError::BadUri { .. })
        ));
    }
}
