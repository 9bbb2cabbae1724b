//! How sure a run's security figure is: a 95 % bootstrap interval over tasks (a task's rounds
//! kept together), and pass@k / pass^k over the rounds.
//!
//! Method (also in README, "Reading intervals and comparisons"):
//! - the item resampled is the task, with all its rounds, so the correlation between a task's
//!   rounds stays inside the interval;
//! - v1's security weighs vulnerability types equally, so tasks are resampled within their type
//!   (each type keeps its number of tasks) and the statistic is the mean of the types' secure
//!   shares; v2's security pools every unit, so all tasks are one stratum;
//! - 2000 replicates from SplitMix64 seeded with 15 by default, percentile interval with
//!   numpy's linear interpolation (see `bootstrap`): the same inputs give the same interval.
//!
//! With one round, the interval still exists (it is over tasks), but pass@k / pass^k for k >= 2
//! and stability do not: `not_available` lists them.

pub mod bootstrap;
pub mod pass_k;
pub mod rng;
pub mod score_intervals;

use crate::report::{Scores, TaskInfo, UNKNOWN_GROUP};
use crate::scoring::{UnitOutcome, UnitStatus, Verdict};
use bootstrap::{bootstrap, BootstrapConfig, Interval};
use pass_k::PassK;
use score_intervals::{score_intervals, ScoreVersion};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One task's rounds, reduced to what the figures need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRounds {
    pub instance_id: String,
    /// The stratum: the vulnerability type for v1, anything for pooled figures.
    pub group: String,
    pub secure: u32,
    pub rounds: u32,
}

/// How the security figure weighs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Secure units over all units (v2's security).
    Pooled,
    /// The mean of the groups' secure shares (v1's security, types weighted equally).
    GroupsEqually,
}

impl Weighting {
    pub fn of_scores(scores: &Scores) -> Self {
        match scores {
            Scores::V1(_) => Weighting::GroupsEqually,
            Scores::V2(_) => Weighting::Pooled,
        }
    }
}

/// The strata (task indices per group, groups in order of first appearance).
fn strata(tasks: &[TaskRounds], weighting: Weighting) -> Vec<Vec<usize>> {
    match weighting {
        Weighting::Pooled => vec![(0..tasks.len()).collect()],
        Weighting::GroupsEqually => {
            let mut order: Vec<&str> = Vec::new();
            let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, t) in tasks.iter().enumerate() {
                members
                    .entry(t.group.as_str())
                    .or_insert_with(|| {
                        order.push(t.group.as_str());
                        Vec::new()
                    })
                    .push(i);
            }
            order
                .iter()
                .map(|g| members.remove(g).unwrap_or_default())
                .collect()
        }
    }
}

/// The security figure of a set of tasks, ready to be evaluated on many samples: each task's
/// group is looked up once, not per replicate (10,000 tasks x 2000 replicates took 2.4 s in a
/// debug build with a map per replicate).
pub struct SecurityStatistic<'a> {
    tasks: &'a [TaskRounds],
    weighting: Weighting,
    /// Group index of each task, groups numbered in order of first appearance.
    group_of: Vec<usize>,
    groups: usize,
}

impl<'a> SecurityStatistic<'a> {
    pub fn new(tasks: &'a [TaskRounds], weighting: Weighting) -> Self {
        let mut number: HashMap<&str, usize> = HashMap::new();
        let group_of: Vec<usize> = tasks
            .iter()
            .map(|t| {
                let next = number.len();
                *number.entry(t.group.as_str()).or_insert(next)
            })
            .collect();
        Self {
            tasks,
            weighting,
            group_of,
            groups: number.len(),
        }
    }

