//! The one configuration file of `ase run` (and optionally of `ase coordinator`/`ase worker`):
//! a typed TOML document loaded once, with defaults, `ASE_*` environment overrides, checks
//! that name the key and the file, and a printable effective form without secrets.
//!
//! Precedence, highest first: command-line flags, `ASE_*` environment variables, the file,
//! the defaults below. Relative paths in the file are relative to the file's directory, so a
//! config and its datasets can move together.
//!
//! Every key is documented here and in `examples/ase.toml`.

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

    /// Checks what parsing cannot: every problem of the first kind found, naming its key.
    pub fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key,
            message,
        };
        let mut problems = Vec::new();
        let c = &self.coordinator;
        if c.heartbeat_ms == 0 {
            problems.push(invalid(
                "coordinator.heartbeat_ms".into(),
                "must be positive".into(),
            ));
        }
        if c.lease_ttl_ms <= c.heartbeat_ms {
            problems.push(invalid(
                "coordinator.lease_ttl_ms".into(),
                format!(
                    "{} must be longer than coordinator.heartbeat_ms ({})",
                    c.lease_ttl_ms, c.heartbeat_ms
                ),
            ));
        }
        let w = &self.worker;
        if let Err(e) = ase_proto::certs::check_name(ase_proto::identity::PeerRole::Worker, &w.name)
        {
            problems.push(invalid("worker.name".into(), e.to_string()));
        }
        if w.generate_slots == 0 {
            problems.push(invalid(
                "worker.generate_slots".into(),
                "must be at least 1".into(),
            ));
        }
        if w.eval_slots == 0 {
            problems.push(invalid(
                "worker.eval_slots".into(),
                "must be at least 1".into(),
            ));
        }
        if w.scanner == ScannerKind::Container {
            if w.sast_image.is_none() {
                problems.push(invalid(
                    "worker.sast_image".into(),
                    "required with worker.scanner = \"container\"".into(),
                ));
            }
            if w.docker == DockerUse::Off {
                problems.push(invalid(
                    "worker.docker".into(),
                    "\"off\" with worker.scanner = \"container\", which needs Docker".into(),
                ));
            }
        }
        if let Some(t) = &w.repo_url_template {
            if !t.contains("{repo}") {
                problems.push(invalid(
                    "worker.repo_url_template".into(),
                    format!("{t:?} has no {{repo}}"),
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for (i, r) in self.runs.iter().enumerate() {
            let key = |k: &str| format!("runs[{i}].{k}");
            match ase_common::run_name::run_name(&r.model_name, &r.batch) {
                Err(e) => problems.push(invalid(key(e.field()), e.to_string())),
                Ok(run_id) if !ids.insert(run_id.clone()) => problems.push(invalid(
                    key("batch"),
                    format!("run {run_id} is listed twice"),
                )),
                Ok(_) => {}
            }
            if r.rounds == 0 {
                problems.push(invalid(key("rounds"), "must be at least 1".into()));
            }
            if r.max_context_token == 0 {
                problems.push(invalid(key("max_context_token"), "must be positive".into()));
            }
            for (k, p) in [
                ("dataset", Some(&r.dataset)),
                ("context", r.context.as_ref()),
                ("cut_repos", r.cut_repos.as_ref()),
            ] {
                if let Some(p) = p {
                    if !p.is_file() {
                        problems.push(invalid(key(k), format!("{} is not a file", p.display())));
                    }
                }
            }
            match &r.model {
                ModelSettings::Openai {
                    base_url,
                    model,
                    api_key_env,
                    temperature,
                    top_p,
                    request_timeout_secs,
                    ..
                } => {
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        problems.push(invalid(
                            key("model.base_url"),
                            format!("{base_url:?} is not an http(s) URL"),
                        ));
                    }
                    if model.trim().is_empty() {
                        problems.push(invalid(key("model.model"), "is empty".into()));
                    }
                    if let Some(var) = api_key_env {
                        if var.is_empty() || var.contains(['=', '\0']) {
                            problems.push(invalid(
                                key("model.api_key_env"),
                                format!("{var:?} is not a variable name"),
                            ));
                        }
                    }
                    if temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                        problems.push(invalid(key("model.temperature"), "must be in 0..=2".into()));
                    }
                    if top_p.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                        problems.push(invalid(key("model.top_p"), "must be in 0..=1".into()));
                    }
                    if request_timeout_secs.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
                        problems.push(invalid(
                            key("model.request_timeout_secs"),
                            "must be a positive number of seconds".into(),
                        ));
                    }
                }
                ModelSettings::Predictions { file } => {
                    if !file.is_file() {
                        problems.push(invalid(
                            key("model.file"),
                            format!("{} is not a file", file.display()),
                        ));
                    }
                }
                ModelSettings::Reference | ModelSettings::Original => {}
            }
        }
        ConfigError::all(problems)
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
                if let ModelSettings::Openai { api_key_env, .. } = &settings.model {
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

impl RunSettings {
    pub fn run_id(&self) -> String {
        format!("{}__{}", self.model_name, self.batch)
    }

    /// The API key of this run's model calls (from `api_key_env`, else `ASE_API_KEY`).
    pub fn api_key(&self, env: Env<'_>) -> Option<String> {
        match &self.model {
            ModelSettings::Openai { api_key_env, .. } => {
                env(api_key_env.as_deref().unwrap_or(FALLBACK_API_KEY_ENV))
            }
            _ => None,
        }
    }

    /// The spec the coordinator hands to workers. Reads the predictions and `cut_repos` files;
    /// errors name the run and the file.
    pub fn run_spec(&self, source: &str) -> Result<RunSpec, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: format!("runs[{}].{key}", self.run_id()),
            message,
        };
        let model = match &self.model {
            ModelSettings::Openai {
                base_url,
                model,
                temperature,
                top_p,
                max_gen_token,
                request_timeout_secs,
                ..
            } => {
                let mut config = OpenAiConfig::new(base_url.clone(), model.clone());
                // The key travels with the submission (memory only) and reaches the worker in
                // its lease; the spec names no source, so nothing on disk points at it.
                config.api_key = ApiKeySource::None;
                config.temperature = *temperature;
                config.top_p = *top_p;
                if let Some(n) = max_gen_token {
                    config.max_gen_token = *n;
                }
                if let Some(s) = request_timeout_secs {
                    config.request_timeout = Duration::from_secs_f64(*s);
                }
                ModelSpec::Openai { config }
            }
            ModelSettings::Predictions { file } => ModelSpec::Predictions {
                entries: read_jsonl(file).map_err(|m| invalid("model.file", m))?,
            },
            ModelSettings::Reference => ModelSpec::Reference,
            ModelSettings::Original => ModelSpec::Original,
        };
        let (cut_repos, use_cut_repos) = match &self.cut_repos {
            None => (BTreeMap::new(), false),
            Some(p) => (
                // The one reader: bounded, every entry checked, errors naming entry and field.
                ase_common::dataset::load_cut_repos(p)
                    .map_err(|e| invalid("cut_repos", e.to_string()))?
                    .files,
                true,
            ),
        };
        Ok(RunSpec {
            model_name: self.model_name.clone(),
            batch: self.batch.clone(),
            rounds: self.rounds,
            model,
            prompt: PromptSettings {
                max_context_token: self.max_context_token,
                ..PromptSettings::default()
            },
            evaluation: EvaluationSettings {
                count_scope: self.count_scope,
                cut_repos,
                use_cut_repos,
            },
            limits: self.limits.clone(),
        })
    }
}

