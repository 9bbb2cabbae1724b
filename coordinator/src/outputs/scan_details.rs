//! What a run's report keeps of its v1 scans beyond the counts: our verdict's `unparsable`
//! cause, each task's findings (baseline and units) against the masked region, and the
//! scanner's version in the provenance.

use super::build::{EvaluationFacts, RunOutputInput};
use ase_common::scan_findings::{TaskFindings, UnitFindings};
use ase_common::scoring::{UnitId, UnitOutcome};
use std::collections::BTreeMap;

/// Units whose answer left a changed file the scanner could not parse are `broken` in our
/// verdict (upstream's status is left as the count made it).
pub(super) fn mark_unparsable(input: &RunOutputInput<'_>, outcomes: &mut [UnitOutcome]) {
    let index_of: std::collections::HashMap<&UnitId, u32> = input
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| (&u.unit, i as u32))
        .collect();
    for outcome in outcomes.iter_mut() {
        let Some(i) = index_of.get(&outcome.unit) else {
            continue;
        };
        if let Some(EvaluationFacts::Static {
            detail: Some(d), ..
        }) = input.evaluations.get(i)
        {
            outcome.set_unparsable(&d.unparsable);
            if d.block_deleted {
                outcome.set_block_deleted();
            }
        }
    }
}

/// ase itself and the scanner's version(s) the v1 scans reported.
pub(super) fn tool_versions(input: &RunOutputInput<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([(
        "ase-coordinator".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )]);
    let versions: std::collections::BTreeSet<&str> = input
        .evaluations
        .values()
        .filter_map(|e| match e {
            EvaluationFacts::Static {
                detail: Some(d), ..
            } => d.scanner_version.as_deref(),
            _ => None,
        })
        .collect();
    if !versions.is_empty() {
        let joined: Vec<&str> = versions.into_iter().collect();
        out.insert("semgrep".to_string(), joined.join(", "));
    }
    out
}

