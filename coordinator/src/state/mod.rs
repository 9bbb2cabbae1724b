//! The coordinator's state: one `Arc`-shareable entry point, [`Coordinator`], over the durable
//! store and the in-memory scheduling state, for the gRPC services to call.
//!
//! Every operation takes the state lock, applies its transition in memory and as one sled
//! transaction, releases the lock, and waits for the store to be durable (group commit) before
//! it returns: nothing is acknowledged that a crash could lose. A store error is fatal for the
//! process: memory may then be ahead of the disk, and a restart rebuilds it from the disk
//! (`recovery`).
//!
//! One file per concept, each adding the operations of its concept to [`Coordinator`]:
//! `plan` (a submitted dataset, checked and stored), `memory` (the in-memory indexes),
//! `recovery` (memory rebuilt at open), `runs` (submit, resume, cancel), `workers` (register,
//! heartbeat, drain), `leases` (lease requests) and `scheduler` (which unit a worker gets),
//! `unit_answers` (a predictions run's answers, split by unit), `deadline` (a run's generate
//! deadline, from its model request timeout), `lease_end` (a lease ending without a result:
//! expiry, revocation, give-back), `pause` (a run's model calls held back after 429s,
//! 5xx or auth failures, its v2 evaluations after registry failures), `results`
//! (a phase's result, failures, progress reports), `finish` (the background finisher that
//! scores a run and writes its files) and `queries` (progress, runs, units, workers, reports).

mod affinity;
mod agent_usage;
mod deadline;
mod error;
mod finish;
mod lease_end;
mod leases;
mod memory;
mod model_calls;
mod pause;
mod plan;
mod queries;
mod rate_limit;
mod recovery;
mod results;
mod runs;
mod scheduler;
mod unit_answers;
mod workers;

pub use error::CoordinatorError;
pub use finish::FINISH_RETRY_MS;
pub use model_calls::ModelCallGrant;
pub use pause::PausePolicy;
pub use plan::parse_spec_header;
pub use results::MAX_RESULT_BYTES;
pub use workers::MAX_WORKER_NAME;

use crate::clock::Clock;
use crate::outputs::OutputStore;
use crate::records::{UnitRecord, UnitState};
use crate::store::{Op, Store, StoreError, StoreOptions};
use ase_common::scoring::UnitId;
use memory::State;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// How a run's model calls are paused after provider failures (429, 5xx, auth).
    pub provider_pause: PausePolicy,
    /// How a run's v2 evaluations are paused when the task images' registry fails.
    pub registry_pause: PausePolicy,
    /// Place v2 evaluations by image (`affinity`); false: the images workers hold or are
    /// evaluating with are not looked at (what `bench images` compares against).
    pub image_affinity: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 2_000,
            lease_ttl_ms: 10_000,
            // Longer than the model client's default request timeout: a slow answer that
            // arrives within it must not be revoked and paid again.
            generate_deadline_ms: ase_common::phase_deadline::generate_deadline(
                ase_common::phase_deadline::MODEL_REQUEST_TIMEOUT,
            )
            .as_millis() as u64,
            evaluate_deadline_ms: 40 * 60_000,
            output_dir: None,
            store_cache_bytes: StoreOptions::default().cache_bytes,
            provider_pause: PausePolicy::default(),
            registry_pause: PausePolicy::default(),
            image_affinity: true,
        }
    }
}

pub struct Coordinator {
    store: Store,
    /// Completed runs' files, beside the database.
    outputs: OutputStore,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    config: CoordinatorConfig,
    changes: tokio::sync::watch::Sender<u64>,
    /// Where runs whose last unit is done are sent to be finished.
    finisher: finish::Finisher,
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
        agent_attempts: Vec::new(),
    }
}

impl Coordinator {
    /// Opens the store at `path`, rebuilds the in-memory state from it, and starts the
    /// finisher; runs whose units were all done before a crash or a shutdown are queued to it.
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
        let (st, ops) = recovery::recover(&store, path, &config, now)?;
        store.apply(&ops)?;
        store.durable_blocking()?;
        let (finisher, jobs) = finish::Finisher::new();
        let coordinator = Arc::new(Self {
            outputs: OutputStore::new(path),
            store,
            state: Mutex::new(st),
            clock,
            config,
            changes: tokio::sync::watch::channel(0).0,
            finisher,
        });
        finish::spawn(Arc::downgrade(&coordinator), jobs).map_err(CoordinatorError::Finisher)?;
        coordinator.queue_finishes(&mut coordinator.lock());
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
}
