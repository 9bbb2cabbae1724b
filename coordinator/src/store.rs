//! All sled access of the coordinator. Keys are big-endian so they sort; values are JSON of the
//! `model` records, the bytes exactly as received (run spec, results), or a task's inputs as a
//! length-prefixed blob ([`TaskInputs`]).
//!
//! Per-unit and per-task state lives here, not in the coordinator's memory: the store keeps
//! its page cache within [`StoreOptions::cache_bytes`], so the coordinator's memory does not
//! grow with the size of a run.
//!
//! Transitions are applied as one multi-tree transaction ([`Store::apply`]) and made durable
//! with [`Store::durable`] before they are acknowledged: sled only fsyncs in the background, so
//! nothing is durable until a flush returns. Concurrent callers share flushes (group commit).

use crate::records::{LeaseRecord, Phase, RunRecord, UnitRecord, WorkerRecord};
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the coordinator database at {path}: {source} (if it was damaged by a crash, \
         move it aside and resubmit the runs)"
    )]
    Open { path: PathBuf, source: sled::Error },
    #[error("coordinator database at {path}: {what}: {source}")]
    Sled {
        path: PathBuf,
        what: &'static str,
        source: sled::Error,
    },
    #[error(
        "coordinator database at {path} failed earlier ({first}): its state is unknown, the \
         coordinator must restart"
    )]
    Failed { path: PathBuf, first: String },
    #[error("coordinator database at {path}: the flush task died: {message}")]
    FlushTask { path: PathBuf, message: String },
    #[error("coordinator database at {path}: {what}: injected failure (test hook)")]
    Injected { path: PathBuf, what: &'static str },
    #[error("coordinator database at {path}: tree `{tree}`, key {key}: {message}")]
    Corrupt {
        path: PathBuf,
        tree: &'static str,
        key: String,
        message: String,
    },
}

/// Which input of a run a stored blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunInput {
    Spec = 0,
    Dataset = 1,
    Context = 2,
    /// The images by digest a v2 run's tasks were pinned to (`state::memory::ImagePins`).
    ImagePins = 3,
}

/// What a lease id committed: a phase of a unit (for idempotent repeats of a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedLease {
    pub seq: u64,
    pub index: u32,
    pub phase: Phase,
}

/// A task's inputs as the workers get them, stored once per task of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskInputs {
    pub instance_id: String,
    pub repo: String,
    /// v1 mutated tasks: the seed task's repo; the task's own repo otherwise.
    pub seed_repo: String,
    /// `ase_common::dataset::Task` as JSON.
    pub task_json: Vec<u8>,
    /// `ase_common::dataset::TaskContext` as JSON; empty when the task has none.
    pub context_json: Vec<u8>,
    /// A predictions run: the task's entries as JSONL (each generate lease carries its
    /// round's); empty otherwise.
    pub predictions_jsonl: Vec<u8>,
}

impl TaskInputs {
    fn encode(&self) -> Vec<u8> {
        let fields: [&[u8]; 6] = [
            self.instance_id.as_bytes(),
            self.repo.as_bytes(),
            self.seed_repo.as_bytes(),
            &self.task_json,
            &self.context_json,
            &self.predictions_jsonl,
        ];
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        fn next(rest: &mut &[u8]) -> Option<Vec<u8>> {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let field = rest.get(4..4 + len)?.to_vec();
            *rest = &rest[4 + len..];
            Some(field)
        }
        let mut rest = bytes;
        let instance_id = String::from_utf8(next(&mut rest)?).ok()?;
        let repo = String::from_utf8(next(&mut rest)?).ok()?;
        let seed_repo = String::from_utf8(next(&mut rest)?).ok()?;
        let task_json = next(&mut rest)?;
        let context_json = next(&mut rest)?;
        // Records written before predictions were split by unit end here.
        let predictions_jsonl = if rest.is_empty() {
            Vec::new()
        } else {
            next(&mut rest)?
        };
        Some(TaskInputs {
            instance_id,
            repo,
            seed_repo,
            task_json,
            context_json,
            predictions_jsonl,
        })
    }
}

/// One key of one tree set (or removed, `None`) by a transaction.
type Write<'a> = (usize, Vec<u8>, Option<Cow<'a, [u8]>>);

/// See [`Store::writer`].
pub struct WriterGuard<'a>(&'a Store);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.0.writers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How the store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Bytes of sled's page cache: the bound of the store's memory, whatever the run sizes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 << 20,
        }
    }
}

