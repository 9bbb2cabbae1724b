//! Per-unit exports beside the report: `units.jsonl` and `units.csv`, one row per unit with
//! the same, stable columns (`UNIT_COLUMNS`, documented in the README). Rendered from the
//! report alone, so `ase score` and the coordinator's finish write the same bytes.

use super::agent::AgentUnitRow;
use super::{Report, TaskInfo};
use serde::Serialize;
use std::collections::HashMap;

pub const UNITS_JSONL: &str = "units.jsonl";
pub const UNITS_CSV: &str = "units.csv";

/// The columns, in order. Adding one goes at the end; none is renamed or removed.
pub const UNIT_COLUMNS: [&str; 22] = [
    "run",
    "task",
    "round",
    "type",
    "cwe",
    "language",
    "verdict",
    "broken_cause",
    "reason",
    "upstream_status",
    "upstream_outcome",
    "upstream_secure",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "gen_time_s",
    "agent_turns",
    "agent_model_calls",
    "agent_wall_s",
    "agent_transcript",
    "agent_abandoned_calls",
];

/// One unit's row; field names are `UNIT_COLUMNS`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitRow<'a> {
    pub run: String,
    pub task: &'a str,
    pub round: u32,
    #[serde(rename = "type")]
    pub vuln_type: &'a str,
    pub cwe: &'a str,
    pub language: &'a str,
    pub verdict: &'static str,
    /// Empty unless the verdict is `broken`.
    pub broken_cause: &'static str,
    pub reason: &'a str,
    pub upstream_status: &'static str,
    pub upstream_outcome: &'static str,
    /// Upstream counts the unit secure.
    pub upstream_secure: bool,
    /// Empty (CSV) or null (JSONL) where not recorded.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub gen_time_s: Option<f64>,
    /// Agent mode (the report's `agent` section); empty / null for other runs and units.
    pub agent_turns: Option<u32>,
    pub agent_model_calls: Option<u32>,
    pub agent_wall_s: Option<f64>,
    /// The transcript's file, relative to the report.
    pub agent_transcript: Option<&'a str>,
    /// Calls of attempts abandoned mid-agent (their worker was lost).
    pub agent_abandoned_calls: Option<u32>,
}

/// The rows of every unit, in the report's order.
pub fn unit_rows(report: &Report) -> Vec<UnitRow<'_>> {
    let c = &report.provenance.config;
    let run = format!("{}__{}", c.model, c.batch);
    let tasks: HashMap<&str, &TaskInfo> = report
        .tasks
        .iter()
        .map(|t| (t.instance_id.as_str(), t))
        .collect();
    let agents: HashMap<&crate::scoring::UnitId, &AgentUnitRow> = report
        .agent
        .iter()
        .flat_map(|a| a.units.iter().map(|r| (&r.unit, r)))
        .collect();
    report
        .units
        .iter()
        .map(|u| {
            let t = tasks.get(u.unit.instance_id.as_str());
            let a = agents.get(&u.unit);
            let field = |f: fn(&TaskInfo) -> &str| t.map_or("", |t| f(t));
            UnitRow {
                run: run.clone(),
                task: &u.unit.instance_id,
                round: u.unit.round,
                vuln_type: field(|t| &t.vuln_type),
                cwe: field(|t| &t.cwe_id),
                language: field(|t| &t.language),
                verdict: u.verdict.name(),
                broken_cause: u.broken_cause.map_or("", |k| k.name()),
                reason: &u.reason,
                upstream_status: match u.status {
                    crate::scoring::UnitStatus::Secure => "secure",
                    crate::scoring::UnitStatus::NotSecure => "not_secure",
                    crate::scoring::UnitStatus::Failed => "failed",
                },
                upstream_outcome: u.kind.name(),
                upstream_secure: u.status == crate::scoring::UnitStatus::Secure,
                prompt_tokens: u.usage.prompt_tokens,
                completion_tokens: u.usage.completion_tokens,
                total_tokens: u.usage.total_tokens,
                cost_usd: u.usage.cost_usd,
                gen_time_s: u.usage.gen_time_s,
                agent_turns: a.and_then(|a| a.turns),
                agent_model_calls: a.and_then(|a| a.model_calls),
                agent_wall_s: a.and_then(|a| a.wall_seconds),
                agent_transcript: a.and_then(|a| a.transcript.as_deref()),
                agent_abandoned_calls: a.map(|a| a.abandoned_calls),
            }
        })
        .collect()
}

/// One JSON object per line.
pub fn units_jsonl(report: &Report) -> String {
    let mut out = String::new();
    for row in unit_rows(report) {
        out += &serde_json::to_string(&row).expect("a unit row serialises");
        out.push('\n');
    }
    out
}

