//! The one configuration file of `ase run` (and optionally of `ase coordinator`/`ase worker`):
//! a typed TOML document loaded once, with defaults, `ASE_*` environment overrides, checks
//! that name the key and the file, and a printable effective form without secrets.
//!
//! Precedence, highest first: command-line flags, `ASE_*` environment variables, the file,
//! the defaults below. Relative paths in the file are relative to the file's directory, so a
//! config and its datasets can move together.
//!
//! Every key is documented here and in `examples/ase.toml`.

use ase_worker::coding_agent::{AgentApi, AgentConfig, AgentLimits, AgentPreset};
use ase_worker::model::{ApiKeySource, OpenAiConfig};
use ase_worker::pipeline::spec::{
    CountScopeSetting, EvaluationSettings, ModelSpec, PromptSettings, RunLimits, RunSpec,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variable holding the model API key when a run names no `api_key_env` of its own.
pub const FALLBACK_API_KEY_ENV: &str = "ASE_API_KEY";
/// Bytes of a config file read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { file: String },
    /// TOML syntax, a wrong type or an unknown key; toml's message names the key and line.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A value that parses but cannot work.
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    /// Several such values: every one is reported, one per line, so that a user fixes the
    /// file in one pass.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Ok for no problem, the problem itself for one, [`ConfigError::Several`] for more.
    fn all(mut problems: Vec<ConfigError>) -> Result<(), ConfigError> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Several(problems)),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AseConfig {
    /// Where `ase run` writes each run's report files, as `<output_dir>/<run_id>/`.
    /// Default: `<coordinator.data>/results`. Environment: `ASE_OUTPUT_DIR`.
    pub output_dir: Option<PathBuf>,
    /// What `ase run` does before it submits: `exclude` (default: tasks whose repo, commit or
    /// image cannot be had are kept out, listed apart in the reports), `abort` (refuse to
    /// run), `off` (no check). Flag: `--preflight`.
    pub preflight: crate::preflight_cmd::PreflightMode,
    pub coordinator: CoordinatorSettings,
    pub worker: WorkerSettings,
    /// The runs `ase run` submits, in order (`[[runs]]`). None: the demo campaign.
    pub runs: Vec<RunSettings>,
}

/// The embedded (or standalone) coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorSettings {
    /// gRPC address. `ase run` keeps it on loopback; port 0 picks a free port.
    /// Environment: `ASE_LISTEN`.
    pub listen: SocketAddr,
    /// Data folder: the sled store (`store/`), generated certificates (`certs/`), the local
    /// worker's cache (`cache/`) and results. Default: `$ASE_DATA_DIR`, else
    /// `$XDG_DATA_HOME/ase-cluster`, else `~/.local/share/ase-cluster`.
    pub data: Option<PathBuf>,
    /// Certificates as written by `ase certs init`. Default: `<data>/certs`, created by
    /// `ase run` when missing. Environment: `ASE_TLS_DIR`.
    pub tls_dir: Option<PathBuf>,
    /// Prometheus `GET /metrics` address; none: no metrics listener.
    /// Environment: `ASE_METRICS_LISTEN`.
    pub metrics_listen: Option<SocketAddr>,
    /// Heartbeat interval workers are told to keep, in milliseconds.
    pub heartbeat_ms: u32,
    /// A lease not renewed for this long (milliseconds) is lost; must exceed `heartbeat_ms`.
    pub lease_ttl_ms: u32,
    /// Place v2 evaluations on the workers holding their images, and spread a campaign's
    /// images over the workers; false: in queue order to whoever asks.
    /// Flag: `ase coordinator --no-image-affinity`.
    pub image_affinity: bool,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: None,
            tls_dir: None,
            metrics_listen: None,
            heartbeat_ms: 2_000,
            lease_ttl_ms: 10_000,
            image_affinity: true,
        }
    }
}

pub use ase_worker::setup::{DockerUse, ScannerKind};

