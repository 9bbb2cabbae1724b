//! `ase compare`: two or more runs over one dataset, paired per task.
//!
//! - A task's result in a run is its share of secure rounds; run B is better on a task when its
//!   share is higher. The exact sign test (`sign_test`) takes the tasks where the two differ.
//! - Security per run and per group is secure units over units of the compared tasks (x100);
//!   when both runs are v1 the overall figure weighs vulnerability types equally, as v1's
//!   security does. The delta (B - A, in points) has a paired bootstrap interval: the same
//!   resampled tasks for both runs (`uncertainty::bootstrap`).
//! - Runs over different datasets (report.json `provenance.dataset_sha256`) are refused unless
//!   `shared_tasks` is set; then only the tasks every run has are compared, and the result says
//!   so. The verdict of a unit is the report's `verdict` when present, else its status.

pub mod html;
pub mod load;
pub mod markdown;
pub mod sign_test;

use crate::report::{TaskInfo, UNKNOWN_GROUP};
use crate::uncertainty::bootstrap::{bootstrap, BootstrapConfig, Interval};
use crate::uncertainty::{
    security_of, uncertainty, SecurityStatistic, TaskRounds, Uncertainty, Weighting,
};
use load::{LoadError, RunView, UnitView};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("a comparison needs at least two runs, got {0}")]
    TooFewRuns(usize),
    #[error(
        "{} and {} were run on different datasets (sha256 {} and {}); \
         pass --shared-tasks to compare their shared tasks only",
        first.display(), other.display(), first_sha, other_sha
    )]
    DifferentDatasets {
        first: PathBuf,
        first_sha: String,
        other: PathBuf,
        other_sha: String,
    },
    #[error("the runs have no task in common")]
    NoSharedTasks,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CompareOptions {
    /// Compare runs over different datasets on the tasks they share.
    pub shared_tasks: bool,
    pub bootstrap: BootstrapConfig,
}

/// One run in the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub label: String,
    pub path: String,
    pub dataset_sha256: String,
    pub version: String,
    pub rounds: u32,
    /// Tasks of the run not compared (not shared by every run).
    pub tasks_left_out: u32,
    /// Units of the compared tasks by verdict.
    pub verdicts: VerdictCounts,
    /// Security of the compared tasks with its interval, pass@k, pass^k.
    pub uncertainty: Uncertainty,
}

/// Units by our three verdicts. A report without verdicts (made before they were kept)
/// counts its secure units as secure, its `vulnerable` ones as vulnerable, and every other
/// outcome as broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct VerdictCounts {
    pub secure: u32,
    pub vulnerable: u32,
    pub broken: u32,
}

impl VerdictCounts {
    fn of<'a>(units: impl IntoIterator<Item = &'a UnitView>) -> Self {
        let mut c = Self::default();
        for u in units {
            if u.secure {
                c.secure += 1;
            } else if u.verdict == "vulnerable" {
                c.vulnerable += 1;
            } else {
                c.broken += 1;
            }
        }
        c
    }
}

/// Security of two runs on one group of tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupDelta {
    pub group: String,
    pub tasks: u32,
    pub security_a: f64,
    pub security_b: f64,
    /// `security_b - security_a`, points.
    pub delta: f64,
    /// The delta's paired bootstrap interval (the group's tasks resampled).
    pub delta_low: f64,
    pub delta_high: f64,
    pub a_better: u32,
    pub b_better: u32,
    pub p_value: f64,
}

/// A unit of a flipped task, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitNote {
    pub round: u32,
    pub verdict: String,
    pub reason: String,
}

/// One run's side of a flipped task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub secure: u32,
    pub rounds: u32,
    pub units: Vec<UnitNote>,
}

/// A task the two runs judged differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flip {
    pub instance_id: String,
    pub vuln_type: String,
    pub cwe_id: String,
    pub language: String,
    /// The label of the run more often secure on it.
    pub better: String,
    pub a: Side,
    pub b: Side,
}

/// Run A (earlier on the command line) against run B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairComparison {
    pub a: String,
    pub b: String,
    pub tasks: u32,
    pub a_better: u32,
    pub b_better: u32,
    pub ties: u32,
    /// Exact two-sided sign test over the `a_better + b_better` tasks that differ.
    pub p_value: f64,
    pub weighting: Weighting,
    /// `estimate` is B's security minus A's (points), with a paired bootstrap interval.
    pub delta: Interval,
    pub security_a: f64,
    pub security_b: f64,
    pub by_type: Vec<GroupDelta>,
    pub by_cwe: Vec<GroupDelta>,
    pub by_language: Vec<GroupDelta>,
    pub flipped: Vec<Flip>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub method: String,
    /// The distinct datasets of the runs (one unless `shared_tasks_only`).
    pub datasets: Vec<String>,
    /// Set when the runs' datasets differ and only their shared tasks were compared.
    pub shared_tasks_only: bool,
    pub tasks_compared: u32,
    pub runs: Vec<RunSummary>,
    pub pairs: Vec<PairComparison>,
}

