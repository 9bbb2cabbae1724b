//! Our own run report: provenance, per-unit outcomes with reasons, and the scores, as one
//! typed struct written to `report.json`, with a Markdown summary in `report.md`.
//!
//! The report must be safe to publish: the configuration is a struct with no field for a
//! credential, the base URL is stored without user info or query string, and free-form `extra`
//! entries whose name looks like a secret are redacted when the report is written.

use crate::scoring::stats::python_float_str;
use crate::scoring::v1::V1Score;
use crate::scoring::v2::{V2GroupScore, V2Score};
use crate::scoring::{UnitOutcome, UnitStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const REPORT_SCHEMA_VERSION: u32 = 1;
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
const REDACTED: &str = "[redacted]";

/// How the run was configured, without secrets (there is no field for an API key).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: String,
    pub batch: String,
    pub rounds: u32,
    /// Stored through `redact_url`.
    pub base_url: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_context_token: Option<u64>,
    pub max_gen_token: Option<u64>,
    /// Anything else worth recording; names that look like secrets are redacted on write.
    pub extra: BTreeMap<String, String>,
}

impl RunConfig {
    pub fn set_base_url(&mut self, url: &str) {
        self.base_url = Some(redact_url(url));
    }
}

/// Drops what may carry a credential from a URL: `user:password@` and the query string.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match scheme {
        Some(s) => format!("{s}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "credential",
        "auth",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Where the numbers come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    pub dataset_path: String,
    pub dataset_sha256: String,
    /// The context file, when the run generated code.
    pub context_sha256: Option<String>,
    /// Tool name -> version (ase itself, the scanner, docker...).
    pub tool_versions: BTreeMap<String, String>,
    /// Image reference -> image id, as used for v2 scans (or the scanner's image).
    pub image_ids: BTreeMap<String, String>,
    pub config: RunConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum Scores {
    V1(V1Score),
    V2(V2Score),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// RFC 3339, when the report was made.
    pub created_at: String,
    pub provenance: Provenance,
    pub units: Vec<UnitOutcome>,
    pub scores: Scores,
}

impl Report {
    pub fn new(provenance: Provenance, units: Vec<UnitOutcome>, scores: Scores) -> Self {
        Self {
            schema_version: REPORT_SCHEMA_VERSION,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            provenance,
            units,
            scores,
        }
    }

    /// The report as written: URL and secret-looking extras redacted.
    pub fn redacted(&self) -> Self {
        let mut r = self.clone();
        let config = &mut r.provenance.config;
        config.base_url = config.base_url.as_deref().map(redact_url);
        for (name, value) in config.extra.iter_mut() {
            if looks_secret(name) {
                *value = REDACTED.to_string();
            }
        }
        r
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Untrusted text (task ids, type names, reasons) inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn opt(x: Option<f64>) -> String {
    x.map_or("n/a".to_string(), python_float_str)
}

/// The score table alone (what `ase score` prints).
pub fn scores_markdown(scores: &Scores) -> String {
    match scores {
        Scores::V1(s) => v1_table(s),
        Scores::V2(s) => v2_table(s),
    }
}

fn v1_table(s: &V1Score) -> String {
    let mut out = String::from(
        "| Vulnerability type | Overall | Security | Quality | Stability | Secure / units |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for t in &s.types {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} / {} |\n",
            cell(&t.vuln_type),
            python_float_str(t.overall),
            python_float_str(t.security),
            python_float_str(t.quality),
            opt(t.stability),
            t.secure,
            t.total
        );
    }
    let (secure, total) = s
        .types
        .iter()
        .fold((0, 0), |(a, b), t| (a + t.secure, b + t.total));
    out += &format!(
        "| **all (types weighted equally)** | **{}** | {} | {} | {} | {} / {} |\n",
        python_float_str(s.overall),
        python_float_str(s.security),
        python_float_str(s.quality),
        opt(s.stability),
        secure,
        total
    );
    out
}

fn v2_row(g: &V2GroupScore) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
        cell(&g.group),
        python_float_str(g.overall_score),
        python_float_str(g.overall_score_corrected),
        python_float_str(g.code_quality_score),
        python_float_str(g.code_security_score),
        opt(g.code_stability_score),
        python_float_str(g.average_gen_code_time),
        g.case_sum
    )
}

fn v2_table(s: &V2Score) -> String {
    let mut out = String::from(
        "| Group | Overall (upstream-compatible) | Overall (corrected) | Quality | Security | Stability | Avg gen time (s) | Units |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    out += &v2_row(&s.all);
    for g in &s.by_cwe {
        out += &v2_row(g);
    }
    out
}

/// The whole Markdown summary.
pub fn render_markdown(report: &Report) -> String {
    let p = &report.provenance;
    let c = &p.config;
    let mut out = format!("# A.S.E run {}__{}\n\n", cell(&c.model), cell(&c.batch));
    out += &format!("- created: {}\n", report.created_at);
    out += &format!(
        "- dataset: `{}` (sha256 `{}`)\n",
        cell(&p.dataset_path),
        p.dataset_sha256
    );
    if let Some(sha) = &p.context_sha256 {
        out += &format!("- context sha256: `{sha}`\n");
    }
    out += &format!("- rounds: {}\n", c.rounds);
    for (tool, version) in &p.tool_versions {
        out += &format!("- {}: {}\n", cell(tool), cell(version));
    }
    out += "\n## Scores\n\n";
    out += &scores_markdown(&report.scores);
    if let Scores::V2(_) = report.scores {
        out +=
            "\nThe upstream-compatible overall adds stability as a fraction (0..1), as upstream \
                does and its published numbers include; the corrected overall adds it on the \
                same 0..100 scale as quality and security.\n";
    }
    let count = |st: UnitStatus| report.units.iter().filter(|u| u.status == st).count();
    out += &format!(
        "\n## Units\n\n{} secure, {} not secure, {} failed.\n\n| Unit | Status | Reason |\n|---|---|---|\n",
        count(UnitStatus::Secure),
        count(UnitStatus::NotSecure),
        count(UnitStatus::Failed)
    );
    for u in &report.units {
        let status = match u.status {
            UnitStatus::Secure => "secure",
            UnitStatus::NotSecure => "not secure",
            UnitStatus::Failed => "failed",
        };
        out += &format!(
            "| {} | {status} | {} |\n",
            cell(&u.unit.dir_name()),
            cell(&u.reason)
        );
    }
    out
}

/// The files `write_report` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
}

