//! The "Agent" section of `report.html` (agent runs): the run's totals as cards and a table,
//! then one row per unit with a link to its transcript, every number keyed to report.json's
//! `agent`.

use super::{card, escape, int, json_pointer, num, opt_num, text, MAX_NAME_CHARS};
use crate::report::agent::{AgentSection, TRANSCRIPTS_DIR};
use std::fmt::Write;

/// Unit rows shown; the rest are counted in a note (report.json has them all).
pub const MAX_AGENT_ROWS: usize = 2000;

fn opt_int<T: std::fmt::Display>(key: &str, x: Option<T>) -> String {
    match x {
        Some(x) => int(key, x),
        None => format!(
            "<span class=\"v na\" data-key=\"{}\">n/a</span>",
            escape(key)
        ),
    }
}

/// A link to a transcript file of the run's outputs; anything else is shown as text only.
fn transcript_link(key: &str, path: &str, truncated: bool) -> String {
    let inside = path.starts_with(&format!("{TRANSCRIPTS_DIR}/"))
        && !path.contains("..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    let note = if truncated {
        " <span class=\"note\">(truncated)</span>"
    } else {
        ""
    };
    if inside {
        format!(
            "<a href=\"{p}\" data-key=\"{}\">{p}</a>{note}",
            escape(key),
            p = escape(path)
        )
    } else {
        format!("{}{note}", text(key, path, MAX_NAME_CHARS))
    }
}

pub(super) fn agent_section(a: &AgentSection) -> String {
    let t = &a.totals;
    let k = |f: &str| json_pointer(&["agent", "totals", f]);
    let mut out = String::from("<section id=\"agent\">\n<h2>Agent</h2>\n<div class=\"cards\">\n");
    out += &card("Turns", int(&k("turns"), t.turns));
    out += &card("Model calls", int(&k("model_calls"), t.model_calls));
    out += &card(
        "Calls of abandoned attempts",
        int(&k("abandoned_calls"), t.abandoned_calls),
    );
    out += &card("All calls", int(&k("all_calls"), t.all_calls));
    out += "</div>\n";
    let _ = write!(
        out,
        "<table id=\"agent-totals\">\n<thead><tr><th>Units</th><th>Turns</th><th>Model calls</th><th>Refused calls</th><th>Tokens</th><th>Cost (USD)</th><th>Wall time (s)</th><th>Abandoned attempts</th><th>Calls of abandoned attempts</th><th>Tokens of abandoned attempts</th><th>Cost of abandoned attempts (USD)</th><th>All calls</th><th>All tokens</th><th>All cost (USD)</th></tr></thead>\n<tbody><tr>{}</tr></tbody>\n</table>\n",
        [
            int(&k("units"), t.units),
            int(&k("turns"), t.turns),
            int(&k("model_calls"), t.model_calls),
            int(&k("refused_calls"), t.refused_calls),
            int(&k("total_tokens"), t.total_tokens),
            num(&k("cost_usd"), t.cost_usd),
            num(&k("wall_seconds"), t.wall_seconds),
            int(&k("abandoned_attempts"), t.abandoned_attempts),
            int(&k("abandoned_calls"), t.abandoned_calls),
            int(&k("abandoned_tokens"), t.abandoned_tokens),
            num(&k("abandoned_cost_usd"), t.abandoned_cost_usd),
            int(&k("all_calls"), t.all_calls),
            int(&k("all_tokens"), t.all_tokens),
            num(&k("all_cost_usd"), t.all_cost_usd),
        ]
        .iter()
        .map(|c| format!("<td class=\"n\">{c}</td>"))
        .collect::<String>()
    );
    out += "<p class=\"note\">Calls of abandoned attempts: the model calls of agents whose worker was lost mid-run (the unit ran again elsewhere), as their worker last reported them: paid for, and not in the unit&#39;s own figures.</p>\n";
    out += "<table id=\"agent-units\">\n<thead><tr><th>Unit</th><th>Turns</th><th>Model calls</th><th>Tokens</th><th>Cost (USD)</th><th>Wall time (s)</th><th>Exit</th><th>Transcript</th><th>Abandoned attempts</th><th>Calls of abandoned attempts</th></tr></thead>\n<tbody>\n";
    for (i, u) in a.units.iter().take(MAX_AGENT_ROWS).enumerate() {
        let idx = i.to_string();
        let k = |f: &str| json_pointer(&["agent", "units", idx.as_str(), f]);
        let transcript = match &u.transcript {
            Some(p) => transcript_link(&k("transcript"), p, u.transcript_truncated),
            None => opt_int::<u32>(&k("transcript"), None),
        };
        let _ = writeln!(
            out,
            "<tr><th class=\"mono\">{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&u.unit.dir_name()),
            opt_int(&k("turns"), u.turns),
            opt_int(&k("model_calls"), u.model_calls),
            opt_int(&k("total_tokens"), u.total_tokens),
            opt_num(&k("cost_usd"), u.cost_usd),
            opt_num(&k("wall_seconds"), u.wall_seconds),
            opt_int(&k("exit_code"), u.exit_code),
            transcript,
            int(&k("abandoned_attempts"), u.abandoned_attempts),
            int(&k("abandoned_calls"), u.abandoned_calls),
        );
    }
    out += "</tbody>\n</table>\n";
    if a.units.len() > MAX_AGENT_ROWS {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more units in report.json.</p>",
            a.units.len() - MAX_AGENT_ROWS
        );
    }
    out += "</section>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::agent::{transcript_path, AgentUnitRow};
    use crate::scoring::UnitId;

    #[test]
    fn the_section_keys_its_numbers_and_links_only_transcript_files() {
        let unit = UnitId::new("t<1>", 2);
        let a = AgentSection::new(vec![
            AgentUnitRow {
                unit: unit.clone(),
                turns: Some(3),
                model_calls: Some(4),
                wall_seconds: Some(1.5),
                transcript: Some(transcript_path(&unit)),
                abandoned_attempts: 1,
                abandoned_calls: 2,
                ..AgentUnitRow::default()
            },
            AgentUnitRow {
                unit: UnitId::new("x", 1),
                transcript: Some("javascript:alert(1)".into()),
                ..AgentUnitRow::default()
            },
        ]);
        let html = agent_section(&a);
        assert!(
            html.contains("<th class=\"mono\">t&lt;1&gt;_cycle2</th>"),
            "{html}"
        );
        assert!(html.contains(
            "<a href=\"transcripts/t_1__2.txt\" data-key=\"/agent/units/0/transcript\">"
        ));
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("data-key=\"/agent/totals/all_calls\">6</span>"));
        assert!(html.contains("data-key=\"/agent/totals/abandoned_calls\">2</span>"));
        assert!(html.contains("data-key=\"/agent/units/1/turns\">n/a</span>"));
    }
}
