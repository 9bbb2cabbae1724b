//! `ase validate`: check a task file and, optionally, its context file and `cut_repos.json`;
//! print a summary on stdout and every problem, one per line, on stderr.

use ase_common::dataset::{
    load_contexts, load_cut_repos, load_task_file, ContextSet, CutRepos, Dataset, DatasetError,
    TaskFile, TaskSpec,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// How many ids a summary line lists before eliding the rest.
const MAX_LISTED_IDS: usize = 20;

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("input").required(true).multiple(true).args(["dataset", "context", "cut_repos"])
))]
pub struct Args {
    /// Task file (v1 or v2 JSON array).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Context (retrieval) file: JSON array of {instance_id, hits, function_summary}.
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// v1 `cut_repos.json`: instance_id -> the only files the SAST scan keeps.
    #[arg(long)]
    pub cut_repos: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let record = |e: DatasetError, problems: &mut Vec<String>| match e {
        DatasetError::Invalid { problems: ps } => problems.extend(ps.iter().map(|p| p.to_string())),
        other => problems.push(other.to_string()),
    };

    let task_file = args
        .dataset
        .as_deref()
        .and_then(|p| match load_task_file(p) {
            Ok(f) => Some(f),
            Err(e) => {
                record(e, &mut problems);
                None
            }
        });
    let contexts = args
        .context
        .as_deref()
        .and_then(|p| match load_contexts(p) {
            Ok(c) => Some(c),
            Err(e) => {
                record(e, &mut problems);
                None
            }
        });
    let cut_repos = args
        .cut_repos
        .as_deref()
        .and_then(|p| match load_cut_repos(p) {
            Ok(c) => Some(c),
            Err(e) => {
                record(e, &mut problems);
                None
            }
        });
    if let (Some(f), Some(cut)) = (&task_file, &cut_repos) {
        problems.extend(cut.check_against(&f.dataset).iter().map(|p| p.to_string()));
    }

    let dataset = task_file.as_ref().map(|f| &f.dataset);
    let mut out = String::new();
    if let Some(f) = &task_file {
        out.push_str(&dataset_summary(f));
    }
    if let Some(c) = &contexts {
        out.push_str(&context_summary(c, dataset));
    }
    if let Some(c) = &cut_repos {
        out.push_str(&cut_repos_summary(c, dataset));
    }
    print!("{out}");
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.is_empty() {
        println!("valid");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s), listed on stderr", problems.len());
        Ok(ExitCode::from(1))
    }
}

/// Counts, most frequent first, ties by name.
fn tally<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

fn tally_line(label: &str, counts: &[(&str, usize)]) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    format!("  {label} ({}): {}\n", counts.len(), parts.join(", "))
}

fn id_list<S: AsRef<str>>(ids: &[S]) -> String {
    let shown: Vec<&str> = ids.iter().take(MAX_LISTED_IDS).map(AsRef::as_ref).collect();
    let mut s = shown.join(", ");
    if ids.len() > MAX_LISTED_IDS {
        let _ = write!(s, ", ... ({} more)", ids.len() - MAX_LISTED_IDS);
    }
    s
}

pub fn dataset_summary(f: &TaskFile) -> String {
    let ds = &f.dataset;
    let mut s = String::new();
    let _ = writeln!(s, "dataset {}", ds.path.display());
    let _ = writeln!(s, "  sha256: {}", ds.sha256);
    let _ = writeln!(s, "  entries: {}", f.entries);
    if !f.repeated.is_empty() {
        let _ = writeln!(
            s,
            "  exact repeats ignored: {} ({})",
            f.repeated.len(),
            id_list(&f.repeated)
        );
    }
    let v1 = ds
        .tasks
        .iter()
        .filter(|t| matches!(t.spec, TaskSpec::V1(_)))
        .count();
    let _ = writeln!(
        s,
        "  tasks: {} (v1: {v1}, v2: {})",
        ds.tasks.len(),
        ds.tasks.len() - v1
    );
    if v1 > 0 {
        let seeds = ds
            .tasks
            .iter()
            .filter(|t| matches!(&t.spec, TaskSpec::V1(s) if s.seed))
            .count();
        let _ = writeln!(s, "  v1 seeds: {seeds}, mutated: {}", v1 - seeds);
    }
    s.push_str(&tally_line(
        "languages",
        &tally(ds.tasks.iter().map(|t| t.language.as_str())),
    ));
    s.push_str(&tally_line(
        "vuln_types",
        &tally(ds.tasks.iter().map(|t| t.vuln_type.as_str())),
    ));
    // Upstream spells the same CWE both `CWE-79` and `cwe-79`.
    let cwe_ids: Vec<String> = ds.tasks.iter().map(|t| t.cwe_id.to_uppercase()).collect();
    s.push_str(&tally_line(
        "cwe_ids",
        &tally(cwe_ids.iter().map(String::as_str)),
    ));
    s
}

pub fn context_summary(c: &ContextSet, dataset: Option<&Dataset>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "context {}", c.path.display());
    let _ = writeln!(s, "  sha256: {}", c.sha256);
    let _ = writeln!(s, "  entries: {}", c.contexts.len());
    let ranged = c
        .contexts
        .iter()
        .flat_map(|x| &x.hits)
        .filter(|h| h.startline.is_some())
        .count();
    let hits: usize = c.contexts.iter().map(|x| x.hits.len()).sum();
    let _ = writeln!(s, "  hits: {hits} (with a line range: {ranged})");
    if let Some(ds) = dataset {
        let without: Vec<&str> = ds
            .tasks
            .iter()
            .filter(|t| c.for_task(t, ds).is_none())
            .map(|t| t.instance_id.as_str())
            .collect();
        if without.is_empty() {
            let _ = writeln!(s, "  tasks without context: 0");
        } else {
            let _ = writeln!(
                s,
                "  tasks without context: {} ({})",
                without.len(),
                id_list(&without)
            );
        }
        let _ = writeln!(
            s,
            "  context entries matching no task: {}",
            c.unmatched(ds).len()
        );
    }
    s
}

pub fn cut_repos_summary(c: &CutRepos, dataset: Option<&Dataset>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cut_repos {}", c.path.display());
    let _ = writeln!(s, "  sha256: {}", c.sha256);
    let files: usize = c.files.values().map(Vec::len).sum();
    let _ = writeln!(s, "  cut tasks: {} (files kept: {files})", c.files.len());
    if let Some(ds) = dataset {
        let _ = writeln!(s, "  entries matching no task: {}", c.unmatched(ds).len());
    }
    s
}
