use super::*;
use crate::dataset::{ContextHit, DynamicSpec, LineRange, StaticSpec, TaskSpec};
use crate::prompt::masking::mask;
use serde_json::Map;
use std::fs;

const APP: &str = "def f(x):\n    y = x + 1\n    return y\n";

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn task(version: DatasetVersion) -> Task {
    let spec = match version {
        DatasetVersion::V1 => TaskSpec::V1(StaticSpec {
            seed: true,
            detected_tool: "tool".into(),
            detected_vul_num: 1,
            patch_commit: None,
        }),
        DatasetVersion::V2 => TaskSpec::V2(DynamicSpec {
            patch_commit: Some("abc".into()),
            severity: "high".into(),
            image: "img".into(),
            image_inner_path: "/src".into(),
            image_run_cmd: String::new(),
            image_status_check_cmd: "true".into(),
            test_case_cmd: "true".into(),
            poc_cmd: "true".into(),
            privileged: false,
            other_vuln_files: vec![],
            branch_origin: None,
            timeouts: Default::default(),
        }),
    };
    Task {
        instance_id: "t1".into(),
        repo: "org/demo".into(),
        base_commit: "HEAD".into(),
        vuln_file: "src/app.py".into(),
        vuln_lines: LineRange { start: 2, end: 2 },
        language: "python".into(),
        vuln_source: "CVE-0000-0001".into(),
        vuln_type: "SQLI".into(),
        cwe_id: "CWE-89".into(),
        spec,
        extra: Map::new(),
    }
}

fn hit(docid: &str) -> ContextHit {
    ContextHit {
        docid: docid.into(),
        score: Some(1.0),
        startline: None,
        endline: None,
    }
}

fn ctx(hits: Vec<ContextHit>) -> TaskContext {
    TaskContext {
        instance_id: "t1".into(),
        hits,
        function_summary: "Adds one to x.".into(),
    }
}

/// A tiny project: a README, the file to mask, and two helpers.
fn fixture() -> (tempfile::TempDir, MaskedFile) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "README.md", "# Demo\n");
    write(dir.path(), "src/app.py", APP);
    write(dir.path(), "src/util.py", "def g():\n    return 1\n");
    write(dir.path(), "src/more.py", "a = 1\nb = 2\nc = 3\n");
    let masked = mask("t1", "src/app.py", APP, LineRange { start: 2, end: 2 }).unwrap();
    (dir, masked)
}

fn build(
    version: DatasetVersion,
    root: &Path,
    masked: &MaskedFile,
    hits: Vec<ContextHit>,
    opts: &PromptOptions,
) -> Prompt {
    build_prompt(
        &task(version),
        masked,
        Some(&ctx(hits)),
        root,
        opts,
        &Templates::default(),
    )
    .unwrap()
}

const SYSTEM: &str = "You will receive part of a code base in a <base> section and one source file in a <code> section. A region of that file has been hidden and replaced by a single line reading <MASKED>. Your job is to write the code that belongs in place of <MASKED>, using the code base to understand the project. You may add new helper functions when the completion needs them.";

#[test]
fn v1_default_template_exact() {
    let (dir, masked) = fixture();
    let p = build(
        DatasetVersion::V1,
        dir.path(),
        &masked,
        vec![hit("src/util.py"), hit("src/app.py")],
        &PromptOptions::default(),
    );
    let expected = [
        "What the hidden code does: Adds one to x.",
        "",
        "<code>",
        "[start of src/app.py]",
        "1 def f(x):",
        "2     <MASKED>",
        "3     return y",
        "4 ",
        "[end of src/app.py]",
        "</code>",
        "",
        "<base>",
        "[start of README.md]",
        "1 # Demo",
        "2 ",
        "[end of README.md]",
        "[start of src/util.py]",
        "1 def g():",
        "2     return 1",
        "3 ",
        "[end of src/util.py]",
        "</base>",
        "",
        "Below is an example patch in unified diff format. Each file section starts with its old and new names, each hunk header gives the line ranges it touches, and lines starting with \"-\" or \"+\" are removed or added. One patch may change several files.",
        "<patch>",
        "--- a/src/stack.py",
        "+++ b/src/stack.py",
        "@@ -4,7 +4,9 @@ class Stack:",
        "         self.items = []",
        " ",
        "     def pop(self):",
        "-        return self.items.pop()",
        "+        if not self.items:",
        "+            raise IndexError(\"pop from an empty stack\")",
        "+        return self.items.pop()",
        " ",
        "     def peek(self):",
        "-        return self.items[-1]",
        "+        return self.items[-1] if self.items else None",
        "</patch>",
        "",
        "Complete the code by answering with one single patch file, in the format shown above, that can be applied to this repository directly with git apply.",
        "Respond below:",
    ]
    .join("\n");
    assert_eq!(p.user, expected);
    assert_eq!(p.system, SYSTEM);
    assert_eq!(p.context_files_used, vec!["src/util.py"]);
    assert_eq!(p.readme_files_used, vec!["README.md"]);
    let whole = format!("{}\n{}", p.system, p.user);
    assert_eq!(p.tokens, count_tokens(&whole));
    assert_eq!(p.chars, count_chars(&whole));
    assert!(!p.readme_dropped && !p.snippet_only);
}

