//! The coordinator's persisted records: what survives a restart. Stored as JSON values in
//! sled (see `store`); field names are the schema, so add fields with `#[serde(default)]`.

use ase_common::scoring::UnitId;
use serde::{Deserialize, Serialize};

/// The two phases of a unit, as in `ase.v1.Phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Generate,
    Evaluate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Generate => "generate",
            Phase::Evaluate => "evaluate",
        }
    }
}

/// `(worker session, attempt)`: a result is accepted only from the lease that carries the
/// unit's current fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub session: u64,
    pub attempt: u64,
}

/// Where a unit is in its lifecycle. `EvaluateQueued` means "generated": the generation record
/// is committed and is never redone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    GenerateQueued,
    GenerateLeased,
    EvaluateQueued,
    EvaluateLeased,
    Done,
    Failed,
}

impl UnitState {
    /// The phase the unit is in, `None` once it is finished.
    pub fn phase(self) -> Option<Phase> {
        match self {
            UnitState::GenerateQueued | UnitState::GenerateLeased => Some(Phase::Generate),
            UnitState::EvaluateQueued | UnitState::EvaluateLeased => Some(Phase::Evaluate),
            UnitState::Done | UnitState::Failed => None,
        }
    }

    pub fn is_finished(self) -> bool {
        self.phase().is_none()
    }

    pub fn queued(phase: Phase) -> Self {
        match phase {
            Phase::Generate => UnitState::GenerateQueued,
            Phase::Evaluate => UnitState::EvaluateQueued,
        }
    }

    pub fn leased(phase: Phase) -> Self {
        match phase {
            Phase::Generate => UnitState::GenerateLeased,
            Phase::Evaluate => UnitState::EvaluateLeased,
        }
    }
}

/// One recorded infrastructure failure (or a lease given back) of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNote {
    pub phase: Phase,
    pub attempt: u64,
    pub worker: String,
    pub reason: String,
    /// False for `released` (drain, shutdown, run cancelled): no attempt was spent.
    pub counted: bool,
    pub at_unix_ms: u64,
}

/// A unit: one (task, round) of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: UnitId,
    /// Index of the task in the run's dataset.
    pub task_index: u32,
    pub state: UnitState,
    /// Leases granted so far over both phases: the `attempt` of the fence, never reused.
    pub attempt: u64,
    /// Infrastructure failures counted against the current phase's budget.
    pub phase_failures: u32,
    /// The current lease while the state is `*Leased`.
    pub lease: Option<u64>,
    /// The leases whose results were committed, per phase (for idempotent repeats).
    pub generated_by: Option<u64>,
    pub evaluated_by: Option<u64>,
    /// Model requests the committed generation made (retries inside the worker included).
    #[serde(default)]
    pub model_calls: u32,
    pub failures: Vec<FailureNote>,
    /// Agent mode: what the agents of generate attempts whose generation was not committed
    /// spent, as their workers last reported it (the committed attempt's figures are in its
    /// generation record; its entry is dropped when it commits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_attempts: Vec<AgentAttempt>,
}

/// What one generate attempt's coding agent spent, as its worker last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAttempt {
    pub attempt: u64,
    pub worker: String,
    pub usage: ase_common::agent_record::AttemptUsage,
}

/// A lease grant: who holds which phase of which unit, fenced, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub lease_id: u64,
    pub run_seq: u64,
    pub unit_index: u32,
    pub phase: Phase,
    pub worker_id: String,
    pub fence: Fence,
    pub granted_unix_ms: u64,
    /// Renewed by heartbeats (TTL).
    pub expires_unix_ms: u64,
    /// The phase's execution deadline; not renewed.
    pub deadline_unix_ms: u64,
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Completed,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// Limits of a run; the coordinator enforces the run-wide ones (see its module).
pub use ase_common::run_limits::RunLimits;

/// The fields of the run spec the coordinator needs; the spec itself stays opaque JSON. Read
/// leniently: unknown fields are ignored, missing ones take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSpecHeader {
    pub model_name: String,
    pub batch: String,
    pub rounds: u32,
    pub limits: RunLimits,
    pub base_url: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_context_token: Option<u64>,
    pub max_gen_token: Option<u64>,
    /// Tasks kept out of the run by a preflight, with their reasons (see `plan`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<ase_common::preflight::UnavailableTask>,
}

impl Default for RunSpecHeader {
    fn default() -> Self {
        Self {
            model_name: String::new(),
            batch: String::new(),
            rounds: 1,
            limits: RunLimits::default(),
            base_url: None,
            temperature: None,
            top_p: None,
            max_context_token: None,
            max_gen_token: None,
            unavailable: Vec::new(),
        }
    }
}

/// A run: its spec and inputs are stored verbatim next to this record (see `store`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    /// Key prefix of the run's units (big-endian).
    pub seq: u64,
    pub header: RunSpecHeader,
    pub dataset_name: String,
    pub dataset_sha256: String,
    pub context_name: String,
    pub context_sha256: Option<String>,
    pub total_units: u64,
    pub created_unix_ms: u64,
    pub state: RunState,
    #[serde(default)]
    pub completed_unix_ms: Option<u64>,
    /// A client handed the coordinator a model API key for this run. The key itself is never
    /// stored: after a restart the run waits for a client to supply it again.
    #[serde(default)]
    pub key_supplied: bool,
}

/// A worker known by name; its session number only grows, across coordinator restarts too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub name: String,
    pub worker_id: String,
    pub last_session: u64,
    #[serde(default)]
    pub draining: bool,
}