/// Bytes of a predictions file read into a spec.
const MAX_PREDICTIONS_BYTES: u64 = 32 << 20;

fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_PREDICTIONS_BYTES {
        return Err(format!(
            "{}: larger than {MAX_PREDICTIONS_BYTES} bytes",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            if !v.is_object() {
                return Err(format!(
                    "{} line {}: not a JSON object",
                    path.display(),
                    i + 1
                ));
            }
            Ok(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &str = r#"
output_dir = "out"

[coordinator]
listen = "127.0.0.1:7700"
data = "state"
metrics_listen = "127.0.0.1:9700"
heartbeat_ms = 500
lease_ttl_ms = 3000

[worker]
name = "w1"
generate_slots = 8
eval_slots = 3
scanner = "bare"
rules = "my-rules"
repo_url_template = "file:///srv/{repo}"
docker = "off"

[[runs]]
model_name = "gpt-x"
batch = "b1"
dataset = "tasks.json"
context = "ctx.json"
rounds = 2
[runs.model]
provider = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "gpt-x"
api_key_env = "MY_KEY"
temperature = 0.2
[runs.limits]
max_inflight_model_calls = 2
requests_per_minute = 60
max_attempts = 5

[[runs]]
model_name = "ref"
dataset = "tasks.json"
model = { provider = "reference" }
"#;

    fn write_full(dir: &Path) -> PathBuf {
        std::fs::write(dir.join("tasks.json"), "[]").unwrap();
        std::fs::write(dir.join("ctx.json"), "[]").unwrap();
        let p = dir.join("ase.toml");
        std::fs::write(&p, FULL).unwrap();
        p
    }

    #[test]
    fn a_full_file_parses_with_paths_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_file(&write_full(dir.path())).unwrap();
        assert_eq!(c.output_dir, Some(dir.path().join("out")));
        assert_eq!(c.coordinator.data, Some(dir.path().join("state")));
        assert_eq!(c.coordinator.listen.port(), 7700);
        assert_eq!(c.coordinator.lease_ttl_ms, 3000);
        assert_eq!(c.worker.name, "w1");
        assert_eq!(c.worker.generate_slots, 8);
        assert_eq!(c.worker.docker, DockerUse::Off);
        assert_eq!(c.worker.rules, Some(dir.path().join("my-rules")));
        assert_eq!(c.runs.len(), 2);
        let r = &c.runs[0];
        assert_eq!(r.run_id(), "gpt-x__b1");
        assert_eq!(r.dataset, dir.path().join("tasks.json"));
        assert_eq!(r.rounds, 2);
        assert_eq!(r.limits.requests_per_minute, 60);
        assert_eq!(r.limits.max_attempts, 5);
        c.validate("ase.toml").unwrap();
        let spec = r.run_spec("ase.toml").unwrap();
        match &spec.model {
            ModelSpec::Openai { config } => {
                assert_eq!(config.base_url, "http://127.0.0.1:9/v1");
                assert_eq!(config.temperature, Some(0.2));
                assert_eq!(config.api_key, ApiKeySource::None);
            }
            other => panic!("{other:?}"),
        }
        // The spec is what workers accept.
        let json = serde_json::to_vec(&spec).unwrap();
        let back: RunSpec = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.run_name(), "gpt-x__b1");
        assert_eq!(c.runs[1].run_id(), "ref__default");
        assert_eq!(c.runs[1].rounds, 3);
        assert_eq!(c.runs[1].model, ModelSettings::Reference);
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = parse("", "empty.toml").unwrap();
        assert_eq!(c, AseConfig::default());
        assert_eq!(c.coordinator.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(c.coordinator.heartbeat_ms, 2_000);
        assert_eq!(c.worker.generate_slots, 4);
        assert_eq!(c.worker.eval_slots, 2);
        assert_eq!(c.worker.scanner, ScannerKind::Bare);
        assert_eq!(c.worker.docker, DockerUse::Auto);
        assert!(c.runs.is_empty());
        c.validate("empty.toml").unwrap();
    }

    #[test]
    fn the_data_folder_defaults_follow_xdg_then_home() {
        let c = AseConfig::default();
        let xdg = env_of(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(c.data_dir(&xdg), PathBuf::from("/x/ase-cluster"));
        let home = env_of(&[("HOME", "/h")]);
        let data = c.data_dir(&home);
        assert_eq!(data, PathBuf::from("/h/.local/share/ase-cluster"));
        assert_eq!(c.tls_dir(&data), data.join("certs"));
        assert_eq!(c.cache_dir(&data), data.join("cache"));
        assert_eq!(c.output_dir(&data), data.join("results"));
        let mut c = AseConfig::default();
        c.apply_env(&env_of(&[("ASE_DATA_DIR", "/d")]), "t")
            .unwrap();
        assert_eq!(c.data_dir(&xdg), PathBuf::from("/d"));
    }

    #[test]
    fn environment_variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = load_file(&write_full(dir.path())).unwrap();
        let env = env_of(&[
            ("ASE_DATA_DIR", "/env/data"),
            ("ASE_OUTPUT_DIR", "/env/out"),
            ("ASE_LISTEN", "127.0.0.1:7801"),
            ("ASE_GENERATE_SLOTS", "16"),
            ("ASE_EVAL_SLOTS", "5"),
            ("ASE_DOCKER", "on"),
            ("ASE_SCANNER", "container"),
            ("ASE_SAST_IMAGE", "ase-sast:abc"),
            ("ASE_REPO_URL_TEMPLATE", "file:///mirror/{repo}"),
            ("ASE_OSEMGREP", "/opt/osemgrep"),
        ]);
        c.apply_env(&env, "ase.toml").unwrap();
        assert_eq!(c.coordinator.data, Some(PathBuf::from("/env/data")));
        assert_eq!(c.output_dir, Some(PathBuf::from("/env/out")));
        assert_eq!(c.coordinator.listen.port(), 7801);
        assert_eq!(c.worker.generate_slots, 16);
        assert_eq!(c.worker.eval_slots, 5);
        assert_eq!(c.worker.docker, DockerUse::On);
        assert_eq!(c.worker.scanner, ScannerKind::Container);
        assert_eq!(c.worker.sast_image.as_deref(), Some("ase-sast:abc"));
        assert_eq!(
            c.worker.repo_url_template.as_deref(),
            Some("file:///mirror/{repo}")
        );
        assert_eq!(
            c.worker.osemgrep_or_default(&env),
            PathBuf::from("/opt/osemgrep")
        );
        c.validate("ase.toml").unwrap();
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let mut c = AseConfig::default();
        let err = c
            .apply_env(&env_of(&[("ASE_EVAL_SLOTS", "many")]), "ase.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ASE_EVAL_SLOTS"), "{err}");
        assert!(err.contains("many"), "{err}");
        let err = c
            .apply_env(&env_of(&[("ASE_DOCKER", "maybe")]), "ase.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ASE_DOCKER"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file() {
        let err = parse("[coordinator]\nlisten_on = \"127.0.0.1:1\"\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("my.toml: "), "{err}");
        assert!(err.contains("listen_on"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named_with_the_key() {
        let err = parse("[worker]\ngenerate_slots = \"four\"\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.toml"), "{err}");
        assert!(err.contains("generate_slots"), "{err}");
    }

    #[test]
    fn a_run_without_a_model_is_refused() {
        let err = parse(
            "[[runs]]\nmodel_name = \"m\"\ndataset = \"d.json\"\n",
            "my.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model"), "{err}");
    }

    #[test]
    fn validation_names_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_full(dir.path());
        let base = load_file(&path).unwrap();
        type Change = Box<dyn Fn(&mut AseConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.coordinator.lease_ttl_ms = 100),
                "coordinator.lease_ttl_ms",
            ),
            (Box::new(|c| c.worker.eval_slots = 0), "worker.eval_slots"),
            (
                Box::new(|c| c.worker.name = "bad name".into()),
                "worker.name",
            ),
            (Box::new(|c| c.runs[0].rounds = 0), "runs[0].rounds"),
            (
                Box::new(|c| c.runs[1].dataset = PathBuf::from("/nonexistent/t.json")),
                "runs[1].dataset",
            ),
            (Box::new(|c| c.runs[1].batch = "b1".into()), ""),
            (
                Box::new(|c| c.runs[1].batch = "b".repeat(5_000)),
                "runs[1].batch",
            ),
            (
                Box::new(|c| c.runs[0].batch = "a/b".into()),
                "runs[0].batch",
            ),
            (
                Box::new(|c| c.runs[0].model_name = "m\u{202e}".into()),
                "runs[0].model_name",
            ),
            (
                Box::new(|c| {
                    c.runs[0].model = ModelSettings::Openai {
                        base_url: "ftp://x".into(),
                        model: "m".into(),
                        api_key_env: None,
                        temperature: None,
                        top_p: None,
                        max_gen_token: None,
                        request_timeout_secs: None,
                    }
                }),
                "runs[0].model.base_url",
            ),
            (
                Box::new(|c| c.worker.repo_url_template = Some("https://x/".into())),
                "worker.repo_url_template",
            ),
            (
                Box::new(|c| c.worker.scanner = ScannerKind::Container),
                "worker.sast_image",
            ),
        ];
        for (change, key) in cases {
            let mut c = base.clone();
            change(&mut c);
            if key.is_empty() {
                // Not an error: another batch of another model.
                c.validate("ase.toml").unwrap();
                continue;
            }
            let err = c.validate("ase.toml").unwrap_err().to_string();
            assert!(err.starts_with("ase.toml: key `"), "{err}");
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
        // Every problem is reported, each with its key, not only the first.
        let mut many = base.clone();
        many.coordinator.heartbeat_ms = 0;
        many.worker.eval_slots = 0;
        many.runs[0].rounds = 0;
        many.runs[1].batch = "a/b".into();
        let err = many.validate("ase.toml").unwrap_err();
        assert!(
            matches!(err, ConfigError::Several(ref p) if p.len() == 4),
            "{err}"
        );
        let text = err.to_string();
        for key in [
            "coordinator.heartbeat_ms",
            "worker.eval_slots",
            "runs[0].rounds",
            "runs[1].batch",
        ] {
            assert!(
                text.contains(&format!("ase.toml: key `{key}`")),
                "{key}: {text}"
            );
        }
        assert_eq!(text.lines().count(), 4, "{text}");
        let mut twice = base.clone();
        twice.runs.push(twice.runs[0].clone());
        let err = twice.validate("ase.toml").unwrap_err().to_string();
        assert!(err.contains("gpt-x__b1 is listed twice"), "{err}");
    }

    #[test]
    fn the_effective_config_shows_where_the_key_is_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_file(&write_full(dir.path())).unwrap();
        let secret = "sk-do-not-print-123";
        let set = env_of(&[("MY_KEY", secret), ("HOME", "/h")]);
        let text = c.effective_toml(&set);
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("api_key = \"<set from MY_KEY>\""), "{text}");
        // Defaults are spelled out.
        assert!(text.contains("eval_slots = 3"), "{text}");
        assert!(text.contains("cache_dir = "), "{text}");
        assert!(text.contains("max_attempts = 5"), "{text}");
        let unset = env_of(&[("HOME", "/h")]);
        let text = c.effective_toml(&unset);
        assert!(
            text.contains("api_key = \"<unset: MY_KEY is empty>\""),
            "{text}"
        );
        // The printed form is itself a valid config.
        let back = parse(&text.replace("api_key = ", "# api_key = "), "printed").unwrap();
        assert_eq!(back.runs.len(), 2);
    }

    #[test]
    fn the_fallback_key_variable_is_ase_api_key() {
        let run = RunSettings {
            model_name: "m".into(),
            batch: "b".into(),
            dataset: "d".into(),
            context: None,
            cut_repos: None,
            rounds: 1,
            count_scope: CountScopeSetting::WholeTree,
            max_context_token: 10,
            model: ModelSettings::Openai {
                base_url: "http://h/v1".into(),
                model: "m".into(),
                api_key_env: None,
                temperature: None,
                top_p: None,
                max_gen_token: None,
                request_timeout_secs: None,
            },
            limits: RunLimits::default(),
        };
        let env = env_of(&[("ASE_API_KEY", "k1")]);
        assert_eq!(run.api_key(&env).as_deref(), Some("k1"));
        assert_eq!(key_origin(None, &env), "<set from ASE_API_KEY>");
        assert_eq!(key_origin(None, &env_of(&[])), "<unset>");
        assert_eq!(run.api_key(&env_of(&[])), None);
    }

    #[test]
    fn predictions_are_read_into_the_spec_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("preds.jsonl");
        std::fs::write(
            &p,
            "{\"instance_id\":\"t1\",\"answer\":\"x\"}\n\n{\"instance_id\":\"t2\",\"answer\":\"y\"}\n",
        )
        .unwrap();
        let mut run: RunSettings = toml::from_str(&format!(
            "model_name = \"p\"\ndataset = \"d\"\nmodel = {{ provider = \"predictions\", file = {:?} }}\n",
            p.display().to_string()
        ))
        .unwrap();
        match run.run_spec("c.toml").unwrap().model {
            ModelSpec::Predictions { entries } => assert_eq!(entries.len(), 2),
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, "{\"instance_id\":\"t1\"}\nnot json\n").unwrap();
        let err = run.run_spec("c.toml").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("runs[p__default].model.file"), "{err}");
        run.model = ModelSettings::Original;
        assert_eq!(run.run_spec("c.toml").unwrap().model, ModelSpec::Original);
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/ase.toml");

    #[test]
    fn the_example_file_parses() {
        let c = parse(EXAMPLE, "examples/ase.toml").unwrap();
        assert_eq!(c.runs.len(), 2);
        assert_eq!(c.runs[0].run_id(), "gpt-4o-mini__v1-full");
        assert!(matches!(c.runs[1].model, ModelSettings::Predictions { .. }));
    }

    /// Every key of every table appears in the example (set or commented out), so the example
    /// documents them all.
    #[test]
    fn the_example_file_mentions_every_key() {
        let mut c = parse(EXAMPLE, "examples/ase.toml").unwrap();
        // Fill every optional key so that it serialises.
        c.output_dir = Some("o".into());
        c.coordinator.data = Some("d".into());
        c.coordinator.tls_dir = Some("t".into());
        c.coordinator.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 1)));
        c.worker.cache_dir = Some("c".into());
        c.worker.cache_max_bytes = Some(1);
        c.worker.osemgrep = Some("o".into());
        c.worker.rules = Some("r".into());
        c.worker.sast_image = Some("i".into());
        c.worker.repo_url_template = Some("{repo}".into());
        c.runs[0].model = ModelSettings::Openai {
            base_url: "u".into(),
            model: "m".into(),
            api_key_env: Some("K".into()),
            temperature: Some(0.0),
            top_p: Some(1.0),
            max_gen_token: Some(1),
            request_timeout_secs: Some(1.0),
        };
        let doc = toml::Table::try_from(&c).unwrap();
        let mut keys = Vec::new();
        fn walk(t: &toml::Table, keys: &mut Vec<String>) {
            for (k, v) in t {
                keys.push(k.clone());
                match v {
                    toml::Value::Table(t) => walk(t, keys),
                    toml::Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_table())
                        .for_each(|t| walk(t, keys)),
                    _ => {}
                }
            }
        }
        walk(&doc, &mut keys);
        assert!(keys.len() > 40, "{keys:?}");
        for k in keys {
            let documented = EXAMPLE.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{k} ="))
                    || l.starts_with(&format!("[{k}"))
                    || l.starts_with(&format!("[[{k}"))
                    || l.starts_with(&format!("[runs.{k}"))
                    || l.contains(&format!("{k} = "))
            });
            assert!(documented, "key `{k}` is not in examples/ase.toml");
        }
    }
}