/// One write of a transition.
#[derive(Debug, Clone)]
// A transition's ops live in one short Vec until they are applied; boxing the run record
// would only add an allocation and noise at every run write.
#[allow(clippy::large_enum_variant)]
pub enum Op {
    Run(RunRecord),
    RunName {
        name: String,
        seq: u64,
    },
    RunInput {
        seq: u64,
        input: RunInput,
        bytes: Vec<u8>,
    },
    Unit {
        seq: u64,
        index: u32,
        record: UnitRecord,
    },
    Lease(LeaseRecord),
    DeleteLease(u64),
    Generation {
        seq: u64,
        index: u32,
        json: Vec<u8>,
    },
    Evaluation {
        seq: u64,
        index: u32,
        json: Vec<u8>,
    },
    Worker(WorkerRecord),
    Committed {
        lease_id: u64,
        committed: CommittedLease,
    },
}

// Tree order in `Store::trees` and in transactions.
const RUNS: usize = 0;
const RUN_NAMES: usize = 1;
const RUN_INPUTS: usize = 2;
const UNITS: usize = 3;
const LEASES: usize = 4;
const GENERATIONS: usize = 5;
const EVALUATIONS: usize = 6;
const WORKERS: usize = 7;
const OUTPUTS: usize = 8;
const TASKS: usize = 9;
const COMMITTED: usize = 10;
const TREE_NAMES: [&str; 11] = [
    "runs",
    "run_names",
    "run_inputs",
    "units",
    "leases",
    "generations",
    "evaluations",
    "workers",
    "outputs",
    "tasks",
    "committed",
];

pub struct Store {
    path: PathBuf,
    db: sled::Db,
    trees: Vec<Tree>,
    /// Group commit: tickets handed out after writes, and the highest ticket a finished flush
    /// covered. A caller whose ticket is covered returns without flushing.
    tickets: AtomicU64,
    flushed: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    flushes: AtomicU64,
    /// Transitions on their way to `apply` (see [`Store::writer`]).
    writers: AtomicU64,
    /// Test hook: writes and flushes left before every store call fails (`u64::MAX`: never).
    failure_after: AtomicU64,
    /// The first error: from then on every call fails, since what is on disk is unknown.
    failure: std::sync::OnceLock<String>,
    failed: tokio::sync::watch::Sender<bool>,
}

fn unit_key(seq: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn input_key(seq: u64, input: RunInput) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8] = input as u8;
    k
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("coordinator records serialise to JSON")
}

