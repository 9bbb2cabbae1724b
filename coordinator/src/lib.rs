//! The coordinator of ase-cluster: its state (`state`: a durable store (sled), runs and their
//! units, leases fenced by (worker session, attempt), retries, scheduling with repo affinity and
//! per-run limits, the background finisher) behind [`Coordinator`], the one entry point; the
//! persisted records (`records`) and the store (`store`); a completed run's files (`outputs`);
//! and its network side: the typed messages between the gRPC adapters and the state
//! (`messages`), the gRPC services and server (`grpc`) and metrics (`metrics`).

pub mod clock;
pub mod grpc;
pub mod image_stats;
pub mod join_tokens;
pub mod messages;
pub mod metrics;
pub mod outputs;
pub mod records;
pub mod state;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use image_stats::{ImageStats, PullUnderWay};
pub use messages::*;
pub use records::{Fence, Phase, RunSpecHeader, UnitState};
pub use state::{
    Coordinator, CoordinatorConfig, CoordinatorError, ModelCallGrant, PausePolicy, FINISH_RETRY_MS,
};
