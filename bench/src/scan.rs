//! `bench scan`: the scan time of a v1 unit proportional to its change against the whole-tree
//! scan it replaces, on a generated repository (rule fixtures of four languages, so every file
//! has real findings) with the worker's 20 rules. Each unit makes 1-3 random changes (another
//! fixture, a line that does not parse, a removed line, a new or deleted file; at least one
//! file written, since a unit that only deletes scans nothing); its
//! incremental scan starts from an empty file-scan cache, so no hit flatters it. Last line
//! `scan_ratio=` (mean incremental unit scan time / mean whole-tree unit scan time).

use anyhow::{ensure, Result};
use ase_test_support::fixture_repo::{generate_repo, random_changes, Change};
use ase_worker::pipeline::incremental::{scan_changed, FileScanCache};
use ase_worker::pipeline::{rules_digest, Scanner, ScannerIdentity};
use ase_worker::sast::{BareScanner, ScanLabels, ScanOutcome, ScanSettings};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ScanArgs {
    /// Files in the generated repository (spread over php, py, js, go).
    #[arg(long, default_value_t = 2500)]
    pub files: usize,
    /// Units whose incremental scan is timed.
    #[arg(long, default_value_t = 20)]
    pub units: usize,
    /// Units whose whole-tree scan is timed (the slow side).
    #[arg(long, default_value_t = 3)]
    pub full_units: usize,
    /// semgrep's --jobs.
    #[arg(long, default_value_t = 2)]
    pub jobs: u32,
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// The bare binary; default `$ASE_OSEMGREP`, else `$ASE_CACHE/semgrep/bin/osemgrep`.
    #[arg(long)]
    pub osemgrep: Option<PathBuf>,
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

fn labels(unit: &str) -> ScanLabels {
    ScanLabels {
        unit: unit.into(),
        run: "bench-scan".into(),
        worker: "bench".into(),
    }
}

fn mean(d: &[Duration]) -> f64 {
    d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len().max(1) as f64
}

pub async fn run(args: ScanArgs) -> Result<()> {
    ensure!(
        args.files >= 4 && args.units > 0 && args.full_units > 0,
        "--files >= 4, --units and --full-units > 0"
    );
    let osemgrep = args
        .osemgrep
        .clone()
        .unwrap_or_else(crate::sast::default_osemgrep);
    ensure!(osemgrep.exists(), "no osemgrep at {}", osemgrep.display());
    let rules = crate::sast::repo_root().join("rules");
    let scanner = Scanner::Bare {
        scanner: BareScanner::new(
            osemgrep,
            rules.clone(),
            ScanSettings {
                jobs: args.jobs,
                timeout: Duration::from_secs(args.timeout_secs),
                ..ScanSettings::default()
            },
        ),
        identity: ScannerIdentity {
            rules_digest: rules_digest(&rules)?,
            version: "bench".into(),
        },
    };
    // Every generic pack (all 20 rules) on both sides: a unit of one task scans only its own
    // pack, which is faster still.
    let rule_set = ase_worker::sast::RuleCatalog::load(&rules)?.generic();
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("base");
    let mut rng = fastrand::Rng::with_seed(2500);
    let exts = ["php", "py", "js", "go"];
    let mut files: BTreeMap<String, (String, &str)> = BTreeMap::new();
    for (i, ext) in exts.iter().enumerate() {
        let n = args.files / exts.len() + usize::from(i < args.files % exts.len());
        let sub = base.join(format!("lang_{ext}"));
        for (path, content) in generate_repo(&sub, ext, n, &mut rng) {
            files.insert(format!("lang_{ext}/{path}"), (content, ext));
        }
    }
    println!("repo: {} files under {}", files.len(), base.display());

    // The units' changes, each within one language's part of the tree.
    let mut units = Vec::new();
    for u in 0..args.units.max(args.full_units) {
        let ext = exts[u % exts.len()];
        let part: BTreeMap<String, String> = files
            .iter()
            .filter(|(_, (_, e))| *e == ext)
            .filter_map(|(p, (c, _))| {
                p.strip_prefix(&format!("lang_{ext}/"))
                    .map(|r| (r.to_string(), c.clone()))
            })
            .collect();
        // A unit that only deletes files scans nothing: redrawn, so as not to flatter the mean.
        let mut changes = random_changes(&part, ext, &mut rng);
        for _ in 0..100 {
            if changes.iter().any(|c| matches!(c, Change::Write { .. })) {
                break;
            }
            changes = random_changes(&part, ext, &mut rng);
        }
        let changes: Vec<_> = changes
            .into_iter()
            .map(|c| (format!("lang_{ext}"), c))
            .collect();
        units.push(changes);
    }

    let started = Instant::now();
    match scanner.scan(&base, &labels("baseline"), &rule_set).await {
        ScanOutcome::Completed(r) => println!(
            "baseline (whole tree, once per repo, commit and rules): {:.2} s, {} findings",
            started.elapsed().as_secs_f64(),
            r.findings.len()
        ),
        ScanOutcome::Failed(f) => anyhow::bail!("baseline scan failed: {f}"),
    }

    let mut full = Vec::new();
    for (u, changes) in units.iter().take(args.full_units).enumerate() {
        let root = tmp.path().join(format!("full-{u}"));
        copy_tree(&base, &root)?;
        for (dir, c) in changes {
            c.apply(&root.join(dir));
        }
        let t = Instant::now();
        let out = scanner
            .scan(&root, &labels(&format!("full-{u}")), &rule_set)
            .await;
        full.push(t.elapsed());
        ensure!(
            matches!(out, ScanOutcome::Completed(_)),
            "whole-tree scan failed: {out:?}"
        );
        println!("unit {u}: whole-tree scan {:.2} s", full[u].as_secs_f64());
        std::fs::remove_dir_all(&root)?;
    }

    let mut incremental = Vec::new();
    for (u, changes) in units.iter().take(args.units).enumerate() {
        let root = tmp.path().join(format!("unit-{u}"));
        copy_tree(&base, &root)?;
        let mut changed = BTreeSet::new();
        for (dir, c) in changes {
            c.apply(&root.join(dir));
            changed.insert(format!("{dir}/{}", c.path()));
        }
        // A fresh cache per unit: every changed file is scanned.
        let cache = FileScanCache::new(tmp.path().join(format!("file-scans-{u}")));
        let t = Instant::now();
        let scan = scan_changed(
            &scanner,
            &cache,
            &tmp.path().join("scratch"),
            &root,
            &changed,
            &labels(&format!("unit-{u}")),
            &rule_set,
        )
        .await?;
        incremental.push(t.elapsed());
        println!(
            "unit {u}: {} changed files, {} scanned, {:.3} s",
            changed.len(),
            scan.scanned_now,
            incremental[u].as_secs_f64()
        );
        std::fs::remove_dir_all(&root)?;
    }
    let (f, i) = (mean(&full), mean(&incremental));
    println!("full_tree_unit_scan_s={f:.3}");
    println!("incremental_unit_scan_s={i:.3}");
    println!("scan_ratio={:.4}", i / f);
    Ok(())
}