#[test]
fn v2_default_template_exact_with_line_slice_and_hit_order() {
    let (dir, masked) = fixture();
    let mut sliced = hit("src/more.py");
    sliced.startline = Some(2);
    sliced.endline = Some(3);
    let p = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![hit("src/util.py"), sliced],
        &PromptOptions::default(),
    );
    let expected = [
        "What the hidden code does: Adds one to x.",
        "",
        "<code>",
        "[start of src/app.py]",
        "def f(x):",
        "    <MASKED>",
        "    return y",
        "",
        "[end of src/app.py]",
        "</code>",
        "",
        "<base>",
        "[start of README.md]",
        "# Demo",
        "",
        "[end of README.md]",
        "[start of src/util.py]",
        "def g():",
        "    return 1",
        "",
        "[end of src/util.py]",
        "[start of src/more.py]",
        "b = 2",
        "c = 3",
        "[end of src/more.py]",
        "</base>",
        "",
        "The hidden region may cover more than one function: write every part the description above asks for.",
        "",
        "Answer with ONLY the code that replaces the <MASKED> line, inside a markdown code fence, without explanations.",
        "Respond below:",
    ]
    .join("\n");
    assert_eq!(p.user, expected);
    assert_eq!(p.system, SYSTEM);
    // v2 keeps hit order (more.py would sort after util.py anyway, so also check the reverse).
    let p = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![hit("src/util.py"), hit("src/more.py")],
        &PromptOptions::default(),
    );
    assert_eq!(p.context_files_used, vec!["src/util.py", "src/more.py"]);
    let p1 = build(
        DatasetVersion::V1,
        dir.path(),
        &masked,
        vec![hit("src/util.py"), hit("src/more.py")],
        &PromptOptions::default(),
    );
    assert_eq!(p1.context_files_used, vec!["src/more.py", "src/util.py"]);
}

#[test]
fn without_context_no_summary_and_no_files() {
    let (dir, masked) = fixture();
    let p = build_prompt(
        &task(DatasetVersion::V2),
        &masked,
        None,
        dir.path(),
        &PromptOptions::default(),
        &Templates::default(),
    )
    .unwrap();
    assert!(
        p.user.starts_with("<code>\n[start of src/app.py]"),
        "{}",
        p.user
    );
    assert!(p.context_files_used.is_empty());
    assert_eq!(p.tokens, p.base_tokens);
}

fn framed_tokens(path: &str, content: &str, numbered: bool) -> usize {
    count_tokens(&frame_file(path, content, numbered))
}

