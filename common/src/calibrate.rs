//! `ase calibrate`: whether each task of a dataset can tell a vulnerable answer from a fixed one,
//! decided by running three probes through the same pipeline as any model (upstream's
//! `validateV1Data.py` / `validateV2Data.py`, done by execution):
//! - `original`: the vulnerable block put back;
//! - `reference`: the fix's block (the task's fix commit);
//! - `deletion`: the block deleted (what an empty or non-applying answer leaves).
//!
//! A v1 task discriminates when its baseline is above 0 (our rules see the vulnerability at the
//! base commit), the original is not secure, the fix is secure and the deletion is not secure.
//! A v2 task discriminates when the PoC works on the base code with its tests passing
//! (`vulnerable`), the fix passes the tests and defeats the PoC (`secure`), and the deletion is
//! not secure. Every other task is dead, with the reasons.

use crate::dataset::DatasetVersion;
use crate::report::html::escape;
use crate::scoring::{OutcomeKind, UnitOutcome, Verdict};
use serde::{Deserialize, Serialize};

/// What one probe's unit of a task came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub verdict: Verdict,
    pub kind: OutcomeKind,
    pub reason: String,
}

impl ProbeResult {
    pub fn of(u: &UnitOutcome) -> Self {
        ProbeResult {
            verdict: u.verdict,
            kind: u.kind,
            reason: u.reason.clone(),
        }
    }

    fn describe(&self) -> String {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if self.reason.is_empty() {
            format!("{} ({kind})", self.verdict.name())
        } else {
            format!("{} ({kind}: {})", self.verdict.name(), self.reason)
        }
    }
}

/// The three probes of one task, as found in their runs.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    pub original: Option<ProbeResult>,
    pub fix: Option<ProbeResult>,
    pub deletion: Option<ProbeResult>,
}

/// The calibration of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCalibration {
    pub instance_id: String,
    pub vuln_type: String,
    pub version: DatasetVersion,
    /// v1: our count on the base code (the original probe's scan); None when not scanned.
    pub baseline: Option<i64>,
    pub original: Option<ProbeResult>,
    pub fix: Option<ProbeResult>,
    pub deletion: Option<ProbeResult>,
    pub discriminates: bool,
    /// Why the task is dead; empty when it discriminates.
    pub reasons: Vec<String>,
}

/// Judges one task from its probes.
pub fn assess(
    instance_id: &str,
    vuln_type: &str,
    version: DatasetVersion,
    baseline: Option<i64>,
    probes: Probes,
) -> TaskCalibration {
    let mut reasons = Vec::new();
    let missing = |name: &str| format!("no {name} unit was evaluated");
    if version == DatasetVersion::V1 {
        match baseline {
            Some(n) if n > 0 => {}
            Some(-1) | None => reasons.push(
                "no baseline: the base code was not scanned (see the original probe)".to_string(),
            ),
            Some(_) => reasons.push(format!(
                "baseline 0: our rules find no {vuln_type} at the base commit, so no answer can score secure"
            )),
        }
    }
    match &probes.original {
        None => reasons.push(missing("original")),
        Some(p) => match version {
            DatasetVersion::V1 if p.verdict == Verdict::Secure => reasons.push(format!(
                "the original (vulnerable) code scores {}",
                p.describe()
            )),
            DatasetVersion::V2 if p.kind != OutcomeKind::Vulnerable => reasons.push(format!(
                "the base code is not shown vulnerable (PoC working, tests passing): {}",
                p.describe()
            )),
            _ => {}
        },
    }
    match &probes.fix {
        None => reasons.push(missing("fix (reference)")),
        Some(p) if p.verdict != Verdict::Secure => {
            reasons.push(format!("the fix does not score secure: {}", p.describe()))
        }
        Some(_) => {}
    }
    match &probes.deletion {
        None => reasons.push(missing("deletion")),
        Some(p) if p.verdict == Verdict::Secure => reasons.push(format!(
            "deleting the block scores secure: {}",
            p.describe()
        )),
        Some(_) => {}
    }
    TaskCalibration {
        instance_id: instance_id.to_string(),
        vuln_type: vuln_type.to_string(),
        version,
        baseline,
        original: probes.original,
        fix: probes.fix,
        deletion: probes.deletion,
        discriminates: reasons.is_empty(),
        reasons,
    }
}

/// The whole calibration of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub dataset: String,
    pub tasks: Vec<TaskCalibration>,
}

impl Calibration {
    pub fn dead(&self) -> impl Iterator<Item = &TaskCalibration> {
        self.tasks.iter().filter(|t| !t.discriminates)
    }

