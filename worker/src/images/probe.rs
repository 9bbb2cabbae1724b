//! Whether a task's image can be had, asked of the registry through the daemon
//! (`GET /distribution/{name}/json`: the manifest's digest and its platforms) without pulling
//! a byte of it. A preflight asks this of every image of a dataset before the first model call.

use bollard::Docker;

use super::credentials::CredentialSource;
use super::pull::{classify, FailureClass};
use super::reference::ImageRef;

/// What the registry said of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProbe {
    /// The manifest exists (for the platform, when one was asked for); `digest` is the
    /// manifest's (or index's) digest the tag names today.
    Present { digest: String },
    /// No such repository, tag or digest, or the registry refused the credentials given.
    Missing(String),
    /// The image exists, but not for the platform the workers pull for.
    WrongPlatform(String),
    /// No answer worth a verdict (registry unreachable, rate limit, the daemon failed).
    Unchecked(String),
}

/// Whether `reference` can be had: on this host's daemon already (an image built here, as the
/// demo's are: the workers of `ase run` share this daemon), or from its registry.
pub async fn probe_image(
    docker: &Docker,
    reference: &str,
    platform: Option<&str>,
    credentials: &CredentialSource,
) -> ImageProbe {
    let asked = probe_registry(docker, reference, platform, credentials).await;
    if matches!(asked, ImageProbe::Present { .. }) {
        return asked;
    }
    match docker.inspect_image(reference).await {
        Ok(local) => ImageProbe::Present {
            digest: local
                .repo_digests
                .and_then(|d| d.into_iter().next())
                .and_then(|d| d.split_once('@').map(|(_, digest)| digest.to_string()))
                .or(local.id)
                .unwrap_or_default(),
        },
        Err(_) => asked,
    }
}

/// Asks the registry about `reference` (its credentials from `credentials`), and whether it
/// has `platform` (`os/arch[/variant]`; None: any).
async fn probe_registry(
    docker: &Docker,
    reference: &str,
    platform: Option<&str>,
    credentials: &CredentialSource,
) -> ImageProbe {
    let image = match ImageRef::parse(reference) {
        Ok(i) => i,
        Err(e) => return ImageProbe::Missing(e.to_string()),
    };
    let auth = match credentials.lookup(&image.registry) {
        Ok(a) => a,
        Err(e) => return ImageProbe::Unchecked(e.to_string()),
    };
    let redact = |s: String| match &auth {
        Some(a) => a.redact(&s),
        None => s,
    };
    let inspect = docker
        .inspect_registry_image(&image.original, auth.as_ref().map(|a| a.to_docker()))
        .await;
    let info = match inspect {
        Ok(info) => info,
        Err(e) => {
            let (class, detail) = classify(&e);
            let detail = redact(detail);
            let registry = &image.registry;
            return match class {
                FailureClass::NotFound => {
                    ImageProbe::Missing(format!("{reference}: not found in {registry}: {detail}"))
                }
                FailureClass::Unauthorized => ImageProbe::Missing(format!(
                    "{reference}: {registry} refused access ({}): {detail}",
                    match auth.as_ref().and_then(|a| a.username.as_deref()) {
                        Some(user) => format!("user {user:?}"),
                        None => "no credentials for it".to_string(),
                    }
                )),
                FailureClass::RateLimited | FailureClass::Unreachable | FailureClass::Daemon => {
                    ImageProbe::Unchecked(format!("{reference}: {registry}: {detail}"))
                }
            };
        }
    };
    let digest = info.descriptor.digest.unwrap_or_default();
    if let Some(want) = platform {
        let offered: Vec<String> = info
            .platforms
            .iter()
            .map(|p| {
                let mut s = format!(
                    "{}/{}",
                    p.os.as_deref().unwrap_or(""),
                    p.architecture.as_deref().unwrap_or("")
                );
                if let Some(v) = p.variant.as_deref().filter(|v| !v.is_empty()) {
                    s.push('/');
                    s.push_str(v);
                }
                s
            })
            .collect();
        // A registry that lists no platform tells nothing: the pull will say.
        if !offered.is_empty() && !offered.iter().any(|o| platform_matches(want, o)) {
            return ImageProbe::WrongPlatform(format!(
                "{reference}: no manifest for {want} (offered: {})",
                offered.join(", ")
            ));
        }
    }
    ImageProbe::Present { digest }
}

/// `linux/arm64` matches `linux/arm64/v8`; a variant asked for must be the one offered.
fn platform_matches(want: &str, offered: &str) -> bool {
    let w: Vec<&str> = want.split('/').collect();
    let o: Vec<&str> = offered.split('/').collect();
    w.len() >= 2
        && o.len() >= 2
        && w[0] == o[0]
        && w[1] == o[1]
        && (w.len() < 3 || w.get(2) == o.get(2))
}

#[cfg(test)]
mod tests {
    use super::platform_matches;

    #[test]
    fn platforms_match_by_os_and_arch_and_a_variant_when_asked() {
        assert!(platform_matches("linux/amd64", "linux/amd64"));
        assert!(platform_matches("linux/arm64", "linux/arm64/v8"));
        assert!(!platform_matches("linux/arm64/v7", "linux/arm64/v8"));
        assert!(!platform_matches("linux/amd64", "linux/arm64"));
        assert!(!platform_matches("linux", "linux/amd64"));
    }
}
