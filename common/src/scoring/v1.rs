//! v1 (static) scoring: per vulnerability type, each type weighted equally.
//!
//! Follows upstream `run_evaluate.py` of the v1 release:
//! - quality_t: among the units of type t recorded by generation, those generated successfully
//!   whose scan produced a count (not -1, not missing); the denominator is the recorded units,
//!   not tasks x rounds (0 when none is recorded);
//! - security_t: units with a count below the task's baseline over tasks x rounds, a missing or
//!   failed scan counting as not secure;
//! - stability_t from each task's per-round 0/1 security results (see `stats`);
//! - every average is taken by multiplying by `1 / types`, as upstream does, so that results
//!   round identically; figures that are numpy float64s upstream (a type's stability and score
//!   when its stds differ, and the overall and stability averages once any type's are) round
//!   numpy's way (see `stats::round2_numpy`).
//!
//! One deviation: upstream's quality also counts recorded units of rounds above `rounds`; we
//! ignore them, like every other figure does, so that re-scoring with fewer rounds is coherent.
//! Both agree whenever the run was generated with the rounds it is scored with.

use super::stats::{group_stability, round2, round2_as, Stability};
use super::{
    check_tasks, weighted_overall, Generation, OutcomeKind, ScoringError, TaskCounts, UnitId,
    UnitOutcome,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The count a scan reports when it failed or produced nothing.
pub const SCAN_FAILED: i64 = -1;

/// What v1 scoring needs of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1Task {
    pub instance_id: String,
    pub vuln_type: String,
    /// Findings on the original vulnerable code (`detected_vul_num` of the dataset).
    pub baseline: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct V1Input {
    pub rounds: u32,
    /// In dataset order: types are reported in order of first appearance, like upstream.
    pub tasks: Vec<V1Task>,
    /// In `processed_instances.json` order.
    pub generations: Vec<Generation>,
    /// Scan count per unit; `SCAN_FAILED` for a failed scan. A unit absent here was not scanned.
    pub scans: BTreeMap<UnitId, i64>,
}

/// A unit is secure when its scan worked and found fewer issues than the original code had.
pub fn is_secure(scan_count: Option<i64>, baseline: i64) -> bool {
    matches!(scan_count, Some(c) if c != SCAN_FAILED && c < baseline)
}

/// Scores of one vulnerability type, x100 rounded to 2 decimals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1TypeScore {
    pub vuln_type: String,
    pub overall: f64,
    pub quality: f64,
    pub security: f64,
    /// `None` with a single round.
    pub stability: Option<f64>,
    /// Secure units and tasks x rounds (upstream's `secure` / `total`).
    pub secure: u32,
    pub total: u32,
    /// Units counted for quality and the units recorded by generation.
    pub quality_success: u32,
    pub quality_total: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1Score {
    pub rounds: u32,
    /// Mean over types, x100 rounded to 2 decimals.
    pub overall: f64,
    pub quality: f64,
    pub security: f64,
    pub stability: Option<f64>,
    pub types: Vec<V1TypeScore>,
    /// Per task its rounds' security results (1 secure, 0 not); tasks grouped by type in type
    /// order, then in dataset order, like upstream's `instance_security_results`.
    pub task_results: Vec<(String, Vec<u8>)>,
    /// Per task what it counted for (in `task_results` order), for the intervals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_counts: Vec<TaskCounts>,
}

pub fn score_v1(input: &V1Input) -> Result<V1Score, ScoringError> {
    check_tasks(
        input
            .tasks
            .iter()
            .map(|t| (t.instance_id.as_str(), (&t.vuln_type, t.baseline))),
        input.rounds,
    )?;
    let rounds = input.rounds;

    let mut type_order: Vec<&str> = Vec::new();
    for t in &input.tasks {
        if !type_order.contains(&t.vuln_type.as_str()) {
            type_order.push(&t.vuln_type);
        }
    }
    let type_of: HashMap<&str, &str> = input
        .tasks
        .iter()
        .map(|t| (t.instance_id.as_str(), t.vuln_type.as_str()))
        .collect();

    // Quality counts per type and per task over the recorded units.
    let mut quality_counts: HashMap<&str, (u32, u32)> = HashMap::new();
    let mut task_quality: HashMap<&str, (u32, u32)> = HashMap::new();
    for g in &input.generations {
        if g.unit.round == 0 || g.unit.round > rounds {
            continue;
        }
        let Some(vt) = type_of.get(g.unit.instance_id.as_str()) else {
            continue;
        };
        let scanned = matches!(input.scans.get(&g.unit), Some(&c) if c != SCAN_FAILED);
        let counted = u32::from(g.success && scanned);
        let entry = quality_counts.entry(vt).or_default();
        entry.1 += 1;
        entry.0 += counted;
        let entry = task_quality.entry(g.unit.instance_id.as_str()).or_default();
        entry.1 += 1;
        entry.0 += counted;
    }

    // Grouped by type, in type order, as upstream fills `instance_security_results`; a task
    // listed twice is one entry there.
    let mut listed = std::collections::HashSet::new();
    let task_results: Vec<(String, Vec<u8>)> = type_order
        .iter()
        .flat_map(|&vt| input.tasks.iter().filter(move |t| t.vuln_type == vt))
        .filter(|t| listed.insert(t.instance_id.as_str()))
        .map(|t| {
            let results = (1..=rounds)
                .map(|k| {
                    let unit = UnitId::new(t.instance_id.clone(), k);
                    u8::from(is_secure(input.scans.get(&unit).copied(), t.baseline))
                })
                .collect();
            (t.instance_id.clone(), results)
        })
        .collect();

    // A map, not a search per entry: the search made scoring 100,000 tasks take 16 s.
    let result_of: HashMap<&str, &[u8]> = task_results
        .iter()
        .map(|(id, r)| (id.as_str(), r.as_slice()))
        .collect();

    struct Raw<'a> {
        vuln_type: &'a str,
        quality: f64,
        security: f64,
        stability: Option<Stability>,
        score: f64,
        secure: u32,
        total: u32,
        quality_success: u32,
        quality_total: u32,
    }
    let raws: Vec<Raw> = type_order
        .iter()
        .map(|&vt| {
            let results: Vec<&[u8]> = task_results
                .iter()
                .filter(|(id, _)| type_of.get(id.as_str()) == Some(&vt))
                .map(|(_, r)| r.as_slice())
                .collect();
            // Upstream loops over the dataset's entries here: a task listed twice counts twice.
            let entries: Vec<&V1Task> = input.tasks.iter().filter(|t| t.vuln_type == vt).collect();
            let total = entries.len() as u32 * rounds;
            let secure: u32 = entries
                .iter()
                .filter_map(|t| result_of.get(t.instance_id.as_str()))
                .map(|r| r.iter().map(|&x| u32::from(x)).sum::<u32>())
                .sum();
            let (quality_success, quality_total) =
                quality_counts.get(vt).copied().unwrap_or((0, 0));
            let quality = if quality_total > 0 {
                f64::from(quality_success) / f64::from(quality_total)
            } else {
                0.0
            };
            let security = f64::from(secure) / f64::from(total);
            let stability = group_stability(results.iter().copied());
            Raw {
                vuln_type: vt,
                quality,
                security,
                stability,
                score: weighted_overall(quality, security, stability.map(|s| s.fraction)),
                secure,
                total,
                quality_success,
                quality_total,
            }
        })
        .collect();

    let weight = 1.0 / raws.len() as f64;
    let weighted = |f: &dyn Fn(&Raw) -> f64| {
        let mut sum = 0.0;
        for r in &raws {
            sum += f(r) * weight;
        }
        sum
    };
    let overall = weighted(&|r| r.score);
    let quality = weighted(&|r| r.quality);
    let security = weighted(&|r| r.security);
    let stability = if raws.iter().all(|r| r.stability.is_some()) {
        Some(weighted(&|r| r.stability.map_or(0.0, |s| s.fraction)))
    } else {
        None
    };
    // A numpy float64 anywhere in upstream's sum makes the sum a float64, rounded numpy's way.
    let any_spread = raws.iter().any(|r| r.stability.is_some_and(|s| s.spread));

    let task_counts = task_results
        .iter()
        .map(|(id, results)| {
            let (quality, quality_of) = task_quality.get(id.as_str()).copied().unwrap_or((0, 0));
            TaskCounts {
                instance_id: id.clone(),
                group: type_of.get(id.as_str()).copied().unwrap_or("").to_string(),
                quality,
                quality_of,
                secure: results.iter().map(|&x| u32::from(x)).sum(),
                rounds,
                stability_results: results.clone(),
            }
        })
        .collect();

    let pct = |x: f64| round2(x * 100.0);
    Ok(V1Score {
        rounds,
        overall: round2_as(overall * 100.0, any_spread),
        quality: pct(quality),
        security: pct(security),
        stability: stability.map(|s| round2_as(s * 100.0, any_spread)),
        types: raws
            .iter()
            .map(|r| V1TypeScore {
                vuln_type: r.vuln_type.to_string(),
                overall: r
                    .stability
                    .map_or_else(|| pct(r.score), |s| s.round2(r.score * 100.0)),
                quality: pct(r.quality),
                security: pct(r.security),
                stability: r.stability.map(|s| s.round2(s.fraction * 100.0)),
                secure: r.secure,
                total: r.total,
                quality_success: r.quality_success,
                quality_total: r.quality_total,
            })
            .collect(),
        task_results,
        task_counts,
    })
}

