//! `ase cancel`: stop a run; its leases are revoked. Submitting it again resumes it.

use crate::connect::{runtime, status_error, ConnectArgs};
use ase_proto::v1::RunRef;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[arg(long)]
    run: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ack = runtime()?.block_on(async {
        let mut client = args.connect.client().await?;
        client
            .cancel_run(RunRef {
                run_id: args.run.clone(),
            })
            .await
            .map_err(|s| status_error(&format!("cancelling run {}", args.run), s))
    })?;
    let ack = ack.into_inner();
    if ack.accepted {
        eprintln!("run {} cancelled", args.run);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("cancel of run {} refused: {}", args.run, ack.reason);
        Ok(ExitCode::from(1))
    }
}
