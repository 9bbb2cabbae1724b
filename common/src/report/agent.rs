//! The report's "Agent" section (agent mode): per unit the coding agent's turns, model calls,
//! tokens, cost, wall time and its transcript's file, with the calls of attempts that were
//! abandoned (their worker died mid-agent) counted apart; per run the totals.
//!
//! Built by the coordinator's finish from typed records (the committed generation's
//! `agent` record and the usage each attempt's worker reported while it ran), never parsed
//! back from text.

use super::cell;
use crate::scoring::stats::python_float_str;
use crate::scoring::UnitId;
use serde::{Deserialize, Serialize};

/// Folder of the run's outputs that holds the agents' transcripts.
pub const TRANSCRIPTS_DIR: &str = "transcripts";

/// `transcripts/<task>_<round>.txt`, the task id kept to `[A-Za-z0-9._-]` (others become `_`).
pub fn transcript_path(unit: &UnitId) -> String {
    let task: String = unit
        .instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A leading dot would hide the file; `..` must never be a name.
    let task = task.trim_start_matches('.');
    let task = if task.is_empty() { "_" } else { task };
    format!("{TRANSCRIPTS_DIR}/{task}_{}.txt", unit.round)
}

/// One unit's agent figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentUnitRow {
    pub unit: UnitId,
    /// Of the committed generation's agent; `None` when no generation was committed.
    pub turns: Option<u32>,
    pub model_calls: Option<u32>,
    pub refused_calls: Option<u32>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub exit_code: Option<i64>,
    /// The transcript's file in the run's outputs (relative to `report.json`).
    pub transcript: Option<String>,
    pub transcript_truncated: bool,
    /// Attempts whose worker was lost mid-agent, and what their agents spent (as their workers
    /// last reported it).
    pub abandoned_attempts: u32,
    pub abandoned_turns: u32,
    pub abandoned_calls: u32,
    pub abandoned_tokens: u64,
    pub abandoned_cost_usd: Option<f64>,
}

impl AgentUnitRow {
    /// Calls of the committed generation and of the abandoned attempts together.
    pub fn all_calls(&self) -> u64 {
        u64::from(self.model_calls.unwrap_or(0)) + u64::from(self.abandoned_calls)
    }
}

/// The run's totals over every unit's row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentTotals {
    /// Units with a committed generation by an agent.
    pub units: u32,
    pub turns: u64,
    pub model_calls: u64,
    pub refused_calls: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
    pub wall_seconds: f64,
    pub abandoned_attempts: u64,
    pub abandoned_calls: u64,
    pub abandoned_tokens: u64,
    pub abandoned_cost_usd: f64,
    /// `model_calls + abandoned_calls`: every call the run paid for.
    pub all_calls: u64,
    pub all_tokens: u64,
    pub all_cost_usd: f64,
}

/// The section: totals, then a row per unit that ran an agent (in the report's unit order).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentSection {
    pub totals: AgentTotals,
    pub units: Vec<AgentUnitRow>,
}

