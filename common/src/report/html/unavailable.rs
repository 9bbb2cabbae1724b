//! The tasks a preflight kept out of the run, apart from the units: they were never run, so
//! they are neither secure nor failures. Keyed to report.json's `unavailable`.

use super::{short, text, MAX_NAME_CHARS, MAX_REASON_CHARS};
use crate::preflight::UnavailableTask;
use std::fmt::Write;

pub(super) fn unavailable_section(unavailable: &[UnavailableTask], scored_tasks: usize) -> String {
    if unavailable.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<section id=\"unavailable\">\n<h2>Unavailable tasks ({})</h2>\n<p class=\"note\">Kept out of the run before any model call: their inputs cannot be had. Every score on this page is over the {scored_tasks} remaining task(s), upstream's figures included; these tasks are not model failures.</p>\n<table id=\"unavailable-list\">\n<thead><tr><th>Task</th><th>Missing</th><th>Reason</th></tr></thead>\n<tbody>\n",
        unavailable.len()
    );
    for (i, u) in unavailable.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td><span data-key=\"/unavailable/{i}/missing\">{}</span></td><td class=\"reason\">{}</td></tr>",
            short(&u.instance_id, MAX_NAME_CHARS),
            u.missing,
            text(&format!("/unavailable/{i}/reason"), &u.reason, MAX_REASON_CHARS)
        );
    }
    out += "</tbody>\n</table>\n</section>\n";
    out
}
