//! What the coordinator keeps in memory: the indexes that scheduling, leases and progress need
//! without a store read. Everything here is rebuilt from the store at open (see `recovery`);
//! full unit records, task inputs and results stay in the store.

use super::pause::{ProviderPause, RegistryPause};
use super::rate_limit::TokenBucket;
use super::scheduler::RepoQueues;
use crate::messages::{Capabilities, LeaseRef};
use crate::records::{LeaseRecord, Phase, RunRecord, UnitState, WorkerRecord};
use crate::CoordinatorError;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Index of a phase in per-phase arrays.
pub(super) fn pi(phase: Phase) -> usize {
    match phase {
        Phase::Generate => 0,
        Phase::Evaluate => 1,
    }
}

/// A unit in memory: what scheduling and progress need. Its full record (attempts, failures,
/// fences) is in the store and read when the unit changes, so memory stays small per unit.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitMem {
    pub(super) state: UnitState,
    /// A generation was committed (a failed unit then failed in its evaluate phase).
    pub(super) generated: bool,
}

impl UnitMem {
    /// A unit never leased.
    pub(super) const QUEUED: UnitMem = UnitMem {
        state: UnitState::GenerateQueued,
        generated: false,
    };
}

/// The last failed attempt to finish a run (its files could not be written).
#[derive(Debug, Clone)]
pub(super) struct FinishFailure {
    /// Failed attempts in a row.
    pub(super) attempts: u32,
    /// No new attempt before this time (coordinator clock).
    pub(super) retry_at_ms: u64,
    /// The last error, logged when it first appears rather than at every attempt.
    pub(super) error: String,
}

pub(super) struct RunMem {
    pub(super) record: RunRecord,
    /// The spec as workers fetch it (a predictions run's answers are with its tasks).
    pub(super) spec_json: Arc<Vec<u8>>,
    /// sha256 (hex) of `spec_json`: leases name the spec by it.
    pub(super) spec_digest: Arc<str>,
    /// Repo of each task, as an index into `repos` (for repo affinity).
    pub(super) task_repo: Vec<u32>,
    pub(super) repos: Vec<String>,
    /// v2: image key of each task, as an index into `images` (for image affinity of
    /// evaluations; see `affinity`). Empty for runs placed by repo alone.
    pub(super) task_image: Vec<u32>,
    pub(super) images: Vec<String>,
    pub(super) units: Vec<UnitMem>,
    pub(super) queues: [RepoQueues; 2],
    pub(super) inflight_generate: u32,
    /// The execution deadline its generate phases need, when its spec sets a model request
    /// timeout.
    pub(super) generate_deadline_ms: Option<u64>,
    pub(super) bucket: TokenBucket,
    /// Generate leases held back after provider failures (memory only, see `provider_pause`).
    pub(super) pause: ProviderPause,
    /// Evaluate leases held back after the task images' registry failed (memory only).
    pub(super) registry_pause: RegistryPause,
    /// v2: the image each task runs in, by digest, from its first evaluation (durable).
    pub(super) image_pins: ImagePins,
    pub(super) api_key: Option<String>,
    pub(super) retries: u64,
    pub(super) model_calls: u64,
    pub(super) loaded_ms: u64,
    pub(super) finished_since_load: u64,
    /// Units whose generate phase ended (committed or out of retries) since `loaded_ms`.
    pub(super) generated_since_load: u64,
    /// Units not `Done` nor `Failed`: the run completes when it reaches 0.
    pub(super) unfinished: u64,
    /// Handed to the finisher, which has not finished it yet (between the last unit and
    /// `Completed`, or until the attempt fails).
    pub(super) finishing: bool,
    /// Set while the run's files cannot be written; cleared when it completes.
    pub(super) finish_failure: Option<FinishFailure>,
}

impl RunMem {
    pub(super) fn new(record: RunRecord, spec_json: Vec<u8>, keys: TaskKeys, now: u64) -> RunMem {
        let TaskKeys {
            repos: (task_repo, repos),
            images: (task_image, images),
        } = keys;
        let rpm = record.header.limits.requests_per_minute;
        let units = Vec::with_capacity(record.total_units as usize);
        let generate_deadline_ms = super::deadline::run_generate_deadline_ms(&spec_json);
        RunMem {
            generate_deadline_ms,
            record,
            spec_digest: super::plan::sha256_hex(&spec_json).into(),
            spec_json: Arc::new(spec_json),
            task_repo,
            repos,
            task_image,
            images,
            units,
            queues: [RepoQueues::default(), RepoQueues::default()],
            inflight_generate: 0,
            bucket: TokenBucket::new(rpm, now),
            pause: ProviderPause::default(),
            registry_pause: RegistryPause::default(),
            image_pins: ImagePins::default(),
            api_key: None,
            retries: 0,
            model_calls: 0,
            loaded_ms: now,
            finished_since_load: 0,
            generated_since_load: 0,
            unfinished: 0,
            finishing: false,
            finish_failure: None,
        }
    }

    pub(super) fn rounds(&self) -> u32 {
        self.record.header.rounds.max(1)
    }

    /// Units are numbered task by task, round by round (see `submit_run`).
    pub(super) fn task_of(&self, index: u32) -> u32 {
        index / self.rounds()
    }

    pub(super) fn repo_of(&self, index: u32) -> &str {
        &self.repos[self.task_repo[self.task_of(index) as usize] as usize]
    }

    /// What a queued unit of `phase` is placed by (see `affinity`): its task's image for a v2
    /// evaluation, its repo otherwise.
    pub(super) fn queue_key(&self, phase: Phase, index: u32) -> String {
        if phase == Phase::Evaluate {
            if let Some(&id) = self.task_image.get(self.task_of(index) as usize) {
                let key = &self.images[id as usize];
                if !key.is_empty() {
                    return key.clone();
                }
            }
        }
        self.repo_of(index).to_string()
    }

