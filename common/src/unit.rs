//! What one unit (task, round) produces, phase by phase.
//!
//! A unit runs in two phases that may run on different workers: **generate** (prompt, model
//! call, answer applied to the code) and **evaluate** (SAST scan, or the v2 container checks).
//! The coordinator commits a [`GenerationRecord`] before it leases the evaluate phase, so a crash
//! after generation never pays for a second model call. These records cross the network and are
//! stored durably: they are plain serde types, versioned by their field names, and bounded by
//! the producer (see the `MAX_*` limits).

use serde::{Deserialize, Serialize};
use std::fmt;

/// One (task, round); upstream names its folder `{instance_id}_cycle{round}`, rounds from 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnitId {
    pub instance_id: String,
    pub round: u32,
}

impl UnitId {
    pub fn new(instance_id: impl Into<String>, round: u32) -> Self {
        Self {
            instance_id: instance_id.into(),
            round,
        }
    }

    /// Upstream's folder (and result key) name of the unit.
    pub fn dir_name(&self) -> String {
        format!("{}_cycle{}", self.instance_id, self.round)
    }

    /// Parses `{instance_id}_cycle{k}` the way upstream splits it: at the first `_cycle`, the
    /// rest must be the round number.
    pub fn parse(name: &str) -> Option<Self> {
        let (instance_id, round) = name.split_once("_cycle")?;
        if instance_id.is_empty() || round.is_empty() || !round.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Self::new(instance_id, round.parse().ok()?))
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dir_name())
    }
}

/// The checks of one unit (upstream: one `*_output.json`, merged into `scan_results.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct V2Scan {
    /// The code was uploaded into the container (upstream key `completion`, `patch_file` before).
    pub completion: bool,
    pub image_status_check: bool,
    pub test_case_check: bool,
    /// The PoC did NOT find the vulnerability.
    pub poc_check: bool,
}

impl V2Scan {
    /// Upstream counts security only where the tests pass too.
    pub fn is_secure(&self) -> bool {
        self.poc_check && self.test_case_check
    }
}

/// Bytes of the raw model answer kept in a record (the rest is cut, and `answer_truncated` set).
pub const MAX_RAW_ANSWER_BYTES: usize = 1 << 20;
/// Bytes of all changed files of one unit together; more fails the generation with a reason.
pub const MAX_CHANGED_BYTES: usize = 8 << 20;
/// Bytes of command output kept per evaluation step (head and tail).
pub const MAX_STEP_OUTPUT_BYTES: usize = 64 << 10;

/// A file of the unit's tree that differs from the repo at `base_commit`: its full new content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    /// Relative to the project root, `/`-separated, checked to stay inside the tree.
    pub path: String,
    /// UTF-8 content; files that are not UTF-8 carry `content_base64` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// Unix mode bits of the file (0o644, 0o755).
    pub mode: u32,
}

impl ChangedFile {
    /// A file of `data`: as text when it is UTF-8, else as base64.
    pub fn from_bytes(path: String, data: Vec<u8>, mode: u32) -> ChangedFile {
        use base64::Engine;
        let (content, content_base64) = match String::from_utf8(data) {
            Ok(text) => (Some(text), None),
            Err(e) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            ),
        };
        ChangedFile {
            path,
            content,
            content_base64,
            mode,
        }
    }

    /// The file's bytes; an error says what is wrong with its content fields.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        match (&self.content, &self.content_base64) {
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("invalid base64: {e}")),
            _ => Err("needs exactly one of content and content_base64".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// How the model's answer became code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMethod {
    GitApply,
    Patch,
    RepairedGitApply,
    RepairedPatch,
    /// v2: the code replaced the `<MASKED>` line.
    Splice,
    /// Agent mode: the files a coding agent changed in its sealed workspace.
    Agent,
}

/// Result of the generate phase of one unit. `success == false` is a model result (empty
/// answer, patch does not apply, path rejected), never an infrastructure failure: those are
/// retried by the coordinator and never reach a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub unit: UnitId,
    pub success: bool,
    /// Why the generation failed (or what was notable when it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ApplyMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_answer: Option<String>,
    #[serde(default)]
    pub answer_truncated: bool,
    /// The unit's code: every file that differs from the base tree, after the protocol's
    /// step 7 (lines that are exactly `<MASKED>` removed). A failed generation still carries the
    /// masked file without its block, which is what upstream scans.
    pub changed_files: Vec<ChangedFile>,
    #[serde(default)]
    pub deleted_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Seconds spent generating (model call and applying), upstream's `time_cost`.
    pub time_cost: f64,
    /// Model requests made (retries included).
    #[serde(default)]
    pub model_attempts: u32,
    /// Prompt size, for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_estimate: Option<u64>,
    /// Agent mode: what the coding agent did (turns, calls, tokens, wall time, transcript).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Box<crate::agent_record::AgentRecord>>,
}

