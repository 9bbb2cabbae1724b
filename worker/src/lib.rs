//! The ase-cluster worker: executes units of an A.S.E run.

pub mod sast;
