//! One image pulled through the daemon (`POST /images/create`), retried with back-off while
//! the registry is unreachable, failing or limiting, and the daemon's answer turned into a
//! typed [`PullError`] here, once: the daemon reports registry problems as text (its HTTP
//! status says little: Docker 20.10 answers 500 for a refused connection and for bad
//! credentials alike), so this is the one place that reads that text.

use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::credentials::{CredentialsError, RegistryAuth};
use super::progress::ProgressTracker;
use super::reference::{BadReference, ImageRef};
use super::{PullSettings, StatsCell};

/// Why a task's image could not be had. `Clone`: one pull's outcome goes to every need that
/// shared it. Messages quote the daemon with any secret removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    BadReference(#[from] BadReference),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The registry has no such repository, tag or digest (for this platform): the task's
    /// problem, not retried here.
    #[error("image {image}: image not found in registry {registry}: {detail}")]
    NotFound {
        image: String,
        registry: String,
        detail: String,
    },
    /// The registry refused this worker's credentials (or asks for some it does not have).
    #[error("image {image}: registry {registry} refused the pull (authentication failed; {credentials}): {detail}")]
    Unauthorized {
        image: String,
        registry: String,
        /// Which credentials were sent (a user name or "none"), never the secret.
        credentials: String,
        detail: String,
    },
    /// Connection refused, timed out, reset, or the registry answering 5xx, on every attempt.
    #[error(
        "image {image}: registry unreachable: {registry} after {attempts} attempt(s): {detail}"
    )]
    Unreachable {
        image: String,
        registry: String,
        attempts: u32,
        detail: String,
    },
    /// The registry's pull limit (429 / `toomanyrequests`), on every attempt.
    #[error("image {image}: registry {registry} rate limit after {attempts} attempt(s): {detail}")]
    RateLimited {
        image: String,
        registry: String,
        attempts: u32,
        retry_after_secs: Option<u64>,
        detail: String,
    },
    /// The Docker daemon itself failed (not the registry).
    #[error("image {image}: Docker failed to {op}: {detail}")]
    Daemon {
        image: String,
        op: &'static str,
        detail: String,
    },
}

/// What one failed attempt says, before it is known whether it was the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    NotFound,
    Unauthorized,
    RateLimited,
    Unreachable,
    Daemon,
}

impl FailureClass {
    fn retryable(self) -> bool {
        matches!(self, FailureClass::RateLimited | FailureClass::Unreachable)
    }
}

/// Reads a daemon error of a pull. Public for its tests; the text fragments are the daemon's
/// and the distribution client's (moby `errdefs`, `registry/errors.go`).
pub fn classify(err: &DockerError) -> (FailureClass, String) {
    let (status, message) = match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => (Some(*status_code), message.clone()),
        DockerError::DockerStreamError { error } => (None, error.clone()),
        // The daemon's socket failed or timed out: the daemon's problem, not the registry's.
        other => return (FailureClass::Daemon, other.to_string()),
    };
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    let class = if status == Some(429) || has(&["toomanyrequests", "too many requests"]) {
        FailureClass::RateLimited
    } else if status == Some(401)
        || status == Some(403)
        || has(&[
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "denied",
            "incorrect username or password",
        ])
    {
        FailureClass::Unauthorized
    } else if status == Some(404)
        || has(&[
            "manifest unknown",
            "not found",
            "name unknown",
            "no matching manifest",
        ])
    {
        FailureClass::NotFound
    } else if has(&[
        "connection refused",
        "dial tcp",
        "i/o timeout",
        "no such host",
        "connection reset",
        "tls handshake timeout",
        "timeout exceeded",
        "eof",
        "server misbehaving",
        "network is unreachable",
        "service unavailable",
        "bad gateway",
        "gateway timeout",
        "internal server error",
        "unexpected http status: 5",
    ]) {
        FailureClass::Unreachable
    } else {
        FailureClass::Daemon
    };
    (class, message)
}

/// A `Retry-After`-style delay written in a registry message ("retry after 30s",
/// "Retry-After: 30"); the daemon drops the registry's headers, so the text is all there is.
pub fn retry_after_from(message: &str) -> Option<u64> {
    let m = message.to_ascii_lowercase();
    let at = m.find("retry-after").or_else(|| m.find("retry after"))?;
    let digits: String = m[at + "retry-after".len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|s| *s <= 3600)
}

