//! What a v1 scan found, kept with the unit's record: the findings of the task's type
//! (rule, path, line) on the unit's code and on the original code, the changed files the
//! scanner could not parse, and the scanner's version. The count alone cannot show *where* a
//! finding is (inside the masked region or elsewhere), nor that a file was dropped by a parse
//! error, which makes semgrep silently report no finding in it.

use serde::{Deserialize, Serialize};

/// Findings kept per scan in a record; past this `findings_cut` is set (the count stays exact).
pub const MAX_FINDINGS_KEPT: usize = 200;
/// Unparsable paths kept per record.
pub const MAX_UNPARSABLE_KEPT: usize = 50;

/// One finding: the rule, the file (relative to the project root) and its lines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FindingAt {
    pub rule: String,
    pub path: String,
    pub line: u64,
    #[serde(default)]
    pub end_line: u64,
}

/// The scan details of one static evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StaticScanDetail {
    /// Findings of the task's type counted on the unit's code, in (path, line) order.
    #[serde(default)]
    pub findings: Vec<FindingAt>,
    /// The same on the original code at `base_commit` (the baseline).
    #[serde(default)]
    pub baseline_findings: Vec<FindingAt>,
    /// More findings were counted than kept above.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub findings_cut: bool,
    /// Files the unit changed that the scanner reported it could not parse (wholly or in
    /// part) while their original version parsed: their findings were dropped, so the unit
    /// was not judged (`broken`, cause `unparsable`, in our verdict).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unparsable: Vec<String>,
    /// The answer put no code where the masked block was (see
    /// [`crate::prompt::masking::fills_nothing`]): `broken`, cause `block_deleted`, in our verdict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block_deleted: bool,
    /// The scanner's own version string (semgrep's `version` in its JSON), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_version: Option<String>,
}

impl StaticScanDetail {
    /// Keeps at most [`MAX_FINDINGS_KEPT`] of each list, sorted, noting a cut.
    pub fn bounded(mut self) -> Self {
        for list in [&mut self.findings, &mut self.baseline_findings] {
            list.sort_by(|a, b| (&a.path, a.line, &a.rule).cmp(&(&b.path, b.line, &b.rule)));
            if list.len() > MAX_FINDINGS_KEPT {
                list.truncate(MAX_FINDINGS_KEPT);
                self.findings_cut = true;
            }
        }
        self.unparsable.sort();
        self.unparsable.dedup();
        self.unparsable.truncate(MAX_UNPARSABLE_KEPT);
        self
    }
}

/// One unit's findings, as the report lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitFindings {
    pub unit: crate::unit::UnitId,
    pub findings: Vec<FindingAt>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unparsable: Vec<String>,
}

/// A v1 task's findings in the report: the baseline's (original code at `base_commit`) and
/// each unit's, with the masked region they are read against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFindings {
    pub instance_id: String,
    /// The masked file, relative to the project root.
    pub vuln_file: String,
    /// The masked lines of `vuln_file` (1-based, inclusive) in the original code; a unit's
    /// answer may have moved later lines, so for units they are a guide, not a bound.
    pub masked_start: usize,
    pub masked_end: usize,
    pub baseline: Vec<FindingAt>,
    pub units: Vec<UnitFindings>,
    /// Some list was cut at [`MAX_FINDINGS_KEPT`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub findings_cut: bool,
}

impl TaskFindings {
    /// Whether `f` lies in the masked region of the masked file.
    pub fn in_masked_region(&self, f: &FindingAt) -> bool {
        let end = f.end_line.max(f.line);
        f.path == self.vuln_file
            && (f.line as usize) <= self.masked_end
            && end as usize >= self.masked_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, line: u64) -> FindingAt {
        FindingAt {
            rule: "ase.sqli.php".into(),
            path: path.into(),
            line,
            end_line: line,
        }
    }

    #[test]
    fn the_masked_region_is_read_on_the_masked_file_only() {
        let t = TaskFindings {
            instance_id: "t".into(),
            vuln_file: "a.php".into(),
            masked_start: 5,
            masked_end: 8,
            baseline: vec![],
            units: vec![],
            findings_cut: false,
        };
        assert!(t.in_masked_region(&at("a.php", 5)));
        assert!(t.in_masked_region(&at("a.php", 8)));
        assert!(!t.in_masked_region(&at("a.php", 9)));
        assert!(!t.in_masked_region(&at("a.php", 4)));
        let spanning = FindingAt {
            end_line: 6,
            ..at("a.php", 3)
        };
        assert!(t.in_masked_region(&spanning));
        assert!(!t.in_masked_region(&at("b.php", 6)));
    }

    #[test]
    fn bounded_sorts_cuts_and_round_trips() {
        let many: Vec<FindingAt> = (0..(MAX_FINDINGS_KEPT as u64 + 5))
            .rev()
            .map(|i| at("a.php", i + 1))
            .collect();
        let d = StaticScanDetail {
            findings: many,
            baseline_findings: vec![at("b.php", 3), at("a.php", 9)],
            unparsable: vec!["z.php".into(), "a.php".into(), "z.php".into()],
            ..Default::default()
        }
        .bounded();
        assert_eq!(d.findings.len(), MAX_FINDINGS_KEPT);
        assert_eq!(d.findings[0].line, 1);
        assert!(d.findings_cut);
        assert_eq!(d.baseline_findings[0].path, "a.php");
        assert_eq!(d.unparsable, vec!["a.php".to_string(), "z.php".to_string()]);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<StaticScanDetail>(&json).unwrap(), d);
        // A record written before the detail existed reads as empty.
        assert_eq!(
            serde_json::from_str::<StaticScanDetail>("{}").unwrap(),
            StaticScanDetail::default()
        );
    }
}
