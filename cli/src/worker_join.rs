//! `ase worker --join TOKEN`: the worker makes its own key, sends a certificate request over
//! TLS that authenticates the coordinator by the given CA, and gets a short-lived
//! `worker:NAME` certificate (see `ase_proto::join`); later it renews that certificate with the
//! certificate itself, before it expires.
//!
//! The key lives in memory only: a restarted worker joins again (and is granted a new name),
//! so the token must still be valid then. An unreachable coordinator is retried with back-off
//! (an orchestrator may start workers first); a refusal is final.

use anyhow::{bail, Context};
use ase_proto::endpoint::{self, TransportSecurity};
use ase_proto::join::{join_endpoint, make_csr, JoinToken};
use ase_proto::tls::TlsMaterial;
use ase_proto::tonic::{Code, Status};
use ase_proto::v1::{JoinRequest, JoinResponse, RenewRequest};
use ase_proto::JoinApiClient;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long to keep trying to reach the coordinator before a join or renewal gives up.
const REACH_FOR: Duration = Duration::from_secs(300);
/// Back-off between attempts.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A certificate granted by a join or a renewal, with the key it belongs to.
pub struct Joined {
    pub name: String,
    pub material: TlsMaterial,
    pub not_after: SystemTime,
}

impl Joined {
    /// When to renew: after two thirds of the remaining lifetime, so that a renewal that must
    /// wait for an unreachable coordinator still has a third of it.
    pub fn renew_in(&self) -> Duration {
        let left = self
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        left.mul_f64(2.0 / 3.0).max(Duration::from_secs(1))
    }
}

/// Where and how the worker joins.
pub struct JoinTarget<'a> {
    pub coordinator: &'a str,
    pub ca_pem: &'a [u8],
    pub tls_domain: Option<&'a str>,
}

/// A refusal is final; anything else (the coordinator not up yet, a connection cut) is tried
/// again.
fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::Unimplemented
    )
}

/// Calls `call` on a fresh channel (made by `connect`) until it answers, or is refused, or
/// [`REACH_FOR`] has passed.
async fn with_retries<C, CF, F, Fut>(
    what: &str,
    connect: C,
    call: F,
) -> anyhow::Result<JoinResponse>
where
    C: Fn() -> CF,
    CF: std::future::Future<Output = anyhow::Result<ase_proto::tonic::transport::Channel>>,
    F: Fn(JoinApiClient<ase_proto::tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<ase_proto::tonic::Response<JoinResponse>, Status>>,
{
    let started = std::time::Instant::now();
    let mut delay = RETRY_MIN;
    loop {
        let error = match connect().await {
            Ok(channel) => match call(JoinApiClient::new(channel)).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_refusal(&status) => {
                    bail!("{what} refused by the coordinator: {}", status.message())
                }
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            },
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() >= REACH_FOR {
            bail!(
                "{what}: the coordinator was not reachable for {} s: {error}",
                REACH_FOR.as_secs()
            );
        }
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "{what}: retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

fn joined(
    target: &JoinTarget<'_>,
    key_pem: String,
    response: JoinResponse,
) -> anyhow::Result<Joined> {
    let material = TlsMaterial::from_pem(target.ca_pem.to_vec(), response.cert_pem, key_pem)
        .context("the certificate the coordinator granted")?;
    Ok(Joined {
        name: response.name,
        material,
        not_after: UNIX_EPOCH + Duration::from_millis(response.not_after_unix_ms),
    })
}

/// Redeems `token` for a certificate: `name` if given (else the coordinator derives one from
/// `name_prefix`).
pub async fn join(
    target: &JoinTarget<'_>,
    token: &JoinToken,
    name: Option<&str>,
    name_prefix: &str,
) -> anyhow::Result<Joined> {
    let endpoint = join_endpoint(target.coordinator, target.ca_pem, target.tls_domain)?;
    let (key_pem, csr_pem) = make_csr()?;
    let request = JoinRequest {
        token: token.reveal(),
        name: name.unwrap_or_default().to_string(),
        csr_pem,
        name_prefix: name_prefix.to_string(),
    };
    let response = with_retries(
        "joining",
        || {
            let endpoint = endpoint.clone();
            async move {
                endpoint.connect().await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot connect to {}: {}",
                        target.coordinator,
                        ase_proto::diagnose::error_chain(&e)
                    )
                })
            }
        },
        |mut client| {
            let request = request.clone();
            async move { client.join(request).await }
        },
    )
    .await?;
    joined(target, key_pem, response)
}

/// A new certificate (and key) for the worker holding `current`, same name.
pub async fn renew(target: &JoinTarget<'_>, current: &TlsMaterial) -> anyhow::Result<Joined> {
    let (key_pem, csr_pem) = make_csr()?;
    let security = TransportSecurity::MutualTls(current.clone());
    let response =
        with_retries(
            "renewing the certificate",
            || {
                let security = security.clone();
                async move {
                    Ok(endpoint::connect(target.coordinator, &security, target.tls_domain).await?)
                }
            },
            |mut client| {
                let request = RenewRequest {
                    csr_pem: csr_pem.clone(),
                };
                async move { client.renew(request).await }
            },
        )
        .await?;
    joined(target, key_pem, response)
}

/// The host's name, as the prefix of a derived worker name (Swarm and Kubernetes set it per
/// task or pod).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}

/// Reads a token given inline or in a file (a Docker or Kubernetes secret).
pub fn read_token(
    inline: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<JoinToken> {
    let text = match (inline, file) {
        (Some(t), _) => t.to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the join token file {}", path.display()))?,
        (None, None) => bail!("--join or --join-file is required to join"),
    };
    Ok(JoinToken::parse(&text)?)
}
