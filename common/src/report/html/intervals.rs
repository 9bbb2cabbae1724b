//! Every figure's 95 % interval (a table and whiskers on a 0..100 axis) and pass@k /
//! pass^k over the rounds, every number keyed to report.json's `uncertainty`.

use super::{escape, fmt_f64, int, rounded, short, text, MAX_NAME_CHARS};
use crate::scoring::stats::round2;
use crate::uncertainty::bootstrap::Interval;
use crate::uncertainty::{GroupInterval, Uncertainty};
use std::fmt::Write;

const AXIS_X: f64 = 330.0;
const AXIS_W: f64 = 320.0;
const ROW_H: f64 = 26.0;

/// The figures shown, with their key in `uncertainty`.
fn figures(u: &Uncertainty) -> Vec<(&'static str, &'static str, Option<&Interval>)> {
    crate::uncertainty::figure_rows(u)
}

pub(super) fn intervals_section(u: &Uncertainty) -> String {
    let level = fmt_f64(u.bootstrap.level * 100.0);
    let mut out = format!(
        "<section id=\"intervals\">\n<h2>Intervals ({level} %)</h2>\n<table id=\"intervals-table\">\n<thead><tr><th>Figure</th><th>Estimate</th><th>±</th><th>Low</th><th>High</th></tr></thead>\n<tbody>\n"
    );
    let key = |field: &str, part: &str| format!("/uncertainty/{field}/{part}");
    for (label, field, i) in figures(u) {
        match i {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "<tr><th>{label}</th><td class=\"n\">{}</td><td class=\"n pm\">± {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    rounded(&key(field, "estimate"), i.estimate),
                    fmt_f64(round2((i.high - i.low) / 2.0)),
                    rounded(&key(field, "low"), i.low),
                    rounded(&key(field, "high"), i.high)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "<tr><th>{label}</th><td colspan=\"4\" class=\"note\">n/a</td></tr>"
                );
            }
        }
    }
    out += "</tbody>\n</table>\n";
    out += &whiskers(u);
    for (field, title, groups) in [
        ("by_type", "vulnerability type", &u.by_type),
        ("by_cwe", "CWE", &u.by_cwe),
        ("by_language", "language", &u.by_language),
    ] {
        out += &group_table(field, title, groups);
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">{}: {} resamples, seed {}, over {} tasks.</p>",
        escape(&u.method),
        int("/uncertainty/bootstrap/resamples", u.bootstrap.resamples),
        int("/uncertainty/bootstrap/seed", u.bootstrap.seed),
        int("/uncertainty/tasks", u.tasks),
    );
    if !u.pass_k.is_empty() {
        out += "<table id=\"pass-k\">\n<thead><tr><th>k</th><th>pass@k (secure in at least one of k rounds)</th><th>pass^k (secure in all k)</th></tr></thead>\n<tbody>\n";
        for (i, p) in u.pass_k.iter().enumerate() {
            let k = |f: &str| format!("/uncertainty/pass_k/{i}/{f}");
            let _ = writeln!(
                out,
                "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                int(&k("k"), p.k),
                rounded(&k("pass_at_k"), p.pass_at_k),
                rounded(&k("pass_hat_k"), p.pass_hat_k)
            );
        }
        out += "</tbody>\n</table>\n";
    }
    for why in &u.not_available {
        let _ = writeln!(
            out,
            "<p class=\"note\">Not available: {}.</p>",
            short(why, 4 * MAX_NAME_CHARS)
        );
    }
    out += "</section>\n";
    out
}

/// Each interval as a whisker (low to high) with a dot at the estimate, on a 0..100 axis.
fn whiskers(u: &Uncertainty) -> String {
    let shown = figures(u);
    let height = ROW_H * shown.len() as f64 + 24.0;
    let width = AXIS_X + AXIS_W + 20.0;
    let mut out = format!(
        "<figure id=\"chart-intervals\"><figcaption>Figures with their intervals</figcaption>\n<svg class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Figures with their intervals\">\n"
    );
    let x = |v: f64| {
        AXIS_X
            + AXIS_W
                * if v.is_finite() {
                    v.clamp(0.0, 100.0)
                } else {
                    0.0
                }
                / 100.0
    };
    for step in 0..=4 {
        let v = f64::from(step) * 25.0;
        let _ = writeln!(
            out,
            "<line x1=\"{0:.2}\" y1=\"0\" x2=\"{0:.2}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0:.2}\" y=\"{2}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666\">{3}</text>",
            x(v),
            height - 16.0,
            height - 4.0,
            step * 25
        );
    }
    for (row, (label, _, i)) in shown.iter().enumerate() {
        let y = ROW_H * row as f64 + 14.0;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{label}</text>",
            AXIS_X - 6.0,
            y + 4.0
        );
        if let Some(i) = i {
            let _ = writeln!(
                out,
                "<line class=\"whisker\" x1=\"{:.2}\" y1=\"{y}\" x2=\"{:.2}\" y2=\"{y}\" stroke=\"#1565c0\" stroke-width=\"2\"/><circle cx=\"{:.2}\" cy=\"{y}\" r=\"4\" fill=\"#1565c0\"><title>{}: {} [{}, {}]</title></circle>",
                x(i.low),
                x(i.high),
                x(i.estimate),
                label,
                fmt_f64(i.estimate),
                fmt_f64(i.low),
                fmt_f64(i.high)
            );
        }
    }
    out += "</svg>\n</figure>\n";
    out
}

/// An interval's cells: estimate, ±, low, high; `n/a` cells when there is none.
fn interval_cells(key: &str, i: Option<&Interval>) -> String {
    match i {
        Some(i) => format!(
            "<td class=\"n\">{}</td><td class=\"n pm\">± {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            rounded(&format!("{key}/estimate"), i.estimate),
            fmt_f64(round2((i.high - i.low) / 2.0)),
            rounded(&format!("{key}/low"), i.low),
            rounded(&format!("{key}/high"), i.high)
        ),
        None => "<td colspan=\"4\" class=\"note\">n/a</td>".to_string(),
    }
}

/// Each group's security, upstream-compatible and ours, with their intervals.
fn group_table(field: &str, title: &str, groups: &[GroupInterval]) -> String {
    if groups.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<h3>Security by {title}</h3>\n<table id=\"intervals-{field}\">\n<thead><tr><th>Group</th><th>Tasks</th><th colspan=\"4\">Security (upstream-compatible): estimate, ±, low, high</th><th colspan=\"4\">Security (ours): estimate, ±, low, high</th></tr></thead>\n<tbody>\n"
    );
    for (i, g) in groups.iter().enumerate() {
        let k = |f: &str| format!("/uncertainty/{field}/{i}/{f}");
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"n\">{}</td>{}{}</tr>",
            text(&k("group"), &g.group, MAX_NAME_CHARS),
            int(&k("tasks"), g.tasks),
            interval_cells(&k("security"), g.security.as_ref()),
            interval_cells(&k("security_verdict"), g.security_verdict.as_ref()),
        );
    }
    out += "</tbody>\n</table>\n";
    out
}
