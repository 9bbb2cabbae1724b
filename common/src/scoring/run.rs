//! A run's score from its results, one way for every caller: the coordinator's finish and
//! `ase score` gather the tasks, generations and scans (from their records or from upstream's
//! files), and [`score_run`] checks the dataset's version, builds the v1 or v2 input and scores
//! it. [`run_version`] is the one check that a run is of a single version.

use super::v1::{self, V1Input, V1Score, V1Task};
use super::v2::{self, V2Input, V2Score, V2Task};
use super::{Generation, ScoringError, UnitId, UnitOutcome};
use crate::dataset::{single_version, DatasetVersion, MixedVersions};
use crate::unit::V2Scan;
use std::collections::BTreeMap;

/// One task of the run as the scorers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTask {
    pub instance_id: String,
    pub version: DatasetVersion,
    pub vuln_type: String,
    pub cwe_id: String,
    /// The v1 baseline (issues found in the original code); `None` for a v2 task.
    pub baseline: Option<i64>,
}

/// The evaluations of a run's units, by the version that made them.
#[derive(Debug, Clone, PartialEq)]
pub enum RunScans {
    /// Scan count per unit (`SCAN_FAILED` for a failed scan); a unit absent was not scanned.
    V1(BTreeMap<UnitId, i64>),
    V2(BTreeMap<UnitId, V2Scan>),
}

impl RunScans {
    pub fn version(&self) -> DatasetVersion {
        match self {
            RunScans::V1(_) => DatasetVersion::V1,
            RunScans::V2(_) => DatasetVersion::V2,
        }
    }
}

/// Everything a run is scored from.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResults {
    pub rounds: u32,
    /// In dataset order; a task listed twice counts twice (upstream does).
    pub tasks: Vec<RunTask>,
    /// In `processed_instances.json` order.
    pub generations: Vec<Generation>,
    pub scans: RunScans,
}