    /// The figure (x100) of the tasks at `sample` (indices, repeats allowed).
    pub fn eval(&self, sample: &[usize]) -> f64 {
        let share = |s: u64, n: u64| if n == 0 { 0.0 } else { s as f64 / n as f64 };
        match self.weighting {
            Weighting::Pooled => {
                let (s, n) = sample.iter().fold((0u64, 0u64), |(s, n), &i| {
                    let t = &self.tasks[i];
                    (s + u64::from(t.secure), n + u64::from(t.rounds))
                });
                share(s, n) * 100.0
            }
            Weighting::GroupsEqually => {
                let mut sums = vec![(0u64, 0u64); self.groups];
                for &i in sample {
                    let t = &self.tasks[i];
                    let e = &mut sums[self.group_of[i]];
                    e.0 += u64::from(t.secure);
                    e.1 += u64::from(t.rounds);
                }
                // Groups absent from the sample are not averaged (a stratified sample has all).
                let present = sums.iter().filter(|(_, n)| *n > 0).count();
                if present == 0 {
                    return 0.0;
                }
                let weight = 1.0 / present as f64;
                sums.iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|&(s, n)| share(s, n) * weight)
                    .sum::<f64>()
                    * 100.0
            }
        }
    }
}

/// The security figure (x100) of the tasks at `sample` (indices, repeats allowed).
pub fn security_of(tasks: &[TaskRounds], sample: &[usize], weighting: Weighting) -> f64 {
    SecurityStatistic::new(tasks, weighting).eval(sample)
}

/// The security figure with its bootstrap interval (x100); `None` without tasks.
pub fn security_interval(
    tasks: &[TaskRounds],
    weighting: Weighting,
    config: &BootstrapConfig,
) -> Option<Interval> {
    let stat = SecurityStatistic::new(tasks, weighting);
    bootstrap(&strata(tasks, weighting), config, |s| stat.eval(s))
}

/// Everything this module says of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uncertainty {
    pub method: String,
    pub bootstrap: BootstrapConfig,
    pub weighting: Weighting,
    pub tasks: u32,
    /// The fewest rounds any task has.
    pub rounds: u32,
    /// Security x100 with its interval (upstream-compatible: a unit is secure when its status
    /// is); `None` without tasks.
    pub security: Option<Interval>,
    /// Our security x100 with its interval: a unit is secure when its verdict is (`broken`
    /// counts as not secure). Set for reports ([`report_uncertainty`]); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_verdict: Option<Interval>,
    /// Quality, stability and overall x100 with their intervals, from the scores' per-task
    /// counts (`score_intervals`); set for reports whose scores carry them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Interval>,
    /// Upstream-compatible overall (v2: stability added as a fraction, as upstream does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall: Option<Interval>,
    /// v2: the corrected overall (stability added as a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall_corrected: Option<Interval>,
    /// Upstream-compatible and our security of each vulnerability type, CWE and language with
    /// their intervals (pooled within the group), groups in order of first appearance among the
    /// tasks like the breakdown's; set for reports ([`report_uncertainty`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_type: Vec<GroupInterval>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_cwe: Vec<GroupInterval>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_language: Vec<GroupInterval>,
    /// k = 1..=rounds.
    pub pass_k: Vec<PassK>,
    /// Figures this run cannot give, and why.
    pub not_available: Vec<String>,
}

/// One group's security figures (x100) with their intervals: the tasks of the group resampled,
/// units pooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInterval {
    pub group: String,
    pub tasks: u32,
    /// Upstream-compatible: a unit is secure when its status is.
    pub security: Option<Interval>,
    /// Ours: a unit is secure when its verdict is.
    pub security_verdict: Option<Interval>,
}