/// Pulls `image` (with `auth` when given) until it is on the daemon or the attempts run out.
pub(super) async fn pull_with_retries(
    docker: &Docker,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
    settings: &PullSettings,
    stats: &StatsCell,
) -> Result<(), PullError> {
    let attempts = settings.attempts.max(1);
    let redact = |s: String| match auth {
        Some(a) => a.redact(&s),
        None => s,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        stats.attempt(&image.original, attempt);
        let (class, detail) = match pull_once(docker, image, auth, settings, stats, attempt).await {
            Ok(()) => return Ok(()),
            Err((class, detail)) => (class, redact(detail)),
        };
        let retry_after = retry_after_from(&detail);
        if class.retryable() && attempt < attempts {
            let wait = backoff(settings, attempt, retry_after);
            tracing::warn!(
                image = %image.original,
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = %detail,
                "image pull failed; retrying"
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        let image_s = image.original.clone();
        let registry = image.registry.clone();
        return Err(match class {
            FailureClass::NotFound => PullError::NotFound {
                image: image_s,
                registry,
                detail,
            },
            FailureClass::Unauthorized => PullError::Unauthorized {
                image: image_s,
                registry,
                credentials: match auth.and_then(|a| a.username.as_deref()) {
                    Some(user) => format!("user {user:?}"),
                    None => "no credentials found for it".into(),
                },
                detail,
            },
            FailureClass::RateLimited => PullError::RateLimited {
                image: image_s,
                registry,
                attempts: attempt,
                retry_after_secs: retry_after,
                detail,
            },
            FailureClass::Unreachable => PullError::Unreachable {
                image: image_s,
                registry,
                attempts: attempt,
                detail,
            },
            FailureClass::Daemon => PullError::Daemon {
                image: image_s,
                op: "pull the image",
                detail,
            },
        });
    }
}

/// Exponential from `backoff_base`, capped at `backoff_max`, with up to 25 % jitter so the
/// workers of a cluster do not come back together; a registry's own delay wins when longer.
fn backoff(settings: &PullSettings, attempt: u32, retry_after: Option<u64>) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(settings.backoff_max);
    let jitter = exp.mul_f64(fastrand::f64() * 0.25);
    let wait = exp + jitter;
    match retry_after {
        Some(secs) => wait.max(Duration::from_secs(secs)),
        None => wait,
    }
}

async fn pull_once(
    docker: &Docker,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
    settings: &PullSettings,
    stats: &StatsCell,
    attempt: u32,
) -> Result<(), (FailureClass, String)> {
    // Name and tag apart: a name alone with an empty tag would pull every tag.
    let mut options = CreateImageOptionsBuilder::default()
        .from_image(&image.name)
        .tag(&image.tag_or_digest);
    if let Some(platform) = &settings.platform {
        options = options.platform(platform);
    }
    let mut stream = docker.create_image(
        Some(options.build()),
        None,
        auth.map(RegistryAuth::to_docker),
    );
    let mut tracker = ProgressTracker::default();
    let deadline = tokio::time::Instant::now() + settings.attempt_timeout;
    let outcome = loop {
        let next = deadline.min(tokio::time::Instant::now() + settings.stall_timeout);
        match tokio::time::timeout_at(next, stream.next()).await {
            Err(_) if next >= deadline => {
                break Err((
                    FailureClass::Unreachable,
                    format!(
                        "not done after {} s (too slow a download)",
                        settings.attempt_timeout.as_secs()
                    ),
                ))
            }
            Err(_) => {
                break Err((
                    FailureClass::Unreachable,
                    format!(
                        "no progress for {} s (stalled download)",
                        settings.stall_timeout.as_secs()
                    ),
                ))
            }
            Ok(None) => break Ok(()),
            Ok(Some(Ok(info))) => {
                tracker.observe(&info);
                stats.progress(tracker.snapshot(&image.original, attempt));
            }
            Ok(Some(Err(e))) => break Err(classify(&e)),
        }
    };
    stats.attempt_ended(tracker.snapshot(&image.original, attempt));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, m: &str) -> DockerError {
        DockerError::DockerResponseServerError {
            status_code: code,
            message: m.into(),
        }
    }

    #[test]
    fn daemon_answers_are_classified() {
        let c = |e: DockerError| classify(&e).0;
        assert_eq!(
            c(server(500, "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused")),
            FailureClass::Unreachable
        );
        assert_eq!(
            c(server(
                404,
                "manifest for 127.0.0.1:5000/x:nope not found: manifest unknown: manifest unknown"
            )),
            FailureClass::NotFound
        );
        assert_eq!(
            c(server(
                500,
                "Head \"http://127.0.0.1:5000/v2/x/manifests/1\": no basic auth credentials"
            )),
            FailureClass::Unauthorized
        );
        assert_eq!(
            c(DockerError::DockerStreamError {
                error: "toomanyrequests: You have reached your pull rate limit.".into()
            }),
            FailureClass::RateLimited
        );
        assert_eq!(
            c(server(
                500,
                "received unexpected HTTP status: 503 Service Unavailable"
            )),
            FailureClass::Unreachable
        );
        assert_eq!(c(DockerError::RequestTimeoutError), FailureClass::Daemon);
        assert!(FailureClass::Unreachable.retryable() && !FailureClass::NotFound.retryable());
    }

    #[test]
    fn back_off_grows_is_capped_and_yields_to_the_registry() {
        let s = PullSettings {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            ..PullSettings::default()
        };
        let b1 = backoff(&s, 1, None);
        assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(125));
        let b9 = backoff(&s, 9, None);
        assert!(b9 >= Duration::from_millis(400) && b9 <= Duration::from_millis(500));
        assert_eq!(backoff(&s, 1, Some(7)), Duration::from_secs(7));
        assert_eq!(
            retry_after_from("toomanyrequests; Retry-After: 30"),
            Some(30)
        );
        assert_eq!(retry_after_from("please retry after 12s"), Some(12));
        assert_eq!(retry_after_from("toomanyrequests"), None);
    }
}
