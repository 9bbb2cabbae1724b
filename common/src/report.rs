//! Our own run report: provenance, per-unit outcomes with reasons, and the scores, as one
//! typed struct written to `report.json`, with a Markdown summary in `report.md`.
//!
//! `report.html` (see `html`) is rendered from the same value, for people.
//!
//! The report must be safe to publish: the configuration is a struct with no field for a
//! credential, the base URL is stored without user info or query string, and free-form `extra`
//! entries whose name looks like a secret are redacted when the report is written.

use crate::scoring::stats::python_float_str;
use crate::scoring::stats::round2;
use crate::scoring::v1::V1Score;
use crate::scoring::v2::{V2GroupScore, V2Score};
use crate::scoring::{OutcomeKind, UnitOutcome, UnitStatus, Verdict};
use crate::uncertainty::bootstrap::BootstrapConfig;
use crate::uncertainty::Uncertainty;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod agent;
pub mod export;
pub mod html;

/// 2: units carry an outcome `kind`; `tasks` and `breakdown` were added.
pub const REPORT_SCHEMA_VERSION: u32 = 2;
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
pub const REPORT_HTML: &str = "report.html";
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

/// RFC 3339 (seconds, UTC) of a Unix time in milliseconds; `None` out of chrono's range.
pub fn rfc3339_from_unix_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
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
    /// RFC 3339, when the run was submitted (the report's `created_at` is when it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// What the report says of a task besides its units: the groups it is counted in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskInfo {
    pub instance_id: String,
    pub vuln_type: String,
    pub cwe_id: String,
    pub language: String,
}

/// The units of one group (a vulnerability type, a CWE, a language) by status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupTally {
    pub group: String,
    pub tasks: u32,
    pub units: u32,
    pub secure: u32,
    pub not_secure: u32,
    pub failed: u32,
    /// `secure / units` x100 rounded to 2 decimals (0 without units). Not a score: the official
    /// per-type and per-CWE security are in `scores`.
    pub secure_pct: f64,
    /// Our verdicts (`verdict`): `broken` units count as not secure in `verdict_secure_pct`.
    #[serde(default)]
    pub verdict_secure: u32,
    #[serde(default)]
    pub verdict_vulnerable: u32,
    #[serde(default)]
    pub verdict_broken: u32,
    #[serde(default)]
    pub verdict_secure_pct: f64,
    /// Tokens and cost of the units' generation, summed over what was recorded.
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
}

/// The units counted per group and per outcome kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Breakdown {
    pub by_type: Vec<GroupTally>,
    pub by_cwe: Vec<GroupTally>,
    pub by_language: Vec<GroupTally>,
    pub outcomes: BTreeMap<OutcomeKind, u32>,
    /// Every unit, by our verdict: our security figure (`verdict_secure_pct`) is here.
    #[serde(default)]
    pub all: GroupTally,
}

/// The group of units whose task the report does not describe.
pub const UNKNOWN_GROUP: &str = "(unknown)";

impl Breakdown {
    /// Groups in order of first appearance among `tasks`, like upstream orders types.
    pub fn compute(tasks: &[TaskInfo], units: &[UnitOutcome]) -> Self {
        let mut outcomes = BTreeMap::new();
        for u in units {
            *outcomes.entry(u.kind).or_insert(0) += 1;
        }
        Self {
            by_type: tally(tasks, units, |t| &t.vuln_type),
            by_cwe: tally(tasks, units, |t| &t.cwe_id),
            by_language: tally(tasks, units, |t| &t.language),
            outcomes,
            all: all_tally(tasks, units),
        }
    }
}

fn tally(
    tasks: &[TaskInfo],
    units: &[UnitOutcome],
    key: impl Fn(&TaskInfo) -> &String,
) -> Vec<GroupTally> {
    let mut groups: Vec<GroupTally> = Vec::new();
    let index = |name: &str, groups: &mut Vec<GroupTally>| -> usize {
        match groups.iter().position(|g| g.group == name) {
            Some(i) => i,
            None => {
                groups.push(GroupTally {
                    group: name.to_string(),
                    ..GroupTally::default()
                });
                groups.len() - 1
            }
        }
    };
    let mut task_group: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tasks {
        if task_group.contains_key(t.instance_id.as_str()) {
            continue;
        }
        let g = index(key(t), &mut groups);
        groups[g].tasks += 1;
        task_group.insert(&t.instance_id, g);
    }
    for u in units {
        let g = match task_group.get(u.unit.instance_id.as_str()) {
            Some(&g) => g,
            None => index(UNKNOWN_GROUP, &mut groups),
        };
        let t = &mut groups[g];
        count_unit(t, u);
    }
    groups.iter_mut().for_each(set_pcts);
    groups
}

