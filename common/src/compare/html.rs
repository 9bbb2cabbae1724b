//! A comparison as one self-contained HTML page (no script, no external resource). Every
//! number carries `data-key`, the JSON pointer of its value in compare.json, and `data-fmt`,
//! how it was formatted (`pct`: 2 decimals, `signed`: 2 decimals with a sign, `p`:
//! `markdown::p_text`, `int`), so a test can check the page against the JSON.

use super::markdown::p_text;
use super::{Comparison, GroupDelta, PairComparison, Side};
use crate::report::html::charts::{
    score_chart, verdict_chart, whisker, ScoreBar, Shown, VerdictBar,
};
use crate::report::html::escape;

/// How compare.html marks a charted value: as its table cells are (`data-fmt`).
fn mark(key: &str, shown: Shown) -> String {
    match shown {
        Shown::Pct(x) => format!(" data-key=\"{key}\" data-fmt=\"pct\">{x:.2}"),
        Shown::Signed(x) => format!(" data-key=\"{key}\" data-fmt=\"signed\">{x:+.2}"),
        Shown::Count(n) => format!(" data-key=\"{key}\" data-fmt=\"int\">{n}"),
    }
}

/// The pair's delta B - A overall and per type, CWE and language, each with its interval.
fn delta_chart(i: usize, p: &PairComparison) -> String {
    let k = format!("/pairs/{i}");
    let mut bars = vec![ScoreBar {
        label: "all tasks".into(),
        value: Some((p.delta.estimate, format!("{k}/delta/estimate"))),
        interval: Some(whisker(&p.delta, &format!("{k}/delta"))),
    }];
    for (field, title, groups) in [
        ("by_type", "type", &p.by_type),
        ("by_cwe", "CWE", &p.by_cwe),
        ("by_language", "language", &p.by_language),
    ] {
        for (j, g) in groups.iter().enumerate() {
            let gk = format!("{k}/{field}/{j}");
            bars.push(ScoreBar {
                label: format!("{title} {}", g.group),
                value: Some((g.delta, format!("{gk}/delta"))),
                interval: Some([
                    (g.delta_low, format!("{gk}/delta_low")),
                    (g.delta_high, format!("{gk}/delta_high")),
                ]),
            });
        }
    }
    score_chart(
        &format!("chart-pair-{i}"),
        "Security delta B - A (points), with its 95 % interval",
        &bars,
        (-100.0, 100.0),
        true,
        &mark,
    )
}

/// Each run's units by our verdict, and its security with its interval.
fn run_charts(c: &Comparison) -> String {
    let verdicts: Vec<VerdictBar> = c
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let k = |f: &str| format!("/runs/{i}/verdicts/{f}");
            VerdictBar {
                label: r.label.clone(),
                counts: [
                    (r.verdicts.secure, k("secure")),
                    (r.verdicts.vulnerable, k("vulnerable")),
                    (r.verdicts.broken, k("broken")),
                ],
            }
        })
        .collect();
    let security: Vec<ScoreBar> = c
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let k = format!("/runs/{i}/uncertainty/security");
            ScoreBar {
                label: r.label.clone(),
                value: r
                    .uncertainty
                    .security
                    .map(|s| (s.estimate, format!("{k}/estimate"))),
                interval: r.uncertainty.security.map(|s| whisker(&s, &k)),
            }
        })
        .collect();
    verdict_chart(
        "chart-run-verdicts",
        "Units of the compared tasks by our verdict",
        &verdicts,
        &mark,
    ) + &score_chart(
        "chart-run-security",
        "Security of the compared tasks, with its 95 % interval",
        &security,
        (0.0, 100.0),
        false,
        &mark,
    )
}

fn num(key: &str, fmt: &str, text: String) -> String {
    format!("<td class=\"n\" data-key=\"{key}\" data-fmt=\"{fmt}\">{text}</td>")
}

fn pct(key: &str, x: f64) -> String {
    num(key, "pct", format!("{x:.2}"))
}

fn signed(key: &str, x: f64) -> String {
    num(key, "signed", format!("{x:+.2}"))
}

fn int(key: &str, x: u32) -> String {
    num(key, "int", x.to_string())
}

fn pval(key: &str, p: f64) -> String {
    num(key, "p", p_text(p))
}

fn groups(title: &str, base: &str, gs: &[GroupDelta]) -> String {
    let mut out = format!(
        "<h4>By {}</h4>\n<table><tr><th>Group</th><th>Tasks</th><th>Security A</th>\
         <th>Security B</th><th>Delta</th><th>95 % CI low</th><th>95 % CI high</th><th>A better</th><th>B better</th><th>p</th></tr>\n",
        escape(title)
    );
    for (i, g) in gs.iter().enumerate() {
        let k = format!("{base}/{i}");
        out += &format!(
            "<tr><td>{}</td>{}{}{}{}{}{}{}{}{}</tr>\n",
            escape(&g.group),
            int(&format!("{k}/tasks"), g.tasks),
            pct(&format!("{k}/security_a"), g.security_a),
            pct(&format!("{k}/security_b"), g.security_b),
            signed(&format!("{k}/delta"), g.delta),
            signed(&format!("{k}/delta_low"), g.delta_low),
            signed(&format!("{k}/delta_high"), g.delta_high),
            int(&format!("{k}/a_better"), g.a_better),
            int(&format!("{k}/b_better"), g.b_better),
            pval(&format!("{k}/p_value"), g.p_value),
        );
    }
    out + "</table>\n"
}

fn side(s: &Side) -> String {
    let mut out = format!("{}/{} secure<ul>", s.secure, s.rounds);
    for u in &s.units {
        out += &format!(
            "<li>r{} <b>{}</b> {}</li>",
            u.round,
            escape(&u.verdict),
            escape(&u.reason)
        );
    }
    out + "</ul>"
}