pub const METHOD: &str = "paired per task; a task counts for the run with the higher share of \
     secure rounds; exact two-sided sign test (binomial, p = 1/2) over the tasks that differ; \
     deltas are B - A in points with a paired percentile bootstrap over tasks";

/// The compared tasks, in the first run's order.
fn shared_tasks(runs: &[RunView]) -> Vec<String> {
    let sets: Vec<HashSet<&str>> = runs
        .iter()
        .map(|r| {
            r.units
                .iter()
                .map(|u| u.unit.instance_id.as_str())
                .collect()
        })
        .collect();
    let mut seen = HashSet::new();
    runs[0]
        .units
        .iter()
        .map(|u| u.unit.instance_id.as_str())
        .filter(|id| sets.iter().all(|s| s.contains(id)) && seen.insert(*id))
        .map(str::to_string)
        .collect()
}

/// Each compared task's units in one run, in task order.
fn units_by_task<'a>(run: &'a RunView, tasks: &[String]) -> Vec<Vec<&'a UnitView>> {
    let mut by: HashMap<&str, Vec<&UnitView>> = HashMap::new();
    for u in &run.units {
        by.entry(u.unit.instance_id.as_str()).or_default().push(u);
    }
    tasks
        .iter()
        .map(|t| {
            let mut v = by.remove(t.as_str()).unwrap_or_default();
            v.sort_by_key(|u| u.unit.round);
            v
        })
        .collect()
}

fn rounds_of(units: &[Vec<&UnitView>], tasks: &[String], info: &[TaskInfo]) -> Vec<TaskRounds> {
    units
        .iter()
        .zip(tasks)
        .zip(info)
        .map(|((u, id), i)| TaskRounds {
            instance_id: id.clone(),
            group: i.vuln_type.clone(),
            secure: u.iter().filter(|x| x.secure).count() as u32,
            rounds: u.len() as u32,
        })
        .collect()
}

/// `Ordering` of B's secure share against A's on one task.
fn b_vs_a(a: &TaskRounds, b: &TaskRounds) -> std::cmp::Ordering {
    (u64::from(b.secure) * u64::from(a.rounds)).cmp(&(u64::from(a.secure) * u64::from(b.rounds)))
}

fn side(units: &[&UnitView], t: &TaskRounds) -> Side {
    Side {
        secure: t.secure,
        rounds: t.rounds,
        units: units
            .iter()
            .map(|u| UnitNote {
                round: u.unit.round,
                verdict: u.verdict.clone(),
                reason: u.reason.clone(),
            })
            .collect(),
    }
}

fn group_deltas(
    a: &[TaskRounds],
    b: &[TaskRounds],
    info: &[TaskInfo],
    config: &BootstrapConfig,
    key: impl Fn(&TaskInfo) -> &str,
) -> Vec<GroupDelta> {
    let mut order: Vec<&str> = Vec::new();
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in info.iter().enumerate() {
        members
            .entry(key(t))
            .or_insert_with(|| {
                order.push(key(t));
                Vec::new()
            })
            .push(i);
    }
    let pooled_a = SecurityStatistic::new(a, Weighting::Pooled);
    let pooled_b = SecurityStatistic::new(b, Weighting::Pooled);
    order
        .iter()
        .map(|g| {
            let idx = &members[g];
            let (mut wa, mut wb) = (0u32, 0u32);
            for &i in idx {
                match b_vs_a(&a[i], &b[i]) {
                    std::cmp::Ordering::Greater => wb += 1,
                    std::cmp::Ordering::Less => wa += 1,
                    std::cmp::Ordering::Equal => {}
                }
            }
            let sa = security_of(a, idx, Weighting::Pooled);
            let sb = security_of(b, idx, Weighting::Pooled);
            let diff = |s: &[usize]| pooled_b.eval(s) - pooled_a.eval(s);
            let interval = bootstrap(std::slice::from_ref(idx), config, diff);
            GroupDelta {
                group: g.to_string(),
                tasks: idx.len() as u32,
                security_a: sa,
                security_b: sb,
                delta: sb - sa,
                delta_low: interval.map_or(sb - sa, |i| i.low),
                delta_high: interval.map_or(sb - sa, |i| i.high),
                a_better: wa,
                b_better: wb,
                p_value: sign_test::sign_test(u64::from(wa + wb), u64::from(wa)),
            }
        })
        .collect()
}

