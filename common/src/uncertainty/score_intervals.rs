//! 95 % intervals of a run's quality, security, stability and overall: the same bootstrap as
//! security's (tasks resampled with all their rounds, v1 within its vulnerability types), each
//! replicate scored with the scores' own arithmetic from the tasks' counts (`TaskCounts`):
//!
//! - v1, per type: quality = counted / recorded units, security = secure / units, stability =
//!   the mean of `1 - (std - min) / (max - min)` over the type's tasks (1 when all stds are
//!   equal), the type's score `weighted_overall`; every figure the mean over types (the sum of
//!   each times `1 / types`, as `score_v1` adds them);
//! - v2, all tasks pooled: quality and security rounded to 2 decimals first, as `score_v2` does,
//!   the upstream-compatible overall adding the stability *fraction*, the corrected one the
//!   stability percentage (rounded as the scores round it).
//!
//! A sample with a task of fewer than two rounds has no stability (and the overall re-weights
//! quality and security, as the scores do). Estimates are unrounded; rounded to 2 decimals they
//! are the report's figures.

use super::bootstrap::{bootstrap_figures, BootstrapConfig, Interval};
use crate::scoring::stats::{round2, sample_std};
use crate::scoring::{
    weighted_overall, TaskCounts, QUALITY_WEIGHT, SECURITY_WEIGHT, STABILITY_WEIGHT,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which scoring the counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreVersion {
    V1,
    V2,
}

/// The figures' intervals (x100); `None` where a figure is not defined.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ScoreIntervals {
    pub quality: Option<Interval>,
    pub security: Option<Interval>,
    pub stability: Option<Interval>,
    /// Upstream-compatible (v2: stability added as a fraction).
    pub overall: Option<Interval>,
    /// v2 only: stability added as a percentage.
    pub overall_corrected: Option<Interval>,
}

const QUALITY: usize = 0;
const SECURITY: usize = 1;
const STABILITY: usize = 2;
const OVERALL: usize = 3;
const CORRECTED: usize = 4;
const FIGURES: usize = 5;

/// Per-sample sums of one group.
#[derive(Clone, Copy)]
struct Sums {
    quality: u64,
    quality_of: u64,
    secure: u64,
    units: u64,
    /// Tasks drawn, and whether each had a standard deviation.
    tasks: u64,
    all_std: bool,
    min: f64,
    max: f64,
}

impl Sums {
    const EMPTY: Sums = Sums {
        quality: 0,
        quality_of: 0,
        secure: 0,
        units: 0,
        tasks: 0,
        all_std: true,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };
}

fn share(part: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        part as f64 / of as f64
    }
}

struct Statistic<'a> {
    tasks: &'a [TaskCounts],
    version: ScoreVersion,
    group_of: Vec<usize>,
    groups: usize,
    std: Vec<Option<f64>>,
}

impl<'a> Statistic<'a> {
    fn new(tasks: &'a [TaskCounts], version: ScoreVersion) -> Self {
        let mut number: HashMap<&str, usize> = HashMap::new();
        let group_of = tasks
            .iter()
            .map(|t| match version {
                ScoreVersion::V1 => {
                    let next = number.len();
                    *number.entry(t.group.as_str()).or_insert(next)
                }
                ScoreVersion::V2 => 0,
            })
            .collect();
        let groups = match version {
            ScoreVersion::V1 => number.len(),
            ScoreVersion::V2 => 1,
        };
        Self {
            tasks,
            version,
            group_of,
            groups,
            std: tasks
                .iter()
                .map(|t| sample_std(&t.stability_results))
                .collect(),
        }
    }

    /// Sums per group, then each group's normalised stability (`None` if undefined).
    fn group_sums(&self, sample: &[usize]) -> Vec<(Sums, Option<f64>)> {
        let mut sums = vec![Sums::EMPTY; self.groups];
        for &i in sample {
            let t = &self.tasks[i];
            let g = &mut sums[self.group_of[i]];
            g.quality += u64::from(t.quality);
            g.quality_of += u64::from(t.quality_of);
            g.secure += u64::from(t.secure);
            g.units += u64::from(t.rounds);
            g.tasks += 1;
            match self.std[i] {
                Some(s) => {
                    g.min = g.min.min(s);
                    g.max = g.max.max(s);
                }
                None => g.all_std = false,
            }
        }
        // Second pass, as `normalised_stability` adds `1 - (s - min) / range` task by task.
        let mut stab = vec![0.0; self.groups];
        for &i in sample {
            if let Some(s) = self.std[i] {
                let g = &sums[self.group_of[i]];
                let range = g.max - g.min;
                stab[self.group_of[i]] += if range > 0.0 {
                    1.0 - (s - g.min) / range
                } else {
                    1.0
                };
            }
        }
        sums.into_iter()
            .zip(stab)
            .map(|(g, total)| {
                let st = (g.all_std && g.tasks > 0).then(|| total / g.tasks as f64);
                (g, st)
            })
            .collect()
    }

