//! `JoinApi`: a worker without a certificate redeems a join token for a short-lived
//! `worker:NAME` certificate, and a joined worker renews it. The only service a peer without a
//! client certificate reaches: `Join` is authenticated by the token, `Renew` by the worker's
//! current certificate (checked here, as `RequireRole` does for the other services).

use crate::clock::Clock;
use crate::join_tokens::{JoinRefusal, JoinTokens};
use crate::Coordinator;
use ase_proto::identity::{peer_identity, PeerRole};
use ase_proto::join::{JoinSigner, JoinToken, SignedCert};
use ase_proto::tonic::{Request, Response, Status};
use ase_proto::v1;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// What a coordinator that admits joins needs: the CA to sign with and the certificates'
/// lifetime.
pub struct JoinSettings {
    pub signer: JoinSigner,
    pub cert_validity: Duration,
    /// A token made in advance (`ase token generate`) and its lifetime from first sight:
    /// registered at start (see [`JoinTokens::provision`]).
    pub provisioned: Option<(JoinToken, Duration)>,
}

pub struct JoinService {
    coordinator: Arc<Coordinator>,
    tokens: Arc<JoinTokens>,
    settings: Option<Arc<JoinSettings>>,
    clock: Arc<dyn Clock>,
}

impl JoinService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        tokens: Arc<JoinTokens>,
        settings: Option<Arc<JoinSettings>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            coordinator,
            tokens,
            settings,
            clock,
        }
    }

    fn settings(&self) -> Result<&JoinSettings, Status> {
        self.settings.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator admits no joins: start it with --join-ca-key (the cluster CA's key)",
            )
        })
    }

    fn sign(&self, csr_pem: &str, name: &str) -> Result<Response<v1::JoinResponse>, Status> {
        let settings = self.settings()?;
        let SignedCert {
            cert_pem,
            not_after,
        } = settings
            .signer
            .sign_worker(csr_pem, name, settings.cert_validity)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(v1::JoinResponse {
            name: name.to_string(),
            cert_pem,
            not_after_unix_ms: not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }))
    }
}

/// The status a refusal reaches the worker or operator with.
pub(crate) fn refusal_status(refusal: JoinRefusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        JoinRefusal::UnknownToken => Status::unauthenticated(message),
        JoinRefusal::Expired { .. } | JoinRefusal::Revoked { .. } | JoinRefusal::NotJoined(_) => {
            Status::permission_denied(message)
        }
        JoinRefusal::NoSuchToken(_) => Status::not_found(message),
        JoinRefusal::Role(_) | JoinRefusal::BadName { .. } => Status::invalid_argument(message),
        JoinRefusal::NameTaken(_) => Status::already_exists(message),
        JoinRefusal::Store(e) => {
            tracing::error!(error = %e, "join tokens");
            Status::internal(message)
        }
    }
}

#[ase_proto::tonic::async_trait]
impl v1::join_api_server::JoinApi for JoinService {
    async fn join(
        &self,
        req: Request<v1::JoinRequest>,
    ) -> Result<Response<v1::JoinResponse>, Status> {
        let req = req.into_inner();
        let token =
            JoinToken::parse(&req.token).map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.settings()?;
        JoinSigner::check_csr(&req.csr_pem).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let store = self.coordinator.store();
        let name = self
            .tokens
            .redeem(
                store,
                &token,
                &req.name,
                &req.name_prefix,
                self.clock.now_ms(),
            )
            .map_err(|refusal| {
                tracing::warn!(token = %token.id, reason = %refusal, "join refused");
                refusal_status(refusal)
            })?;
        // The name is granted for good only once it is on disk: a crash after the certificate
        // went out must not let the name be granted again.
        store
            .durable()
            .await
            .map_err(|e| refusal_status(e.into()))?;
        tracing::info!(token = %token.id, worker = %name, "worker joined");
        self.sign(&req.csr_pem, &name)
    }

    async fn renew(
        &self,
        req: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::JoinResponse>, Status> {
        let identity = peer_identity(&req).ok_or_else(|| {
            Status::unauthenticated("renewal needs the worker's current certificate")
        })?;
        if identity.role != PeerRole::Worker {
            return Err(Status::permission_denied(format!(
                "certificate {:?} is not a worker certificate",
                identity.common_name
            )));
        }
        self.settings()?;
        self.tokens
            .check_renewal(self.coordinator.store(), &identity.name)
            .map_err(refusal_status)?;
        tracing::info!(worker = %identity.name, "worker certificate renewed");
        self.sign(&req.into_inner().csr_pem, &identity.name)
    }
}