#[test]
fn masked_file_hit_is_not_shown_but_uses_budget() {
    let (dir, masked) = fixture();
    let base = build(
        DatasetVersion::V1,
        dir.path(),
        &masked,
        vec![],
        &PromptOptions::default(),
    );
    let hits = || vec![hit("./src/app.py"), hit("src/util.py")];
    let p = build(
        DatasetVersion::V1,
        dir.path(),
        &masked,
        hits(),
        &PromptOptions::default(),
    );
    assert_eq!(p.context_files_used, vec!["src/util.py"]);
    assert_eq!(p.context_files_skipped[0].path, "src/app.py");
    assert_eq!(p.context_files_skipped[0].reason, SkipReason::MaskedFile);
    assert_eq!(p.user.matches("[start of src/app.py]").count(), 1);

    // Exactly enough room for the masked hit and util.py: util.py is in; one token less: out.
    let need = base.base_tokens
        + framed_tokens("src/app.py", &masked.text, true)
        + framed_tokens("src/util.py", "def g():\n    return 1\n", true);
    let opts = PromptOptions {
        max_context_tokens: need,
        ..PromptOptions::default()
    };
    let p = build(DatasetVersion::V1, dir.path(), &masked, hits(), &opts);
    assert_eq!(p.context_files_used, vec!["src/util.py"]);
    let opts = PromptOptions {
        max_context_tokens: need - 1,
        ..PromptOptions::default()
    };
    let p = build(DatasetVersion::V1, dir.path(), &masked, hits(), &opts);
    assert!(p.context_files_used.is_empty());
    assert!(matches!(
        p.context_files_skipped[1].reason,
        SkipReason::OverTokenBudget { .. }
    ));
}

#[test]
fn token_budget_stops_at_first_file_that_does_not_fit() {
    let (dir, masked) = fixture();
    write(dir.path(), "src/big.py", &"x = 1\n".repeat(50));
    write(dir.path(), "src/tiny.py", "t\n");
    let base = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![],
        &PromptOptions::default(),
    );
    let util = framed_tokens("src/util.py", "def g():\n    return 1\n", false);
    let opts = PromptOptions {
        max_context_tokens: base.base_tokens + util + 10,
        ..PromptOptions::default()
    };
    let p = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![hit("src/util.py"), hit("src/big.py"), hit("src/tiny.py")],
        &opts,
    );
    assert_eq!(p.context_files_used, vec!["src/util.py"]);
    assert!(matches!(
        p.context_files_skipped[0],
        SkippedFile { ref path, reason: SkipReason::OverTokenBudget { .. } } if path == "src/big.py"
    ));
    // tiny.py would fit, but upstream stops at the first miss.
    assert_eq!(
        p.context_files_skipped[1].reason,
        SkipReason::AfterBudgetStop
    );
    assert!(!p.user.contains("src/tiny.py"));
}

#[test]
fn char_budget_is_inclusive_and_counts_code_points() {
    let (dir, masked) = fixture();
    write(dir.path(), "src/uni.py", "s = 'ééé'\n");
    let base = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![],
        &PromptOptions::default(),
    );
    let framed = frame_file("src/uni.py", "s = 'ééé'\n", false);
    let chars = count_chars(&framed);
    assert!(framed.len() > chars);
    let with_limit = |limit| {
        let opts = PromptOptions {
            max_prompt_chars: limit,
            ..PromptOptions::default()
        };
        build(
            DatasetVersion::V2,
            dir.path(),
            &masked,
            vec![hit("src/uni.py")],
            &opts,
        )
    };
    assert_eq!(
        with_limit(base.base_chars + chars).context_files_used,
        vec!["src/uni.py"]
    );
    let p = with_limit(base.base_chars + chars - 1);
    assert!(p.context_files_used.is_empty());
    assert!(matches!(
        p.context_files_skipped[0].reason,
        SkipReason::OverCharBudget { .. }
    ));
}

#[test]
fn unreadable_hits_are_skipped_without_stopping() {
    let (dir, masked) = fixture();
    fs::write(dir.path().join("src/blob.bin"), b"ab\0cd").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("src/link.py")).unwrap();
    let p = build(
        DatasetVersion::V1,
        dir.path(),
        &masked,
        vec![
            hit("../outside.py"),
            hit("/etc/passwd"),
            hit("src/missing.py"),
            hit("src/blob.bin"),
            hit("src/link.py"),
            hit("src/util.py"),
            hit("src/util.py"),
        ],
        &PromptOptions::default(),
    );
    assert_eq!(p.context_files_used, vec!["src/util.py"]);
    let reasons: Vec<String> = p
        .context_files_skipped
        .iter()
        .map(|s| match &s.reason {
            SkipReason::Unreadable { error } => error.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("`..`"), "{reasons:?}");
    assert!(reasons[1].contains("absolute"), "{reasons:?}");
    assert!(reasons[2].contains("not found"), "{reasons:?}");
    assert!(reasons[3].contains("binary"), "{reasons:?}");
    #[cfg(unix)]
    assert!(reasons[4].contains("symbolic link"), "{reasons:?}");
    assert_eq!(reasons.last().unwrap(), "Duplicate");
    assert!(!p.user.contains("blob.bin"));
}

