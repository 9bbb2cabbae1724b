//! The generation prompt: a system and a user message for one task (protocol, Generation step 3).
//!
//! Structure (fixed, in Rust) and wording (in templates) are kept apart:
//! - Rust decides WHAT goes in: the masked file, the README files, which context files fit the
//!   budgets, how each file is framed (`[start of PATH]` ... `[end of PATH]`, v1 numbering each line
//!   `N line`), the v2 snippet and README-drop rules. Reports get the reasons in [`Prompt`].
//! - A minijinja template decides HOW it is said. One template per dataset version, each with two
//!   blocks, `system` and `user`; the defaults are `common/templates/*.jinja`, embedded in the
//!   binary, and a user may supply their own file ([`Templates::with_source`]). Leading and
//!   trailing newlines of each rendered block are removed; undefined variables are errors; nothing
//!   is HTML-escaped.
//!
//! Variables available to templates:
//! - `function_summary`: the context's one-sentence summary (empty without a context);
//! - `code`: the framed masked file (or the v2 snippet of it);
//! - `readmes`: the framed README files joined by `\n` (empty when none or dropped);
//! - `context`: the framed context files joined by `\n`, in display order;
//! - `readme_files`, `context_files`: the same as lists of `{path, text}` (`text` framed);
//! - `instance_id`, `repo`, `language`, `vuln_file`, `vuln_type`, `cwe_id`: from the task;
//! - `version`: `"v1"` or `"v2"`; `mask_token`: `<MASKED>`.
//!
//! Budget logic, as upstream (`make_codegen_prompt`): render the prompt with no context files and
//! measure `system + "\n" + user` (tokens, and characters as Python's `len`). Then walk the hits in
//! order; for each, frame the file alone and measure it; stop at the first that would bring the
//! total over `max_context_tokens` or `max_prompt_chars` (later, smaller files are not tried);
//! otherwise add its measure. v2 only: when the framed masked file alone exceeds
//! `snippet_threshold_tokens`, only `snippet_radius_lines` lines either side of the mask line are
//! shown; when the measured base prompt exceeds `readme_drop_tokens`, the READMEs are left out
//! (the running measure keeps their tokens, as upstream's does, so the context budget is the same
//! as upstream's).
//!
//! Where we differ from upstream, on purpose:
//! - READMEs come from the project root, not the harness's working directory (a protocol defect).
//! - A hit on the masked file is never shown (upstream v1 compares absolute hit paths with the
//!   relative `vuln_file`, so it shows the file a second time). It still uses up budget, as in
//!   both upstream versions, which read it from disk, masked, and measure it before filtering it
//!   out; so the other files chosen are upstream's.
//! - Files are framed with their path relative to the project root (upstream v1 frames context
//!   files with `{cycle_dir}/{docid}`, a path on its own disk).
//! - Binary files (a NUL byte) and files over `max_file_bytes` are skipped, with the reason.
//! - The v2 snippet has `snippet_radius_lines` lines on both sides of the mask line; upstream's
//!   half-open slice keeps one line fewer after it, and frames it with an extra blank line.
//! - Tokens are counted with `cl100k_base`, not GPT-1's BPE (see [`crate::prompt::tokens`]).
//!
//! Only `vuln_file` is masked, as upstream: a v2 task's `other_vuln_files` stay as they are and
//! may be shown as context like any other file.
//!
//! Display order: v1 shows context files sorted by path (upstream keeps them in a dict that it
//! sorts when framing); v2 keeps hit order, duplicates included (a v2 hit may name the same file
//! with another line range). v1 drops repeated hits of one file. READMEs are sorted by name.

use crate::dataset::{DatasetVersion, Task, TaskContext};
use masking::{MaskedFile, MASK_TOKEN};
use repo_files::RepoFileError;
use serde::Serialize;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokens::{count_chars, count_tokens};

pub mod agent;
pub mod masking;
pub mod repo_files;
pub mod tokens;

/// The default v1 (patch) template.
pub const DEFAULT_V1_TEMPLATE: &str = include_str!("../../templates/v1_patch.jinja");
/// The default v2 (code) template.
pub const DEFAULT_V2_TEMPLATE: &str = include_str!("../../templates/v2_code.jinja");