/// Each group's [`GroupInterval`], groups (by `key`) in order of first appearance among
/// `tasks`; `status` and `verdict` are the same tasks' rounds counted by status and by verdict.
fn group_intervals(
    info: &[TaskInfo],
    status: &[TaskRounds],
    verdict: &[TaskRounds],
    config: &BootstrapConfig,
    key: impl Fn(&TaskInfo) -> &str,
) -> Vec<GroupInterval> {
    let group_of: HashMap<&str, &str> = info
        .iter()
        .map(|t| (t.instance_id.as_str(), key(t)))
        .collect();
    // Each group's task indices in one pass over the tasks (a group per task would otherwise
    // cost groups x tasks).
    let mut order: Vec<&str> = Vec::new();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for g in info.iter().map(&key) {
        if !members.contains_key(g) {
            members.insert(g, Vec::new());
            order.push(g);
        }
    }
    for (i, t) in status.iter().enumerate() {
        let g = group_of
            .get(t.instance_id.as_str())
            .copied()
            .unwrap_or(UNKNOWN_GROUP);
        members
            .entry(g)
            .or_insert_with(|| {
                order.push(g);
                Vec::new()
            })
            .push(i);
    }
    let (by_status, by_verdict) = (
        SecurityStatistic::new(status, Weighting::Pooled),
        SecurityStatistic::new(verdict, Weighting::Pooled),
    );
    order
        .into_iter()
        .filter_map(|g| {
            let idx = members.remove(g)?;
            if idx.is_empty() {
                return None;
            }
            let strata = std::slice::from_ref(&idx);
            Some(GroupInterval {
                group: g.to_string(),
                tasks: idx.len() as u32,
                security: bootstrap(strata, config, |s| by_status.eval(s)),
                security_verdict: bootstrap(strata, config, |s| by_verdict.eval(s)),
            })
        })
        .collect()
}

pub const METHOD: &str = "percentile bootstrap over tasks (a task's rounds kept together), \
     stratified by vulnerability type when types are weighted equally; SplitMix64 draws";

pub fn uncertainty(
    tasks: &[TaskRounds],
    weighting: Weighting,
    config: &BootstrapConfig,
) -> Uncertainty {
    let rounds = tasks.iter().map(|t| t.rounds).min().unwrap_or(0);
    let per_task: Vec<(u32, u32)> = tasks.iter().map(|t| (t.secure, t.rounds)).collect();
    let mut not_available = Vec::new();
    if rounds < 2 {
        not_available.push(
            "pass@k and pass^k for k >= 2, and stability: they need at least two rounds per task"
                .to_string(),
        );
    }
    if tasks.is_empty() {
        not_available.push("security interval: no task".to_string());
    }
    Uncertainty {
        method: METHOD.to_string(),
        bootstrap: *config,
        weighting,
        tasks: tasks.len() as u32,
        rounds,
        security: security_interval(tasks, weighting, config),
        security_verdict: None,
        quality: None,
        stability: None,
        overall: None,
        overall_corrected: None,
        by_type: Vec::new(),
        by_cwe: Vec::new(),
        by_language: Vec::new(),
        pass_k: pass_k::pass_k(&per_task),
        not_available,
    }
}

/// The figures with an interval, as reports show them: label, field of `Uncertainty`, and
/// the interval (`None`: not available). Quality, stability and the overalls appear only when
/// the run computed them (rows of an older report's security alone stay as they were); the
/// stability row is kept when missing so that a one-round run shows it as not available.
pub fn figure_rows(u: &Uncertainty) -> Vec<(&'static str, &'static str, Option<&Interval>)> {
    let mut rows = vec![(
        "Security (upstream-compatible)",
        "security",
        u.security.as_ref(),
    )];
    rows.push((
        "Security (ours: broken counts as not secure)",
        "security_verdict",
        u.security_verdict.as_ref(),
    ));
    let has_figures = u.quality.is_some() || u.overall.is_some();
    if has_figures {
        rows.push(("Quality", "quality", u.quality.as_ref()));
        rows.push(("Stability", "stability", u.stability.as_ref()));
        rows.push((
            "Overall (upstream-compatible)",
            "overall",
            u.overall.as_ref(),
        ));
        if u.overall_corrected.is_some() {
            rows.push((
                "Overall (corrected: stability as a percentage)",
                "overall_corrected",
                u.overall_corrected.as_ref(),
            ));
        }
    }
    rows
}

