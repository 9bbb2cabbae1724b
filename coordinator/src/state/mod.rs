//! The coordinator: one `Arc`-shareable entry point over the durable store and the in-memory
//! scheduling state, for the gRPC services to call.
//!
//! Every operation takes the state lock, applies its transition in memory and as one sled
//! transaction, releases the lock, and waits for the store to be durable (group commit) before
//! it returns: nothing is acknowledged that a crash could lose. A store error is fatal for the
//! process: memory may then be ahead of the disk, and a restart rebuilds it from the disk.
//!
//! Restart: runs, units, committed records, lease grants and the worker registry are reloaded.
//! Leases granted before the restart stay current with a fresh TTL, so a worker that reports a
//! result in flight is still accepted; when the worker re-registers (it must: sessions are not
//! known to the new process) its old leases are void and their units are queued again at once,
//! without counting an attempt (the coordinator, not the unit, caused the loss). Leases nobody
//! claims expire with their TTL and count as an attempt.

mod lease_end;
mod rate_limit;
mod scheduler;

use crate::clock::Clock;
use crate::messages::*;
use crate::outputs::{
    self, EvaluationFacts, GenerationFacts, OutputError, OutputStore, RunOutputInput, TaskFacts,
};
use crate::records::{
    FailureNote, Fence, LeaseRecord, Phase, RunRecord, RunSpecHeader, RunState, UnitRecord,
    UnitState, WorkerRecord,
};
use crate::store::{CommittedLease, Op, RunInput, Store, StoreError, StoreOptions, TaskInputs};
use ase_common::dataset::{
    self, ContextSet, DatasetVersion, Task, TaskContext, TaskSpec, VisitError,
};
use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use lease_end::{check_fence, expiry, Expiry};
use rate_limit::TokenBucket;
use scheduler::RepoQueues;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of one result (generation or evaluation record) accepted.
pub const MAX_RESULT_BYTES: usize = 32 << 20;
/// Bytes of a worker name.
pub const MAX_WORKER_NAME: usize = 256;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub heartbeat_interval_ms: u32,
    /// A lease not renewed by a heartbeat for this long is lost (worker liveness).
    pub lease_ttl_ms: u32,
    /// Execution deadlines per phase: a live worker stuck on one unit loses it.
    pub generate_deadline_ms: u64,
    pub evaluate_deadline_ms: u64,
    /// When set, a completed run's files are also written under `output_dir/{run_id}/`.
    pub output_dir: Option<PathBuf>,
    /// Bytes of the store's page cache (the bound of its memory).
    pub store_cache_bytes: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 2_000,
            lease_ttl_ms: 10_000,
            generate_deadline_ms: 20 * 60_000,
            evaluate_deadline_ms: 40 * 60_000,
            output_dir: None,
            store_cache_bytes: StoreOptions::default().cache_bytes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dataset {name}: {source}")]
    Dataset {
        name: String,
        source: dataset::DatasetError,
    },
    #[error("run spec: {0}")]
    Spec(String),
    #[error("run {run_id}: {message}")]
    Conflict { run_id: String, message: String },
    #[error("unknown run {0}")]
    UnknownRun(String),
    #[error("worker name: {0}")]
    WorkerName(String),
    #[error(transparent)]
    Outputs(#[from] OutputError),
    #[error(
        "run {run_id}: its files are {bytes} bytes, more than one reply carries ({limit} bytes); \
         they are on the coordinator's disk under {path} (and under its --output-dir when set)"
    )]
    ReportTooLarge {
        run_id: String,
        bytes: u64,
        limit: u64,
        path: PathBuf,
    },
}

fn pi(phase: Phase) -> usize {
    match phase {
        Phase::Generate => 0,
        Phase::Evaluate => 1,
    }
}

/// A unit in memory: what scheduling and progress need. Its full record (attempts, failures,
/// fences) is in the store and read when the unit changes, so memory stays small per unit.
#[derive(Debug, Clone, Copy)]
struct UnitMem {
    state: UnitState,
    /// A generation was committed (a failed unit then failed in its evaluate phase).
    generated: bool,
}

struct RunMem {
    record: RunRecord,
    spec_json: Arc<Vec<u8>>,
    /// Repo of each task, as an index into `repos` (for repo affinity).
    task_repo: Vec<u32>,
    repos: Vec<String>,
    units: Vec<UnitMem>,
    queues: [RepoQueues; 2],
    inflight_generate: u32,
    bucket: TokenBucket,
    api_key: Option<String>,
    retries: u64,
    model_calls: u64,
    loaded_ms: u64,
    finished_since_load: u64,
    /// Units whose generate phase ended (committed or out of retries) since `loaded_ms`.
    generated_since_load: u64,
    /// Units not `Done` nor `Failed`: the run completes when it reaches 0.
    unfinished: u64,
    /// Outputs are being computed (between the last unit and `Completed`).
    finishing: bool,
}

impl RunMem {
    fn rounds(&self) -> u32 {
        self.record.header.rounds.max(1)
    }

    /// Units are numbered task by task, round by round (see `submit_run`).
    fn task_of(&self, index: u32) -> u32 {
        index / self.rounds()
    }

    fn repo_of(&self, index: u32) -> &str {
        &self.repos[self.task_repo[self.task_of(index) as usize] as usize]
    }

    fn all_finished(&self) -> bool {
        self.unfinished == 0
    }

    /// A unit reached `Done` or `Failed`.
    fn unit_finished(&mut self) {
        self.unfinished = self.unfinished.saturating_sub(1);
        self.finished_since_load += 1;
    }

    fn max_attempts(&self) -> u32 {
        self.record.header.limits.max_attempts.max(1)
    }

    /// The run was given a model API key, which only lives in memory, and this process does
    /// not hold it (it restarted): no model call can be made until a client supplies it again.
    fn waiting_for_key(&self) -> bool {
        self.record.key_supplied && self.api_key.is_none()
    }
}

struct WorkerMem {
    record: WorkerRecord,
    /// Registered with this process; false for workers only known from the registry.
    live_session: bool,
    caps: Capabilities,
    cached: HashSet<String>,
    /// `None` until the worker is heard from by this process.
    last_heartbeat_ms: Option<u64>,
    leases: BTreeSet<u64>,
    running: [u32; 2],
    completed: u64,
    /// Leases to tell the worker to abandon at its next heartbeat.
    revoked: Vec<LeaseRef>,
}

struct LeaseMem {
    record: LeaseRecord,
    /// Granted before this process started.
    recovered: bool,
    /// The last step its worker reported (`ReportProgress`).
    step: Option<String>,
}

#[derive(Default)]
struct State {
    runs: BTreeMap<u64, RunMem>,
    run_by_id: HashMap<String, u64>,
    workers: BTreeMap<String, WorkerMem>,
    leases: HashMap<u64, LeaseMem>,
}

impl State {
    /// The run's sequence number, or `UnknownRun`.
    fn seq_of(&self, run_id: &str) -> Result<u64, CoordinatorError> {
        self.run_by_id
            .get(run_id)
            .copied()
            .ok_or_else(|| CoordinatorError::UnknownRun(run_id.to_string()))
    }
}

/// What a lease's end does to its unit.
enum LeaseEnd {
    /// Counts against the retry budget.
    Counted(String),
    /// No attempt spent.
    Released(String),
}

