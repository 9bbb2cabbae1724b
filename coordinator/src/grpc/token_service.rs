//! `TokenApi`: creating, revoking and listing join tokens, for callers holding a client
//! certificate (`ase token ...`).

use super::join_service::refusal_status;
use crate::clock::Clock;
use crate::join_tokens::{JoinTokens, TokenRecord};
use crate::Coordinator;
use ase_proto::tonic::{Request, Response, Status};
use ase_proto::v1;
use std::sync::Arc;

/// Lifetime of a token when the request gives none.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime a token may have: a token is a standing credential.
pub const MAX_TOKEN_TTL_SECS: u64 = 366 * 24 * 3600;

pub struct TokenService {
    coordinator: Arc<Coordinator>,
    tokens: Arc<JoinTokens>,
    clock: Arc<dyn Clock>,
}

impl TokenService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        tokens: Arc<JoinTokens>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            coordinator,
            tokens,
            clock,
        }
    }
}

fn info(r: TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: r.id,
        role: r.role,
        created_unix_ms: r.created_ms,
        expires_unix_ms: r.expires_ms,
        revoked: r.revoked,
        joins: r.joins,
    }
}

#[ase_proto::tonic::async_trait]
impl v1::token_api_server::TokenApi for TokenService {
    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let req = req.into_inner();
        let ttl_secs = match req.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL_SECS,
            s if s > MAX_TOKEN_TTL_SECS => {
                return Err(Status::invalid_argument(format!(
                    "a token lives at most {MAX_TOKEN_TTL_SECS} s, not {s}"
                )))
            }
            s => s,
        };
        let store = self.coordinator.store();
        let (token, record) = self
            .tokens
            .create(store, &req.role, ttl_secs * 1000, self.clock.now_ms())
            .map_err(refusal_status)?;
        store
            .durable()
            .await
            .map_err(|e| refusal_status(e.into()))?;
        tracing::info!(token = %record.id, ttl_secs, "join token created");
        Ok(Response::new(v1::CreateTokenResponse {
            id: record.id,
            token: token.reveal(),
            expires_unix_ms: record.expires_ms,
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let id = req.into_inner().id;
        let store = self.coordinator.store();
        self.tokens.revoke(store, &id).map_err(refusal_status)?;
        store
            .durable()
            .await
            .map_err(|e| refusal_status(e.into()))?;
        tracing::info!(token = %id, "join token revoked");
        Ok(Response::new(v1::Ack {
            accepted: true,
            reason: String::new(),
            duplicate: false,
        }))
    }

    async fn list_tokens(
        &self,
        _req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let tokens = self
            .tokens
            .list(self.coordinator.store())
            .map_err(refusal_status)?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.into_iter().map(info).collect(),
        }))
    }
}
