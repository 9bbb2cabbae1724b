//! v1 patch "repair": upstream's third and fourth apply attempts use a copy of the model's patch
//! whose hunk headers were recounted from the hunk bodies.
//!
//! This reproduces upstream's `repair_patch` (v1 `bench/utils.py`, three regular expressions
//! and `get_hunk_stats`) match for match, quirks included, because the repaired text decides
//! which generations count as applied:
//! - a file section is `[diff line\n]--- a/...\n+++ b/...` up to the next `diff `, `--- a/` or
//!   the end, wherever those occur (not only at a line start: a body line containing `diff `
//!   cuts the section there);
//! - the `diff` line survives only when it directly precedes `---` (a git `index` line in
//!   between drops it); `index`, mode and rename lines are always dropped;
//! - only the first `--- a/X\n+++ b/Y` header of a section is kept; a section whose old side is
//!   not `a/...` (`/dev/null`, new files) is not a section at all;
//! - only hunk headers of the form `@@ -N,N +N,N @@` are recognised (`@@ -1 +1 @@` is dropped
//!   with its body); a hunk runs to the next `diff `, `--- a/`, `@@ -` or the end;
//! - counting: the hunk's first line (the rest of the `@@` line) is skipped, newlines at both
//!   ends are trimmed, then every line starting with `-` is removed, `+` added, and anything
//!   else, including empty lines and `\ No newline at end of file`, is context;
//! - old start is kept, new start = old start + running delta of the file's earlier hunks.
//!
//! Deviations, each only reachable by input upstream cannot handle either:
//! - where upstream raises (a section without a one-line `--- a/X\n+++ b/Y` header, or a hunk
//!   body made only of digits) we return the empty string: upstream's exception ends the unit
//!   as not applied, and an empty repair ends it the same way;
//! - hunk header numbers are ASCII digits (Python's `\d` also takes other Unicode decimal
//!   digits) and a start line of more than 30 digits also yields the empty string;
//! - `\w` and `\s` use Rust's Unicode alphanumeric/whitespace classes (plus U+001C..U+001F,
//!   which Python counts as whitespace); they differ from Python's only on rare non-ASCII
//!   letters and numbers inside a `diff` line.

/// Recounts every hunk header of `patch` as upstream's v1 harness does (see the module doc).
/// Returns the empty string when nothing could be repaired.
pub fn repair_patch(patch: &str) -> String {
    let patch = patch.trim_start_matches('\n');
    let marks = SectionMarks::new(patch);
    let mut out = String::new();
    for section in file_sections(patch, &marks) {
        match repair_section(section) {
            Some(text) => out.push_str(&text),
            None => return String::new(),
        }
    }
    out
}

/// Python's `\s` on `str`: Unicode whitespace plus the information separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Characters of upstream's `[\w\_\.\ \/\-]` (the tail of a `diff` line it keeps).
fn is_diff_line_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ' ' | '/' | '-')
}

/// End of a run (one or more) of Python whitespace starting at `from`, or None when empty.
fn skip_py_space(s: &str, from: usize) -> Option<usize> {
    let end = s[from..]
        .char_indices()
        .find(|&(_, c)| !is_py_space(c))
        .map_or(s.len(), |(i, _)| from + i);
    (end > from).then_some(end)
}

/// Sorted byte offsets where the lazy parts of upstream's section pattern may stop. Positions
/// are precomputed so that the scan stays linear-logarithmic on hostile input (Python's
/// backtracking is quadratic there; the result is the same).
struct SectionMarks {
    /// Offsets of `\n` followed by `+++`, whitespace, `b/`; paired with the offset after `b/`.
    new_headers: Vec<(usize, usize)>,
    /// Offsets where `diff ` or `--- a/` starts.
    section_ends: Vec<usize>,
}

impl SectionMarks {
    fn new(s: &str) -> Self {
        let mut new_headers = Vec::new();
        for (i, _) in s.match_indices('\n') {
            let after = i + 1;
            if s[after..].starts_with("+++") {
                if let Some(ws_end) = skip_py_space(s, after + 3) {
                    if s[ws_end..].starts_with("b/") {
                        new_headers.push((i, ws_end + 2));
                    }
                }
            }
        }
        let mut section_ends: Vec<usize> = s
            .match_indices("diff ")
            .map(|(i, _)| i)
            .chain(s.match_indices("--- a/").map(|(i, _)| i))
            .collect();
        section_ends.sort_unstable();
        SectionMarks {
            new_headers,
            section_ends,
        }
    }

