//! The leaderboard of a campaign (or of the runs `ase compare` was given): one row per run
//! with overall, security (upstream-compatible and ours), quality and stability, each with its
//! 95 % interval from the run's report (`uncertainty`), sorted by overall. Runs are compared
//! only within one dataset: each dataset (version and sha256) gets its own table. The A.S.E
//! paper's figures (`paper`) are shown beside the v1 tables, labelled as not comparable.
//!
//! Written as `leaderboard.json` (everything), `leaderboard.md` and `leaderboard.html` (one
//! self-contained page, every number keyed to the JSON by `data-key`).

pub mod html;
pub mod markdown;
pub mod paper;

use crate::compare::VerdictCounts;
use crate::report::{Report, Scores, REPORT_JSON};
use crate::scoring::stats::round2;
use crate::uncertainty::bootstrap::Interval;
use paper::PaperTable;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const LEADERBOARD_JSON: &str = "leaderboard.json";
pub const LEADERBOARD_MD: &str = "leaderboard.md";
pub const LEADERBOARD_HTML: &str = "leaderboard.html";

/// Bytes of a report read for a leaderboard.
const MAX_REPORT_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LeaderboardError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_REPORT_BYTES} bytes, not read")]
    TooLarge { path: PathBuf },
    #[error("{path}: not a report.json of ase: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One run's row. Figures are the report's (x100, 2 decimals); intervals are unrounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRow {
    /// 1 for the highest overall of its table.
    pub rank: u32,
    /// `model__batch`.
    pub run: String,
    pub model: String,
    pub tasks: u32,
    pub rounds: u32,
    /// Upstream-compatible overall (v2: stability added as a fraction, as upstream does).
    pub overall: f64,
    pub overall_interval: Option<Interval>,
    /// v2: the overall with stability as a percentage like the others.
    pub overall_corrected: Option<f64>,
    pub overall_corrected_interval: Option<Interval>,
    /// Upstream-compatible security.
    pub security: f64,
    pub security_interval: Option<Interval>,
    /// Ours: `broken` units count as not secure (weighted as the run's scores are).
    pub security_ours: Option<f64>,
    pub security_ours_interval: Option<Interval>,
    pub quality: f64,
    pub quality_interval: Option<Interval>,
    /// `None` with one round.
    pub stability: Option<f64>,
    pub stability_interval: Option<Interval>,
    /// Every unit of the run by our verdict.
    #[serde(default)]
    pub verdicts: VerdictCounts,
    /// What this run's report cannot give.
    pub not_available: Vec<String>,
}

/// The runs of one dataset, best overall first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardTable {
    /// "v1" or "v2".
    pub version: String,
    pub dataset_path: String,
    pub dataset_sha256: String,
    pub rows: Vec<LeaderboardRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub method: String,
    pub tables: Vec<LeaderboardTable>,
    /// The paper's figures, for orientation beside v1 tables; `None` without a v1 table.
    pub paper: Option<PaperTable>,
}

pub const METHOD: &str = "one row per run, sorted by overall (upstream-compatible), ties by run \
     name; each figure with its 95 % percentile bootstrap interval over tasks (a task's rounds \
     kept together) from the run's report.json; runs of different datasets are in different \
     tables";

