//! Masking: hide the vulnerable lines of a file behind one `<MASKED>` line, and undo it.
//!
//! Per the protocol, the file is split on `\n` and lines `start..=end` (1-based) become ONE line:
//! the indentation of line `start` followed by `<MASKED>`. One deliberate refinement: when the
//! hidden block ends with `\r` (a CRLF file), the mask line keeps that `\r`, so a CRLF file stays
//! CRLF throughout and a model's patch against it still applies. Everything else is byte-exact,
//! and [`MaskedFile::unmask`] restores the original file byte for byte.

use crate::dataset::LineRange;
use thiserror::Error;

/// The placeholder line the model is asked to fill in.
pub const MASK_TOKEN: &str = "<MASKED>";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MaskError {
    #[error("task {task}: vuln_lines [{start}, {end}] of {file} is not a valid range (1-based, start <= end)")]
    InvalidRange {
        task: String,
        file: String,
        start: usize,
        end: usize,
    },
    #[error("task {task}: vuln_lines [{start}, {end}] is past the end of {file}, which has {lines} lines")]
    OutOfRange {
        task: String,
        file: String,
        start: usize,
        end: usize,
        lines: usize,
    },
}

/// A file with its vulnerable block replaced by the mask line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedFile {
    /// The file as the model sees it.
    pub text: String,
    /// Indentation (leading spaces and tabs) of the first hidden line.
    pub indent: String,
    /// The hidden lines exactly as they were, joined by `\n`, without the final line break.
    pub original_block: String,
    /// 0-based index of the mask line among `text.split('\n')`.
    pub mask_line_index: usize,
    /// Byte range of the mask line (without its `\n`) inside `text`.
    pub mask_span: std::ops::Range<usize>,
    pub range: LineRange,
}

/// Number of lines of a file in the protocol's sense: pieces of `split('\n')`, not counting the
/// empty piece after a final newline.
pub fn line_count(content: &str) -> usize {
    let pieces = content.split('\n').count();
    if content.ends_with('\n') {
        pieces - 1
    } else {
        pieces
    }
}

fn leading_indent(line: &str) -> &str {
    let n = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..n]
}

/// Whether `answered` (the masked file once the answer is in, `None`: the answer deleted the
/// file) holds no code the masked file did not: the answer put nothing but blank lines where
/// the block was. Compared on non-blank lines (trailing spaces ignored), in order: an answer
/// that adds a line anywhere, or changes one, fills something.
pub fn fills_nothing(masked: &MaskedFile, answered: Option<&str>) -> bool {
    let Some(answered) = answered else {
        return true;
    };
    let code = |text: &str, skip: Option<usize>| -> Vec<String> {
        text.split('\n')
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, l)| l.trim_end().to_string())
            .filter(|l| !l.trim().is_empty())
            .collect()
    };
    code(&masked.text, Some(masked.mask_line_index)) == code(answered, None)
}

/// Mask lines `range.start..=range.end` of `content`. `task` and `file` only name the culprit in
/// errors.
pub fn mask(
    task: &str,
    file: &str,
    content: &str,
    range: LineRange,
) -> Result<MaskedFile, MaskError> {
    if range.start == 0 || range.start > range.end {
        return Err(MaskError::InvalidRange {
            task: task.to_string(),
            file: file.to_string(),
            start: range.start,
            end: range.end,
        });
    }
    let lines = line_count(content);
    if range.end > lines {
        return Err(MaskError::OutOfRange {
            task: task.to_string(),
            file: file.to_string(),
            start: range.start,
            end: range.end,
            lines,
        });
    }
    // Byte offsets of the start of every line.
    let mut starts = Vec::with_capacity(lines + 1);
    starts.push(0usize);
    for (i, b) in content.bytes().enumerate() {
        if b == b'\n' {
            starts.push(i + 1);
        }
    }
    let block_start = starts[range.start - 1];
    // End of line `end`, excluding its `\n` (if any).
    let block_end = if range.end < starts.len() {
        starts[range.end] - 1
    } else {
        content.len()
    };
    let block_end = block_end.max(block_start);
    let original_block = &content[block_start..block_end];
    let first_line = original_block.split('\n').next().unwrap_or("");
    let indent = leading_indent(first_line).to_string();
    let mut mask_line = format!("{indent}{MASK_TOKEN}");
    if original_block.ends_with('\r') {
        mask_line.push('\r');
    }
    let mut text = String::with_capacity(content.len());
    text.push_str(&content[..block_start]);
    text.push_str(&mask_line);
    let mask_span = block_start..block_start + mask_line.len();
    text.push_str(&content[block_end..]);
    Ok(MaskedFile {
        text,
        indent,
        original_block: original_block.to_string(),
        mask_line_index: range.start - 1,
        mask_span,
        range,
    })
}