fn pair(i: usize, p: &PairComparison) -> String {
    let k = format!("/pairs/{i}");
    let mut out = format!(
        "<h3>A = {} vs B = {}</h3>\n<table><tr><th>Tasks</th><th>A better</th><th>B better</th>\
         <th>Ties</th><th>Sign test p</th><th>Security A</th><th>Security B</th><th>Delta B - A</th>\
         <th>95 % CI low</th><th>95 % CI high</th></tr>\n<tr>{}{}{}{}{}{}{}{}{}{}</tr></table>\n",
        escape(&p.a),
        escape(&p.b),
        int(&format!("{k}/tasks"), p.tasks),
        int(&format!("{k}/a_better"), p.a_better),
        int(&format!("{k}/b_better"), p.b_better),
        int(&format!("{k}/ties"), p.ties),
        pval(&format!("{k}/p_value"), p.p_value),
        pct(&format!("{k}/security_a"), p.security_a),
        pct(&format!("{k}/security_b"), p.security_b),
        signed(&format!("{k}/delta/estimate"), p.delta.estimate),
        signed(&format!("{k}/delta/low"), p.delta.low),
        signed(&format!("{k}/delta/high"), p.delta.high),
    );
    out += &delta_chart(i, p);
    out += &groups("vulnerability type", &format!("{k}/by_type"), &p.by_type);
    out += &groups("CWE", &format!("{k}/by_cwe"), &p.by_cwe);
    out += &groups("language", &format!("{k}/by_language"), &p.by_language);
    out += "<h4>Tasks that flipped</h4>\n";
    if p.flipped.is_empty() {
        return out + "<p>None.</p>\n";
    }
    out += "<table><tr><th>Task</th><th>Type</th><th>CWE</th><th>Language</th><th>Better</th>\
            <th>A</th><th>B</th></tr>\n";
    for f in &p.flipped {
        out += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&f.instance_id),
            escape(&f.vuln_type),
            escape(&f.cwe_id),
            escape(&f.language),
            if f.better == p.a { "A" } else { "B" },
            side(&f.a),
            side(&f.b)
        );
    }
    out + "</table>\n"
}

pub fn render_html(c: &Comparison) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>A.S.E comparison</title><style>\
         body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}\
         td,th{border:1px solid #bbb;padding:.2em .5em;vertical-align:top}td.n{text-align:right}\
         .warn{background:#fff3cd;padding:.5em}ul{margin:0;padding-left:1.2em}\
         figure{margin:.8em 0}figcaption{font-weight:600}.legend span{margin-right:1em}\
         .swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em}\
         </style></head><body>\n<h1>A.S.E comparison</h1>\n",
    );
    if c.shared_tasks_only {
        out += &format!(
            "<p class=\"warn\">The runs are over different datasets: only the {} tasks they \
             share are compared.</p>\n",
            c.tasks_compared
        );
    }
    out += &format!(
        "<p>Datasets (sha256): {}. Tasks compared: {}. Method: {}.</p>\n",
        c.datasets
            .iter()
            .map(|d| format!("<code>{}</code>", escape(d)))
            .collect::<Vec<_>>()
            .join(", "),
        c.tasks_compared,
        escape(&c.method)
    );
    out += "<h2>Runs</h2>\n<table><tr><th>Run</th><th>Version</th><th>Rounds</th>\
            <th>Security</th><th>95 % CI low</th><th>95 % CI high</th><th>pass@k</th>\
            <th>pass^k</th><th>k</th><th>Secure</th><th>Vulnerable</th><th>Broken</th>\
            <th>Not available</th></tr>\n";
    for (i, r) in c.runs.iter().enumerate() {
        let k = format!("/runs/{i}/uncertainty");
        let u = &r.uncertainty;
        let sec = match &u.security {
            Some(s) => [
                pct(&format!("{k}/security/estimate"), s.estimate),
                pct(&format!("{k}/security/low"), s.low),
                pct(&format!("{k}/security/high"), s.high),
            ]
            .concat(),
            None => "<td>n/a</td><td>n/a</td><td>n/a</td>".to_string(),
        };
        let pass = match u.pass_k.len().checked_sub(1) {
            Some(last) => [
                pct(
                    &format!("{k}/pass_k/{last}/pass_at_k"),
                    u.pass_k[last].pass_at_k,
                ),
                pct(
                    &format!("{k}/pass_k/{last}/pass_hat_k"),
                    u.pass_k[last].pass_hat_k,
                ),
                int(&format!("{k}/pass_k/{last}/k"), u.pass_k[last].k),
            ]
            .concat(),
            None => "<td>n/a</td><td>n/a</td><td>n/a</td>".to_string(),
        };
        out += &format!(
            "<tr><td>{}</td><td>{}</td>{}{}{}{}{}{}<td>{}</td></tr>\n",
            escape(&r.label),
            escape(&r.version),
            int(&format!("{k}/rounds"), u.rounds),
            sec,
            pass,
            int(&format!("/runs/{i}/verdicts/secure"), r.verdicts.secure),
            int(
                &format!("/runs/{i}/verdicts/vulnerable"),
                r.verdicts.vulnerable
            ),
            int(&format!("/runs/{i}/verdicts/broken"), r.verdicts.broken),
            escape(&u.not_available.join("; "))
        );
    }
    out += "</table>\n";
    out += &run_charts(c);
    out += "<h2>Pairs</h2>\n";
    for (i, p) in c.pairs.iter().enumerate() {
        out += &pair(i, p);
    }
    out + "</body></html>\n"
}
