//! The ase-cluster gRPC contract (`proto/ase.proto`, package `ase.v1`) and its transport
//! security: mutual TLS on rustls with ring as the only crypto provider.
//!
//! - [`v1`]: the generated messages, clients and servers; the services are re-exported here.
//! - [`tls`]: loading PEM material, tonic TLS configs, [`tls::install_crypto_provider`].
//! - [`certs`]: the cluster CA and the coordinator, worker and client certificates.
//! - [`identity`]: who the peer is (role and name from its certificate), and the
//!   [`identity::RequireRole`] interceptor that keeps clients off `WorkerApi` and workers off
//!   `ClientApi`.
//! - [`endpoint`]: bind rules (plaintext only on loopback), server builder and client channels.
//! - [`diagnose`]: why a connection failed, in the user's terms.
//! - [`limits`]: sizes both ends agree on (the largest message, the submission limits).
//! - [`submit`]: the client-streaming SubmitRun: its parts, sent, received and checked.

pub mod certs;
pub mod diagnose;
pub mod endpoint;
pub mod identity;
pub mod join;
pub mod limits;
pub mod name_in_use;
pub mod submit;
pub mod tls;

/// Code generated from `proto/ase.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ase.v1");
}

pub use v1::client_api_client::ClientApiClient;
pub use v1::client_api_server::{ClientApi, ClientApiServer};
pub use v1::join_api_client::JoinApiClient;
pub use v1::join_api_server::{JoinApi, JoinApiServer};
pub use v1::token_api_client::TokenApiClient;
pub use v1::token_api_server::{TokenApi, TokenApiServer};
pub use v1::worker_api_client::WorkerApiClient;
pub use v1::worker_api_server::{WorkerApi, WorkerApiServer};

/// The versions the contract was generated with; dependents use these rather than their own.
pub use {prost, tonic, tonic_health};