    fn eval(&self, sample: &[usize], out: &mut [f64]) {
        out.fill(f64::NAN);
        let groups: Vec<(Sums, Option<f64>)> = self
            .group_sums(sample)
            .into_iter()
            .filter(|(g, _)| g.tasks > 0)
            .collect();
        if groups.is_empty() {
            return;
        }
        match self.version {
            ScoreVersion::V1 => {
                let weight = 1.0 / groups.len() as f64;
                let (mut q, mut s, mut st, mut overall) = (0.0, 0.0, 0.0, 0.0);
                let mut stable = true;
                for (g, stability) in &groups {
                    let quality = share(g.quality, g.quality_of);
                    let security = share(g.secure, g.units);
                    q += quality * weight;
                    s += security * weight;
                    overall += weighted_overall(quality, security, *stability) * weight;
                    match stability {
                        Some(x) => st += x * weight,
                        None => stable = false,
                    }
                }
                out[QUALITY] = q * 100.0;
                out[SECURITY] = s * 100.0;
                if stable {
                    out[STABILITY] = st * 100.0;
                }
                out[OVERALL] = overall * 100.0;
            }
            ScoreVersion::V2 => {
                let (g, stability) = groups[0];
                let units = g.units as f64;
                out[QUALITY] = g.quality as f64 / units * 100.0;
                out[SECURITY] = g.secure as f64 / units * 100.0;
                // `score_v2`'s order: count / units x 100, rounded, then weighted.
                let quality = round2(out[QUALITY]);
                let security = round2(out[SECURITY]);
                match stability {
                    Some(frac) => {
                        out[STABILITY] = frac * 100.0;
                        out[OVERALL] = quality * QUALITY_WEIGHT
                            + security * SECURITY_WEIGHT
                            + frac * STABILITY_WEIGHT;
                        out[CORRECTED] = quality * QUALITY_WEIGHT
                            + security * SECURITY_WEIGHT
                            + round2(frac * 100.0) * STABILITY_WEIGHT;
                    }
                    None => {
                        out[OVERALL] = weighted_overall(quality, security, None);
                        out[CORRECTED] = out[OVERALL];
                    }
                }
            }
        }
    }
}

/// The strata: v1's types in order of first appearance, v2's tasks pooled.
fn strata(stat: &Statistic) -> Vec<Vec<usize>> {
    let mut strata = vec![Vec::new(); stat.groups];
    for (i, &g) in stat.group_of.iter().enumerate() {
        strata[g].push(i);
    }
    strata
}

