//! Process assembly of a worker: what it needs besides its connection to the coordinator (the
//! repo cache, the scanner, and the Docker-backed v2 evaluator), built from its settings.
//! `ase worker` and the local worker of `ase run` both call [`build`], so both run the same
//! code (as Ballista's `executor_process` serves its executor binary).

use crate::dynamic::{DynamicEvaluator, DynamicSettings};
use crate::images::{ImagePuller, PullSettings};
use crate::pipeline::{rules_digest, Scanner, ScannerIdentity, WorkerContext};
use crate::repo_cache::{RepoCache, RepoCacheConfig, RepoCacheError};
use crate::sast::{BareScanner, ContainerLimits, ContainerScanner, ScanSettings, IMAGE_RULES};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How units are scanned (v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerKind {
    /// The host's osemgrep process.
    #[default]
    Bare,
    /// The SAST image, one container per scan.
    Container,
}

impl ScannerKind {
    pub const ALL: [ScannerKind; 2] = [ScannerKind::Bare, ScannerKind::Container];

    /// The name in config files and on command lines.
    pub fn name(self) -> &'static str {
        match self {
            ScannerKind::Bare => "bare",
            ScannerKind::Container => "container",
        }
    }

    /// One line for help texts.
    pub fn about(self) -> &'static str {
        match self {
            ScannerKind::Bare => "The host's osemgrep process",
            ScannerKind::Container => "The SAST image, one container per scan",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scanner {0:?}: bare or container")]
pub struct UnknownScanner(pub String);

impl FromStr for ScannerKind {
    type Err = UnknownScanner;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScannerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownScanner(s.to_string()))
    }
}

/// Whether the worker uses a Docker daemon (v2 evaluations, the container scanner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerUse {
    /// Use the daemon when it answers; without it v2 units fail with the reason.
    #[default]
    Auto,
    /// The daemon must answer.
    On,
    /// Never: v1 only, bare scanner.
    Off,
}

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
    /// Disk budget of the task images this worker pulls; None: `ASE_IMAGE_CACHE_BYTES`, else
    /// unlimited.
    pub image_cache_bytes: Option<u64>,
    /// How v1 scans run: timeout, semgrep's `--jobs`, excludes.
    pub scan: ScanSettings,
    /// The worker may start privileged containers (see `DynamicSettings::privileged`).
    pub privileged: bool,
}

pub struct WorkerParts {
    pub ctx: WorkerContext,
    /// None: no Docker, v2 units fail with the reason.
    pub dynamic: Option<DynamicEvaluator>,
}

/// Why a worker cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("opening the repo cache")]
    RepoCache(#[source] RepoCacheError),
    #[error("rules {path}")]
    Rules {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Docker is required (turn it off on a worker without Docker)")]
    DockerRequired(#[source] DockerUnavailable),
    #[error("the container scanner needs Docker")]
    ContainerScannerWithoutDocker,
    #[error("the container scanner needs a SAST image")]
    ContainerScannerWithoutImage,
    #[error("task image cache budget")]
    ImageCacheBudget(#[source] crate::images::BadBudget),
}

/// Why no Docker daemon can be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerUnavailable {
    #[error("Docker: connecting: {0}")]
    Connect(bollard::errors::Error),
    #[error("Docker: the daemon does not answer: {0}")]
    NoAnswer(bollard::errors::Error),
}

/// The scanner's version, for the log; a scanner that hangs on `--version` costs 30 s, not
/// the worker's start.
fn osemgrep_version(osemgrep: &Path) -> String {
    let mut cmd = std::process::Command::new(osemgrep);
    cmd.arg("--version");
    ase_common::process::run(
        cmd,
        &ase_common::process::Bounds::new(std::time::Duration::from_secs(30), 4096),
    )
    .ok()
    .filter(|o| o.success())
    .map(|o| o.stdout_lossy().trim().to_string())
    .filter(|v| !v.is_empty())
    .unwrap_or_else(|| "unknown".into())
}

/// A daemon as `mode` says: none when off, an error when on and none answers.
pub async fn connect_docker(mode: DockerUse) -> Result<Option<bollard::Docker>, SetupError> {
    if mode == DockerUse::Off {
        return Ok(None);
    }
    let answered = match bollard::Docker::connect_with_local_defaults() {
        Ok(docker) => match docker.ping().await {
            Ok(_) => Ok(docker),
            Err(e) => Err(DockerUnavailable::NoAnswer(e)),
        },
        Err(e) => Err(DockerUnavailable::Connect(e)),
    };
    match (answered, mode) {
        (Ok(docker), _) => Ok(Some(docker)),
        (Err(e), DockerUse::On) => Err(SetupError::DockerRequired(e)),
        (Err(e), _) => {
            tracing::info!(error = %e, "no Docker: v2 units will fail");
            Ok(None)
        }
    }
}

/// The variable a worker reads a token for private or rate-limited HTTPS clones from.
pub const GITHUB_TOKEN_ENV: &str = "GITHUB_TOKEN";

/// Opens the repo cache, connects to Docker as `s.docker` says, and builds the scanner and the
/// v2 evaluator.
pub async fn build(s: &WorkerSetup) -> Result<WorkerParts, SetupError> {
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
    let repo_cache = RepoCache::open(cache_cfg).map_err(SetupError::RepoCache)?;
    let docker = connect_docker(s.docker).await?;
    let scanner = match s.scanner {
        ScannerKind::Bare => {
            let identity = ScannerIdentity {
                rules_digest: rules_digest(&s.rules).map_err(|source| SetupError::Rules {
                    path: s.rules.clone(),
                    source,
                })?,
                version: osemgrep_version(&s.osemgrep),
            };
            Scanner::Bare {
                scanner: BareScanner::new(s.osemgrep.clone(), s.rules.clone(), s.scan.clone()),
                identity,
            }
        }
        ScannerKind::Container => {
            let Some(docker) = docker.clone() else {
                return Err(SetupError::ContainerScannerWithoutDocker);
            };
            let Some(image) = s.sast_image.clone() else {
                return Err(SetupError::ContainerScannerWithoutImage);
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
                    s.scan.clone(),
                    ContainerLimits::default(),
                ),
                identity,
            }
        }
    };
    let container = matches!(scanner, Scanner::Container { .. });
    let mut ctx = WorkerContext::new(repo_cache, scanner, s.cache.clone(), s.name.clone());
    if container {
        // The image holds the rules it was built from (`deploy/images/build.sh` copies this
        // repository's `rules/`); the host's folder lists them, so that each task scans with
        // its own set. Without it, every task scans with all of the image's rules.
        ctx = ctx.with_rules(crate::sast::RuleCatalog::load(&s.rules).ok());
    }
    ctx.coding_agents = docker
        .as_ref()
        .map(|d| std::sync::Arc::new(crate::coding_agent::CodingAgents::new(d.clone())));
    // Task images are pulled on demand, with the credentials, platform and cache budget of
    // this process's environment (see crate::images).
    let mut pull_settings = PullSettings::from_env().map_err(SetupError::ImageCacheBudget)?;
    if let Some(budget) = s.image_cache_bytes {
        pull_settings.cache_bytes = Some(budget);
    }
    let dynamic = docker.map(|d| {
        let puller = ImagePuller::new(d.clone(), pull_settings.clone());
        DynamicEvaluator::new(
            d,
            DynamicSettings {
                privileged: s.privileged,
                ..DynamicSettings::default()
            },
        )
        .with_puller(puller)
    });
    Ok(WorkerParts { ctx, dynamic })
}
