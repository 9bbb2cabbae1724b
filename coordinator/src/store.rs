//! All sled access of the coordinator. Keys are big-endian so they sort; values are JSON of the
//! `model` records, or the bytes exactly as received (run spec, dataset, context, results).
//!
//! Transitions are applied as one multi-tree transaction ([`Store::apply`]) and made durable
//! with [`Store::durable`] before they are acknowledged: sled only fsyncs in the background, so
//! nothing is durable until a flush returns. Concurrent callers share flushes (group commit).

use crate::model::{LeaseRecord, RunRecord, UnitRecord, WorkerRecord};
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};
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
}

/// One write of a transition.
#[derive(Debug, Clone)]
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
    Output {
        seq: u64,
        name: String,
        bytes: Vec<u8>,
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
const TREE_NAMES: [&str; 9] = [
    "runs",
    "run_names",
    "run_inputs",
    "units",
    "leases",
    "generations",
    "evaluations",
    "workers",
    "outputs",
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

fn output_key(seq: u64, name: &str) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("coordinator records serialise to JSON")
}

impl Store {
    /// Opens (or creates) the database; fails with the path when it cannot.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new().path(path).open().map_err(open_err)?;
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, what: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Sled {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// A fresh id, unique and increasing across restarts (sled persists its id counter).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        // sled's ids start at 0; keep 0 free to mean "none" on the wire.
        self.db
            .generate_id()
            .map(|id| id + 1)
            .map_err(self.sled_err("generate id"))
    }

    /// Applies every write atomically across trees. Values are encoded before the
    /// transaction: its closure may run more than once and must have no side effects.
    pub fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut writes: Vec<(usize, Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(ops.len());
        for op in ops {
            writes.push(match op {
                Op::Run(r) => (RUNS, r.seq.to_be_bytes().to_vec(), Some(json(r))),
                Op::RunName { name, seq } => (
                    RUN_NAMES,
                    name.as_bytes().to_vec(),
                    Some(seq.to_be_bytes().to_vec()),
                ),
                Op::RunInput { seq, input, bytes } => (
                    RUN_INPUTS,
                    input_key(*seq, *input).to_vec(),
                    Some(bytes.clone()),
                ),
                Op::Unit { seq, index, record } => {
                    (UNITS, unit_key(*seq, *index).to_vec(), Some(json(record)))
                }
                Op::Lease(l) => (LEASES, l.lease_id.to_be_bytes().to_vec(), Some(json(l))),
                Op::DeleteLease(id) => (LEASES, id.to_be_bytes().to_vec(), None),
                Op::Generation { seq, index, json } => (
                    GENERATIONS,
                    unit_key(*seq, *index).to_vec(),
                    Some(json.clone()),
                ),
                Op::Evaluation { seq, index, json } => (
                    EVALUATIONS,
                    unit_key(*seq, *index).to_vec(),
                    Some(json.clone()),
                ),
                Op::Worker(w) => (WORKERS, w.name.as_bytes().to_vec(), Some(json(w))),
                Op::Output { seq, name, bytes } => {
                    (OUTPUTS, output_key(*seq, name), Some(bytes.clone()))
                }
            });
        }
        let trees: Vec<&Tree> = self.trees.iter().collect();
        let result: Result<(), TransactionError<()>> = trees[..].transaction(|tx| {
            for (tree, key, value) in &writes {
                match value {
                    Some(v) => {
                        tx[*tree].insert(key.as_slice(), v.as_slice())?;
                    }
                    None => {
                        tx[*tree].remove(key.as_slice())?;
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(source)) => Err(StoreError::Sled {
                path: self.path.clone(),
                what: "transaction",
                source,
            }),
            Err(TransactionError::Abort(())) => unreachable!("no transaction aborts"),
        }
    }

    /// Returns once every write applied before the call is on disk. Concurrent callers share
    /// one flush: whoever takes the lock flushes for all tickets handed out so far.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.flush_lock.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covers = self.tickets.load(Ordering::SeqCst);
        self.db
            .flush_async()
            .await
            .map_err(self.sled_err("flush"))?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flushed.store(covers, Ordering::SeqCst);
        Ok(())
    }

    /// Blocking flush, for synchronous callers.
    pub fn durable_blocking(&self) -> Result<(), StoreError> {
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
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            tree: TREE_NAMES[tree],
            key: hex::encode(key),
            message: e.to_string(),
        })
    }

    fn scan<T: DeserializeOwned>(&self, tree: usize, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees[tree].scan_prefix(prefix) {
            let (k, v) = item.map_err(self.sled_err("scan"))?;
            out.push(self.decode(tree, &k, &v)?);
        }
        Ok(out)
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
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

    /// The stored output files of a run, by name.
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