struct Prepared<'a> {
    run: &'a RunView,
    /// The run's label, made unique among the runs by its folder.
    label: String,
    units: Vec<Vec<&'a UnitView>>,
    rounds: Vec<TaskRounds>,
}

fn pair(a: &Prepared, b: &Prepared, info: &[TaskInfo], options: &CompareOptions) -> PairComparison {
    let weighting = if a.run.version == "v1" && b.run.version == "v1" {
        Weighting::GroupsEqually
    } else {
        Weighting::Pooled
    };
    let (mut wa, mut wb) = (0u32, 0u32);
    let mut flipped = Vec::new();
    for (i, t) in info.iter().enumerate() {
        let better = match b_vs_a(&a.rounds[i], &b.rounds[i]) {
            std::cmp::Ordering::Equal => continue,
            std::cmp::Ordering::Greater => {
                wb += 1;
                &b.label
            }
            std::cmp::Ordering::Less => {
                wa += 1;
                &a.label
            }
        };
        flipped.push(Flip {
            instance_id: t.instance_id.clone(),
            vuln_type: t.vuln_type.clone(),
            cwe_id: t.cwe_id.clone(),
            language: t.language.clone(),
            better: better.clone(),
            a: side(&a.units[i], &a.rounds[i]),
            b: side(&b.units[i], &b.rounds[i]),
        });
    }
    let strata: Vec<Vec<usize>> = match weighting {
        Weighting::Pooled => vec![(0..info.len()).collect()],
        Weighting::GroupsEqually => group_indices(info, |t| &t.vuln_type),
    };
    let (stat_a, stat_b) = (
        SecurityStatistic::new(&a.rounds, weighting),
        SecurityStatistic::new(&b.rounds, weighting),
    );
    let diff = |s: &[usize]| stat_b.eval(s) - stat_a.eval(s);
    let delta = bootstrap(&strata, &options.bootstrap, diff).unwrap_or(Interval {
        estimate: 0.0,
        low: 0.0,
        high: 0.0,
    });
    let all: Vec<usize> = (0..info.len()).collect();
    PairComparison {
        a: a.label.clone(),
        b: b.label.clone(),
        tasks: info.len() as u32,
        a_better: wa,
        b_better: wb,
        ties: info.len() as u32 - wa - wb,
        p_value: sign_test::sign_test(u64::from(wa + wb), u64::from(wa)),
        weighting,
        delta,
        security_a: security_of(&a.rounds, &all, weighting),
        security_b: security_of(&b.rounds, &all, weighting),
        by_type: group_deltas(&a.rounds, &b.rounds, info, &options.bootstrap, |t| {
            &t.vuln_type
        }),
        by_cwe: group_deltas(&a.rounds, &b.rounds, info, &options.bootstrap, |t| {
            &t.cwe_id
        }),
        by_language: group_deltas(&a.rounds, &b.rounds, info, &options.bootstrap, |t| {
            &t.language
        }),
        flipped,
    }
}

fn group_indices(info: &[TaskInfo], key: impl Fn(&TaskInfo) -> &str) -> Vec<Vec<usize>> {
    let mut order: Vec<&str> = Vec::new();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in info.iter().enumerate() {
        members
            .entry(key(t))
            .or_insert_with(|| {
                order.push(key(t));
                Vec::new()
            })
            .push(i);
    }
    order
        .iter()
        .map(|g| members.remove(g).unwrap_or_default())
        .collect()
}