pub struct Coordinator {
    store: Store,
    /// Completed runs' files, beside the database.
    outputs: OutputStore,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    config: CoordinatorConfig,
    changes: tokio::sync::watch::Sender<u64>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the header fields the coordinator needs from the opaque spec.
pub fn parse_spec_header(spec_json: &[u8]) -> Result<RunSpecHeader, CoordinatorError> {
    let value: serde_json::Value = serde_json::from_slice(spec_json)
        .map_err(|e| CoordinatorError::Spec(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CoordinatorError::Spec("not a JSON object".into()));
    }
    let header: RunSpecHeader = serde_json::from_value(value)
        .map_err(|e| CoordinatorError::Spec(format!("a field has the wrong type: {e}")))?;
    if header.rounds == 0 {
        return Err(CoordinatorError::Spec("`rounds` must be at least 1".into()));
    }
    ase_common::upstream_io::run_name(&header.model_name, &header.batch)
        .map_err(|e| CoordinatorError::Spec(e.to_string()))?;
    Ok(header)
}

/// What a first pass over a dataset learns, so that a second pass can write each task's
/// inputs as it parses it: the parsed dataset is never held whole (a 100,000-task dataset
/// would take hundreds of MB).
struct DatasetPlan {
    tasks: usize,
    /// The seed of mutated v1 tasks by vuln_source: the last seed in file order, as
    /// `Dataset::seed_of` finds it (it may come after the mutated task). Only for vuln_sources
    /// that a mutated task has.
    seeds: HashMap<String, SeedRef>,
}

struct SeedRef {
    instance_id: String,
    repo: String,
}

/// Tasks written to the store per call while a run is submitted, so that only this many
/// tasks' inputs are in memory at once.
const SUBMIT_BATCH: usize = 1_000;

fn dataset_error(name: &str) -> impl FnOnce(dataset::DatasetError) -> CoordinatorError + '_ {
    move |source| CoordinatorError::Dataset {
        name: name.to_string(),
        source,
    }
}

/// Validates the dataset (every problem at once), checks it has tasks of one version, and
/// finds the seeds of its mutated tasks.
fn plan_dataset(dataset_name: &str, dataset_bytes: &[u8]) -> Result<DatasetPlan, CoordinatorError> {
    let mut versions: Vec<DatasetVersion> = Vec::new();
    let mut seeds: HashMap<String, SeedRef> = HashMap::new();
    let mut mutated_sources: HashSet<String> = HashSet::new();
    let summary = dataset::visit_task_file(Path::new(dataset_name), dataset_bytes, |_, t| {
        if !versions.contains(&t.version()) {
            versions.push(t.version());
        }
        match &t.spec {
            TaskSpec::V1(s) if s.seed => {
                seeds.insert(
                    t.vuln_source,
                    SeedRef {
                        instance_id: t.instance_id,
                        repo: t.repo,
                    },
                );
            }
            TaskSpec::V1(_) => {
                mutated_sources.insert(t.vuln_source);
            }
            TaskSpec::V2(_) => {}
        }
        Ok::<(), Infallible>(())
    })
    .map_err(|e| match e {
        VisitError::Dataset(source) => dataset_error(dataset_name)(source),
        VisitError::Callback(never) => match never {},
    })?;
    if summary.tasks == 0 {
        return Err(CoordinatorError::Spec(format!(
            "dataset {dataset_name} has no task"
        )));
    }
    outputs::dataset_version(dataset_name, versions.into_iter())?;
    seeds.retain(|source, _| mutated_sources.contains(source));
    Ok(DatasetPlan {
        tasks: summary.tasks,
        seeds,
    })
}

fn parse_context_file(
    context_name: &str,
    context_bytes: &[u8],
) -> Result<Option<ContextSet>, CoordinatorError> {
    if context_bytes.is_empty() {
        return Ok(None);
    }
    dataset::parse_contexts(Path::new(context_name), context_bytes)
        .map(Some)
        .map_err(dataset_error(context_name))
}

/// Repo of each task as an index into a list of distinct repos, built task by task.
#[derive(Default)]
struct RepoIndex {
    ids: HashMap<String, u32>,
    task_repo: Vec<u32>,
    repos: Vec<String>,
}

impl RepoIndex {
    fn push(&mut self, repo: &str) {
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

    fn finish(self) -> (Vec<u32>, Vec<String>) {
        (self.task_repo, self.repos)
    }
}

/// The record of a unit never leased (units are numbered task by task, round by round).
fn fresh_unit(instance_id: String, task_index: u32, round: u32) -> UnitRecord {
    UnitRecord {
        unit: UnitId::new(instance_id, round),
        task_index,
        state: UnitState::GenerateQueued,
        attempt: 0,
        phase_failures: 0,
        lease: None,
        generated_by: None,
        evaluated_by: None,
        model_calls: 0,
        failures: Vec::new(),
    }
}

/// Repo of each task as an index into a list of distinct repos.
fn repo_index<'a>(repos_of_tasks: impl Iterator<Item = &'a str>) -> (Vec<u32>, Vec<String>) {
    let mut index = RepoIndex::default();
    for repo in repos_of_tasks {
        index.push(repo);
    }
    index.finish()
}

fn new_run_mem(
    record: RunRecord,
    spec_json: Vec<u8>,
    (task_repo, repos): (Vec<u32>, Vec<String>),
    now: u64,
) -> RunMem {
    let rpm = record.header.limits.requests_per_minute;
    let units = Vec::with_capacity(record.total_units as usize);
    RunMem {
        record,
        spec_json: Arc::new(spec_json),
        task_repo,
        repos,
        units,
        queues: [RepoQueues::default(), RepoQueues::default()],
        inflight_generate: 0,
        bucket: TokenBucket::new(rpm, now),
        api_key: None,
        retries: 0,
        model_calls: 0,
        loaded_ms: now,
        finished_since_load: 0,
        generated_since_load: 0,
        unfinished: 0,
        finishing: false,
    }
}

