//! The name of a run, `{model}__{batch}`: the run's id in the cluster and the name of its
//! folder and files on every disk it reaches (upstream's `generated_code/{model}__{batch}/` and
//! `{model}__{batch}_score.json`).
//!
//! Checked once, where a name enters (a config file, a submitted spec, `ase score`), so that a
//! name that cannot become a file never reaches the finish of a run: a run whose files cannot
//! be named would otherwise stay in scoring for good. The limits leave room for the longest
//! suffix upstream adds (`_eval_result.txt`) under the 255-byte file-name limit of common file
//! systems. A model id may hold `/` (`Qwen/Qwen3`: upstream's folder is then nested, one
//! component per part); a batch may not. Control characters and the Unicode bidirectional
//! controls are refused in both: they make a name display as another one (a log line, a
//! report's title, `ase status`).

/// The longest model id, in bytes, and the longest part of it between two `/`.
pub const MAX_MODEL_BYTES: usize = 160;
/// The longest batch name, in bytes.
pub const MAX_BATCH_BYTES: usize = 64;
/// The longest file-name component a run name may make (`{last model part}__{batch}`), leaving
/// room for upstream's suffixes under 255 bytes.
const MAX_COMPONENT_BYTES: usize = 200;

/// What is wrong with a model id or a batch name. The value itself is never echoed whole: it
/// may be megabytes long or hold characters that rewrite the line it is printed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNameError {
    #[error("`{field}` is empty")]
    Empty { field: &'static str },
    #[error("`{field}` is {len} bytes long; the limit is {limit}")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("`{field}` holds {what} (character {position}); use letters, digits, `-`, `_`, `.`")]
    BadCharacter {
        field: &'static str,
        what: String,
        /// 1-based, in characters.
        position: usize,
    },
    #[error("`{field}` holds an empty, `.` or `..` path part")]
    BadPathPart { field: &'static str },
    #[error("`model_name` and `batch` make a folder name of {len} bytes; the limit is {limit}")]
    ComponentTooLong { len: usize, limit: usize },
}

impl RunNameError {
    /// The config or spec field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            RunNameError::Empty { field }
            | RunNameError::TooLong { field, .. }
            | RunNameError::BadCharacter { field, .. }
            | RunNameError::BadPathPart { field } => field,
            RunNameError::ComponentTooLong { .. } => "batch",
        }
    }
}

/// True for the characters that reorder or hide text when displayed (Trojan Source,
/// CVE-2021-42574) and the invisible marks beside them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn check_characters(field: &'static str, value: &str, slash: bool) -> Result<(), RunNameError> {
    for (i, c) in value.chars().enumerate() {
        let what = if c.is_control() {
            Some(format!("the control character U+{:04X}", c as u32))
        } else if is_bidi_control(c) {
            Some(format!("the bidirectional control U+{:04X}", c as u32))
        } else if c == '\\' {
            Some("a backslash".to_string())
        } else if c == '/' && !slash {
            Some("a `/`".to_string())
        } else {
            None
        };
        if let Some(what) = what {
            return Err(RunNameError::BadCharacter {
                field,
                what,
                position: i + 1,
            });
        }
    }
    Ok(())
}

/// Checks a model id and a batch name and joins them: `{model}__{batch}`.
pub fn run_name(model: &str, batch: &str) -> Result<String, RunNameError> {
    for (field, value, limit) in [
        ("model_name", model, MAX_MODEL_BYTES),
        ("batch", batch, MAX_BATCH_BYTES),
    ] {
        if value.is_empty() {
            return Err(RunNameError::Empty { field });
        }
        if value.len() > limit {
            return Err(RunNameError::TooLong {
                field,
                len: value.len(),
                limit,
            });
        }
    }
    check_characters("model_name", model, true)?;
    check_characters("batch", batch, false)?;
    if model
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(RunNameError::BadPathPart {
            field: "model_name",
        });
    }
    if batch == "." || batch == ".." {
        return Err(RunNameError::BadPathPart { field: "batch" });
    }
    let name = format!("{model}__{batch}");
    let last = name.rsplit('/').next().unwrap_or(&name);
    if last.len() > MAX_COMPONENT_BYTES {
        return Err(RunNameError::ComponentTooLong {
            len: last.len(),
            limit: MAX_COMPONENT_BYTES,
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_join() {
        assert_eq!(run_name("gpt-4o", "b1").unwrap(), "gpt-4o__b1");
        assert_eq!(run_name("Qwen/Qwen3", "b1").unwrap(), "Qwen/Qwen3__b1");
        assert_eq!(run_name("模型", "批次").unwrap(), "模型__批次");
    }

    #[test]
    fn a_long_batch_is_refused_without_being_echoed() {
        let batch = "x".repeat(5_000);
        let e = run_name("m", &batch).unwrap_err();
        assert_eq!(e.field(), "batch");
        let text = e.to_string();
        assert!(text.contains("5000") && text.contains("64"), "{text}");
        assert!(!text.contains("xxxxxxxxxx"), "{text}");
        let e = run_name(&"m".repeat(161), "b").unwrap_err();
        assert_eq!(e.field(), "model_name");
    }

    #[test]
    fn slashes_controls_and_bidi_are_refused_and_located() {
        let e = run_name("m", "a/b").unwrap_err();
        assert_eq!(e.field(), "batch");
        assert!(e.to_string().contains("`/`"), "{e}");
        let e = run_name("m", "ok\u{202E}txt.exe").unwrap_err();
        assert!(
            e.to_string().contains("U+202E") && e.to_string().contains("character 3"),
            "{e}"
        );
        assert!(run_name("m\u{2066}", "b").is_err());
        assert!(run_name("m", "b\n").is_err());
        assert!(run_name("m", "b\0").is_err());
        assert!(run_name("a\\b", "c").is_err());
    }

    #[test]
    fn path_escapes_are_refused() {
        for (m, b) in [
            ("", "b"),
            ("m", ""),
            ("../x", "b"),
            ("/abs", "b"),
            ("m/", "b"),
            ("m/./n", "b"),
            ("m", ".."),
        ] {
            assert!(run_name(m, b).is_err(), "{m:?} {b:?}");
        }
    }

    #[test]
    fn the_folder_name_stays_under_the_file_name_limit() {
        let model = format!("org/{}", "m".repeat(150));
        let e = run_name(&model, &"b".repeat(60)).unwrap_err();
        assert!(matches!(e, RunNameError::ComponentTooLong { .. }), "{e}");
        // The last part is what becomes a file name; a long org prefix is not.
        let model = format!("{}/{}", "o".repeat(100), "m".repeat(50));
        assert!(run_name(&model, "b").is_ok());
    }
}
