//! The client commands' connection to the coordinator: `--coordinator URL` with mutual TLS
//! (`--tls-dir`, `--client NAME`) or loopback-only `--plaintext`.

use anyhow::Context;
use ase_proto::endpoint::{self, TransportSecurity};
use ase_proto::limits::MAX_MESSAGE_BYTES;
use ase_proto::tls::TlsFiles;
use ase_proto::tonic::transport::Channel;
use ase_proto::ClientApiClient;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The coordinator: https://HOST:PORT, or http://127.0.0.1:PORT with --plaintext.
    #[arg(long)]
    pub coordinator: String,
    /// Directory written by `ase certs init` (uses ca.pem and client-NAME.{pem,key}).
    #[arg(
        long,
        required_unless_present = "plaintext",
        conflicts_with = "plaintext"
    )]
    pub tls_dir: Option<PathBuf>,
    /// NAME of the client certificate client-NAME.pem.
    #[arg(long, default_value = "admin")]
    pub client: String,
    /// Name expected in the coordinator's certificate (default: the URL's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// No TLS, loopback coordinators only.
    #[arg(long)]
    pub plaintext: bool,
}

impl ConnectArgs {
    pub fn security(&self) -> anyhow::Result<TransportSecurity> {
        match &self.tls_dir {
            Some(dir) => {
                let stem = format!("client-{}", self.client);
                let material = TlsFiles::in_dir(dir, &stem).load().with_context(|| {
                    format!("loading the TLS material of client {}", self.client)
                })?;
                Ok(TransportSecurity::MutualTls(material))
            }
            None => Ok(TransportSecurity::Plaintext),
        }
    }

    pub async fn client(&self) -> anyhow::Result<ClientApiClient<Channel>> {
        let channel = endpoint::connect(
            &self.coordinator,
            &self.security()?,
            self.tls_domain.as_deref(),
        )
        .await?;
        Ok(ClientApiClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// A single-threaded runtime for one client command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A gRPC error as the user should read it: the code and the coordinator's reason.
pub fn status_error(what: &str, status: ase_proto::tonic::Status) -> anyhow::Error {
    match ase_proto::diagnose::refused_client_hint(&status) {
        Some(hint) => anyhow::anyhow!(
            "{what}: {:?}: {} ({hint})",
            status.code(),
            ase_proto::diagnose::status_chain(&status)
        ),
        None => anyhow::anyhow!("{what}: {:?}: {}", status.code(), status.message()),
    }
}