/// The local worker of `ase run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// The worker's name (its certificate is `worker-<name>.pem`).
    pub name: String,
    /// Repo cache, baselines and unit trees. Default: `<data>/cache`.
    /// Environment: `ASE_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
    /// Bound of the repo cache in bytes; none: the cache's default.
    pub cache_max_bytes: Option<u64>,
    /// Units generating at once. Environment: `ASE_GENERATE_SLOTS`.
    pub generate_slots: u32,
    /// Units evaluating at once. Environment: `ASE_EVAL_SLOTS`.
    pub eval_slots: u32,
    /// `bare` (the host's osemgrep) or `container` (the SAST image). Environment: `ASE_SCANNER`.
    pub scanner: ScannerKind,
    /// The osemgrep binary of the bare scanner. Default:
    /// `~/.cache/ase-cluster/semgrep/bin/osemgrep` when present (left by
    /// `deploy/images/build.sh`), else `osemgrep` on `PATH`. Environment: `ASE_OSEMGREP`.
    pub osemgrep: Option<PathBuf>,
    /// Rule packs of the bare scanner. Default: `rules/` of the current directory or of the
    /// source tree the binary was built in. Environment: `ASE_RULES`.
    pub rules: Option<PathBuf>,
    /// The SAST image of the container scanner (`ase-sast:<hash>`). Environment:
    /// `ASE_SAST_IMAGE`.
    pub sast_image: Option<String>,
    /// Where repos are cloned from; `{repo}` becomes `owner/name`. Default: GitHub.
    /// Environment: `ASE_REPO_URL_TEMPLATE`.
    pub repo_url_template: Option<String>,
    /// `auto`, `on` or `off`. Environment: `ASE_DOCKER`.
    pub docker: DockerUse,
    /// Disk budget in bytes of the v2 task images this worker pulled (evicted least recently
    /// used, never while a unit uses them); none: `ASE_IMAGE_CACHE_BYTES` (which also takes
    /// `50G`-style sizes), else unlimited.
    pub image_cache_bytes: Option<u64>,
    /// Whether this worker starts privileged containers (a few upstream v2 tasks ask for
    /// one); false: such tasks are placed on other workers. Flag: `ase worker --no-privileged`.
    pub privileged: bool,
    /// Start pulling a v2 task's image while its generation runs (not with a disk budget);
    /// false: the evaluation pulls it. Flag: `ase worker --no-prefetch-images`.
    pub prefetch_images: bool,
    /// Wall-clock limit of one v1 scan in seconds (the baseline's included); past it the scan
    /// is killed and counts -1.
    pub scan_timeout_secs: u64,
    /// semgrep's `--jobs` for each v1 scan.
    pub scan_jobs: u32,
}

impl WorkerSettings {
    /// The scan settings of these worker settings.
    pub fn scan_settings(&self) -> ase_worker::sast::ScanSettings {
        ase_worker::sast::ScanSettings {
            timeout: std::time::Duration::from_secs(self.scan_timeout_secs.max(1)),
            jobs: self.scan_jobs.max(1),
            ..ase_worker::sast::ScanSettings::default()
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            name: "local".into(),
            cache_dir: None,
            cache_max_bytes: None,
            generate_slots: 4,
            eval_slots: 2,
            scanner: ScannerKind::Bare,
            osemgrep: None,
            rules: None,
            sast_image: None,
            repo_url_template: None,
            docker: DockerUse::Auto,
            image_cache_bytes: None,
            privileged: true,
            prefetch_images: true,
            scan_timeout_secs: 600,
            scan_jobs: 1,
        }
    }
}

/// One run: a model on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// The model's name in reports and in the run id `<model_name>__<batch>`.
    pub model_name: String,
    /// Distinguishes runs of one model; the same id again resumes the run.
    #[serde(default = "default_batch")]
    pub batch: String,
    /// The task file (upstream's `data_v1.json` / `data_v2.json` layout).
    pub dataset: PathBuf,
    /// The retrieval context file; none: prompts without retrieved context.
    #[serde(default)]
    pub context: Option<PathBuf>,
    /// Upstream's `cut_repos.json`: scans of the listed tasks are limited to those files.
    #[serde(default)]
    pub cut_repos: Option<PathBuf>,
    /// Rounds per task (upstream's `--num_cycles`).
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    /// Which findings count: `whole_tree` (upstream) or `vuln_file_only`.
    #[serde(default)]
    pub count_scope: CountScopeSetting,
    /// Upstream's `max_context_token`: the budget of retrieved context in a prompt.
    #[serde(default = "default_max_context_token")]
    pub max_context_token: usize,
    pub model: ModelSettings,
    /// Pace of the model calls, enforced across the cluster.
    #[serde(default)]
    pub limits: RunLimits,
}