impl Coordinator {
    /// Opens the store at `path` and rebuilds the in-memory state from it.
    pub fn open(
        path: &Path,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, CoordinatorError> {
        let store = Store::open(
            path,
            StoreOptions {
                cache_bytes: config.store_cache_bytes,
            },
        )?;
        let now = clock.now_ms();
        let mut st = State::default();
        let mut ops = Vec::new();
        for w in store.workers()? {
            st.workers.insert(
                w.worker_id.clone(),
                WorkerMem {
                    record: w,
                    live_session: false,
                    caps: Capabilities::default(),
                    cached: HashSet::new(),
                    last_heartbeat_ms: None,
                    leases: BTreeSet::new(),
                    running: [0, 0],
                    completed: 0,
                    revoked: Vec::new(),
                },
            );
        }
        for record in store.runs()? {
            let seq = record.seq;
            let spec = store.run_input(seq, RunInput::Spec)?.unwrap_or_default();
            let mut repos_of_tasks = Vec::new();
            store.for_each_task(seq, |t| {
                repos_of_tasks.push(t.repo);
                Ok(())
            })?;
            let expected = record.total_units / u64::from(record.header.rounds.max(1));
            if repos_of_tasks.len() as u64 != expected {
                // Written by an older version (whole dataset blob, no per-task records).
                return Err(CoordinatorError::Store(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    tree: "tasks",
                    key: record.run_id.clone(),
                    message: format!(
                        "{} task records for a run of {expected} tasks: move the database \
                         aside and resubmit the run",
                        repos_of_tasks.len()
                    ),
                }));
            }
            let repos = repo_index(repos_of_tasks.iter().map(String::as_str));
            drop(repos_of_tasks);
            let mut run = new_run_mem(record, spec, repos, now);
            // Units without a record never left the generate queue.
            run.units = vec![
                UnitMem {
                    state: UnitState::GenerateQueued,
                    generated: false,
                };
                run.record.total_units as usize
            ];
            let total = run.units.len();
            let mut out_of_range = None;
            store.for_each_unit(seq, |index, u| {
                let Some(m) = run.units.get_mut(index as usize) else {
                    out_of_range.get_or_insert(index);
                    return;
                };
                *m = UnitMem {
                    state: u.state,
                    generated: u.generated_by.is_some(),
                };
                run.retries += u.failures.iter().filter(|f| f.counted).count() as u64;
                run.model_calls += u64::from(u.model_calls);
            })?;
            if let Some(index) = out_of_range {
                return Err(CoordinatorError::Store(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    tree: "units",
                    key: format!("run {} unit {index}", run.record.run_id),
                    message: format!("the run has only {total} units"),
                }));
            }
            for index in 0..total as u32 {
                let state = run.units[index as usize].state;
                if !state.is_finished() {
                    run.unfinished += 1;
                }
                let repo = run.repo_of(index).to_string();
                match state {
                    UnitState::GenerateQueued => run.queues[0].push(&repo, index),
                    UnitState::EvaluateQueued => run.queues[1].push(&repo, index),
                    _ => {}
                }
            }
            st.run_by_id.insert(run.record.run_id.clone(), seq);
            st.runs.insert(seq, run);
        }
        for mut lease in store.leases()? {
            let current = st.runs.get(&lease.run_seq).is_some_and(|r| {
                r.units
                    .get(lease.unit_index as usize)
                    .is_some_and(|u| u.state == UnitState::leased(lease.phase))
            }) && store
                .unit(lease.run_seq, lease.unit_index)?
                .is_some_and(|u| u.lease == Some(lease.lease_id));
            if !current {
                ops.push(Op::DeleteLease(lease.lease_id));
                continue;
            }
            // Heartbeat times were not kept: a fresh TTL from now.
            lease.expires_unix_ms = now + u64::from(config.lease_ttl_ms);
            let run = st.runs.get_mut(&lease.run_seq).expect("checked above");
            if lease.phase == Phase::Generate {
                run.inflight_generate += 1;
            }
            if let Some(w) = st.workers.get_mut(&lease.worker_id) {
                w.leases.insert(lease.lease_id);
                w.running[pi(lease.phase)] += 1;
            }
            st.leases.insert(
                lease.lease_id,
                LeaseMem {
                    record: lease,
                    recovered: true,
                    step: None,
                },
            );
        }
        // A unit marked leased whose grant is gone goes back to its queue.
        let held: HashSet<(u64, u32)> = st
            .leases
            .values()
            .map(|l| (l.record.run_seq, l.record.unit_index))
            .collect();
        for (seq, run) in st.runs.iter_mut() {
            for i in 0..run.units.len() as u32 {
                let state = run.units[i as usize].state;
                let leased = matches!(state, UnitState::GenerateLeased | UnitState::EvaluateLeased);
                if leased && !held.contains(&(*seq, i)) {
                    let phase = state.phase().expect("leased is a phase");
                    let repo = run.repo_of(i).to_string();
                    // A leased unit was written when it was leased.
                    let Some(mut u) = store.unit(*seq, i)? else {
                        continue;
                    };
                    u.state = UnitState::queued(phase);
                    u.lease = None;
                    run.units[i as usize].state = u.state;
                    run.queues[pi(phase)].push_front(&repo, i);
                    ops.push(Op::Unit {
                        seq: *seq,
                        index: i,
                        record: u,
                    });
                }
            }
        }
        store.apply(&ops)?;
        store.durable_blocking()?;
        let coordinator = Arc::new(Self {
            outputs: OutputStore::new(path),
            store,
            state: Mutex::new(st),
            clock,
            config,
            changes: tokio::sync::watch::channel(0).0,
        });
        // Runs whose last unit finished just before a crash get their outputs now.
        let pending: Vec<u64> = {
            let mut st = coordinator.lock();
            st.runs
                .values_mut()
                .filter(|r| r.record.state == RunState::Running && r.all_finished())
                .map(|r| {
                    r.finishing = true;
                    r.record.seq
                })
                .collect()
        };
        for seq in pending {
            coordinator.finish_run_blocking(seq)?;
        }
        Ok(coordinator)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves memory possibly ahead of the store; the
        // store is the truth and the state stays usable for reads.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// A unit's record: the stored one, or the record of a unit never leased.
    fn unit_record(&self, seq: u64, index: u32, rounds: u32) -> Result<UnitRecord, StoreError> {
        if let Some(u) = self.store.unit(seq, index)? {
            return Ok(u);
        }
        let task_index = index / rounds;
        let task = self.store.task(seq, task_index)?;
        Ok(fresh_unit(task.instance_id, task_index, index % rounds + 1))
    }

    /// Every unit's record of a run, in index order.
    fn all_unit_records(&self, seq: u64, rounds: u32) -> Result<Vec<UnitRecord>, StoreError> {
        let mut units = Vec::new();
        let mut task_index = 0u32;
        self.store.for_each_task(seq, |t| {
            for round in 1..=rounds {
                units.push(fresh_unit(t.instance_id.clone(), task_index, round));
            }
            task_index += 1;
            Ok(())
        })?;
        self.store.for_each_unit(seq, |index, u| {
            if let Some(slot) = units.get_mut(index as usize) {
                *slot = u;
            }
        })?;
        Ok(units)
    }

