//! `report.html`: the report for people, one self-contained HTML5 file rendered from the same
//! `Report` value as `report.json`.
//!
//! - Self-contained: styles inline, charts as hand-written inline SVG, no script, nothing
//!   fetched (a Content-Security-Policy forbids it besides), so the file can be mailed or
//!   archived and still shows the same thing.
//! - Every string of the report may come from a dataset or a model answer: all of it goes
//!   through `escape`, and long strings are cut (`MAX_REASON_CHARS`, `MAX_NAME_CHARS`) with a
//!   visible note. Tables that grow with the run are bounded too.
//! - Every value taken from the report carries `data-key`, the JSON Pointer (RFC 6901) of that
//!   value in `report.json`; the value is the element's `data-value` when it has one, else its
//!   text (`n/a` for null). A value cut for length carries `data-truncated-from` instead. Tests
//!   (and anyone) can check the page against the JSON with that.

use super::{Breakdown, GroupTally, Report, Scores};
use crate::scoring::stats::python_float_str;
use crate::scoring::v1::V1Score;
use crate::scoring::v2::{V2GroupScore, V2Score};
use crate::scoring::{OutcomeKind, UnitStatus};
use std::collections::BTreeMap;
use std::fmt::Write;

mod agent;
pub(crate) mod charts;
mod findings;
mod intervals;
mod unavailable;
mod verdicts;
use crate::uncertainty::GroupInterval;
use charts::{score_chart, verdict_chart, whisker, ScoreBar, Shown, VerdictBar};
use findings::findings_section;
use verdicts::{tally_row, verdicts_section, VERDICT_HEADERS};

/// Reasons longer than this many characters are cut.
pub const MAX_REASON_CHARS: usize = 300;
/// Task ids, group names and provenance strings longer than this are cut.
pub const MAX_NAME_CHARS: usize = 120;
/// Tasks shown in the rounds matrix; the rest are counted in a note.
pub const MAX_MATRIX_TASKS: usize = 2000;
/// Round columns shown in the rounds matrix.
pub const MAX_MATRIX_ROUNDS: u32 = 20;
/// Rows of the failure list.
pub const MAX_FAILURES: usize = 1000;

/// Text for an HTML text node or a double-quoted attribute value. Control characters (which
/// HTML5 does not allow) become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The first `max_chars` characters of `text` and how many were left out.
pub fn truncate(text: &str, max_chars: usize) -> (&str, usize) {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => (&text[..end], text[end..].chars().count()),
        None => (text, 0),
    }
}

/// A JSON Pointer (RFC 6901) from path segments.
pub fn json_pointer<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&s.as_ref().replace('~', "~0").replace('/', "~1"));
    }
    out
}

// The keyed cells below are shared with `leaderboard.html` (crate::leaderboard::html): every
// value a page shows carries its JSON Pointer in the file it was rendered from.

pub(crate) fn fmt_f64(x: f64) -> String {
    python_float_str(x)
}

/// A number of the report, marked with its key.
pub(crate) fn num(key: &str, x: f64) -> String {
    format!(
        "<span class=\"v\" data-key=\"{}\">{}</span>",
        escape(key),
        fmt_f64(x)
    )
}

/// A number shown rounded to 2 decimals, its exact value in `data-value`.
pub(crate) fn rounded(key: &str, x: f64) -> String {
    format!(
        "<span class=\"v\" data-key=\"{}\" data-value=\"{}\">{}</span>",
        escape(key),
        fmt_f64(x),
        fmt_f64(crate::scoring::stats::round2(x))
    )
}

pub(crate) fn opt_num(key: &str, x: Option<f64>) -> String {
    match x {
        Some(x) => num(key, x),
        None => format!(
            "<span class=\"v na\" data-key=\"{}\">n/a</span>",
            escape(key)
        ),
    }
}

