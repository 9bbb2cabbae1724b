//! A predictions run's answers, split by unit: the spec workers fetch holds none (it would
//! otherwise carry every answer of the run to every worker, in every lease), each task's
//! entries are stored with its inputs, and a generate lease carries its own unit's entries.

use crate::CoordinatorError;
use ase_proto::limits::MAX_WORKER_SPEC_BYTES;
use serde_json::Value;
use std::collections::HashMap;

/// The spec as workers get it, and the predictions JSONL of each task by instance_id.
#[derive(Debug, Default)]
pub(super) struct SplitSpec {
    pub(super) worker_spec: Vec<u8>,
    pub(super) answers: HashMap<String, Vec<u8>>,
}

/// Takes the inline entries out of a predictions run's spec (`model.entries`); any other spec
/// is kept byte for byte. Refuses entries without an instance_id (no unit could get them) and
/// a spec that, without them, is still too large for one message.
pub(super) fn split_spec(spec_json: Vec<u8>) -> Result<SplitSpec, CoordinatorError> {
    let is_predictions = |v: &Value| {
        v.pointer("/model/provider").and_then(Value::as_str) == Some("predictions")
            && v.pointer("/model/entries").is_some_and(Value::is_array)
    };
    let mut spec: Value = match serde_json::from_slice(&spec_json) {
        Ok(v) if is_predictions(&v) => v,
        // Not JSON: `parse_spec_header` said so before; other providers carry no answers.
        _ => return checked(spec_json, HashMap::new()),
    };
    let taken = spec
        .pointer_mut("/model/entries")
        .map(|v| std::mem::replace(v, Value::Array(Vec::new())));
    let entries = match taken {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    drop(spec_json);
    let mut answers: HashMap<String, Vec<u8>> = HashMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let id = match entry.get("instance_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(CoordinatorError::Spec(format!(
                    "model.entries[{i}] has no `instance_id` string"
                )))
            }
        };
        let lines = answers.entry(id).or_default();
        serde_json::to_writer(&mut *lines, &entry).expect("a JSON value serialises");
        lines.push(b'\n');
    }
    checked(
        serde_json::to_vec(&spec).expect("a JSON value serialises"),
        answers,
    )
}

fn checked(
    worker_spec: Vec<u8>,
    answers: HashMap<String, Vec<u8>>,
) -> Result<SplitSpec, CoordinatorError> {
    if worker_spec.len() as u64 > MAX_WORKER_SPEC_BYTES {
        return Err(CoordinatorError::Spec(format!(
            "it is {} bytes without its predictions, more than the limit of \
             {MAX_WORKER_SPEC_BYTES} bytes (a spec reaches every worker in one message)",
            worker_spec.len()
        )));
    }
    Ok(SplitSpec {
        worker_spec,
        answers,
    })
}

/// The lines of a task's predictions JSONL that answer `round`: its own entry and the
/// round-less one (the worker picks between them as a predictions file says).
pub(super) fn unit_lines(task_lines: &[u8], round: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for line in task_lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let keep = match serde_json::from_slice::<Value>(line) {
            Ok(v) => match v.get("round") {
                None | Some(Value::Null) => true,
                Some(r) => r.as_u64() == Some(u64::from(round)),
            },
            // Stored by `split_spec`, so JSON; if not, the worker names the problem.
            Err(_) => true,
        };
        if keep {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_predictions_spec_loses_its_entries_and_each_unit_gets_its_own() {
        let spec = json!({"model_name": "p", "model": {"provider": "predictions", "entries": [
            {"instance_id": "a", "round": 1, "answer": "a1"},
            {"instance_id": "a", "round": 2, "answer": "a2"},
            {"instance_id": "b", "answer": "b-any"},
            {"instance_id": "a", "answer": "a-any"},
        ]}});
        let split = split_spec(serde_json::to_vec(&spec).unwrap()).unwrap();
        let worker: Value = serde_json::from_slice(&split.worker_spec).unwrap();
        assert_eq!(worker["model"]["entries"], json!([]));
        assert_eq!(worker["model_name"], "p");
        let a2 = String::from_utf8(unit_lines(&split.answers["a"], 2)).unwrap();
        assert!(a2.contains("\"a2\"") && a2.contains("a-any") && !a2.contains("\"a1\""));
        let b3 = String::from_utf8(unit_lines(&split.answers["b"], 3)).unwrap();
        assert!(b3.contains("b-any"), "{b3}");
    }

    #[test]
    fn other_specs_are_kept_byte_for_byte() {
        let bytes = br#"{ "model": {"provider": "original"},  "x": 1 }"#.to_vec();
        let split = split_spec(bytes.clone()).unwrap();
        assert_eq!(split.worker_spec, bytes);
        assert!(split.answers.is_empty());
    }

    #[test]
    fn an_entry_without_instance_id_is_refused() {
        let spec = json!({"model": {"provider": "predictions", "entries": [{"answer": "x"}]}});
        let err = split_spec(serde_json::to_vec(&spec).unwrap()).unwrap_err();
        assert!(err.to_string().contains("model.entries[0]"), "{err}");
    }
}