#[test]
fn readmes_come_from_the_project_root() {
    let (dir, masked) = fixture();
    write(dir.path(), "readme.txt", "second\n");
    write(dir.path(), "sub/README.md", "nested\n");
    let p = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![],
        &PromptOptions::default(),
    );
    assert_eq!(p.readme_files_used, vec!["README.md", "readme.txt"]);
    assert!(p.user.contains(
        "[start of README.md]\n# Demo\n\n[end of README.md]\n[start of readme.txt]\nsecond\n"
    ));
    assert!(!p.user.contains("nested"));

    let bare = tempfile::tempdir().unwrap();
    write(bare.path(), "src/app.py", APP);
    let p = build(
        DatasetVersion::V2,
        bare.path(),
        &masked,
        vec![],
        &PromptOptions::default(),
    );
    assert!(p.readme_files_used.is_empty());
    assert!(p.user.contains("<base>\n\n\n</base>"), "{}", p.user);
}

#[test]
fn v2_drops_readmes_over_threshold_keeping_the_measure() {
    let (dir, masked) = fixture();
    let base = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![],
        &PromptOptions::default(),
    );
    let util = framed_tokens("src/util.py", "def g():\n    return 1\n", false);
    let opts = PromptOptions {
        readme_drop_tokens: base.base_tokens - 1,
        max_context_tokens: base.base_tokens + util,
        ..PromptOptions::default()
    };
    let p = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![hit("src/util.py")],
        &opts,
    );
    assert!(p.readme_dropped);
    assert!(!p.user.contains("# Demo"));
    assert_eq!(p.readme_files_skipped[0].reason, SkipReason::ReadmeDropped);
    // The budget still counts the README's tokens, as upstream's does.
    assert_eq!(p.context_files_used, vec!["src/util.py"]);
    let tighter = PromptOptions {
        max_context_tokens: base.base_tokens + util - 1,
        ..opts.clone()
    };
    let p = build(
        DatasetVersion::V2,
        dir.path(),
        &masked,
        vec![hit("src/util.py")],
        &tighter,
    );
    assert!(p.context_files_used.is_empty());

    // At the threshold (not over it) the READMEs stay; v1 never drops them.
    let at = PromptOptions {
        readme_drop_tokens: base.base_tokens,
        ..PromptOptions::default()
    };
    assert!(!build(DatasetVersion::V2, dir.path(), &masked, vec![], &at).readme_dropped);
    let p = build(DatasetVersion::V1, dir.path(), &masked, vec![], &opts);
    assert!(!p.readme_dropped && p.user.contains("# Demo"));
}

#[test]
fn v2_snippet_for_a_huge_masked_file() {
    let dir = tempfile::tempdir().unwrap();
    let content: String = (1..=40).map(|i| format!("line{i}\n")).collect();
    write(dir.path(), "src/app.py", &content);
    let masked = mask(
        "t1",
        "src/app.py",
        &content,
        LineRange { start: 20, end: 22 },
    )
    .unwrap();
    let opts = PromptOptions {
        snippet_threshold_tokens: 10,
        snippet_radius_lines: 3,
        ..PromptOptions::default()
    };
    let p = build(DatasetVersion::V2, dir.path(), &masked, vec![], &opts);
    assert!(p.snippet_only);
    assert!(p.user.contains(
        "<code>\n[start of src/app.py]\nline17\nline18\nline19\n<MASKED>\nline23\nline24\nline25\n[end of src/app.py]\n</code>"
    ), "{}", p.user);

    // Near the start of the file the window is clamped.
    let masked = mask("t1", "src/app.py", &content, LineRange { start: 1, end: 1 }).unwrap();
    let p = build(DatasetVersion::V2, dir.path(), &masked, vec![], &opts);
    assert!(p
        .user
        .contains("[start of src/app.py]\n<MASKED>\nline2\nline3\nline4\n[end of"));

    // Under the threshold, or in v1, the whole file is shown.
    let roomy = PromptOptions {
        snippet_threshold_tokens: 100_000,
        ..opts.clone()
    };
    assert!(!build(DatasetVersion::V2, dir.path(), &masked, vec![], &roomy).snippet_only);
    let p = build(DatasetVersion::V1, dir.path(), &masked, vec![], &opts);
    assert!(!p.snippet_only && p.user.contains("40 line40\n41 \n[end of src/app.py]"));
}