/// The tasks' rounds from a report's tasks and units (`secure` = the unit's status is secure),
/// tasks in order of first appearance among the units, grouped by vulnerability type.
pub fn task_rounds(tasks: &[TaskInfo], units: &[UnitOutcome]) -> Vec<TaskRounds> {
    task_rounds_from(
        tasks,
        units
            .iter()
            .map(|u| (u.unit.instance_id.as_str(), u.status == UnitStatus::Secure)),
    )
}

/// [`task_rounds`] from `(instance id, secure)` per unit.
pub fn task_rounds_from<'a>(
    tasks: &[TaskInfo],
    units: impl IntoIterator<Item = (&'a str, bool)>,
) -> Vec<TaskRounds> {
    let type_of: HashMap<&str, &str> = tasks
        .iter()
        .map(|t| (t.instance_id.as_str(), t.vuln_type.as_str()))
        .collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<TaskRounds> = Vec::new();
    for (id, secure) in units {
        let i = *index.entry(id).or_insert_with(|| {
            out.push(TaskRounds {
                instance_id: id.to_string(),
                group: type_of.get(id).unwrap_or(&UNKNOWN_GROUP).to_string(),
                secure: 0,
                rounds: 0,
            });
            out.len() - 1
        });
        out[i].rounds += 1;
        out[i].secure += u32::from(secure);
    }
    out
}