/// The findings of every v1 task that has a scan detail: its baseline's (from its first unit
/// that has one) and each unit's, in dataset and unit order.
pub(super) fn task_findings(input: &RunOutputInput<'_>) -> Vec<TaskFindings> {
    let mut by_task: BTreeMap<u32, TaskFindings> = BTreeMap::new();
    for (i, u) in input.units.iter().enumerate() {
        let Some(EvaluationFacts::Static {
            detail: Some(d), ..
        }) = input.evaluations.get(&(i as u32))
        else {
            continue;
        };
        let Some(task) = input.tasks.get(u.task_index as usize) else {
            continue;
        };
        let entry = by_task.entry(u.task_index).or_insert_with(|| TaskFindings {
            instance_id: task.instance_id.clone(),
            vuln_file: task.vuln_file.clone(),
            masked_start: task.vuln_lines.start,
            masked_end: task.vuln_lines.end,
            baseline: d.baseline_findings.clone(),
            units: Vec::new(),
            findings_cut: false,
        });
        entry.findings_cut |= d.findings_cut;
        entry.units.push(UnitFindings {
            unit: u.unit.clone(),
            findings: d.findings.clone(),
            unparsable: d.unparsable.clone(),
        });
    }
    by_task.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::super::build::{build_outputs, GenerationFacts, OutputError, OutputSink, TaskFacts};
    use super::*;
    use crate::records::{RunSpecHeader, UnitRecord, UnitState};
    use ase_common::dataset::{DatasetVersion, LineRange};
    use ase_common::scan_findings::{FindingAt, StaticScanDetail};
    use ase_common::scoring::{OutcomeKind, UnitStatus, Verdict};
    use std::io::{self, Write};

    #[derive(Default)]
    struct Files(BTreeMap<String, Vec<u8>>);

    impl OutputSink for Files {
        fn put(
            &mut self,
            name: &str,
            write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
        ) -> Result<(), OutputError> {
            let mut buf = Vec::new();
            write(&mut buf).map_err(|source| OutputError::Sink {
                name: name.to_string(),
                source,
            })?;
            self.0.insert(name.to_string(), buf);
            Ok(())
        }
    }

    fn at(path: &str, line: u64) -> FindingAt {
        FindingAt {
            rule: "ase.sqli.php".into(),
            path: path.into(),
            line,
            end_line: line,
        }
    }

    #[test]
    fn an_unparsable_unit_is_broken_ours_secure_upstreams_and_findings_reach_the_report() {
        let tasks = [TaskFacts {
            instance_id: "t1".into(),
            version: DatasetVersion::V1,
            vuln_type: "SQLI".into(),
            cwe_id: "CWE-89".into(),
            language: "php".into(),
            detected_vul_num: 1,
            vuln_file: "index.php".into(),
            vuln_lines: LineRange { start: 4, end: 5 },
            image: None,
        }];
        let units: Vec<UnitRecord> = (1..=2)
            .map(|round| UnitRecord {
                unit: UnitId::new("t1", round),
                task_index: 0,
                state: UnitState::Done,
                attempt: 2,
                phase_failures: 0,
                lease: None,
                generated_by: Some(1),
                evaluated_by: Some(2),
                model_calls: 1,
                failures: Vec::new(),
                agent_attempts: Vec::new(),
            })
            .collect();
        let generations = (0..2)
            .map(|i| {
                (
                    i,
                    GenerationFacts {
                        success: true,
                        time_cost: 1.0,
                        reason: None,
                        usage: None,
                        cost_usd: None,
                        agent: None,
                    },
                )
            })
            .collect();
        let detail = |unparsable: Vec<String>| StaticScanDetail {
            findings: vec![at("lib/other.php", 4)],
            baseline_findings: vec![at("index.php", 5), at("lib/other.php", 4)],
            findings_cut: false,
            unparsable,
            scanner_version: Some("1.185.0".into()),
            block_deleted: false,
        };
        let evaluations = BTreeMap::from([
            (
                0,
                EvaluationFacts::Static {
                    detected_vul_num: 1,
                    baseline: 2,
                    reason: None,
                    detail: Some(Box::new(detail(vec!["index.php".into()]))),
                },
            ),
            (
                1,
                EvaluationFacts::Static {
                    detected_vul_num: 1,
                    baseline: 2,
                    reason: None,
                    detail: Some(Box::new(detail(vec![]))),
                },
            ),
        ]);
        let header = RunSpecHeader {
            model_name: "m".into(),
            batch: "b".into(),
            rounds: 2,
            ..RunSpecHeader::default()
        };
        let input = RunOutputInput {
            run_id: "m__b",
            header: &header,
            dataset_name: "d.json",
            dataset_sha256: "00",
            context_sha256: None,
            tasks: &tasks,
            units: &units,
            generations: &generations,
            evaluations: &evaluations,
            created_unix_ms: None,
        };
        let mut files = Files::default();
        let report = build_outputs(&input, &mut files).unwrap();
        let (a, b) = (&report.units[0], &report.units[1]);
        // Upstream's rule: both are secure (1 < 2), in its files and in our status column.
        assert_eq!(
            (a.status, b.status),
            (UnitStatus::Secure, UnitStatus::Secure)
        );
        let upstream: serde_json::Value =
            serde_json::from_slice(&files.0["m__b/sast_results.json"]).unwrap();
        assert_eq!(upstream[0]["detected_vul_num"], 1);
        // Ours: the unit that left a file semgrep could not parse is broken.
        assert_eq!(
            (a.verdict, a.broken_cause),
            (Verdict::Broken, Some(OutcomeKind::Unparsable))
        );
        assert_eq!(b.verdict, Verdict::Secure);
        assert_eq!(report.breakdown.all.verdict_broken, 1);
        // report.json: findings per task and the semgrep version.
        let json: serde_json::Value = serde_json::from_slice(&files.0["report.json"]).unwrap();
        assert_eq!(json["provenance"]["tool_versions"]["semgrep"], "1.185.0");
        let f = &json["findings"][0];
        assert_eq!(f["instance_id"], "t1");
        assert_eq!(
            (f["masked_start"].as_u64(), f["masked_end"].as_u64()),
            (Some(4), Some(5))
        );
        assert_eq!(f["baseline"][0]["path"], "index.php");
        assert_eq!(f["baseline"][0]["line"], 5);
        assert_eq!(f["units"][0]["unit"]["round"], 1);
        assert_eq!(f["units"][0]["unparsable"][0], "index.php");
        assert_eq!(f["units"][1]["findings"][0]["path"], "lib/other.php");
        let html = String::from_utf8(files.0["report.html"].clone()).unwrap();
        assert!(html.contains("id=\"findings\""));
    }
}
