//! The HTTPS token of a cache's sources, handed to git through its environment (never on a
//! command line, where other users and logs would see it) and only to the template's own host.

use super::names::is_url_repo;
use super::{RepoCache, RepoCacheConfig};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The `http.extraHeader` value GitHub accepts for a token over HTTPS.
fn basic_auth_header(token: &str) -> String {
    let basic = STANDARD.encode(format!("x-access-token:{token}"));
    format!("Authorization: Basic {basic}")
}

fn https_host(url: &str) -> &str {
    url.strip_prefix("https://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

impl RepoCache {
    /// Environment that hands an HTTPS token to git without putting it on a command line.
    /// Only for URLs made from the template: a repo given as its own URL may live on another
    /// host, which must never see the token.
    pub(super) fn auth_env(&self, url: &str) -> Vec<(String, String)> {
        auth_env_for(&self.inner.cfg, url)
    }
}

/// [`RepoCache::auth_env`] for a cache's settings alone (a preflight probe has no cache).
pub(super) fn auth_env_for(cfg: &RepoCacheConfig, url: &str) -> Vec<(String, String)> {
    let template = &cfg.url_template;
    if is_url_repo(url) && !template.starts_with("https://") {
        return vec![];
    }
    if https_host(template) != https_host(url) {
        return vec![];
    }
    let Some(var) = &cfg.token_env else {
        return vec![];
    };
    let Ok(token) = std::env::var(var) else {
        return vec![];
    };
    if token.is_empty() || !url.starts_with("https://") {
        return vec![];
    }
    vec![
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
        ("GIT_CONFIG_VALUE_0".into(), basic_auth_header(&token)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HTTP Basic wants RFC 4648 base64 with its standard alphabet and padding.
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(STANDARD.encode(i.as_bytes()), o);
        }
        assert_eq!(
            basic_auth_header("tok"),
            "Authorization: Basic eC1hY2Nlc3MtdG9rZW46dG9r"
        );
    }

    #[test]
    fn url_repos_are_cloned_from_themselves_and_never_get_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RepoCacheConfig::new(dir.path());
        cfg.token_env = Some("ASE_TEST_URL_REPO_TOKEN".into());
        std::env::set_var("ASE_TEST_URL_REPO_TOKEN", "secret-token");
        let cache = RepoCache::open(cfg).unwrap();
        let gitlab = "https://gitlab.com/group/project.git";
        assert_eq!(cache.source_url(gitlab), gitlab);
        assert!(cache.auth_env(&cache.source_url(gitlab)).is_empty());
        let github = cache.source_url("owner/name");
        assert_eq!(github, "https://github.com/owner/name.git");
        assert!(!cache.auth_env(&github).is_empty());
        // A URL repo on the template's own host may use it.
        assert!(!cache
            .auth_env("https://github.com/other/repo.git")
            .is_empty());
    }
}