/// Budgets and thresholds. Defaults are the protocol's; tests use small values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptOptions {
    /// Upstream's `max_context_token`.
    pub max_context_tokens: usize,
    /// Upstream's `MAX_LENGTH`, in characters (code points).
    pub max_prompt_chars: usize,
    /// v2: above this many tokens, the framed masked file is cut to a snippet.
    pub snippet_threshold_tokens: usize,
    /// v2: lines kept on each side of the mask line in a snippet.
    pub snippet_radius_lines: usize,
    /// v2: above this many tokens, the base prompt loses its READMEs.
    pub readme_drop_tokens: usize,
    /// Files larger than this are not read.
    pub max_file_bytes: u64,
}

impl Default for PromptOptions {
    fn default() -> Self {
        PromptOptions {
            max_context_tokens: 64_000,
            max_prompt_chars: 98_000,
            snippet_threshold_tokens: 60_000,
            snippet_radius_lines: 300,
            readme_drop_tokens: 130_000,
            max_file_bytes: repo_files::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Template sources, one per dataset version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    v1: String,
    v2: String,
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            v1: DEFAULT_V1_TEMPLATE.to_string(),
            v2: DEFAULT_V2_TEMPLATE.to_string(),
        }
    }
}

#[derive(Debug, Error)]
pub enum PromptError {
    #[error("{origin}: template: {message}")]
    Template { origin: String, message: String },
    #[error("task {task}: cannot list README files of {root}: {source}")]
    Readmes {
        task: String,
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn template_name(version: DatasetVersion) -> &'static str {
    match version {
        DatasetVersion::V1 => "v1",
        DatasetVersion::V2 => "v2",
    }
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

impl Templates {
    /// Replace the template of `version` with `source`. The source must compile and define the
    /// blocks `system` and `user`; `origin` (e.g. the file name) names it in errors.
    pub fn with_source(
        mut self,
        version: DatasetVersion,
        source: String,
        origin: &str,
    ) -> Result<Self, PromptError> {
        let mut env = environment();
        let err = |message: String| PromptError::Template {
            origin: origin.to_string(),
            message,
        };
        env.add_template_owned("t", source.clone())
            .map_err(|e| err(format!("{e:#}")))?;
        // Block names are only known after parsing; a missing one would otherwise surface at the
        // first task, far from the file that caused it.
        for block in ["system", "user"] {
            let pattern = regex::Regex::new(&format!(r"\{{%-?\s*block\s+{block}\s*-?%\}}"))
                .expect("static block pattern");
            if !pattern.is_match(&source) {
                return Err(err(format!("no `{{% block {block} %}}` in the template")));
            }
        }
        match version {
            DatasetVersion::V1 => self.v1 = source,
            DatasetVersion::V2 => self.v2 = source,
        }
        Ok(self)
    }

    /// The template source used for `version`.
    pub fn source(&self, version: DatasetVersion) -> &str {
        match version {
            DatasetVersion::V1 => &self.v1,
            DatasetVersion::V2 => &self.v2,
        }
    }

    fn render(
        &self,
        task: &Task,
        vars: &TemplateVars<'_>,
    ) -> Result<(String, String), PromptError> {
        let version = task.version();
        let origin = format!(
            "task {}: {} template",
            task.instance_id,
            template_name(version)
        );
        let err = |e: minijinja::Error| PromptError::Template {
            origin: origin.clone(),
            message: format!("{e:#}"),
        };
        let mut env = environment();
        env.add_template(template_name(version), self.source(version))
            .map_err(err)?;
        let template = env.get_template(template_name(version)).map_err(err)?;
        let mut captured = template.render_captured(vars).map_err(err)?;
        let system = captured
            .with_state_mut(|s| s.render_block("system"))
            .map_err(err)?;
        let user = captured
            .with_state_mut(|s| s.render_block("user"))
            .map_err(err)?;
        Ok((
            system.trim_matches('\n').to_string(),
            user.trim_matches('\n').to_string(),
        ))
    }
}

/// One framed file, as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FramedFile {
    pub path: String,
    /// `[start of PATH]\n...\n[end of PATH]`.
    pub text: String,
}

#[derive(Serialize)]
struct TemplateVars<'a> {
    function_summary: &'a str,
    code: &'a str,
    readmes: String,
    context: String,
    readme_files: &'a [FramedFile],
    context_files: &'a [FramedFile],
    instance_id: &'a str,
    repo: &'a str,
    language: &'a str,
    vuln_file: &'a str,
    vuln_type: &'a str,
    cwe_id: &'a str,
    version: &'static str,
    mask_token: &'static str,
}