impl MaskedFile {
    /// Put the original block back: the result equals the file before masking, byte for byte.
    pub fn unmask(&self) -> String {
        self.replace_mask(&self.original_block)
    }

    /// Replace the mask line with `block` (which should not end with a line break: the mask
    /// line's own `\n` is kept).
    pub fn replace_mask(&self, block: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + block.len());
        out.push_str(&self.text[..self.mask_span.start]);
        out.push_str(block);
        out.push_str(&self.text[self.mask_span.end..]);
        out
    }

    /// The lines before the mask line (without line breaks), nearest last.
    pub fn lines_before(&self) -> Vec<&str> {
        self.text[..self.mask_span.start]
            .strip_suffix('\n')
            .map(|s| s.split('\n').collect())
            .unwrap_or_default()
    }

    /// The lines after the mask line (without line breaks), nearest first.
    pub fn lines_after(&self) -> Vec<&str> {
        self.text[self.mask_span.end..]
            .strip_prefix('\n')
            .map(|s| s.split('\n').collect())
            .unwrap_or_default()
    }
}

/// Protocol step 7: before any scan, drop every line that is exactly `<MASKED>` once trimmed
/// (a failed or empty generation leaves the file without the hidden block rather than with a
/// placeholder that would not parse). Returns `None` when there was no such line.
pub fn strip_mask_lines(content: &str) -> Option<String> {
    if !content.contains(MASK_TOKEN) {
        return None;
    }
    let mut found = false;
    let kept: Vec<&str> = content
        .split('\n')
        .filter(|l| {
            let is_mask = l.trim() == MASK_TOKEN;
            found |= is_mask;
            !is_mask
        })
        .collect();
    found.then(|| kept.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: usize, end: usize) -> LineRange {
        LineRange { start, end }
    }

    #[test]
    fn masks_one_block_with_indentation_of_first_line() {
        let src = "fn a() {\n    let x = 1;\n        let y = 2;\n}\n";
        let m = mask("t1", "a.rs", src, r(2, 3)).unwrap();
        assert_eq!(m.text, "fn a() {\n    <MASKED>\n}\n");
        assert_eq!(m.indent, "    ");
        assert_eq!(m.original_block, "    let x = 1;\n        let y = 2;");
        assert_eq!(m.mask_line_index, 1);
        assert_eq!(m.unmask(), src);
        assert_eq!(m.lines_before(), vec!["fn a() {"]);
        assert_eq!(m.lines_after(), vec!["}", ""]);
    }

    #[test]
    fn an_answer_of_blank_lines_or_a_deleted_file_fills_nothing() {
        let src = "fn a() {\n    let x = q(input);\n    run(x);\n}\n";
        let m = mask("t", "a.rs", src, r(2, 3)).unwrap();
        assert!(fills_nothing(&m, Some("fn a() {\n}\n")));
        assert!(fills_nothing(&m, Some("fn a() {\n   \n\n}\n")));
        assert!(fills_nothing(&m, None));
        // The fix, the original, or any one line of code fills something.
        assert!(!fills_nothing(&m, Some(src)));
        assert!(!fills_nothing(
            &m,
            Some("fn a() {\n    run(esc(q(input)));\n}\n")
        ));
        assert!(!fills_nothing(&m, Some("fn a() {\n    return;\n}\n")));
        // So does an answer that changes code outside the block.
        assert!(!fills_nothing(&m, Some("fn b() {\n}\n")));
    }

    #[test]
    fn tabs_are_indentation() {
        let src = "if (x) {\n\t\tfoo();\n}";
        let m = mask("t", "a.c", src, r(2, 2)).unwrap();
        assert_eq!(m.text, "if (x) {\n\t\t<MASKED>\n}");
        assert_eq!(m.indent, "\t\t");
    }

    #[test]
    fn crlf_file_keeps_crlf_on_mask_line() {
        let src = "a\r\n  b\r\n  c\r\nd\r\n";
        let m = mask("t", "a.php", src, r(2, 3)).unwrap();
        assert_eq!(m.text, "a\r\n  <MASKED>\r\nd\r\n");
        assert_eq!(m.unmask(), src);
    }

    #[test]
    fn last_line_without_newline() {
        let src = "one\ntwo\nthree";
        let m = mask("t", "f", src, r(3, 3)).unwrap();
        assert_eq!(m.text, "one\ntwo\n<MASKED>");
        assert_eq!(m.unmask(), src);
        let m = mask("t", "f", src, r(1, 3)).unwrap();
        assert_eq!(m.text, "<MASKED>");
        assert_eq!(m.unmask(), src);
    }

    #[test]
    fn out_of_range_names_the_task() {
        let err = mask("sqli_07", "x.php", "a\nb\n", r(2, 3)).unwrap_err();
        assert!(err.to_string().contains("sqli_07"), "{err}");
        assert!(matches!(err, MaskError::OutOfRange { lines: 2, .. }));
        assert!(matches!(
            mask("t", "f", "a\n", r(0, 1)),
            Err(MaskError::InvalidRange { .. })
        ));
        assert!(matches!(
            mask("t", "f", "a\nb\n", r(2, 1)),
            Err(MaskError::InvalidRange { .. })
        ));
        // The empty piece after a final newline is not a line.
        assert!(mask("t", "f", "a\nb\n", r(3, 3)).is_err());
    }

    #[test]
    fn empty_line_in_range() {
        let src = "a\n\nb\n";
        let m = mask("t", "f", src, r(2, 2)).unwrap();
        assert_eq!(m.text, "a\n<MASKED>\nb\n");
        assert_eq!(m.unmask(), src);
    }

    #[test]
    fn strip_removes_only_exact_mask_lines() {
        assert_eq!(
            strip_mask_lines("a\n   <MASKED>  \nb // <MASKED> stays\n").unwrap(),
            "a\nb // <MASKED> stays\n"
        );
        assert_eq!(strip_mask_lines("a\nb\n"), None);
        assert_eq!(strip_mask_lines("x = '<MASKED>'\n"), None);
    }

    proptest! {
        #[test]
        fn unmask_restores_bytes(
            lines in proptest::collection::vec("[ \t]{0,3}[a-z{}();\r]{0,8}", 1..30),
            trailing_newline in any::<bool>(),
            a in 0usize..30, b in 0usize..30,
        ) {
            let mut content = lines.join("\n");
            if trailing_newline { content.push('\n'); }
            let n = line_count(&content);
            prop_assume!(n > 0);
            let (s, e) = (a % n + 1, b % n + 1);
            let (s, e) = (s.min(e), s.max(e));
            let m = mask("t", "f", &content, r(s, e)).unwrap();
            prop_assert_eq!(m.unmask(), content.clone());
            prop_assert_eq!(line_count(&m.text), n - (e - s));
            prop_assert_eq!(m.text.split('\n').nth(m.mask_line_index).unwrap().trim(), MASK_TOKEN);
        }
    }
}
