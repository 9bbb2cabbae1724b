//! Agent mode in a run's outputs: each committed generation's transcript as a file
//! (`transcripts/<task>_<round>.txt`, written as the records are read, so no more than one is
//! in memory), and the report's "Agent" section from the typed records: the committed
//! generation's agent figures and the usage of the unit's abandoned attempts.

use super::build::{GenerationFacts, OutputError, OutputSink};
use crate::records::UnitRecord;
use ase_common::agent_record::{AgentRecord, AttemptUsage};
use ase_common::report::agent::{transcript_path, AgentSection, AgentUnitRow};
use ase_common::unit::GenerationRecord;
use std::collections::BTreeMap;

/// What the report needs of a generation's agent record (its transcript is a file by then).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentFacts {
    pub turns: u32,
    pub model_calls: u32,
    pub refused_calls: u32,
    pub usage: Option<ase_common::unit::TokenUsage>,
    pub cost_usd: Option<f64>,
    pub wall_seconds: f64,
    pub exit_code: Option<i64>,
    /// The transcript's file in the run's outputs, when it had one.
    pub transcript: Option<String>,
    pub transcript_truncated: bool,
}

impl From<&AgentRecord> for AgentFacts {
    fn from(a: &AgentRecord) -> Self {
        AgentFacts {
            turns: a.turns,
            model_calls: a.model_calls,
            refused_calls: a.refused_calls,
            usage: a.usage,
            cost_usd: a.cost_usd,
            wall_seconds: a.wall_seconds,
            exit_code: a.exit_code,
            transcript: None,
            transcript_truncated: a.transcript_truncated,
        }
    }
}

/// Writes `g`'s agent transcript (bounded) into `sink` and names its file in `facts`.
pub fn write_transcript(
    sink: &mut dyn OutputSink,
    g: &GenerationRecord,
    facts: &mut GenerationFacts,
) -> Result<(), OutputError> {
    let (Some(agent), Some(f)) = (&g.agent, facts.agent.as_mut()) else {
        return Ok(());
    };
    if agent.transcript.is_empty() {
        return Ok(());
    }
    // A record from any worker: bounded again here.
    let bounded = AgentRecord::clone(agent).bounded();
    let name = transcript_path(&g.unit);
    sink.put(&name, &mut |w| {
        std::io::Write::write_all(w, bounded.transcript.as_bytes())
    })?;
    f.transcript = Some(name);
    f.transcript_truncated = bounded.transcript_truncated;
    Ok(())
}

/// The section, when the run has agent figures: a row per unit whose generation ran an agent
/// or that has abandoned attempts, in unit order.
pub fn agent_section(
    units: &[UnitRecord],
    generations: &BTreeMap<u32, GenerationFacts>,
) -> Option<AgentSection> {
    let mut rows = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let agent = generations.get(&(i as u32)).and_then(|g| g.agent.as_ref());
        if agent.is_none() && u.agent_attempts.is_empty() {
            continue;
        }
        let mut abandoned = AttemptUsage::default();
        for a in &u.agent_attempts {
            abandoned.add(&a.usage);
        }
        rows.push(AgentUnitRow {
            unit: u.unit.clone(),
            turns: agent.map(|a| a.turns),
            model_calls: agent.map(|a| a.model_calls),
            refused_calls: agent.map(|a| a.refused_calls),
            prompt_tokens: agent.and_then(|a| a.usage).map(|t| t.prompt_tokens),
            completion_tokens: agent.and_then(|a| a.usage).map(|t| t.completion_tokens),
            total_tokens: agent.and_then(|a| a.usage).map(|t| t.total_tokens),
            cost_usd: agent.and_then(|a| a.cost_usd),
            wall_seconds: agent.map(|a| a.wall_seconds),
            exit_code: agent.and_then(|a| a.exit_code),
            transcript: agent.and_then(|a| a.transcript.clone()),
            transcript_truncated: agent.is_some_and(|a| a.transcript_truncated),
            abandoned_attempts: u.agent_attempts.len() as u32,
            abandoned_turns: abandoned.turns,
            abandoned_calls: abandoned.model_calls,
            abandoned_tokens: abandoned.usage.total_tokens,
            abandoned_cost_usd: abandoned.cost_usd,
        });
    }
    (!rows.is_empty()).then(|| AgentSection::new(rows))
}
