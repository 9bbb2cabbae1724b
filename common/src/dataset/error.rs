//! What can go wrong when loading a dataset file, with enough detail to fix the file.

use std::fmt;
use std::path::PathBuf;

/// Which entry of a file a problem is about: its `instance_id` when it has a usable one,
/// otherwise its position in the top-level array (0-based), so that every problem is locatable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRef {
    Id(String),
    Index(usize),
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryRef::Id(id) => f.write_str(id),
            EntryRef::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// One thing wrong with one field of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub entry: EntryRef,
    /// The field as a path inside the entry, e.g. `vuln_lines` or `other_vuln_files[1].vuln_file`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: task {}: field {}: {}",
            self.file.display(),
            self.entry,
            self.field,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: file is {size} bytes, more than the {limit} bytes a dataset file may have", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The file is JSON but not of the expected overall shape (e.g. an object instead of an array).
    #[error("{}: {message}", path.display())]
    Shape { path: PathBuf, message: String },
    /// Every problem found in the file; never empty.
    #[error("{}", render_problems(problems))]
    Invalid { problems: Vec<Problem> },
}

fn render_problems(problems: &[Problem]) -> String {
    let mut out = format!("{} problem(s) in dataset:", problems.len());
    for p in problems {
        out.push('\n');
        out.push_str(&p.to_string());
    }
    out
}