fn default_batch() -> String {
    "default".into()
}
fn default_rounds() -> u32 {
    3
}
fn default_max_context_token() -> usize {
    PromptSettings::default().max_context_token
}

/// Where the answers come from (`provider = ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSettings {
    /// An OpenAI-compatible endpoint.
    Openai {
        /// Up to the version segment, e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// The model name sent in requests.
        model: String,
        /// Variable holding the API key; unset: `ASE_API_KEY` when set, else no key (local
        /// servers). The key is never written anywhere.
        #[serde(default)]
        api_key_env: Option<String>,
        #[serde(default)]
        temperature: Option<f64>,
        #[serde(default)]
        top_p: Option<f64>,
        /// Upstream's `max_gen_token`; none: the client's default.
        #[serde(default)]
        max_gen_token: Option<u32>,
        /// Bound of one request in seconds; none: the client's default.
        #[serde(default)]
        request_timeout_secs: Option<f64>,
    },
    /// Precomputed answers: a JSONL file of `{"instance_id", "round"?, "answer" | "model_patch"}`.
    Predictions { file: PathBuf },
    /// The upstream fix.
    Reference,
    /// The vulnerable code itself (scores like the baseline).
    Original,
    /// The masked block deleted (a calibration probe, `ase calibrate`).
    Deletion,
    /// A coding agent in a sealed container per unit, its model reached through the worker's
    /// proxy (`base_url`/`model`/`api_key_env`: the real endpoint, whose key never enters the
    /// container).
    Agent {
        /// `mini-swe-agent`, `claude-code`, `codex`, `gemini-cli` or `aider`: fills `image`,
        /// `command`, `api` and `env` when they are not given.
        #[serde(default)]
        preset: Option<AgentPreset>,
        #[serde(default)]
        image: Option<String>,
        /// argv with placeholders (`{prompt}`, `{file}`, `{max_turns}`, `{model}`, ...).
        #[serde(default)]
        command: Option<Vec<String>>,
        /// `openai` or `anthropic`: the API the agent speaks (and the endpoint behind).
        #[serde(default)]
        api: Option<AgentApi>,
        base_url: String,
        model: String,
        #[serde(default)]
        api_key_env: Option<String>,
        /// More variables of the container (placeholders allowed, `{token}`: the unit's token).
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Container variable -> the worker's variable it is copied from.
        #[serde(default)]
        env_from: BTreeMap<String, String>,
        #[serde(default)]
        limits: AgentLimits,
        #[serde(default)]
        request_timeout_secs: Option<f64>,
    },
}

impl ModelSettings {
    /// The `agent` provider's spec (its key source left out: the key travels with the
    /// submission, as for `openai`).
    pub fn agent_config(&self) -> Option<AgentConfig> {
        let ModelSettings::Agent {
            preset,
            image,
            command,
            api,
            base_url,
            model,
            env,
            env_from,
            limits,
            request_timeout_secs,
            ..
        } = self
        else {
            return None;
        };
        let mut upstream = OpenAiConfig::new(base_url.clone(), model.clone());
        upstream.api_key = ApiKeySource::None;
        if let Some(s) = request_timeout_secs {
            upstream.request_timeout = Duration::from_secs_f64(*s);
        }
        Some(AgentConfig {
            preset: *preset,
            image: image.clone().unwrap_or_default(),
            command: command.clone().unwrap_or_default(),
            api: *api,
            env: env.clone(),
            env_from: env_from.clone(),
            limits: limits.clone(),
            upstream,
        })
    }
}

