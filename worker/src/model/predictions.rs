//! Answers made elsewhere (another harness, an agent, a human), read from a JSONL file.
//!
//! One JSON object per line:
//! - `instance_id` (string, required);
//! - `round` (integer >= 1, optional): the round the answer is for; without it the answer
//!   serves every round that has no answer of its own;
//! - `answer`, or `model_patch` as SWE-bench names a v1 patch (string or null; exactly one of
//!   the two). A null answer is a recorded empty generation.
//!
//! Other keys (`model_name_or_path`, ...) are ignored. Blank lines are skipped. The whole file is
//! checked at load and every problem is reported with its line number, so one pass fixes a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

use serde_json::Value;

/// A predictions file larger than this is refused rather than read into memory.
pub const MAX_PREDICTIONS_BYTES: u64 = 1 << 30;
/// Problems listed in an error message at most; the count of the rest is given.
const MAX_LISTED_PROBLEMS: usize = 50;

/// One problem of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Error)]
pub enum PredictionsError {
    #[error("predictions file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("predictions file {path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("predictions file {path}: {}", list_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<LineProblem>,
    },
}

fn list_problems(problems: &[LineProblem]) -> String {
    let mut s = problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(|p| format!("line {}: {}", p.line, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > MAX_LISTED_PROBLEMS {
        s.push_str(&format!(
            "; and {} more",
            problems.len() - MAX_LISTED_PROBLEMS
        ));
    }
    s
}

/// The entries of a predictions file as they go into a run spec (`model.entries`), each line's
/// object kept whole: read with `max_bytes` as its bound and checked by the same parser the
/// worker answers from ([`Predictions::parse`]), so a bad file is refused, every problem with its
/// line, before anything is sent.
pub fn read_entries(path: &Path, max_bytes: u64) -> Result<Vec<Value>, PredictionsError> {
    use std::io::Read;
    let io = |source| PredictionsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // The file may grow between a size check and the read: never take more than the bound.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(PredictionsError::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    Predictions::parse(path, &bytes)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            // Parsed once already: each non-blank line is a JSON object.
            serde_json::from_slice(line).map_err(|e| PredictionsError::Invalid {
                path: path.to_path_buf(),
                problems: vec![LineProblem {
                    line: 0,
                    message: e.to_string(),
                }],
            })
        })
        .collect()
}

/// The answers of a predictions file, by unit.
#[derive(Debug, Clone)]
pub struct Predictions {
    path: PathBuf,
    /// (instance_id, round) -> answer (None: recorded as null).
    per_round: HashMap<(String, u32), Option<String>>,
    /// instance_id -> answer for rounds without their own.
    every_round: HashMap<String, Option<String>>,
}

impl Predictions {
    pub fn load(path: &Path) -> Result<Self, PredictionsError> {
        let io = |source| PredictionsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_PREDICTIONS_BYTES {
            return Err(PredictionsError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_PREDICTIONS_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::parse(path, &bytes)
    }

    /// Parse the content of a predictions file; `path` only names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, PredictionsError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut problems = Vec::new();
        let mut per_round = HashMap::new();
        let mut every_round = HashMap::new();
        // Line where each unit was first given, to name both lines of a duplicate.
        let mut seen: HashMap<(String, Option<u32>), usize> = HashMap::new();
        for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let mut problem = |message: String| problems.push(LineProblem { line, message });
            let Ok(text) = std::str::from_utf8(raw) else {
                problem("not valid UTF-8".to_string());
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            let entry = match parse_entry(text) {
                Ok(e) => e,
                Err(message) => {
                    problem(message);
                    continue;
                }
            };
            let key = (entry.instance_id.clone(), entry.round);
            if let Some(first) = seen.get(&key) {
                let which = match entry.round {
                    Some(r) => format!("round {r}"),
                    None => "all rounds".to_string(),
                };
                problem(format!(
                    "instance_id {:?} ({which}) was already given on line {first}",
                    entry.instance_id
                ));
                continue;
            }
            seen.insert(key, line);
            match entry.round {
                Some(r) => {
                    per_round.insert((entry.instance_id, r), entry.answer);
                }
                None => {
                    every_round.insert(entry.instance_id, entry.answer);
                }
            }
        }
        if !problems.is_empty() {
            return Err(PredictionsError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Predictions {
            path: path.to_path_buf(),
            per_round,
            every_round,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The answer of a unit: `None` when the file has none for it, `Some(None)` when it
    /// recorded a null answer. A round-specific entry wins over a round-less one.
    pub fn get(&self, instance_id: &str, round: u32) -> Option<Option<&str>> {
        self.per_round
            .get(&(instance_id.to_string(), round))
            .or_else(|| self.every_round.get(instance_id))
            .map(|a| a.as_deref())
    }

    /// Number of entries in the file.
    pub fn len(&self) -> usize {
        self.per_round.len() + self.every_round.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Entry {
    instance_id: String,
    round: Option<u32>,
    answer: Option<String>,
}

fn parse_entry(text: &str) -> Result<Entry, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".to_string());
    };
    let instance_id = match obj.get("instance_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("`instance_id` is empty".to_string()),
        Some(_) => return Err("`instance_id` is not a string".to_string()),
        None => return Err("missing `instance_id`".to_string()),
    };
    let round = match obj.get("round") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(r) if r >= 1 && r <= u64::from(u32::MAX) => Some(r as u32),
            _ => {
                return Err(format!(
                    "instance_id {instance_id:?}: `round` must be an integer >= 1, got {v}"
                ))
            }
        },
    };
    let answer = match (obj.get("answer"), obj.get("model_patch")) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "instance_id {instance_id:?}: both `answer` and `model_patch` are given; keep one"
            ))
        }
        (None, None) => {
            return Err(format!(
                "instance_id {instance_id:?}: missing `answer` (or `model_patch`)"
            ))
        }
        (Some(v), None) | (None, Some(v)) => match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            _ => {
                return Err(format!(
                    "instance_id {instance_id:?}: the answer must be a string or null"
                ))
            }
        },
    };
    Ok(Entry {
        instance_id,
        round,
        answer,
    })
}