/// A run's row from its report (rank set by [`Leaderboard::from_reports`]).
pub fn row_of(report: &Report) -> LeaderboardRow {
    let c = &report.provenance.config;
    let u = report.uncertainty.as_ref();
    let (overall, corrected, security, quality, stability) = match &report.scores {
        Scores::V1(s) => (s.overall, None, s.security, s.quality, s.stability),
        Scores::V2(s) => (
            s.all.overall_score,
            Some(s.all.overall_score_corrected),
            s.all.code_security_score,
            s.all.code_quality_score,
            s.all.code_stability_score,
        ),
    };
    let ours = u.and_then(|u| u.security_verdict);
    let mut not_available = u.map(|u| u.not_available.clone()).unwrap_or_else(|| {
        vec!["intervals: the report has none (made before they were computed)".to_string()]
    });
    if ours.is_none() {
        not_available.push("security (ours): the report has no verdict interval".to_string());
    }
    LeaderboardRow {
        rank: 0,
        run: format!("{}__{}", c.model, c.batch),
        model: c.model.clone(),
        tasks: report.tasks.len() as u32,
        rounds: c.rounds,
        overall,
        overall_interval: u.and_then(|u| u.overall),
        overall_corrected: corrected,
        overall_corrected_interval: u.and_then(|u| u.overall_corrected),
        security,
        security_interval: u.and_then(|u| u.security),
        security_ours: ours.map(|i| round2(i.estimate)),
        security_ours_interval: ours,
        quality,
        quality_interval: u.and_then(|u| u.quality),
        stability,
        stability_interval: u.and_then(|u| u.stability),
        verdicts: VerdictCounts {
            secure: report.breakdown.all.verdict_secure,
            vulnerable: report.breakdown.all.verdict_vulnerable,
            broken: report.breakdown.all.verdict_broken,
        },
        not_available,
    }
}

impl Leaderboard {
    /// Tables in order of each dataset's first report; rows sorted by overall, best first.
    pub fn from_reports(reports: &[Report]) -> Self {
        let mut tables: Vec<LeaderboardTable> = Vec::new();
        for r in reports {
            let version = match r.scores {
                Scores::V1(_) => "v1",
                Scores::V2(_) => "v2",
            };
            let sha = &r.provenance.dataset_sha256;
            let i = match tables
                .iter()
                .position(|t| t.version == version && &t.dataset_sha256 == sha)
            {
                Some(i) => i,
                None => {
                    tables.push(LeaderboardTable {
                        version: version.to_string(),
                        dataset_path: r.provenance.dataset_path.clone(),
                        dataset_sha256: sha.clone(),
                        rows: Vec::new(),
                    });
                    tables.len() - 1
                }
            };
            tables[i].rows.push(row_of(r));
        }
        for t in &mut tables {
            t.rows.sort_by(|a, b| {
                b.overall
                    .total_cmp(&a.overall)
                    .then_with(|| a.run.cmp(&b.run))
            });
            for (rank, row) in t.rows.iter_mut().enumerate() {
                row.rank = rank as u32 + 1;
            }
        }
        let paper = tables
            .iter()
            .any(|t| t.version == "v1")
            .then(paper::paper_table2);
        Self {
            method: METHOD.to_string(),
            tables,
            paper,
        }
    }
}

/// Reads `dir/report.json` (or `dir` itself when it is a file).
pub fn load_report(dir: &Path) -> Result<Report, LeaderboardError> {
    let path = if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join(REPORT_JSON)
    };
    let len = std::fs::metadata(&path)
        .map_err(|source| LeaderboardError::Read {
            path: path.clone(),
            source,
        })?
        .len();
    if len > MAX_REPORT_BYTES {
        return Err(LeaderboardError::TooLarge { path });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| LeaderboardError::Read {
        path: path.clone(),
        source,
    })?;
    parse_report(&path, &text)
}

/// A report from the text of a report.json, wherever it came from (a folder, or a
/// coordinator's `FetchReport`): `origin` names it in errors.
pub fn parse_report(origin: &Path, text: &str) -> Result<Report, LeaderboardError> {
    if text.len() as u64 > MAX_REPORT_BYTES {
        return Err(LeaderboardError::TooLarge {
            path: origin.to_path_buf(),
        });
    }
    serde_json::from_str(text).map_err(|source| LeaderboardError::Parse {
        path: origin.to_path_buf(),
        source,
    })
}

/// Writes `leaderboard.json`, `.md` and `.html` into `dir` (created when missing); returns
/// the HTML's path.
pub fn write_leaderboard(dir: &Path, board: &Leaderboard) -> Result<PathBuf, LeaderboardError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LeaderboardError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let json = serde_json::to_string_pretty(board).expect("a leaderboard serialises") + "\n";
    for (name, text) in [
        (LEADERBOARD_JSON, json),
        (LEADERBOARD_MD, markdown::render_markdown(board)),
        (LEADERBOARD_HTML, html::render_html(board)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(err(&path))?;
    }
    Ok(dir.join(LEADERBOARD_HTML))
}