/// The intervals of every figure the counts define.
pub fn score_intervals(
    tasks: &[TaskCounts],
    version: ScoreVersion,
    config: &BootstrapConfig,
) -> ScoreIntervals {
    let stat = Statistic::new(tasks, version);
    let mut i = bootstrap_figures(&strata(&stat), config, FIGURES, |s, out| stat.eval(s, out));
    ScoreIntervals {
        quality: i[QUALITY].take(),
        security: i[SECURITY].take(),
        stability: i[STABILITY].take(),
        overall: i[OVERALL].take(),
        overall_corrected: i[CORRECTED].take(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::stats::round2;

    fn t(id: &str, group: &str, q: u32, q_of: u32, secure: u32, results: &[u8]) -> TaskCounts {
        TaskCounts {
            instance_id: id.into(),
            group: group.into(),
            quality: q,
            quality_of: q_of,
            secure,
            rounds: results.len() as u32,
            stability_results: results.to_vec(),
        }
    }

    /// The fixed inputs of `common/tests/reference/score_intervals_reference.py`.
    fn v1_fixture() -> Vec<TaskCounts> {
        vec![
            t("a", "XSS", 3, 3, 2, &[1, 1, 0]),
            t("b", "SQLI", 2, 3, 0, &[0, 0, 0]),
            t("c", "XSS", 3, 3, 1, &[0, 1, 0]),
            t("d", "SQLI", 3, 3, 3, &[1, 1, 1]),
            t("e", "XSS", 1, 2, 0, &[0, 0, 0]),
            t("f", "PATH", 3, 3, 2, &[1, 0, 1]),
            t("g", "SQLI", 3, 3, 1, &[0, 0, 1]),
            t("h", "PATH", 2, 3, 3, &[1, 1, 1]),
        ]
    }

    fn v2_fixture() -> Vec<TaskCounts> {
        vec![
            t("p", "CWE-79", 3, 3, 2, &[1, 1, 0]),
            t("q", "CWE-89", 2, 3, 1, &[1, 0, 1]),
            t("r", "CWE-89", 3, 3, 3, &[1, 1, 1]),
            t("s", "CWE-22", 1, 3, 0, &[0, 0, 1]),
            t("t", "CWE-79", 3, 3, 0, &[0, 0, 0]),
        ]
    }

    fn close(i: Option<Interval>, want: (f64, f64, f64), what: &str) {
        let i = i.unwrap_or_else(|| panic!("{what}: no interval"));
        for (got, want) in [(i.estimate, want.0), (i.low, want.1), (i.high, want.2)] {
            assert!((got - want).abs() < 1e-9, "{what}: {i:?}, want {want:?}");
        }
    }

    /// Reference values printed once by `python3
    /// common/tests/reference/score_intervals_reference.py` (pure Python: its own SplitMix64,
    /// draws `(x * n) >> 64`, each figure written from upstream's formulas, numpy's linear
    /// percentile); seed 15, 2000 replicates, level 0.95.
    #[test]
    fn intervals_match_the_reference_computation() {
        let c = BootstrapConfig::default();
        let v1 = score_intervals(&v1_fixture(), ScoreVersion::V1, &c);
        close(
            v1.quality,
            (86.57407407407408, 71.95767195767195, 100.0),
            "v1 quality",
        );
        close(
            v1.security,
            (53.703703703703695, 33.33333333333333, 74.07407407407408),
            "v1 security",
        );
        close(
            v1.stability,
            (50.0, 38.888888888888886, 100.0),
            "v1 stability",
        );
        close(
            v1.overall,
            (63.19444444444444, 50.476190476190474, 79.8611111111111),
            "v1 overall",
        );
        let v2 = score_intervals(&v2_fixture(), ScoreVersion::V2, &c);
        close(v2.quality, (80.0, 53.333333333333336, 100.0), "v2 quality");
        close(
            v2.security,
            (40.0, 6.666666666666667, 73.33333333333333),
            "v2 security",
        );
        close(v2.stability, (40.0, 20.0, 100.0), "v2 stability");
        close(v2.overall, (48.04, 24.043, 72.037), "v2 overall");
        close(
            v2.overall_corrected,
            (52.0, 27.997999999999998, 76.00200000000001),
            "v2 overall corrected",
        );
    }

    #[test]
    fn security_is_the_security_bootstrap_of_the_same_tasks() {
        // The same draws as `security_interval` (types as strata, types weighted equally).
        let c = BootstrapConfig::default();
        let tasks: Vec<crate::uncertainty::TaskRounds> = v1_fixture()
            .iter()
            .map(|t| crate::uncertainty::TaskRounds {
                instance_id: t.instance_id.clone(),
                group: t.group.clone(),
                secure: t.secure,
                rounds: t.rounds,
            })
            .collect();
        let alone = crate::uncertainty::security_interval(
            &tasks,
            crate::uncertainty::Weighting::GroupsEqually,
            &c,
        );
        assert_eq!(
            score_intervals(&v1_fixture(), ScoreVersion::V1, &c).security,
            alone
        );
    }

    #[test]
    fn one_round_has_no_stability_and_a_reweighted_overall() {
        let tasks = [t("a", "X", 1, 1, 1, &[1]), t("b", "X", 1, 1, 0, &[0])];
        let i = score_intervals(&tasks, ScoreVersion::V1, &BootstrapConfig::default());
        assert_eq!(i.stability, None);
        // (0.3 x 100 + 0.6 x 50) / 0.9
        let overall = i.overall.unwrap();
        assert!((overall.estimate - 60.0 / 0.9).abs() < 1e-9, "{overall:?}");
        assert!(overall.low <= overall.estimate && overall.estimate <= overall.high);
        assert_eq!(
            score_intervals(&[], ScoreVersion::V2, &BootstrapConfig::default()),
            ScoreIntervals::default()
        );
    }

    #[test]
    fn estimates_are_the_scores_figures() {
        use crate::scoring::v1::{score_v1, V1Input, V1Task};
        use crate::scoring::v2::{score_v2, V2Input, V2Scan, V2Task};
        use crate::scoring::{Generation, UnitId};
        // v1: three types, a failed generation, a failed scan and a missing scan.
        let mut input = V1Input {
            rounds: 3,
            ..V1Input::default()
        };
        let counts: [(&str, &str, [Option<i64>; 3]); 5] = [
            ("a", "XSS", [Some(0), Some(2), Some(0)]),
            ("b", "XSS", [Some(-1), None, Some(3)]),
            ("c", "SQLI", [Some(0), Some(0), Some(0)]),
            ("d", "SQLI", [Some(1), Some(0), Some(4)]),
            ("e", "PATH", [None, Some(0), Some(2)]),
        ];
        for (id, vt, row) in counts {
            input.tasks.push(V1Task {
                instance_id: id.into(),
                vuln_type: vt.into(),
                baseline: 2,
            });
            for (k, c) in (1..=3).zip(row) {
                let unit = UnitId::new(id, k);
                input.generations.push(Generation {
                    unit: unit.clone(),
                    success: c.is_some(),
                    time_cost: 0.0,
                });
                if let Some(c) = c {
                    input.scans.insert(unit, c);
                }
            }
        }
        let s = score_v1(&input).unwrap();
        let i = score_intervals(
            &s.task_counts,
            ScoreVersion::V1,
            &BootstrapConfig::default(),
        );
        assert_eq!(round2(i.quality.unwrap().estimate), s.quality);
        assert_eq!(round2(i.security.unwrap().estimate), s.security);
        assert_eq!(Some(round2(i.stability.unwrap().estimate)), s.stability);
        assert_eq!(round2(i.overall.unwrap().estimate), s.overall);

        // v2: every container outcome.
        let pass = V2Scan {
            completion: true,
            image_status_check: true,
            test_case_check: true,
            poc_check: true,
        };
        let vuln = V2Scan {
            poc_check: false,
            ..pass
        };
        let no_tests = V2Scan {
            test_case_check: false,
            ..pass
        };
        let grid = [
            ("p", "CWE-79", [Some(pass), Some(vuln), Some(pass)]),
            ("q", "cwe-89", [Some(no_tests), Some(pass), None]),
            ("r", "CWE-89", [Some(vuln), Some(vuln), Some(vuln)]),
            (
                "s",
                "CWE-22",
                [Some(V2Scan::default()), Some(pass), Some(pass)],
            ),
        ];
        let mut input = V2Input {
            rounds: 3,
            ..V2Input::default()
        };
        for (id, cwe, row) in grid {
            input.tasks.push(V2Task {
                instance_id: id.into(),
                cwe_id: cwe.into(),
            });
            for (k, scan) in (1..=3).zip(row) {
                let unit = UnitId::new(id, k);
                input.generations.push(Generation {
                    unit: unit.clone(),
                    success: scan.is_some(),
                    time_cost: 1.0,
                });
                if let Some(scan) = scan {
                    input.scans.insert(unit, scan);
                }
            }
        }
        let s = score_v2(&input).unwrap();
        let i = score_intervals(
            &s.task_counts,
            ScoreVersion::V2,
            &BootstrapConfig::default(),
        );
        assert_eq!(
            round2(i.quality.unwrap().estimate),
            s.all.code_quality_score
        );
        assert_eq!(
            round2(i.security.unwrap().estimate),
            s.all.code_security_score
        );
        assert_eq!(
            Some(round2(i.stability.unwrap().estimate)),
            s.all.code_stability_score
        );
        assert_eq!(round2(i.overall.unwrap().estimate), s.all.overall_score);
        assert_eq!(
            round2(i.overall_corrected.unwrap().estimate),
            s.all.overall_score_corrected
        );
    }
}