    /// The store (for measurements: flush counts).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bumped after every durable transition (for WatchRun and long polls).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(), CoordinatorError> {
        if !ops.is_empty() {
            self.store.durable().await?;
            self.changes.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Runs
    // ------------------------------------------------------------------------------------

    /// Creates a run, or resumes the run of the same (model, batch) when the dataset is the
    /// same one.
    pub async fn submit_run(&self, req: SubmitRun) -> Result<Submitted, CoordinatorError> {
        let header = parse_spec_header(&req.run_spec_json)?;
        let run_id = ase_common::upstream_io::run_name(&header.model_name, &header.batch)
            .map_err(|e| CoordinatorError::Spec(e.to_string()))?;
        let dataset_sha256 = sha256_hex(&req.dataset);
        if let Some(submitted) = self.resume_run(&run_id, &dataset_sha256, &req).await? {
            return Ok(submitted);
        }
        let SubmitRun {
            run_spec_json,
            dataset,
            dataset_name,
            context,
            context_name,
            api_key,
        } = req;
        // Parsed outside the lock: datasets can be large. The bytes are not kept: each task's
        // inputs are stored on their own, and only the digests go into the report.
        let plan = plan_dataset(&dataset_name, &dataset)?;
        let contexts = parse_context_file(&context_name, &context)?;
        drop(context);
        let context_sha256 = contexts.as_ref().map(|c| c.sha256.clone());
        let now = self.clock.now_ms();
        let seq = self.store.next_id()?;
        let rounds = header.rounds;
        // Only the tasks are written: a unit has no record until it is first leased (see
        // `unit_record`), so a run of any size is submitted with one write per task.
        // Nothing refers to these records until the run record is committed below: a crash
        // in between leaves records no run reaches.
        let repos =
            self.write_task_inputs(seq, &dataset_name, &dataset, &plan, contexts.as_ref())?;
        drop((dataset, contexts, plan));
        let total_units = repos.0.len() as u64 * u64::from(rounds);
        let record = RunRecord {
            run_id: run_id.clone(),
            seq,
            header,
            dataset_name,
            dataset_sha256,
            context_name,
            context_sha256,
            total_units,
            created_unix_ms: now,
            state: RunState::Running,
            completed_unix_ms: None,
            key_supplied: api_key.is_some(),
        };
        let ops = vec![
            Op::Run(record.clone()),
            Op::RunName {
                name: run_id.clone(),
                seq,
            },
            Op::RunInput {
                seq,
                input: RunInput::Spec,
                bytes: run_spec_json.clone(),
            },
        ];
        {
            let mut st = self.lock();
            if st.run_by_id.contains_key(&run_id) {
                return Err(CoordinatorError::Conflict {
                    run_id,
                    message: "was submitted twice at the same time; submit it again to resume"
                        .into(),
                });
            }
            self.store.apply(&ops)?;
            let mut run = new_run_mem(record, run_spec_json, repos, now);
            for index in 0..total_units as u32 {
                run.units.push(UnitMem {
                    state: UnitState::GenerateQueued,
                    generated: false,
                });
                let repo = run.repo_of(index).to_string();
                run.queues[0].push(&repo, index);
            }
            run.unfinished = total_units;
            run.api_key = api_key;
            st.runs.insert(seq, run);
            st.run_by_id.insert(run_id.clone(), seq);
        }
        self.commit(ops).await?;
        Ok(Submitted {
            run_id,
            resumed: false,
            total_units,
        })
    }

    /// Second pass over a dataset `plan_dataset` accepted: writes each task's inputs, as index
    /// `t` for the `t`-th task, in batches; returns the repo index of the tasks.
    fn write_task_inputs(
        &self,
        seq: u64,
        dataset_name: &str,
        dataset_bytes: &[u8],
        plan: &DatasetPlan,
        contexts: Option<&ContextSet>,
    ) -> Result<(Vec<u32>, Vec<String>), CoordinatorError> {
        let context_of: HashMap<&str, &TaskContext> = contexts
            .map(|c| {
                c.contexts
                    .iter()
                    .map(|c| (c.instance_id.as_str(), c))
                    .collect()
            })
            .unwrap_or_default();
        let mut repos = RepoIndex {
            task_repo: Vec::with_capacity(plan.tasks),
            ..RepoIndex::default()
        };
        let mut batch: Vec<TaskInputs> = Vec::with_capacity(SUBMIT_BATCH);
        let mut written: u32 = 0;
        let mut flush = |batch: &mut Vec<TaskInputs>| -> Result<(), StoreError> {
            let first = written;
            self.store.write_tasks(
                seq,
                batch.iter().enumerate().map(|(i, t)| (first + i as u32, t)),
            )?;
            written += batch.len() as u32;
            batch.clear();
            Ok(())
        };
        dataset::visit_task_file(Path::new(dataset_name), dataset_bytes, |_, t| {
            // (instance_id, repo) of the task whose context and project layout `t` uses.
            let seed = match &t.spec {
                TaskSpec::V1(s) if !s.seed => plan
                    .seeds
                    .get(&t.vuln_source)
                    .map(|s| (s.instance_id.as_str(), s.repo.as_str())),
                _ => Some((t.instance_id.as_str(), t.repo.as_str())),
            };
            let context_json = seed
                .and_then(|(id, _)| context_of.get(id))
                .map(|c| serde_json::to_vec(c).expect("a context serialises to JSON"))
                .unwrap_or_default();
            repos.push(&t.repo);
            batch.push(TaskInputs {
                instance_id: t.instance_id.clone(),
                repo: t.repo.clone(),
                seed_repo: seed.map_or(t.repo.as_str(), |(_, repo)| repo).to_string(),
                task_json: serde_json::to_vec(&t).expect("a task serialises to JSON"),
                context_json,
            });
            if batch.len() == SUBMIT_BATCH {
                flush(&mut batch)?;
            }
            Ok(())
        })
        .map_err(|e| match e {
            VisitError::Dataset(source) => dataset_error(dataset_name)(source),
            VisitError::Callback(e) => CoordinatorError::Store(e),
        })?;
        if !batch.is_empty() {
            flush(&mut batch)?;
        }
        Ok(repos.finish())
    }

    /// Submitting a run that exists resumes it: a cancelled run runs again, and a key given
    /// now replaces the one held in memory. `None` when the run does not exist.
    async fn resume_run(
        &self,
        run_id: &str,
        dataset_sha256: &str,
        req: &SubmitRun,
    ) -> Result<Option<Submitted>, CoordinatorError> {
        let mut ops = Vec::new();
        let submitted = {
            let mut st = self.lock();
            let Some(&seq) = st.run_by_id.get(run_id) else {
                return Ok(None);
            };
            let run = st.runs.get_mut(&seq).expect("indexed run exists");
            if run.record.dataset_sha256 != dataset_sha256 {
                return Err(CoordinatorError::Conflict {
                    run_id: run_id.to_string(),
                    message: format!(
                        "exists with dataset sha256 {}, resubmitted with {dataset_sha256}: \
                         use another batch name",
                        run.record.dataset_sha256
                    ),
                });
            }
            let mut changed = false;
            if req.api_key.is_some() {
                run.api_key = req.api_key.clone();
                changed |= !run.record.key_supplied;
                run.record.key_supplied = true;
            }
            if run.record.state == RunState::Cancelled {
                run.record.state = RunState::Running;
                changed = true;
            }
            if changed {
                ops.push(Op::Run(run.record.clone()));
            }
            self.store.apply(&ops)?;
            Submitted {
                run_id: run_id.to_string(),
                resumed: true,
                total_units: run.record.total_units,
            }
        };
        let finished = self.take_finished();
        self.commit(ops).await?;
        self.finish_runs(finished).await?;
        // A key given again may unblock generate leases.
        self.changes.send_modify(|v| *v += 1);
        Ok(Some(submitted))
    }

    /// Cancels a run: its leases are revoked (no attempt counted) and no more are granted.
    pub async fn cancel_run(&self, run_id: &str) -> Result<Ack, CoordinatorError> {
        let mut ops = Vec::new();
        {
            let mut st = self.lock();
            let Some(&seq) = st.run_by_id.get(run_id) else {
                return Ok(Ack::refused(format!("unknown run {run_id}")));
            };
            let run = st.runs.get_mut(&seq).expect("indexed run exists");
            if run.record.state == RunState::Completed {
                return Ok(Ack::refused(format!("run {run_id} is already completed")));
            }
            run.record.state = RunState::Cancelled;
            ops.push(Op::Run(run.record.clone()));
            let leases: Vec<u64> = st
                .leases
                .values()
                .filter(|l| l.record.run_seq == seq)
                .map(|l| l.record.lease_id)
                .collect();
            for id in leases {
                self.end_lease(
                    &mut st,
                    id,
                    LeaseEnd::Released(format!("run {run_id} cancelled")),
                    true,
                    &mut ops,
                )?;
            }
            self.store.apply(&ops)?;
        }
        self.commit(ops).await?;
        Ok(Ack::accepted())
    }

    // ------------------------------------------------------------------------------------
    // Workers
    // ------------------------------------------------------------------------------------

    /// A worker (re)joins with a new session; leases of its earlier sessions are void.
    pub async fn register(
        &self,
        name: &str,
        caps: Capabilities,
    ) -> Result<Registration, CoordinatorError> {
        if name.is_empty() || name.len() > MAX_WORKER_NAME || name.chars().any(char::is_control) {
            return Err(CoordinatorError::WorkerName(format!(
                "{name:?} must be 1..={MAX_WORKER_NAME} bytes without control characters"
            )));
        }
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let registration = {
            let _writer = self.store.writer();
            let mut st = self.lock();
            let mut record = st
                .workers
                .get(name)
                .map(|w| w.record.clone())
                .unwrap_or_else(|| WorkerRecord {
                    name: name.to_string(),
                    worker_id: name.to_string(),
                    last_session: 0,
                    draining: false,
                });
            let old_session = record.last_session;
            record.last_session += 1;
            // A restarted worker rejoins; drain is for the process that was asked to drain.
            record.draining = false;
            let old_leases: Vec<u64> = st
                .workers
                .get(name)
                .map(|w| w.leases.iter().copied().collect())
                .unwrap_or_default();
            for id in old_leases {
                let recovered = st.leases.get(&id).is_some_and(|l| l.recovered);
                let reason = format!(
                    "worker {name} re-registered: session {old_session} superseded by {}",
                    record.last_session
                );
                let end = if recovered {
                    LeaseEnd::Released(format!("{reason} after a coordinator restart"))
                } else {
                    LeaseEnd::Counted(reason)
                };
                self.end_lease(&mut st, id, end, false, &mut ops)?;
            }
            ops.push(Op::Worker(record.clone()));
            self.store.apply(&ops)?;
            let cached = caps.cached_repos.iter().cloned().collect();
            let completed = st.workers.get(name).map_or(0, |w| w.completed);
            st.workers.insert(
                name.to_string(),
                WorkerMem {
                    record: record.clone(),
                    live_session: true,
                    caps,
                    cached,
                    last_heartbeat_ms: Some(now),
                    leases: BTreeSet::new(),
                    running: [0, 0],
                    completed,
                    revoked: Vec::new(),
                },
            );
            Registration {
                worker_id: record.worker_id,
                session: record.last_session,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                lease_ttl_ms: self.config.lease_ttl_ms,
            }
        };
        self.commit(ops).await?;
        Ok(registration)
    }

    /// Liveness and lease renewal.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, CoordinatorError> {
        let now = self.clock.now_ms();
        let ttl = u64::from(self.config.lease_ttl_ms);
        let mut ops = Vec::new();
        let reply = {
            let _writer = self.store.writer();
            let mut st = self.lock();
            if !Self::session_ok(&st, &hb.worker_id, hb.session) {
                return Ok(HeartbeatReply {
                    reregister: true,
                    ..HeartbeatReply::default()
                });
            }
            let mut revoked = Vec::new();
            for r in &hb.active {
                match st.leases.get_mut(&r.lease_id) {
                    Some(l)
                        if check_fence(&l.record, &hb.worker_id, r.fence).is_ok()
                            && expiry(&l.record, now).is_none() =>
                    {
                        l.record.expires_unix_ms = now + ttl;
                    }
                    _ => revoked.push(*r),
                }
            }
            let w = st.workers.get_mut(&hb.worker_id).expect("session checked");
            w.last_heartbeat_ms = Some(now);
            if !hb.cached_repos.is_empty() {
                w.cached = hb.cached_repos.iter().cloned().collect();
            }
            let drain = w.record.draining;
            revoked.append(&mut w.revoked);
            self.sweep_locked(&mut st, now, &mut ops)?;
            let w = st.workers.get_mut(&hb.worker_id).expect("session checked");
            revoked.append(&mut w.revoked);
            revoked.sort_by_key(|r| r.lease_id);
            revoked.dedup();
            self.store.apply(&ops)?;
            HeartbeatReply {
                revoked,
                drain,
                reregister: false,
            }
        };
        let finished = self.take_finished();
        self.commit(ops).await?;
        self.finish_runs(finished).await?;
        Ok(reply)
    }