    /// `---\s+a\/.*?\n\+\+\+\s+b\/.*?(?=diff |--- a/|\Z)` anchored at `at`: the match end.
    fn match_section_body(&self, s: &str, at: usize) -> Option<usize> {
        if !s[at..].starts_with("---") {
            return None;
        }
        let ws_end = skip_py_space(s, at + 3)?;
        if !s[ws_end..].starts_with("a/") {
            return None;
        }
        let old_path_start = ws_end + 2;
        let idx = self
            .new_headers
            .partition_point(|&(nl, _)| nl < old_path_start);
        let &(_, after_b) = self.new_headers.get(idx)?;
        let idx = self.section_ends.partition_point(|&p| p < after_b);
        Some(self.section_ends.get(idx).copied().unwrap_or(s.len()))
    }
}

/// All non-overlapping matches of upstream's `PATCH_PATTERN`, left to right.
fn file_sections<'a>(s: &'a str, marks: &SectionMarks) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        if let Some(end) = match_section_at(s, pos, marks) {
            out.push(&s[pos..end]);
            pos = end;
        } else {
            pos += s[pos..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

fn match_section_at(s: &str, pos: usize, marks: &SectionMarks) -> Option<usize> {
    // The optional `diff[...]+\n` prefix is tried first, as Python's greedy `?` does.
    if s[pos..].starts_with("diff") {
        let run_start = pos + 4;
        let run_end = s[run_start..]
            .char_indices()
            .find(|&(_, c)| !is_diff_line_char(c))
            .map_or(s.len(), |(i, _)| run_start + i);
        if run_end > run_start && s[run_end..].starts_with('\n') {
            if let Some(end) = marks.match_section_body(s, run_end + 1) {
                return Some(end);
            }
        }
    }
    marks.match_section_body(s, pos)
}

/// Upstream's `PATCH_FILE_PATTERN` (`---\s+a\/.+\n\+\+\+\s+b\/.+`, no DOTALL): first match.
fn first_file_header(s: &str) -> Option<&str> {
    // Every start, overlapping ones included: in `---- a/x` the match starts at the second dash.
    let starts = (0..s.len()).filter(|&i| s.as_bytes()[i..].starts_with(b"---"));
    for at in starts {
        let Some(ws_end) = skip_py_space(s, at + 3) else {
            continue;
        };
        if !s[ws_end..].starts_with("a/") {
            continue;
        }
        let old_rest = ws_end + 2;
        let Some(nl) = s[old_rest..].find('\n').map(|i| old_rest + i) else {
            continue;
        };
        if nl == old_rest || !s[nl + 1..].starts_with("+++") {
            continue;
        }
        let Some(ws_end) = skip_py_space(s, nl + 4) else {
            continue;
        };
        if !s[ws_end..].starts_with("b/") {
            continue;
        }
        let new_rest = ws_end + 2;
        let line_end = s[new_rest..].find('\n').map_or(s.len(), |i| new_rest + i);
        if line_end == new_rest {
            continue;
        }
        return Some(&s[at..line_end]);
    }
    None
}

/// One match of upstream's `PATCH_HUNK_PATTERN`.
struct Hunk<'a> {
    old_start: &'a str,
    /// Everything after the closing `@@` up to the next stop mark (the rest of the `@@` line
    /// and the body), copied unchanged into the repaired patch.
    content: &'a str,
}

/// End of an ASCII digit run starting at `from`, or None when empty.
fn digits(s: &str, from: usize) -> Option<usize> {
    let n = s[from..].bytes().take_while(u8::is_ascii_digit).count();
    (n > 0).then_some(from + n)
}

/// `@@\s+-(\d+),(\d+)\s+\+(\d+),(\d+)\s+@@` anchored at `at`: the numbers and the header end.
fn hunk_header_at(s: &str, at: usize) -> Option<([&str; 4], usize)> {
    if !s[at..].starts_with("@@") {
        return None;
    }
    let mut i = skip_py_space(s, at + 2)?;
    let mut numbers = [""; 4];
    for (k, number) in numbers.iter_mut().enumerate() {
        if k == 0 || k == 2 {
            let sign = if k == 0 { '-' } else { '+' };
            if !s[i..].starts_with(sign) {
                return None;
            }
            i += 1;
        }
        let end = digits(s, i)?;
        *number = &s[i..end];
        i = end;
        if k == 0 || k == 2 {
            if !s[i..].starts_with(',') {
                return None;
            }
            i += 1;
        } else {
            i = skip_py_space(s, i)?;
        }
    }
    if !s[i..].starts_with("@@") {
        return None;
    }
    Some((numbers, i + 2))
}

/// All matches of upstream's hunk pattern in one file section.
fn hunks(section: &str) -> Vec<Hunk<'_>> {
    let mut stops: Vec<usize> = ["diff ", "--- a/", "@@ -"]
        .iter()
        .flat_map(|m| section.match_indices(m).map(|(i, _)| i))
        .collect();
    stops.sort_unstable();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < section.len() {
        if let Some((numbers, content_start)) = hunk_header_at(section, pos) {
            // `(.+?)` takes at least one character before the lookahead may stop it.
            if let Some(first) = section[content_start..].chars().next() {
                let min_end = content_start + first.len_utf8();
                let idx = stops.partition_point(|&p| p < min_end);
                let end = stops.get(idx).copied().unwrap_or(section.len());
                out.push(Hunk {
                    old_start: numbers[0],
                    content: &section[content_start..end],
                });
                pos = end;
                continue;
            }
        }
        pos += section[pos..].chars().next().map_or(1, char::len_utf8);
    }
    out
}

