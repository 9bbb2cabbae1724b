//! Reading a dataset file as untrusted bytes and checking raw JSON fields one by one.
//!
//! Serde derive would stop at the first error; checking a `serde_json::Value` by hand lets one
//! pass collect every problem of every entry.

use super::error::{DatasetError, EntryRef, Problem};
use super::LineRange;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Upstream's largest file is about 0.5 MB; 256 MiB leaves room for much larger user datasets
/// while refusing to pull an arbitrary file into memory.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Longest `instance_id` accepted: it becomes part of folder names (`{id}_cycle{k}`).
pub const MAX_ID_CHARS: usize = 200;

/// The bytes of a dataset file and their sha256 (lowercase hex), read with a size bound.
pub(crate) fn read_bounded(path: &Path) -> Result<(Vec<u8>, String), DatasetError> {
    let read_err = |source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(DatasetError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    let sha = sha256_hex(&bytes);
    Ok((bytes, sha))
}

pub(crate) use crate::digest::sha256_hex;

/// Parses `bytes` as a top-level JSON array.
pub(crate) fn parse_array(path: &Path, bytes: &[u8]) -> Result<Vec<Value>, DatasetError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| DatasetError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    match value {
        Value::Array(items) => Ok(items),
        other => Err(DatasetError::Shape {
            path: path.to_path_buf(),
            message: format!("expected a JSON array of entries, found {}", kind(&other)),
        }),
    }
}

/// Calls `each` with every element of the top-level JSON array in `bytes`, in order, parsing
/// one element at a time so that only the current one is held. Reports the same errors as
/// [`parse_array`]; `each` may stop the walk early (`Break`), which is then returned.
/// Elements handed over before a JSON error further on are not taken back: a caller that
/// gets an error must discard what it built.
pub(crate) fn visit_array<B>(
    path: &Path,
    bytes: &[u8],
    mut each: impl FnMut(usize, Value) -> ControlFlow<B>,
) -> Result<ControlFlow<B>, DatasetError> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'[') {
        // Not an array (or not JSON): parsing the whole value finds where the JSON breaks or
        // what it is instead, with the messages of `parse_array`.
        for (index, item) in parse_array(path, bytes)?.into_iter().enumerate() {
            if let ControlFlow::Break(b) = each(index, item) {
                return Ok(ControlFlow::Break(b));
            }
        }
        return Ok(ControlFlow::Continue(()));
    }
    let mut visitor = ElementVisitor {
        each: &mut each,
        next_index: 0,
        stopped: None,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed =
        serde::Deserializer::deserialize_seq(&mut de, &mut visitor).and_then(|()| de.end());
    if let Some(b) = visitor.stopped {
        return Ok(ControlFlow::Break(b));
    }
    parsed.map_err(|source| DatasetError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ControlFlow::Continue(()))
}

struct ElementVisitor<'f, F, B> {
    each: &'f mut F,
    next_index: usize,
    /// Set when `each` stopped the walk; the deserializer then fails with a placeholder error.
    stopped: Option<B>,
}

impl<'de, F, B> Visitor<'de> for &mut ElementVisitor<'_, F, B>
where
    F: FnMut(usize, Value) -> ControlFlow<B>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            let index = self.next_index;
            self.next_index += 1;
            if let ControlFlow::Break(b) = (self.each)(index, item) {
                self.stopped = Some(b);
                return Err(A::Error::custom("stopped by the caller"));
            }
        }
        Ok(())
    }
}

/// sha256 of `v` such that equal values (`==`) have equal digests and different values,
/// short of a sha256 collision, different ones: object keys are taken in sorted order (with
/// `preserve_order`, `==` ignores the order of keys), numbers by kind as `Number`'s `==`
/// compares them, and every length is written so that no two encodings run into each other.
pub(crate) fn value_digest(v: &Value) -> [u8; 32] {
    let mut h = Sha256::new();
    feed_value(&mut h, v);
    h.finalize().into()
}

