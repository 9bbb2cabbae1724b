//! The client-streaming SubmitRun: a header, then the inputs in chunks. Both ends apply the same
//! size rules ([`check`]): the client before it sends anything, so that an oversized input is
//! named with its limit instead of failing the connection, and the coordinator again on what
//! it receives ([`Assembler`]). Errors name the input or the spec field and the limit, never
//! the value.

use crate::limits::{
    MAX_API_KEY_BYTES, MAX_CONTEXT_BYTES, MAX_DATASET_BYTES, MAX_FIELD_BYTES, MAX_FILE_NAME_BYTES,
    MAX_PREDICTION_BYTES, MAX_RUN_SPEC_BYTES, MAX_TEMPLATE_BYTES, SUBMIT_CHUNK_BYTES,
};
use crate::v1::submit_run_part::Part;
use crate::v1::{SubmitRunHeader, SubmitRunPart};
use serde_json::Value;

/// Everything a run is submitted with.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SubmitInputs {
    /// The run spec as JSON.
    pub run_spec_json: Vec<u8>,
    /// The task file, verbatim.
    pub dataset: Vec<u8>,
    pub dataset_name: String,
    /// The context file, verbatim; empty when the run has none.
    pub context: Vec<u8>,
    pub context_name: String,
    /// Empty when the client hands over no key.
    pub api_key: String,
}

impl std::fmt::Debug for SubmitInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitInputs")
            .field("run_spec_bytes", &self.run_spec_json.len())
            .field("dataset_name", &self.dataset_name)
            .field("dataset_bytes", &self.dataset.len())
            .field("context_name", &self.context_name)
            .field("context_bytes", &self.context.len())
            .field("with_key", &!self.api_key.is_empty())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// An input or a field is over its limit.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// The parts do not follow the protocol (a client bug, not the user's input).
    #[error("SubmitRun: {0}")]
    Protocol(String),
}

fn within(what: impl FnOnce() -> String, size: u64, limit: u64) -> Result<(), SubmitError> {
    if size > limit {
        return Err(SubmitError::TooLarge {
            what: what(),
            size,
            limit,
        });
    }
    Ok(())
}

/// The header's own fields and the declared input sizes.
fn check_header(h: &SubmitRunHeader) -> Result<(), SubmitError> {
    within(
        || "the dataset file name".into(),
        h.dataset_name.len() as u64,
        MAX_FILE_NAME_BYTES,
    )?;
    within(
        || "the context file name".into(),
        h.context_name.len() as u64,
        MAX_FILE_NAME_BYTES,
    )?;
    within(
        || "the API key".into(),
        h.api_key.len() as u64,
        MAX_API_KEY_BYTES,
    )?;
    within(
        || "the run spec".into(),
        h.run_spec_bytes,
        MAX_RUN_SPEC_BYTES,
    )?;
    // File names are the user's own and bounded above: they may be named.
    within(
        || format!("the dataset {}", h.dataset_name),
        h.dataset_bytes,
        MAX_DATASET_BYTES,
    )?;
    within(
        || format!("the context file {}", h.context_name),
        h.context_bytes,
        MAX_CONTEXT_BYTES,
    )?;
    Ok(())
}

fn header_of(inputs: &SubmitInputs) -> SubmitRunHeader {
    SubmitRunHeader {
        dataset_name: inputs.dataset_name.clone(),
        context_name: inputs.context_name.clone(),
        api_key: inputs.api_key.clone(),
        run_spec_bytes: inputs.run_spec_json.len() as u64,
        dataset_bytes: inputs.dataset.len() as u64,
        context_bytes: inputs.context.len() as u64,
    }
}

/// Every size rule of a submission: the names, the key, each input, and each string of the run
/// spec (when it is JSON; whether it is a valid spec is the coordinator's to say).
pub fn check(inputs: &SubmitInputs) -> Result<(), SubmitError> {
    check_header(&header_of(inputs))?;
    if let Ok(spec) = serde_json::from_slice::<Value>(&inputs.run_spec_json) {
        check_spec_fields(&spec)?;
    }
    Ok(())
}

/// The limit of the string at `path` (dot-separated keys, `[]` for any array index).
fn field_limit(path: &[&str]) -> u64 {
    match path {
        ["prompt", "v1_template" | "v2_template"] => MAX_TEMPLATE_BYTES,
        ["model", "entries", "[]", "answer" | "model_patch"] => MAX_PREDICTION_BYTES,
        _ => MAX_FIELD_BYTES,
    }
}

/// Checks the length of every string and object key of a run spec against its limit.
pub fn check_spec_fields(spec: &Value) -> Result<(), SubmitError> {
    let mut path: Vec<String> = Vec::new();
    walk(spec, &mut path)
}

fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if p.starts_with('[') || out.is_empty() {
            out.push_str(p);
        } else {
            out.push('.');
            out.push_str(p);
        }
    }
    out
}

