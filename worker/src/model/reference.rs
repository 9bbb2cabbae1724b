//! Answers that need no model: the upstream fix (`reference`) and the vulnerable code itself
//! (`original`). They calibrate the harness: the original must score like the baseline, the fix
//! must pass the PoC.
//!
//! Both are written in the answer format of the task's version, so they go through the same
//! extraction and application as a model's answer:
//! - v2: the replacement of the `<MASKED>` line in a markdown fence,
//!   `` ```{language}\n{block}\n```\n `` (the extractor drops the language line);
//! - v1: `<patch>\n{unified diff of the masked file}</patch>\n`, one hunk that replaces the mask
//!   line with the block, with 3 lines of context and explicit line counts (the `<patch>` tag
//!   is what upstream's extractor looks for first, so code full of HTML tags cannot confuse it).
//!
//! The reference block is derived from two versions of `vuln_file`: the original (at
//! `base_commit`, what the mask hides) and the fixed one (at `patch_commit`), by a line diff
//! (Myers):
//! 1. the start of the masked region maps to the fixed file through the diff; lines the fix
//!    inserts exactly at the region's start or end are taken into the block (a fix typically
//!    adds a check right before or after the vulnerable lines);
//! 2. the block is the fixed file's lines between the two mapped boundaries.
//!
//! What the mask cannot express is reported, not hidden: changes of the fix outside the region
//! (an added import) are left out of the answer, and a change that straddles a boundary is taken
//! whole into the block. In both cases [`FixedBlock::exact`] is false.
//!
//! The repo cache lives elsewhere, so the caller supplies file contents at a revision through
//! [`RevisionReader`].

use super::{FailureReason, Generation, InfraFailure, ModelFailure};
use ase_common::dataset::{LineRange, Task, TaskSpec};
use ase_common::prompt::masking::MaskedFile;
use similar::{capture_diff_slices, Algorithm, DiffTag};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Lines of context around the changed line in a v1 reference diff (`git diff`'s default).
const DIFF_CONTEXT: usize = 3;

/// Reads one file of a repository at a revision. May block (git); the provider calls it on
/// tokio's blocking pool.
pub trait RevisionReader: Send + Sync {
    /// The content of `path` in `repo` at `revision`, or `Ok(None)` when the file does not exist
    /// at that revision.
    fn read_file(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
    ) -> Result<Option<String>, RevisionReadError>;
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("repo {repo} at {revision}: cannot read {path}: {detail}")]
pub struct RevisionReadError {
    pub repo: String,
    pub revision: String,
    pub path: String,
    pub detail: String,
}

/// The fixed file's counterpart of the masked region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedBlock {
    /// The lines joined by `\n`, without a final line break (like `MaskedFile::original_block`).
    /// A fix that deletes the whole region gives `""`, which, like any answer, fills the mask
    /// line with an empty line rather than removing it.
    pub block: String,
    /// Changed lines (removed + added) of the fix outside the masked region; not in `block`.
    pub changed_lines_outside: usize,
    /// A change of the fix crosses a boundary of the region and was taken whole into `block`.
    pub straddles_boundary: bool,
}

impl FixedBlock {
    /// Replacing the masked region with `block` gives exactly the fixed file.
    pub fn exact(&self) -> bool {
        self.changed_lines_outside == 0 && !self.straddles_boundary
    }
}

