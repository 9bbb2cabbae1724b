//! What each task contributed to a run's figures, kept in the scores (`task_counts`) so that
//! the intervals of quality, security, stability and overall can be computed over tasks from a
//! report alone (`uncertainty::score_intervals`), with the same arithmetic as the scores.

use serde::{Deserialize, Serialize};

/// One task's counts. A task listed twice in the dataset has one entry (the figures'
/// intervals treat it once; upstream's security counts it twice, a case only upstream's own
/// data_v2.json has, where the two copies have the same results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub instance_id: String,
    /// v1: the vulnerability type (figures are means over types); v2: the CWE.
    pub group: String,
    /// Units counted for quality (v1: generated and scanned; v2: tests passed).
    pub quality: u32,
    /// Units quality is taken over (v1: the units generation recorded; v2: the rounds).
    pub quality_of: u32,
    /// Units secure for upstream's figures.
    pub secure: u32,
    pub rounds: u32,
    /// Per round, 1 or 0, what stability is computed from (v1: secure; v2: the PoC check
    /// alone, as upstream does).
    pub stability_results: Vec<u8>,
}
