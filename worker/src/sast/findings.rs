//! The parts of a completed scan a record keeps beside the count: where the counted findings
//! are, and which files the scanner could not parse.

use super::outcome::{CountCriteria, CountScope};
use super::report::{Finding, SemgrepReport};
use ase_common::scan_findings::FindingAt;
use std::collections::BTreeSet;

/// The findings `count_vulns` counts for `criteria`, as (rule, path, lines).
pub fn counted_findings(report: &SemgrepReport, criteria: &CountCriteria<'_>) -> Vec<FindingAt> {
    let vuln_file = normalise(criteria.vuln_file);
    report
        .findings
        .iter()
        .filter(|f| counts(f, criteria, &vuln_file))
        .map(|f| FindingAt {
            rule: f.check_id.clone(),
            path: normalise(&f.path),
            line: f.start_line,
            end_line: f.end_line,
        })
        .collect()
}

/// Whether `count_vulns` counts `f` (`vuln_file` already normalised).
pub(super) fn counts(f: &Finding, criteria: &CountCriteria<'_>, vuln_file: &str) -> bool {
    f.vuln_type.as_deref() == Some(criteria.vuln_type)
        && match criteria.scope {
            CountScope::WholeTree => true,
            CountScope::VulnFileOnly => normalise(&f.path) == vuln_file,
        }
}

/// semgrep's error types for a file it could not parse whole. It still reports what it found
/// in the parts it parsed (`PartialParsing`) or nothing at all (the others), and the scan
/// counts as working: the file's findings are silently missing.
fn is_parse_error(kind: &str) -> bool {
    let k = kind.to_ascii_lowercase();
    k.contains("parsing") || k.contains("syntax") || k.contains("lexical") || k.contains("parse")
}

/// The files (relative to the scanned root) the scanner reported it could not parse.
/// Rule errors (`Rule parse error`) name no scanned file and are left out.
pub fn unparsable_paths(report: &SemgrepReport) -> BTreeSet<String> {
    report
        .errors
        .iter()
        .filter(|e| is_parse_error(&e.kind) && !e.kind.to_ascii_lowercase().starts_with("rule"))
        .filter_map(|e| e.path.as_deref())
        .map(normalise)
        .filter(|p| !p.is_empty())
        .collect()
}

pub(super) fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sast::report::ScanError;

    fn error(kind: &str, path: Option<&str>) -> ScanError {
        ScanError {
            kind: kind.into(),
            level: "warn".into(),
            message: "m".into(),
            path: path.map(str::to_string),
        }
    }

    #[test]
    fn parse_errors_name_their_files_and_rule_errors_do_not_count() {
        let report = SemgrepReport {
            version: Some("1.185.0".into()),
            findings: vec![],
            findings_total: 0,
            errors: vec![
                error("PartialParsing", Some("./src/a.php")),
                error("Syntax error", Some("b.py")),
                error("Lexical error", Some("c.js")),
                error("Rule parse error", Some("rules/x.yaml")),
                error("Timeout", Some("d.php")),
                error("Syntax error", None),
            ],
            errors_total: 6,
        };
        let got: Vec<String> = unparsable_paths(&report).into_iter().collect();
        assert_eq!(got, ["b.py", "c.js", "src/a.php"]);
    }
}