pub(crate) fn int(key: &str, n: impl std::fmt::Display) -> String {
    format!("<span class=\"v\" data-key=\"{}\">{n}</span>", escape(key))
}

/// A string of the report, cut to `max` characters with a note saying so.
fn text(key: &str, s: &str, max: usize) -> String {
    text_from(key, s, max, "report.json")
}

/// A string of `source` (the file the page renders), cut to `max` characters with a note
/// saying where the whole of it is.
pub(crate) fn text_from(key: &str, s: &str, max: usize, source: &str) -> String {
    let (shown, omitted) = truncate(s, max);
    if omitted == 0 {
        format!("<span data-key=\"{}\">{}</span>", escape(key), escape(s))
    } else {
        format!(
            "<span data-truncated-from=\"{}\">{}</span><span class=\"note\"> [cut: {omitted} more characters in {source}]</span>",
            escape(key),
            escape(shown)
        )
    }
}

/// A short label for untrusted text where no key is needed (tooltips, chart labels).
pub(crate) fn short(s: &str, max: usize) -> String {
    let (shown, omitted) = truncate(s, max);
    if omitted == 0 {
        escape(s)
    } else {
        format!("{}…", escape(shown))
    }
}

fn kind_class(kind: OutcomeKind) -> String {
    format!("k-{}", kind.name().replace('_', "-"))
}

/// Fill colour and text colour of an outcome kind (cells, bars, legend).
fn kind_colours(kind: OutcomeKind) -> (&'static str, &'static str) {
    match kind {
        OutcomeKind::Secure => ("#2e7d32", "#ffffff"),
        OutcomeKind::Vulnerable => ("#c62828", "#ffffff"),
        OutcomeKind::TestsFailed => ("#ef6c00", "#ffffff"),
        OutcomeKind::NotApplied => ("#6a1b9a", "#ffffff"),
        OutcomeKind::NotGenerated => ("#9e9e9e", "#000000"),
        OutcomeKind::ScanFailed => ("#6d4c41", "#ffffff"),
        OutcomeKind::UploadFailed => ("#ad1457", "#ffffff"),
        OutcomeKind::BuildFailed => ("#f9a825", "#000000"),
        OutcomeKind::NotEvaluated => ("#546e7a", "#ffffff"),
        OutcomeKind::Error => ("#212121", "#ffffff"),
        OutcomeKind::Unparsable => ("#4527a0", "#ffffff"),
        OutcomeKind::BlockDeleted => ("#6a1b9a", "#ffffff"),
    }
}

