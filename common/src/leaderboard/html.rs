//! `leaderboard.html`: one self-contained page (inline styles and SVG, no script, nothing
//! fetched; a Content-Security-Policy forbids it besides). Every run and model name may come
//! from a config or a dataset: all of it is escaped and long names are cut with a note. Every
//! value taken from the leaderboard carries `data-key`, its JSON Pointer in
//! `leaderboard.json` (the value is the element's text, `n/a` for null), as report.html does.

use super::{Leaderboard, LeaderboardRow, LeaderboardTable};
use crate::report::html::charts::{verdict_chart, Shown, VerdictBar};
use crate::report::html::{
    escape, fmt_f64 as fmt, int, json_pointer, num, opt_num, rounded, short, text_from,
};
use crate::scoring::stats::round2;
use crate::uncertainty::bootstrap::Interval;
use std::fmt::Write;

/// Run, model and dataset names longer than this are cut.
pub const MAX_NAME_CHARS: usize = 120;

const AXIS_X: f64 = 300.0;
const AXIS_W: f64 = 400.0;
const ROW_H: f64 = 24.0;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;padding:1.5rem 2rem;color:#1a1a1a;background:#fafafa;line-height:1.4}
h1{font-size:1.6rem;margin:0 0 .5rem}h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;background:#fff;font-size:.88rem;margin:.3rem 0}th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#555;font-size:.8rem}.note{color:#666;font-style:italic;font-size:.85rem}.na{color:#888}th.run{font-family:ui-monospace,monospace;font-size:.82rem;white-space:nowrap;font-weight:600}
figure{margin:.6rem 0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem;display:inline-block}figcaption{font-weight:600;font-size:.9rem;margin-bottom:.3rem}
.legend{display:flex;flex-wrap:wrap;gap:.3rem .9rem;font-size:.82rem;margin-top:.4rem}.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-.1rem}
section.paper{border-left:4px solid #9e9e9e;padding-left:1rem;margin-top:2rem}.warning{font-weight:700;color:#6d4c41}
";

/// A string of the leaderboard, cut to `max` characters with a note saying so.
fn text(key: &str, s: &str, max: usize) -> String {
    text_from(key, s, max, "leaderboard.json")
}

/// A figure's cell: the value, `± half-width` and `[low, high]`, each bound keyed.
fn figure(row_key: &[String], field: &str, value: Option<f64>, i: Option<&Interval>) -> String {
    let key = |parts: &[&str]| {
        let mut all: Vec<String> = row_key.to_vec();
        all.extend(parts.iter().map(|s| s.to_string()));
        json_pointer(&all)
    };
    let mut out = format!("<td class=\"n\">{}", opt_num(&key(&[field]), value));
    if let (Some(_), Some(i)) = (value, i) {
        let interval = format!("{field}_interval");
        let _ = write!(
            out,
            " ± {}<br><span class=\"ci\">[{}, {}]</span>",
            fmt(round2((i.high - i.low) / 2.0)),
            rounded(&key(&[interval.as_str(), "low"]), i.low),
            rounded(&key(&[interval.as_str(), "high"]), i.high)
        );
    }
    out += "</td>";
    out
}

fn row_html(t: usize, r_index: usize, r: &LeaderboardRow, v2: bool) -> String {
    let base: Vec<String> = vec![
        "tables".into(),
        t.to_string(),
        "rows".into(),
        r_index.to_string(),
    ];
    let k = |f: &str| {
        let mut all = base.clone();
        all.push(f.to_string());
        json_pointer(&all)
    };
    let mut out = format!(
        "<tr><td class=\"n\">{}</td><th class=\"run\">{}</th><td class=\"n\">{}</td>",
        int(&k("rank"), r.rank),
        text(&k("run"), &r.run, MAX_NAME_CHARS),
        int(&k("tasks"), r.tasks),
    );
    out += &figure(
        &base,
        "overall",
        Some(r.overall),
        r.overall_interval.as_ref(),
    );
    if v2 {
        out += &figure(
            &base,
            "overall_corrected",
            r.overall_corrected,
            r.overall_corrected_interval.as_ref(),
        );
    }
    out += &figure(
        &base,
        "security",
        Some(r.security),
        r.security_interval.as_ref(),
    );
    out += &figure(
        &base,
        "security_ours",
        r.security_ours,
        r.security_ours_interval.as_ref(),
    );
    out += &figure(
        &base,
        "quality",
        Some(r.quality),
        r.quality_interval.as_ref(),
    );
    out += &figure(
        &base,
        "stability",
        r.stability,
        r.stability_interval.as_ref(),
    );
    // Our three verdicts in the table too, not only in the chart.
    let v = |name: &str| {
        let mut all = base.clone();
        all.extend(["verdicts".to_string(), name.to_string()]);
        json_pointer(&all)
    };
    out += &format!(
        "<td class=\"n\">{} / {} / {}</td>",
        int(&v("secure"), r.verdicts.secure),
        int(&v("vulnerable"), r.verdicts.vulnerable),
        int(&v("broken"), r.verdicts.broken),
    );
    out += "</tr>\n";
    out
}

/// Each run's overall as a whisker (its interval) with a dot, best first; the paper's range
/// of overall figures as a grey band behind v1 rows.
fn chart(t_index: usize, t: &LeaderboardTable, band: Option<(f64, f64)>) -> String {
    let height = ROW_H * t.rows.len() as f64 + 30.0;
    let width = AXIS_X + AXIS_W + 20.0;
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
    let mut out = format!(
        "<figure id=\"chart-{t_index}\"><figcaption>Overall with its 95 % interval</figcaption>\n<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Overall with its interval\">\n"
    );
    if let Some((lo, hi)) = band {
        let _ = writeln!(
            out,
            "<rect class=\"paper-band\" x=\"{:.2}\" y=\"0\" width=\"{:.2}\" height=\"{:.2}\" fill=\"#e0e0e0\"><title>A.S.E paper, overall {} to {} (measured with upstream's closed rules; not comparable with ours)</title></rect>",
            x(lo),
            (x(hi) - x(lo)).max(1.0),
            height - 18.0,
            fmt(lo),
            fmt(hi)
        );
    }
    for step in 0..=4 {
        let v = f64::from(step) * 25.0;
        let _ = writeln!(
            out,
            "<line x1=\"{0:.2}\" y1=\"0\" x2=\"{0:.2}\" y2=\"{1}\" stroke=\"#ccc\"/><text x=\"{0:.2}\" y=\"{2}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666\">{3}</text>",
            x(v),
            height - 18.0,
            height - 6.0,
            step * 25
        );
    }
    for (i, r) in t.rows.iter().enumerate() {
        let y = ROW_H * i as f64 + 14.0;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            AXIS_X - 6.0,
            y + 4.0,
            short(&r.run, 40)
        );
        if let Some(i) = &r.overall_interval {
            let _ = writeln!(
                out,
                "<line class=\"whisker\" x1=\"{:.2}\" y1=\"{y}\" x2=\"{:.2}\" y2=\"{y}\" stroke=\"#1565c0\" stroke-width=\"2\"/>",
                x(i.low),
                x(i.high)
            );
        }
        let _ = writeln!(
            out,
            "<circle cx=\"{:.2}\" cy=\"{y}\" r=\"4\" fill=\"#1565c0\"><title>{}: {}</title></circle>",
            x(r.overall),
            short(&r.run, MAX_NAME_CHARS),
            fmt(r.overall)
        );
    }
    out += "</svg>\n</figure>\n";
    out
}