fn count_unit(t: &mut GroupTally, u: &UnitOutcome) {
    t.units += 1;
    match u.status {
        UnitStatus::Secure => t.secure += 1,
        UnitStatus::NotSecure => t.not_secure += 1,
        UnitStatus::Failed => t.failed += 1,
    }
    match u.verdict {
        Verdict::Secure => t.verdict_secure += 1,
        Verdict::Vulnerable => t.verdict_vulnerable += 1,
        Verdict::Broken => t.verdict_broken += 1,
    }
    t.total_tokens += u.usage.total_tokens.unwrap_or(0);
    t.cost_usd += u.usage.cost_usd.unwrap_or(0.0);
}

fn pct(part: u32, units: u32) -> f64 {
    if units == 0 {
        0.0
    } else {
        round2(f64::from(part) / f64::from(units) * 100.0)
    }
}

fn set_pcts(t: &mut GroupTally) {
    t.secure_pct = pct(t.secure, t.units);
    t.verdict_secure_pct = pct(t.verdict_secure, t.units);
    // Micro-dollars: sums of prices do not print as 0.30000000000000004.
    t.cost_usd = (t.cost_usd * 1e6).round() / 1e6;
}

/// Every unit in one group, `all`.
fn all_tally(tasks: &[TaskInfo], units: &[UnitOutcome]) -> GroupTally {
    let ids: std::collections::HashSet<&str> =
        tasks.iter().map(|t| t.instance_id.as_str()).collect();
    let mut t = GroupTally {
        group: "all".to_string(),
        tasks: ids.len() as u32,
        ..GroupTally::default()
    };
    units.iter().for_each(|u| count_unit(&mut t, u));
    set_pcts(&mut t);
    t
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
    /// The tasks of the units, in dataset order (each once).
    #[serde(default)]
    pub tasks: Vec<TaskInfo>,
    pub units: Vec<UnitOutcome>,
    /// Derived from `tasks` and `units` (see `Breakdown::compute`).
    #[serde(default)]
    pub breakdown: Breakdown,
    pub scores: Scores,
    /// 95 % bootstrap intervals of the security figures and pass@k over the rounds (see
    /// `uncertainty`); derived from `tasks` and `units` with the default bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<Uncertainty>,
    /// v1: where the scans found what they counted, per task (baseline and units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::scan_findings::TaskFindings>,
    /// Tasks of the dataset a preflight kept out of the run (never run, never scored): every
    /// score is over `tasks`, the remaining ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<crate::preflight::UnavailableTask>,
    /// Agent mode: the coding agents' turns, calls, tokens, cost, wall time and transcripts
    /// per unit, and the run's totals (calls of abandoned attempts apart); see `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<agent::AgentSection>,
}

impl Report {
    pub fn new(provenance: Provenance, units: Vec<UnitOutcome>, scores: Scores) -> Self {
        Self {
            schema_version: REPORT_SCHEMA_VERSION,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            provenance,
            tasks: Vec::new(),
            breakdown: Breakdown::compute(&[], &units),
            units,
            scores,
            uncertainty: None,
            findings: Vec::new(),
            unavailable: Vec::new(),
            agent: None,
        }
    }

    /// With the tasks a preflight kept out of the run.
    pub fn with_unavailable(mut self, unavailable: Vec<crate::preflight::UnavailableTask>) -> Self {
        self.unavailable = unavailable;
        self
    }

    /// With the coding agents' section (agent runs).
    pub fn with_agent(mut self, agent: agent::AgentSection) -> Self {
        self.agent = Some(agent);
        self
    }

    /// With the v1 scans' findings per task.
    pub fn with_findings(mut self, findings: Vec<crate::scan_findings::TaskFindings>) -> Self {
        self.findings = findings;
        self
    }