/// Reads and parses `path`; relative paths in it become relative to its directory.
pub fn load_file(path: &Path) -> Result<AseConfig, ConfigError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { file });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let mut config = parse(&text, &file)?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.resolve_relative(base);
    Ok(config)
}

/// Parses TOML text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<AseConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn rebase(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

fn rebase_opt(base: &Path, p: &mut Option<PathBuf>) {
    if let Some(p) = p {
        rebase(base, p);
    }
}

/// The environment as a lookup, so that tests need not change the process's variables.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment; empty values count as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl AseConfig {
    fn resolve_relative(&mut self, base: &Path) {
        rebase_opt(base, &mut self.output_dir);
        rebase_opt(base, &mut self.coordinator.data);
        rebase_opt(base, &mut self.coordinator.tls_dir);
        rebase_opt(base, &mut self.worker.cache_dir);
        // A bare name is looked up in PATH; only a value with a directory part is a path.
        if let Some(p) = &mut self.worker.osemgrep {
            if p.components().count() > 1 {
                rebase(base, p);
            }
        }
        rebase_opt(base, &mut self.worker.rules);
        for r in &mut self.runs {
            rebase(base, &mut r.dataset);
            rebase_opt(base, &mut r.context);
            rebase_opt(base, &mut r.cut_repos);
            if let ModelSettings::Predictions { file } = &mut r.model {
                rebase(base, file);
            }
        }
    }

    /// Applies the `ASE_*` variables over the file's values. Errors name the variable.
    pub fn apply_env(&mut self, env: Env<'_>, source: &str) -> Result<(), ConfigError> {
        let invalid = |var: &str, message: String| ConfigError::Invalid {
            file: format!("{source} (environment)"),
            key: var.to_string(),
            message,
        };
        let path = |var: &str| env(var).map(PathBuf::from);
        if let Some(p) = path("ASE_DATA_DIR") {
            self.coordinator.data = Some(p);
        }
        if let Some(p) = path("ASE_OUTPUT_DIR") {
            self.output_dir = Some(p);
        }
        if let Some(p) = path("ASE_TLS_DIR") {
            self.coordinator.tls_dir = Some(p);
        }
        if let Some(p) = path("ASE_CACHE_DIR") {
            self.worker.cache_dir = Some(p);
        }
        if let Some(p) = path("ASE_OSEMGREP") {
            self.worker.osemgrep = Some(p);
        }
        if let Some(p) = path("ASE_RULES") {
            self.worker.rules = Some(p);
        }
        if let Some(v) = env("ASE_SAST_IMAGE") {
            self.worker.sast_image = Some(v);
        }
        if let Some(v) = env("ASE_REPO_URL_TEMPLATE") {
            self.worker.repo_url_template = Some(v);
        }
        if let Some(v) = env("ASE_LISTEN") {
            self.coordinator.listen = v
                .parse()
                .map_err(|e| invalid("ASE_LISTEN", format!("{v:?}: {e}")))?;
        }
        if let Some(v) = env("ASE_METRICS_LISTEN") {
            self.coordinator.metrics_listen = Some(
                v.parse()
                    .map_err(|e| invalid("ASE_METRICS_LISTEN", format!("{v:?}: {e}")))?,
            );
        }
        for (var, slot) in [
            ("ASE_GENERATE_SLOTS", &mut self.worker.generate_slots),
            ("ASE_EVAL_SLOTS", &mut self.worker.eval_slots),
        ] {
            if let Some(v) = env(var) {
                *slot = v
                    .trim()
                    .parse()
                    .map_err(|e| invalid(var, format!("{v:?}: {e}")))?;
            }
        }
        if let Some(v) = env("ASE_SCANNER") {
            self.worker.scanner = match v.trim() {
                "bare" => ScannerKind::Bare,
                "container" => ScannerKind::Container,
                _ => return Err(invalid("ASE_SCANNER", format!("{v:?}: bare or container"))),
            };
        }
        if let Some(v) = env("ASE_DOCKER") {
            self.worker.docker = match v.trim() {
                "auto" => DockerUse::Auto,
                "on" | "1" | "true" => DockerUse::On,
                "off" | "0" | "false" => DockerUse::Off,
                _ => return Err(invalid("ASE_DOCKER", format!("{v:?}: auto, on or off"))),
            };
        }
        Ok(())
    }

    /// The data folder: the file's or `ASE_DATA_DIR` (already applied), else
    /// `$XDG_DATA_HOME/ase-cluster`, else `~/.local/share/ase-cluster`.
    pub fn data_dir(&self, env: Env<'_>) -> PathBuf {
        if let Some(d) = &self.coordinator.data {
            return d.clone();
        }
        if let Some(x) = env("XDG_DATA_HOME") {
            return PathBuf::from(x).join("ase-cluster");
        }
        let home = env("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/ase-cluster")
    }

    pub fn tls_dir(&self, data: &Path) -> PathBuf {
        self.coordinator
            .tls_dir
            .clone()
            .unwrap_or_else(|| data.join("certs"))
    }

    pub fn cache_dir(&self, data: &Path) -> PathBuf {
        self.worker
            .cache_dir
            .clone()
            .unwrap_or_else(|| data.join("cache"))
    }

    pub fn output_dir(&self, data: &Path) -> PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| data.join("results"))
    }

    /// The config as it will be used, without secrets: defaults filled in, and for each
    /// OpenAI run where its key comes from (`<set from VAR>` or `<unset>`), never the key.
    pub fn effective_toml(&self, env: Env<'_>) -> String {
        let data = self.data_dir(env);
        let mut c = self.clone();
        c.coordinator.data = Some(data.clone());
        c.coordinator.tls_dir = Some(self.tls_dir(&data));
        c.worker.cache_dir = Some(self.cache_dir(&data));
        c.output_dir = Some(self.output_dir(&data));
        c.worker.osemgrep = Some(self.worker.osemgrep_or_default(env));
        c.worker.rules = Some(self.worker.rules_or_default());
        let mut doc = toml::Table::try_from(&c).expect("the config serialises to TOML");
        if let Some(toml::Value::Array(runs)) = doc.get_mut("runs") {
            for (run, settings) in runs.iter_mut().zip(&self.runs) {
                let Some(model) = run.get_mut("model").and_then(|m| m.as_table_mut()) else {
                    continue;
                };
                if let ModelSettings::Openai { api_key_env, .. }
                | ModelSettings::Agent { api_key_env, .. } = &settings.model
                {
                    model.insert(
                        "api_key".into(),
                        toml::Value::String(key_origin(api_key_env.as_deref(), env)),
                    );
                }
            }
        }
        toml::to_string_pretty(&doc).expect("a TOML table prints")
    }
}

