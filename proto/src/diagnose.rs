//! Why a connection to the coordinator failed, said in the user's terms.
//!
//! The transport reports a plaintext client on the TLS port as "h2 protocol error", and a
//! certificate from another cluster as "transport error": true, but they do not say what to
//! change. What can be known is found out here, at the one place clients and workers connect:
//! - before a plaintext client connects, one probe: a coordinator that answers the HTTP/2
//!   preface with a TLS record speaks TLS;
//! - a refused server certificate is named as one from another cluster's CA;
//! - a call that fails at the transport after a TLS connection was made is most often the
//!   coordinator refusing this client's certificate: the hint says so.

use std::error::Error;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the plaintext probe waits for the coordinator's first bytes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// An error and its sources, each said once (tonic repeats a source's text in its own).
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    // Bounded: a source chain is short, but nothing says it cannot loop.
    for _ in 0..16 {
        let Some(err) = next else { break };
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// A status's message and its source's chain, each said once (its own Display is a debug
/// dump).
pub fn status_chain(status: &tonic::Status) -> String {
    let message = status.message().to_string();
    match status.source() {
        Some(source) => {
            let chain = error_chain(source);
            if chain.contains(&message) {
                chain
            } else {
                format!("{message}: {chain}")
            }
        }
        None => message,
    }
}

/// True when the coordinator at `host:port` answers an HTTP/2 connection preface with a TLS
/// record (an alert or a handshake): it speaks TLS. False when it answers otherwise, does not
/// answer in time, or cannot be reached (the real connection reports that).
pub async fn speaks_tls(host: &str, port: u16) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        // The preface and an empty SETTINGS frame: what a plaintext HTTP/2 client sends first.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        stream.write_all(&hello).await.ok()?;
        let mut first = [0u8; 3];
        stream.read_exact(&mut first).await.ok()?;
        // A TLS record: content type alert (21) or handshake (22), then version 3.x.
        Some(matches!(first, [21 | 22, 3, _]))
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The hint for a failed TLS connection whose cause names the coordinator's certificate.
pub fn server_certificate_hint(cause: &str) -> Option<&'static str> {
    let lower = cause.to_lowercase();
    (lower.contains("invalid peer certificate") || lower.contains("unknownissuer")).then_some(
        "the coordinator's certificate is not signed by the CA in the TLS folder given \
         (ca.pem): the coordinator belongs to another cluster, or the folder is another \
         `ase certs init`'s",
    )
}

/// The hint for a call that failed at the transport over a TLS connection.
pub fn refused_client_hint(status: &tonic::Status) -> Option<&'static str> {
    let transport = matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Unavailable
    ) && {
        let m = status.message().to_lowercase();
        m.contains("transport error")
            || m.contains("h2 protocol error")
            || m.contains("broken pipe")
    };
    transport.then_some(
        "the connection was closed under the call: most often the coordinator refused this \
         side's certificate (not signed by the coordinator's CA, or revoked); its log names \
         the reason",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let e = E(
            "transport error",
            Some(Box::new(E(
                "invalid peer certificate: BadSignature",
                Some(Box::new(E("BadSignature", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "transport error: invalid peer certificate: BadSignature"
        );
    }

    #[tokio::test]
    async fn a_tls_listener_is_told_from_a_plaintext_one() {
        // A TLS server answers a plaintext preface with an alert record.
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_port = tls.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = tls.accept().await.unwrap();
            let mut buf = [0u8; 24];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.write_all(&[21, 3, 3, 0, 2, 2, 50]).await;
        });
        assert!(speaks_tls("127.0.0.1", tls_port).await);
        // An HTTP/2 server answers with its SETTINGS frame.
        let h2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h2_port = h2.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = h2.accept().await.unwrap();
            let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        });
        assert!(!speaks_tls("127.0.0.1", h2_port).await);
        // Nobody listening: not TLS (the real connection says it cannot connect).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!speaks_tls("127.0.0.1", closed_port).await);
    }

    #[test]
    fn hints_name_the_certificate_problem() {
        assert!(server_certificate_hint("invalid peer certificate: BadSignature").is_some());
        assert!(server_certificate_hint("connection refused").is_none());
        let refused = tonic::Status::unknown("transport error");
        assert!(refused_client_hint(&refused).is_some());
        assert!(refused_client_hint(&tonic::Status::not_found("unknown run r")).is_none());
    }
}
