//! The A.S.E benchmark itself, independent of where it runs: datasets, masking, prompts, answer
//! extraction, patch application, scoring and reports. The coordinator and the worker only
//! move these steps between machines; every number the project reports is computed here.

pub mod dataset;
pub mod masking;
pub mod report;
pub mod scoring;
pub mod upstream_io;
