//! Registry credentials for a pull, found where `docker login` leaves them or in named
//! environment variables. Read at each pull (a rotated login is picked up without a restart);
//! their secret parts never reach a log, an error or a `Debug` output.
//!
//! Order: `ASE_REGISTRY_USERNAME` + `ASE_REGISTRY_PASSWORD` (for every registry, or only for
//! `ASE_REGISTRY_SERVER` when it is set), then the `auths` entry of the registry in
//! `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`): `auth` (base64 of
//! `user:password`), `username`/`password`, or `identitytoken`. Credential helpers
//! (`credsStore`, `credHelpers`) are not run: their registries pull anonymously.

use std::path::{Path, PathBuf};

use base64::Engine;
use bollard::auth::DockerCredentials;

use super::reference::DOCKER_HUB;

pub const USERNAME_ENV: &str = "ASE_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "ASE_REGISTRY_PASSWORD";
pub const SERVER_ENV: &str = "ASE_REGISTRY_SERVER";
pub const DOCKER_CONFIG_ENV: &str = "DOCKER_CONFIG";

/// Where credentials are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSource {
    /// The directory holding `config.json`; None: no config file.
    pub docker_config_dir: Option<PathBuf>,
    /// Whether the `ASE_REGISTRY_*` variables are read.
    pub environment: bool,
}

impl CredentialSource {
    /// `DOCKER_CONFIG`, else `$HOME/.docker`, and the environment variables: what the worker
    /// process uses.
    pub fn from_env() -> Self {
        Self {
            docker_config_dir: config_dir_from(
                std::env::var_os(DOCKER_CONFIG_ENV),
                std::env::var_os("HOME"),
            ),
            environment: true,
        }
    }

    /// Only the config file in `dir` (tests, and workers told where it is).
    pub fn config_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            docker_config_dir: Some(dir.into()),
            environment: false,
        }
    }

    /// No credentials at all: anonymous pulls.
    pub fn anonymous() -> Self {
        Self {
            docker_config_dir: None,
            environment: false,
        }
    }

    /// The credentials for `registry` (`docker.io`, `127.0.0.1:5000`), if any.
    pub fn lookup(&self, registry: &str) -> Result<Option<RegistryAuth>, CredentialsError> {
        if self.environment {
            if let Some(auth) = from_environment(registry) {
                return Ok(Some(auth));
            }
        }
        let Some(dir) = &self.docker_config_dir else {
            return Ok(None);
        };
        let path = dir.join("config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CredentialsError {
                    path,
                    why: format!("cannot be read: {e}"),
                })
            }
        };
        from_config(&text, registry).map_err(|why| CredentialsError { path, why })
    }
}

/// `DOCKER_CONFIG` wins over `$HOME/.docker`, as the docker CLI has it.
pub fn config_dir_from(
    docker_config: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    match docker_config.filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => home
            .filter(|v| !v.is_empty())
            .map(|h| Path::new(&h).join(".docker")),
    }
}

/// The config file cannot be used. Names the file; never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry credentials file {path}: {why}")]
pub struct CredentialsError {
    pub path: PathBuf,
    pub why: String,
}

/// Credentials of one registry. `Debug` shows who, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub registry: String,
    pub username: Option<String>,
    secret: Secret,
}

