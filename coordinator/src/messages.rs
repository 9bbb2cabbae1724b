//! The typed boundary between the gRPC adapters (`grpc`) and the state (`state`): the input
//! and output of the coordinator's operations, one-to-one with the messages of
//! `proto/proto/ase.proto`, so the gRPC services are thin conversions and the state never sees
//! a wire type.

use crate::records::{Fence, Phase};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct SubmitRun {
    pub run_spec_json: Vec<u8>,
    pub dataset: Vec<u8>,
    pub dataset_name: String,
    /// Empty when the run has no context file.
    pub context: Vec<u8>,
    pub context_name: String,
    /// Kept in memory only.
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: String,
    pub resumed: bool,
    pub total_units: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub eval_slots: u32,
    pub generate_slots: u32,
    pub docker: bool,
    pub cached_repos: Vec<String>,
    pub version: String,
    /// Task images the worker holds; replaced by each heartbeat's list.
    pub task_images: Vec<String>,
    /// It cannot start privileged containers: v2 tasks that ask for one are not placed on it.
    pub unprivileged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub worker_id: String,
    pub session: u64,
    pub heartbeat_interval_ms: u32,
    pub lease_ttl_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    pub lease_id: u64,
    pub fence: Fence,
}

#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub worker_id: String,
    pub session: u64,
    pub active: Vec<LeaseRef>,
    pub free_eval_slots: u32,
    pub free_generate_slots: u32,
    /// Replaces the registered list when not empty.
    pub cached_repos: Vec<String>,
    /// Always replaces the last list (an empty one: every image evicted).
    pub task_images: Vec<String>,
    /// Agent mode: what the agents of generate leases spent so far, kept per attempt.
    pub agent_usage: Vec<LeaseUsage>,
    /// Replaces the last stats when present (absent: an older worker, or one without Docker).
    pub images: Option<crate::ImageStats>,
}

/// What the coding agent of one lease's attempt spent so far, as its worker reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseUsage {
    pub lease: LeaseRef,
    pub usage: ase_common::agent_record::AttemptUsage,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub revoked: Vec<LeaseRef>,
    pub drain: bool,
    pub reregister: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LeaseWork {
    pub worker_id: String,
    pub session: u64,
    pub max_generate: u32,
    pub max_evaluate: u32,
    /// Long poll: wait up to this long for work when none is queued.
    pub wait_ms: u32,
}

/// One granted phase of one unit, with everything the worker needs.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub lease: LeaseRef,
    pub run_id: String,
    pub instance_id: String,
    pub round: u32,
    pub phase: Phase,
    pub expires_unix_ms: u64,
    pub task_json: Arc<Vec<u8>>,
    /// Empty when the task has no context.
    pub context_json: Arc<Vec<u8>>,
    /// The run spec's digest; the worker fetches the spec by it ([`SpecRef`]).
    pub spec_digest: Arc<str>,
    /// Generate phase of a predictions run: this unit's own entries (JSONL).
    pub unit_predictions_jsonl: Vec<u8>,
    /// Evaluate phase: the committed generation record.
    pub generation_json: Option<Vec<u8>>,
    pub api_key: Option<String>,
    pub seed_repo: String,
    /// Evaluate phase of a v2 task: the image by digest the run pinned for it.
    pub pinned_image: Option<String>,
}

impl LeaseGrant {
    /// Bytes this grant adds to a LeaseWork reply (its inputs; the rest is small).
    pub fn payload_bytes(&self) -> usize {
        self.task_json.len()
            + self.context_json.len()
            + self.unit_predictions_jsonl.len()
            + self.generation_json.as_ref().map_or(0, Vec::len)
    }
}

/// A worker asks for a run's spec by the digest its lease named (FetchRunSpec).
#[derive(Debug, Clone)]
pub struct SpecRef {
    pub worker_id: String,
    pub run_id: String,
    pub digest: String,
}

#[derive(Debug, Clone, Default)]
pub struct LeaseReply {
    pub leases: Vec<LeaseGrant>,
    pub drain: bool,
    pub reregister: bool,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub worker_id: String,
    pub lease: LeaseRef,
    pub phase: Phase,
    pub result_json: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Counts against the unit's retry budget, unless the provider is to blame
    /// ([`InfraKind::Provider`]) or, for an evaluation, the task images' registry
    /// ([`InfraKind::Registry`]): the run pauses instead.
    Infrastructure,
    /// Given back without trying (drain, shutdown): no attempt counted.
    Released,
}

/// A worker's report of where a leased unit is (`ReportProgress`).
#[derive(Debug, Clone)]
pub struct Progress {
    pub worker_id: String,
    pub lease: LeaseRef,
    pub step: String,
}

