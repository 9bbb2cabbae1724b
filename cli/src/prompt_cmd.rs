//! `ase prompt`: print the system and user messages of one task against a checked-out repo, so
//! that a prompt (or a user template) can be inspected without calling a model.

use anyhow::{anyhow, bail, Context};
use ase_common::dataset::{load_contexts, load_tasks};
use ase_common::prompt::masking::mask;
use ase_common::prompt::repo_files::{project_root, read_repo_file};
use ase_common::prompt::tokens::TOKENIZER_NAME;
use ase_common::prompt::{build_prompt, Prompt, PromptOptions, Templates};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A template is a few kilobytes; anything far larger is a wrong file.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Task file (v1 or v2).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Context file (hits and function summaries). Without it the prompt has neither.
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// The task's instance_id.
    #[arg(long)]
    pub task: String,
    /// The task's repository, checked out at its base_commit.
    #[arg(long)]
    pub repo: PathBuf,
    /// A minijinja template (blocks `system` and `user`) replacing the default one of the
    /// task's dataset version.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Token budget of the prompt with its context files.
    #[arg(long, default_value_t = PromptOptions::default().max_context_tokens)]
    pub max_context_tokens: usize,
}

fn read_template(path: &Path) -> anyhow::Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("template {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEMPLATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("template {}", path.display()))?;
    if bytes.len() as u64 > MAX_TEMPLATE_BYTES {
        bail!(
            "template {}: over {} bytes",
            path.display(),
            MAX_TEMPLATE_BYTES
        );
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("template {}: not UTF-8", path.display()))
}

fn stats_line(instance_id: &str, p: &Prompt) -> String {
    let mut line = format!(
        "task {instance_id}: {} tokens ({TOKENIZER_NAME}), {} chars; context files used {}",
        p.tokens,
        p.chars,
        p.context_files_used.len()
    );
    if !p.context_files_used.is_empty() {
        line.push_str(&format!(" ({})", p.context_files_used.join(", ")));
    }
    line.push_str(&format!(", skipped {}", p.context_files_skipped.len()));
    line.push_str(&format!("; readmes {}", p.readme_files_used.len()));
    if p.readme_dropped {
        line.push_str(" (dropped: prompt too long)");
    }
    if p.snippet_only {
        line.push_str("; masked file shown as a snippet");
    }
    line
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dataset = load_tasks(&args.dataset)?;
    let task = dataset
        .get(&args.task)
        .ok_or_else(|| anyhow!("task {} is not in {}", args.task, args.dataset.display()))?;
    let contexts = args.context.as_deref().map(load_contexts).transpose()?;
    let context = match (&contexts, &args.context) {
        (Some(set), Some(path)) => Some(set.for_task(task, &dataset).ok_or_else(|| {
            anyhow!(
                "task {}: no entry in context file {} (a mutated v1 task uses its seed's)",
                task.instance_id,
                path.display()
            )
        })?),
        _ => None,
    };

    let seed_repo = dataset.seed_of(task).map(|s| s.repo.as_str());
    let root = project_root(&args.repo, task, seed_repo);
    let opts = PromptOptions {
        max_context_tokens: args.max_context_tokens,
        ..PromptOptions::default()
    };
    let original = read_repo_file(&root, &task.vuln_file, opts.max_file_bytes)
        .with_context(|| format!("task {}: vuln_file", task.instance_id))?;
    let masked = mask(
        &task.instance_id,
        &task.vuln_file,
        &original.text,
        task.vuln_lines,
    )?;

    let mut templates = Templates::default();
    if let Some(path) = &args.template {
        let source = read_template(path)?;
        templates = templates.with_source(task.version(), source, &path.display().to_string())?;
    }

    let prompt = build_prompt(task, &masked, context, &root, &opts, &templates)?;
    let mut out = std::io::stdout().lock();
    write!(
        out,
        "=== system ===\n{}\n=== user ===\n{}\n",
        prompt.system, prompt.user
    )?;
    out.flush()?;
    eprintln!("{}", stats_line(&task.instance_id, &prompt));
    Ok(ExitCode::SUCCESS)
}
