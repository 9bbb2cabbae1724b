//! Repo names as tasks give them: `owner/name`, cloned from the configured URL template, or (a
//! few upstream v2 tasks, on GitLab) a full `https://` URL, cloned from itself. Each is stored
//! under a directory-safe, collision-free key.

use super::{RepoCache, RepoCacheError};

/// Directory-safe, collision-free name for a repo.
pub(super) fn repo_key(repo: &str) -> String {
    // The first 6 bytes of the digest: 12 hex characters.
    let digest = ase_common::digest::sha256_hex(repo.as_bytes())[..12].to_string();
    let readable: String = repo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{readable}-{digest}")
}

/// A few upstream v2 tasks name their repo by a full `https://` URL (GitLab) instead of
/// `owner/name`: such a repo is cloned from that URL as it is.
pub(super) fn is_url_repo(repo: &str) -> bool {
    repo.starts_with("https://")
}

pub(super) fn validate_repo_name(repo: &str) -> Result<(), RepoCacheError> {
    if is_url_repo(repo) {
        let rest = &repo["https://".len()..];
        let host = rest.split('/').next().unwrap_or("");
        let ok = repo.len() <= 512
            && !host.is_empty()
            && !host.contains('@')
            && rest.contains('/')
            && !rest.split('/').any(|seg| seg == "..")
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./~:%+".contains(c));
        return if ok {
            Ok(())
        } else {
            Err(RepoCacheError::BadRepoName(repo.to_string()))
        };
    }
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        _ => Err(RepoCacheError::BadRepoName(repo.to_string())),
    }
}

impl RepoCache {
    /// Where `repo` is cloned and fetched from.
    pub(super) fn source_url(&self, repo: &str) -> String {
        source_url_for(&self.inner.cfg, repo)
    }
}

/// [`RepoCache::source_url`] for a cache's settings alone (a preflight probe has no cache).
pub(super) fn source_url_for(cfg: &super::RepoCacheConfig, repo: &str) -> String {
    if is_url_repo(repo) {
        return repo.to_string();
    }
    cfg.url_template.replace("{repo}", repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_checked_and_keys_distinct() {
        assert!(validate_repo_name("cacti/cacti").is_ok());
        for bad in ["cacti", "../x", "a/..", "a/b/c", "a/b c", "/a"] {
            assert!(validate_repo_name(bad).is_err(), "{bad}");
        }
        assert_ne!(repo_key("a/b_c"), repo_key("a_b/c"));
        assert!(validate_repo_name("https://gitlab.com/group/sub/project.git").is_ok());
        for bad in [
            "https://",
            "https://host",
            "https://user:pw@host/x",
            "https://host/../x",
            "https://host/a b",
            "http://host/x",
        ] {
            assert!(validate_repo_name(bad).is_err(), "{bad}");
        }
    }
}
