//! Splice (v2): put the code extracted from an answer in place of the `<MASKED>` line.
//!
//! Follows upstream's `apply_generated_code` (`bench/generate_code.py`) step by step:
//! 1. drop the longest run (up to [`MAX_EDGE_LINES`]) of leading code lines equal, byte for byte,
//!    to the last lines before the mask, then likewise trailing lines equal to the first lines
//!    after it: models often repeat the surrounding lines;
//! 2. make the code's brace difference (`{` minus `}`, see [`brace_difference`]) equal to the
//!    original block's, cutting the code at its last `}` as often as needed or appending `}`
//!    lines;
//! 3. re-indent so the first line has the mask line's indentation;
//! 4. replace the mask line.
//!
//! Deviations, both where upstream breaks the protocol's "replace the `<MASKED>` line" and
//! "the first line has the mask's indentation":
//! - only the mask line itself is replaced. Upstream replaces every line that merely contains
//!   `<MASKED>`, including one the original file happened to contain.
//! - re-indentation swaps the first line's indentation for the mask's on every line that starts
//!   with it. For space-only indentation this is exactly upstream's shift by a number of columns;
//!   upstream rebuilds every indentation out of spaces, which turns a tab-indented mask into
//!   spaces (breaking Makefiles and mixing tabs and spaces in Python or Go).

use crate::prompt::masking::{MaskedFile, MASK_TOKEN};
use thiserror::Error;

/// How many lines either side of the mask are compared with the code's edges.
pub const MAX_EDGE_LINES: usize = 20;

/// Why the code could not be spliced; the unit is then a failed generation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpliceFailure {
    /// The masked file's recorded mask span does not hold a `<MASKED>` line.
    #[error("the masked file has no {MASK_TOKEN} line at its recorded position")]
    NoMaskLine,
    /// There is no code to put in (empty or only whitespace).
    #[error("the extracted code is empty")]
    EmptyCode,
}

/// What brace balancing did to the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BraceFix {
    /// The code already had the original block's brace difference.
    Unchanged,
    /// This many `}` lines were appended.
    Appended(usize),
    /// The code was cut at its last `}` `removed` times out of `wanted` (fewer when it ran out
    /// of `}`), then stripped of trailing whitespace.
    Removed { wanted: usize, removed: usize },
}

/// A successful splice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    /// The whole file with the code in place of the mask line.
    pub file_text: String,
    /// The text that replaced the mask line, after every adjustment.
    pub inserted: String,
    /// Leading code lines dropped because they repeated the lines before the mask.
    pub dropped_leading: usize,
    /// Trailing code lines dropped because they repeated the lines after the mask.
    pub dropped_trailing: usize,
    pub braces: BraceFix,
    /// Whether the indentation of the code was changed.
    pub reindented: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpliceOutcome {
    Spliced(Spliced),
    Failed(SpliceFailure),
}

impl SpliceOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, SpliceOutcome::Spliced(_))
    }
}

/// Python's `str.isspace`: Rust's `char::is_whitespace` plus the four ASCII information
/// separators. Upstream's `strip`, `lstrip` and `rstrip` use it.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn leading_space(line: &str) -> &str {
    &line[..line.len() - line.trim_start_matches(is_py_space).len()]
}

/// `{` minus `}` in `code`, as upstream counts it: braces inside `'…'` or `"…"` (a backslash
/// skips the next character) and inside `/* … */` do not count, and a `//` outside both ends
/// the count for the REST OF THE TEXT, not just its line. That last rule is upstream's and is
/// kept because the target and the code are both counted with it.
pub fn brace_difference(code: &str) -> i64 {
    let b = code.as_bytes();
    let mut diff = 0i64;
    let mut in_comment = false;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    // Bytes suffice: every character the rules look at is ASCII and UTF-8 never reuses an ASCII
    // byte inside a multi-byte character, so skipping one byte after a backslash lands on
    // continuation bytes that match nothing, as skipping the whole character would.
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if in_comment {
            if c == b'*' && next == Some(b'/') {
                in_comment = false;
                i += 2;
                continue;
            }
        } else if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else {
            match c {
                b'/' if next == Some(b'/') => break,
                b'/' if next == Some(b'*') => {
                    in_comment = true;
                    i += 2;
                    continue;
                }
                b'"' | b'\'' => quote = Some(c),
                b'{' => diff += 1,
                b'}' => diff -= 1,
                _ => {}
            }
        }
        i += 1;
    }
    diff
}