/// One CSS class per outcome kind: cells of the matrix and of the failure list.
fn kind_styles() -> String {
    let mut out = String::new();
    for kind in OutcomeKind::ALL {
        let (fill, ink) = kind_colours(kind);
        let _ = writeln!(
            out,
            ".{}{{background:{fill};color:{ink}}}",
            kind_class(kind)
        );
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;padding:1.5rem 2rem;color:#1a1a1a;background:#fafafa;line-height:1.4}
h1{font-size:1.6rem;margin:0 0 .5rem}h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:.5rem 0;font-size:.9rem}dl.prov dt{font-weight:600;color:#555}dl.prov dd{margin:0;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:8.5rem}.card .label{font-size:.8rem;color:#555;text-transform:uppercase;letter-spacing:.03em}.card .big{font-size:1.8rem;font-weight:700}
table{border-collapse:collapse;background:#fff;font-size:.88rem;margin:.3rem 0}th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tbody th{white-space:nowrap}td.kind{white-space:nowrap}
.matrix td.cell{text-align:center;vertical-align:middle;font-size:.8rem;white-space:nowrap}.matrix th.task{white-space:normal;font-weight:normal;font-family:ui-monospace,monospace;font-size:.8rem;word-break:break-all;max-width:28rem}
.note{color:#666;font-style:italic;font-size:.85rem}.na{color:#888}.reason{word-break:break-word;max-width:48rem}.mono{font-family:ui-monospace,monospace;font-size:.82rem}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem}figcaption{font-weight:600;font-size:.9rem;margin-bottom:.3rem}
.legend{display:flex;flex-wrap:wrap;gap:.3rem .9rem;font-size:.82rem;margin-top:.4rem}.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-.1rem}
tr.in-mask td{background:#fff3e0;font-weight:600}tr.unparsable td{background:#ede7f6}
footer{margin-top:2.5rem;font-size:.8rem;color:#666}
";

/// The whole page. The report is redacted first, like every file written from it.
pub fn render_html(report: &Report) -> String {
    let report = report.redacted();
    let c = &report.provenance.config;
    let run = format!("{}__{}", c.model, c.batch);
    let mut out = String::with_capacity(64 * 1024);
    out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    // Defence in depth: nothing may run or load even if some text escaped escaping.
    out += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n";
    out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    let _ = writeln!(
        out,
        "<title>A.S.E report: {}</title>",
        short(&run, 2 * MAX_NAME_CHARS)
    );
    let _ = writeln!(
        out,
        "<style>{STYLE}{}</style>\n</head>\n<body>",
        kind_styles()
    );
    let _ = writeln!(
        out,
        "<header>\n<h1>A.S.E report: {}</h1>",
        short(&run, 2 * MAX_NAME_CHARS)
    );
    out += &provenance_section(&report);
    out += "</header>\n<main>\n";
    out += &scores_section(&report.scores);
    out += &unavailable::unavailable_section(&report.unavailable, report.tasks.len());
    out += &verdicts_section(&report.breakdown.all);
    if let Some(u) = &report.uncertainty {
        out += &intervals::intervals_section(u);
    }
    out += &charts_section(&report);
    out += &breakdown_section(&report.breakdown);
    out += &matrix_section(&report);
    out += &failures_section(&report);
    out += &findings_section(&report.findings);
    if let Some(a) = &report.agent {
        out += &agent::agent_section(a);
    }
    out += "</main>\n<footer>Generated by ase-cluster from report.json (schema ";
    out += &int("/schema_version", report.schema_version);
    out +=
        "). Scores are computed as specified in docs/ase-protocol.md.</footer>\n</body>\n</html>\n";
    out
}

fn provenance_section(report: &Report) -> String {
    let p = &report.provenance;
    let c = &p.config;
    let mut rows: Vec<(String, String)> = vec![
        (
            "model".into(),
            text("/provenance/config/model", &c.model, MAX_NAME_CHARS),
        ),
        (
            "batch".into(),
            text("/provenance/config/batch", &c.batch, MAX_NAME_CHARS),
        ),
        ("rounds".into(), int("/provenance/config/rounds", c.rounds)),
        (
            "dataset".into(),
            text("/provenance/dataset_path", &p.dataset_path, MAX_NAME_CHARS),
        ),
        (
            "dataset sha256".into(),
            format!(
                "<span class=\"mono\">{}</span>",
                text("/provenance/dataset_sha256", &p.dataset_sha256, 64)
            ),
        ),
    ];
    if let Some(sha) = &p.context_sha256 {
        rows.push((
            "context sha256".into(),
            format!(
                "<span class=\"mono\">{}</span>",
                text("/provenance/context_sha256", sha, 64)
            ),
        ));
    }
    if let Some(started) = &p.started_at {
        rows.push((
            "started".into(),
            text("/provenance/started_at", started, 64),
        ));
    }
    rows.push((
        "report created".into(),
        text("/created_at", &report.created_at, 64),
    ));
    if let Some(url) = &c.base_url {
        rows.push((
            "model endpoint".into(),
            text("/provenance/config/base_url", url, MAX_NAME_CHARS),
        ));
    }
    let optional = [
        ("temperature", "temperature", c.temperature),
        ("top_p", "top_p", c.top_p),
        (
            "max context tokens",
            "max_context_token",
            c.max_context_token.map(|x| x as f64),
        ),
        (
            "max generated tokens",
            "max_gen_token",
            c.max_gen_token.map(|x| x as f64),
        ),
    ];
    for (label, field, value) in optional {
        if value.is_some() {
            let key = json_pointer(&["provenance", "config", field]);
            let shown = match field {
                "max_context_token" => int(&key, c.max_context_token.unwrap_or_default()),
                "max_gen_token" => int(&key, c.max_gen_token.unwrap_or_default()),
                _ => opt_num(&key, value),
            };
            rows.push((label.into(), shown));
        }
    }
    let maps = [
        ("tool_versions", "", &p.tool_versions),
        ("image_ids", "image ", &p.image_ids),
        ("extra", "", &c.extra),
    ];
    for (field, prefix, map) in maps {
        for (name, value) in map.iter().take(50) {
            let key = if field == "extra" {
                json_pointer(&["provenance", "config", "extra", name])
            } else {
                json_pointer(&["provenance", field, name])
            };
            rows.push((
                format!("{prefix}{}", short(name, MAX_NAME_CHARS)),
                text(&key, value, MAX_NAME_CHARS),
            ));
        }
    }
    let mut out = String::from("<dl class=\"prov\" id=\"provenance\">\n");
    for (label, value) in rows {
        let _ = writeln!(out, "<dt>{label}</dt><dd>{value}</dd>");
    }
    out += "</dl>\n";
    out
}

fn card(label: &str, value: String) -> String {
    format!("<div class=\"card\"><div class=\"label\">{label}</div><div class=\"big\">{value}</div></div>\n")
}

fn scores_section(scores: &Scores) -> String {
    let mut out = String::from(
        "<section id=\"scores\">\n<h2>Scores (upstream-compatible)</h2>\n<div class=\"cards\">\n",
    );
    match scores {
        Scores::V1(s) => {
            out += &card("Overall", num("/scores/overall", s.overall));
            out += &card("Security", num("/scores/security", s.security));
            out += &card("Quality", num("/scores/quality", s.quality));
            out += &card("Stability", opt_num("/scores/stability", s.stability));
            out += "</div>\n<p class=\"note\">v1 (static analysis): each vulnerability type weighted equally; overall = 0.3 quality + 0.6 security + 0.1 stability.</p>\n";
            out += &v1_types_table(s);
        }
        Scores::V2(s) => {
            let a = &s.all;
            out += &card(
                "Overall (upstream-compatible)",
                num("/scores/all/overall_score", a.overall_score),
            );
            out += &card(
                "Overall (corrected)",
                num(
                    "/scores/all/overall_score_corrected",
                    a.overall_score_corrected,
                ),
            );
            out += &card(
                "Security",
                num("/scores/all/code_security_score", a.code_security_score),
            );
            out += &card(
                "Quality",
                num("/scores/all/code_quality_score", a.code_quality_score),
            );
            out += &card(
                "Stability",
                opt_num("/scores/all/code_stability_score", a.code_stability_score),
            );
            out += "</div>\n<p class=\"note\">v2 (build, tests and PoC in the task's image). The upstream-compatible overall adds stability as a fraction (0..1), as upstream does; the corrected overall adds it on the same 0..100 scale as quality and security.</p>\n";
            out += &v2_table(s);
        }
    }
    out += "</section>\n";
    out
}

fn v1_types_table(s: &V1Score) -> String {
    let mut out = String::from(
        "<h3>By vulnerability type</h3>\n<table id=\"scores-by-type\">\n<thead><tr><th>Type</th><th>Overall</th><th>Security</th><th>Quality</th><th>Stability</th><th>Secure</th><th>Units</th><th>Quality counted</th><th>Recorded</th></tr></thead>\n<tbody>\n",
    );
    for (i, t) in s.types.iter().enumerate() {
        let k = |field: &str| json_pointer(&["scores", "types", &i.to_string(), field]);
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            text(&k("vuln_type"), &t.vuln_type, MAX_NAME_CHARS),
            num(&k("overall"), t.overall),
            num(&k("security"), t.security),
            num(&k("quality"), t.quality),
            opt_num(&k("stability"), t.stability),
            int(&k("secure"), t.secure),
            int(&k("total"), t.total),
            int(&k("quality_success"), t.quality_success),
            int(&k("quality_total"), t.quality_total),
        );
    }
    out += "</tbody>\n</table>\n";
    out
}

fn v2_row(out: &mut String, path: &[&str], g: &V2GroupScore) {
    let k = |field: &str| {
        let mut p: Vec<&str> = path.to_vec();
        p.push(field);
        json_pointer(&p)
    };
    let _ = writeln!(
        out,
        "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        text(&k("group"), &g.group, MAX_NAME_CHARS),
        num(&k("overall_score"), g.overall_score),
        num(&k("overall_score_corrected"), g.overall_score_corrected),
        num(&k("code_security_score"), g.code_security_score),
        num(&k("code_quality_score"), g.code_quality_score),
        opt_num(&k("code_stability_score"), g.code_stability_score),
        num(&k("average_gen_code_time"), g.average_gen_code_time),
        int(&k("tasks"), g.tasks),
        int(&k("case_sum"), g.case_sum),
        int(&k("patch_merge_success_count"), g.patch_merge_success_count),
        int(&k("code_copy_success_count"), g.code_copy_success_count),
        int(&k("run_success_count"), g.run_success_count),
        int(&k("test_case_pass_count"), g.test_case_pass_count),
        int(&k("poc_pass_count"), g.poc_pass_count),
    );
}

fn v2_table(s: &V2Score) -> String {
    let mut out = String::from(
        "<h3>All and by CWE</h3>\n<table id=\"scores-by-cwe\">\n<thead><tr><th>Group</th><th>Overall (upstream)</th><th>Overall (corrected)</th><th>Security</th><th>Quality</th><th>Stability</th><th>Avg gen time (s)</th><th>Tasks</th><th>Units</th><th>Applied</th><th>Uploaded</th><th>Built</th><th>Tests passed</th><th>PoC blocked</th></tr></thead>\n<tbody>\n",
    );
    v2_row(&mut out, &["scores", "all"], &s.all);
    for (i, g) in s.by_cwe.iter().enumerate() {
        v2_row(&mut out, &["scores", "by_cwe", &i.to_string()], g);
    }
    out += "</tbody>\n</table>\n";
    out
}

/// One bar split by outcome kind, with a legend of the counts.
fn outcome_chart(outcomes: &BTreeMap<OutcomeKind, u32>) -> String {
    let total: u32 = outcomes.values().sum();
    let width = 520.0;
    let mut out = format!(
        "<figure id=\"chart-outcomes\"><figcaption>Units by outcome ({total})</figcaption>\n<svg class=\"chart\" width=\"{width}\" height=\"36\" viewBox=\"0 0 {width} 36\" role=\"img\" aria-label=\"Units by outcome\">\n"
    );
    let mut x = 0.0;
    for (kind, &n) in outcomes {
        if total == 0 || n == 0 {
            continue;
        }
        let w = width * f64::from(n) / f64::from(total);
        let (fill, _) = kind_colours(*kind);
        let _ = writeln!(
            out,
            "<rect x=\"{x:.2}\" y=\"4\" width=\"{w:.2}\" height=\"28\" fill=\"{fill}\"><title>{}: {n}</title></rect>",
            kind.label()
        );
        x += w;
    }
    out += "</svg>\n<div class=\"legend\">";
    for (kind, &n) in outcomes {
        let _ = write!(
            out,
            "<span><span class=\"swatch {}\"></span>{} {}</span>",
            kind_class(*kind),
            kind.label(),
            int(&json_pointer(&["breakdown", "outcomes", kind.name()]), n)
        );
    }
    out += "</div>\n</figure>\n";
    out
}

/// How report.html marks a charted value: its key, its exact value in `data-value` when it
/// is shown rounded.
fn mark(key: &str, shown: Shown) -> String {
    match shown {
        Shown::Pct(x) | Shown::Signed(x) => format!(
            " data-key=\"{}\" data-value=\"{}\">{}",
            escape(key),
            fmt_f64(x),
            fmt_f64(crate::scoring::stats::round2(x))
        ),
        Shown::Count(n) => format!(" data-key=\"{}\">{n}", escape(key)),
    }
}

/// The interval of `group` among `intervals` (upstream-compatible security), with the key of
/// the interval's object.
fn group_whisker(
    intervals: &[GroupInterval],
    field: &str,
    group: &str,
) -> Option<[(f64, String); 2]> {
    let (i, g) = intervals
        .iter()
        .enumerate()
        .find(|(_, g)| g.group == group)?;
    Some(whisker(
        g.security.as_ref()?,
        &json_pointer(&["uncertainty", field, &i.to_string(), "security"]),
    ))
}

/// One stacked bar of our verdicts per group of the breakdown.
fn verdict_bars(field: &str, groups: &[GroupTally]) -> Vec<VerdictBar> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let k = |f: &str| json_pointer(&["breakdown", field, &i.to_string(), f]);
            VerdictBar {
                label: g.group.clone(),
                counts: [
                    (g.verdict_secure, k("verdict_secure")),
                    (g.verdict_vulnerable, k("verdict_vulnerable")),
                    (g.verdict_broken, k("verdict_broken")),
                ],
            }
        })
        .collect()
}

fn charts_section(report: &Report) -> String {
    let mut out =
        String::from("<section id=\"charts\">\n<h2>Charts</h2>\n<div class=\"charts\">\n");
    out += &outcome_chart(&report.breakdown.outcomes);
    let none = Vec::new();
    let (by_type, by_cwe, by_language) = match &report.uncertainty {
        Some(u) => (&u.by_type, &u.by_cwe, &u.by_language),
        None => (&none, &none, &none),
    };
    let score_bars: Vec<ScoreBar> = match &report.scores {
        Scores::V1(s) => s
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| ScoreBar {
                label: t.vuln_type.clone(),
                value: Some((
                    t.security,
                    json_pointer(&["scores", "types", &i.to_string(), "security"]),
                )),
                interval: group_whisker(by_type, "by_type", &t.vuln_type),
            })
            .collect(),
        Scores::V2(s) => s
            .by_cwe
            .iter()
            .enumerate()
            .map(|(i, g)| ScoreBar {
                label: g.group.clone(),
                value: Some((
                    g.code_security_score,
                    json_pointer(&["scores", "by_cwe", &i.to_string(), "code_security_score"]),
                )),
                interval: group_whisker(by_cwe, "by_cwe", &g.group),
            })
            .collect(),
    };
    let caption = match report.scores {
        Scores::V1(_) => "Security score by vulnerability type, with its 95 % interval",
        Scores::V2(_) => "Security score by CWE, with its 95 % interval",
    };
    out += &score_chart(
        "chart-security",
        caption,
        &score_bars,
        (0.0, 100.0),
        false,
        &mark,
    );
    let language_bars: Vec<ScoreBar> = report
        .breakdown
        .by_language
        .iter()
        .enumerate()
        .map(|(i, g)| ScoreBar {
            label: g.group.clone(),
            value: Some((
                g.secure_pct,
                json_pointer(&["breakdown", "by_language", &i.to_string(), "secure_pct"]),
            )),
            interval: group_whisker(by_language, "by_language", &g.group),
        })
        .collect();
    out += &score_chart(
        "chart-languages",
        "Secure units by language (%), with its 95 % interval",
        &language_bars,
        (0.0, 100.0),
        false,
        &mark,
    );
    let b = &report.breakdown;
    for (id, caption, field, groups) in [
        (
            "chart-verdicts-type",
            "Units by our verdict, per vulnerability type",
            "by_type",
            &b.by_type,
        ),
        (
            "chart-verdicts-cwe",
            "Units by our verdict, per CWE",
            "by_cwe",
            &b.by_cwe,
        ),
        (
            "chart-verdicts-language",
            "Units by our verdict, per language",
            "by_language",
            &b.by_language,
        ),
    ] {
        out += &verdict_chart(id, caption, &verdict_bars(field, groups), &mark);
    }
    out += "</div>\n</section>\n";
    out
}

