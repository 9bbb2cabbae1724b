//! The pages' charts as inline SVG (no script): scores as bars with their interval's whiskers,
//! and units as stacked bars of our three verdicts. Shared by report.html, compare.html and
//! leaderboard.html; each page marks the values it shows its own way (`Mark`), so that its
//! test can check every charted number against the page's JSON.

use super::{escape, short, MAX_NAME_CHARS};
use crate::uncertainty::bootstrap::Interval;
use std::fmt::Write;

/// A value a chart shows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shown {
    /// A figure on a 0..100 scale (or a delta in points).
    Pct(f64),
    /// A delta in points, shown with its sign.
    Signed(f64),
    Count(u32),
}

/// How a page marks a value: given its JSON Pointer and the value, the rest of an element's
/// start tag and its text, e.g. ` data-key="K" data-value="V">TEXT`.
pub(crate) type Mark<'a> = &'a dyn Fn(&str, Shown) -> String;

const LABEL_W: f64 = 190.0;
const AXIS_W: f64 = 320.0;
const ROW_H: f64 = 26.0;

/// Our three verdicts, in the order they are stacked, with their colours.
pub(crate) const VERDICTS: [(&str, &str); 3] = [
    ("secure", "#2e7d32"),
    ("vulnerable", "#c62828"),
    ("broken", "#6a1b9a"),
];

/// One bar of a score chart: the value and its interval's low and high, each with its key.
pub(crate) struct ScoreBar {
    pub label: String,
    pub value: Option<(f64, String)>,
    pub interval: Option<[(f64, String); 2]>,
}

/// The low and high of `interval` keyed as `{key}/low` and `{key}/high`.
pub(crate) fn whisker(interval: &Interval, key: &str) -> [(f64, String); 2] {
    [
        (interval.low, format!("{key}/low")),
        (interval.high, format!("{key}/high")),
    ]
}

/// One bar of a verdict chart: units secure, vulnerable, broken, each with its key.
pub(crate) struct VerdictBar {
    pub label: String,
    pub counts: [(u32, String); 3],
}

fn figure_start(id: &str, caption: &str, width: f64, height: f64) -> String {
    format!(
        "<figure id=\"{id}\"><figcaption>{caption}</figcaption>\n<svg class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{caption}\">\n"
    )
}

fn row_label(out: &mut String, label: &str, y: f64) {
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\"><title>{}</title>{}</text>",
        LABEL_W - 6.0,
        y + 4.0,
        short(label, MAX_NAME_CHARS),
        short(label, 28)
    );
}

/// Bars on an axis from `min` to `max` (0..100 for figures, -100..100 for deltas; bars start
/// at 0), a grid every quarter; each bar with its value written beside it and its interval as
/// a whisker whose caps carry `low` and `high`.
pub(crate) fn score_chart(
    id: &str,
    caption: &str,
    bars: &[ScoreBar],
    (min, max): (f64, f64),
    signed: bool,
    mark: Mark,
) -> String {
    let width = LABEL_W + AXIS_W + 70.0;
    let height = ROW_H * bars.len().max(1) as f64 + 24.0;
    let x = |v: f64| {
        let v = if v.is_finite() {
            v.clamp(min, max)
        } else {
            0.0
        };
        LABEL_W + AXIS_W * (v - min) / (max - min)
    };
    let value = |v: f64| {
        if signed {
            Shown::Signed(v)
        } else {
            Shown::Pct(v)
        }
    };
    let mut out = figure_start(id, caption, width, height);
    for step in 0..=4 {
        let v = min + (max - min) * f64::from(step) / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{0:.2}\" y1=\"0\" x2=\"{0:.2}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0:.2}\" y=\"{2}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666\">{3}</text>",
            x(v),
            height - 16.0,
            height - 4.0,
            v
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let top = ROW_H * i as f64;
        let mid = top + ROW_H / 2.0;
        row_label(&mut out, &b.label, mid);
        if let Some((v, key)) = &b.value {
            let (a, z) = (x(0.0).min(x(*v)), x(0.0).max(x(*v)));
            let mut right = z;
            let _ = writeln!(
                out,
                "<rect class=\"bar\" x=\"{a:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"#90caf9\"/>",
                top + 5.0,
                z - a,
                ROW_H - 10.0
            );
            if let Some([_, (high, _)]) = &b.interval {
                right = right.max(x(*high));
            }
            let _ = writeln!(
                out,
                "<text class=\"value\" x=\"{:.2}\" y=\"{:.2}\" font-size=\"11\"{}</text>",
                right + 5.0,
                mid + 4.0,
                mark(key, value(*v))
            );
        }
        if let Some(ends) = &b.interval {
            let (lo, hi) = (x(ends[0].0), x(ends[1].0));
            let _ = writeln!(
                out,
                "<line class=\"whisker\" x1=\"{lo:.2}\" y1=\"{mid:.2}\" x2=\"{hi:.2}\" y2=\"{mid:.2}\" stroke=\"#0d47a1\" stroke-width=\"2\"/>"
            );
            for ((part, key), at) in ends.iter().zip([lo, hi]) {
                let _ = writeln!(
                    out,
                    "<line class=\"cap\" x1=\"{at:.2}\" y1=\"{:.2}\" x2=\"{at:.2}\" y2=\"{:.2}\" stroke=\"#0d47a1\" stroke-width=\"2\"><title{}</title></line>",
                    mid - 5.0,
                    mid + 5.0,
                    mark(key, value(*part))
                );
            }
        }
    }
    out += "</svg>\n</figure>\n";
    out
}

/// One stacked bar per row: the shares of its units secure, vulnerable and broken (our
/// verdicts), each segment's count in its tooltip, the counts written beside the bar.
pub(crate) fn verdict_chart(id: &str, caption: &str, bars: &[VerdictBar], mark: Mark) -> String {
    let width = LABEL_W + AXIS_W + 230.0;
    let height = ROW_H * bars.len().max(1) as f64 + 8.0;
    let mut out = figure_start(id, caption, width, height);
    for (i, b) in bars.iter().enumerate() {
        let top = ROW_H * i as f64;
        row_label(&mut out, &b.label, top + ROW_H / 2.0);
        let total: u32 = b.counts.iter().map(|(n, _)| n).sum();
        let mut x = LABEL_W;
        let mut written = Vec::new();
        for ((n, key), (name, fill)) in b.counts.iter().zip(VERDICTS) {
            let w = if total == 0 {
                0.0
            } else {
                AXIS_W * f64::from(*n) / f64::from(total)
            };
            let _ = writeln!(
                out,
                "<rect class=\"verdict-{name}\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{w:.2}\" height=\"{:.2}\" fill=\"{fill}\"><title{}</title></rect>",
                top + 4.0,
                ROW_H - 8.0,
                mark(key, Shown::Count(*n))
            );
            x += w;
            written.push(format!("{n} {name}"));
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.2}\" y=\"{:.2}\" font-size=\"11\" fill=\"#444\">{}</text>",
            LABEL_W + AXIS_W + 6.0,
            top + ROW_H / 2.0 + 4.0,
            escape(&written.join(", "))
        );
    }
    out += "</svg>\n<div class=\"legend\">";
    for (name, fill) in VERDICTS {
        let _ = write!(
            out,
            "<span><span class=\"swatch\" style=\"background:{fill}\"></span>{name}</span>"
        );
    }
    out += "</div>\n</figure>\n";
    out
}