/// Removed, added and context line counts of a hunk as upstream's `get_hunk_stats` counts them.
fn count_hunk_lines(content: &str) -> (i128, i128, i128) {
    let body = content.split_once('\n').map_or(content, |(_, rest)| rest);
    let body = body.trim_matches('\n');
    let (mut removed, mut added, mut context) = (0, 0, 0);
    for line in body.split('\n') {
        if line.starts_with('-') {
            removed += 1;
        } else if line.starts_with('+') {
            added += 1;
        } else {
            context += 1;
        }
    }
    (removed, added, context)
}

/// The repaired text of one file section, or None where upstream raises.
fn repair_section(section: &str) -> Option<String> {
    let mut out = String::new();
    if section.starts_with("diff") {
        let line_end = section.find('\n').unwrap_or(section.len());
        out.push_str(&section[..line_end]);
        out.push('\n');
    }
    out.push_str(first_file_header(section)?);
    out.push('\n');
    let mut total_delta: i128 = 0;
    for hunk in hunks(section) {
        // Upstream converts every numeric group with int(); a body made only of numeric
        // characters becomes an int too and then crashes the recount.
        if hunk.content.chars().all(char::is_numeric) {
            return None;
        }
        let digits = hunk.old_start.trim_start_matches('0');
        if digits.len() > 30 {
            return None;
        }
        let old_start: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let (removed, added, context) = count_hunk_lines(hunk.content);
        let old_len = context + removed;
        let new_len = context + added;
        let new_start = old_start + total_delta;
        total_delta += new_len - old_len;
        out.push_str(&format!(
            "@@ -{old_start},{old_len} +{new_start},{new_len} @@{}",
            hunk.content
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recounts_lengths_and_shifts_new_start_by_running_delta() {
        let broken = "--- a/f.py\n+++ b/f.py\n@@ -1,9 +1,9 @@\n a\n-b\n+c\n+d\n e\n@@ -10,1 +99,7 @@ def g():\n x\n-y\n z\n";
        let fixed = "--- a/f.py\n+++ b/f.py\n@@ -1,3 +1,4 @@\n a\n-b\n+c\n+d\n e\n@@ -10,3 +11,2 @@ def g():\n x\n-y\n z\n";
        assert_eq!(repair_patch(broken), fixed);
    }

    #[test]
    fn keeps_diff_line_only_when_it_directly_precedes_the_old_header() {
        let with_index = "diff --git a/f b/f\nindex 123..456 100644\n--- a/f\n+++ b/f\n@@ -3,0 +3,0 @@\n k\n+n\n";
        assert_eq!(
            repair_patch(with_index),
            "--- a/f\n+++ b/f\n@@ -3,1 +3,2 @@\n k\n+n\n"
        );
        let direct = "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,0 +3,0 @@\n k\n+n\n";
        assert_eq!(
            repair_patch(direct),
            "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,1 +3,2 @@\n k\n+n\n"
        );
    }

    #[test]
    fn multiple_files_each_restart_the_delta() {
        let broken = "--- a/x\n+++ b/x\n@@ -1,1 +1,1 @@\n+new\n a\n@@ -5,1 +5,1 @@\n b\n+c\n--- a/y\n+++ b/y\n@@ -2,5 +7,5 @@\n-gone\n";
        let fixed = "--- a/x\n+++ b/x\n@@ -1,1 +1,2 @@\n+new\n a\n@@ -5,1 +6,2 @@\n b\n+c\n--- a/y\n+++ b/y\n@@ -2,1 +2,0 @@\n-gone\n";
        assert_eq!(repair_patch(broken), fixed);
    }

    #[test]
    fn no_newline_marker_and_empty_lines_count_as_context() {
        // The blank line inside the body is a context line whose leading space was lost; the
        // backslash marker is counted as context too (upstream does; git would not).
        let broken = "--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n a\n\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n";
        let fixed = "--- a/f\n+++ b/f\n@@ -1,5 +1,5 @@\n a\n\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n";
        assert_eq!(repair_patch(broken), fixed);
    }

    #[test]
    fn trailing_blank_lines_are_trimmed_before_counting_but_kept_in_the_text() {
        let broken = "--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n a\n+b\n\n\n";
        assert_eq!(
            repair_patch(broken),
            "--- a/f\n+++ b/f\n@@ -1,1 +1,2 @@\n a\n+b\n\n\n"
        );
    }

    #[test]
    fn short_hunk_headers_and_new_files_are_dropped() {
        let broken = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n";
        assert_eq!(repair_patch(broken), "--- a/f\n+++ b/f\n");
        let new_file = "--- /dev/null\n+++ b/n\n@@ -0,0 +1,1 @@\n+x\n";
        assert_eq!(repair_patch(new_file), "");
    }

    #[test]
    fn diff_inside_a_body_line_cuts_the_section() {
        let broken = "--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n-old\n+x = diff + 1\n y\n";
        assert_eq!(
            repair_patch(broken),
            "--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n-old\n+x = "
        );
    }

    #[test]
    fn text_before_and_between_sections_is_dropped_and_leading_zeros_go() {
        let broken = "Here is the patch:\n--- a/f\n+++ b/f\nnoise\n@@ -007,2 +1,1 @@\n a\n";
        assert_eq!(
            repair_patch(broken),
            "--- a/f\n+++ b/f\n@@ -7,1 +7,1 @@\n a\n"
        );
    }

    #[test]
    fn crlf_lines_keep_their_carriage_returns() {
        let broken = "--- a/f\r\n+++ b/f\r\n@@ -1,9 +1,9 @@\r\n a\r\n-b\r\n+c\r\n";
        assert_eq!(
            repair_patch(broken),
            "--- a/f\r\n+++ b/f\r\n@@ -1,2 +1,2 @@\r\n a\r\n-b\r\n+c\r\n"
        );
    }

    #[test]
    fn where_upstream_raises_the_repair_is_empty() {
        // The old header spans lines, so upstream's one-line header pattern finds nothing.
        assert_eq!(
            repair_patch("--- a/\nx\n+++ b/f\n@@ -1,1 +1,1 @@\n a\n"),
            ""
        );
        assert_eq!(repair_patch("--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@7"), "");
    }

    #[test]
    fn a_header_may_start_inside_a_longer_dash_run() {
        // The section starts at `--- a/x`; its one-line header is the `--- a/f` found one
        // dash into `---- a/f`.
        let broken = "--- a/x\t2024\n@@ ---- a/f\n+++ b/f\n@@ -1,5 +1,5 @@\n-a\n";
        assert_eq!(
            repair_patch(broken),
            "--- a/f\n+++ b/f\n@@ -1,1 +1,0 @@\n-a\n"
        );
    }

    #[test]
    fn garbage_repairs_to_nothing() {
        assert_eq!(repair_patch(""), "");
        assert_eq!(repair_patch("I cannot help with that."), "");
        assert_eq!(repair_patch("@@ -1,1 +1,1 @@\n a\n"), "");
    }

    #[test]
    fn hunk_header_without_body_at_end_of_input_is_not_a_hunk() {
        assert_eq!(
            repair_patch("--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@"),
            "--- a/f\n+++ b/f\n"
        );
    }

    #[test]
    fn hostile_input_stays_fast() {
        let many = "--- a/x\n".repeat(100_000);
        let start = std::time::Instant::now();
        assert_eq!(repair_patch(&many), "");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