fn feed_value(h: &mut Sha256, v: &Value) {
    fn feed_str(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    match v {
        Value::Null => h.update([0]),
        Value::Bool(b) => h.update([1, u8::from(*b)]),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                h.update([2]);
                h.update(u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                h.update([3]);
                h.update(i.to_le_bytes());
            } else {
                let f = n.as_f64().unwrap_or_default();
                // -0.0 == 0.0.
                let f = if f == 0.0 { 0.0f64 } else { f };
                h.update([4]);
                h.update(f.to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            h.update([5]);
            feed_str(h, s);
        }
        Value::Array(items) => {
            h.update([6]);
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                feed_value(h, item);
            }
        }
        Value::Object(obj) => {
            h.update([7]);
            h.update((obj.len() as u64).to_le_bytes());
            let mut fields: Vec<(&String, &Value)> = obj.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in fields {
                feed_str(h, k);
                feed_value(h, v);
            }
        }
    }
}

/// Name of a JSON value's type, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why `id` cannot serve as an `instance_id`, if it cannot. Ids become folder names and keys in
/// result files, so they must be a single, printable path component.
pub(crate) fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Some(format!("longer than {MAX_ID_CHARS} characters"));
    }
    if id == "." || id == ".." {
        return Some(format!("`{id}` cannot be used as a folder name"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control() || c.is_whitespace())
    {
        return Some(format!(
            "must be usable as a folder name, but contains {c:?}"
        ));
    }
    None
}

/// Why `p` is not a relative path inside a repository, if it is not.
pub(crate) fn relative_path_problem(p: &str) -> Option<String> {
    if p.is_empty() {
        return Some("must not be empty".into());
    }
    if p.starts_with('/') || p.starts_with('\\') || has_drive_prefix(p) {
        return Some(format!(
            "`{p}` is absolute; expected a path relative to the repository"
        ));
    }
    if p.chars().any(|c| c == '\0' || c == '\n' || c == '\r') {
        return Some("contains a NUL or line break".into());
    }
    if p.split(['/', '\\']).any(|seg| seg == "..") {
        return Some(format!(
            "`{p}` contains `..`; the path must stay inside the repository"
        ));
    }
    None
}

fn has_drive_prefix(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Checks the fields of one JSON object, recording every problem under one entry reference.
pub(crate) struct FieldChecker<'a> {
    file: &'a Path,
    entry: EntryRef,
    pub obj: &'a Map<String, Value>,
    problems: &'a mut Vec<Problem>,
    found_problem: bool,
}

impl<'a> FieldChecker<'a> {
    pub fn new(
        file: &'a Path,
        entry: EntryRef,
        obj: &'a Map<String, Value>,
        problems: &'a mut Vec<Problem>,
    ) -> Self {
        FieldChecker {
            file,
            entry,
            obj,
            problems,
            found_problem: false,
        }
    }

    /// Whether any problem was recorded through this checker.
    pub fn found_problem(&self) -> bool {
        self.found_problem
    }

    pub fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.found_problem = true;
        self.problems.push(Problem {
            file: PathBuf::from(self.file),
            entry: self.entry.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn get_required(&mut self, field: &str) -> Option<&'a Value> {
        match self.obj.get(field) {
            Some(v) => Some(v),
            None => {
                self.problem(field, "missing");
                None
            }
        }
    }

    /// A required string field.
    pub fn string(&mut self, field: &str) -> Option<String> {
        let v = self.get_required(field)?;
        self.as_string(field, v)
    }

    /// A required string field that must not be empty or only whitespace.
    pub fn nonempty_string(&mut self, field: &str) -> Option<String> {
        let s = self.string(field)?;
        if s.trim().is_empty() {
            self.problem(field, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// An optional string field; `null` counts as absent.
    pub fn optional_string(&mut self, field: &str) -> Option<Option<String>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.as_string(field, v).map(Some),
        }
    }

    pub fn as_string(&mut self, field: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(field, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub fn bool(&mut self, field: &str) -> Option<bool> {
        let v = self.get_required(field)?;
        self.as_bool(field, v)
    }

    pub fn optional_bool(&mut self, field: &str) -> Option<Option<bool>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.as_bool(field, v).map(Some),
        }
    }

    fn as_bool(&mut self, field: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    field,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A required integer >= 0.
    pub fn count(&mut self, field: &str) -> Option<i64> {
        let v = self.get_required(field)?;
        match v.as_i64() {
            Some(n) if n >= 0 => Some(n),
            Some(n) => {
                self.problem(field, format!("must be >= 0, found {n}"));
                None
            }
            None => {
                self.problem(
                    field,
                    format!("expected a whole number, found {}", describe(v)),
                );
                None
            }
        }
    }

    /// A required `[start, end]` pair of 1-based line numbers with start <= end.
    pub fn line_range(&mut self, field: &str) -> Option<LineRange> {
        let v = self.get_required(field)?;
        self.as_line_range(field, v)
    }

    pub fn as_line_range(&mut self, field: &str, v: &Value) -> Option<LineRange> {
        let items = match v {
            Value::Array(items) => items,
            other => {
                self.problem(
                    field,
                    format!("expected [start, end] line numbers, found {}", kind(other)),
                );
                return None;
            }
        };
        if items.len() != 2 {
            self.problem(
                field,
                format!(
                    "expected exactly 2 line numbers [start, end], found {}",
                    items.len()
                ),
            );
            return None;
        }
        let start = self.line_number(field, "start", &items[0]);
        let end = self.line_number(field, "end", &items[1]);
        let (start, end) = (start?, end?);
        if start > end {
            self.problem(field, format!("start {start} is after end {end}"));
            return None;
        }
        Some(LineRange { start, end })
    }

    /// A 1-based line number.
    pub fn line_number(&mut self, field: &str, what: &str, v: &Value) -> Option<usize> {
        match v.as_u64() {
            Some(0) => {
                self.problem(
                    field,
                    format!("{what} line must be >= 1 (lines are 1-based), found 0"),
                );
                None
            }
            Some(n) => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(field, format!("{what} line {n} is too large"));
                    None
                }
            },
            None => {
                self.problem(
                    field,
                    format!(
                        "{what} line must be a positive whole number, found {}",
                        describe(v)
                    ),
                );
                None
            }
        }
    }
}

/// A short rendering of a value for messages, bounded so that a huge value cannot flood output.
pub(crate) fn describe(v: &Value) -> String {
    const MAX: usize = 40;
    let s = v.to_string();
    if s.chars().count() <= MAX {
        s
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}
