//! The coordinator's state of ase-cluster: a durable store (sled), runs and their units, leases
//! fenced by (worker session, attempt), retries, scheduling with repo affinity and per-run
//! limits, and the outputs of completed runs, behind [`Coordinator`], the one entry point; and
//! its network side: the gRPC services (`grpc`), the server (`server`) and metrics (`metrics`).

pub mod api;
pub mod clock;
pub mod coordinator;
pub mod grpc;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod output_store;
pub mod rate_limit;
pub mod run_outputs;
pub mod scheduler;
pub mod server;
pub mod store;

pub use api::*;
pub use clock::{Clock, ManualClock, SystemClock};
pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
pub use model::{Fence, Phase, RunSpecHeader, UnitState};