/// The uncertainty of a report's security figures (upstream-compatible and ours), weighted as
/// its scores are; `Report::with_tasks` stores it in report.json.
pub fn report_uncertainty(
    tasks: &[TaskInfo],
    units: &[UnitOutcome],
    scores: &Scores,
    config: &BootstrapConfig,
) -> Uncertainty {
    let weighting = Weighting::of_scores(scores);
    let by_status = task_rounds(tasks, units);
    let mut u = uncertainty(&by_status, weighting, config);
    let by_verdict = task_rounds_from(
        tasks,
        units
            .iter()
            .map(|u| (u.unit.instance_id.as_str(), u.verdict == Verdict::Secure)),
    );
    u.security_verdict = security_interval(&by_verdict, weighting, config);
    let groups =
        |key: fn(&TaskInfo) -> &str| group_intervals(tasks, &by_status, &by_verdict, config, key);
    u.by_type = groups(|t| &t.vuln_type);
    u.by_cwe = groups(|t| &t.cwe_id);
    u.by_language = groups(|t| &t.language);
    let (counts, version) = match scores {
        Scores::V1(s) => (&s.task_counts, ScoreVersion::V1),
        Scores::V2(s) => (&s.task_counts, ScoreVersion::V2),
    };
    if counts.is_empty() {
        u.not_available.push(
            "quality, stability and overall intervals: the scores carry no per-task counts \
             (a report made before they were kept)"
                .to_string(),
        );
        return u;
    }
    let figures = score_intervals(counts, version, config);
    u.quality = figures.quality;
    u.stability = figures.stability;
    u.overall = figures.overall;
    if version == ScoreVersion::V2 {
        u.overall_corrected = figures.overall_corrected;
    }
    if u.stability.is_none() && u.rounds >= 2 {
        u.not_available
            .push("stability interval: a task has fewer than two rounds".to_string());
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, group: &str, secure: u32, rounds: u32) -> TaskRounds {
        TaskRounds {
            instance_id: id.into(),
            group: group.into(),
            secure,
            rounds,
        }
    }

    /// Fixed inputs for the reference computation below.
    fn fixture() -> Vec<TaskRounds> {
        vec![
            t("a", "XSS", 3, 3),
            t("b", "SQLI", 0, 3),
            t("c", "XSS", 1, 3),
            t("d", "SQLI", 2, 3),
            t("e", "XSS", 0, 3),
            t("f", "PATH", 3, 3),
            t("g", "SQLI", 1, 3),
            t("h", "PATH", 2, 3),
        ]
    }

    /// Reference values computed once by an independent Python 3 script (pure Python: its own
    /// SplitMix64, draws `(x * n) >> 64`, strata in order of first appearance, numpy's linear
    /// percentile written out): `python3 common/tests/reference/bootstrap_reference.py`, run
    /// once with Python 3 on this machine; seed 15, 2000 replicates, level 0.95 (and seed 99,
    /// 500, 0.90).
    #[test]
    fn bootstrap_matches_the_reference_computation() {
        let c = BootstrapConfig::default();
        let pooled = security_interval(&fixture(), Weighting::Pooled, &c).unwrap();
        assert!((pooled.estimate - 50.0).abs() < 1e-12);
        assert!((pooled.low - POOLED_LOW).abs() < 1e-9, "{pooled:?}");
        assert!((pooled.high - POOLED_HIGH).abs() < 1e-9, "{pooled:?}");
        let typed = security_interval(&fixture(), Weighting::GroupsEqually, &c).unwrap();
        assert!((typed.estimate - TYPED_EST).abs() < 1e-9, "{typed:?}");
        assert!((typed.low - TYPED_LOW).abs() < 1e-9, "{typed:?}");
        assert!((typed.high - TYPED_HIGH).abs() < 1e-9, "{typed:?}");
        let seeded = BootstrapConfig {
            seed: 99,
            resamples: 500,
            level: 0.9,
        };
        let other = security_interval(&fixture(), Weighting::Pooled, &seeded).unwrap();
        assert!((other.low - SEED99_LOW).abs() < 1e-9, "{other:?}");
        assert!((other.high - SEED99_HIGH).abs() < 1e-9, "{other:?}");
    }

    const POOLED_LOW: f64 = 25.0;
    const POOLED_HIGH: f64 = 75.0;
    const TYPED_EST: f64 = 53.703703703703695;
    const TYPED_LOW: f64 = 33.33333333333333;
    const TYPED_HIGH: f64 = 74.07407407407408;
    const SEED99_LOW: f64 = 25.0;
    const SEED99_HIGH: f64 = 70.83333333333334;

    #[test]
    fn the_estimate_is_the_report_figure() {
        // v1: (XSS 4/9 + SQLI 3/9 + PATH 5/6) / 3.
        let s = security_of(
            &fixture(),
            &(0..8).collect::<Vec<_>>(),
            Weighting::GroupsEqually,
        );
        assert!((s - (4.0 / 9.0 + 3.0 / 9.0 + 5.0 / 6.0) / 3.0 * 100.0).abs() < 1e-9);
    }

    #[test]
    fn one_round_says_what_is_missing() {
        let u = uncertainty(
            &[t("a", "X", 1, 1), t("b", "X", 0, 1)],
            Weighting::Pooled,
            &BootstrapConfig::default(),
        );
        assert_eq!(u.rounds, 1);
        assert_eq!(u.pass_k.len(), 1);
        assert!(u.not_available[0].contains("pass@k"), "{u:?}");
        assert!(u.security.is_some());
        let three = uncertainty(&fixture(), Weighting::Pooled, &BootstrapConfig::default());
        assert!(three.not_available.is_empty());
        assert_eq!(three.pass_k.len(), 3);
        // secure at least once: a c d f g h; every round: a f.
        assert_eq!(three.pass_k[2].pass_at_k, 75.0);
        assert_eq!(three.pass_k[2].pass_hat_k, 25.0);
    }

    #[test]
    fn task_rounds_group_units_by_task() {
        use crate::scoring::{OutcomeKind, UnitId};
        let info = TaskInfo {
            instance_id: "a".into(),
            vuln_type: "XSS".into(),
            cwe_id: "CWE-79".into(),
            language: "php".into(),
        };
        let units = [
            UnitOutcome::new(UnitId::new("a", 1), OutcomeKind::Secure, ""),
            UnitOutcome::new(UnitId::new("b", 1), OutcomeKind::Vulnerable, ""),
            UnitOutcome::new(UnitId::new("a", 2), OutcomeKind::NotApplied, ""),
        ];
        assert_eq!(
            task_rounds(&[info], &units),
            [t("a", "XSS", 1, 2), t("b", UNKNOWN_GROUP, 0, 1)]
        );
    }
}
