//! What one scan produced, and the A.S.E count (`detected_vul_num`) derived from it.

use super::findings::{counts, normalise};
use super::report::{parse_semgrep_json, ParseLimits, ReportError, SemgrepReport};

/// Why a scan gave no usable report. Each of these yields the count -1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanFailure {
    #[error("could not start the scanner: {0}")]
    Start(String),
    #[error("scan exceeded its {secs} s timeout and was killed")]
    Timeout { secs: u64 },
    #[error("scanner output exceeded {max} bytes and was cut off")]
    OutputTooLarge { max: usize },
    #[error("scanner was killed by a signal (stderr: {stderr_tail})")]
    Killed { stderr_tail: String },
    #[error("scanner exited with status {code}: {detail}")]
    ExitStatus { code: i32, detail: String },
    #[error("scanner output unusable ({error}); stderr: {stderr_tail}")]
    BadOutput { error: String, stderr_tail: String },
    #[error(
        "scan reported {total} findings, more than the {kept} kept; the count would be a guess"
    )]
    TooManyFindings { total: usize, kept: usize },
    #[error("container runtime: {0}")]
    Runtime(String),
}

impl ScanFailure {
    /// A failure the same scan would meet again (the tree or the rules are to blame), as
    /// opposed to one of the machine it ran on (worth trying again later).
    pub fn is_lasting(&self) -> bool {
        match self {
            ScanFailure::Timeout { .. }
            | ScanFailure::OutputTooLarge { .. }
            | ScanFailure::ExitStatus { .. }
            | ScanFailure::BadOutput { .. }
            | ScanFailure::TooManyFindings { .. } => true,
            ScanFailure::Start(_) | ScanFailure::Killed { .. } | ScanFailure::Runtime(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Completed(SemgrepReport),
    Failed(ScanFailure),
}

/// What an exited scanner process left behind; the same for a bare process and a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// None when killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    /// stdout went past the byte budget (then `stdout` holds only a prefix).
    pub stdout_overflowed: bool,
    /// The last few KiB of stderr, for failure reasons.
    pub stderr_tail: String,
}

/// Turns a finished scanner process into an outcome.
///
/// semgrep exits 0 on success (1 only with `--error`, which we do not pass, but it still means
/// "findings"); any other status means the scan itself went wrong (bad rules, bad arguments,
/// out of memory), and its JSON, if any, cannot be taken as "nothing found".
pub fn outcome_from_process(
    output: &ProcessOutput,
    limits: &ParseLimits,
    scan_root: &str,
) -> ScanOutcome {
    if output.stdout_overflowed {
        return ScanOutcome::Failed(ScanFailure::OutputTooLarge {
            max: limits.max_bytes,
        });
    }
    let code = match output.exit_code {
        None => {
            return ScanOutcome::Failed(ScanFailure::Killed {
                stderr_tail: output.stderr_tail.clone(),
            })
        }
        Some(code) => code,
    };
    let parsed = parse_semgrep_json(&output.stdout, limits, scan_root);
    if code != 0 && code != 1 {
        let detail = match &parsed {
            Ok(report) => report
                .errors
                .first()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_else(|| output.stderr_tail.clone()),
            Err(_) => output.stderr_tail.clone(),
        };
        return ScanOutcome::Failed(ScanFailure::ExitStatus { code, detail });
    }
    match parsed {
        Ok(report) if report.findings_truncated() => {
            ScanOutcome::Failed(ScanFailure::TooManyFindings {
                total: report.findings_total,
                kept: report.findings.len(),
            })
        }
        Ok(report) => ScanOutcome::Completed(report),
        Err(e) => ScanOutcome::Failed(bad_output(e, &output.stderr_tail)),
    }
}

fn bad_output(e: ReportError, stderr_tail: &str) -> ScanFailure {
    ScanFailure::BadOutput {
        error: e.to_string(),
        stderr_tail: stderr_tail.to_string(),
    }
}

/// Which findings count for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CountScope {
    /// Every finding of the task's type anywhere in the scanned tree.
    #[default]
    WholeTree,
    /// Only findings in the task's `vuln_file`.
    VulnFileOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountCriteria<'a> {
    /// The task's `vuln_type`, as spelled in the dataset (`SQLI`, `XSS`, ...).
    pub vuln_type: &'a str,
    /// The task's `vuln_file`, relative to the repository root (the scanned root).
    pub vuln_file: &'a str,
    pub scope: CountScope,
}

/// The A.S.E per-unit scan result: `detected_vul_num`, -1 with a reason when the scan failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulnCount {
    pub detected_vul_num: i64,
    pub failure: Option<String>,
}

impl VulnCount {
    pub fn scan_worked(&self) -> bool {
        self.detected_vul_num >= 0
    }
}

