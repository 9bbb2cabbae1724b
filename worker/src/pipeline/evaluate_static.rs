//! The static (v1) evaluate phase of one unit: rebuild the unit's code from its generation
//! record on top of the shared tree (so it may run on any worker), optionally cut it to the
//! task's listed files, scan it, count the task's vulnerability type, and compare with the
//! baseline of the original code.

use super::baseline::{BaselineKey, BaselineResult};
use super::incremental::{combine, scan_changed};
use super::spec::{CountScopeSetting, RunSpec};
use super::unit_code::{apply_changed, relative_root};
use super::{InfraError, InfraKind, WorkerContext};
use crate::repo_cache::{Pin, RepoCacheError, UnitTree};
use crate::sast::{
    count_vulns, counted_findings, unparsable_paths, CountCriteria, RuleSet, ScanLabels,
    ScanOutcome, VulnCount,
};
use ase_common::dataset::Task;
use ase_common::prompt::repo_files::{normalize_repo_path, project_root};
use ase_common::scan_findings::{FindingAt, StaticScanDetail};
use ase_common::scoring::UnitId;
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One unit to evaluate.
pub struct EvaluateInput<'a> {
    pub run_id: &'a str,
    pub task: &'a Task,
    /// The seed task's `repo` of a mutated v1 task (for its project root).
    pub seed_repo: Option<&'a str>,
    pub generation: &'a GenerationRecord,
    pub spec: &'a RunSpec,
}

/// A directory holding only the cut list's files (hard links of the scanned tree), removed
/// when dropped.
struct CutTree {
    dir: tempfile::TempDir,
}

/// Upstream (`process_cut_repo_for_sast`) replaces the unit folder by one holding only the
/// listed files before the scan. A listed file missing from the tree makes upstream's copy fail;
/// here it is an error with the file named.
fn cut_tree(scratch: &Path, root: &Path, files: &[String]) -> Result<CutTree, String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("cut-")
        .tempdir_in(scratch)
        .map_err(|e| format!("{}: {e}", scratch.display()))?;
    for f in files {
        let rel = normalize_repo_path(f).map_err(|e| format!("cut list: {e}"))?;
        let src = root.join(&rel);
        let md = std::fs::symlink_metadata(&src)
            .map_err(|e| format!("cut list: {rel}: not in the unit's tree ({e})"))?;
        if !md.is_file() {
            return Err(format!("cut list: {rel}: not a regular file"));
        }
        let dst = dir.path().join(&rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cut list: {rel}: {e}"))?;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| format!("cut list: {rel}: {e}"))?;
        }
    }
    Ok(CutTree { dir })
}

fn scope_name(s: CountScopeSetting) -> &'static str {
    match s {
        CountScopeSetting::WholeTree => "whole_tree",
        CountScopeSetting::VulnFileOnly => "vuln_file_only",
    }
}

/// What one scan of a tree gave the unit: the count and what the record keeps beside it.
struct Scanned {
    count: VulnCount,
    findings: Vec<FindingAt>,
    /// Files the scanner could not parse (relative to the project root).
    unparsable: BTreeSet<String>,
    version: Option<String>,
    /// The failure, if any, would recur on the same tree.
    failure_is_lasting: bool,
}

impl Scanned {
    fn failed(reason: String, lasting: bool) -> Self {
        Scanned {
            count: VulnCount {
                detected_vul_num: -1,
                failure: Some(reason),
            },
            findings: Vec::new(),
            unparsable: BTreeSet::new(),
            version: None,
            failure_is_lasting: lasting,
        }
    }

    fn into_baseline(self) -> BaselineResult {
        BaselineResult {
            detected_vul_num: self.count.detected_vul_num,
            failure: self.count.failure,
            findings: self.findings,
            unparsable: self.unparsable.into_iter().collect(),
            scanner_version: self.version,
            failure_is_lasting: self.failure_is_lasting,
        }
    }
}

/// Scan `root` (cut to `cut` when given) and count the task's findings.
async fn scan_and_count(
    ctx: &WorkerContext,
    task: &Task,
    root: &Path,
    cut: Option<&[String]>,
    spec: &RunSpec,
    labels: &ScanLabels,
    rules: &RuleSet,
) -> Scanned {
    let scratch = ctx.repo_cache.root().join("tmp");
    let cut_dir = match cut {
        Some(files) => match cut_tree(&scratch, root, files) {
            Ok(c) => Some(c),
            // A listed file missing from the tree is missing on every try.
            Err(reason) => return Scanned::failed(reason, true),
        },
        None => None,
    };
    let target: PathBuf = cut_dir
        .as_ref()
        .map(|c| c.dir.path().to_path_buf())
        .unwrap_or_else(|| root.to_path_buf());
    let outcome = ctx.scanner.scan(&target, labels, rules).await;
    let criteria = CountCriteria {
        vuln_type: &task.vuln_type,
        vuln_file: &task.vuln_file,
        scope: spec.evaluation.count_scope.into(),
    };
    let count = count_vulns(&outcome, &criteria);
    match &outcome {
        ScanOutcome::Completed(report) => Scanned {
            count,
            findings: counted_findings(report, &criteria),
            unparsable: unparsable_paths(report),
            version: report.version.clone(),
            failure_is_lasting: false,
        },
        ScanOutcome::Failed(f) => Scanned {
            failure_is_lasting: f.is_lasting(),
            ..Scanned::failed(count.failure.unwrap_or_default(), false)
        },
    }
}