    fn session_ok(st: &State, worker_id: &str, session: u64) -> bool {
        st.workers
            .get(worker_id)
            .is_some_and(|w| w.live_session && w.record.last_session == session)
    }

    /// Finish leased units, take no more.
    pub async fn drain_worker(&self, name: &str) -> Result<Ack, CoordinatorError> {
        let ops = {
            let mut st = self.lock();
            let Some(w) = st.workers.get_mut(name) else {
                return Ok(Ack::refused(format!("unknown worker {name}")));
            };
            w.record.draining = true;
            let ops = vec![Op::Worker(w.record.clone())];
            self.store.apply(&ops)?;
            ops
        };
        self.commit(ops).await?;
        Ok(Ack::accepted())
    }

    // ------------------------------------------------------------------------------------
    // Leases
    // ------------------------------------------------------------------------------------

    /// Grants work within the worker's free slots and every run's limits; waits up to
    /// `wait_ms` for work when there is none.
    pub async fn lease_work(&self, mut req: LeaseWork) -> Result<LeaseReply, CoordinatorError> {
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_millis(u64::from(req.wait_ms));
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let reply = self.lease_once(&req).await?;
            if !reply.leases.is_empty() || reply.drain || reply.reregister {
                return Ok(reply);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {
                    // The worker asked with the slots it had free when it asked. While it
                    // waits, its own units finish (their reports are among the changes) and
                    // free slots it cannot ask for until this call returns: a worker with a
                    // free generate slot and a busy evaluate slot would otherwise see queued
                    // evaluations only once per wait. From now on its registered slots minus
                    // the leases it holds, as counted here, bound the grant.
                    req.max_generate = u32::MAX;
                    req.max_evaluate = u32::MAX;
                    continue;
                }
                _ => return Ok(reply),
            }
        }
    }

    /// The locked part of a lease request; `Some` reply when the worker gets no lease at all.
    #[allow(clippy::type_complexity)]
    fn grant_locked(
        &self,
        req: &LeaseWork,
        now: u64,
        ops: &mut Vec<Op>,
        grants: &mut Vec<LeaseGrant>,
        grant_units: &mut Vec<(u64, u32, u32)>,
    ) -> Result<Option<LeaseReply>, CoordinatorError> {
        let mut early: Option<LeaseReply> = None;
        let _writer = self.store.writer();
        let mut st = self.lock();
        self.sweep_locked(&mut st, now, ops)?;
        if !Self::session_ok(&st, &req.worker_id, req.session) {
            early = Some(LeaseReply {
                reregister: true,
                ..LeaseReply::default()
            });
        } else if st.workers[&req.worker_id].record.draining {
            early = Some(LeaseReply {
                drain: true,
                ..LeaseReply::default()
            });
        }
        if early.is_some() {
            self.store.apply(ops)?;
            return Ok(early);
        }
        let w = &st.workers[&req.worker_id];
        let mut free = [
            req.max_generate
                .min(w.caps.generate_slots.saturating_sub(w.running[0])),
            req.max_evaluate
                .min(w.caps.eval_slots.saturating_sub(w.running[1])),
        ];
        let cached = w.cached.clone();
        let cached_by_anyone: HashSet<String> = st
            .workers
            .values()
            .filter(|o| {
                o.live_session
                    && o.last_heartbeat_ms.is_some_and(|t| {
                        now.saturating_sub(t) <= u64::from(self.config.lease_ttl_ms)
                    })
            })
            .flat_map(|o| o.cached.iter().cloned())
            .collect();
        let seqs: Vec<u64> = st.runs.keys().copied().collect();
        // Evaluate first: it finishes units that already cost a model call.
        for phase in [Phase::Evaluate, Phase::Generate] {
            for &seq in &seqs {
                while free[pi(phase)] > 0 {
                    let run = st.runs.get_mut(&seq).expect("listed");
                    if run.record.state != RunState::Running {
                        break;
                    }
                    if phase == Phase::Generate {
                        let limit = run.record.header.limits.max_inflight_model_calls;
                        if limit > 0 && run.inflight_generate >= limit {
                            break;
                        }
                        if run.bucket.available(now) == 0 {
                            break;
                        }
                        if run.waiting_for_key() {
                            break;
                        }
                    }
                    let Some((_, index)) =
                        run.queues[pi(phase)].pop_for(&cached, &cached_by_anyone)
                    else {
                        break;
                    };
                    if run.units[index as usize].state != UnitState::queued(phase) {
                        continue;
                    }
                    if phase == Phase::Generate {
                        run.bucket.try_take(now);
                        run.inflight_generate += 1;
                    }
                    let lease_id = self.store.next_id()?;
                    let rounds = run.rounds();
                    let mut unit = self.unit_record(seq, index, rounds)?;
                    unit.attempt += 1;
                    unit.state = UnitState::leased(phase);
                    unit.lease = Some(lease_id);
                    run.units[index as usize].state = unit.state;
                    let deadline_ms = match phase {
                        Phase::Generate => self.config.generate_deadline_ms,
                        Phase::Evaluate => self.config.evaluate_deadline_ms,
                    };
                    let record = LeaseRecord {
                        lease_id,
                        run_seq: seq,
                        unit_index: index,
                        phase,
                        worker_id: req.worker_id.clone(),
                        fence: Fence {
                            session: req.session,
                            attempt: unit.attempt,
                        },
                        granted_unix_ms: now,
                        expires_unix_ms: now + u64::from(self.config.lease_ttl_ms),
                        deadline_unix_ms: now + deadline_ms,
                    };
                    let task_index = run.task_of(index);
                    grants.push(LeaseGrant {
                        lease: LeaseRef {
                            lease_id,
                            fence: record.fence,
                        },
                        run_id: run.record.run_id.clone(),
                        instance_id: unit.unit.instance_id.clone(),
                        round: unit.unit.round,
                        phase,
                        expires_unix_ms: record.expires_unix_ms,
                        // Filled from the store once the lock is released.
                        task_json: Arc::default(),
                        context_json: Arc::default(),
                        run_spec_json: run.spec_json.clone(),
                        generation_json: None,
                        api_key: run.api_key.clone(),
                        seed_repo: String::new(),
                    });
                    ops.push(Op::Unit {
                        seq,
                        index,
                        record: unit,
                    });
                    ops.push(Op::Lease(record.clone()));
                    grant_units.push((seq, index, task_index));
                    free[pi(phase)] -= 1;
                    let w = st.workers.get_mut(&req.worker_id).expect("session checked");
                    w.leases.insert(lease_id);
                    w.running[pi(phase)] += 1;
                    st.leases.insert(
                        lease_id,
                        LeaseMem {
                            record,
                            recovered: false,
                            step: None,
                        },
                    );
                }
            }
        }
        self.store.apply(ops)?;
        Ok(None)
    }

    async fn lease_once(&self, req: &LeaseWork) -> Result<LeaseReply, CoordinatorError> {
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let mut grants = Vec::new();
        let mut grant_units = Vec::new();
        let early = self.grant_locked(req, now, &mut ops, &mut grants, &mut grant_units)?;
        let finished = self.take_finished();
        self.commit(ops).await?;
        self.finish_runs(finished).await?;
        if let Some(reply) = early {
            return Ok(reply);
        }
        for (g, &(seq, index, task_index)) in grants.iter_mut().zip(&grant_units) {
            let task = self.store.task(seq, task_index)?;
            g.task_json = Arc::new(task.task_json);
            g.context_json = Arc::new(task.context_json);
            g.seed_repo = task.seed_repo;
            if g.phase == Phase::Evaluate {
                g.generation_json = self.store.generation(seq, index)?;
            }
        }
        Ok(LeaseReply {
            leases: grants,
            drain: false,
            reregister: false,
        })
    }

    /// Expires leases whose TTL or execution deadline passed. The services call it
    /// periodically; heartbeats and lease requests call it too.
    pub async fn sweep(&self) -> Result<usize, CoordinatorError> {
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let n = {
            let mut st = self.lock();
            let n = self.sweep_locked(&mut st, now, &mut ops)?;
            self.store.apply(&ops)?;
            n
        };
        let finished = self.take_finished();
        self.commit(ops).await?;
        self.finish_runs(finished).await?;
        Ok(n)
    }

    fn sweep_locked(
        &self,
        st: &mut State,
        now: u64,
        ops: &mut Vec<Op>,
    ) -> Result<usize, StoreError> {
        let expired: Vec<(u64, Expiry)> = st
            .leases
            .values()
            .filter_map(|l| expiry(&l.record, now).map(|e| (l.record.lease_id, e)))
            .collect();
        let n = expired.len();
        for (id, why) in expired {
            let l = &st.leases[&id].record;
            let reason = match why {
                Expiry::Ttl => format!(
                    "lease {id} ({} phase) expired: worker {} missed its heartbeats",
                    l.phase.as_str(),
                    l.worker_id
                ),
                Expiry::Deadline => format!(
                    "lease {id}: {} phase exceeded its execution deadline on worker {}",
                    l.phase.as_str(),
                    l.worker_id
                ),
            };
            self.end_lease(st, id, LeaseEnd::Counted(reason), true, ops)?;
        }
        Ok(n)
    }

    /// Ends a current lease without a result: the unit goes back to its queue, or fails when
    /// out of retries.
    fn end_lease(
        &self,
        st: &mut State,
        lease_id: u64,
        end: LeaseEnd,
        tell_worker: bool,
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let Some(l) = self.forget_lease(st, lease_id) else {
            return Ok(());
        };
        let rec = l.record;
        if tell_worker {
            if let Some(w) = st.workers.get_mut(&rec.worker_id) {
                w.revoked.push(LeaseRef {
                    lease_id,
                    fence: rec.fence,
                });
            }
        }
        let now = self.clock.now_ms();
        let Some(run) = st.runs.get_mut(&rec.run_seq) else {
            return Ok(());
        };
        let max_attempts = run.max_attempts();
        let repo = run.repo_of(rec.unit_index).to_string();
        let mut unit = self.unit_record(rec.run_seq, rec.unit_index, run.rounds())?;
        let (counted, reason) = match end {
            LeaseEnd::Counted(r) => (true, r),
            LeaseEnd::Released(r) => (false, r),
        };
        unit.failures.push(FailureNote {
            phase: rec.phase,
            attempt: rec.fence.attempt,
            worker: rec.worker_id.clone(),
            reason,
            counted,
            at_unix_ms: now,
        });
        unit.lease = None;
        if counted {
            unit.phase_failures += 1;
            run.retries += 1;
        }
        let out_of_retries = counted && unit.phase_failures >= max_attempts;
        if out_of_retries {
            unit.state = UnitState::Failed;
            if rec.phase == Phase::Generate {
                run.generated_since_load += 1;
            }
        } else {
            unit.state = UnitState::queued(rec.phase);
            run.queues[pi(rec.phase)].push_front(&repo, rec.unit_index);
        }
        run.units[rec.unit_index as usize].state = unit.state;
        ops.push(Op::Unit {
            seq: rec.run_seq,
            index: rec.unit_index,
            record: unit,
        });
        ops.push(Op::DeleteLease(lease_id));
        if out_of_retries {
            run.unit_finished();
        }
        Ok(())
    }

    /// Removes a lease from memory and releases the slots and limits it held.
    fn forget_lease(&self, st: &mut State, lease_id: u64) -> Option<LeaseMem> {
        let l = st.leases.remove(&lease_id)?;
        if let Some(w) = st.workers.get_mut(&l.record.worker_id) {
            if w.leases.remove(&lease_id) {
                let r = &mut w.running[pi(l.record.phase)];
                *r = r.saturating_sub(1);
            }
        }
        if l.record.phase == Phase::Generate {
            if let Some(run) = st.runs.get_mut(&l.record.run_seq) {
                run.inflight_generate = run.inflight_generate.saturating_sub(1);
            }
        }
        Some(l)
    }

    /// Commits the result of a phase: first commit wins, the same result again is a duplicate,
    /// anything from a lease that is not current is refused.
    pub async fn complete(&self, req: Completion) -> Result<Ack, CoordinatorError> {
        if req.result_json.len() > MAX_RESULT_BYTES {
            return Ok(Ack::refused(format!(
                "result of {} bytes is more than the {MAX_RESULT_BYTES} accepted",
                req.result_json.len()
            )));
        }
        let lease_id = req.lease.lease_id;
        // Parsed before the lock: which unit the result is for, and its model calls.
        let parsed: Result<(UnitId, u32), String> = match req.phase {
            Phase::Generate => serde_json::from_slice::<GenerationRecord>(&req.result_json)
                .map(|g| (g.unit, g.model_attempts))
                .map_err(|e| format!("not a generation record: {e}")),
            Phase::Evaluate => serde_json::from_slice::<EvaluationRecord>(&req.result_json)
                .map(|e| (e.unit().clone(), 0))
                .map_err(|e| format!("not an evaluation record: {e}")),
        };
        let mut ops = Vec::new();
        {
            let _writer = self.store.writer();
            let mut st = self.lock();
            let Some(l) = st.leases.get(&lease_id) else {
                drop(st);
                return self.repeated_result(&req);
            };
            if let Err(why) = check_fence(&l.record, &req.worker_id, req.lease.fence) {
                return Ok(Ack::refused(why));
            }
            if l.record.phase != req.phase {
                return Ok(Ack::refused(format!(
                    "lease {lease_id} is for the {} phase, not {}",
                    l.record.phase.as_str(),
                    req.phase.as_str()
                )));
            }
            let (seq, index) = (l.record.run_seq, l.record.unit_index);
            let rounds = st.runs[&seq].rounds();
            let mut unit = self.unit_record(seq, index, rounds)?;
            let model_calls = match parsed {
                Ok((ref id, calls)) if *id == unit.unit => calls,
                Ok((id, _)) => {
                    return Ok(Ack::refused(format!(
                        "lease {lease_id} is for unit {}, the result is for {id}",
                        unit.unit
                    )))
                }
                Err(e) => return Ok(Ack::refused(format!("unit {}: {e}", unit.unit))),
            };
            self.forget_lease(&mut st, lease_id);
            if let Some(w) = st.workers.get_mut(&req.worker_id) {
                w.completed += 1;
            }
            let run = st.runs.get_mut(&seq).expect("a lease's run exists");
            let repo = run.repo_of(index).to_string();
            unit.lease = None;
            unit.phase_failures = 0;
            match req.phase {
                Phase::Generate => {
                    unit.state = UnitState::EvaluateQueued;
                    unit.generated_by = Some(lease_id);
                    unit.model_calls = model_calls;
                    run.model_calls += u64::from(model_calls);
                    run.units[index as usize].generated = true;
                    run.generated_since_load += 1;
                    ops.push(Op::Generation {
                        seq,
                        index,
                        json: req.result_json,
                    });
                }
                Phase::Evaluate => {
                    unit.state = UnitState::Done;
                    unit.evaluated_by = Some(lease_id);
                    ops.push(Op::Evaluation {
                        seq,
                        index,
                        json: req.result_json,
                    });
                }
            }
            run.units[index as usize].state = unit.state;
            ops.push(Op::Unit {
                seq,
                index,
                record: unit,
            });
            ops.push(Op::DeleteLease(lease_id));
            ops.push(Op::Committed {
                lease_id,
                committed: CommittedLease {
                    seq,
                    index,
                    phase: req.phase,
                },
            });
            match req.phase {
                Phase::Generate => run.queues[1].push(&repo, index),
                Phase::Evaluate => run.unit_finished(),
            }
            self.store.apply(&ops)?;
        }
        let finished = self.take_finished();
        self.commit(ops).await?;
        self.finish_runs(finished).await?;
        Ok(Ack::accepted())
    }

    fn repeated_result(&self, req: &Completion) -> Result<Ack, CoordinatorError> {
        let lease_id = req.lease.lease_id;
        let Some(CommittedLease { seq, index, phase }) = self.store.committed(lease_id)? else {
            return Ok(Ack::refused(format!(
                "lease {lease_id} is not current (expired, revoked, superseded or unknown)"
            )));
        };
        let stored = match phase {
            Phase::Generate => self.store.generation(seq, index)?,
            Phase::Evaluate => self.store.evaluation(seq, index)?,
        };
        if phase == req.phase && stored.as_deref() == Some(req.result_json.as_slice()) {
            Ok(Ack::duplicate())
        } else {
            Ok(Ack::refused(format!(
                "lease {lease_id}: a different {} result was already committed; the first \
                 commit wins",
                phase.as_str()
            )))
        }
    }

    /// Bytes of a reported step kept.
    const MAX_STEP_CHARS: usize = 64;

    /// A worker says where a leased unit is: kept for status, and it renews the lease (the
    /// unit is evidently alive). Not a transition: nothing is stored.
    pub fn report_progress(&self, p: Progress) -> Ack {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let Some(l) = st.leases.get_mut(&p.lease.lease_id) else {
            return Ack::refused(format!(
                "lease {} is not current (expired, revoked, superseded or unknown)",
                p.lease.lease_id
            ));
        };
        if let Err(why) = check_fence(&l.record, &p.worker_id, p.lease.fence) {
            return Ack::refused(why);
        }
        if expiry(&l.record, now).is_none() {
            l.record.expires_unix_ms = now + u64::from(self.config.lease_ttl_ms);
        }
        let step: String = p
            .step
            .chars()
            .filter(|c| !c.is_control())
            .take(Self::MAX_STEP_CHARS)
            .collect();
        l.step = Some(step);
        drop(st);
        self.changes.send_modify(|v| *v += 1);
        Ack::accepted()
    }

    /// An infrastructure failure or a lease given back.
    pub async fn fail(&self, req: Failure) -> Result<Ack, CoordinatorError> {
        let lease_id = req.lease.lease_id;
        let mut ops = Vec::new();
        {
            let _writer = self.store.writer();
            let mut st = self.lock();
            let Some(l) = st.leases.get(&lease_id) else {
                return Ok(Ack::refused(format!(
                    "lease {lease_id} is not current (expired, revoked, superseded or unknown)"
                )));
            };
            if let Err(why) = check_fence(&l.record, &req.worker_id, req.lease.fence) {
                return Ok(Ack::refused(why));
            }
            let reason: String = req.reason.chars().take(4096).collect();
            let end = match req.kind {
                FailureKind::Infrastructure => LeaseEnd::Counted(reason),
                FailureKind::Released => LeaseEnd::Released(reason),
            };
            self.end_lease(&mut st, lease_id, end, false, &mut ops)?;
            self.store.apply(&ops)?;
        }
        let finished = self.take_finished();
        self.commit(ops).await?;
        self.finish_runs(finished).await?;
        Ok(Ack::accepted())
    }

    // ------------------------------------------------------------------------------------
    // Completion and outputs
    // ------------------------------------------------------------------------------------

    /// Runs whose last unit finished and that nobody is finishing yet. `finish_run` claims
    /// each one; marking them here would leave a run marked forever when the request that
    /// carries the finish is cancelled before the finish starts.
    fn take_finished(&self) -> Vec<u64> {
        let st = self.lock();
        st.runs
            .values()
            .filter(|r| r.record.state == RunState::Running && !r.finishing && r.all_finished())
            .map(|r| r.record.seq)
            .collect()
    }

    /// Marks the run as being finished by the caller; false when it is not finishable or
    /// another caller already finishes it.
    fn claim_finish(&self, seq: u64) -> bool {
        let mut st = self.lock();
        match st.runs.get_mut(&seq) {
            Some(r) if r.record.state == RunState::Running && !r.finishing && r.all_finished() => {
                r.finishing = true;
                true
            }
            _ => false,
        }
    }

    /// Finishes the runs. A run whose files cannot be written (a full or failing disk) stays
    /// unfinished and the sweep tries again; the transition that finished its last unit is
    /// committed and its caller is answered as usual. Store errors are fatal and returned.
    async fn finish_runs(&self, seqs: Vec<u64>) -> Result<(), CoordinatorError> {
        for seq in seqs {
            match self.finish_run(seq).await {
                Err(CoordinatorError::Outputs(e)) => {
                    tracing::error!(run_seq = seq, error = %e, "finishing the run failed; the sweep tries again");
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn finish_run(&self, seq: u64) -> Result<(), CoordinatorError> {
        if !self.claim_finish(seq) {
            return Ok(());
        }
        // The finish rides on the request of the run's last unit. If that request is
        // cancelled (the worker gave up waiting) or the finish fails, the run must not stay
        // `finishing` forever: the guard hands it back, and the next sweep finishes it.
        let guard = FinishingGuard {
            coordinator: self,
            seq,
            done: false,
        };
        let ops = self.write_outputs(seq)?;
        self.store.apply(&ops)?;
        self.commit(ops).await?;
        self.mark_completed(seq);
        guard.disarm();
        Ok(())
    }

    fn finish_run_blocking(&self, seq: u64) -> Result<(), CoordinatorError> {
        let ops = self.write_outputs(seq)?;
        self.store.apply(&ops)?;
        self.store.durable_blocking()?;
        self.mark_completed(seq);
        Ok(())
    }

    fn mark_completed(&self, seq: u64) {
        let mut st = self.lock();
        if let Some(run) = st.runs.get_mut(&seq) {
            run.record.state = RunState::Completed;
            run.record.completed_unix_ms = Some(self.clock.now_ms());
            run.finishing = false;
        }
    }

    /// Scores the run and writes its files (durable, all visible at once) into the output
    /// store; returns the write that turns the run record `Completed`, to be committed after.
    /// A scoring error is kept as the run's `error.txt` rather than leaving the run unfinished
    /// forever; a disk error fails the finish, and the sweep tries again.
    fn write_outputs(&self, seq: u64) -> Result<Vec<Op>, CoordinatorError> {
        let mut record = {
            let st = self.lock();
            st.runs[&seq].record.clone()
        };
        // Only what scoring needs is kept of each task and record, one at a time.
        let mut tasks = Vec::new();
        self.store.for_each_task(seq, |t| {
            // Validated when submitted; unreadable now means the store is damaged.
            let task: Task =
                serde_json::from_slice(&t.task_json).map_err(|e| StoreError::Corrupt {
                    path: self.store.path().to_path_buf(),
                    tree: "tasks",
                    key: t.instance_id.clone(),
                    message: e.to_string(),
                })?;
            tasks.push(TaskFacts::of(&task));
            Ok(())
        })?;
        let units = self.all_unit_records(seq, record.header.rounds.max(1))?;
        let mut generations = BTreeMap::new();
        let mut evaluations = BTreeMap::new();
        for i in 0..units.len() as u32 {
            if let Some(bytes) = self.store.generation(seq, i)? {
                if let Ok(g) = serde_json::from_slice::<GenerationRecord>(&bytes) {
                    generations.insert(i, GenerationFacts::from(&g));
                }
            }
            if let Some(bytes) = self.store.evaluation(seq, i)? {
                if let Ok(e) = serde_json::from_slice::<EvaluationRecord>(&bytes) {
                    evaluations.insert(i, EvaluationFacts::from(&e));
                }
            }
        }
        let input = RunOutputInput {
            run_id: &record.run_id,
            header: &record.header,
            dataset_name: &record.dataset_name,
            dataset_sha256: &record.dataset_sha256,
            context_sha256: record.context_sha256.as_deref(),
            tasks: &tasks,
            units: &units,
            generations: &generations,
            evaluations: &evaluations,
            created_unix_ms: Some(record.created_unix_ms),
        };
        let mut writer = self.outputs.begin(seq).map_err(OutputError::from)?;
        match outputs::build_outputs(&input, &mut writer) {
            Ok(_) => {}
            Err(e @ (OutputError::Store(_) | OutputError::Sink { .. })) => return Err(e.into()),
            Err(e) => {
                tracing::error!(run = %record.run_id, error = %e, "run outputs");
                writer.clear().map_err(OutputError::from)?;
                let text = format!("{e}\n");
                writer
                    .file("error.txt", &mut |w| w.write_all(text.as_bytes()))
                    .map_err(OutputError::from)?;
            }
        }
        drop((tasks, units, generations, evaluations));
        writer.commit().map_err(OutputError::from)?;
        if let Some(dir) = &self.config.output_dir {
            let dir = dir.join(record.run_id.replace('/', "_"));
            if let Err(e) = self.outputs.copy_to(seq, &dir) {
                tracing::error!(run = %record.run_id, error = %e, "copying run outputs");
            }
        }
        record.state = RunState::Completed;
        record.completed_unix_ms = Some(self.clock.now_ms());
        Ok(vec![Op::Run(record)])
    }

    /// The run's stored files; `complete` once the run is.
    pub fn fetch_report(&self, run_id: &str) -> Result<FetchedReport, CoordinatorError> {
        // Room for the reply's framing and file names within one gRPC message.
        let limit = ase_proto::limits::MAX_MESSAGE_BYTES as u64 - (1 << 20);
        self.fetch_report_within(run_id, limit)
    }

    /// [`Coordinator::fetch_report`] refusing, before reading them, files above `limit` bytes
    /// in total: a reply that large could not be sent.
    pub fn fetch_report_within(
        &self,
        run_id: &str,
        limit: u64,
    ) -> Result<FetchedReport, CoordinatorError> {
        let (seq, complete) = {
            let st = self.lock();
            let seq = st.seq_of(run_id)?;
            (seq, st.runs[&seq].record.state == RunState::Completed)
        };
        let bytes = self.outputs.total_bytes(seq).map_err(OutputError::from)?;
        if bytes > limit {
            return Err(CoordinatorError::ReportTooLarge {
                run_id: run_id.to_string(),
                bytes,
                limit,
                path: self.outputs.dir_of(seq),
            });
        }
        // Runs completed by versions before the output store kept their files in sled.
        let files = match self.outputs.read(seq).map_err(OutputError::from)? {
            Some(files) => files,
            None => self.store.outputs(seq)?,
        };
        let files = files
            .into_iter()
            .map(|(name, content)| ReportFile { name, content })
            .collect();
        Ok(FetchedReport {
            run_id: run_id.to_string(),
            complete,
            files,
        })
    }

    // ------------------------------------------------------------------------------------
    // Progress
    // ------------------------------------------------------------------------------------

    pub fn progress(&self, run_id: &str) -> Result<RunProgress, CoordinatorError> {
        let st = self.lock();
        let seq = st.seq_of(run_id)?;
        Ok(self.progress_of(&st.runs[&seq], &st.leases))
    }

    pub fn list_runs(&self) -> Vec<RunProgress> {
        let st = self.lock();
        st.runs
            .values()
            .map(|r| self.progress_of(r, &st.leases))
            .collect()
    }

    fn progress_of(&self, run: &RunMem, leases: &HashMap<u64, LeaseMem>) -> RunProgress {
        let mut g = PhaseCounts::default();
        let mut e = PhaseCounts::default();
        for u in &run.units {
            match u.state {
                UnitState::GenerateQueued => g.queued += 1,
                UnitState::GenerateLeased => g.leased += 1,
                UnitState::EvaluateQueued => {
                    g.done += 1;
                    e.queued += 1
                }
                UnitState::EvaluateLeased => {
                    g.done += 1;
                    e.leased += 1
                }
                UnitState::Done => {
                    g.done += 1;
                    e.done += 1
                }
                UnitState::Failed if u.generated => {
                    g.done += 1;
                    e.failed += 1
                }
                UnitState::Failed => g.failed += 1,
            }
        }
        let finished = e.done + e.failed + g.failed;
        let remaining = run.record.total_units.saturating_sub(finished);
        let now = self.clock.now_ms();
        let elapsed_s = now.saturating_sub(run.loaded_ms) as f64 / 1000.0;
        // Rates since this process loaded the run: units through the phase per second.
        let eta = |remaining: u64, through: u64| {
            if remaining == 0 {
                0.0
            } else if through == 0 || elapsed_s <= 0.0 {
                -1.0
            } else {
                remaining as f64 / (through as f64 / elapsed_s)
            }
        };
        let eta_seconds = eta(remaining, run.finished_since_load);
        let generate_eta_seconds = eta(g.queued + g.leased, run.generated_since_load);
        let mut leased_by_step = BTreeMap::new();
        for l in leases
            .values()
            .filter(|l| l.record.run_seq == run.record.seq)
        {
            let step = match &l.step {
                Some(step) => step.clone(),
                None => "leased".to_string(),
            };
            *leased_by_step
                .entry(format!("{}: {step}", l.record.phase.as_str()))
                .or_insert(0) += 1;
        }
        // All units finished but the run not completed: its outputs are being made, or are
        // retried by the sweep after a failure (a full disk).
        let state = if run.finishing
            || (run.record.state == RunState::Running && run.all_finished())
        {
            "scoring"
        } else if run.record.state == RunState::Running && run.waiting_for_key() && g.queued > 0 {
            // Visible rather than failing units: `ase submit` of the same run with its key
            // (or `ase resume`) lets the generations go on.
            "waiting_for_key"
        } else {
            run.record.state.as_str()
        };
        RunProgress {
            run_id: run.record.run_id.clone(),
            state: state.to_string(),
            total_units: run.record.total_units,
            generate: g,
            evaluate: e,
            eta_seconds,
            retries: run.retries,
            model_calls: run.model_calls,
            model: run.record.header.model_name.clone(),
            batch: run.record.header.batch.clone(),
            generate_eta_seconds,
            evaluate_eta_seconds: eta_seconds,
            leased_by_step,
        }
    }

    /// The unit records of a run (for `ase status` details and tests).
    pub fn units(&self, run_id: &str) -> Result<Vec<UnitRecord>, CoordinatorError> {
        let (seq, rounds) = {
            let st = self.lock();
            let seq = st.seq_of(run_id)?;
            (seq, st.runs[&seq].rounds())
        };
        Ok(self.all_unit_records(seq, rounds)?)
    }

    pub fn list_workers(&self) -> Vec<WorkerInfo> {
        let now = self.clock.now_ms();
        let st = self.lock();
        st.workers
            .values()
            .map(|w| {
                // A worker known from the store but not heard from since this process started.
                let ago = w
                    .last_heartbeat_ms
                    .map_or(NO_HEARTBEAT, |t| now.saturating_sub(t));
                let mut cached: Vec<String> = w.cached.iter().cloned().collect();
                cached.sort();
                WorkerInfo {
                    worker_id: w.record.worker_id.clone(),
                    name: w.record.name.clone(),
                    alive: w.live_session && ago <= u64::from(self.config.lease_ttl_ms),
                    draining: w.record.draining,
                    eval_slots: w.caps.eval_slots,
                    generate_slots: w.caps.generate_slots,
                    running: w.running[0] + w.running[1],
                    cached_repos: cached,
                    last_heartbeat_ms_ago: ago,
                    session: w.record.last_session,
                    completed: w.completed,
                    running_generate: w.running[0],
                    running_evaluate: w.running[1],
                }
            })
            .collect()
    }
}

/// Clears a run's `finishing` mark unless its finish completed (see `finish_run`).
struct FinishingGuard<'a> {
    coordinator: &'a Coordinator,
    seq: u64,
    done: bool,
}

impl FinishingGuard<'_> {
    fn disarm(mut self) {
        self.done = true;
    }
}

impl Drop for FinishingGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.coordinator.lock();
        if let Some(run) = st.runs.get_mut(&self.seq) {
            if run.record.state == RunState::Running {
                run.finishing = false;
            }
        }
    }
}
