//! The score table `ase run` prints at the end: one row per run, read back from the
//! `report.json` it wrote (so the table shows exactly what the files say).

use ase_common::report::{Report, Scores};
use ase_common::scoring::stats::python_float_str;
use ase_common::scoring::UnitStatus;
use std::path::Path;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub run_id: String,
    pub model: String,
    /// `v1` or `v2`, and the dataset's file name.
    pub dataset: String,
    pub quality: f64,
    pub security: f64,
    pub stability: Option<f64>,
    /// Upstream's overall (v2: with upstream's stability defect, as the leaderboard has it).
    pub overall: f64,
    /// v2 only: the overall with stability weighed as a percentage like the others.
    pub overall_corrected: Option<f64>,
    pub units_ok: usize,
    pub units_failed: usize,
}

/// Bytes of a report read back.
const MAX_REPORT_BYTES: u64 = 256 << 20;

pub fn row_from_report(run_id: &str, report_json: &Path) -> anyhow::Result<ScoreRow> {
    let len = std::fs::metadata(report_json)
        .map_err(|e| anyhow::anyhow!("{}: {e}", report_json.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_REPORT_BYTES,
        "{}: larger than {MAX_REPORT_BYTES} bytes",
        report_json.display()
    );
    let text = std::fs::read_to_string(report_json)
        .map_err(|e| anyhow::anyhow!("{}: {e}", report_json.display()))?;
    let report: Report = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a run report: {e}", report_json.display()))?;
    Ok(row(run_id, &report))
}

pub fn row(run_id: &str, report: &Report) -> ScoreRow {
    let failed = report
        .units
        .iter()
        .filter(|u| u.status == UnitStatus::Failed)
        .count();
    let (version, quality, security, stability, overall, overall_corrected) = match &report.scores {
        Scores::V1(s) => ("v1", s.quality, s.security, s.stability, s.overall, None),
        // Upstream's figure first (the spec: comparable with published numbers), the
        // corrected one, which weighs stability like quality and security (x100), beside it.
        Scores::V2(s) => (
            "v2",
            s.all.code_quality_score,
            s.all.code_security_score,
            s.all.code_stability_score,
            s.all.overall_score,
            Some(s.all.overall_score_corrected),
        ),
    };
    ScoreRow {
        run_id: run_id.to_string(),
        model: report.provenance.config.model.clone(),
        dataset: format!("{version} {}", report.provenance.dataset_path),
        quality,
        security,
        stability,
        overall,
        overall_corrected,
        units_ok: report.units.len() - failed,
        units_failed: failed,
    }
}

/// A plain-text table, columns padded to their widest cell.
pub fn render(rows: &[ScoreRow]) -> String {
    let header = [
        "run",
        "model",
        "dataset",
        "quality",
        "security",
        "stability",
        "overall",
        "corrected",
        "units ok",
        "failed",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.run_id.clone(),
                r.model.clone(),
                r.dataset.clone(),
                python_float_str(r.quality),
                python_float_str(r.security),
                r.stability
                    .map_or_else(|| "n/a".to_string(), python_float_str),
                python_float_str(r.overall),
                r.overall_corrected
                    .map_or_else(|| "-".to_string(), python_float_str),
                r.units_ok.to_string(),
                r.units_failed.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            // Text left, numbers right.
            if i < 3 {
                s += &format!("{c:<w$}  ");
            } else {
                s += &format!("{c:>w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in &cells {
        out += &line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_shows_missing_stability() {
        let rows = vec![
            ScoreRow {
                run_id: "m__b".into(),
                model: "m".into(),
                dataset: "v1 tasks.json".into(),
                quality: 100.0,
                security: 50.0,
                stability: Some(66.67),
                overall: 66.67,
                overall_corrected: None,
                units_ok: 6,
                units_failed: 0,
            },
            ScoreRow {
                run_id: "longer-model__b".into(),
                model: "longer-model".into(),
                dataset: "v2 d.json".into(),
                quality: 0.0,
                security: 0.0,
                stability: None,
                overall: 0.0,
                overall_corrected: Some(0.0),
                units_ok: 0,
                units_failed: 3,
            },
        ];
        let t = render(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("run "), "{t}");
        assert!(lines[0].contains(" overall  corrected "), "{t}");
        assert!(lines[2].contains("66.67"), "{t}");
        assert!(lines[3].contains("n/a"), "{t}");
        assert!(lines[3].ends_with(" 3"), "{t}");
        // Every column starts at the same offset on every line.
        let col = lines[0].find("model").unwrap();
        assert_eq!(&lines[2][col..col + 1], "m");
        assert_eq!(&lines[3][col..col + 6], "longer");
    }
}