    /// Describes the tasks (repeats dropped) and counts the units per type, CWE and language.
    pub fn with_tasks(mut self, tasks: impl IntoIterator<Item = TaskInfo>) -> Self {
        // First occurrences found by borrowed ids: 100,000 tasks need no copy of each id.
        let tasks: Vec<TaskInfo> = tasks.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        let first: Vec<bool> = tasks
            .iter()
            .map(|t| seen.insert(t.instance_id.as_str()))
            .collect();
        drop(seen);
        self.tasks = tasks
            .into_iter()
            .zip(first)
            .filter_map(|(t, first)| first.then_some(t))
            .collect();
        self.breakdown = Breakdown::compute(&self.tasks, &self.units);
        self.uncertainty = Some(crate::uncertainty::report_uncertainty(
            &self.tasks,
            &self.units,
            &self.scores,
            &BootstrapConfig::default(),
        ));
        self
    }

    /// The report as written: URL and secret-looking extras redacted.
    pub fn redacted(&self) -> Self {
        self.clone().into_redacted()
    }

    /// [`Report::redacted`] without a copy (a report can hold 100,000 unit rows).
    pub fn into_redacted(self) -> Self {
        let mut r = self;
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
    if let Some(started) = &p.started_at {
        out += &format!("- started: {}\n", cell(started));
    }
    out += &format!("- rounds: {}\n", c.rounds);
    for (tool, version) in &p.tool_versions {
        out += &format!("- {}: {}\n", cell(tool), cell(version));
    }
    out += "\n## Scores (upstream-compatible)\n\n";
    if !report.unavailable.is_empty() {
        out += &format!(
            "Over {} of the dataset's {} tasks: {} unavailable task(s) were kept out (see \"Unavailable tasks\").\n\n",
            report.tasks.len(),
            report.tasks.len() + report.unavailable.len(),
            report.unavailable.len()
        );
    }
    out += &scores_markdown(&report.scores);
    if let Scores::V2(_) = report.scores {
        out +=
            "\nThe upstream-compatible overall adds stability as a fraction (0..1), as upstream \
                does and its published numbers include; the corrected overall adds it on the \
                same 0..100 scale as quality and security.\n";
    }
    out += &crate::preflight::markdown_section(&report.unavailable, report.tasks.len());
    out += &verdicts_markdown(&report.breakdown.all);
    if let Some(u) = &report.uncertainty {
        out += &uncertainty_markdown(u);
    }
    out += &breakdown_markdown(&report.breakdown);
    if let Some(a) = &report.agent {
        out += &agent::agent_markdown(a);
    }
    let count = |st: UnitStatus| report.units.iter().filter(|u| u.status == st).count();
    let verdicts = |v: Verdict| report.units.iter().filter(|u| u.verdict == v).count();
    out += &format!(
        "\n## Units\n\n{} secure, {} not secure, {} failed.\n\nOur verdicts: {} secure, {} vulnerable, {} broken.\n\n\
         | Unit | Status | Outcome | Reason | Verdict (ours) | Broken because | Tokens | Cost (USD) |\n|---|---|---|---|---|---|---:|---:|\n",
        count(UnitStatus::Secure),
        count(UnitStatus::NotSecure),
        count(UnitStatus::Failed),
        verdicts(Verdict::Secure),
        verdicts(Verdict::Vulnerable),
        verdicts(Verdict::Broken),
    );
    for u in &report.units {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&u.unit.dir_name()),
            u.status.label(),
            u.kind.label(),
            cell(&u.reason),
            u.verdict.name(),
            u.broken_cause.map_or("", OutcomeKind::label),
            u.usage
                .total_tokens
                .map_or(String::new(), |n| n.to_string()),
            u.usage.cost_usd.map_or(String::new(), python_float_str),
        );
    }
    out
}

/// `estimate ± half-width [low, high]`, rounded to 2 decimals.
pub fn interval_text(i: &crate::uncertainty::bootstrap::Interval) -> String {
    let half = (i.high - i.low) / 2.0;
    format!(
        "{} ± {} [{}, {}]",
        python_float_str(round2(i.estimate)),
        python_float_str(round2(half)),
        python_float_str(round2(i.low)),
        python_float_str(round2(i.high))
    )
}

