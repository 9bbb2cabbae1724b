//! Answer extraction: turn a model's raw answer into the patch (v1) or the code (v2) it carries.
//!
//! Both functions treat the answer as untrusted: only its first [`MAX_ANSWER_BYTES`] bytes are
//! looked at (cut at a character boundary), nothing here panics, and an answer that carries
//! nothing usable gives `None`, which the caller records as a failed generation.
//!
//! v1 follows upstream's `extract_diff` (`bench/utils.py`) rule for rule, including its regexes'
//! lazy matching: every `<name>…</name>` tag is found first, then every ```` ```lang\n…``` ````
//! fence; a `diff`/`patch` tag beats a `diff`/`patch` fence, which beats any other tag, which beats
//! any other fence; with none of them the whole answer is used, cut at the first `</s>`.
//!
//! The one known difference: `\w` in tag names and fence words is the Unicode word class of the
//! `regex` crate, which differs from Python's in rare characters (combining marks count here,
//! `²` or `½` count there). A differential run against upstream's Python on 20,000 generated
//! markup-heavy answers found no other difference.
//!
//! v2 follows the protocol's rule: the text between the last two ```` ``` ```` fences. Upstream's
//! own v2 extraction code was not available to compare with, so its edge cases (one fence, the
//! language-tag line, blank edges) are this module's documented choices; see [`extract_code`].

use regex::Regex;
use std::collections::HashMap;
use std::sync::LazyLock;

/// How much of an answer is looked at. `max_gen_token` defaults to 64,000 tokens, a few hundred
/// KiB of text; 4 MiB leaves room for verbose models while keeping a hostile or runaway answer
/// from costing unbounded time and memory. Anything past it is ignored.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The longest first line of a fence body that still counts as a language tag (`typescript`,
/// `objective-c`, `c++`…). Longer first lines are code.
pub const MAX_LANGUAGE_TAG_CHARS: usize = 20;

const FENCE: &str = "```";

/// Which of upstream's rules produced a v1 patch, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchSource {
    /// The body of the first `<diff>…</diff>` or `<patch>…</patch>` tag.
    DiffTag,
    /// The body of the first ```` ```diff ```` or ```` ```patch ```` fence.
    DiffFence,
    /// The body of the first other `<name>…</name>` tag.
    OtherTag,
    /// The body of the first other fence.
    OtherFence,
    /// The whole answer, cut at the first `</s>`.
    WholeAnswer,
}

/// A v1 patch taken out of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedPatch {
    /// Exactly the matched text: not trimmed, since `git apply` cares about every byte.
    pub text: String,
    pub source: PatchSource,
}

/// The part of `answer` that is looked at: at most [`MAX_ANSWER_BYTES`], cut at a char boundary.
pub fn bounded(answer: &str) -> &str {
    if answer.len() <= MAX_ANSWER_BYTES {
        return answer;
    }
    let mut end = MAX_ANSWER_BYTES;
    while !answer.is_char_boundary(end) {
        end -= 1;
    }
    &answer[..end]
}

// Upstream: `\<([\w-]+)\>(.*?)\<\/\1\>` with DOTALL. Rust's regex has no backreference, so the
// opening tag and the closing tags are found separately and paired by name (see `first_tags`).
static TAG_OPEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<([\w-]+)>").expect("valid regex"));
static TAG_CLOSE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"</([\w-]+)>").expect("valid regex"));
// Upstream: ```` ```(\w+)?\n(.*?)``` ```` with DOTALL; the regex crate's leftmost-first semantics
// give the same matches and groups as Python's backtracking engine for this pattern.
static FENCED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)```(\w+)?\n(.*?)```").expect("valid regex"));

fn is_diff_name(name: &str) -> bool {
    name == "diff" || name == "patch"
}

