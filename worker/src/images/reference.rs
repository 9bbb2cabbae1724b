//! An image reference as a dataset names it (`aiseceval/foo:1`, `127.0.0.1:5000/x@sha256:…`),
//! split the way Docker's `reference.ParseNormalizedNamed` does: which registry it lives on
//! (for its credentials), its repository, and its tag or digest (for the pull request, which
//! must never leave the tag empty: an empty tag asks the daemon for every tag of the image).

/// Docker Hub, as the daemon and `docker login` name it.
pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as written (what the daemon is asked to inspect).
    pub original: String,
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`, …
    pub registry: String,
    /// The name without tag or digest, as written (`aiseceval/foo`, `127.0.0.1:5000/x`).
    pub name: String,
    /// The tag (`latest` when none is written) or the digest (`sha256:…`).
    pub tag_or_digest: String,
    pub is_digest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {reference:?}: {why}")]
pub struct BadReference {
    pub reference: String,
    pub why: &'static str,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, BadReference> {
        let bad = |why| BadReference {
            reference: reference.to_string(),
            why,
        };
        let r = reference.trim();
        if r.is_empty() {
            return Err(bad("empty"));
        }
        if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (name, tag_or_digest, is_digest) = match r.split_once('@') {
            Some((name, digest)) => {
                if !digest.contains(':') {
                    return Err(bad("a digest is algorithm:hex"));
                }
                (name, digest.to_string(), true)
            }
            None => {
                // A ':' after the last '/' starts the tag; before it, it is a registry's port.
                let last_slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
                match r[last_slash..].rfind(':') {
                    Some(i) => (
                        &r[..last_slash + i],
                        r[last_slash + i + 1..].to_string(),
                        false,
                    ),
                    None => (r, "latest".to_string(), false),
                }
            }
        };
        if name.is_empty() || name.ends_with('/') || tag_or_digest.is_empty() {
            return Err(bad("no repository name, or an empty tag"));
        }
        let registry = match name.split_once('/') {
            Some((first, _))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                first.to_string()
            }
            _ => DOCKER_HUB.to_string(),
        };
        Ok(ImageRef {
            original: r.to_string(),
            registry,
            name: name.to_string(),
            tag_or_digest,
            is_digest,
        })
    }

    /// The repository as the daemon lists it in `RepoDigests` (Docker Hub's names short, as
    /// `docker images` shows them: `library/` dropped).
    pub fn repository(&self) -> String {
        let name = self
            .name
            .strip_prefix("docker.io/")
            .unwrap_or(&self.name)
            .to_string();
        if self.registry == DOCKER_HUB {
            name.strip_prefix("library/").unwrap_or(&name).to_string()
        } else {
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(r: &str) -> (String, String, String, bool) {
        let i = ImageRef::parse(r).unwrap();
        (i.registry, i.name, i.tag_or_digest, i.is_digest)
    }

    #[test]
    fn registries_tags_and_digests_are_told_apart() {
        let s = |x: &str| x.to_string();
        assert_eq!(
            p("aiseceval/foo:1"),
            (s("docker.io"), s("aiseceval/foo"), s("1"), false)
        );
        assert_eq!(
            p("busybox"),
            (s("docker.io"), s("busybox"), s("latest"), false)
        );
        assert_eq!(
            p("127.0.0.1:5000/ase/x"),
            (
                s("127.0.0.1:5000"),
                s("127.0.0.1:5000/ase/x"),
                s("latest"),
                false
            )
        );
        assert_eq!(
            p("127.0.0.1:5000/x:v2"),
            (s("127.0.0.1:5000"), s("127.0.0.1:5000/x"), s("v2"), false)
        );
        assert_eq!(
            p("localhost/x@sha256:ab"),
            (s("localhost"), s("localhost/x"), s("sha256:ab"), true)
        );
        assert_eq!(p("ghcr.io/o/r:t").0, "ghcr.io");
        assert_eq!(
            ImageRef::parse("busybox:1").unwrap().repository(),
            "busybox"
        );
        assert_eq!(
            ImageRef::parse("docker.io/library/busybox:1")
                .unwrap()
                .repository(),
            "busybox"
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        for r in ["", "  ", "a b:1", "x:", "x@nodigest", "x/:1"] {
            assert!(ImageRef::parse(r).is_err(), "{r:?}");
        }
    }
}