/// One command of the v2 container checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// `upload`, `image_status_check`, `test_case`, `poc`.
    pub step: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub timed_out: bool,
    /// First and last bytes of the output (bounded), lossily decoded.
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub output_bytes: u64,
    pub seconds: f64,
}

/// Result of the evaluate phase of one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvaluationRecord {
    /// v1: findings of our rules for the task's vulnerability type.
    Static {
        unit: UnitId,
        /// Findings on the unit's code; -1 when the scan failed (upstream's convention).
        detected_vul_num: i64,
        /// Findings on the original code, same rules and tool (computed once per task).
        baseline: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        seconds: f64,
        /// Where the findings are, what did not parse, the scanner's version. None: a record
        /// older than this, or no scan ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scan: Option<crate::scan_findings::StaticScanDetail>,
    },
    /// v2: the container checks in the task's image.
    Dynamic {
        unit: UnitId,
        checks: V2Scan,
        steps: Vec<StepLog>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        seconds: f64,
        /// The image the checks ran in, pinned: `name@sha256:…` as pulled from its registry,
        /// or the image id (`sha256:…`) of an image that never came from one. None: no
        /// container ran (failed generation, refused upload), or a record older than this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_digest: Option<String>,
    },
}

impl EvaluationRecord {
    pub fn unit(&self) -> &UnitId {
        match self {
            EvaluationRecord::Static { unit, .. } | EvaluationRecord::Dynamic { unit, .. } => unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let g = GenerationRecord {
            unit: UnitId::new("sqli_01", 2),
            success: true,
            reason: None,
            method: Some(ApplyMethod::RepairedPatch),
            raw_answer: Some("<patch>...</patch>".into()),
            answer_truncated: false,
            changed_files: vec![ChangedFile {
                path: "lib/db.php".into(),
                content: Some("<?php\n".into()),
                content_base64: None,
                mode: 0o644,
            }],
            deleted_files: vec![],
            usage: Some(TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
            }),
            cost_usd: Some(0.001),
            time_cost: 1.5,
            model_attempts: 1,
            prompt_tokens_estimate: Some(9),
            agent: Some(Box::new(crate::agent_record::AgentRecord {
                turns: 3,
                model_calls: 4,
                refused_calls: 1,
                usage: None,
                cost_usd: Some(0.25),
                wall_seconds: 12.5,
                exit_code: Some(0),
                output_tail: "done".into(),
                transcript: "=== call 1".into(),
                transcript_truncated: false,
                ..Default::default()
            })),
        };
        let back: GenerationRecord =
            serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        let e = EvaluationRecord::Static {
            unit: UnitId::new("sqli_01", 2),
            detected_vul_num: -1,
            baseline: 3,
            reason: Some("scan timed out".into()),
            seconds: 0.4,
            scan: None,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "static");
        assert_eq!(serde_json::from_value::<EvaluationRecord>(json).unwrap(), e);
    }

    #[test]
    fn a_dynamic_record_keeps_its_image_digest_and_older_records_still_read() {
        let e = EvaluationRecord::Dynamic {
            unit: UnitId::new("v_01", 1),
            checks: Default::default(),
            steps: vec![],
            reason: None,
            seconds: 2.0,
            image_digest: Some("127.0.0.1:5000/x@sha256:abc".into()),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["image_digest"], "127.0.0.1:5000/x@sha256:abc");
        assert_eq!(serde_json::from_value::<EvaluationRecord>(json).unwrap(), e);
        // Written before the field existed.
        let old = r#"{"kind": "dynamic", "unit": {"instance_id": "v_01", "round": 1},
            "checks": {"completion": true, "image_status_check": false,
                       "test_case_check": false, "poc_check": false},
            "steps": [], "seconds": 1.0}"#;
        match serde_json::from_str::<EvaluationRecord>(old).unwrap() {
            EvaluationRecord::Dynamic { image_digest, .. } => assert_eq!(image_digest, None),
            other => panic!("{other:?}"),
        }
    }
}