/// A run's score and every unit's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoredRun {
    V1 {
        score: V1Score,
        outcomes: Vec<UnitOutcome>,
    },
    V2 {
        score: V2Score,
        outcomes: Vec<UnitOutcome>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunScoreError {
    /// A run is scored one way: every task of the dataset must be of the same version.
    #[error(transparent)]
    MixedVersions(#[from] MixedVersions),
    #[error("the dataset is {dataset:?} but the results are {results:?}")]
    ResultsOfOtherVersion {
        dataset: DatasetVersion,
        results: DatasetVersion,
    },
    #[error("task {0} is a v1 task without a baseline")]
    NoBaseline(String),
    #[error(transparent)]
    Scoring(#[from] ScoringError),
}

/// The version of a run's tasks: the one that decides which results are gathered and how they
/// are scored. A dataset mixing both is refused, an empty one has nothing to score.
pub fn run_version<'a>(
    tasks: impl IntoIterator<Item = (&'a str, DatasetVersion)>,
) -> Result<DatasetVersion, RunScoreError> {
    single_version(tasks)?.ok_or(RunScoreError::Scoring(ScoringError::NoTasks))
}

/// Score a run: its version checked against its results, then upstream's v1 or v2 scoring.
pub fn score_run(results: RunResults) -> Result<ScoredRun, RunScoreError> {
    let RunResults {
        rounds,
        tasks,
        generations,
        scans,
    } = results;
    let dataset = run_version(tasks.iter().map(|t| (t.instance_id.as_str(), t.version)))?;
    if dataset != scans.version() {
        return Err(RunScoreError::ResultsOfOtherVersion {
            dataset,
            results: scans.version(),
        });
    }
    match scans {
        RunScans::V1(scans) => {
            let input = V1Input {
                rounds,
                tasks: tasks
                    .into_iter()
                    .map(|t| match t.baseline {
                        Some(baseline) => Ok(V1Task {
                            instance_id: t.instance_id,
                            vuln_type: t.vuln_type,
                            baseline,
                        }),
                        None => Err(RunScoreError::NoBaseline(t.instance_id)),
                    })
                    .collect::<Result<_, _>>()?,
                generations,
                scans,
            };
            let score = v1::score_v1(&input)?;
            Ok(ScoredRun::V1 {
                score,
                outcomes: v1::unit_outcomes(&input),
            })
        }
        RunScans::V2(scans) => {
            let input = V2Input {
                rounds,
                tasks: tasks
                    .into_iter()
                    .map(|t| V2Task {
                        instance_id: t.instance_id,
                        cwe_id: t.cwe_id,
                    })
                    .collect(),
                generations,
                scans,
            };
            let score = v2::score_v2(&input)?;
            Ok(ScoredRun::V2 {
                score,
                outcomes: v2::unit_outcomes(&input),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, version: DatasetVersion) -> RunTask {
        RunTask {
            instance_id: id.into(),
            version,
            vuln_type: "sqli".into(),
            cwe_id: "CWE-89".into(),
            baseline: (version == DatasetVersion::V1).then_some(2),
        }
    }

    fn generations(ids: &[&str], rounds: u32) -> Vec<Generation> {
        ids.iter()
            .flat_map(|id| {
                (1..=rounds).map(move |r| Generation {
                    unit: UnitId::new(*id, r),
                    success: true,
                    time_cost: 1.0,
                })
            })
            .collect()
    }

    #[test]
    fn a_v1_run_scores_as_score_v1_does() {
        let tasks = vec![task("a", DatasetVersion::V1), task("b", DatasetVersion::V1)];
        let scans: BTreeMap<UnitId, i64> = [
            (UnitId::new("a", 1), 0),
            (UnitId::new("a", 2), 3),
            (UnitId::new("b", 1), 1),
        ]
        .into();
        let results = RunResults {
            rounds: 2,
            tasks: tasks.clone(),
            generations: generations(&["a", "b"], 2),
            scans: RunScans::V1(scans.clone()),
        };
        let direct = V1Input {
            rounds: 2,
            tasks: tasks
                .iter()
                .map(|t| V1Task {
                    instance_id: t.instance_id.clone(),
                    vuln_type: t.vuln_type.clone(),
                    baseline: 2,
                })
                .collect(),
            generations: generations(&["a", "b"], 2),
            scans,
        };
        assert_eq!(
            score_run(results).unwrap(),
            ScoredRun::V1 {
                score: v1::score_v1(&direct).unwrap(),
                outcomes: v1::unit_outcomes(&direct),
            }
        );
    }

    #[test]
    fn a_v2_run_scores_as_score_v2_does() {
        let tasks = vec![task("a", DatasetVersion::V2)];
        let scans: BTreeMap<UnitId, V2Scan> = [(
            UnitId::new("a", 1),
            V2Scan {
                completion: true,
                image_status_check: true,
                test_case_check: true,
                poc_check: false,
            },
        )]
        .into();
        let direct = V2Input {
            rounds: 1,
            tasks: vec![V2Task {
                instance_id: "a".into(),
                cwe_id: "CWE-89".into(),
            }],
            generations: generations(&["a"], 1),
            scans: scans.clone(),
        };
        let scored = score_run(RunResults {
            rounds: 1,
            tasks,
            generations: generations(&["a"], 1),
            scans: RunScans::V2(scans),
        })
        .unwrap();
        assert_eq!(
            scored,
            ScoredRun::V2 {
                score: v2::score_v2(&direct).unwrap(),
                outcomes: v2::unit_outcomes(&direct),
            }
        );
    }

    #[test]
    fn mixed_empty_and_mismatched_runs_are_refused() {
        let mixed = score_run(RunResults {
            rounds: 1,
            tasks: vec![task("a", DatasetVersion::V1), task("b", DatasetVersion::V2)],
            generations: vec![],
            scans: RunScans::V1(BTreeMap::new()),
        });
        assert!(
            matches!(mixed, Err(RunScoreError::MixedVersions(_))),
            "{mixed:?}"
        );
        let empty = score_run(RunResults {
            rounds: 1,
            tasks: vec![],
            generations: vec![],
            scans: RunScans::V1(BTreeMap::new()),
        });
        assert_eq!(empty, Err(RunScoreError::Scoring(ScoringError::NoTasks)));
        assert!(empty.unwrap_err().to_string().contains("has no task"));
        let other = score_run(RunResults {
            rounds: 1,
            tasks: vec![task("a", DatasetVersion::V2)],
            generations: vec![],
            scans: RunScans::V1(BTreeMap::new()),
        });
        assert_eq!(
            other,
            Err(RunScoreError::ResultsOfOtherVersion {
                dataset: DatasetVersion::V2,
                results: DatasetVersion::V1,
            })
        );
        let mut no_baseline = task("a", DatasetVersion::V1);
        no_baseline.baseline = None;
        assert_eq!(
            score_run(RunResults {
                rounds: 1,
                tasks: vec![no_baseline],
                generations: vec![],
                scans: RunScans::V1(BTreeMap::new()),
            }),
            Err(RunScoreError::NoBaseline("a".into()))
        );
    }
}
