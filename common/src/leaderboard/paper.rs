//! The A.S.E paper's own figures (Table 2 of arXiv 2508.18106v3), shown beside a v1
//! leaderboard for orientation only: upstream measured them with its closed per-CVE rules, so
//! they are not comparable with figures from our rules. The figures live in
//! `common/data/paper_table2.json` with their source; they are copied from the paper, never
//! computed, and the file says when it is incomplete.

use serde::{Deserialize, Serialize};

/// One model's row of the paper's table, as printed there (x100, 2 decimals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperRow {
    pub model: String,
    pub overall: f64,
    pub security: f64,
    pub quality: f64,
    pub stability: f64,
}

/// The table with where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperTable {
    pub source: String,
    pub url: String,
    /// The dataset version the figures were measured on ("v1").
    pub dataset_version: String,
    /// How every page must label them.
    pub label: String,
    /// Every row of the paper's table is here.
    pub complete: bool,
    /// What is missing and why, when not complete.
    pub note: String,
    pub rows: Vec<PaperRow>,
}

const PAPER_TABLE2_JSON: &str = include_str!("../../data/paper_table2.json");

/// The shipped table (checked by the tests below: it parses and its figures lie in 0..=100).
pub fn paper_table2() -> PaperTable {
    serde_json::from_str(PAPER_TABLE2_JSON).expect("common/data/paper_table2.json parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_names_its_source_and_says_what_it_lacks() {
        let t = paper_table2();
        assert_eq!(t.url, "https://arxiv.org/html/2508.18106v3");
        assert_eq!(t.dataset_version, "v1");
        assert!(t.label.contains("not comparable with ours"), "{}", t.label);
        for r in &t.rows {
            for x in [r.overall, r.security, r.quality, r.stability] {
                assert!((0.0..=100.0).contains(&x), "{r:?}");
            }
            assert!(!r.model.trim().is_empty());
        }
        if !t.complete {
            assert!(!t.note.trim().is_empty(), "an incomplete table says why");
        }
        // The paper evaluates 26 models: a complete table has them all.
        assert!(!t.complete || t.rows.len() == 26, "{} rows", t.rows.len());
    }
}