fn walk(value: &Value, path: &mut Vec<String>) -> Result<(), SubmitError> {
    match value {
        Value::String(s) => {
            let generic: Vec<&str> = path
                .iter()
                .map(|p| if p.starts_with('[') { "[]" } else { p.as_str() })
                .collect();
            within(
                || format!("run spec field `{}`", display_path(path)),
                s.len() as u64,
                field_limit(&generic),
            )
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                walk(item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.len() as u64 > MAX_FIELD_BYTES {
                    return Err(SubmitError::TooLarge {
                        what: format!("a key of run spec field `{}`", display_path(path)),
                        size: key.len() as u64,
                        limit: MAX_FIELD_BYTES,
                    });
                }
                path.push(key.clone());
                walk(item, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The parts of a submission, checked first: the header, then each input in chunks of at most
/// [`SUBMIT_CHUNK_BYTES`]. Lazy, so that the inputs are not copied whole once more.
pub fn parts(inputs: SubmitInputs) -> Result<impl Iterator<Item = SubmitRunPart>, SubmitError> {
    check(&inputs)?;
    let header = header_of(&inputs);
    let SubmitInputs {
        run_spec_json,
        dataset,
        context,
        ..
    } = inputs;
    let chunks = |bytes: Vec<u8>, make: fn(Vec<u8>) -> Part| {
        let n = bytes.len().div_ceil(SUBMIT_CHUNK_BYTES);
        (0..n).map(move |i| {
            let end = ((i + 1) * SUBMIT_CHUNK_BYTES).min(bytes.len());
            make(bytes[i * SUBMIT_CHUNK_BYTES..end].to_vec())
        })
    };
    let parts = std::iter::once(Part::Header(header))
        .chain(chunks(run_spec_json, Part::RunSpecChunk))
        .chain(chunks(dataset, Part::DatasetChunk))
        .chain(chunks(context, Part::ContextChunk))
        .map(|p| SubmitRunPart { part: Some(p) });
    Ok(parts)
}

/// [`parts`] as the stream tonic's `submit_run` takes.
pub fn stream(
    inputs: SubmitInputs,
) -> Result<impl futures_util::Stream<Item = SubmitRunPart> + Send + 'static, SubmitError> {
    Ok(futures_util::stream::iter(parts(inputs)?))
}

/// Receives a submission part by part and checks it as it comes: the header first and once,
/// each chunk within [`SUBMIT_CHUNK_BYTES`], no input longer than declared (so memory is
/// bounded by the limits the header was checked against) nor, at the end, shorter.
#[derive(Debug, Default)]
pub struct Assembler {
    header: Option<SubmitRunHeader>,
    inputs: SubmitInputs,
}

/// Initial capacity of an input being received: its declared size, but no more than this, so
/// that a header alone cannot make the receiver reserve a gigabyte.
const MAX_RESERVE: u64 = 64 << 20;

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// The header, once it arrived (for logging: sizes and names).
    pub fn header(&self) -> Option<&SubmitRunHeader> {
        self.header.as_ref()
    }

    pub fn push(&mut self, part: SubmitRunPart) -> Result<(), SubmitError> {
        let protocol = |m: &str| Err(SubmitError::Protocol(m.to_string()));
        let Some(part) = part.part else {
            return protocol("a part without content");
        };
        let (chunk, which) = match (part, self.header.is_some()) {
            (Part::Header(h), false) => {
                check_header(&h)?;
                let reserve = |n: u64| Vec::with_capacity(n.min(MAX_RESERVE) as usize);
                self.inputs = SubmitInputs {
                    run_spec_json: reserve(h.run_spec_bytes),
                    dataset: reserve(h.dataset_bytes),
                    dataset_name: h.dataset_name.clone(),
                    context: reserve(h.context_bytes),
                    context_name: h.context_name.clone(),
                    api_key: h.api_key.clone(),
                };
                self.header = Some(h);
                return Ok(());
            }
            (Part::Header(_), true) => return protocol("a second header"),
            (_, false) => return protocol("a chunk before the header"),
            (Part::RunSpecChunk(c), true) => (c, 0),
            (Part::DatasetChunk(c), true) => (c, 1),
            (Part::ContextChunk(c), true) => (c, 2),
        };
        if chunk.len() > SUBMIT_CHUNK_BYTES {
            return Err(SubmitError::Protocol(format!(
                "a chunk of {} bytes, more than {SUBMIT_CHUNK_BYTES}",
                chunk.len()
            )));
        }
        let h = self.header.as_ref().expect("matched above");
        let (buf, declared, name) = match which {
            0 => (&mut self.inputs.run_spec_json, h.run_spec_bytes, "run spec"),
            1 => (&mut self.inputs.dataset, h.dataset_bytes, "dataset"),
            _ => (&mut self.inputs.context, h.context_bytes, "context"),
        };
        if (buf.len() + chunk.len()) as u64 > declared {
            return Err(SubmitError::Protocol(format!(
                "more {name} bytes than the {declared} the header declared"
            )));
        }
        buf.extend_from_slice(&chunk);
        Ok(())
    }

    /// The whole submission, checked as [`check`] does.
    pub fn finish(self) -> Result<SubmitInputs, SubmitError> {
        let Some(h) = self.header else {
            return Err(SubmitError::Protocol("no header".into()));
        };
        let i = &self.inputs;
        for (name, got, declared) in [
            ("run spec", i.run_spec_json.len(), h.run_spec_bytes),
            ("dataset", i.dataset.len(), h.dataset_bytes),
            ("context", i.context.len(), h.context_bytes),
        ] {
            if got as u64 != declared {
                return Err(SubmitError::Protocol(format!(
                    "{got} {name} bytes arrived, the header declared {declared}"
                )));
            }
        }
        check(&self.inputs)?;
        Ok(self.inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(spec: Value, dataset: Vec<u8>) -> SubmitInputs {
        SubmitInputs {
            run_spec_json: serde_json::to_vec(&spec).unwrap(),
            dataset,
            dataset_name: "tasks.json".into(),
            context: b"ctx".to_vec(),
            context_name: "context.json".into(),
            api_key: "sk-test".into(),
        }
    }

    #[test]
    fn parts_reassemble_to_the_inputs_in_bounded_chunks() {
        let dataset: Vec<u8> = (0..(2 * SUBMIT_CHUNK_BYTES + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let original = inputs(serde_json::json!({"model_name": "m"}), dataset);
        let mut a = Assembler::new();
        let mut n = 0;
        for p in parts(original.clone()).unwrap() {
            if let Some(Part::DatasetChunk(c)) = &p.part {
                assert!(c.len() <= SUBMIT_CHUNK_BYTES);
                n += 1;
            }
            a.push(p).unwrap();
        }
        assert_eq!(n, 3, "a dataset of two chunks and a bit");
        assert_eq!(a.finish().unwrap(), original);
    }

    #[test]
    fn an_oversized_field_is_named_with_its_limit_and_not_echoed() {
        let value = "Q".repeat(1 << 20);
        let spec = serde_json::json!({"model": {"config": {"model": value}}});
        let err = check(&inputs(spec, b"[]".to_vec()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`model.config.model`"), "{err}");
        assert!(err.contains(&MAX_FIELD_BYTES.to_string()), "{err}");
        assert!(!err.contains("QQQQ"), "{err}");
    }

    #[test]
    fn an_answer_may_be_long_but_not_unbounded() {
        let answer = "a".repeat(2 << 20);
        let spec =
            serde_json::json!({"model": {"entries": [{"instance_id": "t", "answer": answer}]}});
        check(&inputs(spec, Vec::new())).unwrap();
        let answer = "a".repeat(MAX_PREDICTION_BYTES as usize + 1);
        let spec =
            serde_json::json!({"model": {"entries": [{"instance_id": "t", "answer": answer}]}});
        let err = check(&inputs(spec, Vec::new())).unwrap_err().to_string();
        assert!(err.contains("`model.entries[0].answer`"), "{err}");
    }

    #[test]
    fn the_receiver_refuses_what_breaks_the_protocol() {
        let chunk = |c: Vec<u8>| SubmitRunPart {
            part: Some(Part::DatasetChunk(c)),
        };
        let mut a = Assembler::new();
        assert!(matches!(
            a.push(chunk(vec![1])),
            Err(SubmitError::Protocol(_))
        ));
        let header = SubmitRunHeader {
            dataset_bytes: 2,
            ..SubmitRunHeader::default()
        };
        a.push(SubmitRunPart {
            part: Some(Part::Header(header.clone())),
        })
        .unwrap();
        assert!(a
            .push(SubmitRunPart {
                part: Some(Part::Header(header))
            })
            .is_err());
        a.push(chunk(vec![1])).unwrap();
        assert!(a.push(chunk(vec![2, 3])).is_err(), "past the declared size");
        let mut short = Assembler::new();
        short
            .push(SubmitRunPart {
                part: Some(Part::Header(SubmitRunHeader {
                    dataset_bytes: 5,
                    ..SubmitRunHeader::default()
                })),
            })
            .unwrap();
        assert!(short.finish().is_err(), "shorter than declared");
        let mut huge = Assembler::new();
        let err = huge
            .push(SubmitRunPart {
                part: Some(Part::Header(SubmitRunHeader {
                    dataset_name: "big.json".into(),
                    dataset_bytes: MAX_DATASET_BYTES + 1,
                    ..SubmitRunHeader::default()
                })),
            })
            .unwrap_err();
        assert!(
            matches!(&err, SubmitError::TooLarge { what, .. } if what.contains("big.json")),
            "{err}"
        );
        // A client that skipped the checks: the receiver applies them to what arrived.
        let spec = serde_json::json!({"batch": "B".repeat(100_000)});
        let mut a = Assembler::new();
        for p in parts(inputs(serde_json::json!({}), Vec::new()))
            .unwrap()
            .map(|mut p| {
                match &mut p.part {
                    Some(Part::Header(h)) => {
                        h.run_spec_bytes = serde_json::to_vec(&spec).unwrap().len() as u64
                    }
                    Some(Part::RunSpecChunk(c)) => *c = serde_json::to_vec(&spec).unwrap(),
                    _ => {}
                }
                p
            })
        {
            a.push(p).unwrap();
        }
        let err = a.finish().unwrap_err().to_string();
        assert!(err.contains("`batch`") && !err.contains("BBBB"), "{err}");
    }
}
