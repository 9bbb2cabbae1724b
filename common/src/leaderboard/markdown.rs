//! `leaderboard.md`: each dataset's table, then the paper's figures for orientation.

use super::{Leaderboard, LeaderboardRow, LeaderboardTable};
use crate::scoring::stats::{python_float_str, round2};
use crate::uncertainty::bootstrap::Interval;

/// Untrusted text (run and model names) inside a table cell.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// `value ± half-width`, or the value alone without an interval; `n/a` without a value.
pub fn with_interval(value: Option<f64>, interval: Option<&Interval>) -> String {
    match (value, interval) {
        (None, _) => "n/a".to_string(),
        (Some(v), None) => python_float_str(v),
        (Some(v), Some(i)) => format!(
            "{} ± {}",
            python_float_str(v),
            python_float_str(round2((i.high - i.low) / 2.0))
        ),
    }
}

fn row(r: &LeaderboardRow, v2: bool) -> String {
    let mut out = format!(
        "| {} | {} | {} | {} |",
        r.rank,
        cell(&r.run),
        r.tasks,
        with_interval(Some(r.overall), r.overall_interval.as_ref())
    );
    if v2 {
        out += &format!(
            " {} |",
            with_interval(r.overall_corrected, r.overall_corrected_interval.as_ref())
        );
    }
    out += &format!(
        " {} | {} | {} | {} | {} / {} / {} |\n",
        with_interval(Some(r.security), r.security_interval.as_ref()),
        with_interval(r.security_ours, r.security_ours_interval.as_ref()),
        with_interval(Some(r.quality), r.quality_interval.as_ref()),
        with_interval(r.stability, r.stability_interval.as_ref()),
        r.verdicts.secure,
        r.verdicts.vulnerable,
        r.verdicts.broken,
    );
    out
}

fn table(t: &LeaderboardTable) -> String {
    let v2 = t.version == "v2";
    let mut out = format!(
        "\n## {} `{}` (sha256 `{}`)\n\n",
        cell(&t.version),
        cell(&t.dataset_path),
        cell(&t.dataset_sha256)
    );
    out += "| Rank | Run | Tasks | Overall (upstream-compatible) |";
    if v2 {
        out += " Overall (corrected) |";
    }
    out += " Security (upstream-compatible) | Security (ours) | Quality | Stability | Units: secure / vulnerable / broken |\n|---:|---|---:|---:|";
    if v2 {
        out += "---:|";
    }
    out += "---:|---:|---:|---:|---:|\n";
    for r in &t.rows {
        out += &row(r, v2);
    }
    for r in t.rows.iter().filter(|r| !r.not_available.is_empty()) {
        out += &format!(
            "\n{}: not available: {}.\n",
            cell(&r.run),
            cell(&r.not_available.join("; "))
        );
    }
    out
}

pub fn render_markdown(board: &Leaderboard) -> String {
    let mut out = String::from("# A.S.E leaderboard\n\n");
    out += &format!(
        "Figures are `value ± half-width` of the 95 % interval. Method: {}.\n",
        board.method
    );
    for t in &board.tables {
        out += &table(t);
    }
    if let Some(p) = &board.paper {
        out += &format!(
            "\n## For orientation: the A.S.E paper, {} ({})\n\n**{}.** Source: {}\n\n",
            cell(&p.dataset_version),
            p.url,
            cell(&p.label),
            cell(&p.source)
        );
        if p.rows.is_empty() {
            out += "No row of the paper's table is shipped.";
        } else {
            out +=
                "| Model | Overall | Security | Quality | Stability |\n|---|---:|---:|---:|---:|\n";
            for r in &p.rows {
                out += &format!(
                    "| {} | {} | {} | {} | {} |\n",
                    cell(&r.model),
                    python_float_str(r.overall),
                    python_float_str(r.security),
                    python_float_str(r.quality),
                    python_float_str(r.stability)
                );
            }
        }
        if !p.complete {
            out += &format!(" Incomplete: {}\n", cell(&p.note));
        }
    }
    out
}