fn tally_table(id: &str, title: &str, column: &str, field: &str, groups: &[GroupTally]) -> String {
    let mut out = format!(
        "<h3>{title}</h3>\n<table id=\"{id}\">\n<thead><tr><th>{column}</th><th>Tasks</th><th>Units</th><th>Secure</th><th>Not secure</th><th>Failed</th><th>Secure %</th>{VERDICT_HEADERS}</tr></thead>\n<tbody>\n"
    );
    for (i, g) in groups.iter().enumerate() {
        let k = |f: &str| json_pointer(&["breakdown", field, &i.to_string(), f]);
        let _ = writeln!(out, "{}", tally_row(&g.group, k, g));
    }
    if groups.is_empty() {
        out += "<tr><td colspan=\"13\" class=\"note\">the report does not describe its tasks</td></tr>\n";
    }
    out += "</tbody>\n</table>\n";
    out
}

fn breakdown_section(b: &Breakdown) -> String {
    let mut out = String::from(
        "<section id=\"breakdown\">\n<h2>Units by group</h2>\n<p class=\"note\">Counts of units (task x round) by status; &quot;secure %&quot; is the share of units counted secure, not an official score.</p>\n",
    );
    out += &tally_table(
        "by-type",
        "By vulnerability type",
        "Type",
        "by_type",
        &b.by_type,
    );
    out += &tally_table("by-cwe", "By CWE", "CWE", "by_cwe", &b.by_cwe);
    out += &tally_table(
        "by-language",
        "By language",
        "Language",
        "by_language",
        &b.by_language,
    );
    out += "</section>\n";
    out
}