/// Each run's units by our verdict, in the table's order.
fn verdicts_chart(t_index: usize, t: &LeaderboardTable) -> String {
    let bars: Vec<VerdictBar> = t
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let k = |f: &str| {
                json_pointer(&[
                    "tables",
                    &t_index.to_string(),
                    "rows",
                    &i.to_string(),
                    "verdicts",
                    f,
                ])
            };
            VerdictBar {
                label: r.run.clone(),
                counts: [
                    (r.verdicts.secure, k("secure")),
                    (r.verdicts.vulnerable, k("vulnerable")),
                    (r.verdicts.broken, k("broken")),
                ],
            }
        })
        .collect();
    let mark = |key: &str, shown: Shown| match shown {
        Shown::Count(n) => format!(" data-key=\"{}\">{n}", escape(key)),
        Shown::Pct(x) | Shown::Signed(x) => format!(
            " data-key=\"{}\" data-value=\"{}\">{}",
            escape(key),
            fmt(x),
            fmt(round2(x))
        ),
    };
    verdict_chart(
        &format!("chart-verdicts-{t_index}"),
        "Units by our verdict",
        &bars,
        &mark,
    )
}

fn table_html(t_index: usize, t: &LeaderboardTable, band: Option<(f64, f64)>) -> String {
    let v2 = t.version == "v2";
    let k = |f: &str| json_pointer(&["tables", t_index.to_string().as_str(), f]);
    let mut out = format!(
        "<section class=\"board\" id=\"table-{t_index}\">\n<h2>{} {}</h2>\n<p class=\"note\">dataset sha256 {}</p>\n",
        text(&k("version"), &t.version, 8),
        text(&k("dataset_path"), &t.dataset_path, MAX_NAME_CHARS),
        text(&k("dataset_sha256"), &t.dataset_sha256, 64),
    );
    out += "<table class=\"leaderboard\">\n<thead><tr><th>Rank</th><th>Run</th><th>Tasks</th><th>Overall (upstream-compatible)</th>";
    if v2 {
        out += "<th>Overall (corrected)</th>";
    }
    out += "<th>Security (upstream-compatible)</th><th>Security (ours: broken counts as not secure)</th><th>Quality</th><th>Stability</th><th>Units: secure / vulnerable / broken</th></tr></thead>\n<tbody>\n";
    for (i, r) in t.rows.iter().enumerate() {
        out += &row_html(t_index, i, r, v2);
    }
    out += "</tbody>\n</table>\n";
    out += &chart(t_index, t, band);
    out += &verdicts_chart(t_index, t);
    for r in t.rows.iter().filter(|r| !r.not_available.is_empty()) {
        let _ = writeln!(
            out,
            "<p class=\"note\">{}: not available: {}.</p>",
            short(&r.run, MAX_NAME_CHARS),
            short(&r.not_available.join("; "), 4 * MAX_NAME_CHARS)
        );
    }
    out += "</section>\n";
    out
}