    pub(super) fn all_finished(&self) -> bool {
        self.unfinished == 0
    }

    /// A unit reached `Done` or `Failed`.
    pub(super) fn unit_finished(&mut self) {
        self.unfinished = self.unfinished.saturating_sub(1);
        self.finished_since_load += 1;
    }

    pub(super) fn max_attempts(&self) -> u32 {
        self.record.header.limits.max_attempts.max(1)
    }

    /// The run was given a model API key, which only lives in memory, and this process does
    /// not hold it (it restarted): no model call can be made until a client supplies it again.
    pub(super) fn waiting_for_key(&self) -> bool {
        self.record.key_supplied && self.api_key.is_none()
    }
}

pub(super) struct WorkerMem {
    pub(super) record: WorkerRecord,
    /// Registered with this process; false for workers only known from the registry.
    pub(super) live_session: bool,
    pub(super) caps: Capabilities,
    pub(super) cached: HashSet<String>,
    /// `None` until the worker is heard from by this process.
    pub(super) last_heartbeat_ms: Option<u64>,
    pub(super) leases: BTreeSet<u64>,
    pub(super) running: [u32; 2],
    pub(super) completed: u64,
    /// Leases to tell the worker to abandon at its next heartbeat.
    pub(super) revoked: Vec<LeaseRef>,
    /// Its last heartbeat's image stats (memory only).
    pub(super) images: Option<crate::ImageStats>,
}

impl WorkerMem {
    /// A worker as the store knows it, before it registers with this process.
    pub(super) fn from_registry(record: WorkerRecord) -> WorkerMem {
        WorkerMem {
            record,
            live_session: false,
            caps: Capabilities::default(),
            cached: HashSet::new(),
            last_heartbeat_ms: None,
            leases: BTreeSet::new(),
            running: [0, 0],
            completed: 0,
            revoked: Vec::new(),
            images: None,
        }
    }
}

pub(super) struct LeaseMem {
    pub(super) record: LeaseRecord,
    /// Granted before this process started.
    pub(super) recovered: bool,
    /// The last step its worker reported (`ReportProgress`).
    pub(super) step: Option<String>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) runs: BTreeMap<u64, RunMem>,
    pub(super) run_by_id: HashMap<String, u64>,
    pub(super) workers: BTreeMap<String, WorkerMem>,
    pub(super) leases: HashMap<u64, LeaseMem>,
}

impl State {
    /// The run's sequence number, or `UnknownRun`.
    pub(super) fn seq_of(&self, run_id: &str) -> Result<u64, CoordinatorError> {
        self.run_by_id
            .get(run_id)
            .copied()
            .ok_or_else(|| CoordinatorError::UnknownRun(run_id.to_string()))
    }
}

/// The placement keys of a run's tasks: their repos, and (v2) their images' keys (empty for
/// tasks placed by repo alone).
#[derive(Default)]
pub(super) struct TaskKeys {
    pub(super) repos: (Vec<u32>, Vec<String>),
    pub(super) images: (Vec<u32>, Vec<String>),
}

/// Repo of each task as an index into a list of distinct repos, built task by task.
#[derive(Default)]
pub(super) struct RepoIndex {
    ids: HashMap<String, u32>,
    task_repo: Vec<u32>,
    repos: Vec<String>,
}

impl RepoIndex {
    pub(super) fn with_capacity(tasks: usize) -> RepoIndex {
        RepoIndex {
            task_repo: Vec::with_capacity(tasks),
            ..RepoIndex::default()
        }
    }

    pub(super) fn push(&mut self, repo: &str) {
        let id = match self.ids.get(repo) {
            Some(&id) => id,
            None => {
                let id = self.repos.len() as u32;
                self.repos.push(repo.to_string());
                self.ids.insert(repo.to_string(), id);
                id
            }
        };
        self.task_repo.push(id);
    }

    /// (repo index of each task, the distinct repos).
    pub(super) fn finish(self) -> (Vec<u32>, Vec<String>) {
        (self.task_repo, self.repos)
    }
}

/// The images a v2 run's tasks were pinned to: task index -> `name@sha256:…`, set by the
/// first evaluation of each task that ran in an image pulled from a registry; later evaluate
/// leases carry it, so a tag moved mid-run changes nothing. Stored whole as a run input (one
/// entry per task at most: small).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct ImagePins(pub(crate) std::collections::BTreeMap<u32, String>);

impl RunMem {
    /// Records the image `digest` an evaluation of task `task` ran in. Returns the pins to
    /// store when this pinned the task. Only a registry digest pins (an image id names a
    /// local image, which a worker elsewhere cannot pull); a digest other than the pin (two
    /// first evaluations raced a moved tag) is logged, the pin kept.
    pub(super) fn pin_image(
        &mut self,
        task: u32,
        digest: String,
        unit: &impl std::fmt::Display,
    ) -> Option<Vec<u8>> {
        if !digest.contains("@sha256:") {
            return None;
        }
        match self.image_pins.0.get(&task) {
            Some(pinned) if *pinned != digest => {
                tracing::warn!(
                    run = %self.record.run_id,
                    %unit,
                    %pinned,
                    ran_in = %digest,
                    "a unit ran in another image than its task's pin (its tag moved before \
                     the pin was known)"
                );
                None
            }
            Some(_) => None,
            None => {
                self.image_pins.0.insert(task, digest);
                Some(serde_json::to_vec(&self.image_pins).expect("pins serialise"))
            }
        }
    }

    /// The pin of task `task`, for its evaluate leases.
    pub(super) fn image_pin(&self, task: u32) -> Option<String> {
        self.image_pins.0.get(&task).cloned()
    }
}