impl Store {
    /// Opens (or creates) the database; fails with the path when it cannot.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(open_err)?;
        let trees = TREE_NAMES
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(open_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            db,
            trees,
            tickets: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            flushes: AtomicU64::new(0),
            writers: AtomicU64::new(0),
            failure_after: AtomicU64::new(u64::MAX),
            failure: std::sync::OnceLock::new(),
            failed: tokio::sync::watch::channel(false).0,
        })
    }

    /// Turns true at the first error of the store (see [`Store::failure`]).
    pub fn failed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.failed.subscribe()
    }

    /// The first error of the store, if any. A write or flush that failed leaves the disk in
    /// an unknown state relative to memory: the process must stop and rebuild from the disk.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records the store's first error.
    fn fail(&self, e: StoreError) -> StoreError {
        if self.failure.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "the coordinator's store failed");
            self.failed.send_replace(true);
        }
        e
    }

    fn check_ok(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(first) => Err(StoreError::Failed {
                path: self.path.clone(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Test hook: after `n` more writes or flushes succeed, every write and flush fails, as a
    /// full or failing disk would make them.
    pub fn inject_failure_after(&self, n: u64) {
        self.failure_after.store(n, Ordering::SeqCst);
    }

    fn check_injected(&self, what: &'static str) -> Result<(), StoreError> {
        self.check_ok()?;
        let left =
            self.failure_after
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                    u64::MAX | 0 => None,
                    n => Some(n - 1),
                });
        match left {
            Err(0) => Err(self.fail(StoreError::Injected {
                path: self.path.clone(),
                what,
            })),
            _ => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, what: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| {
            self.fail(StoreError::Sled {
                path: self.path.clone(),
                what,
                source,
            })
        }
    }

    /// A tree outside the run state (its own records, e.g. `join_tokens`): written by its own
    /// module with sled transactions, made durable by [`Store::durable`] like the rest.
    pub fn side_tree(&self, name: &str) -> Result<Tree, StoreError> {
        self.check_ok()?;
        debug_assert!(!TREE_NAMES.contains(&name), "{name} is a run-state tree");
        self.db
            .open_tree(name)
            .map_err(self.sled_err("open a side tree"))
    }

    /// A fresh id, unique and increasing across restarts (sled persists its id counter).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        self.check_ok()?;
        // sled's ids start at 0; keep 0 free to mean "none" on the wire.
        self.db
            .generate_id()
            .map(|id| id + 1)
            .map_err(self.sled_err("generate id"))
    }

    /// Applies every write atomically across trees. Values are encoded before the
    /// transaction: its closure may run more than once and must have no side effects.
    pub fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.check_injected("transaction")?;
        // Received bytes are borrowed, not copied: results and outputs can be large.
        let mut writes: Vec<Write<'_>> = Vec::with_capacity(ops.len());
        for op in ops {
            writes.push(match op {
                Op::Run(r) => (
                    RUNS,
                    r.seq.to_be_bytes().to_vec(),
                    Some(Cow::Owned(json(r))),
                ),
                Op::RunName { name, seq } => (
                    RUN_NAMES,
                    name.as_bytes().to_vec(),
                    Some(Cow::Owned(seq.to_be_bytes().to_vec())),
                ),
                Op::RunInput { seq, input, bytes } => (
                    RUN_INPUTS,
                    input_key(*seq, *input).to_vec(),
                    Some(Cow::Borrowed(bytes)),
                ),
                Op::Unit { seq, index, record } => (
                    UNITS,
                    unit_key(*seq, *index).to_vec(),
                    Some(Cow::Owned(json(record))),
                ),
                Op::Lease(l) => (
                    LEASES,
                    l.lease_id.to_be_bytes().to_vec(),
                    Some(Cow::Owned(json(l))),
                ),
                Op::DeleteLease(id) => (LEASES, id.to_be_bytes().to_vec(), None),
                Op::Generation { seq, index, json } => (
                    GENERATIONS,
                    unit_key(*seq, *index).to_vec(),
                    Some(Cow::Borrowed(json)),
                ),
                Op::Evaluation { seq, index, json } => (
                    EVALUATIONS,
                    unit_key(*seq, *index).to_vec(),
                    Some(Cow::Borrowed(json)),
                ),
                Op::Worker(w) => (
                    WORKERS,
                    w.name.as_bytes().to_vec(),
                    Some(Cow::Owned(json(w))),
                ),
                Op::Committed {
                    lease_id,
                    committed,
                } => {
                    let mut v = unit_key(committed.seq, committed.index).to_vec();
                    v.push(match committed.phase {
                        Phase::Generate => 0,
                        Phase::Evaluate => 1,
                    });
                    (
                        COMMITTED,
                        lease_id.to_be_bytes().to_vec(),
                        Some(Cow::Owned(v)),
                    )
                }
            });
        }
        // Only the trees written take part: a transaction costs per tree.
        let mut slot = [usize::MAX; TREE_NAMES.len()];
        let mut trees: Vec<&Tree> = Vec::new();
        for (tree, _, _) in &writes {
            if slot[*tree] == usize::MAX {
                slot[*tree] = trees.len();
                trees.push(&self.trees[*tree]);
            }
        }
        let result: Result<(), TransactionError<()>> = trees[..].transaction(|tx| {
            for (tree, key, value) in &writes {
                let t = &tx[slot[*tree]];
                match value {
                    Some(v) => {
                        t.insert(key.as_slice(), v.as_ref())?;
                    }
                    None => {
                        t.remove(key.as_slice())?;
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(source)) => Err(self.fail(StoreError::Sled {
                path: self.path.clone(),
                what: "transaction",
                source,
            })),
            Err(TransactionError::Abort(())) => unreachable!("no transaction aborts"),
        }
    }

    /// Marks a transition on its way to [`Store::apply`] until the guard drops (right after
    /// its apply, before it waits for [`Store::durable`]). A flush about to start lets such
    /// transitions apply first, so that a burst of them (many workers reporting at once) shares
    /// one flush instead of waiting for a second one.
    pub fn writer(&self) -> WriterGuard<'_> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        WriterGuard(self)
    }

    /// Returns once every write applied before the call is on disk. Concurrent callers share
    /// one flush: whoever takes the lock flushes for all tickets handed out so far.
    pub async fn durable(&self) -> Result<(), StoreError> {
        // Bounds the wait for transitions in progress (each yield lets them run).
        const MAX_LINGER_YIELDS: u32 = 64;
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.flush_lock.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        for _ in 0..MAX_LINGER_YIELDS {
            if self.writers.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let covers = self.tickets.load(Ordering::SeqCst);
        self.check_injected("flush")?;
        // Not sled's `flush_async`: in 0.34 its future can miss its wake-up when flushes race
        // (spacejam/sled#1241, #1308) and never complete; a unit's completion then never
        // acknowledged and its run stayed in scoring forever. A blocking flush on tokio's
        // blocking pool has no such race.
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => {
                flushed.map_err(self.sled_err("flush"))?;
            }
            Err(join) => {
                return Err(self.fail(StoreError::FlushTask {
                    path: self.path.clone(),
                    message: join.to_string(),
                }))
            }
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flushed.store(covers, Ordering::SeqCst);
        Ok(())
    }

    /// Blocking flush, for synchronous callers.
    pub fn durable_blocking(&self) -> Result<(), StoreError> {
        self.check_injected("flush")?;
        self.db.flush().map_err(self.sled_err("flush"))?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes done so far (to measure how many transitions share one).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        tree: usize,
        key: &[u8],
        value: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| self.corrupt(tree, key, &e.to_string()))
    }

    fn scan<T: DeserializeOwned>(&self, tree: usize, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.check_ok()?;
        let mut out = Vec::new();
        for item in self.trees[tree].scan_prefix(prefix) {
            let (k, v) = item.map_err(self.sled_err("scan"))?;
            out.push(self.decode(tree, &k, &v)?);
        }
        Ok(out)
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_ok()?;
        Ok(self.trees[tree]
            .get(key)
            .map_err(self.sled_err("read"))?
            .map(|v| v.to_vec()))
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.scan(RUNS, &[])
    }

    pub fn run_seq_by_name(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.get(RUN_NAMES, name.as_bytes())?.and_then(|v| {
            let bytes: [u8; 8] = v.as_slice().try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        }))
    }

    pub fn run_input(&self, seq: u64, input: RunInput) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(RUN_INPUTS, &input_key(seq, input))
    }

    /// The units of a run, in index order.
    pub fn units(&self, seq: u64) -> Result<Vec<UnitRecord>, StoreError> {
        self.scan(UNITS, &seq.to_be_bytes())
    }

    /// Calls `each` with every unit of a run in index order, without holding them all.
    pub fn for_each_unit(
        &self,
        seq: u64,
        mut each: impl FnMut(u32, UnitRecord),
    ) -> Result<(), StoreError> {
        for item in self.trees[UNITS].scan_prefix(seq.to_be_bytes()) {
            let (k, v) = item.map_err(self.sled_err("scan"))?;
            let index = k
                .get(8..12)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| self.corrupt(UNITS, &k, "key is not (run, unit index)"))?;
            each(index, self.decode(UNITS, &k, &v)?);
        }
        Ok(())
    }

    /// A unit's record; `None` while the unit never left the generate queue (a new run's
    /// units are not written one by one: see `Coordinator::submit_run`).
    pub fn unit(&self, seq: u64, index: u32) -> Result<Option<UnitRecord>, StoreError> {
        let key = unit_key(seq, index);
        match self.get(UNITS, &key)? {
            Some(v) => self.decode(UNITS, &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the inputs of a new run's tasks outside a transaction, in batches (each atomic):
    /// nothing references them until the run record is written.
    pub fn write_tasks<'a>(
        &self,
        seq: u64,
        tasks: impl Iterator<Item = (u32, &'a TaskInputs)>,
    ) -> Result<(), StoreError> {
        // Small batches: sled keeps a batch's garbage until it ends.
        const BATCH: usize = 256;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for (index, task) in tasks {
            batch.insert(&unit_key(seq, index)[..], task.encode());
            n += 1;
            if n == BATCH {
                self.write_batch(TASKS, std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        if n > 0 {
            self.write_batch(TASKS, batch)?;
        }
        Ok(())
    }

    fn write_batch(&self, tree: usize, batch: sled::Batch) -> Result<(), StoreError> {
        self.check_injected("batch")?;
        self.trees[tree]
            .apply_batch(batch)
            .map_err(self.sled_err("batch"))
    }

    pub fn task(&self, seq: u64, task_index: u32) -> Result<TaskInputs, StoreError> {
        let key = unit_key(seq, task_index);
        let bytes = self
            .get(TASKS, &key)?
            .ok_or_else(|| self.corrupt(TASKS, &key, "the task's inputs are missing"))?;
        TaskInputs::decode(&bytes).ok_or_else(|| self.corrupt(TASKS, &key, "not a task record"))
    }

    /// Calls `each` with every task of a run in index order.
    pub fn for_each_task(
        &self,
        seq: u64,
        mut each: impl FnMut(TaskInputs) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.trees[TASKS].scan_prefix(seq.to_be_bytes()) {
            let (k, v) = item.map_err(self.sled_err("scan"))?;
            let task = TaskInputs::decode(&v)
                .ok_or_else(|| self.corrupt(TASKS, &k, "not a task record"))?;
            each(task)?;
        }
        Ok(())
    }

    /// What a lease committed, if it committed a result.
    pub fn committed(&self, lease_id: u64) -> Result<Option<CommittedLease>, StoreError> {
        let key = lease_id.to_be_bytes();
        let Some(v) = self.get(COMMITTED, &key)? else {
            return Ok(None);
        };
        let bad = || self.corrupt(COMMITTED, &key, "not (run, unit index, phase)");
        if v.len() != 13 {
            return Err(bad());
        }
        Ok(Some(CommittedLease {
            seq: u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?),
            index: u32::from_be_bytes(v[8..12].try_into().map_err(|_| bad())?),
            phase: match v[12] {
                0 => Phase::Generate,
                1 => Phase::Evaluate,
                _ => return Err(bad()),
            },
        }))
    }

    fn corrupt(&self, tree: usize, key: &[u8], message: &str) -> StoreError {
        self.fail(StoreError::Corrupt {
            path: self.path.clone(),
            tree: TREE_NAMES[tree],
            key: hex::encode(key),
            message: message.to_string(),
        })
    }

    pub fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        self.scan(LEASES, &[])
    }

    pub fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        self.scan(WORKERS, &[])
    }

    pub fn generation(&self, seq: u64, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(GENERATIONS, &unit_key(seq, index))
    }

    pub fn evaluation(&self, seq: u64, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(EVALUATIONS, &unit_key(seq, index))
    }

    /// The output files of a run completed by a version that kept them in sled (they are in
    /// [`crate::outputs::store`] since), by name.
    pub fn outputs(&self, seq: u64) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees[OUTPUTS].scan_prefix(seq.to_be_bytes()) {
            let (k, v) = item.map_err(self.sled_err("scan"))?;
            let name = String::from_utf8_lossy(&k[8..]).into_owned();
            out.push((name, v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_inputs_round_trip_and_truncated_blobs_are_refused() {
        let t = TaskInputs {
            instance_id: "a_1".into(),
            repo: "o/a".into(),
            seed_repo: "o/seed".into(),
            task_json: br#"{"instance_id":"a_1"}"#.to_vec(),
            context_json: Vec::new(),
            predictions_jsonl: b"{\"instance_id\":\"a_1\",\"answer\":\"x\"}\n".to_vec(),
        };
        let bytes = t.encode();
        assert_eq!(TaskInputs::decode(&bytes), Some(t.clone()));
        for cut in [0, 3, 5, bytes.len() - 1] {
            assert_eq!(TaskInputs::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        // A record of five fields (before predictions were stored per task) still reads.
        let legacy = TaskInputs {
            predictions_jsonl: Vec::new(),
            ..t
        };
        let five = &legacy.encode()[..legacy.encode().len() - 4];
        assert_eq!(TaskInputs::decode(five), Some(legacy));
    }

    #[test]
    fn a_unit_never_leased_has_no_record_and_committed_leases_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        assert_eq!(store.unit(7, 0).unwrap(), None);
        let committed = CommittedLease {
            seq: 7,
            index: 3,
            phase: Phase::Evaluate,
        };
        store
            .apply(&[Op::Committed {
                lease_id: 42,
                committed,
            }])
            .unwrap();
        assert_eq!(store.committed(42).unwrap(), Some(committed));
        assert_eq!(store.committed(43).unwrap(), None);
    }
}