/// The first `diff`/`patch` tag body and the first other tag body, scanning like Python's
/// `findall`: after a complete tag the scan resumes past its closing tag, after an opening tag
/// with no matching close it resumes one character further.
fn first_tags(text: &str) -> (Option<&str>, Option<&str>) {
    // Start offsets of every `</name>`, per name, in order. Any literal `</name>` in the text is
    // one of these matches: a closing tag contains no `<` besides its first, so matches cannot
    // overlap and hide one another.
    let mut closers: HashMap<&str, Vec<usize>> = HashMap::new();
    for c in TAG_CLOSE.captures_iter(text) {
        let (whole, name) = (c.get(0).expect("group 0"), c.get(1).expect("group 1"));
        closers
            .entry(name.as_str())
            .or_default()
            .push(whole.start());
    }
    let mut other = None;
    let mut pos = 0;
    while let Some(open) = TAG_OPEN.find_at(text, pos) {
        let name = &text[open.start() + 1..open.end() - 1];
        let body_start = open.end();
        let close = closers.get(name).and_then(|starts| {
            let i = starts.partition_point(|&s| s < body_start);
            starts.get(i).copied()
        });
        match close {
            Some(close_start) => {
                let body = &text[body_start..close_start];
                if is_diff_name(name) {
                    // A diff tag beats everything: no need to look further.
                    return (Some(body), other);
                }
                other.get_or_insert(body);
                pos = close_start + name.len() + 3;
            }
            // `<` is one byte and the name holds no `<`, so the next candidate opener starts
            // after this one's `<`: exactly where Python would retry.
            None => pos = open.start() + 1,
        }
    }
    (None, other)
}

/// The first `diff`/`patch` fence body and the first other fence body.
fn first_fences(text: &str) -> (Option<&str>, Option<&str>) {
    let mut other = None;
    for c in FENCED.captures_iter(text) {
        let lang = c.get(1).map_or("", |m| m.as_str());
        let body = c.get(2).expect("group 2 always participates").as_str();
        if is_diff_name(lang) {
            return (Some(body), other);
        }
        other.get_or_insert(body);
    }
    (None, other)
}

/// v1: the patch an answer carries, by upstream's rules (see the module docs). `None` when the
/// answer is empty or blank, or when the chosen text is: upstream then tries to apply an empty
/// patch and fails; the outcome, a failed unit, is the same without running `git apply` on
/// nothing.
pub fn extract_patch(answer: &str) -> Option<ExtractedPatch> {
    let text = bounded(answer);
    if text.trim().is_empty() {
        return None;
    }
    let (diff_tag, other_tag) = first_tags(text);
    let (found, source) = if let Some(body) = diff_tag {
        (body, PatchSource::DiffTag)
    } else {
        let (diff_fence, other_fence) = first_fences(text);
        if let Some(body) = diff_fence {
            (body, PatchSource::DiffFence)
        } else if let Some(body) = other_tag {
            (body, PatchSource::OtherTag)
        } else if let Some(body) = other_fence {
            (body, PatchSource::OtherFence)
        } else {
            let cut = text.split("</s>").next().unwrap_or("");
            (cut, PatchSource::WholeAnswer)
        }
    };
    if found.trim().is_empty() {
        return None;
    }
    Some(ExtractedPatch {
        text: found.to_string(),
        source,
    })
}

/// A first fence line that names a language: one short word such as `php`, `c++` or `c#`.
fn is_language_tag(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= MAX_LANGUAGE_TAG_CHARS
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '#' | '.' | '-'))
}

/// The content of a fence body taken from just after the opening ```` ``` ```` to just before
/// the closing one: the rest of the opening line goes when it is blank or a language tag, and
/// the line break (plus any spaces or tabs) before the closing fence goes too.
fn fence_content(segment: &str) -> &str {
    let mut s = segment;
    if let Some((first, rest)) = s.split_once('\n') {
        let info = first.trim();
        if info.is_empty() || is_language_tag(info) {
            s = rest;
        }
    }
    if let Some((body, last)) = s.rsplit_once('\n') {
        if last.chars().all(|c| c == ' ' || c == '\t') {
            s = body;
        }
    }
    s
}

/// Drop leading and trailing lines that are blank, keeping the first real line's indentation.
fn trim_blank_lines(s: &str) -> &str {
    let mut s = s;
    while let Some((first, rest)) = s.split_once('\n') {
        if !first.trim().is_empty() {
            break;
        }
        s = rest;
    }
    while let Some((body, last)) = s.rsplit_once('\n') {
        if !last.trim().is_empty() {
            break;
        }
        s = body;
    }
    if s.trim().is_empty() {
        ""
    } else {
        s
    }
}