/// Compares loaded runs (see the module documentation).
pub fn compare(runs: &[RunView], options: &CompareOptions) -> Result<Comparison, CompareError> {
    if runs.len() < 2 {
        return Err(CompareError::TooFewRuns(runs.len()));
    }
    let first = &runs[0];
    let mut datasets = vec![first.dataset_sha256.clone()];
    for r in &runs[1..] {
        if r.dataset_sha256 != first.dataset_sha256 {
            if !options.shared_tasks {
                return Err(CompareError::DifferentDatasets {
                    first: first.path.clone(),
                    first_sha: first.dataset_sha256.clone(),
                    other: r.path.clone(),
                    other_sha: r.dataset_sha256.clone(),
                });
            }
            if !datasets.contains(&r.dataset_sha256) {
                datasets.push(r.dataset_sha256.clone());
            }
        }
    }
    let tasks = shared_tasks(runs);
    if tasks.is_empty() {
        return Err(CompareError::NoSharedTasks);
    }
    let described: HashMap<&str, &TaskInfo> = runs
        .iter()
        .rev()
        .flat_map(|r| r.tasks.iter())
        .map(|t| (t.instance_id.as_str(), t))
        .collect();
    let info: Vec<TaskInfo> = tasks
        .iter()
        .map(|id| match described.get(id.as_str()) {
            Some(t) => (*t).clone(),
            None => TaskInfo {
                instance_id: id.clone(),
                vuln_type: UNKNOWN_GROUP.into(),
                cwe_id: UNKNOWN_GROUP.into(),
                language: UNKNOWN_GROUP.into(),
            },
        })
        .collect();
    let prepared: Vec<Prepared> = runs
        .iter()
        .map(|run| {
            let units = units_by_task(run, &tasks);
            let rounds = rounds_of(&units, &tasks, &info);
            let twins = runs.iter().filter(|r| r.label == run.label).count();
            let label = if twins > 1 {
                format!("{} ({})", run.label, run.path.display())
            } else {
                run.label.clone()
            };
            Prepared {
                run,
                label,
                units,
                rounds,
            }
        })
        .collect();
    let summaries = prepared
        .iter()
        .map(|p| {
            let in_run: HashSet<&str> = p
                .run
                .units
                .iter()
                .map(|u| u.unit.instance_id.as_str())
                .collect();
            let weighting = if p.run.version == "v1" {
                Weighting::GroupsEqually
            } else {
                Weighting::Pooled
            };
            RunSummary {
                label: p.label.clone(),
                path: p.run.path.display().to_string(),
                dataset_sha256: p.run.dataset_sha256.clone(),
                version: p.run.version.clone(),
                rounds: p.run.rounds,
                tasks_left_out: (in_run.len() - tasks.len()) as u32,
                verdicts: VerdictCounts::of(p.units.iter().flatten().copied()),
                uncertainty: uncertainty(&p.rounds, weighting, &options.bootstrap),
            }
        })
        .collect();
    let mut pairs = Vec::new();
    for i in 0..prepared.len() {
        for j in i + 1..prepared.len() {
            pairs.push(pair(&prepared[i], &prepared[j], &info, options));
        }
    }
    Ok(Comparison {
        method: METHOD.to_string(),
        shared_tasks_only: datasets.len() > 1,
        datasets,
        tasks_compared: tasks.len() as u32,
        runs: summaries,
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::UnitId;

    fn run(label: &str, path: &str, sha: &str, secure: &[(&str, bool)]) -> RunView {
        RunView {
            label: label.into(),
            path: path.into(),
            dataset_sha256: sha.into(),
            rounds: 1,
            version: "v2".into(),
            tasks: Vec::new(),
            units: secure
                .iter()
                .map(|&(id, s)| UnitView {
                    unit: UnitId::new(id, 1),
                    secure: s,
                    verdict: if s { "secure" } else { "vulnerable" }.into(),
                    reason: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn one_run_or_no_shared_task_is_an_error() {
        let o = CompareOptions::default();
        let a = run("m__b", "x", "s", &[("t1", true)]);
        assert!(matches!(
            compare(std::slice::from_ref(&a), &o),
            Err(CompareError::TooFewRuns(1))
        ));
        let b = run("m__b", "y", "s", &[("t2", true)]);
        assert!(matches!(
            compare(&[a, b], &o),
            Err(CompareError::NoSharedTasks)
        ));
    }

    #[test]
    fn twin_labels_are_told_apart_by_folder_and_unknown_tasks_grouped() {
        let a = run("m__b", "x", "s", &[("t1", true), ("t2", false)]);
        let b = run("m__b", "y", "s", &[("t1", false), ("t2", false)]);
        let c = compare(&[a, b], &CompareOptions::default()).unwrap();
        assert_eq!(c.pairs[0].a, "m__b (x)");
        assert_eq!(c.pairs[0].b, "m__b (y)");
        assert_eq!(c.pairs[0].flipped[0].better, "m__b (x)");
        assert_eq!(c.pairs[0].by_cwe[0].group, UNKNOWN_GROUP);
        assert_eq!(c.pairs[0].p_value, 1.0); // n = 1
        assert!(!c.shared_tasks_only);
    }
}
