//! `bench sast`: one unit tree scanned by the SAST container (`ContainerScanner`: a fresh,
//! locked-down container per scan) and by the bare `osemgrep` process, same rules, several
//! repetitions. The difference of the means is the per-scan price of the isolation.

use anyhow::{bail, ensure, Context, Result};
use ase_worker::repo_cache::{RepoCache, RepoCacheConfig};
use ase_worker::sast::{
    osemgrep_args, outcome_from_process, BareScanner, ContainerLimits, ContainerScanner,
    ProcessOutput, ScanLabels, ScanOutcome, ScanSettings, IMAGE_RULES,
};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{Mount, MountType};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
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

pub(crate) fn default_osemgrep() -> PathBuf {
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

pub(crate) fn repo_root() -> PathBuf {
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

/// Where the long-lived container sees the cache's unit trees.
const UNITS_MOUNT: &str = "/units";

/// The alternative the engineering notes suggest: one long-lived, equally locked-down scanner
/// container that sees the cache's `units/` directory (read-only; unit trees created later
/// appear in it, as a bind mount shows the live directory) and runs `osemgrep` per unit with
/// `exec`. Measured here before it replaces the per-scan container in `worker/src/sast`.
struct ExecScanner {
    docker: Docker,
    id: String,
    rules: String,
    settings: ScanSettings,
}

impl ExecScanner {
    async fn start(
        per_scan: &ContainerScanner,
        docker: Docker,
        units_dir: &Path,
        labels: &ScanLabels,
        rules: String,
        settings: ScanSettings,
    ) -> Result<Self> {
        // Same lockdown as the per-scan container; only the mount and the command differ.
        let mut body = per_scan.container_body(units_dir, labels);
        body.entrypoint = Some(vec![
            "/bin/busybox".into(),
            "sleep".into(),
            "2147483647".into(),
        ]);
        body.cmd = None;
        let hc = body.host_config.as_mut().context("host config")?;
        hc.mounts = Some(vec![Mount {
            typ: Some(MountType::BIND),
            source: Some(units_dir.to_string_lossy().into_owned()),
            target: Some(UNITS_MOUNT.to_string()),
            read_only: Some(true),
            ..Default::default()
        }]);
        let id = docker
            .create_container(Some(CreateContainerOptions::default()), body)
            .await?
            .id;
        docker.start_container(&id, None).await?;
        Ok(ExecScanner {
            docker,
            id,
            rules,
            settings,
        })
    }

    async fn scan(&self, unit_dir_name: &str) -> Result<ScanOutcome> {
        let target = format!("{UNITS_MOUNT}/{unit_dir_name}");
        let mut cmd = vec!["/semgrep/bin/osemgrep".to_string()];
        cmd.extend(osemgrep_args(&self.rules, &target, &self.settings));
        let exec = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some("/tmp".to_string()),
                    ..Default::default()
                },
            )
            .await?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    output_capacity: Some(1 << 20),
                    ..Default::default()
                }),
            )
            .await?;
        let StartExecResults::Attached { mut output, .. } = started else {
            bail!("exec started detached");
        };
        let max = self.settings.limits.max_bytes;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut overflowed = false;
        let read = async {
            while let Some(item) = output.next().await {
                match item? {
                    LogOutput::StdOut { message } => {
                        if stdout.len() + message.len() > max {
                            overflowed = true;
                            break;
                        }
                        stdout.extend_from_slice(&message);
                    }
                    LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message);
                        let keep = 8 * 1024;
                        if stderr.len() > keep {
                            stderr.drain(..stderr.len() - keep);
                        }
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(self.settings.timeout, read)
            .await
            .context("exec scan timed out")??;
        let code = self.docker.inspect_exec(&exec.id).await?.exit_code;
        Ok(outcome_from_process(
            &ProcessOutput {
                exit_code: code.map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
                stdout,
                stdout_overflowed: overflowed,
                stderr_tail: String::from_utf8_lossy(&stderr).into_owned(),
            },
            &self.settings.limits,
            &target,
        ))
    }

    async fn remove(self) {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = self.docker.remove_container(&self.id, Some(opts)).await;
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
        docker.clone(),
        args.image.clone(),
        format!("{IMAGE_RULES}/sqli/php.yaml"),
        settings.clone(),
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
    let unit_name = unit
        .path()
        .file_name()
        .context("unit dir name")?
        .to_string_lossy()
        .into_owned();
    let t = Instant::now();
    let exec = ExecScanner::start(
        &container,
        docker,
        &cache.root().join("units"),
        &labels,
        format!("{IMAGE_RULES}/sqli/php.yaml"),
        settings,
    )
    .await?;
    let exec_start = t.elapsed().as_secs_f64();
    let measured = measure(
        &args, &bare, &container, &exec, &unit, &unit_name, &labels, expected,
    )
    .await;
    exec.remove().await;
    let (t_bare, t_cont, t_exec) = measured?;
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
    println!(
        "long-lived container exec: mean {:.3} s  {t_exec:.3?} (container start once: {exec_start:.3} s)",
        mean(&t_exec)
    );
    println!(
        "exec_overhead_s={:.3} (long-lived container, exec per unit)",
        mean(&t_exec) - mean(&t_bare)
    );
    println!("sast_overhead_s={:.3}", mean(&t_cont) - mean(&t_bare));
    Ok(())
}

type Times = (Vec<f64>, Vec<f64>, Vec<f64>);

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &SastArgs,
    bare: &BareScanner,
    container: &ContainerScanner,
    exec: &ExecScanner,
    unit: &ase_worker::repo_cache::UnitTree,
    unit_name: &str,
    labels: &ScanLabels,
    expected: usize,
) -> Result<Times> {
    ensure!(
        findings(&exec.scan(unit_name).await?)? == expected,
        "exec and bare scans disagree"
    );
    let (mut t_bare, mut t_cont, mut t_exec) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repetitions {
        let t = Instant::now();
        ensure!(findings(&bare.scan(unit.path()).await)? == expected);
        t_bare.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ensure!(findings(&container.scan(unit.path(), labels).await)? == expected);
        t_cont.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ensure!(findings(&exec.scan(unit_name).await?)? == expected);
        t_exec.push(t.elapsed().as_secs_f64());
    }
    Ok((t_bare, t_cont, t_exec))
}