fn paper_html(board: &Leaderboard) -> String {
    let Some(p) = &board.paper else {
        return String::new();
    };
    let mut out = format!(
        "<section class=\"paper\" id=\"paper\">\n<h2>For orientation: the A.S.E paper ({})</h2>\n<p class=\"warning\">{}.</p>\n<p class=\"note\">{} — {}</p>\n",
        text("/paper/dataset_version", &p.dataset_version, 8),
        text("/paper/label", &p.label, 4 * MAX_NAME_CHARS),
        text("/paper/source", &p.source, 4 * MAX_NAME_CHARS),
        text("/paper/url", &p.url, MAX_NAME_CHARS),
    );
    if p.rows.is_empty() {
        out += "<p class=\"note\">No row of the paper's table is shipped.</p>\n";
    } else {
        out += "<table id=\"paper-table\">\n<thead><tr><th>Model</th><th>Overall</th><th>Security</th><th>Quality</th><th>Stability</th></tr></thead>\n<tbody>\n";
        for (i, r) in p.rows.iter().enumerate() {
            let k = |f: &str| json_pointer(&["paper", "rows", i.to_string().as_str(), f]);
            let _ = writeln!(
                out,
                "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                text(&k("model"), &r.model, MAX_NAME_CHARS),
                num(&k("overall"), r.overall),
                num(&k("security"), r.security),
                num(&k("quality"), r.quality),
                num(&k("stability"), r.stability)
            );
        }
        out += "</tbody>\n</table>\n";
    }
    if !p.complete {
        let _ = writeln!(
            out,
            "<p class=\"note\">Incomplete: {}</p>",
            text("/paper/note", &p.note, 8 * MAX_NAME_CHARS)
        );
    }
    out += "</section>\n";
    out
}

pub fn render_html(board: &Leaderboard) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    out += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n";
    out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    let _ = writeln!(
        out,
        "<title>A.S.E leaderboard</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header><h1>A.S.E leaderboard</h1>"
    );
    let _ = writeln!(
        out,
        "<p class=\"note\">Each figure: value ± half-width of its 95 % interval [low, high]. Method: {}.</p>\n</header>\n<main>",
        text("/method", &board.method, 8 * MAX_NAME_CHARS)
    );
    let band = board.paper.as_ref().and_then(|p| {
        let lo = p.rows.iter().map(|r| r.overall).reduce(f64::min)?;
        let hi = p.rows.iter().map(|r| r.overall).reduce(f64::max)?;
        Some((lo, hi))
    });
    for (i, t) in board.tables.iter().enumerate() {
        let band = if t.version == "v1" { band } else { None };
        out += &table_html(i, t, band);
    }
    out += &paper_html(board);
    out += "</main>\n<footer class=\"note\">Generated by ase-cluster from leaderboard.json.</footer>\n</body>\n</html>\n";
    out
}