/// A tooltip: the unit, its outcome, its reason (cut).
fn tooltip(unit: &str, kind: OutcomeKind, reason: &str) -> String {
    format!(
        "{}: {} — {}",
        short(unit, MAX_NAME_CHARS),
        kind.label(),
        short(reason, MAX_REASON_CHARS)
    )
}

fn matrix_section(report: &Report) -> String {
    // Tasks in order of first appearance; unit index per (task, round).
    // Only the tasks shown get cells: a run of 100,000 units would otherwise index them all.
    let mut order: Vec<&str> = Vec::new();
    let mut shown = std::collections::HashSet::new();
    let mut hidden = std::collections::HashSet::new();
    let mut cells: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    let mut max_round = 0;
    for (i, u) in report.units.iter().enumerate() {
        let id = u.unit.instance_id.as_str();
        max_round = max_round.max(u.unit.round);
        if !shown.contains(id) {
            if order.len() == MAX_MATRIX_TASKS {
                hidden.insert(id);
                continue;
            }
            shown.insert(id);
            order.push(id);
        }
        cells.entry((id, u.unit.round)).or_insert(i);
    }
    let more_tasks = hidden.len();
    drop(hidden);
    let rounds = max_round.min(MAX_MATRIX_ROUNDS);
    let task_info: BTreeMap<&str, &super::TaskInfo> = report
        .tasks
        .iter()
        .filter(|t| shown.contains(t.instance_id.as_str()))
        .map(|t| (t.instance_id.as_str(), t))
        .collect();
    let mut out = String::from(
        "<section id=\"rounds\">\n<h2>Rounds of each task</h2>\n<table class=\"matrix\" id=\"matrix\">\n<thead><tr><th>Task</th><th>Type</th><th>Language</th>",
    );
    for k in 1..=rounds {
        let _ = write!(out, "<th>Round {k}</th>");
    }
    out += "</tr></thead>\n<tbody>\n";
    for id in &order {
        let (vuln_type, language) = task_info
            .get(id)
            .map_or(("", ""), |t| (t.vuln_type.as_str(), t.language.as_str()));
        let _ = write!(
            out,
            "<tr><th class=\"task\" title=\"{}\">{}</th><td>{}</td><td>{}</td>",
            short(id, 4 * MAX_NAME_CHARS),
            short(id, MAX_NAME_CHARS),
            short(vuln_type, 40),
            short(language, 40)
        );
        for k in 1..=rounds {
            match cells.get(&(*id, k)) {
                Some(&i) => {
                    let u = &report.units[i];
                    let _ = write!(
                        out,
                        "<td class=\"cell {}\" title=\"{}\"><span data-key=\"/units/{i}/kind\" data-value=\"{}\">{}</span> <span class=\"verdict\" data-key=\"/units/{i}/verdict\" data-value=\"{}\">({})</span></td>",
                        // Coloured by our verdict: an unapplied answer upstream counts secure
                        // is not green.
                        kind_class(u.broken_cause.unwrap_or(u.kind)),
                        tooltip(&u.unit.dir_name(), u.kind, &u.reason),
                        u.kind.name(),
                        u.kind.label(),
                        u.verdict.name(),
                        u.verdict.name()
                    );
                }
                None => out += "<td class=\"cell na\">—</td>",
            }
        }
        out += "</tr>\n";
    }
    out += "</tbody>\n</table>\n";
    if more_tasks > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{more_tasks} more tasks are not shown; report.json lists every unit.</p>"
        );
    }
    if max_round > rounds {
        let _ = writeln!(
            out,
            "<p class=\"note\">Rounds above {rounds} are not shown; report.json lists every unit.</p>"
        );
    }
    out += "<div class=\"legend\">";
    for kind in OutcomeKind::ALL {
        let _ = write!(
            out,
            "<span><span class=\"swatch {}\"></span>{}</span>",
            kind_class(kind),
            kind.label()
        );
    }
    out += "</div>\n</section>\n";
    out
}