/// The fixed counterpart of lines `range` (1-based, inclusive) of `original` in `fixed`.
/// `range` must lie inside `original` (it came from a successful mask).
pub fn fixed_block(original: &str, fixed: &str, range: LineRange) -> FixedBlock {
    let old: Vec<&str> = original.split('\n').collect();
    let new: Vec<&str> = fixed.split('\n').collect();
    let s = range.start.saturating_sub(1).min(old.len());
    let e = range.end.clamp(s, old.len());
    let ops = diff_spans(&old, &new);

    let mut new_start = None;
    let mut new_end = None;
    let mut straddles = false;
    let mut outside = 0;
    for (tag, o, n) in &ops {
        let (tag, o, n) = (*tag, o.clone(), n.clone());
        if tag == DiffTag::Equal {
            if new_start.is_none() && o.start <= s && s < o.end {
                new_start = Some(n.start + (s - o.start));
            }
            if o.start < e && e <= o.end {
                new_end = Some(n.start + (e - o.start));
            }
            continue;
        }
        // A pure insertion sits at the gap `o.start`; it belongs to the block when that gap is
        // inside the region or on one of its boundaries.
        let touches = if o.is_empty() {
            s <= o.start && o.start <= e
        } else {
            o.start < e && s < o.end
        };
        if !touches {
            outside += o.len() + n.len();
            continue;
        }
        if o.start < s || o.end > e {
            straddles = true;
        }
        if new_start.is_none() {
            new_start = Some(n.start);
        }
        // A later op may still extend the end (an insertion right after the region).
        new_end = Some(n.end.max(new_end.unwrap_or(0)));
    }
    // Empty region edge cases (cannot come from a mask, which hides >= 1 line): map the gap.
    let new_start = new_start.unwrap_or_else(|| map_gap(&ops, s));
    let new_end = new_end.unwrap_or(new_start).max(new_start);
    FixedBlock {
        block: new[new_start..new_end].join("\n"),
        changed_lines_outside: outside,
        straddles_boundary: straddles,
    }
}

/// The line diff as consecutive (tag, old range, new range) spans. The ranges are rebuilt from
/// the op lengths: after similar's compaction pass, the indices it reports for a pure insertion
/// or deletion can name a neighbouring position, while the order and lengths stay right.
fn diff_spans(old: &[&str], new: &[&str]) -> Vec<(DiffTag, Range<usize>, Range<usize>)> {
    let (mut o, mut n) = (0, 0);
    capture_diff_slices(Algorithm::Myers, old, new)
        .iter()
        .map(|op| {
            let (tag, or, nr) = op.as_tag_tuple();
            let span = (tag, o..o + or.len(), n..n + nr.len());
            o += or.len();
            n += nr.len();
            span
        })
        .collect()
}

/// Position in the new file of the gap before old line `s`.
fn map_gap(ops: &[(DiffTag, Range<usize>, Range<usize>)], s: usize) -> usize {
    let mut last = 0;
    for (_, o, n) in ops {
        if o.start <= s && s < o.end {
            return n.start + (s - o.start).min(n.len());
        }
        if o.start <= s {
            last = n.end;
        }
    }
    last
}

/// The language tag of the answer fence: short, word characters only.
pub fn fence_tag(language: &str) -> String {
    let lower = language.trim().to_ascii_lowercase();
    match lower.as_str() {
        "c++" => return "cpp".to_string(),
        "c#" => return "csharp".to_string(),
        _ => {}
    }
    let tag: String = lower
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if tag.is_empty() {
        "text".to_string()
    } else {
        tag
    }
}

/// A v2 answer: `block` in a fence tagged with the language. A block that itself contains
/// three backticks would confuse upstream's "last two fences" extraction; such code is not
/// expected in the datasets' languages outside string literals.
pub fn fenced_answer(language: &str, block: &str) -> String {
    format!("```{}\n{block}\n```\n", fence_tag(language))
}

/// A v1 answer: a unified diff against the masked file (as the model saw it) that replaces the
/// mask line with `block`, inside `<patch>` tags. `path` is the file's path in the repo.
pub fn patch_answer(path: &str, masked: &MaskedFile, block: &str) -> String {
    format!("<patch>\n{}</patch>\n", mask_diff(path, masked, block))
}

