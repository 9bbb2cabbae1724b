//! Join tokens and the names granted with them, durable in the coordinator's store.
//!
//! Two side trees: `join_tokens` (token id → [`TokenRecord`], the secret only as its SHA-256)
//! and `joined_names` (worker name → [`JoinedName`]). A join checks the token and claims the
//! name in one sled transaction across both trees, so two workers joining at once with one
//! token never get one name; the caller makes it durable ([`crate::store::Store::durable`])
//! before it hands out the certificate. Names are never given back: a derived name
//! (`PREFIX-N`, N from the store's id counter) is unique across every join of the store, and a
//! worker that asks for a name already granted is refused.

use crate::store::{Store, StoreError};
use ase_proto::join::JoinToken;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};

/// The one role a token can grant.
pub const WORKER_ROLE: &str = "worker";
/// Prefix of derived names when the worker gives none.
pub const DEFAULT_NAME_PREFIX: &str = "worker";
/// Longest prefix kept of a worker's name hint (the name itself is at most 64 characters).
const MAX_PREFIX_CHARS: usize = 40;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub role: String,
    pub secret_sha256: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub revoked: bool,
    pub joins: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinedName {
    pub token_id: String,
    pub joined_ms: u64,
}

/// Why a join, a renewal or a token command was refused; the message is what the worker or
/// operator reads.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefusal {
    #[error("the join token is not one of this coordinator's (unknown id or wrong secret)")]
    UnknownToken,
    #[error("the join token {id} expired {ago_s} s ago; create a new one with `ase token create`")]
    Expired { id: String, ago_s: u64 },
    #[error("the join token {id} was revoked")]
    Revoked { id: String },
    #[error("no token {0} on this coordinator")]
    NoSuchToken(String),
    #[error("tokens grant only the role worker, not {0:?}")]
    Role(String),
    #[error("the name {0:?} was already granted to another join; ask for another or none")]
    NameTaken(String),
    #[error("{0:?} did not join with a token (only joined workers renew)")]
    NotJoined(String),
    #[error("the name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct JoinTokens {
    tokens: Tree,
    names: Tree,
}

fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
    store: &Store,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: store.path().to_path_buf(),
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn sled_error(store: &Store, what: &'static str, source: sled::Error) -> StoreError {
    StoreError::Sled {
        path: store.path().to_path_buf(),
        what,
        source,
    }
}

