//! Checking a loaded config: what parsing cannot, every problem of the first kind found,
//! each naming its key and the file.

use super::*;

impl AseConfig {
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
                ModelSettings::Reference | ModelSettings::Original | ModelSettings::Deletion => {}
                ModelSettings::Agent {
                    base_url,
                    api_key_env,
                    env_from,
                    ..
                } => {
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        problems.push(invalid(
                            key("model.base_url"),
                            format!("{base_url:?} is not an http(s) URL"),
                        ));
                    }
                    let key_var = api_key_env.as_deref().unwrap_or(FALLBACK_API_KEY_ENV);
                    if env_from.values().any(|v| v == key_var) {
                        problems.push(invalid(
                            key("model.env_from"),
                            format!("copies {key_var}, the endpoint's key, into the container"),
                        ));
                    } else if let Err(e) = r.model.agent_config().expect("an agent").resolve() {
                        problems.push(invalid(key("model"), e.to_string()));
                    }
                }
            }
        }
        ConfigError::all(problems)
    }
}