/// The unified diff of [`patch_answer`], without the tags.
pub fn mask_diff(path: &str, masked: &MaskedFile, block: &str) -> String {
    let text = &masked.text;
    let final_newline = text.ends_with('\n');
    let mut lines: Vec<&str> = text.split('\n').collect();
    if final_newline {
        lines.pop();
    }
    let m = masked.mask_line_index;
    let last = lines.len() - 1;
    let first_ctx = m.saturating_sub(DIFF_CONTEXT);
    let end_ctx = (m + 1 + DIFF_CONTEXT).min(lines.len());
    let block_lines: Vec<&str> = block.split('\n').collect();
    let old_len = end_ctx - first_ctx;
    let new_len = old_len - 1 + block_lines.len();
    let start = first_ctx + 1;

    let mut out =
        format!("--- a/{path}\n+++ b/{path}\n@@ -{start},{old_len} +{start},{new_len} @@\n");
    let no_newline = "\\ No newline at end of file\n";
    let mut line = |prefix: char, body: &str, is_last_of_file: bool| {
        out.push(prefix);
        out.push_str(body);
        out.push('\n');
        if is_last_of_file && !final_newline {
            out.push_str(no_newline);
        }
    };
    for (i, l) in lines.iter().enumerate().take(m).skip(first_ctx) {
        line(' ', l, i == last);
    }
    line('-', lines[m], m == last);
    for (k, b) in block_lines.iter().enumerate() {
        line('+', b, m == last && k + 1 == block_lines.len());
    }
    for (i, l) in lines.iter().enumerate().take(end_ctx).skip(m + 1) {
        line(' ', l, i == last);
    }
    out
}

/// `block` as an answer in the format of the task's version.
pub fn block_answer(task: &Task, masked: &MaskedFile, block: &str) -> String {
    match task.spec {
        TaskSpec::V1(_) => patch_answer(&task.vuln_file, masked, block),
        TaskSpec::V2(_) => fenced_answer(&task.language, block),
    }
}

/// The `original` provider's answer: the hidden block itself.
pub fn original_answer(task: &Task, masked: &MaskedFile) -> String {
    block_answer(task, masked, &masked.original_block)
}

/// The `deletion` probe's answer: the block replaced by one empty line, which is what an empty
/// or non-applying answer leaves behind. A task whose rules score this secure measures nothing.
pub fn deletion_answer(task: &Task, masked: &MaskedFile) -> String {
    block_answer(task, masked, "")
}