/// A failure of the registry the run's task images come from (unreachable, 5xx, its pull
/// limit): the run's condition for its v2 evaluations, not the unit's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistryFault {
    Unreachable,
}

impl RegistryFault {
    /// The name shown in `paused: NAME`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryFault::Unreachable => "registry unreachable",
        }
    }
}

/// A failure of the model provider: the run's condition (every unit of the run would meet it),
/// not the unit's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderFault {
    /// HTTP 429.
    RateLimited,
    /// The account's quota or credit is exhausted.
    Quota,
    /// The key is missing, wrong or revoked (401/403).
    Auth,
    /// 5xx.
    ServerError,
    /// No answer in time (408, or the client's timeout).
    Timeout,
    /// The endpoint could not be reached.
    Network,
}

impl ProviderFault {
    pub const ALL: [ProviderFault; 6] = [
        ProviderFault::RateLimited,
        ProviderFault::Quota,
        ProviderFault::Auth,
        ProviderFault::ServerError,
        ProviderFault::Timeout,
        ProviderFault::Network,
    ];

    /// The name shown in `paused: NAME` and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderFault::RateLimited => "rate_limited",
            ProviderFault::Quota => "quota",
            ProviderFault::Auth => "auth",
            ProviderFault::ServerError => "server_error",
            ProviderFault::Timeout => "timeout",
            ProviderFault::Network => "network",
        }
    }

    /// Waiting mends it; a wrong key or an empty account waits for an operator (a key
    /// supplied again) instead.
    pub fn resumes_by_itself(self) -> bool {
        !matches!(self, ProviderFault::Quota | ProviderFault::Auth)
    }
}

/// Who is to blame for an infrastructure failure, as the worker classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfraKind {
    /// Not said (a worker of an earlier version).
    Unspecified,
    Repository,
    Configuration,
    Worker,
    Scanner,
    /// The endpoint refused the client in a way no wait mends (wrong URL or model name).
    ModelEndpoint,
    /// Uses up no attempt of the unit: the run's model calls are paused instead.
    Provider(ProviderFault),
    /// A task image's registry is unreachable or limiting the worker.
    Registry,
    /// The task's image does not exist.
    TaskImage,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub worker_id: String,
    pub lease: LeaseRef,
    pub kind: FailureKind,
    pub reason: String,
    /// `FailureKind::Infrastructure`: who is to blame.
    pub infra: InfraKind,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    pub accepted: bool,
    pub reason: String,
    pub duplicate: bool,
}

impl Ack {
    pub fn accepted() -> Self {
        Self {
            accepted: true,
            ..Self::default()
        }
    }

    pub fn duplicate() -> Self {
        Self {
            accepted: true,
            reason: "already committed".into(),
            duplicate: true,
        }
    }

    pub fn refused(reason: impl Into<String>) -> Self {
        Self {
            accepted: false,
            reason: reason.into(),
            duplicate: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub queued: u64,
    pub leased: u64,
    pub done: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunProgress {
    pub run_id: String,
    /// running, scoring, completed, cancelled.
    pub state: String,
    pub total_units: u64,
    pub generate: PhaseCounts,
    pub evaluate: PhaseCounts,
    /// Negative when unknown.
    pub eta_seconds: f64,
    pub retries: u64,
    pub model_calls: u64,
    pub model: String,
    pub batch: String,
    /// Per phase: seconds until every unit is through it; negative when unknown.
    pub generate_eta_seconds: f64,
    pub evaluate_eta_seconds: f64,
    /// Leased units by the last step their worker reported ("leased" when none yet).
    pub leased_by_step: std::collections::BTreeMap<String, u64>,
    /// How long until the run's generations are tried again after provider failures; 0 when
    /// not paused or when paused until a key is supplied.
    pub pause_remaining_ms: u64,
    /// Provider failures of the run's generations since this process loaded it.
    pub provider_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub name: String,
    pub alive: bool,
    pub draining: bool,
    pub eval_slots: u32,
    pub generate_slots: u32,
    pub running: u32,
    pub cached_repos: Vec<String>,
    /// [`NO_HEARTBEAT`] when the worker has not been heard from since the coordinator started.
    pub last_heartbeat_ms_ago: u64,
    pub session: u64,
    pub completed: u64,
    pub running_generate: u32,
    pub running_evaluate: u32,
    /// Task images the worker last said it holds, sorted.
    pub task_images: Vec<String>,
    /// Its last heartbeat's image stats (None: it has not sent any to this process).
    pub images: Option<crate::ImageStats>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    pub name: String,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedReport {
    pub run_id: String,
    pub complete: bool,
    pub files: Vec<ReportFile>,
}

/// `last_heartbeat_ms_ago` of a worker not heard from since the coordinator started.
pub const NO_HEARTBEAT: u64 = u64::MAX;