/// Why a file was left out of the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// The hit is the masked file, already shown in `<code>` (its measure was counted).
    MaskedFile,
    /// v1: the file was already a hit.
    Duplicate,
    /// It could not be read (missing, outside the root, a link, binary, too large, ...).
    Unreadable { error: String },
    /// Adding it would exceed `max_context_tokens`.
    OverTokenBudget {
        tokens: usize,
        total: usize,
        limit: usize,
    },
    /// Adding it would exceed `max_prompt_chars`.
    OverCharBudget {
        chars: usize,
        total: usize,
        limit: usize,
    },
    /// A previous hit exhausted a budget; upstream stops there.
    AfterBudgetStop,
    /// v2: the base prompt was over `readme_drop_tokens`.
    ReadmeDropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedFile {
    pub path: String,
    #[serde(flatten)]
    pub reason: SkipReason,
}

/// A built prompt and how it was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    /// README files shown, in display order.
    pub readme_files_used: Vec<String>,
    pub readme_files_skipped: Vec<SkippedFile>,
    /// Context files shown, in display order.
    pub context_files_used: Vec<String>,
    pub context_files_skipped: Vec<SkippedFile>,
    /// Measure of the prompt without context files (the budget's starting point).
    pub base_tokens: usize,
    pub base_chars: usize,
    /// Measure of the final `system + "\n" + user`.
    pub tokens: usize,
    pub chars: usize,
    pub readme_dropped: bool,
    pub snippet_only: bool,
}

/// `[start of PATH]`, the content (each line prefixed `N ` when `numbered`), `[end of PATH]`.
/// Lines are split on `\n`, so a final newline yields a last, empty, numbered line, as upstream.
pub fn frame_file(path: &str, content: &str, numbered: bool) -> String {
    let mut out = String::with_capacity(content.len() + 2 * path.len() + 32);
    out.push_str("[start of ");
    out.push_str(path);
    out.push_str("]\n");
    if numbered {
        for (i, line) in content.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&(i + 1).to_string());
            out.push(' ');
            out.push_str(line);
        }
    } else {
        out.push_str(content);
    }
    out.push_str("\n[end of ");
    out.push_str(path);
    out.push(']');
    out
}

/// The v2 snippet: `radius` lines either side of the mask line, joined with `\n`.
fn snippet(masked: &MaskedFile, radius: usize) -> String {
    let lines: Vec<&str> = masked.text.split('\n').collect();
    let at = masked.mask_line_index.min(lines.len().saturating_sub(1));
    let start = at.saturating_sub(radius);
    let end = (at + radius + 1).min(lines.len());
    lines[start..end].join("\n")
}