/// Length of the longest run (at most [`MAX_EDGE_LINES`]) such that `code` starts with the
/// last `run` lines of `before`.
fn repeated_prefix(code: &[&str], before: &[&str]) -> usize {
    let max = code.len().min(before.len()).min(MAX_EDGE_LINES);
    (1..=max)
        .rev()
        .find(|&n| code[..n] == before[before.len() - n..])
        .unwrap_or(0)
}

/// Length of the longest run (at most [`MAX_EDGE_LINES`]) such that `code` ends with the first
/// `run` lines of `after`.
fn repeated_suffix(code: &[&str], after: &[&str]) -> usize {
    let max = code.len().min(after.len()).min(MAX_EDGE_LINES);
    (1..=max)
        .rev()
        .find(|&n| code[code.len() - n..] == after[..n])
        .unwrap_or(0)
}

/// Bring `code`'s brace difference to `target`.
fn balance_braces(code: String, target: i64) -> (String, BraceFix) {
    let delta = target.saturating_sub(brace_difference(&code));
    if delta > 0 {
        let wanted = usize::try_from(delta).unwrap_or(usize::MAX);
        // Cutting at the last `}` `wanted` times is one cut at the `wanted`-th `}` from the end,
        // or at the first `}` when there are fewer. Upstream's `rfind` is not string- or
        // comment-aware, so neither is this.
        let mut removed = 0;
        let mut cut = None;
        for (i, _) in code.rmatch_indices('}').take(wanted) {
            removed += 1;
            cut = Some(i);
        }
        let kept = match cut {
            Some(i) => &code[..i],
            None => &code[..],
        };
        let kept = kept.trim_end_matches(is_py_space).to_string();
        (kept, BraceFix::Removed { wanted, removed })
    } else if delta < 0 {
        let add = usize::try_from(delta.unsigned_abs()).unwrap_or(usize::MAX);
        let mut out = String::with_capacity(code.len() + 2 * add);
        out.push_str(&code);
        for _ in 0..add {
            out.push_str("\n}");
        }
        (out, BraceFix::Appended(add))
    } else {
        (code, BraceFix::Unchanged)
    }
}

/// Give the code's first line the indentation `indent`, shifting every line alike. Lines that
/// are blank become empty, as upstream's do. When the first line is empty or already has that
/// indentation the code is left alone.
fn reindent(code: &str, indent: &str) -> Option<String> {
    let first = code.split('\n').next().unwrap_or("");
    if first.is_empty() {
        return None;
    }
    let first_indent = leading_space(first);
    if first_indent == indent {
        return None;
    }
    let shift = indent.chars().count() as i64 - first_indent.chars().count() as i64;
    let lines: Vec<String> = code
        .split('\n')
        .map(|line| {
            if line.trim_matches(is_py_space).is_empty() {
                String::new()
            } else if let Some(rest) = line.strip_prefix(first_indent) {
                format!("{indent}{rest}")
            } else {
                // Less indented than the first line: upstream's column arithmetic, in spaces.
                let own = leading_space(line);
                let width = (own.chars().count() as i64 + shift).max(0) as usize;
                format!("{}{}", " ".repeat(width), &line[own.len()..])
            }
        })
        .collect();
    Some(lines.join("\n"))
}

