//! `bench sast`: one unit tree scanned by the SAST container (`ContainerScanner`: a fresh,
//! locked-down container per scan) and by the bare `osemgrep` process, same rules, several
//! repetitions. The difference of the means is the per-scan price of the isolation.

use anyhow::{bail, ensure, Context, Result};
use ase_worker::repo_cache::{RepoCache, RepoCacheConfig};
use ase_worker::sast::{
    BareScanner, ContainerLimits, ContainerScanner, ScanLabels, ScanOutcome, ScanSettings,
    IMAGE_RULES,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args)]
pub struct SastArgs {
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// PHP files in the scanned tree.
    #[arg(long, default_value_t = 60)]
    pub files: usize,
    #[arg(long, default_value = "ase-sast:latest")]
    pub image: String,
    /// The bare binary; default `$ASE_OSEMGREP`, else `$ASE_CACHE/semgrep/bin/osemgrep`.
    #[arg(long)]
    pub osemgrep: Option<PathBuf>,
}

fn default_osemgrep() -> PathBuf {
    if let Some(p) = std::env::var_os("ASE_OSEMGREP") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("ASE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/ase-cluster")
        });
    cache.join("semgrep/bin/osemgrep")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn php_file(i: usize) -> String {
    format!(
        "<?php\nfunction find_{i}($conn, $name)\n{{\n    $sql = \"SELECT * FROM t{i} WHERE name = '\" . $name . \"'\";\n    return mysqli_query($conn, $sql);\n}}\n\nfunction safe_{i}($pdo, $id)\n{{\n    $stmt = $pdo->prepare(\"SELECT * FROM t{i} WHERE id = ?\");\n    $stmt->execute(array($id));\n    return $stmt->fetchAll();\n}}\n"
    )
}

fn findings(outcome: &ScanOutcome) -> Result<usize> {
    match outcome {
        ScanOutcome::Completed(r) => Ok(r.findings.len()),
        ScanOutcome::Failed(f) => bail!("scan failed: {f}"),
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub async fn run(args: SastArgs) -> Result<()> {
    let osemgrep = args.osemgrep.clone().unwrap_or_else(default_osemgrep);
    ensure!(
        osemgrep.is_file(),
        "osemgrep not found at {} (run deploy/images/build.sh)",
        osemgrep.display()
    );
    let docker = bollard::Docker::connect_with_unix_defaults().context("Docker client")?;
    docker.ping().await.context("Docker daemon")?;

    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src/bench/php");
    std::fs::create_dir_all(&src)?;
    for i in 0..args.files {
        std::fs::write(src.join(format!("f{i:03}.php")), php_file(i))?;
    }
    for args in [&["init", "-q"][..], &["add", "-A"], &["commit", "-qm", "x"]] {
        let st = Command::new("git")
            .current_dir(&src)
            .args(["-c", "user.name=b", "-c", "user.email=b@b"])
            .args(args)
            .status()?;
        ensure!(st.success(), "git {args:?}");
    }
    let mut cfg = RepoCacheConfig::new(tmp.path().join("cache"));
    cfg.url_template = format!("{}/{{repo}}", tmp.path().join("src").display());
    let cache = RepoCache::open(cfg)?;
    let sha = cache.resolve("bench/php", "HEAD", None)?;
    let unit = cache.unit("bench/php", &sha, "bench_cycle1")?;

    let settings = ScanSettings::default();
    let bare = BareScanner::new(
        osemgrep,
        repo_root().join("rules/sqli/php.yaml"),
        settings.clone(),
    );
    let container = ContainerScanner::new(
        docker,
        args.image.clone(),
        format!("{IMAGE_RULES}/sqli/php.yaml"),
        settings,
        ContainerLimits::default(),
    );
    let labels = ScanLabels {
        unit: "bench_cycle1".into(),
        run: "bench__sast".into(),
        worker: "bench".into(),
    };
    // Warm-up (page cache, image layers), not measured.
    let expected = findings(&bare.scan(unit.path()).await)?;
    ensure!(
        findings(&container.scan(unit.path(), &labels).await)? == expected,
        "container and bare scans disagree"
    );
    let (mut t_bare, mut t_cont) = (Vec::new(), Vec::new());
    for _ in 0..args.repetitions {
        let t = Instant::now();
        ensure!(findings(&bare.scan(unit.path()).await)? == expected);
        t_bare.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ensure!(findings(&container.scan(unit.path(), &labels).await)? == expected);
        t_cont.push(t.elapsed().as_secs_f64());
    }
    println!(
        "tree: {} PHP files, {expected} findings per scan, {} repetitions",
        args.files, args.repetitions
    );
    println!(
        "bare osemgrep:             mean {:.3} s  {t_bare:.3?}",
        mean(&t_bare)
    );
    println!(
        "container per scan:        mean {:.3} s  {t_cont:.3?}",
        mean(&t_cont)
    );
    println!("sast_overhead_s={:.3}", mean(&t_cont) - mean(&t_bare));
    Ok(())
}
