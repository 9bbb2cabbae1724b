//! Typed, bounded parsing of `osemgrep --json` output.
//!
//! The output comes from a process that scanned untrusted code, so its size and the number of
//! entries kept are capped, and every field is optional except the few the count needs.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// 32 MiB: a real scan of one repository for one vulnerability type stays far below this.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 32 * 1024 * 1024;
/// Findings kept per scan; past this the report is marked truncated.
pub const DEFAULT_MAX_FINDINGS: usize = 50_000;
/// Scan errors kept per scan (they are diagnostics; the count does not depend on them).
pub const DEFAULT_MAX_ERRORS: usize = 1_000;
/// Longest message kept from a scan error.
const MAX_MESSAGE_CHARS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    pub max_bytes: usize,
    pub max_findings: usize,
    pub max_errors: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_findings: DEFAULT_MAX_FINDINGS,
            max_errors: DEFAULT_MAX_ERRORS,
        }
    }
}

/// One `results[]` entry, with the path made relative to the scanned root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check_id: String,
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    /// `extra.metadata.vuln_type` of the rule (A.S.E spelling, e.g. `SQLI`).
    pub vuln_type: Option<String>,
    pub cwe: Option<String>,
    pub language: Option<String>,
}

/// One `errors[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// semgrep's error type, e.g. `Syntax error`, `Rule parse error`.
    pub kind: String,
    /// `warn` or `error` (semgrep's `level`).
    pub level: String,
    pub message: String,
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SemgrepReport {
    pub version: Option<String>,
    pub findings: Vec<Finding>,
    /// Number of `results[]` entries in the output, including those past the cap.
    pub findings_total: usize,
    pub errors: Vec<ScanError>,
    pub errors_total: usize,
}

