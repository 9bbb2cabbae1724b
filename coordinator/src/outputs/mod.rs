//! A completed run's outputs: what they are made of and how they are built (`build`: scores,
//! our report, upstream's files, each streamed into a sink), and where they are kept (`store`:
//! a folder per run beside the database, all files visible at once, read by `FetchReport`).

pub mod agent_section;
pub mod build;
mod scan_details;
pub mod store;

pub use agent_section::{write_transcript, AgentFacts};
pub use build::{
    build_outputs, dataset_version, failure_summary, EvaluationFacts, GenerationFacts, OutputError,
    OutputSink, RunOutputInput, TaskFacts,
};
pub use store::{is_safe_name, NamedFile, OutputStore, OutputStoreError, OutputWriter};

/// The only file of a run whose finish can never succeed: why (clients report it as such).
pub const ERROR_FILE: &str = "error.txt";
