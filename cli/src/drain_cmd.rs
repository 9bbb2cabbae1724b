//! `ase drain`: a worker finishes its running units and takes no new ones.

use crate::connect::{runtime, status_error, ConnectArgs};
use ase_proto::v1::DrainWorkerRequest;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The worker's name.
    #[arg(long)]
    worker: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ack = runtime()?.block_on(async {
        let mut client = args.connect.client().await?;
        client
            .drain_worker(DrainWorkerRequest {
                worker: args.worker.clone(),
            })
            .await
            .map_err(|s| status_error(&format!("draining worker {}", args.worker), s))
    })?;
    let ack = ack.into_inner();
    if ack.accepted {
        eprintln!("worker {} is draining", args.worker);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("drain of worker {} refused: {}", args.worker, ack.reason);
        Ok(ExitCode::from(1))
    }
}