fn micro(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl AgentSection {
    pub fn new(units: Vec<AgentUnitRow>) -> Self {
        let mut t = AgentTotals::default();
        for u in &units {
            if u.model_calls.is_some() {
                t.units += 1;
            }
            t.turns += u64::from(u.turns.unwrap_or(0));
            t.model_calls += u64::from(u.model_calls.unwrap_or(0));
            t.refused_calls += u64::from(u.refused_calls.unwrap_or(0));
            t.total_tokens += u.total_tokens.unwrap_or(0);
            t.cost_usd += u.cost_usd.unwrap_or(0.0);
            t.wall_seconds += u.wall_seconds.unwrap_or(0.0);
            t.abandoned_attempts += u64::from(u.abandoned_attempts);
            t.abandoned_calls += u64::from(u.abandoned_calls);
            t.abandoned_tokens += u.abandoned_tokens;
            t.abandoned_cost_usd += u.abandoned_cost_usd.unwrap_or(0.0);
        }
        t.all_calls = t.model_calls + t.abandoned_calls;
        t.all_tokens = t.total_tokens + t.abandoned_tokens;
        t.cost_usd = micro(t.cost_usd);
        t.abandoned_cost_usd = micro(t.abandoned_cost_usd);
        t.all_cost_usd = micro(t.cost_usd + t.abandoned_cost_usd);
        t.wall_seconds = (t.wall_seconds * 1e3).round() / 1e3;
        AgentSection { totals: t, units }
    }

    /// The row of `unit`, if it ran an agent.
    pub fn row(&self, unit: &UnitId) -> Option<&AgentUnitRow> {
        self.units.iter().find(|r| &r.unit == unit)
    }
}

fn n<T: ToString>(x: Option<T>) -> String {
    x.map_or(String::new(), |x| x.to_string())
}

fn f(x: Option<f64>) -> String {
    x.map_or(String::new(), python_float_str)
}

/// `## Agent`: the totals, then one row per unit with a link to its transcript.
pub fn agent_markdown(a: &AgentSection) -> String {
    let t = &a.totals;
    let mut out = format!(
        "\n## Agent\n\n| Units | Turns | Model calls | Refused calls | Tokens | Cost (USD) | Wall time (s) | Abandoned attempts | Calls of abandoned attempts | Tokens of abandoned attempts | All calls | All tokens | All cost (USD) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n\n\
         Calls of abandoned attempts: the model calls of agents whose worker was lost mid-run \
         (the unit ran again elsewhere), as the worker last reported them; paid for, not \
         counted in the unit's own figures.\n\n\
         | Unit | Turns | Model calls | Tokens | Cost (USD) | Wall time (s) | Exit | Transcript | Abandoned attempts | Calls of abandoned attempts |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
        t.units,
        t.turns,
        t.model_calls,
        t.refused_calls,
        t.total_tokens,
        python_float_str(t.cost_usd),
        python_float_str(t.wall_seconds),
        t.abandoned_attempts,
        t.abandoned_calls,
        t.abandoned_tokens,
        t.all_calls,
        t.all_tokens,
        python_float_str(t.all_cost_usd),
    );
    for u in &a.units {
        let transcript = match &u.transcript {
            Some(p) if u.transcript_truncated => format!("[transcript]({p}) (truncated)"),
            Some(p) => format!("[transcript]({p})"),
            None => String::new(),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&u.unit.dir_name()),
            n(u.turns),
            n(u.model_calls),
            n(u.total_tokens),
            f(u.cost_usd),
            f(u.wall_seconds),
            n(u.exit_code),
            transcript,
            u.abandoned_attempts,
            u.abandoned_calls,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, calls: Option<u32>, abandoned: u32) -> AgentUnitRow {
        AgentUnitRow {
            unit: UnitId::new(task, 1),
            turns: calls.map(|c| c.saturating_sub(1)),
            model_calls: calls,
            total_tokens: calls.map(|c| u64::from(c) * 100),
            cost_usd: calls.map(|_| 0.1),
            wall_seconds: calls.map(|_| 1.25),
            transcript: calls.map(|_| transcript_path(&UnitId::new(task, 1))),
            abandoned_attempts: u32::from(abandoned > 0),
            abandoned_calls: abandoned,
            abandoned_tokens: u64::from(abandoned) * 10,
            abandoned_cost_usd: (abandoned > 0).then_some(0.2),
            ..AgentUnitRow::default()
        }
    }

    #[test]
    fn totals_count_abandoned_calls_apart_and_in_all_calls() {
        let a = AgentSection::new(vec![
            row("a", Some(4), 2),
            row("b", Some(3), 0),
            row("c", None, 5),
        ]);
        let t = &a.totals;
        assert_eq!(t.units, 2);
        assert_eq!((t.turns, t.model_calls), (5, 7));
        assert_eq!((t.abandoned_attempts, t.abandoned_calls), (2, 7));
        assert_eq!(t.all_calls, 14);
        assert_eq!(
            (t.total_tokens, t.abandoned_tokens, t.all_tokens),
            (700, 70, 770)
        );
        assert_eq!(t.cost_usd, 0.2);
        assert_eq!(t.all_cost_usd, 0.6);
        assert_eq!(a.row(&UnitId::new("c", 1)).unwrap().all_calls(), 5);
        let md = agent_markdown(&a);
        assert!(
            md.contains("| 2 | 5 | 7 | 0 | 700 | 0.2 | 2.5 | 2 | 7 | 70 | 14 | 770 | 0.6 |"),
            "{md}"
        );
        assert!(md.contains("| a_cycle1 | 3 | 4 | 400 | 0.1 | 1.25 |  | [transcript](transcripts/a_1.txt) | 1 | 2 |"), "{md}");
        assert!(
            md.contains("| c_cycle1 |  |  |  |  |  |  |  | 1 | 5 |"),
            "{md}"
        );
    }

    #[test]
    fn transcript_paths_stay_inside_their_folder() {
        assert_eq!(
            transcript_path(&UnitId::new("demo_sqli_py", 3)),
            "transcripts/demo_sqli_py_3.txt"
        );
        assert_eq!(
            transcript_path(&UnitId::new("../x/y z", 1)),
            "transcripts/_x_y_z_1.txt"
        );
        assert_eq!(
            transcript_path(&UnitId::new("..", 2)),
            "transcripts/__2.txt"
        );
    }
}