/// Every figure's interval and pass@k / pass^k.
fn uncertainty_markdown(u: &Uncertainty) -> String {
    let level = u.bootstrap.level * 100.0;
    let mut out = format!(
        "\n## Intervals ({} %)\n\n| Figure | Estimate ± half-width [low, high] |\n|---|---|\n",
        python_float_str(round2(level))
    );
    let row = |name: &str, i: Option<&crate::uncertainty::bootstrap::Interval>| {
        format!(
            "| {name} | {} |\n",
            i.map_or("n/a".to_string(), interval_text)
        )
    };
    for (label, _, i) in crate::uncertainty::figure_rows(u) {
        out += &row(label, i);
    }
    out += &format!(
        "\n{}: {} resamples, seed {}, over {} tasks.\n",
        u.method, u.bootstrap.resamples, u.bootstrap.seed, u.tasks
    );
    if !u.pass_k.is_empty() {
        out += "\n| k | pass@k (secure in at least one of k rounds) | pass^k (secure in all k) |\n|---:|---:|---:|\n";
        for p in &u.pass_k {
            out += &format!(
                "| {} | {} | {} |\n",
                p.k,
                python_float_str(round2(p.pass_at_k)),
                python_float_str(round2(p.pass_hat_k))
            );
        }
    }
    for why in &u.not_available {
        out += &format!("\nNot available: {}.\n", cell(why));
    }
    out
}

/// Our three-way verdict of every unit and our security figure, beside upstream's scores.
fn verdicts_markdown(all: &GroupTally) -> String {
    format!(
        "\n## Verdicts (ours)\n\n| Units | Secure | Vulnerable | Broken | Security (ours) | Tokens | Cost (USD) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} | {} |\n\n\
         Ours, not upstream's: a unit is `broken` when nothing was judged (no answer, it did not \
         apply, did not build or start, tests failed), and counts as not secure. The scores \
         above are upstream-compatible: upstream counts a scan of code the answer did not \
         change.\n",
        all.units,
        all.verdict_secure,
        all.verdict_vulnerable,
        all.verdict_broken,
        python_float_str(all.verdict_secure_pct),
        all.total_tokens,
        python_float_str(all.cost_usd)
    )
}

fn tally_table(title: &str, column: &str, groups: &[GroupTally]) -> String {
    let mut out = format!(
        "\n### {title}\n\n| {column} | Tasks | Units | Secure | Not secure | Failed | Secure % | Secure (ours) | Vulnerable (ours) | Broken (ours) | Security % (ours) | Tokens | Cost (USD) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for g in groups {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&g.group),
            g.tasks,
            g.units,
            g.secure,
            g.not_secure,
            g.failed,
            python_float_str(g.secure_pct),
            g.verdict_secure,
            g.verdict_vulnerable,
            g.verdict_broken,
            python_float_str(g.verdict_secure_pct),
            g.total_tokens,
            python_float_str(g.cost_usd)
        );
    }
    out
}

/// Units per type, CWE, language and outcome (nothing when the report lists no unit).
fn breakdown_markdown(b: &Breakdown) -> String {
    if b.outcomes.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## Units by group\n\nSecure / not secure / failed are upstream-compatible; the \
         `(ours)` columns are our verdicts.\n",
    );
    out += &tally_table("By vulnerability type", "Type", &b.by_type);
    out += &tally_table("By CWE", "CWE", &b.by_cwe);
    out += &tally_table("By language", "Language", &b.by_language);
    out += "\n### By outcome\n\n| Outcome | Units |\n|---|---:|\n";
    for (kind, n) in &b.outcomes {
        out += &format!("| {} | {n} |\n", kind.label());
    }
    out
}

/// The files `write_report` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub units_jsonl: PathBuf,
    pub units_csv: PathBuf,
}

/// Every report file but `report.json`, by name, rendered from the (redacted) report: the one
/// list `write_report` and the coordinator's finish both write.
pub fn rendered_files(report: &Report) -> [(&'static str, String); 4] {
    [
        (REPORT_MD, render_markdown(report)),
        (REPORT_HTML, html::render_html(report)),
        (export::UNITS_JSONL, export::units_jsonl(report)),
        (export::UNITS_CSV, export::units_csv(report)),
    ]
}

/// Writes `dir/report.json`, `report.md`, `report.html`, `units.jsonl` and `units.csv`
/// (creating `dir`), redacted.
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
        html: dir.join(REPORT_HTML),
        units_jsonl: dir.join(export::UNITS_JSONL),
        units_csv: dir.join(export::UNITS_CSV),
    };
    let json = serde_json::to_string_pretty(&report).expect("a report serialises to JSON");
    std::fs::write(&files.json, json + "\n").map_err(err(&files.json))?;
    for (name, text) in rendered_files(&report) {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(err(&path))?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
