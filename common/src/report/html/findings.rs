//! The v1 scans' findings per task, read against the masked region: the baseline's (the
//! original code) and each unit's, so that a reader sees whether the finding that counts is
//! the masked block's or one elsewhere in the tree, and which files did not parse.

use super::{escape, int, json_pointer, text, MAX_NAME_CHARS};
use crate::scan_findings::{FindingAt, TaskFindings};
use std::fmt::Write;

/// Tasks shown; the rest are counted in a note (report.json has them all).
pub const MAX_FINDING_TASKS: usize = 500;
/// Finding rows shown over the whole section.
pub const MAX_FINDING_ROWS: usize = 5000;

fn row(out: &mut String, t: &TaskFindings, scan: &str, key: &[String], f: &FindingAt) {
    let inside = t.in_masked_region(f);
    let k = |field: &str| {
        let mut segments = key.to_vec();
        segments.push(field.to_string());
        json_pointer(&segments)
    };
    let _ = writeln!(
        out,
        "<tr{}><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
        if inside { " class=\"in-mask\"" } else { "" },
        escape(scan),
        text(&k("rule"), &f.rule, MAX_NAME_CHARS),
        text(&k("path"), &f.path, 2 * MAX_NAME_CHARS),
        int(&k("line"), f.line),
        if inside { "inside" } else { "outside" },
    );
}

pub(super) fn findings_section(findings: &[TaskFindings]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<section id=\"findings\">\n<h2>Findings (v1 scans)</h2>\n<p class=\"note\">Each counted \
         finding (rule, file, line) of the original code (baseline) and of each unit, and whether \
         it lies in the masked region of the masked file. A unit's answer can move the lines \
         after it, so for units the region is a guide.</p>\n",
    );
    let mut rows = 0usize;
    for (ti, t) in findings.iter().take(MAX_FINDING_TASKS).enumerate() {
        let tk =
            |field: &str| json_pointer(&["findings".to_string(), ti.to_string(), field.into()]);
        let inside = t.baseline.iter().filter(|f| t.in_masked_region(f)).count();
        let _ = writeln!(
            out,
            "<details id=\"findings-{ti}\"><summary>{} — <span class=\"mono\">{}</span> lines {}–{}: baseline {} findings, {inside} in the masked region</summary>",
            text(&tk("instance_id"), &t.instance_id, MAX_NAME_CHARS),
            text(&tk("vuln_file"), &t.vuln_file, 2 * MAX_NAME_CHARS),
            int(&tk("masked_start"), t.masked_start),
            int(&tk("masked_end"), t.masked_end),
            t.baseline.len(),
        );
        out += "<table class=\"findings\"><thead><tr><th>Scan</th><th>Rule</th><th>File</th><th>Line</th><th>Masked region</th></tr></thead><tbody>\n";
        for (fi, f) in t.baseline.iter().enumerate() {
            if rows >= MAX_FINDING_ROWS {
                break;
            }
            rows += 1;
            let key = [
                "findings".into(),
                ti.to_string(),
                "baseline".into(),
                fi.to_string(),
            ];
            row(&mut out, t, "baseline", &key, f);
        }
        for (ui, u) in t.units.iter().enumerate() {
            let name = u.unit.dir_name();
            if u.findings.is_empty() {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td colspan=\"4\" class=\"na\">no finding</td></tr>",
                    escape(&name)
                );
            }
            for (fi, f) in u.findings.iter().enumerate() {
                if rows >= MAX_FINDING_ROWS {
                    break;
                }
                rows += 1;
                let key = [
                    "findings".into(),
                    ti.to_string(),
                    "units".into(),
                    ui.to_string(),
                    "findings".into(),
                    fi.to_string(),
                ];
                row(&mut out, t, &name, &key, f);
            }
            for (pi, p) in u.unparsable.iter().enumerate() {
                let key = json_pointer(&[
                    "findings".to_string(),
                    ti.to_string(),
                    "units".into(),
                    ui.to_string(),
                    "unparsable".into(),
                    pi.to_string(),
                ]);
                let _ = writeln!(
                    out,
                    "<tr class=\"unparsable\"><td>{}</td><td colspan=\"4\">does not parse: <span class=\"mono\">{}</span> (broken in our verdict)</td></tr>",
                    escape(&name),
                    text(&key, p, 2 * MAX_NAME_CHARS),
                );
            }
        }
        out += "</tbody></table>\n";
        if t.findings_cut {
            out += "<p class=\"note\">Some scans had more findings than a record keeps.</p>\n";
        }
        out += "</details>\n";
    }
    if findings.len() > MAX_FINDING_TASKS {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more tasks are not shown; report.json lists them.</p>",
            findings.len() - MAX_FINDING_TASKS
        );
    }
    if rows >= MAX_FINDING_ROWS {
        out += "<p class=\"note\">Finding rows were cut; report.json lists them all.</p>\n";
    }
    out += "</section>\n";
    out
}
