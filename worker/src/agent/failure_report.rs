//! An infrastructure failure as the coordinator receives it (FailUnit): the kind and the
//! provider's `Retry-After` stay typed on the wire, so the coordinator tells a rate-limited or
//! unreachable provider (the run's condition: no attempt used up, the run pauses) from a
//! failure of this unit.

use crate::model::ProviderFault;
use crate::pipeline::{InfraError, InfraKind};
use ase_proto::v1::{self, FailRequest, FailureKind, LeaseRef};

/// The wire's name of an infrastructure kind.
pub(crate) fn wire_kind(kind: InfraKind) -> v1::InfraKind {
    match kind {
        InfraKind::Repository => v1::InfraKind::Repository,
        InfraKind::Configuration => v1::InfraKind::Configuration,
        InfraKind::Worker => v1::InfraKind::Worker,
        InfraKind::Scanner => v1::InfraKind::Scanner,
        InfraKind::ModelEndpoint => v1::InfraKind::ModelEndpoint,
        InfraKind::Registry => v1::InfraKind::Registry,
        InfraKind::TaskImage => v1::InfraKind::TaskImage,
        InfraKind::Provider(p) => match p {
            ProviderFault::RateLimited => v1::InfraKind::ProviderRateLimited,
            ProviderFault::Quota => v1::InfraKind::ProviderQuota,
            ProviderFault::Auth => v1::InfraKind::ProviderAuth,
            ProviderFault::ServerError => v1::InfraKind::ProviderServerError,
            ProviderFault::Timeout => v1::InfraKind::ProviderTimeout,
            ProviderFault::Network => v1::InfraKind::ProviderNetwork,
        },
    }
}

/// The FailUnit request reporting `e` on `lease`.
pub(crate) fn fail_request(worker_id: String, lease: LeaseRef, e: &InfraError) -> FailRequest {
    FailRequest {
        worker_id,
        lease: Some(lease),
        kind: FailureKind::Infrastructure as i32,
        reason: e.to_string(),
        infra_kind: wire_kind(e.kind) as i32,
        retry_after_ms: e.retry_after_secs.map(|s| s.saturating_mul(1000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InfraFailure;
    use ase_common::scoring::UnitId;

    #[test]
    fn a_rate_limit_keeps_its_kind_and_retry_after_on_the_wire() {
        let unit = UnitId::new("t1", 1);
        let e = InfraError::of_model_failure(
            &unit,
            &InfraFailure::RateLimited {
                retry_after_secs: Some(2),
            },
        );
        let lease = LeaseRef {
            lease_id: "7".into(),
            fence: None,
        };
        let r = fail_request("w".into(), lease, &e);
        assert_eq!(r.kind, FailureKind::Infrastructure as i32);
        assert_eq!(r.infra_kind, v1::InfraKind::ProviderRateLimited as i32);
        assert_eq!(r.retry_after_ms, Some(2_000));
        assert!(r.reason.contains("rate limited"), "{}", r.reason);
    }

    #[test]
    fn provider_failures_are_told_apart() {
        let unit = UnitId::new("t1", 1);
        let kind = |f: InfraFailure| wire_kind(InfraError::of_model_failure(&unit, &f).kind);
        let server = InfraFailure::ServerError {
            status: 503,
            message: "down".into(),
        };
        assert_eq!(kind(server), v1::InfraKind::ProviderServerError);
        let auth = InfraFailure::ClientError {
            status: 401,
            message: "bad key".into(),
        };
        assert_eq!(kind(auth), v1::InfraKind::ProviderAuth);
        let quota = InfraFailure::QuotaExceeded {
            status: 429,
            message: "quota".into(),
        };
        assert_eq!(kind(quota), v1::InfraKind::ProviderQuota);
        assert_eq!(kind(InfraFailure::Timeout), v1::InfraKind::ProviderTimeout);
        let network = InfraFailure::Network {
            detail: "refused".into(),
        };
        assert_eq!(kind(network), v1::InfraKind::ProviderNetwork);
        // A wrong URL or model name: no wait mends it, the unit's attempt is used up.
        let not_found = InfraFailure::ClientError {
            status: 404,
            message: "no such model".into(),
        };
        assert_eq!(kind(not_found), v1::InfraKind::ModelEndpoint);
        let repo = InfraFailure::Repository {
            detail: "gone".into(),
        };
        assert_eq!(kind(repo), v1::InfraKind::Repository);
    }
}