/// Splice `code` (as [`crate::answer::extract::extract_code`] returns it) into `masked`.
pub fn splice(masked: &MaskedFile, code: &str) -> SpliceOutcome {
    let span = masked.mask_span.clone();
    let holds_mask = masked
        .text
        .get(span.clone())
        .is_some_and(|line| !line.contains('\n') && line.trim() == MASK_TOKEN);
    if !holds_mask {
        return SpliceOutcome::Failed(SpliceFailure::NoMaskLine);
    }
    if code.trim().is_empty() {
        return SpliceOutcome::Failed(SpliceFailure::EmptyCode);
    }

    let mut lines: Vec<&str> = code.split('\n').collect();
    let dropped_leading = repeated_prefix(&lines, &masked.lines_before());
    lines.drain(..dropped_leading);
    let dropped_trailing = repeated_suffix(&lines, &masked.lines_after());
    lines.truncate(lines.len() - dropped_trailing);

    let (balanced, braces) =
        balance_braces(lines.join("\n"), brace_difference(&masked.original_block));
    let (inserted, reindented) = match reindent(&balanced, &masked.indent) {
        Some(shifted) => (shifted, true),
        None => (balanced, false),
    };

    let text = &masked.text;
    let mut file_text = String::with_capacity(text.len() + inserted.len());
    file_text.push_str(&text[..span.start]);
    file_text.push_str(&inserted);
    file_text.push_str(&text[span.end..]);
    SpliceOutcome::Spliced(Spliced {
        file_text,
        inserted,
        dropped_leading,
        dropped_trailing,
        braces,
        reindented,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::extract::extract_code;
    use crate::dataset::LineRange;
    use crate::prompt::masking::mask;
    use proptest::prelude::*;

    fn masked(src: &str, start: usize, end: usize) -> MaskedFile {
        mask("t", "f", src, LineRange { start, end }).expect("valid range")
    }

    fn spliced(m: &MaskedFile, code: &str) -> Spliced {
        match splice(m, code) {
            SpliceOutcome::Spliced(s) => s,
            SpliceOutcome::Failed(f) => panic!("splice failed: {f}"),
        }
    }

    const JAVA: &str = "class A {\n    void f() {\n        int x = 1;\n        use(x);\n    }\n}\n";

    #[test]
    fn plain_code_replaces_the_mask_line() {
        let m = masked(JAVA, 3, 4);
        let s = spliced(&m, "        int y = 2;\n        use(y);");
        assert_eq!(
            s.file_text,
            "class A {\n    void f() {\n        int y = 2;\n        use(y);\n    }\n}\n"
        );
        assert_eq!(s.inserted, "        int y = 2;\n        use(y);");
        assert_eq!((s.dropped_leading, s.dropped_trailing), (0, 0));
        assert_eq!(s.braces, BraceFix::Unchanged);
        assert!(!s.reindented);
    }

    #[test]
    fn failures() {
        let m = masked(JAVA, 3, 4);
        assert_eq!(
            splice(&m, ""),
            SpliceOutcome::Failed(SpliceFailure::EmptyCode)
        );
        assert_eq!(
            splice(&m, " \n\t"),
            SpliceOutcome::Failed(SpliceFailure::EmptyCode)
        );
        let mut broken = m.clone();
        broken.mask_span = 0..5;
        assert_eq!(
            splice(&broken, "x"),
            SpliceOutcome::Failed(SpliceFailure::NoMaskLine)
        );
        broken.mask_span = 10_000..10_008;
        assert_eq!(
            splice(&broken, "x"),
            SpliceOutcome::Failed(SpliceFailure::NoMaskLine)
        );
        broken.mask_span = m.mask_span.start..m.mask_span.end - 1;
        assert_eq!(
            splice(&broken, "x"),
            SpliceOutcome::Failed(SpliceFailure::NoMaskLine)
        );
        assert!(splice(&m, "x;").is_success());
    }

    #[test]
    fn repeated_context_lines_are_dropped() {
        let m = masked(JAVA, 3, 4);
        let code = "class A {\n    void f() {\n        int y = 2;\n    }\n}\n";
        let s = spliced(&m, code);
        assert_eq!((s.dropped_leading, s.dropped_trailing), (2, 3));
        assert_eq!(s.inserted, "        int y = 2;");
        assert_eq!(
            s.file_text,
            JAVA.replace("        int x = 1;\n        use(x);", "        int y = 2;")
        );
    }

    #[test]
    fn edges_are_kept_when_they_differ_even_by_whitespace() {
        let m = masked(JAVA, 3, 4);
        // Upstream compares lines untrimmed: a re-indented repeat is not a repeat.
        let s = spliced(&m, "  void f() {\n        int y = 2;\n  }");
        assert_eq!((s.dropped_leading, s.dropped_trailing), (0, 0));
        // Only a run that ends exactly at the mask counts: `class A {` alone is not the line
        // right before it.
        let s = spliced(&m, "class A {\n        int y = 2;");
        assert_eq!(s.dropped_leading, 0);
    }

    #[test]
    fn the_longest_repeated_run_is_dropped_and_at_most_twenty_lines() {
        let before: String = (0..30).map(|i| format!("l{i}\n")).collect();
        let src = format!("{before}old\nafter\n");
        let m = masked(&src, 31, 31);
        let repeat = |from: usize| (from..30).map(|i| format!("l{i}\n")).collect::<String>();
        let s = spliced(&m, &(repeat(10) + "new"));
        assert_eq!((s.dropped_leading, s.inserted.as_str()), (20, "new"));
        // A repeat longer than twenty lines is not recognised at all, as upstream: only its
        // first twenty lines are compared with the last twenty before the mask.
        let s = spliced(&m, &(repeat(5) + "new"));
        assert_eq!(s.dropped_leading, 0);
        assert!(s.inserted.starts_with("l5\n"), "{}", s.inserted);
        // A run that is repeated twice: the longest match wins.
        let m = masked("x\nx\nold\nend", 3, 3);
        let s = spliced(&m, "x\nx\nnew");
        assert_eq!((s.dropped_leading, s.inserted.as_str()), (2, "new"));
    }

    #[test]
    fn code_that_only_repeats_the_context_leaves_an_empty_line() {
        // As upstream: the mask line was found and replaced, so this is a success.
        let m = masked("a();\nb();\nc();\n", 2, 2);
        let s = spliced(&m, "a();\nc();");
        assert_eq!((s.dropped_leading, s.dropped_trailing), (1, 1));
        assert_eq!(s.inserted, "");
        assert_eq!(s.file_text, "a();\n\nc();\n");
    }

    #[test]
    fn missing_closing_braces_are_appended() {
        // The block closes the method and the class: the code must too.
        let src = "class A {\n  void f() {\n    a();\n  }\n}\n";
        let m = masked(src, 3, 5);
        let s = spliced(&m, "    b();");
        assert_eq!(s.braces, BraceFix::Appended(2));
        assert_eq!(s.inserted, "    b();\n}\n}");
    }

    #[test]
    fn extra_closing_braces_are_cut_from_the_last_one() {
        // The block is balanced; the model closed the method too.
        let src = "void f() {\n  a();\n}\n";
        let m = masked(src, 2, 2);
        let s = spliced(&m, "  b();\n}\n// done");
        assert_eq!(
            s.braces,
            BraceFix::Removed {
                wanted: 1,
                removed: 1
            }
        );
        assert_eq!(s.inserted, "  b();");
        assert_eq!(s.file_text, "void f() {\n  b();\n}\n");
    }

    #[test]
    fn a_block_that_opens_more_than_it_closes() {
        // The masked block is a method head: the code should leave one brace open.
        let src = "class A {\n  void f() {\n    a();\n  }\n}";
        let m = masked(src, 2, 3);
        // Here the model's closing line repeats the line after the mask and goes as a repeat.
        let s = spliced(&m, "  void f() {\n    b();\n  }");
        assert_eq!((s.dropped_trailing, s.braces), (1, BraceFix::Unchanged));
        assert_eq!(s.inserted, "  void f() {\n    b();");
        // Here it does not (and `//` stops the count): the last `}` and what follows it go.
        let s = spliced(&m, "  void f() {\n    b();\n  } // end");
        assert_eq!(s.dropped_trailing, 0);
        assert_eq!(
            s.braces,
            BraceFix::Removed {
                wanted: 1,
                removed: 1
            }
        );
        assert_eq!(s.inserted, "  void f() {\n    b();");
        // Not enough `}` to cut: what there is goes, and trailing whitespace is stripped.
        let s = spliced(&masked("{\n  {\n  {\nx\n}\n}\n}", 2, 3), "  y();  \n\n");
        assert_eq!(
            s.braces,
            BraceFix::Removed {
                wanted: 2,
                removed: 0
            }
        );
        assert_eq!(s.inserted, "  y();");
    }

    #[test]
    fn braces_in_strings_and_comments_do_not_count() {
        assert_eq!(brace_difference("{ \"}\" '}' /* } */ "), 1);
        assert_eq!(brace_difference("s = \"\\\"{\"; {"), 1);
        assert_eq!(brace_difference("/* { */ }"), -1);
        // Upstream's `//` ends the count for the rest of the text, not only the line.
        assert_eq!(brace_difference("{ // open\n{\n{"), 1);
        // An unterminated string or comment swallows the rest.
        assert_eq!(brace_difference("x = '{ ;\n{"), 0);
        assert_eq!(brace_difference("/* {"), 0);
        assert_eq!(brace_difference("é{ 'é\\é{' }"), 0);

        let src = "if (a) {\n  x();\n}\n";
        let m = masked(src, 2, 2);
        let s = spliced(&m, "  log(\"}\"); /* } */");
        assert_eq!(s.braces, BraceFix::Unchanged);
        let s = spliced(&m, "  log(\"{\");\n  }");
        assert_eq!(
            s.braces,
            BraceFix::Removed {
                wanted: 1,
                removed: 1
            }
        );
        assert_eq!(s.inserted, "  log(\"{\");");
    }

    #[test]
    fn reindents_spaces_by_the_same_column_shift() {
        let src = "def f():\n    if a:\n        b()\n    return 1\n";
        let m = masked(src, 2, 3);
        let s = spliced(&m, "if c:\n    d()\n\n  \n    e()");
        assert!(s.reindented);
        assert_eq!(s.inserted, "    if c:\n        d()\n\n\n        e()");
        // Shifting left, never below column zero; blank lines become empty.
        let m = masked("x\n  y\nz", 2, 2);
        let s = spliced(&m, "      a\n   b\n c\n    ");
        assert_eq!(s.inserted, "  a\nb\nc\n");
    }

    #[test]
    fn reindents_with_the_masks_tabs() {
        let src = "func f() {\n\tif a {\n\t\tb()\n\t}\n}\n";
        let m = masked(src, 3, 3);
        assert_eq!(m.indent, "\t\t");
        let s = spliced(&m, "c()\n\td()");
        assert_eq!(s.inserted, "\t\tc()\n\t\t\td()");
        // Model used spaces, file uses tabs: the first line's spaces become the mask's tabs.
        let s = spliced(&m, "    c()\n      d()");
        assert_eq!(s.inserted, "\t\tc()\n\t\t  d()");
        // Mask indented with spaces, code with a tab.
        let m = masked("a\n    b\nc", 2, 2);
        let s = spliced(&m, "\tx\n\t\ty");
        assert_eq!(s.inserted, "    x\n    \ty");
    }

    #[test]
    fn code_starting_with_an_empty_line_is_not_reindented() {
        let m = masked("a\n    b\nc", 2, 2);
        let s = spliced(&m, "\nx\n  y");
        assert!(!s.reindented);
        assert_eq!(s.inserted, "\nx\n  y");
    }

    #[test]
    fn crlf_file_keeps_its_line_ends() {
        let src = "a {\r\n  b();\r\n}\r\n";
        let m = masked(src, 2, 2);
        let code = extract_code("```c\r\n  c();\r\n```").unwrap();
        let s = spliced(&m, &code);
        assert_eq!(s.file_text, "a {\r\n  c();\r\n}\r\n");
    }

    #[test]
    fn end_to_end_from_an_answer() {
        let src = "<?php\nfunction q($db, $id) {\n    return $db->query(\"SELECT * FROM t WHERE id=$id\");\n}\n";
        let m = masked(src, 3, 3);
        let answer = "Here is the fix:\n```php\nfunction q($db, $id) {\n  $s = $db->prepare(\"SELECT * FROM t WHERE id=?\");\n  return $s->execute([$id]);\n}\n```\n";
        let s = spliced(&m, &extract_code(answer).unwrap());
        assert_eq!((s.dropped_leading, s.dropped_trailing), (1, 1));
        assert_eq!(s.braces, BraceFix::Unchanged);
        assert!(s.reindented);
        assert_eq!(
            s.file_text,
            "<?php\nfunction q($db, $id) {\n    $s = $db->prepare(\"SELECT * FROM t WHERE id=?\");\n    return $s->execute([$id]);\n}\n"
        );
    }

    fn has_mask_line(text: &str) -> bool {
        text.split('\n').any(|l| l.trim() == MASK_TOKEN)
    }

    proptest! {
        #[test]
        fn original_block_in_a_fenced_answer_reproduces_the_file(
            bodies in proptest::collection::vec("[ \t]{0,3}[a-z(){};\"'/* ]{0,10}", 1..25),
            crlf in any::<bool>(),
            trailing_newline in any::<bool>(),
            a in 0usize..25, b in 0usize..25,
            tag in "(|c|java|php)",
        ) {
            // Numbered lines never repeat, so no edge of the block equals a context line.
            let eol = if crlf { "\r" } else { "" };
            let lines: Vec<String> =
                bodies.iter().enumerate().map(|(i, l)| format!("{l} #{i}{eol}")).collect();
            let mut content = lines.join("\n");
            if trailing_newline { content.push('\n'); }
            let n = lines.len();
            let (s, e) = (a % n + 1, b % n + 1);
            let m = masked(&content, s.min(e), s.max(e));
            let answer = format!("Sure:\n```{tag}\n{}\n```\n", m.original_block);
            let code = extract_code(&answer).expect("non-empty block");
            let out = spliced(&m, &code);
            prop_assert_eq!(out.braces, BraceFix::Unchanged);
            prop_assert_eq!(&out.file_text, &content);
            prop_assert!(!has_mask_line(&out.file_text));
        }

        #[test]
        fn never_panics_and_succeeds_with_no_mask_line_left(
            before in proptest::collection::vec("[ \t]{0,2}[a-z{}\"'/*]{0,6}", 0..6),
            after in proptest::collection::vec("[ \t]{0,2}[a-z{}\"'/*]{0,6}", 0..6),
            block in "[ \t]{0,3}[a-z{}();\"'/*\n\r\t ]{0,40}",
            code in "[ \t\n\r]{0,3}[a-z{}();\"'/*\n\r\t ]{0,60}",
        ) {
            let mut lines = before.clone();
            let start = lines.len() + 1;
            let block_lines: Vec<&str> = block.split('\n').collect();
            lines.extend(block_lines.iter().map(|l| l.to_string()));
            let end = lines.len();
            lines.extend(after);
            let content = lines.join("\n");
            // A block ending in an empty last line makes the file end with a line break, and the
            // empty piece after it is no line: such a range does not mask.
            let m = mask("t", "f", &content, LineRange { start, end });
            prop_assume!(m.is_ok());
            let m = m.unwrap();
            match splice(&m, &code) {
                SpliceOutcome::Spliced(s) => {
                    prop_assert!(!has_mask_line(&s.file_text));
                    let expected = format!(
                        "{}{}{}",
                        &m.text[..m.mask_span.start], s.inserted, &m.text[m.mask_span.end..]
                    );
                    prop_assert_eq!(s.file_text, expected);
                }
                SpliceOutcome::Failed(f) => {
                    prop_assert_eq!(f, SpliceFailure::EmptyCode);
                    prop_assert!(code.trim().is_empty());
                }
            }
        }

        #[test]
        fn never_panics_on_arbitrary_code(code in any::<String>()) {
            let m = masked(JAVA, 3, 4);
            let _ = splice(&m, &code);
        }
    }
}