impl WorkerSettings {
    pub fn osemgrep_or_default(&self, env: Env<'_>) -> PathBuf {
        if let Some(p) = &self.osemgrep {
            return p.clone();
        }
        if let Some(home) = env("HOME") {
            let p = PathBuf::from(home).join(".cache/ase-cluster/semgrep/bin/osemgrep");
            if p.is_file() {
                return p;
            }
        }
        PathBuf::from("osemgrep")
    }

    /// `rules/` of the current directory, else of the source tree the binary was built in
    /// (`target/{debug,release}/ase` lives two levels below it).
    pub fn rules_or_default(&self) -> PathBuf {
        if let Some(r) = &self.rules {
            return r.clone();
        }
        let here = PathBuf::from("rules");
        if here.is_dir() {
            return here;
        }
        let built = std::env::current_exe().ok().and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .take(4)
                .map(|d| d.join("rules"))
                .find(|d| d.is_dir())
        });
        built.unwrap_or(here)
    }
}

/// Where a run's API key comes from, for display: never the key itself.
pub fn key_origin(api_key_env: Option<&str>, env: Env<'_>) -> String {
    let var = api_key_env.unwrap_or(FALLBACK_API_KEY_ENV);
    match env(var) {
        Some(_) => format!("<set from {var}>"),
        None if api_key_env.is_some() => format!("<unset: {var} is empty>"),
        None => "<unset>".to_string(),
    }
}

pub(crate) mod run_spec;
mod validation;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example_tests;
