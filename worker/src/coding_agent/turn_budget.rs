//! An agent that ran out of its turn budget: Claude Code ends with exit 1 and
//! `"subtype":"error_max_turns"` in its JSON result when `--max-turns` is reached; any agent
//! whose call was refused by the proxy for its unit's spent budget (`max_calls`, `max_tokens`)
//! stopped for the same reason. Upstream's agent mode takes whatever the agent left in the
//! file, however the agent ended; so does this: the files it changed before it ran out are its
//! answer (the record says it stopped, and why), and one that changed nothing is a failed
//! generation that says so. A crash for any other reason stays a failed generation.

/// Claude Code's result subtype when `--max-turns` is reached (its `--output-format json`).
const CLAUDE_MAX_TURNS: &str = "error_max_turns";

/// Why the agent stopped short, when it ran out of a budget: `max_turns` (the agent's own
/// count), `max_calls` or `max_tokens` (the proxy's). None: it did not.
pub fn ran_out(
    exit_code: Option<i64>,
    output_tail: &str,
    budget_spent: Option<&'static str>,
) -> Option<String> {
    if exit_code == Some(0) || exit_code.is_none() {
        return None;
    }
    let compact: String = output_tail.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains(&format!("\"subtype\":\"{CLAUDE_MAX_TURNS}\"")) {
        return Some("max_turns".into());
    }
    budget_spent.map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_codes_max_turns_and_the_proxys_budgets_are_running_out_nothing_else_is() {
        let none = None;
        let claude = r#"{"type":"result","subtype": "error_max_turns","num_turns":3}"#;
        assert_eq!(ran_out(Some(1), claude, none).as_deref(), Some("max_turns"));
        // Exit 0 finished; no exit code was killed (time limit).
        assert_eq!(ran_out(Some(0), claude, none), None);
        assert_eq!(ran_out(None, claude, none), None);
        // A crash is a crash, even after calls.
        let crash = r#"{"type":"result","subtype":"error_during_execution"}"#;
        assert_eq!(ran_out(Some(1), crash, none), None);
        assert_eq!(
            ran_out(Some(2), "litellm: 400", Some("max_calls")).as_deref(),
            Some("max_calls")
        );
    }
}
