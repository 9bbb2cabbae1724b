//! The ase-cluster worker: everything that touches a machine's disk, network and Docker daemon
//! on behalf of a unit (repo cache, model calls, SAST scans, evaluation containers).

pub mod agent;
pub mod coding_agent;
pub mod container;
pub mod container_labels;
pub mod dynamic;
pub mod git;
pub mod images;
pub mod model;
pub mod pipeline;
pub mod preflight;
pub mod repo_cache;
pub mod sast;
pub mod setup;
