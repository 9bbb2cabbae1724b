//! The coordinator's state of ase-cluster: a durable store (sled), runs and their units, leases
//! fenced by (worker session, attempt), retries, scheduling with repo affinity and per-run
//! limits, and the outputs of completed runs. No network code: the gRPC services call
//! [`Coordinator`], the one entry point.

pub mod api;
pub mod clock;
pub mod coordinator;
pub mod lease;
pub mod model;
pub mod rate_limit;
pub mod run_outputs;
pub mod scheduler;
pub mod store;

pub use api::*;
pub use clock::{Clock, ManualClock, SystemClock};
pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
pub use model::{Fence, Phase, RunSpecHeader, UnitState};