fn join_texts(files: &[FramedFile]) -> String {
    files
        .iter()
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn measure(system: &str, user: &str) -> (usize, usize) {
    let whole = format!("{system}\n{user}");
    (count_tokens(&whole), count_chars(&whole))
}

fn unreadable(path: &str, e: RepoFileError) -> SkippedFile {
    SkippedFile {
        path: path.to_string(),
        reason: SkipReason::Unreadable {
            error: e.to_string(),
        },
    }
}

/// Build the prompt of `task` whose `vuln_file` (under `root`, the project root) is `masked`.
/// `context` gives the summary and the hits; without it the prompt has neither.
pub fn build_prompt(
    task: &Task,
    masked: &MaskedFile,
    context: Option<&TaskContext>,
    root: &Path,
    opts: &PromptOptions,
    templates: &Templates,
) -> Result<Prompt, PromptError> {
    let version = task.version();
    let is_v2 = version == DatasetVersion::V2;
    let numbered = !is_v2;

    let mut code = frame_file(&task.vuln_file, &masked.text, numbered);
    let mut snippet_only = false;
    if is_v2 && count_tokens(&code) > opts.snippet_threshold_tokens {
        code = frame_file(
            &task.vuln_file,
            &snippet(masked, opts.snippet_radius_lines),
            false,
        );
        snippet_only = true;
    }

    let mut readmes = Vec::new();
    let mut readme_files_skipped = Vec::new();
    let names = repo_files::readme_files(root).map_err(|source| PromptError::Readmes {
        task: task.instance_id.clone(),
        root: root.to_path_buf(),
        source,
    })?;
    for name in names {
        match repo_files::read_repo_file(root, &name, opts.max_file_bytes) {
            Ok(t) => readmes.push(FramedFile {
                text: frame_file(&t.path, &t.text, numbered),
                path: t.path,
            }),
            Err(e) => readme_files_skipped.push(unreadable(&name, e)),
        }
    }

    let function_summary = context.map(|c| c.function_summary.as_str()).unwrap_or("");
    let render = |readmes: &[FramedFile], context_files: &[FramedFile]| {
        let vars = TemplateVars {
            function_summary,
            code: &code,
            readmes: join_texts(readmes),
            context: join_texts(context_files),
            readme_files: readmes,
            context_files,
            instance_id: &task.instance_id,
            repo: &task.repo,
            language: &task.language,
            vuln_file: &task.vuln_file,
            vuln_type: &task.vuln_type,
            cwe_id: &task.cwe_id,
            version: template_name(version),
            mask_token: MASK_TOKEN,
        };
        templates.render(task, &vars)
    };

    let (base_system, base_user) = render(&readmes, &[])?;
    let (base_tokens, base_chars) = measure(&base_system, &base_user);
    let (mut tokens, mut chars) = (base_tokens, base_chars);

    let readme_dropped = is_v2 && base_tokens > opts.readme_drop_tokens;
    if readme_dropped {
        for r in readmes.drain(..) {
            readme_files_skipped.push(SkippedFile {
                path: r.path,
                reason: SkipReason::ReadmeDropped,
            });
        }
    }

    let masked_path = repo_files::normalize_repo_path(&task.vuln_file).ok();
    let mut used: Vec<FramedFile> = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stopped = false;
    for hit in context.map(|c| c.hits.as_slice()).unwrap_or_default() {
        let path = match repo_files::normalize_repo_path(&hit.docid) {
            Ok(p) => p,
            Err(e) => {
                skipped.push(unreadable(&hit.docid, e));
                continue;
            }
        };
        if !is_v2 && !seen.insert(path.clone()) {
            skipped.push(SkippedFile {
                path,
                reason: SkipReason::Duplicate,
            });
            continue;
        }
        if stopped {
            skipped.push(SkippedFile {
                path,
                reason: SkipReason::AfterBudgetStop,
            });
            continue;
        }
        let is_masked = masked_path.as_deref() == Some(path.as_str());
        let content = if is_masked {
            // Upstream reads the hit from disk after masking it there: the masked text.
            masked.text.clone()
        } else {
            match repo_files::read_repo_file(root, &path, opts.max_file_bytes) {
                Ok(t) => t.text,
                Err(e) => {
                    skipped.push(unreadable(&path, e));
                    continue;
                }
            }
        };
        let content = match (hit.startline, hit.endline) {
            (Some(s), Some(e)) => repo_files::slice_lines(&content, s, e),
            _ => content,
        };
        let text = frame_file(&path, &content, numbered);
        let (t, c) = (count_tokens(&text), count_chars(&text));
        if tokens + t > opts.max_context_tokens {
            skipped.push(SkippedFile {
                path,
                reason: SkipReason::OverTokenBudget {
                    tokens: t,
                    total: tokens,
                    limit: opts.max_context_tokens,
                },
            });
            stopped = true;
            continue;
        }
        if chars + c > opts.max_prompt_chars {
            skipped.push(SkippedFile {
                path,
                reason: SkipReason::OverCharBudget {
                    chars: c,
                    total: chars,
                    limit: opts.max_prompt_chars,
                },
            });
            stopped = true;
            continue;
        }
        tokens += t;
        chars += c;
        if is_masked {
            skipped.push(SkippedFile {
                path,
                reason: SkipReason::MaskedFile,
            });
        } else {
            used.push(FramedFile { path, text });
        }
    }
    if !is_v2 {
        used.sort_by(|a, b| a.path.cmp(&b.path));
    }

    let (system, user) = render(&readmes, &used)?;
    let (tokens, chars) = measure(&system, &user);
    Ok(Prompt {
        system,
        user,
        readme_files_used: readmes.into_iter().map(|r| r.path).collect(),
        readme_files_skipped,
        context_files_used: used.into_iter().map(|f| f.path).collect(),
        context_files_skipped: skipped,
        base_tokens,
        base_chars,
        tokens,
        chars,
        readme_dropped,
        snippet_only,
    })
}

#[cfg(test)]
mod tests;