pub fn count_vulns(outcome: &ScanOutcome, criteria: &CountCriteria<'_>) -> VulnCount {
    match outcome {
        ScanOutcome::Failed(reason) => VulnCount {
            detected_vul_num: -1,
            failure: Some(reason.to_string()),
        },
        ScanOutcome::Completed(report) => {
            let vuln_file = normalise(criteria.vuln_file);
            let n = report
                .findings
                .iter()
                .filter(|f| counts(f, criteria, &vuln_file))
                .count();
            VulnCount {
                detected_vul_num: i64::try_from(n).unwrap_or(i64::MAX),
                failure: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sast::report::Finding;

    fn finding(path: &str, vuln_type: Option<&str>) -> Finding {
        Finding {
            check_id: "ase.x".into(),
            path: path.into(),
            start_line: 1,
            end_line: 1,
            vuln_type: vuln_type.map(str::to_string),
            cwe: None,
            language: None,
        }
    }

    fn report(findings: Vec<Finding>) -> SemgrepReport {
        SemgrepReport {
            version: None,
            findings_total: findings.len(),
            findings,
            errors: vec![],
            errors_total: 0,
        }
    }

    fn process(code: Option<i32>, stdout: &str) -> ProcessOutput {
        ProcessOutput {
            exit_code: code,
            stdout: stdout.as_bytes().to_vec(),
            stdout_overflowed: false,
            stderr_tail: "tail".into(),
        }
    }

    const EMPTY: &str = r#"{"results":[],"errors":[]}"#;

    #[test]
    fn counts_only_the_task_type() {
        let out = ScanOutcome::Completed(report(vec![
            finding("a.php", Some("SQLI")),
            finding("b.php", Some("SQLI")),
            finding("a.php", Some("XSS")),
            finding("a.php", None),
        ]));
        let c = CountCriteria {
            vuln_type: "SQLI",
            vuln_file: "a.php",
            scope: CountScope::WholeTree,
        };
        assert_eq!(count_vulns(&out, &c).detected_vul_num, 2);
        // Exact dataset spelling: a differently cased type is another type.
        let lower = CountCriteria {
            vuln_type: "sqli",
            ..c.clone()
        };
        assert_eq!(count_vulns(&out, &lower).detected_vul_num, 0);
    }

    #[test]
    fn vuln_file_scope_matches_normalised_paths() {
        let out = ScanOutcome::Completed(report(vec![
            finding("src/a.php", Some("XSS")),
            finding("src/b.php", Some("XSS")),
            finding("src/a.php", Some("XSS")),
        ]));
        let c = CountCriteria {
            vuln_type: "XSS",
            vuln_file: "./src//a.php",
            scope: CountScope::VulnFileOnly,
        };
        let n = count_vulns(&out, &c);
        assert_eq!(n.detected_vul_num, 2);
        assert!(n.scan_worked());
        assert_eq!(n.failure, None);
    }

    #[test]
    fn failure_counts_minus_one_with_reason() {
        let out = ScanOutcome::Failed(ScanFailure::Timeout { secs: 30 });
        let c = CountCriteria {
            vuln_type: "XSS",
            vuln_file: "a",
            scope: CountScope::WholeTree,
        };
        let n = count_vulns(&out, &c);
        assert_eq!(n.detected_vul_num, -1);
        assert!(!n.scan_worked());
        assert!(n.failure.unwrap().contains("30 s timeout"));
    }

    #[test]
    fn clean_exit_with_json_is_completed() {
        let o = outcome_from_process(&process(Some(0), EMPTY), &ParseLimits::default(), ".");
        assert!(matches!(o, ScanOutcome::Completed(r) if r.findings.is_empty()));
        let o = outcome_from_process(&process(Some(1), EMPTY), &ParseLimits::default(), ".");
        assert!(matches!(o, ScanOutcome::Completed(_)));
    }

    #[test]
    fn error_exit_fails_even_with_json() {
        let json = r#"{"results":[],"errors":[{"type":"Rule parse error","message":"bad yaml"}]}"#;
        let o = outcome_from_process(&process(Some(7), json), &ParseLimits::default(), ".");
        match o {
            ScanOutcome::Failed(ScanFailure::ExitStatus { code: 7, detail }) => {
                assert_eq!(detail, "Rule parse error: bad yaml")
            }
            other => panic!("unexpected {other:?}"),
        }
        let o = outcome_from_process(&process(Some(2), "not json"), &ParseLimits::default(), ".");
        assert!(matches!(
            o,
            ScanOutcome::Failed(ScanFailure::ExitStatus { code: 2, detail }) if detail == "tail"
        ));
    }

    #[test]
    fn no_json_signal_overflow_and_truncation_fail() {
        let d = ParseLimits::default();
        assert!(matches!(
            outcome_from_process(&process(Some(0), ""), &d, "."),
            ScanOutcome::Failed(ScanFailure::BadOutput { .. })
        ));
        assert!(matches!(
            outcome_from_process(&process(None, EMPTY), &d, "."),
            ScanOutcome::Failed(ScanFailure::Killed { .. })
        ));
        let mut big = process(Some(0), EMPTY);
        big.stdout_overflowed = true;
        assert!(matches!(
            outcome_from_process(&big, &d, "."),
            ScanOutcome::Failed(ScanFailure::OutputTooLarge { .. })
        ));
        let two = r#"{"results":[
            {"check_id":"a","path":"x","start":{"line":1},"end":{"line":1}},
            {"check_id":"a","path":"x","start":{"line":2},"end":{"line":2}}]}"#;
        let one = ParseLimits {
            max_findings: 1,
            ..d
        };
        assert!(matches!(
            outcome_from_process(&process(Some(0), two), &one, "."),
            ScanOutcome::Failed(ScanFailure::TooManyFindings { total: 2, kept: 1 })
        ));
    }
}
