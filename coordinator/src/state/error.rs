//! The errors of the coordinator's operations. Store errors are fatal for the process (see the
//! module documentation of `state`); the others answer the request that caused them.

use crate::outputs::OutputError;
use crate::store::StoreError;
use ase_common::dataset;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `what`: "dataset" or "context file", the input the error is in.
    #[error("{what} {name}: {source}")]
    Dataset {
        what: &'static str,
        name: String,
        source: dataset::DatasetError,
    },
    #[error("run spec: {0}")]
    Spec(String),
    #[error("run {run_id}: {message}")]
    Conflict { run_id: String, message: String },
    #[error("unknown run {0}")]
    UnknownRun(String),
    #[error("worker name: {0}")]
    WorkerName(String),
    /// Another process registered under this name and is still heard from: a second worker
    /// with the same name (and certificate) must not take the name over, or the two supersede
    /// each other in a loop.
    #[error(
        "worker name {name} is in use by a live session (session {session}, last heard \
         {heard_ms_ago} ms ago): a second worker with this name is refused; the name is free \
         once that session misses its heartbeats for {ttl_ms} ms"
    )]
    NameInUse {
        name: String,
        session: u64,
        heard_ms_ago: u64,
        ttl_ms: u32,
    },
    #[error(transparent)]
    Outputs(#[from] OutputError),
    #[error(
        "run {run_id}: its files are {bytes} bytes, more than one reply carries ({limit} bytes); \
         they are on the coordinator's disk under {path} (and under its --output-dir when set)"
    )]
    ReportTooLarge {
        run_id: String,
        bytes: u64,
        limit: u64,
        path: PathBuf,
    },
    #[error("cannot start the thread that finishes runs: {0}")]
    Finisher(std::io::Error),
}