#[derive(Clone, PartialEq, Eq)]
enum Secret {
    Password(String),
    IdentityToken(String),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl RegistryAuth {
    pub fn password(registry: &str, username: &str, password: &str) -> Self {
        Self {
            registry: registry.to_string(),
            username: Some(username.to_string()),
            secret: Secret::Password(password.to_string()),
        }
    }

    /// What the daemon is sent (X-Registry-Auth).
    pub fn to_docker(&self) -> DockerCredentials {
        let mut c = DockerCredentials {
            username: self.username.clone(),
            serveraddress: Some(server_address(&self.registry)),
            ..Default::default()
        };
        match &self.secret {
            Secret::Password(p) => c.password = Some(p.clone()),
            Secret::IdentityToken(t) => c.identitytoken = Some(t.clone()),
        }
        c
    }

    /// Replaces every appearance of the secret (and its base64 forms) in `text`: daemon and
    /// registry messages are quoted in errors, and none of them may carry it.
    pub fn redact(&self, text: &str) -> String {
        let secret = match &self.secret {
            Secret::Password(s) | Secret::IdentityToken(s) => s,
        };
        if secret.is_empty() {
            return text.to_string();
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let user_pass = format!("{}:{secret}", self.username.as_deref().unwrap_or_default());
        let mut out = text.to_string();
        for needle in [b64.encode(&user_pass), b64.encode(secret), secret.clone()] {
            out = out.replace(&needle, "<redacted>");
        }
        out
    }
}

/// How the daemon names the registry in a login (Docker Hub keeps its historical address).
fn server_address(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// `https://index.docker.io/v1/`, `http://127.0.0.1:5000/v2/`, `127.0.0.1:5000` → the host.
fn normalise_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

fn from_environment(registry: &str) -> Option<RegistryAuth> {
    let username = std::env::var(USERNAME_ENV).ok().filter(|v| !v.is_empty())?;
    let password = std::env::var(PASSWORD_ENV).ok().filter(|v| !v.is_empty())?;
    if let Ok(server) = std::env::var(SERVER_ENV) {
        if !server.is_empty() && normalise_key(&server) != registry {
            return None;
        }
    }
    Some(RegistryAuth::password(registry, &username, &password))
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The entry of `registry` in a config file's text. Errors never quote the file's content.
pub fn from_config(text: &str, registry: &str) -> Result<Option<RegistryAuth>, String> {
    let file: ConfigFile = serde_json::from_str(text).map_err(|e| {
        // serde's message may quote a value; keep only where it is.
        format!("not valid JSON (line {}, column {})", e.line(), e.column())
    })?;
    let Some((key, entry)) = file
        .auths
        .iter()
        .find(|(k, _)| normalise_key(k) == registry)
    else {
        return Ok(None);
    };
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth {
            registry: registry.to_string(),
            username: entry.username.clone(),
            secret: Secret::IdentityToken(token.clone()),
        }));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("auths.{key:?}.auth is not base64 of user:password"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths.{key:?}.auth is not base64 of user:password"))?;
        return Ok(Some(RegistryAuth::password(registry, user, pass)));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(RegistryAuth::password(registry, u, p))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    #[test]
    fn an_auths_entry_is_found_by_its_registry_whatever_its_spelling() {
        let auth = B64.encode("ase:s3cr3t-pw");
        let text = format!(
            r#"{{"auths": {{"http://127.0.0.1:5000/v2/": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "hubpw"}}}},
                "credsStore": "desktop"}}"#
        );
        let local = from_config(&text, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.username.as_deref(), Some("ase"));
        assert_eq!(local.to_docker().password.as_deref(), Some("s3cr3t-pw"));
        assert_eq!(
            local.to_docker().serveraddress.as_deref(),
            Some("127.0.0.1:5000")
        );
        let hub = from_config(&text, DOCKER_HUB).unwrap().unwrap();
        assert_eq!(hub.to_docker().password.as_deref(), Some("hubpw"));
        assert_eq!(
            hub.to_docker().serveraddress.as_deref(),
            Some("https://index.docker.io/v1/")
        );
        assert_eq!(from_config(&text, "ghcr.io").unwrap(), None);
    }

    #[test]
    fn secrets_stay_out_of_debug_errors_and_quoted_messages() {
        let a = RegistryAuth::password("r:1", "ase", "s3cr3t-pw");
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let msg = format!("denied for s3cr3t-pw ({})", B64.encode("ase:s3cr3t-pw"));
        let red = a.redact(&msg);
        assert!(!red.contains("s3cr3t") && !red.contains(&B64.encode("ase:s3cr3t-pw")));
        // A broken file is named, its content never quoted.
        let e = from_config(r#"{"auths": {"x": {"auth": "s3cr3t-pw"}}}"#, "x").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = from_config(r#"{"auths": s3cr3t-pw"#, "x").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn docker_config_wins_over_home() {
        assert_eq!(
            config_dir_from(Some("/cfg".into()), Some("/home/u".into())),
            Some(PathBuf::from("/cfg"))
        );
        assert_eq!(
            config_dir_from(None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.docker"))
        );
        assert_eq!(config_dir_from(Some("".into()), None), None);
    }

    #[test]
    fn a_missing_config_file_means_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let src = CredentialSource::config_dir(dir.path());
        assert_eq!(src.lookup("127.0.0.1:5000").unwrap(), None);
    }
}