impl SemgrepReport {
    pub fn findings_truncated(&self) -> bool {
        self.findings_total > self.findings.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("semgrep output is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("semgrep output is empty")]
    Empty,
    #[error("semgrep output is not the expected JSON: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("semgrep output has no `results` array")]
    MissingResults,
}

/// Parses semgrep's JSON report. `scan_root` is the target path exactly as it was passed on
/// the command line; finding paths under it are made relative to it.
pub fn parse_semgrep_json(
    bytes: &[u8],
    limits: &ParseLimits,
    scan_root: &str,
) -> Result<SemgrepReport, ReportError> {
    if bytes.len() > limits.max_bytes {
        return Err(ReportError::TooLarge {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReportError::Empty);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw = RawReportSeed { limits }.deserialize(&mut de)?;
    de.end()?;
    let (raw_results, findings_total) = raw.results.ok_or(ReportError::MissingResults)?;
    let (raw_errors, errors_total) = raw.errors.unwrap_or((Vec::new(), 0));
    Ok(SemgrepReport {
        version: raw.version,
        findings: raw_results
            .into_iter()
            .map(|r| r.into_finding(scan_root))
            .collect(),
        findings_total,
        errors: raw_errors
            .into_iter()
            .map(|e| e.into_error(scan_root))
            .collect(),
        errors_total,
    })
}

/// Makes `path` relative to `root` when it lies under it; normalises `./` and `//`.
pub fn relative_to_root(path: &str, root: &str) -> String {
    let path_parts: Vec<&str> = components(path).collect();
    let root_parts: Vec<&str> = components(root).collect();
    let absolute = path.starts_with('/');
    if absolute == root.starts_with('/') && path_parts.starts_with(&root_parts) {
        let rest = &path_parts[root_parts.len()..];
        if !rest.is_empty() {
            return rest.join("/");
        }
        // The root was a single file: keep its name.
        return path_parts.last().copied().unwrap_or_default().to_string();
    }
    let joined = path_parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

struct RawReport {
    version: Option<String>,
    results: Option<(Vec<RawResult>, usize)>,
    errors: Option<(Vec<RawError>, usize)>,
}

struct RawReportSeed<'a> {
    limits: &'a ParseLimits,
}

impl<'de> DeserializeSeed<'de> for RawReportSeed<'_> {
    type Value = RawReport;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawReport, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RawReportSeed<'_> {
    type Value = RawReport;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a semgrep JSON report object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReport, A::Error> {
        let mut report = RawReport {
            version: None,
            results: None,
            errors: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => report.version = map.next_value::<Option<String>>()?,
                "results" => {
                    report.results = Some(
                        map.next_value_seed(CappedSeq::<RawResult>::new(self.limits.max_findings))?,
                    )
                }
                "errors" => {
                    report.errors = Some(
                        map.next_value_seed(CappedSeq::<RawError>::new(self.limits.max_errors))?,
                    )
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(report)
    }
}

/// Deserialises a sequence keeping at most `max` items (the rest are skipped without being
/// built) and returns the kept items with the total length.
struct CappedSeq<T> {
    max: usize,
    _item: std::marker::PhantomData<T>,
}

impl<T> CappedSeq<T> {
    fn new(max: usize) -> Self {
        Self {
            max,
            _item: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for CappedSeq<T> {
    type Value = (Vec<T>, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for CappedSeq<T> {
    type Value = (Vec<T>, usize);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        let mut total = 0usize;
        loop {
            if kept.len() < self.max {
                match seq.next_element::<T>()? {
                    Some(item) => kept.push(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            total += 1;
        }
        Ok((kept, total))
    }
}

#[derive(Deserialize)]
struct RawPosition {
    line: u64,
}

#[derive(Deserialize, Default)]
struct RawExtra {
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct RawResult {
    check_id: String,
    path: String,
    start: RawPosition,
    end: RawPosition,
    #[serde(default)]
    extra: RawExtra,
}

impl RawResult {
    fn into_finding(self, scan_root: &str) -> Finding {
        let meta = self.extra.metadata.as_ref();
        Finding {
            path: relative_to_root(&self.path, scan_root),
            check_id: self.check_id,
            start_line: self.start.line,
            end_line: self.end.line,
            vuln_type: meta.and_then(|m| metadata_string(m, "vuln_type")),
            cwe: meta.and_then(|m| metadata_string(m, "cwe")),
            language: meta.and_then(|m| metadata_string(m, "language")),
        }
    }
}

/// A metadata field as one string; semgrep rules in the wild use either a string or a list.
fn metadata_string(metadata: &Value, key: &str) -> Option<String> {
    match metadata.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(|v| v.as_str().map(str::to_string)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default, rename = "type")]
    kind: Value,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

impl RawError {
    fn into_error(self, scan_root: &str) -> ScanError {
        // semgrep encodes `type` as a string or as a tagged list such as ["PartialParsing", [...]].
        let kind = match &self.kind {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .first()
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            _ => "unknown".to_string(),
        };
        let message: String = self
            .message
            .unwrap_or_default()
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        ScanError {
            kind,
            level: self.level.unwrap_or_else(|| "error".to_string()),
            message,
            path: self.path.map(|p| relative_to_root(&p, scan_root)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(path: &str, line: u64, vuln_type: &str) -> String {
        format!(
            r#"{{"check_id":"ase.x","path":"{path}","start":{{"line":{line},"col":1}},"end":{{"line":{line},"col":9}},"extra":{{"message":"m","metadata":{{"vuln_type":"{vuln_type}","cwe":["CWE-89"],"language":"php"}}}}}}"#
        )
    }

    #[test]
    fn parses_results_and_errors() {
        let json = format!(
            r#"{{"version":"1.185.0","results":[{}],"errors":[{{"type":["PartialParsing",[1]],"level":"warn","message":"bad","path":"/src/a.php"}}],"paths":{{"scanned":[]}}}}"#,
            result("/src/app/a.php", 7, "SQLI")
        );
        let r = parse_semgrep_json(json.as_bytes(), &ParseLimits::default(), "/src").unwrap();
        assert_eq!(r.version.as_deref(), Some("1.185.0"));
        assert_eq!(r.findings.len(), 1);
        let f = &r.findings[0];
        assert_eq!(f.path, "app/a.php");
        assert_eq!((f.start_line, f.end_line), (7, 7));
        assert_eq!(f.vuln_type.as_deref(), Some("SQLI"));
        assert_eq!(f.cwe.as_deref(), Some("CWE-89"));
        assert_eq!(r.errors[0].kind, "PartialParsing");
        assert_eq!(r.errors[0].level, "warn");
        assert_eq!(r.errors[0].path.as_deref(), Some("a.php"));
        assert!(!r.findings_truncated());
    }

    #[test]
    fn caps_findings_but_counts_them_all() {
        let items: Vec<String> = (1..=5).map(|i| result("a.php", i, "XSS")).collect();
        let json = format!(r#"{{"results":[{}],"errors":[]}}"#, items.join(","));
        let limits = ParseLimits {
            max_findings: 2,
            ..ParseLimits::default()
        };
        let r = parse_semgrep_json(json.as_bytes(), &limits, ".").unwrap();
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.findings_total, 5);
        assert!(r.findings_truncated());
    }

    #[test]
    fn rejects_oversized_empty_and_broken_output() {
        let limits = ParseLimits {
            max_bytes: 10,
            ..ParseLimits::default()
        };
        assert!(matches!(
            parse_semgrep_json(&[b' '; 11], &limits, "."),
            Err(ReportError::TooLarge { len: 11, max: 10 })
        ));
        let d = ParseLimits::default();
        assert!(matches!(
            parse_semgrep_json(b"  \n", &d, "."),
            Err(ReportError::Empty)
        ));
        assert!(matches!(
            parse_semgrep_json(br#"{"results":[{"check_id":1}]}"#, &d, "."),
            Err(ReportError::Invalid(_))
        ));
        assert!(matches!(
            parse_semgrep_json(br#"{"results":[]} trailing"#, &d, "."),
            Err(ReportError::Invalid(_))
        ));
        assert!(matches!(
            parse_semgrep_json(br#"{"errors":[]}"#, &d, "."),
            Err(ReportError::MissingResults)
        ));
    }

    #[test]
    fn finding_without_metadata_has_no_type() {
        let json =
            br#"{"results":[{"check_id":"x","path":"a.py","start":{"line":1},"end":{"line":2}}]}"#;
        let r = parse_semgrep_json(json, &ParseLimits::default(), ".").unwrap();
        assert_eq!(r.findings[0].vuln_type, None);
        assert_eq!(r.findings[0].end_line, 2);
    }

    #[test]
    fn long_error_messages_are_cut() {
        let msg = "e".repeat(10_000);
        let json = format!(r#"{{"results":[],"errors":[{{"type":"Fatal","message":"{msg}"}}]}}"#);
        let r = parse_semgrep_json(json.as_bytes(), &ParseLimits::default(), ".").unwrap();
        assert_eq!(r.errors[0].message.len(), MAX_MESSAGE_CHARS);
        assert_eq!(r.errors[0].level, "error");
    }

    #[test]
    fn paths_are_made_relative_to_the_scan_root() {
        assert_eq!(relative_to_root("/src/a/b.go", "/src"), "a/b.go");
        assert_eq!(relative_to_root("/src/a/b.go", "/src/"), "a/b.go");
        assert_eq!(relative_to_root("tree/./a.go", "tree"), "a.go");
        assert_eq!(relative_to_root("./a.go", "."), "a.go");
        assert_eq!(relative_to_root("/other/a.go", "/src"), "/other/a.go");
        assert_eq!(relative_to_root("/srcx/a.go", "/src"), "/srcx/a.go");
        assert_eq!(relative_to_root("/src/one.py", "/src/one.py"), "one.py");
    }
}
