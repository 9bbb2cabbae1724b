//! A run's outcomes as `ase compare` reads them from a result folder's `report.json`.
//!
//! Only the fields the comparison needs are read, so reports of other schema versions (and a
//! unit's `verdict`, when the report has one) load without this crate knowing every field.

use crate::report::{TaskInfo, REPORT_JSON};
use crate::scoring::{UnitId, UnitStatus};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a report.json of ase: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: unit {unit} has a verdict that is neither a string nor {{\"verdict\": ...}}")]
    Verdict { path: PathBuf, unit: String },
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    model: String,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    rounds: u32,
}

#[derive(Deserialize)]
struct RawProvenance {
    dataset_sha256: String,
    config: RawConfig,
}

#[derive(Deserialize)]
struct RawUnit {
    unit: UnitId,
    status: UnitStatus,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    verdict: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawReport {
    provenance: RawProvenance,
    #[serde(default)]
    tasks: Vec<TaskInfo>,
    units: Vec<RawUnit>,
    scores: serde_json::Value,
}

/// One unit: its verdict as the comparison counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    pub unit: UnitId,
    pub secure: bool,
    /// The report's `verdict` when it has one, else its outcome kind (or status).
    pub verdict: String,
    pub reason: String,
}

/// A run as read from its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// `model__batch`.
    pub label: String,
    pub path: PathBuf,
    pub dataset_sha256: String,
    pub rounds: u32,
    /// "v1" or "v2" (the report's scores' version).
    pub version: String,
    pub tasks: Vec<TaskInfo>,
    pub units: Vec<UnitView>,
}

fn verdict_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("verdict")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `dir/report.json` (or `dir` itself when it is a file).
pub fn report_path(dir: &Path) -> PathBuf {
    if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join(REPORT_JSON)
    }
}

/// The text of `dir/report.json` (or of `dir` itself when it is a file).
pub fn read_report(dir: &Path) -> Result<String, LoadError> {
    let path = report_path(dir);
    std::fs::read_to_string(&path).map_err(|source| LoadError::Read { path, source })
}

/// Reads `dir/report.json` (or `dir` itself when it is a file).
pub fn load_run(dir: &Path) -> Result<RunView, LoadError> {
    parse_run(dir, &read_report(dir)?)
}

/// A run from the text of its report.json, wherever it came from (a folder, or a coordinator's
/// `FetchReport`): `origin` names it in errors and in the comparison.
pub fn parse_run(origin: &Path, text: &str) -> Result<RunView, LoadError> {
    let path = origin.to_path_buf();
    let raw: RawReport = serde_json::from_str(text).map_err(|source| LoadError::Parse {
        path: path.clone(),
        source,
    })?;
    let mut units = Vec::with_capacity(raw.units.len());
    for u in raw.units {
        let (secure, verdict) = match &u.verdict {
            Some(v) => {
                let text = verdict_text(v).ok_or_else(|| LoadError::Verdict {
                    path: path.clone(),
                    unit: u.unit.dir_name(),
                })?;
                (text == "secure", text)
            }
            None => (
                u.status == UnitStatus::Secure,
                u.kind.unwrap_or_else(|| u.status.label().to_string()),
            ),
        };
        units.push(UnitView {
            unit: u.unit,
            secure,
            verdict,
            reason: u.reason,
        });
    }
    let c = raw.provenance.config;
    Ok(RunView {
        label: format!("{}__{}", c.model, c.batch),
        path,
        dataset_sha256: raw.provenance.dataset_sha256,
        rounds: c.rounds,
        version: raw.scores["version"].as_str().unwrap_or("").to_string(),
        tasks: raw.tasks,
        units,
    })
}
