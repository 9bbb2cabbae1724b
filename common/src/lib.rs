//! The A.S.E benchmark itself, independent of where it runs: datasets, masking, prompts, answer
//! extraction, patch application, scoring and reports. The coordinator and the worker only
//! move these steps between machines; every number the project reports is computed here.

pub mod agent_record;
pub mod answer;
pub mod calibrate;
pub mod compare;
pub mod dataset;
pub mod digest;
pub mod leaderboard;
pub mod phase_deadline;
pub mod preflight;
pub mod process;
pub mod prompt;
pub mod report;
pub mod run_limits;
pub mod run_name;
pub mod scan_findings;
pub mod scoring;
pub mod uncertainty;
pub mod unit;
pub mod upstream_io;