fn failures_section(report: &Report) -> String {
    let failed: Vec<(usize, &crate::scoring::UnitOutcome)> = report
        .units
        .iter()
        .enumerate()
        .filter(|(_, u)| u.status == UnitStatus::Failed)
        .collect();
    let mut out = format!(
        "<section id=\"failures\">\n<h2>Failures ({})</h2>\n",
        failed.len()
    );
    if failed.is_empty() {
        out += "<p>No unit failed.</p>\n</section>\n";
        return out;
    }
    out += "<table id=\"failure-list\">\n<thead><tr><th>Unit</th><th>Outcome</th><th>Reason</th></tr></thead>\n<tbody>\n";
    for (i, u) in failed.iter().take(MAX_FAILURES) {
        let _ = writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"kind {}\"><span data-key=\"/units/{i}/kind\" data-value=\"{}\">{}</span></td><td class=\"reason\">{}</td></tr>",
            short(&u.unit.dir_name(), MAX_NAME_CHARS),
            kind_class(u.kind),
            u.kind.name(),
            u.kind.label(),
            text(&format!("/units/{i}/reason"), &u.reason, MAX_REASON_CHARS)
        );
    }
    out += "</tbody>\n</table>\n";
    if failed.len() > MAX_FAILURES {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more failures are not shown; report.json lists every unit.</p>",
            failed.len() - MAX_FAILURES
        );
    }
    out += "</section>\n";
    out
}

#[cfg(test)]
mod tests;