/// The prefix of a derived name from the worker's hint: characters outside the name rules
/// become '-', and an unusable hint gives [`DEFAULT_NAME_PREFIX`].
pub fn name_prefix(hint: &str) -> String {
    let cleaned: String = hint
        .chars()
        .take(MAX_PREFIX_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(['.', '-']).trim_end_matches('-');
    if trimmed.is_empty() {
        DEFAULT_NAME_PREFIX.to_string()
    } else {
        trimmed.to_string()
    }
}

impl JoinTokens {
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(JoinTokens {
            tokens: store.side_tree("join_tokens")?,
            names: store.side_tree("joined_names")?,
        })
    }

    /// A new token of `role` redeemable until `now_ms + ttl_ms`: its record is written (the
    /// caller makes it durable) and the token returned, the only time its secret is seen.
    pub fn create(
        &self,
        store: &Store,
        role: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<(JoinToken, TokenRecord), JoinRefusal> {
        if role != WORKER_ROLE {
            return Err(JoinRefusal::Role(role.to_string()));
        }
        let token = JoinToken::generate().map_err(|e| JoinRefusal::BadName {
            name: String::new(),
            reason: e.to_string(),
        })?;
        let record = TokenRecord {
            id: token.id.clone(),
            role: role.to_string(),
            secret_sha256: token.secret_hash(),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            revoked: false,
            joins: 0,
        };
        self.tokens
            .insert(token.id.as_bytes(), json(&record))
            .map_err(|e| sled_error(store, "write a join token", e))?;
        Ok((token, record))
    }

    /// Registers a token the operator made in advance (`ase token generate`, handed to the
    /// coordinator and the workers as one secret): the first time it is seen it is stored,
    /// valid `ttl_ms` from then; later starts leave its record as it is (a restart neither
    /// extends nor un-revokes it). Whether the record was new.
    pub fn provision(
        &self,
        store: &Store,
        token: &JoinToken,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, JoinRefusal> {
        let record = TokenRecord {
            id: token.id.clone(),
            role: WORKER_ROLE.to_string(),
            secret_sha256: token.secret_hash(),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            revoked: false,
            joins: 0,
        };
        let swapped = self
            .tokens
            .compare_and_swap(
                token.id.as_bytes(),
                None as Option<&[u8]>,
                Some(json(&record)),
            )
            .map_err(|e| sled_error(store, "provision a join token", e))?;
        match swapped {
            Ok(()) => Ok(true),
            Err(existing) => {
                let current = existing.current.unwrap_or_default();
                let found: TokenRecord =
                    decode("join_tokens", token.id.as_bytes(), &current, store)?;
                if found.secret_sha256 != record.secret_sha256 {
                    return Err(JoinRefusal::UnknownToken);
                }
                Ok(false)
            }
        }
    }

    /// Marks the token revoked: no join with it from now on, and no renewal of the names
    /// granted with it.
    pub fn revoke(&self, store: &Store, id: &str) -> Result<TokenRecord, JoinRefusal> {
        let Some(bytes) = self
            .tokens
            .get(id.as_bytes())
            .map_err(|e| sled_error(store, "read a join token", e))?
        else {
            return Err(JoinRefusal::NoSuchToken(id.to_string()));
        };
        let mut record: TokenRecord = decode("join_tokens", id.as_bytes(), &bytes, store)?;
        record.revoked = true;
        self.tokens
            .insert(id.as_bytes(), json(&record))
            .map_err(|e| sled_error(store, "revoke a join token", e))?;
        Ok(record)
    }

    pub fn list(&self, store: &Store) -> Result<Vec<TokenRecord>, JoinRefusal> {
        let mut out = Vec::new();
        for entry in self.tokens.iter() {
            let (k, v) = entry.map_err(|e| sled_error(store, "list join tokens", e))?;
            out.push(decode("join_tokens", &k, &v, store)?);
        }
        Ok(out)
    }

    /// Redeems `token` for a name: `wanted` when given (and never granted before), else
    /// `PREFIX-N` derived from `prefix_hint`. Checks and claims atomically.
    pub fn redeem(
        &self,
        store: &Store,
        token: &JoinToken,
        wanted: &str,
        prefix_hint: &str,
        now_ms: u64,
    ) -> Result<String, JoinRefusal> {
        let name = if wanted.is_empty() {
            format!("{}-{}", name_prefix(prefix_hint), store.next_id()?)
        } else {
            wanted.to_string()
        };
        ase_proto::certs::check_name(ase_proto::identity::PeerRole::Worker, &name).map_err(
            |e| JoinRefusal::BadName {
                name: name.clone(),
                reason: e.to_string(),
            },
        )?;
        let granted = JoinedName {
            token_id: token.id.clone(),
            joined_ms: now_ms,
        };
        let outcome = (&self.tokens, &self.names).transaction(|(tokens, names)| {
            let abort = |r: JoinRefusal| Err(ConflictableTransactionError::Abort(r));
            let Some(bytes) = tokens.get(token.id.as_bytes())? else {
                return abort(JoinRefusal::UnknownToken);
            };
            let mut record: TokenRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    return abort(JoinRefusal::Store(StoreError::Corrupt {
                        path: store.path().to_path_buf(),
                        tree: "join_tokens",
                        key: token.id.clone(),
                        message: e.to_string(),
                    }))
                }
            };
            if record.secret_sha256 != token.secret_hash() {
                return abort(JoinRefusal::UnknownToken);
            }
            if record.revoked {
                return abort(JoinRefusal::Revoked { id: record.id });
            }
            if now_ms >= record.expires_ms {
                return abort(JoinRefusal::Expired {
                    ago_s: (now_ms - record.expires_ms) / 1000,
                    id: record.id,
                });
            }
            if names.get(name.as_bytes())?.is_some() {
                return abort(JoinRefusal::NameTaken(name.clone()));
            }
            record.joins += 1;
            tokens.insert(token.id.as_bytes(), json(&record))?;
            names.insert(name.as_bytes(), json(&granted))?;
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(name),
            Err(TransactionError::Abort(refusal)) => Err(refusal),
            Err(TransactionError::Storage(e)) => {
                Err(sled_error(store, "redeem a join token", e).into())
            }
        }
    }

    /// Whether `name` may renew its certificate: it joined with a token not revoked since.
    pub fn check_renewal(&self, store: &Store, name: &str) -> Result<(), JoinRefusal> {
        let Some(bytes) = self
            .names
            .get(name.as_bytes())
            .map_err(|e| sled_error(store, "read a joined name", e))?
        else {
            return Err(JoinRefusal::NotJoined(name.to_string()));
        };
        let joined: JoinedName = decode("joined_names", name.as_bytes(), &bytes, store)?;
        let Some(bytes) = self
            .tokens
            .get(joined.token_id.as_bytes())
            .map_err(|e| sled_error(store, "read a join token", e))?
        else {
            return Err(JoinRefusal::NoSuchToken(joined.token_id));
        };
        let record: TokenRecord = decode("join_tokens", joined.token_id.as_bytes(), &bytes, store)?;
        if record.revoked {
            return Err(JoinRefusal::Revoked { id: record.id });
        }
        Ok(())
    }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("join records serialise to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn tokens_grant_unique_names_until_they_expire_or_are_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        let tokens = JoinTokens::open(&store).unwrap();
        let (token, record) = tokens.create(&store, "worker", HOUR, 1_000).unwrap();
        assert_eq!(record.expires_ms, 1_000 + HOUR);
        assert_ne!(record.secret_sha256, token.reveal());
        assert!(matches!(
            tokens.create(&store, "client", HOUR, 0),
            Err(JoinRefusal::Role(_))
        ));

        let a = tokens.redeem(&store, &token, "", "host_a!", 2_000).unwrap();
        let b = tokens.redeem(&store, &token, "", "host_a!", 2_000).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("host_a-"), "{a}");
        assert_eq!(
            tokens.redeem(&store, &token, "w9", "", 2_000).unwrap(),
            "w9"
        );
        assert!(matches!(
            tokens.redeem(&store, &token, "w9", "", 2_000),
            Err(JoinRefusal::NameTaken(_))
        ));
        assert!(tokens.check_renewal(&store, &a).is_ok());
        assert!(matches!(
            tokens.check_renewal(&store, "static-w1"),
            Err(JoinRefusal::NotJoined(_))
        ));

        // A wrong secret with a known id is refused like an unknown token.
        let other = JoinToken::generate().unwrap();
        let forged = JoinToken::parse(&format!(
            "asejt.{}.{}",
            token.id,
            other.reveal().rsplit('.').next().unwrap()
        ))
        .unwrap();
        assert!(matches!(
            tokens.redeem(&store, &forged, "", "", 2_000),
            Err(JoinRefusal::UnknownToken)
        ));
        let err = tokens
            .redeem(&store, &token, "", "", 1_000 + HOUR + 5_000)
            .unwrap_err();
        assert!(
            matches!(err, JoinRefusal::Expired { ago_s: 5, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("expired"));

        tokens.revoke(&store, &token.id).unwrap();
        assert!(matches!(
            tokens.redeem(&store, &token, "", "", 3_000),
            Err(JoinRefusal::Revoked { .. })
        ));
        assert!(matches!(
            tokens.check_renewal(&store, &a),
            Err(JoinRefusal::Revoked { .. })
        ));
        let listed = tokens.list(&store).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked);
        assert_eq!(listed[0].joins, 3);
        assert!(matches!(
            tokens.revoke(&store, "nope"),
            Err(JoinRefusal::NoSuchToken(_))
        ));
    }

    #[test]
    fn tokens_and_names_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (token, name) = {
            let store = Store::open(&path, StoreOptions::default()).unwrap();
            let tokens = JoinTokens::open(&store).unwrap();
            let (token, _) = tokens.create(&store, "worker", HOUR, 0).unwrap();
            let name = tokens.redeem(&store, &token, "", "", 1).unwrap();
            store.durable_blocking().unwrap();
            (token, name)
        };
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let tokens = JoinTokens::open(&store).unwrap();
        assert!(tokens.check_renewal(&store, &name).is_ok());
        let next = tokens.redeem(&store, &token, "", "", 2).unwrap();
        assert_ne!(next, name);
        assert!(matches!(
            tokens.redeem(&store, &token, &name, "", 2),
            Err(JoinRefusal::NameTaken(_))
        ));
    }

    #[test]
    fn a_provisioned_token_is_stored_once_and_keeps_its_expiry_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        let tokens = JoinTokens::open(&store).unwrap();
        let token = JoinToken::generate().unwrap();
        assert!(tokens.provision(&store, &token, HOUR, 0).unwrap());
        assert!(!tokens.provision(&store, &token, HOUR, 10 * HOUR).unwrap());
        assert!(matches!(
            tokens.redeem(&store, &token, "", "", 2 * HOUR),
            Err(JoinRefusal::Expired { .. })
        ));
        let other = JoinToken::generate().unwrap();
        assert!(tokens.provision(&store, &other, HOUR, 0).unwrap());
        assert!(tokens.redeem(&store, &other, "", "", 1).is_ok());
        tokens.revoke(&store, &other.id).unwrap();
        assert!(!tokens.provision(&store, &other, HOUR, 0).unwrap());
        assert!(matches!(
            tokens.redeem(&store, &other, "", "", 1),
            Err(JoinRefusal::Revoked { .. })
        ));
    }

    #[test]
    fn prefixes_follow_the_name_rules() {
        assert_eq!(name_prefix(""), "worker");
        assert_eq!(name_prefix("--"), "worker");
        assert_eq!(name_prefix("a1b2c3"), "a1b2c3");
        assert_eq!(name_prefix("my host"), "my-host");
        assert_eq!(name_prefix(&"x".repeat(80)).len(), 40);
    }
}