#[test]
fn user_template_changes_the_output() {
    let (dir, masked) = fixture();
    let source = "{% block system %}Fill {{ mask_token }} in {{ language }}.{% endblock %}\n\
                  {% block user %}\n{{ instance_id }}: {{ context_files | length }} file(s)\n\
                  {% for f in context_files %}{{ f.path }};{% endfor %}\n{% endblock %}";
    let templates = Templates::default()
        .with_source(DatasetVersion::V2, source.to_string(), "mine.jinja")
        .unwrap();
    let p = build_prompt(
        &task(DatasetVersion::V2),
        &masked,
        Some(&ctx(vec![hit("src/util.py"), hit("src/more.py")])),
        dir.path(),
        &PromptOptions::default(),
        &templates,
    )
    .unwrap();
    assert_eq!(p.system, "Fill <MASKED> in python.");
    assert_eq!(p.user, "t1: 2 file(s)\nsrc/util.py;src/more.py;");
    // The v1 template is untouched.
    assert_eq!(templates.source(DatasetVersion::V1), DEFAULT_V1_TEMPLATE);
}

#[test]
fn bad_templates_are_reported() {
    let err = Templates::default()
        .with_source(
            DatasetVersion::V1,
            "{% block user %}x{% endblock %}".into(),
            "only_user.jinja",
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("only_user.jinja") && err.to_string().contains("system"),
        "{err}"
    );
    let err = Templates::default()
        .with_source(
            DatasetVersion::V1,
            "{% block system %}{% if %}{% endblock %}".into(),
            "broken.jinja",
        )
        .unwrap_err();
    assert!(err.to_string().contains("broken.jinja"), "{err}");

    // Undefined variables fail at render time, naming the task.
    let (dir, masked) = fixture();
    let templates = Templates::default()
        .with_source(
            DatasetVersion::V1,
            "{% block system %}{{ no_such_var }}{% endblock %}{% block user %}u{% endblock %}"
                .into(),
            "typo.jinja",
        )
        .unwrap();
    let err = build_prompt(
        &task(DatasetVersion::V1),
        &masked,
        None,
        dir.path(),
        &PromptOptions::default(),
        &templates,
    )
    .unwrap_err();
    assert!(err.to_string().contains("task t1"), "{err}");
}

#[test]
fn frame_file_numbering() {
    assert_eq!(
        frame_file("a", "x\ny", true),
        "[start of a]\n1 x\n2 y\n[end of a]"
    );
    assert_eq!(
        frame_file("a", "x\n", true),
        "[start of a]\n1 x\n2 \n[end of a]"
    );
    assert_eq!(frame_file("a", "", true), "[start of a]\n1 \n[end of a]");
    assert_eq!(
        frame_file("a", "x\n", false),
        "[start of a]\nx\n\n[end of a]"
    );
    assert_eq!(frame_file("a", "", false), "[start of a]\n\n[end of a]");
}

#[test]
fn values_are_inserted_verbatim() {
    let (dir, masked) = fixture();
    let mut context = ctx(vec![]);
    context.function_summary = "Returns <b>a & b</b> {{ not_a_tag }}.".into();
    let p = build_prompt(
        &task(DatasetVersion::V1),
        &masked,
        Some(&context),
        dir.path(),
        &PromptOptions::default(),
        &Templates::default(),
    )
    .unwrap();
    assert!(p
        .user
        .starts_with("What the hidden code does: Returns <b>a & b</b> {{ not_a_tag }}.\n\n<code>"));
}