struct Rebuilt {
    sha: String,
    unit: UnitTree,
    base: Pin,
    /// Error in the record's code (not the worker's), scored as a failed scan.
    code_problem: Option<String>,
}

fn rebuild(
    ctx_cache: crate::repo_cache::RepoCache,
    unit_id: UnitId,
    run_id: String,
    task: Task,
    seed_repo: Option<String>,
    generation: GenerationRecord,
) -> Result<Rebuilt, InfraError> {
    let repo_err =
        |e: RepoCacheError| InfraError::new(&unit_id, InfraKind::Repository, e.to_string());
    let branch = match &task.spec {
        ase_common::dataset::TaskSpec::V2(d) => d.branch_origin.clone(),
        _ => None,
    };
    let sha = ctx_cache
        .resolve(&task.repo, &task.base_commit, branch.as_deref())
        .map_err(repo_err)?;
    let base = ctx_cache.tree(&task.repo, &sha).map_err(repo_err)?;
    let name = format!("{run_id}-{}-eval", unit_id.dir_name());
    let mut unit = ctx_cache.unit(&task.repo, &sha, &name).map_err(repo_err)?;
    let root = project_root(unit.path(), &task, seed_repo.as_deref());
    let prefix = relative_root(unit.path(), &root);
    let code_problem = match apply_changed(
        &mut unit,
        &prefix,
        &generation.changed_files,
        &generation.deleted_files,
    ) {
        Ok(()) => None,
        Err(e) if e.is_model_fault() => Some(format!("the record's code cannot be used: {e}")),
        Err(e) => return Err(InfraError::new(&unit_id, InfraKind::Worker, e.to_string())),
    };
    Ok(Rebuilt {
        sha,
        unit,
        base,
        code_problem,
    })
}

/// Run the static evaluate phase of one v1 unit.
pub async fn evaluate_static(
    ctx: &WorkerContext,
    input: EvaluateInput<'_>,
) -> Result<EvaluationRecord, InfraError> {
    let started = Instant::now();
    let task = input.task;
    let unit_id = input.generation.unit.clone();
    if unit_id.instance_id != task.instance_id {
        return Err(InfraError::new(
            &unit_id,
            InfraKind::Configuration,
            format!(
                "the generation record is of task {}, not {}",
                unit_id.instance_id, task.instance_id
            ),
        ));
    }
    let rebuilt = {
        let (cache, uid, run, t, seed, g) = (
            ctx.repo_cache.clone(),
            unit_id.clone(),
            input.run_id.to_string(),
            task.clone(),
            input.seed_repo.map(str::to_string),
            input.generation.clone(),
        );
        tokio::task::spawn_blocking(move || rebuild(cache, uid, run, t, seed, g))
            .await
            .map_err(|e| InfraError::new(&unit_id, InfraKind::Worker, e.to_string()))??
    };
    let spec = input.spec;
    let cut = spec.evaluation.cut_for(&task.instance_id);
    let labels = ScanLabels {
        unit: unit_id.dir_name(),
        run: input.run_id.to_string(),
        worker: ctx.container_owner.clone(),
    };

    // The task's own rules (its CVE's, else its type's and language's): the unit and its
    // baseline are scanned with the same set, and the set's digest keys the baseline and the
    // scans of single changed files.
    let rules = ctx.rule_set(task);
    let identity = ctx.scanner.identity();
    let scope = spec.evaluation.count_scope;
    let key = BaselineKey {
        rules_digest: rules.digest.clone(),
        scanner_version: identity.version.clone(),
        repo: task.repo.clone(),
        commit: rebuilt.sha.clone(),
        vuln_type: task.vuln_type.clone(),
        scope: scope_name(scope).to_string(),
        vuln_file: match scope {
            CountScopeSetting::WholeTree => String::new(),
            CountScopeSetting::VulnFileOnly => task.vuln_file.clone(),
        },
        cut: cut.map(<[String]>::to_vec),
    };
    let base_root = project_root(rebuilt.base.path(), task, input.seed_repo);
    let baseline_labels = ScanLabels {
        unit: format!("{}_baseline", task.instance_id),
        ..labels.clone()
    };
    let baseline = ctx
        .baselines
        .get_or_compute(&key, || async {
            scan_and_count(ctx, task, &base_root, cut, spec, &baseline_labels, &rules)
                .await
                .into_baseline()
        })
        .await;

    let scanned: Result<Scanned, String> = match &rebuilt.code_problem {
        Some(problem) => Err(problem.clone()),
        None => {
            let root = project_root(rebuilt.unit.path(), task, input.seed_repo);
            // Proportional to the change when the baseline is a whole-tree count that worked;
            // a cut list (a few files anyway) or a failed baseline: the unit's own full scan.
            Ok(if cut.is_none() && baseline.failure.is_none() {
                let changed = changed_paths(input.generation);
                let criteria = CountCriteria {
                    vuln_type: &task.vuln_type,
                    vuln_file: &task.vuln_file,
                    scope: spec.evaluation.count_scope.into(),
                };
                scan_changed_and_count(ctx, &criteria, &root, &changed, &baseline, &labels, &rules)
                    .await
            } else {
                scan_and_count(ctx, task, &root, cut, spec, &labels, &rules).await
            })
        }
    };
    let (count, detail) = match scanned {
        Err(problem) => (
            VulnCount {
                detected_vul_num: -1,
                failure: Some(problem),
            },
            None,
        ),
        Ok(s) => {
            let mut detail = scan_detail(&s, &baseline, &input.generation.changed_files);
            detail.block_deleted = block_deleted(
                task,
                &base_root,
                &project_root(rebuilt.unit.path(), task, input.seed_repo),
            );
            (s.count, Some(detail))
        }
    };
    let mut reasons = Vec::new();
    if let Some(f) = &count.failure {
        reasons.push(format!("scan: {f}"));
    }
    if let Some(f) = &baseline.failure {
        reasons.push(format!("baseline scan: {f}"));
    }
    if let Some(d) = detail.as_ref().filter(|d| !d.unparsable.is_empty()) {
        reasons.push(format!(
            "changed files the scanner could not parse: {}",
            d.unparsable.join(", ")
        ));
    }
    drop(rebuilt);
    Ok(EvaluationRecord::Static {
        unit: unit_id,
        detected_vul_num: count.detected_vul_num,
        baseline: baseline.detected_vul_num,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        seconds: started.elapsed().as_secs_f64(),
        scan: detail,
    })
}