/// v2: the code an answer carries, to be spliced in place of `<MASKED>`.
///
/// - Two or more fences: the text between the last two (fences are the non-overlapping
///   ```` ``` ```` occurrences from the left, as `str.split` finds them), minus a first line that
///   is blank or only a language tag and minus the line break before the closing fence. Nothing
///   else is trimmed: the first line's indentation tells the splice how the code is indented.
///   A `\r` of a CRLF answer stays on its line, as it would upstream.
/// - One fence (an answer cut off by the token limit, or one closing fence after bare code): the
///   text after it, or the text before it when nothing follows.
/// - No fence: the whole answer with every `<code>` and `</code>` removed and blank lines
///   trimmed from both ends.
///
/// `None` when nothing but whitespace is left.
pub fn extract_code(answer: &str) -> Option<String> {
    let text = bounded(answer);
    let fences: Vec<usize> = text.match_indices(FENCE).map(|(i, _)| i).collect();
    let code = match fences.as_slice() {
        [] => trim_blank_lines(&text.replace("<code>", "").replace("</code>", "")).to_string(),
        [only] => {
            let after = fence_content(&text[only + FENCE.len()..]);
            if after.trim().is_empty() {
                trim_blank_lines(&text[..*only]).to_string()
            } else {
                after.to_string()
            }
        }
        [.., open, close] => fence_content(&text[open + FENCE.len()..*close]).to_string(),
    };
    if code.trim().is_empty() {
        None
    } else {
        Some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn patch(answer: &str) -> (String, PatchSource) {
        let p = extract_patch(answer).expect("a patch");
        (p.text, p.source)
    }

    const DIFF: &str = "--- a/x.c\n+++ b/x.c\n@@ -1,1 +1,1 @@\n-a\n+b\n";

    #[test]
    fn v1_empty_and_blank_answers_are_failed_generations() {
        assert_eq!(extract_patch(""), None);
        assert_eq!(extract_patch("  \n\t\r\n"), None);
        assert_eq!(extract_patch("<diff></diff>"), None);
        assert_eq!(extract_patch("</s>trailing"), None);
    }

    #[test]
    fn v1_diff_tag_body_is_returned_untrimmed() {
        let answer = format!("Sure.\n<patch>\n{DIFF}</patch>\nDone.");
        assert_eq!(patch(&answer), (format!("\n{DIFF}"), PatchSource::DiffTag));
        let answer = format!("<diff>{DIFF}</diff>");
        assert_eq!(patch(&answer), (DIFF.to_string(), PatchSource::DiffTag));
    }

    #[test]
    fn v1_diff_tag_beats_an_earlier_diff_fence_and_other_tags() {
        let answer = format!("<code>x</code>\n```diff\nFENCE\n```\n<diff>{DIFF}</diff>");
        assert_eq!(patch(&answer), (DIFF.to_string(), PatchSource::DiffTag));
    }

    #[test]
    fn v1_diff_fence_beats_other_tags_and_fences() {
        let answer = "<code>tagged</code>\n```c\nother\n```\n```patch\nP1\n```\n```diff\nP2\n```";
        assert_eq!(patch(answer), ("P1\n".to_string(), PatchSource::DiffFence));
    }

    #[test]
    fn v1_other_tag_beats_an_earlier_other_fence() {
        let answer = "```c\nfenced\n```\nthen <answer>tagged</answer>";
        assert_eq!(patch(answer), ("tagged".to_string(), PatchSource::OtherTag));
    }

    #[test]
    fn v1_first_other_fence_then_whole_answer_cut_at_end_of_sequence() {
        let answer = "text\n```\nfirst\n```\n```python\nsecond\n```";
        assert_eq!(
            patch(answer),
            ("first\n".to_string(), PatchSource::OtherFence)
        );
        let answer = format!("{DIFF}</s>garbage</s>more");
        assert_eq!(patch(&answer), (DIFF.to_string(), PatchSource::WholeAnswer));
        assert_eq!(
            patch("no markers"),
            ("no markers".to_string(), PatchSource::WholeAnswer)
        );
    }

    #[test]
    fn v1_tag_bodies_are_lazy_and_need_the_same_name() {
        // Lazy: the first `</diff>` closes.
        assert_eq!(patch("<diff>a</diff>b</diff>").0, "a");
        // `<a>` never closes, so the scan retries and finds `<b>…</b>` inside it.
        assert_eq!(
            patch("<a> <b>inner</b> </c>"),
            ("inner".to_string(), PatchSource::OtherTag)
        );
        // After a complete tag the scan resumes past its close: the `<diff>` inside is skipped.
        assert_eq!(
            patch("<x><diff>in</diff></x> tail"),
            ("<diff>in</diff>".to_string(), PatchSource::OtherTag)
        );
        // Names allow `-` and word characters only; `<a b>` is no tag.
        assert_eq!(patch("<my-tag>v</my-tag>").0, "v");
        assert_eq!(patch("<a b>v</a b>").1, PatchSource::WholeAnswer);
        // A closing tag before its opener does not count.
        assert_eq!(patch("</q>x<q>y").1, PatchSource::WholeAnswer);
        // Tag names are case-sensitive, as upstream's set lookup is.
        assert_eq!(
            patch("<DIFF>x</DIFF>```diff\ny\n```").1,
            PatchSource::DiffFence
        );
    }

    #[test]
    fn v1_fences_need_a_newline_right_after_the_word() {
        // `c++` is not `\w+`, and a CRLF fence line has `\r` before `\n`: neither opens a fence.
        assert_eq!(patch("```c++\nx\n```").1, PatchSource::WholeAnswer);
        assert_eq!(patch("```diff\r\nx\r\n```").1, PatchSource::WholeAnswer);
        // Four backticks: the scan retries one character later and finds ```` ```\n ````.
        assert_eq!(
            patch("````\nbody\n````"),
            ("body\n".to_string(), PatchSource::OtherFence)
        );
        // The body is lazy: the first closing fence ends it, even mid-line.
        assert_eq!(patch("```diff\na```b```").0, "a");
    }

    #[test]
    fn v1_oversized_answers_are_cut() {
        let mut answer = format!("<diff>{DIFF}</diff>");
        answer.push_str(&"é".repeat(MAX_ANSWER_BYTES));
        answer.push_str("<patch>late</patch>");
        assert_eq!(patch(&answer), (DIFF.to_string(), PatchSource::DiffTag));
        let late = format!("{}<diff>late</diff>", "x".repeat(MAX_ANSWER_BYTES));
        assert_eq!(patch(&late).1, PatchSource::WholeAnswer);
        // The cut falls inside a two-byte character and moves back to its start.
        let odd = format!("x{}", "é".repeat(MAX_ANSWER_BYTES / 2));
        assert_eq!(bounded(&odd).len(), MAX_ANSWER_BYTES - 1);
    }

    #[test]
    fn v1_many_unclosed_tags_stay_fast() {
        let answer: String = (0..200_000).map(|i| format!("<t{i}>")).collect();
        let start = std::time::Instant::now();
        assert_eq!(patch(&answer).1, PatchSource::WholeAnswer);
        assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
    }

    #[test]
    fn v2_takes_the_last_two_fences() {
        let answer = "Old:\n```java\nold();\n```\nNew:\n```java\n    fixed();\n```\nBye";
        assert_eq!(extract_code(answer).as_deref(), Some("    fixed();"));
        // "Last two" literally: prose between two blocks is what lies between the last two fences.
        let answer = "```c\na();\n```\nmiddle\n```c\nb();\n```";
        assert_eq!(extract_code(answer).as_deref(), Some("b();"));
        let answer = "```c\na();\n```\nmiddle prose\n```";
        assert_eq!(extract_code(answer).as_deref(), Some("middle prose"));
    }

    #[test]
    fn v2_language_tag_line_is_dropped_only_when_short_and_alone() {
        assert_eq!(
            extract_code("```php\n$a = 1;\n```").as_deref(),
            Some("$a = 1;")
        );
        assert_eq!(
            extract_code("```c++\nint a;\n```").as_deref(),
            Some("int a;")
        );
        assert_eq!(
            extract_code("```objective-c\nx;\n```").as_deref(),
            Some("x;")
        );
        assert_eq!(extract_code("```\n  x;\n```").as_deref(), Some("  x;"));
        // Not a tag: code on the fence line, or a long first line.
        assert_eq!(
            extract_code("```x = 1;\ny = 2;\n```").as_deref(),
            Some("x = 1;\ny = 2;")
        );
        let long = "averyveryverylonglanguagename";
        assert_eq!(
            extract_code(&format!("```{long}\nz\n```")).as_deref(),
            Some(format!("{long}\nz").as_str())
        );
        // Inline fence pair on one line.
        assert_eq!(
            extract_code("Use ```x = 1;``` here").as_deref(),
            Some("x = 1;")
        );
    }

    #[test]
    fn v2_only_the_line_break_before_the_closing_fence_goes() {
        assert_eq!(
            extract_code("```go\n\tx := 1\n\n```").as_deref(),
            Some("\tx := 1\n")
        );
        // An indented closing fence (inside a list) loses its indentation too.
        assert_eq!(
            extract_code("1. ```py\n   a = 1\n   ```").as_deref(),
            Some("   a = 1")
        );
    }

    #[test]
    fn v2_crlf_answers_keep_their_carriage_returns() {
        let answer = "Here:\r\n```java\r\nif (a) {\r\n  b();\r\n}\r\n```\r\n";
        assert_eq!(
            extract_code(answer).as_deref(),
            Some("if (a) {\r\n  b();\r\n}\r")
        );
    }

    #[test]
    fn v2_nested_fences_take_the_literal_last_pair() {
        // A model wrapping a fenced block in another: the last two fences close both blocks and
        // enclose only a line break, so nothing usable is left.
        assert_eq!(extract_code("```markdown\n```java\nx();\n```\n```"), None);
    }

    #[test]
    fn v2_one_fence() {
        // Cut off by the token limit: what follows the fence.
        assert_eq!(
            extract_code("```java\nfoo();\nbar(").as_deref(),
            Some("foo();\nbar(")
        );
        // Only a closing fence: what precedes it.
        assert_eq!(
            extract_code("\n  foo();\n```\n").as_deref(),
            Some("  foo();")
        );
        assert_eq!(extract_code("```"), None);
    }

    #[test]
    fn v2_no_fence_strips_code_tags_and_blank_edges() {
        assert_eq!(
            extract_code("<code>\n    return x;\n</code>\n").as_deref(),
            Some("    return x;")
        );
        assert_eq!(extract_code("a <code>b</code> c").as_deref(), Some("a b c"));
        assert_eq!(extract_code("<code></code>"), None);
    }

    #[test]
    fn v2_empty_answers_are_failed_generations() {
        assert_eq!(extract_code(""), None);
        assert_eq!(extract_code(" \n\t"), None);
        assert_eq!(extract_code("```java\n\n```"), None);
    }

    #[test]
    fn v2_oversized_answers_are_cut() {
        let mut answer = String::from("```c\nkept();\n```\n");
        answer.push_str(&"y".repeat(MAX_ANSWER_BYTES));
        answer.push_str("\n```c\nignored();\n```");
        assert_eq!(extract_code(&answer).as_deref(), Some("kept();"));
    }

    proptest! {
        #[test]
        fn never_panics(answer in any::<String>()) {
            let _ = extract_patch(&answer);
            let _ = extract_code(&answer);
        }

        #[test]
        fn never_panics_on_markup_heavy_answers(
            answer in "([<>/`\n\r ]|diff|patch|code|</s>|```|é|[a-z]){0,80}"
        ) {
            if let Some(p) = extract_patch(&answer) {
                prop_assert!(!p.text.trim().is_empty());
                prop_assert!(answer.contains(&p.text));
            }
            if let Some(c) = extract_code(&answer) {
                prop_assert!(!c.trim().is_empty());
            }
        }

        #[test]
        fn fenced_block_comes_back_exactly(
            lines in proptest::collection::vec("[ \t]{0,4}[a-z(){};=\"'/*]{0,12}\r?", 1..8),
            tag in "(|java|php|c\\+\\+|go)",
        ) {
            let block = lines.join("\n");
            prop_assume!(!block.trim().is_empty());
            let answer = format!("Here you go:\n```{tag}\n{block}\n```\nHope it helps.");
            prop_assert_eq!(extract_code(&answer), Some(block));
        }
    }
}