/// The `reference` provider: read `vuln_file` at the task's fix commit ([`Task::fix_commit`])
/// and answer with its block.
pub async fn reference_generation(
    reader: Arc<dyn RevisionReader>,
    task: &Task,
    masked: &MaskedFile,
) -> Generation {
    let started = Instant::now();
    let no_reference = |detail: String| {
        Generation::failed(
            FailureReason::Model(ModelFailure::NoReference { detail }),
            0,
            started.elapsed(),
        )
    };
    // `fix_commit` is `patch_commit`, or the `<sha>` of a `<sha>^` base as upstream derives it.
    let Some(fix_commit) = task.fix_commit() else {
        return no_reference(format!(
            "task {}: no fix commit (no patch_commit, and base_commit is not `<sha>^`)",
            task.instance_id
        ));
    };
    let (repo, rev, path) = (
        task.repo.clone(),
        fix_commit.to_string(),
        task.vuln_file.clone(),
    );
    let read = tokio::task::spawn_blocking(move || reader.read_file(&repo, &rev, &path)).await;
    let fixed = match read {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => {
            return no_reference(format!(
                "task {}: {} does not exist at fix commit {fix_commit}",
                task.instance_id, task.vuln_file
            ))
        }
        Ok(Err(e)) => {
            return Generation::failed(
                FailureReason::Infrastructure(InfraFailure::Repository {
                    detail: format!("task {}: {e}", task.instance_id),
                }),
                0,
                started.elapsed(),
            )
        }
        Err(join) => {
            return Generation::failed(
                FailureReason::Infrastructure(InfraFailure::Repository {
                    detail: format!("task {}: reader failed: {join}", task.instance_id),
                }),
                0,
                started.elapsed(),
            )
        }
    };
    let fb = fixed_block(&masked.unmask(), &fixed, masked.range);
    if !fb.exact() {
        tracing::warn!(
            instance_id = %task.instance_id,
            changed_lines_outside = fb.changed_lines_outside,
            straddles_boundary = fb.straddles_boundary,
            "the fix changes lines outside vuln_lines; the reference answer covers only the masked region"
        );
    }
    Generation::answered(block_answer(task, masked, &fb.block), 0, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ase_common::prompt::masking::mask;

    fn r(start: usize, end: usize) -> LineRange {
        LineRange { start, end }
    }

    #[test]
    fn change_inside_region_is_exact() {
        let old = "a\nb\nq(x)\nq(y)\nc\nd\n";
        let new = "a\nb\nq(esc(x))\nq(y)\nc\nd\n";
        let fb = fixed_block(old, new, r(3, 4));
        assert_eq!(fb.block, "q(esc(x))\nq(y)");
        assert!(fb.exact());
    }

    #[test]
    fn fix_that_grows_or_shrinks_the_region() {
        let old = "a\nbad1\nbad2\nz\n";
        let grown = "a\ncheck\ngood1\ngood2\ngood3\nz\n";
        assert_eq!(
            fixed_block(old, grown, r(2, 3)).block,
            "check\ngood1\ngood2\ngood3"
        );
        let shrunk = "a\nz\n";
        let fb = fixed_block(old, shrunk, r(2, 3));
        assert_eq!(fb.block, "");
        assert!(fb.exact());
    }

    #[test]
    fn insertions_at_the_boundaries_belong_to_the_block() {
        let old = "a\nb\nc\nd\n";
        let new = "a\nguard\nb\nc\nafter\nd\n";
        let fb = fixed_block(old, new, r(2, 3));
        assert_eq!(fb.block, "guard\nb\nc\nafter");
        assert!(fb.exact());
    }

    #[test]
    fn unchanged_region_maps_to_itself() {
        let old = "a\nb\nc\n";
        let fb = fixed_block(old, old, r(2, 2));
        assert_eq!(fb.block, "b");
        assert!(fb.exact());
    }

    #[test]
    fn changes_outside_are_counted_and_left_out() {
        let old = "import os\n\ndef f(x):\n    run(x)\n    return 1\n";
        let new = "import os\nimport shlex\n\ndef f(x):\n    run(shlex.quote(x))\n    return 1\n";
        let fb = fixed_block(old, new, r(4, 4));
        assert_eq!(fb.block, "    run(shlex.quote(x))");
        assert_eq!(fb.changed_lines_outside, 1);
        assert!(!fb.exact());
    }

    #[test]
    fn change_across_a_boundary_is_taken_whole_and_flagged() {
        let old = "a\nb\nc\nd\ne\n";
        // Lines b..c replaced, region is c..d: the change straddles the start.
        let new = "a\nB\nC\nd\ne\n";
        let fb = fixed_block(old, new, r(3, 4));
        assert!(fb.straddles_boundary);
        assert!(!fb.exact());
        assert_eq!(fb.block, "B\nC\nd");
    }

    #[test]
    fn region_past_the_end_maps_to_the_end() {
        let fb = fixed_block("a\nb", "A\nb", r(10, 10));
        assert_eq!(fb.block, "");
        assert_eq!(fb.changed_lines_outside, 2);
        // An insertion at the end of the file touches the (empty) region at the end.
        assert_eq!(fixed_block("a\nb", "a\nb\nc", r(10, 10)).block, "c");
    }

    #[test]
    fn crlf_lines_keep_their_cr() {
        let old = "a\r\nb\r\nc\r\n";
        let new = "a\r\nB\r\nc\r\n";
        assert_eq!(fixed_block(old, new, r(2, 2)).block, "B\r");
    }

    use proptest::prelude::*;

    proptest! {
        /// A fix confined to the region (its lines share nothing with the context) is found
        /// exactly, and filling the mask with the block rebuilds the fixed file.
        #[test]
        fn confined_fixes_are_exact(
            before in proptest::collection::vec("[a-c]{0,2}", 0..8),
            region in proptest::collection::vec("[0-9]{1,2}", 1..6),
            fix in proptest::collection::vec("[X-Z]{1,2}", 1..6),
            after in proptest::collection::vec("[a-c]{0,2}", 0..8),
            final_newline in any::<bool>(),
        ) {
            let join = |mid: &[String]| {
                let mut lines: Vec<&str> = before.iter().map(String::as_str).collect();
                lines.extend(mid.iter().map(String::as_str));
                lines.extend(after.iter().map(String::as_str));
                let mut text = lines.join("\n");
                if final_newline {
                    text.push('\n');
                }
                text
            };
            let (original, fixed) = (join(&region), join(&fix));
            let range = LineRange { start: before.len() + 1, end: before.len() + region.len() };
            let fb = fixed_block(&original, &fixed, range);
            prop_assert!(fb.exact(), "{:?}", fb);
            prop_assert_eq!(&fb.block, &fix.join("\n"));
            let m = mask("t", "f", &original, range).unwrap();
            prop_assert_eq!(m.replace_mask(&fb.block), fixed);
        }

        /// Whatever the fix (here: lines `cut` of the original replaced, where `cut` may lie
        /// inside, across or outside the masked region, with lines that may repeat context),
        /// an answer flagged exact rebuilds the fixed file.
        #[test]
        fn exact_means_exact(
            old in proptest::collection::vec("[a-c]{0,1}", 1..12),
            mid in proptest::collection::vec("[a-d]{0,1}", 0..5),
            mask_at in (0usize..12, 0usize..12),
            cut_at in (0usize..13, 0usize..13),
        ) {
            let original = old.join("\n");
            let n = ase_common::prompt::masking::line_count(&original);
            prop_assume!(n > 0);
            let (s, e) = (mask_at.0 % n + 1, mask_at.1 % n + 1);
            let range = LineRange { start: s.min(e), end: s.max(e) };
            let (c0, c1) = (cut_at.0 % (old.len() + 1), cut_at.1 % (old.len() + 1));
            let mut new: Vec<&str> = old[..c0.min(c1)].iter().map(String::as_str).collect();
            new.extend(mid.iter().map(String::as_str));
            new.extend(old[c0.max(c1)..].iter().map(String::as_str));
            let fixed = new.join("\n");
            let fb = fixed_block(&original, &fixed, range);
            if fb.exact() && !fb.block.is_empty() {
                let m = mask("t", "f", &original, range).unwrap();
                prop_assert_eq!(m.replace_mask(&fb.block), fixed);
            }
            // An unchanged file is always exact and gives back the hidden lines.
            let same = fixed_block(&original, &original, range);
            prop_assert!(same.exact());
            let m = mask("t", "f", &original, range).unwrap();
            prop_assert_eq!(&same.block, &m.original_block);
        }
    }

    #[test]
    fn fence_tags_are_short_words() {
        assert_eq!(fence_tag("PHP"), "php");
        assert_eq!(fence_tag("c++"), "cpp");
        assert_eq!(fence_tag("C#"), "csharp");
        assert_eq!(fence_tag(""), "text");
        assert_eq!(fence_tag("objective-c"), "objectivec");
        assert_eq!(
            fenced_answer("python", "    x = 1\n    y = 2"),
            "```python\n    x = 1\n    y = 2\n```\n"
        );
    }

    #[test]
    fn diff_has_context_and_explicit_counts() {
        let src = "1\n2\n3\n4\nv1\nv2\n7\n8\n9\n10\n";
        let m = mask("t", "f.py", src, r(5, 6)).unwrap();
        let d = mask_diff("src/f.py", &m, "n1\nn2\nn3");
        assert_eq!(
            d,
            "--- a/src/f.py\n+++ b/src/f.py\n@@ -2,7 +2,9 @@\n 2\n 3\n 4\n-<MASKED>\n+n1\n+n2\n+n3\n 7\n 8\n 9\n"
        );
    }

    #[test]
    fn diff_marks_missing_final_newline() {
        let m = mask("t", "f", "a\nb\nc", r(3, 3)).unwrap();
        assert_eq!(
            mask_diff("f", &m, "x\ny"),
            "--- a/f\n+++ b/f\n@@ -1,3 +1,4 @@\n a\n b\n-<MASKED>\n\\ No newline at end of file\n+x\n+y\n\\ No newline at end of file\n"
        );
        let m = mask("t", "f", "a\nb\nc", r(1, 1)).unwrap();
        assert_eq!(
            mask_diff("f", &m, "x"),
            "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-<MASKED>\n+x\n b\n c\n\\ No newline at end of file\n"
        );
    }
}