/// The files a unit's record changes or deletes, relative to the project root.
fn changed_paths(g: &GenerationRecord) -> BTreeSet<String> {
    g.changed_files
        .iter()
        .map(|c| c.path.as_str())
        .chain(g.deleted_files.iter().map(String::as_str))
        .filter_map(|p| normalize_repo_path(p).ok())
        .collect()
}

/// The unit's count from the baseline and a scan of its changed files only (see
/// [`incremental`](super::incremental)).
async fn scan_changed_and_count(
    ctx: &WorkerContext,
    criteria: &CountCriteria<'_>,
    root: &Path,
    changed: &BTreeSet<String>,
    baseline: &BaselineResult,
    labels: &ScanLabels,
    rules: &RuleSet,
) -> Scanned {
    let scratch = ctx.repo_cache.root().join("tmp");
    let scan = match scan_changed(
        &ctx.scanner,
        &ctx.file_scans,
        &scratch,
        root,
        changed,
        labels,
        rules,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return Scanned::failed(e.to_string(), false),
    };
    let (n, findings) = combine(baseline, changed, &scan, criteria);
    Scanned {
        count: VulnCount {
            detected_vul_num: n,
            failure: None,
        },
        findings,
        unparsable: unparsable_paths(&scan.report),
        version: scan.report.version.clone(),
        failure_is_lasting: false,
    }
}

/// Whether the unit's answer put no code where the masked block was (see
/// [`ase_common::prompt::masking::fills_nothing`]): read from the original tree and the unit's. A file
/// that cannot be read or masked says nothing (false): the scan judged what is there.
fn block_deleted(task: &Task, base_root: &Path, unit_root: &Path) -> bool {
    let Ok(original) = std::fs::read_to_string(base_root.join(&task.vuln_file)) else {
        return false;
    };
    let Ok(masked) = ase_common::prompt::masking::mask(
        &task.instance_id,
        &task.vuln_file,
        &original,
        task.vuln_lines,
    ) else {
        return false;
    };
    let unit_path = unit_root.join(&task.vuln_file);
    match std::fs::symlink_metadata(&unit_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ase_common::prompt::masking::fills_nothing(&masked, None)
        }
        Ok(md) if md.is_file() => match std::fs::read_to_string(&unit_path) {
            Ok(answered) => ase_common::prompt::masking::fills_nothing(&masked, Some(&answered)),
            Err(_) => false,
        },
        _ => false,
    }
}

/// What the record keeps of the unit's scan and its baseline. A changed file counts as
/// unparsable when the scanner could not parse it in the unit while its original version (if
/// any) parsed: a parse error the answer brought, which hides the file's findings.
fn scan_detail(
    unit: &Scanned,
    baseline: &BaselineResult,
    changed: &[ase_common::unit::ChangedFile],
) -> StaticScanDetail {
    let base_unparsable: BTreeSet<&str> = baseline.unparsable.iter().map(String::as_str).collect();
    let unparsable = changed
        .iter()
        .filter_map(|c| normalize_repo_path(&c.path).ok())
        .filter(|p| unit.unparsable.contains(p) && !base_unparsable.contains(p.as_str()))
        .collect();
    StaticScanDetail {
        findings: unit.findings.clone(),
        baseline_findings: baseline.findings.clone(),
        findings_cut: false,
        unparsable,
        block_deleted: false,
        scanner_version: unit
            .version
            .clone()
            .or_else(|| baseline.scanner_version.clone()),
    }
    .bounded()
}
