//! `ase token create|revoke|list`: the coordinator's join tokens (`ase worker --join`).

use crate::connect::{runtime, status_error, ConnectArgs};
use ase_proto::limits::MAX_MESSAGE_BYTES;
use ase_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest};
use ase_proto::TokenApiClient;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// A new token; prints the token alone on stdout (`> token.txt`), its id on stderr.
    Create {
        /// The role the token grants (only worker).
        #[arg(long, default_value = "worker")]
        role: String,
        /// How long the token can be redeemed: 90s, 15m, 24h, 7d [default: 24h].
        #[arg(long, value_parser = crate::duration_arg::parse)]
        ttl: Option<Duration>,
    },
    /// Revoke a token: no join with it any more, no renewal of the workers it admitted.
    Revoke {
        /// The token's id (the part after `asejt.`, as `ase token list` shows it).
        id: String,
    },
    /// The tokens, their expiry and how often each was redeemed.
    List,
}

async fn client(
    connect: &ConnectArgs,
) -> anyhow::Result<TokenApiClient<ase_proto::tonic::transport::Channel>> {
    let channel = ase_proto::endpoint::connect(
        &connect.coordinator,
        &connect.security()?,
        connect.tls_domain.as_deref(),
    )
    .await?;
    Ok(TokenApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn seconds_from_now(unix_ms: u64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    (unix_ms as i64 - now) / 1000
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match args.command {
            TokenCommand::Create { role, ttl } => {
                let created = client(&args.connect)
                    .await?
                    .create_token(CreateTokenRequest {
                        role,
                        ttl_seconds: ttl.map(|d| d.as_secs()).unwrap_or(0),
                    })
                    .await
                    .map_err(|s| status_error("creating a join token", s))?
                    .into_inner();
                eprintln!(
                    "token {} expires in {} s",
                    created.id,
                    seconds_from_now(created.expires_unix_ms)
                );
                println!("{}", created.token);
            }
            TokenCommand::Revoke { id } => {
                client(&args.connect)
                    .await?
                    .revoke_token(RevokeTokenRequest { id: id.clone() })
                    .await
                    .map_err(|s| status_error(&format!("revoking token {id}"), s))?;
                eprintln!("token {id} revoked");
            }
            TokenCommand::List => {
                let listed = client(&args.connect)
                    .await?
                    .list_tokens(ListTokensRequest {})
                    .await
                    .map_err(|s| status_error("listing join tokens", s))?
                    .into_inner();
                println!(
                    "{:<18} {:<8} {:>14} {:>6}  STATE",
                    "ID", "ROLE", "EXPIRES_IN_S", "JOINS"
                );
                for t in listed.tokens {
                    let left = seconds_from_now(t.expires_unix_ms);
                    let state = if t.revoked {
                        "revoked"
                    } else if left <= 0 {
                        "expired"
                    } else {
                        "valid"
                    };
                    println!(
                        "{:<18} {:<8} {:>14} {:>6}  {state}",
                        t.id, t.role, left, t.joins
                    );
                }
            }
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