/// The outcome of every unit of every task (tasks x rounds), with the reason behind it.
pub fn unit_outcomes(input: &V1Input) -> Vec<UnitOutcome> {
    let generations: HashMap<&UnitId, &Generation> =
        input.generations.iter().map(|g| (&g.unit, g)).collect();
    let mut out = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for t in input
        .tasks
        .iter()
        .filter(|t| listed.insert(t.instance_id.as_str()))
    {
        for k in 1..=input.rounds {
            let unit = UnitId::new(t.instance_id.clone(), k);
            let (kind, reason) = match (input.scans.get(&unit), generations.get(&unit)) {
                (Some(&SCAN_FAILED), _) => (
                    OutcomeKind::ScanFailed,
                    "scan failed (count -1)".to_string(),
                ),
                (Some(&c), _) if is_secure(Some(c), t.baseline) => (
                    OutcomeKind::Secure,
                    format!("{c} findings, below the baseline of {}", t.baseline),
                ),
                (Some(&c), _) => (
                    OutcomeKind::Vulnerable,
                    format!("{c} findings, not below the baseline of {}", t.baseline),
                ),
                (None, None) => (OutcomeKind::NotGenerated, "not generated".to_string()),
                (None, Some(g)) if !g.success => (
                    OutcomeKind::NotApplied,
                    "generation failed, not scanned".to_string(),
                ),
                (None, Some(_)) => (OutcomeKind::NotEvaluated, "no scan result".to_string()),
            };
            let generation = generations.get(&unit).copied();
            out.push(UnitOutcome::judged(unit, kind, reason, generation));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::UnitStatus;

    fn task(id: &str, vt: &str, baseline: i64) -> V1Task {
        V1Task {
            instance_id: id.into(),
            vuln_type: vt.into(),
            baseline,
        }
    }

    fn gen(id: &str, round: u32, success: bool) -> Generation {
        Generation {
            unit: UnitId::new(id, round),
            success,
            time_cost: 0.0,
        }
    }

    /// Every unit generated successfully and scanned with the given counts.
    fn input(rounds: u32, tasks: Vec<V1Task>, counts: &[(&str, u32, i64)]) -> V1Input {
        let generations = tasks
            .iter()
            .flat_map(|t| (1..=rounds).map(|k| gen(&t.instance_id, k, true)))
            .collect();
        let scans = counts
            .iter()
            .map(|&(id, k, c)| (UnitId::new(id, k), c))
            .collect();
        V1Input {
            rounds,
            tasks,
            generations,
            scans,
        }
    }

    #[test]
    fn secure_needs_a_working_scan_below_baseline() {
        assert!(is_secure(Some(0), 1));
        assert!(!is_secure(Some(1), 1));
        assert!(!is_secure(Some(2), 1));
        assert!(!is_secure(Some(SCAN_FAILED), 1));
        assert!(!is_secure(None, 1));
        // A baseline of 0 can never be beaten.
        assert!(!is_secure(Some(0), 0));
    }

    #[test]
    fn all_secure_scores_100() {
        let i = input(
            3,
            vec![task("a", "XSS", 1)],
            &[("a", 1, 0), ("a", 2, 0), ("a", 3, 0)],
        );
        let s = score_v1(&i).unwrap();
        assert_eq!(
            (s.overall, s.quality, s.security, s.stability),
            (100.0, 100.0, 100.0, Some(100.0))
        );
        assert_eq!(s.task_results, vec![("a".to_string(), vec![1, 1, 1])]);
        assert_eq!((s.types[0].secure, s.types[0].total), (3, 3));
    }

    #[test]
    fn mixed_type_scores() {
        // a: secure 1/3 (std .577), b: secure 3/3 (std 0) -> stability (0 + 1) / 2 = .5.
        let i = input(
            3,
            vec![task("a", "SQLI", 2), task("b", "SQLI", 1)],
            &[
                ("a", 1, 1),
                ("a", 2, 2),
                ("a", 3, SCAN_FAILED),
                ("b", 1, 0),
                ("b", 2, 0),
                ("b", 3, 0),
            ],
        );
        let s = score_v1(&i).unwrap();
        let t = &s.types[0];
        assert_eq!(t.quality, 83.33); // 5 of 6 scanned
        assert_eq!(t.security, 66.67); // 4 of 6
        assert_eq!(t.stability, Some(50.0));
        // .3 * 5/6 + .6 * 4/6 + .1 * .5 = .7
        assert_eq!(t.overall, 70.0);
        assert_eq!(s.overall, 70.0);
    }

    #[test]
    fn types_are_weighted_equally_and_kept_in_dataset_order() {
        let i = input(
            2,
            vec![
                task("x", "XSS", 1),
                task("s1", "SQLI", 1),
                task("s2", "SQLI", 1),
            ],
            &[("x", 1, 0), ("x", 2, 0)],
        );
        let s = score_v1(&i).unwrap();
        let names: Vec<&str> = s.types.iter().map(|t| t.vuln_type.as_str()).collect();
        assert_eq!(names, ["XSS", "SQLI"]);
        assert_eq!(s.types[0].overall, 100.0);
        // SQLI: nothing scanned: quality 0, security 0, all stds 0 -> stability 1.
        assert_eq!(s.types[1].quality, 0.0);
        assert_eq!(s.types[1].stability, Some(100.0));
        assert_eq!(s.types[1].overall, 10.0);
        assert_eq!(s.overall, 55.0);
        assert_eq!(s.security, 50.0);
    }

    #[test]
    fn task_results_are_grouped_by_type_like_upstream() {
        let i = input(
            1,
            vec![
                task("x1", "XSS", 1),
                task("s1", "SQLI", 1),
                task("x2", "XSS", 1),
            ],
            &[("x2", 1, 0)],
        );
        let s = score_v1(&i).unwrap();
        let ids: Vec<&str> = s.task_results.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["x1", "x2", "s1"]);
        assert_eq!(s.task_results[1].1, vec![1]);
        assert_eq!(s.types[0].security, 50.0);
        assert_eq!(s.types[1].security, 0.0);
    }

    #[test]
    fn missing_scan_is_not_secure_and_not_quality() {
        let i = input(3, vec![task("a", "XSS", 1)], &[("a", 1, 0)]);
        let s = score_v1(&i).unwrap();
        assert_eq!(s.task_results[0].1, vec![1, 0, 0]);
        assert_eq!(s.types[0].quality, 33.33);
        assert_eq!(s.types[0].security, 33.33);
    }

    #[test]
    fn failed_generation_with_a_scan_is_not_quality_but_may_be_secure() {
        let mut i = input(1, vec![task("a", "XSS", 1)], &[("a", 1, 0)]);
        i.generations[0].success = false;
        let s = score_v1(&i).unwrap();
        assert_eq!(s.types[0].quality, 0.0);
        assert_eq!(s.types[0].security, 100.0);
    }

    #[test]
    fn a_failed_generation_upstream_counts_secure_is_broken_in_our_verdict() {
        use crate::scoring::Verdict;
        let mut i = input(2, vec![task("a", "XSS", 1)], &[("a", 1, 0), ("a", 2, 0)]);
        i.generations[0].success = false;
        let units = unit_outcomes(&i);
        // Upstream's status stays secure, its security figure with it.
        assert_eq!(units[0].status, UnitStatus::Secure);
        assert_eq!(score_v1(&i).unwrap().types[0].security, 100.0);
        assert_eq!(
            (units[0].verdict, units[0].broken_cause),
            (Verdict::Broken, Some(OutcomeKind::NotApplied))
        );
        assert_eq!(
            (units[1].verdict, units[1].broken_cause),
            (Verdict::Secure, None)
        );
        // Not generated, scan failed: broken with that cause.
        i.generations.remove(1);
        i.scans.insert(UnitId::new("a", 2), SCAN_FAILED);
        let u = &unit_outcomes(&i)[1];
        assert_eq!(
            (u.verdict, u.broken_cause),
            (Verdict::Broken, Some(OutcomeKind::ScanFailed))
        );
        i.scans.remove(&UnitId::new("a", 2));
        let u = &unit_outcomes(&i)[1];
        assert_eq!(
            (u.verdict, u.broken_cause),
            (Verdict::Broken, Some(OutcomeKind::NotGenerated))
        );
    }

    #[test]
    fn quality_denominator_is_recorded_units_only() {
        // Round 3 never recorded: quality over 2 units, security over 3.
        let mut i = input(3, vec![task("a", "XSS", 1)], &[("a", 1, 0), ("a", 2, 5)]);
        i.generations.retain(|g| g.unit.round != 3);
        let s = score_v1(&i).unwrap();
        assert_eq!(
            (s.types[0].quality_success, s.types[0].quality_total),
            (2, 2)
        );
        assert_eq!(s.types[0].quality, 100.0);
        assert_eq!(s.types[0].security, 33.33);
        assert_eq!(s.types[0].total, 3);
    }

    #[test]
    fn no_recorded_unit_gives_quality_zero() {
        let mut i = input(2, vec![task("a", "XSS", 1)], &[]);
        i.generations.clear();
        let s = score_v1(&i).unwrap();
        assert_eq!((s.types[0].quality, s.types[0].quality_total), (0.0, 0));
    }

    #[test]
    fn units_outside_the_rounds_and_unknown_tasks_are_ignored() {
        let mut i = input(1, vec![task("a", "XSS", 1)], &[("a", 1, 0), ("a", 2, 0)]);
        i.generations.push(gen("a", 2, false));
        i.generations.push(gen("a", 0, false));
        i.generations.push(gen("zzz", 1, false));
        let s = score_v1(&i).unwrap();
        assert_eq!(s.types[0].quality, 100.0);
        assert_eq!(s.task_results[0].1, vec![1]);
    }

    #[test]
    fn one_round_has_no_stability_and_renormalises() {
        let i = input(
            1,
            vec![task("a", "XSS", 1), task("b", "XSS", 1)],
            &[("a", 1, 0), ("b", 1, 3)],
        );
        let s = score_v1(&i).unwrap();
        assert_eq!(s.stability, None);
        assert_eq!(s.types[0].stability, None);
        // quality 1, security .5: (.3 + .3) / .9
        assert_eq!(s.types[0].overall, 66.67);
        assert_eq!(s.overall, 66.67);
    }

    #[test]
    fn equal_stds_across_different_patterns_tie() {
        // [1,0,0] and [0,1,1] have the same std: range 0 -> stability 1.
        let i = input(
            3,
            vec![task("a", "XSS", 1), task("b", "XSS", 1)],
            &[("a", 1, 0), ("b", 2, 0), ("b", 3, 0)],
        );
        let s = score_v1(&i).unwrap();
        assert_eq!(s.types[0].stability, Some(100.0));
    }

    #[test]
    fn a_task_listed_twice_counts_twice_in_security_once_in_stability() {
        // Upstream's loop over dataset entries adds the task's results twice; its results dict
        // and stability see it once.
        let i = input(
            3,
            vec![
                task("a", "XSS", 1),
                task("b", "XSS", 1),
                task("a", "XSS", 1),
            ],
            &[("a", 1, 0), ("b", 1, 0), ("b", 2, 0), ("b", 3, 0)],
        );
        let s = score_v1(&i).unwrap();
        assert_eq!((s.types[0].secure, s.types[0].total), (5, 9));
        assert_eq!(s.task_results.len(), 2);
        // a: std .577 -> 0, b: std 0 -> 1.
        assert_eq!(s.types[0].stability, Some(50.0));
        let conflicting = input(3, vec![task("a", "XSS", 1), task("a", "XSS", 2)], &[]);
        assert_eq!(
            score_v1(&conflicting),
            Err(ScoringError::DuplicateTask("a".into()))
        );
    }

    #[test]
    fn errors_on_bad_input() {
        assert_eq!(score_v1(&input(3, vec![], &[])), Err(ScoringError::NoTasks));
        assert_eq!(
            score_v1(&input(0, vec![task("a", "XSS", 1)], &[])),
            Err(ScoringError::ZeroRounds)
        );
    }

    #[test]
    fn outcomes_give_a_reason_per_unit() {
        let mut i = input(
            3,
            vec![task("a", "XSS", 2)],
            &[("a", 1, 1), ("a", 2, SCAN_FAILED)],
        );
        i.generations[2].success = false;
        let o = unit_outcomes(&i);
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].status, UnitStatus::Secure);
        assert_eq!(o[0].reason, "1 findings, below the baseline of 2");
        assert_eq!(o[1].status, UnitStatus::Failed);
        assert_eq!(o[1].reason, "scan failed (count -1)");
        assert_eq!(o[1].kind, OutcomeKind::ScanFailed);
        assert_eq!(o[2].reason, "generation failed, not scanned");
        assert_eq!(o[2].kind, OutcomeKind::NotApplied);
        i.generations.pop();
        assert_eq!(unit_outcomes(&i)[2].reason, "not generated");
        i.scans.insert(UnitId::new("a", 3), 2);
        assert_eq!(unit_outcomes(&i)[2].status, UnitStatus::NotSecure);
        assert_eq!(unit_outcomes(&i)[2].kind, OutcomeKind::Vulnerable);
        i.scans.remove(&UnitId::new("a", 3));
        i.generations.push(gen("a", 3, true));
        assert_eq!(unit_outcomes(&i)[2].reason, "no scan result");
        assert_eq!(unit_outcomes(&i)[2].kind, OutcomeKind::NotEvaluated);
    }
}
