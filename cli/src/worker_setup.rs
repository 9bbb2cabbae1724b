//! What a worker process needs besides its connection: the repo cache, the scanner, and the
//! Docker-backed v2 evaluator. Shared by `ase worker` and the local worker of `ase run`, so both
//! run the same code.

use crate::config::{DockerUse, ScannerKind};
use anyhow::{bail, Context};
use ase_worker::dynamic::{DynamicEvaluator, DynamicSettings};
use ase_worker::pipeline::{rules_digest, Scanner, ScannerIdentity, WorkerContext};
use ase_worker::repo_cache::{RepoCache, RepoCacheConfig};
use ase_worker::sast::{BareScanner, ContainerLimits, ContainerScanner, ScanSettings, IMAGE_RULES};
use std::path::{Path, PathBuf};

/// The settings of one worker, from flags or from the config file.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    pub name: String,
    /// Repo cache (`repos/`), baselines and unit trees.
    pub cache: PathBuf,
    pub cache_max_bytes: Option<u64>,
    pub repo_url_template: Option<String>,
    pub scanner: ScannerKind,
    pub osemgrep: PathBuf,
    pub rules: PathBuf,
    pub sast_image: Option<String>,
    pub docker: DockerUse,
}

pub struct WorkerParts {
    pub ctx: WorkerContext,
    /// None: no Docker, v2 units fail with the reason.
    pub dynamic: Option<DynamicEvaluator>,
}

fn osemgrep_version(osemgrep: &Path) -> String {
    std::process::Command::new(osemgrep)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

async fn connect_docker(mode: DockerUse) -> anyhow::Result<Option<bollard::Docker>> {
    if mode == DockerUse::Off {
        return Ok(None);
    }
    let answered = match bollard::Docker::connect_with_local_defaults() {
        Ok(docker) => match docker.ping().await {
            Ok(_) => Ok(docker),
            Err(e) => Err(anyhow::Error::new(e).context("Docker: the daemon does not answer")),
        },
        Err(e) => Err(anyhow::Error::new(e).context("Docker: connecting")),
    };
    match (answered, mode) {
        (Ok(docker), _) => Ok(Some(docker)),
        (Err(e), DockerUse::On) => {
            Err(e.context("Docker is required (turn it off on a worker without Docker)"))
        }
        (Err(e), _) => {
            tracing::info!(error = %format!("{e:#}"), "no Docker: v2 units will fail");
            Ok(None)
        }
    }
}

/// The variable a worker reads a token for private or rate-limited HTTPS clones from.
pub const GITHUB_TOKEN_ENV: &str = "GITHUB_TOKEN";

pub async fn build(s: &WorkerSetup) -> anyhow::Result<WorkerParts> {
    let mut cache_cfg = RepoCacheConfig::new(s.cache.join("repos"));
    if let Some(max) = s.cache_max_bytes {
        cache_cfg.max_bytes = max;
    }
    if let Some(t) = &s.repo_url_template {
        cache_cfg.url_template = t.clone();
    }
    // Upstream's --github_token / GITHUB_TOKEN: read from this process's environment when a
    // clone needs it, handed to git through its environment (never its arguments), and only
    // for https URLs of the template's host.
    cache_cfg.token_env = Some(GITHUB_TOKEN_ENV.into());
    let repo_cache = RepoCache::open(cache_cfg).context("opening the repo cache")?;
    let docker = connect_docker(s.docker).await?;
    let scanner = match s.scanner {
        ScannerKind::Bare => {
            let identity = ScannerIdentity {
                rules_digest: rules_digest(&s.rules)
                    .with_context(|| format!("rules {}", s.rules.display()))?,
                version: osemgrep_version(&s.osemgrep),
            };
            Scanner::Bare {
                scanner: BareScanner::new(
                    s.osemgrep.clone(),
                    s.rules.clone(),
                    ScanSettings::default(),
                ),
                identity,
            }
        }
        ScannerKind::Container => {
            let Some(docker) = docker.clone() else {
                bail!("the container scanner needs Docker");
            };
            let Some(image) = s.sast_image.clone() else {
                bail!("the container scanner needs a SAST image");
            };
            // The image's content-hashed tag names both the engine and the rules baked in.
            let identity = ScannerIdentity {
                rules_digest: image.clone(),
                version: image.clone(),
            };
            Scanner::Container {
                scanner: ContainerScanner::new(
                    docker,
                    image,
                    IMAGE_RULES.to_string(),
                    ScanSettings::default(),
                    ContainerLimits::default(),
                ),
                identity,
            }
        }
    };
    let ctx = WorkerContext::new(repo_cache, scanner, s.cache.clone(), s.name.clone());
    let dynamic = docker.map(|d| DynamicEvaluator::new(d, DynamicSettings::default()));
    Ok(WorkerParts { ctx, dynamic })
}