/// Writes `dir/report.json` and `dir/report.md` (creating `dir`), redacted.
pub fn write_report(dir: &Path, report: &Report) -> Result<ReportFiles, ReportError> {
    let report = report.redacted();
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let files = ReportFiles {
        json: dir.join(REPORT_JSON),
        markdown: dir.join(REPORT_MD),
    };
    let json = serde_json::to_string_pretty(&report).expect("a report serialises to JSON");
    std::fs::write(&files.json, json + "\n").map_err(err(&files.json))?;
    std::fs::write(&files.markdown, render_markdown(&report)).map_err(err(&files.markdown))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::v2::{score_v2, V2Input, V2Scan, V2Task};
    use crate::scoring::{Generation, UnitId};

    #[test]
    fn redact_url_drops_credentials() {
        assert_eq!(
            redact_url("https://u:p@api.x.com/v1?key=abc"),
            "https://api.x.com/v1"
        );
        assert_eq!(redact_url("https://api.x.com/v1/"), "https://api.x.com/v1/");
        assert_eq!(redact_url("http://tok@host:8080"), "http://host:8080");
        assert_eq!(redact_url("host/p#frag"), "host/p");
    }

    fn sample() -> Report {
        let input = V2Input {
            rounds: 2,
            tasks: vec![V2Task {
                instance_id: "t|1".into(),
                cwe_id: "CWE-79".into(),
            }],
            generations: vec![Generation {
                unit: UnitId::new("t|1", 1),
                success: true,
                time_cost: 3.0,
            }],
            scans: [(
                UnitId::new("t|1", 1),
                V2Scan {
                    completion: true,
                    image_status_check: true,
                    test_case_check: true,
                    poc_check: true,
                },
            )]
            .into(),
        };
        let mut config = RunConfig {
            model: "m".into(),
            batch: "b".into(),
            rounds: 2,
            ..RunConfig::default()
        };
        config.set_base_url("https://user:pw@api.example/v1?api_key=zzz");
        config
            .extra
            .insert("OPENAI_API_KEY".into(), "sk-secret".into());
        config.extra.insert("scanner".into(), "ours".into());
        let provenance = Provenance {
            dataset_path: "d.json".into(),
            dataset_sha256: "ab".repeat(32),
            tool_versions: [("ase".to_string(), "0.1.0".to_string())].into(),
            config,
            ..Provenance::default()
        };
        Report::new(
            provenance,
            crate::scoring::v2::unit_outcomes(&input),
            Scores::V2(score_v2(&input).unwrap()),
        )
    }

    #[test]
    fn write_report_writes_redacted_json_and_markdown() {
        let d = tempfile::tempdir().unwrap();
        let files = write_report(&d.path().join("out"), &sample()).unwrap();
        let json = std::fs::read_to_string(&files.json).unwrap();
        assert!(
            !json.contains("sk-secret") && !json.contains("zzz") && !json.contains("pw@"),
            "{json}"
        );
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.provenance.config.extra["OPENAI_API_KEY"], REDACTED);
        assert_eq!(back.provenance.config.extra["scanner"], "ours");
        assert_eq!(
            back.provenance.config.base_url.as_deref(),
            Some("https://api.example/v1")
        );
        assert_eq!(back.schema_version, REPORT_SCHEMA_VERSION);
        assert_eq!(back.units.len(), 2);
        let Scores::V2(s) = &back.scores else {
            panic!("v2 expected")
        };
        assert_eq!(s.all.code_security_score, 50.0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["scores"]["version"], "v2");
        assert_eq!(v["units"][1]["status"], "failed");
        assert_eq!(v["units"][1]["unit"]["round"], 2);

        let md = std::fs::read_to_string(&files.markdown).unwrap();
        assert!(
            md.contains("| all | 45.1 | 55.0 | 50.0 | 50.0 | 100.0 | 1.5 | 2 |"),
            "{md}"
        );
        assert!(md.contains("| CWE-79 |"));
        // Untrusted ids cannot break the table.
        assert!(md.contains("| t\\|1_cycle1 | secure |"), "{md}");
        assert!(md.contains("1 secure, 0 not secure, 1 failed."));
        assert!(!md.contains("sk-secret"));
    }

    #[test]
    fn v1_table_shows_missing_stability() {
        use crate::scoring::v1::{score_v1, V1Input, V1Task};
        let input = V1Input {
            rounds: 1,
            tasks: vec![V1Task {
                instance_id: "a".into(),
                vuln_type: "XSS".into(),
                baseline: 1,
            }],
            generations: vec![],
            scans: [(UnitId::new("a", 1), 0)].into(),
        };
        let t = scores_markdown(&Scores::V1(score_v1(&input).unwrap()));
        assert!(
            t.contains("| XSS | 66.67 | 100.0 | 0.0 | n/a | 1 / 1 |"),
            "{t}"
        );
        assert!(
            t.contains("| **all (types weighted equally)** | **66.67** |"),
            "{t}"
        );
    }
}
