//! Our verdict columns and the all-units verdict section, beside upstream's counts.

use super::{card, int, json_pointer, num, text, MAX_NAME_CHARS};
use crate::report::GroupTally;
use std::fmt::Write;

/// Our verdict columns, after upstream's.
pub(super) const VERDICT_HEADERS: &str = "<th>Secure (ours)</th><th>Vulnerable (ours)</th><th>Broken (ours)</th><th>Security % (ours)</th><th>Tokens</th><th>Cost (USD)</th>";

/// One group's row: upstream's counts, then our verdicts, each keyed to report.json.
pub(super) fn tally_row(group: &str, k: impl Fn(&str) -> String, g: &GroupTally) -> String {
    format!(
        "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        text(&k("group"), group, MAX_NAME_CHARS),
        int(&k("tasks"), g.tasks),
        int(&k("units"), g.units),
        int(&k("secure"), g.secure),
        int(&k("not_secure"), g.not_secure),
        int(&k("failed"), g.failed),
        num(&k("secure_pct"), g.secure_pct),
        int(&k("verdict_secure"), g.verdict_secure),
        int(&k("verdict_vulnerable"), g.verdict_vulnerable),
        int(&k("verdict_broken"), g.verdict_broken),
        num(&k("verdict_secure_pct"), g.verdict_secure_pct),
        int(&k("total_tokens"), g.total_tokens),
        num(&k("cost_usd"), g.cost_usd),
    )
}

/// Every unit: our three verdicts and our security figure, labelled as ours.
pub(super) fn verdicts_section(all: &GroupTally) -> String {
    let k = |f: &str| json_pointer(&["breakdown", "all", f]);
    let mut out = String::from(
        "<section id=\"verdicts\">\n<h2>Verdicts (ours)</h2>\n<div class=\"cards\">\n",
    );
    out += &card(
        "Secure (ours)",
        int(&k("verdict_secure"), all.verdict_secure),
    );
    out += &card(
        "Vulnerable (ours)",
        int(&k("verdict_vulnerable"), all.verdict_vulnerable),
    );
    out += &card(
        "Broken (ours)",
        int(&k("verdict_broken"), all.verdict_broken),
    );
    out += &card(
        "Security % (ours)",
        num(&k("verdict_secure_pct"), all.verdict_secure_pct),
    );
    out += "</div>\n<p class=\"note\">Ours, not upstream&#39;s: a unit is <em>broken</em> when nothing was judged (no answer, it did not apply, did not build or start, tests failed) and counts as not secure. The scores above are upstream-compatible: upstream counts the scan of code an answer did not change.</p>\n";
    let _ = write!(
        out,
        "<table id=\"verdict-table\">\n<thead><tr><th>Group</th><th>Tasks</th><th>Units</th><th>Secure</th><th>Not secure</th><th>Failed</th><th>Secure %</th>{VERDICT_HEADERS}</tr></thead>\n<tbody>\n{}\n</tbody>\n</table>\n",
        tally_row(&all.group, k, all)
    );
    out += "</section>\n";
    out
}