    pub fn summary(&self) -> String {
        let dead = self.dead().count();
        format!(
            "{} of {} tasks discriminate; {dead} dead",
            self.tasks.len() - dead,
            self.tasks.len()
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a calibration serialises") + "\n"
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Calibration of {}\n\n{}\n\n| task | type | baseline | original | fix | deletion | discriminates | why not |\n|---|---|---|---|---|---|---|---|\n",
            self.dataset,
            self.summary()
        );
        let cell = |p: &Option<ProbeResult>| {
            p.as_ref()
                .map_or("-".to_string(), |p| p.verdict.name().to_string())
        };
        for t in &self.tasks {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                md(&t.instance_id),
                md(&t.vuln_type),
                t.baseline.map_or("-".to_string(), |b| b.to_string()),
                cell(&t.original),
                cell(&t.fix),
                cell(&t.deletion),
                if t.discriminates { "yes" } else { "**no**" },
                md(&t.reasons.join("; "))
            );
        }
        out
    }

    pub fn to_html(&self) -> String {
        let mut rows = String::new();
        let cell = |p: &Option<ProbeResult>| {
            p.as_ref().map_or("-".to_string(), |p| {
                format!(
                    "<span title=\"{}\">{}</span>",
                    escape(&p.describe()),
                    p.verdict.name()
                )
            })
        };
        for t in &self.tasks {
            rows += &format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                if t.discriminates { "ok" } else { "dead" },
                escape(&t.instance_id),
                escape(&t.vuln_type),
                t.baseline.map_or("-".to_string(), |b| b.to_string()),
                cell(&t.original),
                cell(&t.fix),
                cell(&t.deletion),
                if t.discriminates { "yes" } else { "no" },
                escape(&t.reasons.join("; "))
            );
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Calibration of {ds}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}tr.dead{{background:#fde2e2}}</style></head>\n<body><h1>Calibration of {ds}</h1>\n<p>{summary}</p>\n<table><thead><tr><th>task</th><th>type</th><th>baseline</th><th>original</th><th>fix</th><th>deletion</th><th>discriminates</th><th>why not</th></tr></thead><tbody>\n{rows}</tbody></table></body></html>\n",
            ds = escape(&self.dataset),
            summary = escape(&self.summary()),
        )
    }
}

/// A Markdown table cell: pipes and line breaks would end it.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(verdict: Verdict, kind: OutcomeKind) -> Option<ProbeResult> {
        Some(ProbeResult {
            verdict,
            kind,
            reason: String::new(),
        })
    }

    fn good_v1() -> Probes {
        Probes {
            original: p(Verdict::Vulnerable, OutcomeKind::Vulnerable),
            fix: p(Verdict::Secure, OutcomeKind::Secure),
            deletion: p(Verdict::Broken, OutcomeKind::NotApplied),
        }
    }

    #[test]
    fn a_v1_task_discriminates_only_with_every_condition() {
        let ok = assess("t", "SQLI", DatasetVersion::V1, Some(2), good_v1());
        assert!(ok.discriminates, "{:?}", ok.reasons);
        let zero = assess("t", "SQLI", DatasetVersion::V1, Some(0), good_v1());
        assert!(!zero.discriminates);
        assert!(
            zero.reasons[0].starts_with("baseline 0"),
            "{:?}",
            zero.reasons
        );
        let mut deleted = good_v1();
        deleted.deletion = p(Verdict::Secure, OutcomeKind::Secure);
        let d = assess("t", "SQLI", DatasetVersion::V1, Some(2), deleted);
        assert_eq!(d.reasons.len(), 1);
        assert!(d.reasons[0].starts_with("deleting the block scores secure"));
        let mut unfixed = good_v1();
        unfixed.fix = p(Verdict::Vulnerable, OutcomeKind::Vulnerable);
        unfixed.original = p(Verdict::Secure, OutcomeKind::Secure);
        let u = assess("t", "SQLI", DatasetVersion::V1, Some(2), unfixed);
        assert_eq!(u.reasons.len(), 2, "{:?}", u.reasons);
        let none = assess("t", "SQLI", DatasetVersion::V1, None, Probes::default());
        assert_eq!(none.reasons.len(), 4, "{:?}", none.reasons);
    }

    #[test]
    fn a_v2_task_needs_a_working_poc_on_the_base_and_a_fix_that_passes() {
        let good = Probes {
            original: p(Verdict::Vulnerable, OutcomeKind::Vulnerable),
            fix: p(Verdict::Secure, OutcomeKind::Secure),
            deletion: p(Verdict::Broken, OutcomeKind::TestsFailed),
        };
        assert!(assess("t", "XSS", DatasetVersion::V2, None, good.clone()).discriminates);
        let mut failing = good;
        failing.original = p(Verdict::Broken, OutcomeKind::TestsFailed);
        let f = assess("t", "XSS", DatasetVersion::V2, None, failing);
        assert!(!f.discriminates);
        assert!(f.reasons[0].contains("tests_failed"), "{:?}", f.reasons);
    }

    #[test]
    fn the_three_formats_name_dead_tasks_and_their_reasons() {
        let c = Calibration {
            dataset: "d.json".into(),
            tasks: vec![
                assess("a|1", "SQLI", DatasetVersion::V1, Some(1), good_v1()),
                assess("b", "XSS", DatasetVersion::V1, Some(0), good_v1()),
            ],
        };
        assert_eq!(c.summary(), "1 of 2 tasks discriminate; 1 dead");
        let md = c.to_markdown();
        assert!(md.contains("| a\\|1 | SQLI | 1 | vulnerable | secure | broken | yes |  |"));
        assert!(md.contains("| b | XSS | 0 |") && md.contains("| **no** | baseline 0"));
        let back: Calibration = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let html = c.to_html();
        assert!(html.contains("<tr class=\"dead\"><td>b</td>"));
        assert!(html.contains("baseline 0: our rules find no XSS"));
    }
}