/// RFC 4180: a field with a comma, quote, CR or LF is quoted, its quotes doubled.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A header line of `UNIT_COLUMNS`, then one line per unit (CRLF-free, LF line ends).
pub fn units_csv(report: &Report) -> String {
    let mut out = UNIT_COLUMNS.join(",") + "\n";
    for r in unit_rows(report) {
        let round = r.round.to_string();
        let n = |x: Option<u64>| x.map_or(String::new(), |x| x.to_string());
        let f = |x: Option<f64>| x.map_or(String::new(), crate::scoring::stats::python_float_str);
        let usage = [
            n(r.prompt_tokens),
            n(r.completion_tokens),
            n(r.total_tokens),
            f(r.cost_usd),
            f(r.gen_time_s),
            n(r.agent_turns.map(u64::from)),
            n(r.agent_model_calls.map(u64::from)),
            f(r.agent_wall_s),
            r.agent_transcript.unwrap_or("").to_string(),
            n(r.agent_abandoned_calls.map(u64::from)),
        ];
        let fields: [&str; 22] = [
            &r.run,
            r.task,
            &round,
            r.vuln_type,
            r.cwe,
            r.language,
            r.verdict,
            r.broken_cause,
            r.reason,
            r.upstream_status,
            r.upstream_outcome,
            if r.upstream_secure { "true" } else { "false" },
            &usage[0],
            &usage[1],
            &usage[2],
            &usage[3],
            &usage[4],
            &usage[5],
            &usage[6],
            &usage[7],
            &usage[8],
            &usage[9],
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out += &line.join(",");
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Provenance, RunConfig, Scores};
    use crate::scoring::v1::{score_v1, V1Input, V1Task};
    use crate::scoring::{Generation, OutcomeKind, UnitId, UnitOutcome};

    fn report() -> Report {
        let input = V1Input {
            rounds: 1,
            tasks: vec![V1Task {
                instance_id: "a".into(),
                vuln_type: "XSS".into(),
                baseline: 1,
            }],
            generations: vec![Generation {
                unit: UnitId::new("a", 1),
                success: false,
                time_cost: 1.5,
            }],
            scans: [(UnitId::new("a", 1), 0)].into(),
        };
        let provenance = Provenance {
            config: RunConfig {
                model: "m,1".into(),
                batch: "b".into(),
                rounds: 1,
                ..RunConfig::default()
            },
            ..Provenance::default()
        };
        let mut units = crate::scoring::v1::unit_outcomes(&input);
        units[0].usage.prompt_tokens = Some(10);
        units[0].usage.completion_tokens = Some(5);
        units[0].usage.total_tokens = Some(15);
        units[0].usage.cost_usd = Some(0.25);
        units.push(UnitOutcome::new(
            UnitId::new("ghost", 2),
            OutcomeKind::Error,
            "said \"no\", then\nstopped\r\n",
        ));
        Report::new(provenance, units, Scores::V1(score_v1(&input).unwrap())).with_tasks([
            TaskInfo {
                instance_id: "a".into(),
                vuln_type: "XSS".into(),
                cwe_id: "CWE-79".into(),
                language: "php".into(),
            },
        ])
    }

    #[test]
    fn csv_has_the_documented_columns_and_escapes_reasons() {
        let csv = units_csv(&report());
        let mut lines = csv.split_inclusive('\n');
        assert_eq!(
            lines.next().unwrap(),
            "run,task,round,type,cwe,language,verdict,broken_cause,reason,upstream_status,upstream_outcome,upstream_secure,prompt_tokens,completion_tokens,total_tokens,cost_usd,gen_time_s,agent_turns,agent_model_calls,agent_wall_s,agent_transcript,agent_abandoned_calls\n"
        );
        // Upstream counts the scan of the masked tree secure; our verdict is broken.
        assert_eq!(
            lines.next().unwrap(),
            "\"m,1__b\",a,1,XSS,CWE-79,php,broken,not_applied,\"0 findings, below the baseline of 1\",secure,secure,true,10,5,15,0.25,1.5,,,,,\n"
        );
        // Quotes doubled, newlines kept inside the quoted field; unknown task: empty fields.
        assert_eq!(
            lines.collect::<String>(),
            "\"m,1__b\",ghost,2,,,,broken,error,\"said \"\"no\"\", then\nstopped\r\n\",failed,error,false,,,,,,,,,,\n"
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a\rb"), "\"a\rb\"");
    }

    #[test]
    fn jsonl_has_one_object_per_unit_with_the_same_columns() {
        let jsonl = units_jsonl(&report());
        let rows: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        let keys: Vec<&str> = rows[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = UNIT_COLUMNS.to_vec();
        columns.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, columns);
        assert_eq!(rows[0]["verdict"], "broken");
        assert_eq!(rows[0]["upstream_secure"], true);
        assert_eq!(rows[0]["round"], 1);
        assert_eq!(rows[1]["reason"], "said \"no\", then\nstopped\r\n");
        assert_eq!(rows[1]["type"], "");
        assert_eq!(rows[0]["cost_usd"], 0.25);
        assert_eq!(rows[0]["gen_time_s"], 1.5);
        assert_eq!(rows[1]["total_tokens"], serde_json::Value::Null);
    }

    #[test]
    fn agent_columns_come_from_the_agent_section() {
        use crate::report::agent::{AgentSection, AgentUnitRow};
        let r = report().with_agent(AgentSection::new(vec![AgentUnitRow {
            unit: UnitId::new("a", 1),
            turns: Some(3),
            model_calls: Some(4),
            wall_seconds: Some(2.5),
            transcript: Some("transcripts/a_1.txt".into()),
            abandoned_attempts: 1,
            abandoned_calls: 2,
            ..AgentUnitRow::default()
        }]));
        let csv = units_csv(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(
            lines[1].ends_with(",0.25,1.5,3,4,2.5,transcripts/a_1.txt,2"),
            "{}",
            lines[1]
        );
        let rows: Vec<serde_json::Value> = units_jsonl(&r)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[0]["agent_turns"], 3);
        assert_eq!(rows[0]["agent_model_calls"], 4);
        assert_eq!(rows[0]["agent_transcript"], "transcripts/a_1.txt");
        assert_eq!(rows[0]["agent_abandoned_calls"], 2);
        assert_eq!(rows[1]["agent_turns"], serde_json::Value::Null);
        assert_eq!(rows[1]["agent_abandoned_calls"], serde_json::Value::Null);
    }
}
