//! The coordinator's network side: the gRPC services over [`crate::Coordinator`] (conversions
//! between `ase.v1` messages and the typed [`crate::messages`], caller identity checks, and the
//! mapping of errors to status codes) and the server that serves them (`server`). No state
//! lives here; every decision is the coordinator's.

pub mod client_service;
mod image_stats_proto;
pub mod join_service;
pub mod server;
pub mod token_service;
pub mod worker_service;

pub use client_service::ClientService;
pub use join_service::{JoinService, JoinSettings};
pub use server::{ServeError, ServeOptions, Server};
pub use token_service::TokenService;
pub use worker_service::WorkerService;

use crate::messages;
use crate::records::{Fence, Phase};
use crate::CoordinatorError;
use ase_proto::tonic::{Code, Status};
use ase_proto::v1;
pub(crate) use image_stats_proto::{image_stats_from_proto, image_stats_to_proto};

/// The gRPC status of a coordinator error. The message names the run, dataset or field; it
/// never carries a submitted API key (the facade keeps the key out of every error).
pub fn status_of(err: &CoordinatorError) -> Status {
    let code = match err {
        CoordinatorError::Dataset { .. }
        | CoordinatorError::Spec(_)
        | CoordinatorError::WorkerName(_)
        | CoordinatorError::Outputs(crate::outputs::OutputError::MixedVersions { .. }) => {
            Code::InvalidArgument
        }
        CoordinatorError::Conflict { .. } => Code::FailedPrecondition,
        CoordinatorError::NameInUse { .. } => Code::AlreadyExists,
        CoordinatorError::UnknownRun(_) => Code::NotFound,
        CoordinatorError::ReportTooLarge { .. } => Code::ResourceExhausted,
        CoordinatorError::Store(_)
        | CoordinatorError::Outputs(_)
        | CoordinatorError::Finisher(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %err, "coordinator failure");
    }
    if let CoordinatorError::NameInUse {
        heard_ms_ago,
        ttl_ms,
        ..
    } = err
    {
        let free_in = u64::from(*ttl_ms).saturating_sub(*heard_ms_ago) + 1;
        return ase_proto::name_in_use::refusal(
            truncate(&err.to_string(), MAX_STATUS_CHARS),
            std::time::Duration::from_millis(free_in),
        );
    }
    Status::new(code, truncate(&err.to_string(), MAX_STATUS_CHARS))
}

/// Characters of an error message sent back. The message travels in an HTTP/2 trailer: one
/// that echoed a large input would exceed the peer's header limit and reach it as a bare
/// "h2 protocol error" instead of the reason.
const MAX_STATUS_CHARS: usize = 2_000;

pub(crate) fn phase_from_proto(value: i32, field: &str) -> Result<Phase, Status> {
    match v1::Phase::try_from(value) {
        Ok(v1::Phase::Generate) => Ok(Phase::Generate),
        Ok(v1::Phase::Evaluate) => Ok(Phase::Evaluate),
        _ => Err(Status::invalid_argument(format!(
            "{field}: phase {value} is neither generate nor evaluate"
        ))),
    }
}

pub(crate) fn phase_to_proto(phase: Phase) -> v1::Phase {
    match phase {
        Phase::Generate => v1::Phase::Generate,
        Phase::Evaluate => v1::Phase::Evaluate,
    }
}

pub(crate) fn lease_ref_from_proto(
    lease: Option<&v1::LeaseRef>,
    field: &str,
) -> Result<messages::LeaseRef, Status> {
    let lease = lease.ok_or_else(|| Status::invalid_argument(format!("{field} is missing")))?;
    let lease_id = lease.lease_id.parse::<u64>().map_err(|_| {
        Status::invalid_argument(format!(
            "{field}.lease_id {:?} is not a lease id of this coordinator",
            truncate(&lease.lease_id, 64)
        ))
    })?;
    let fence = lease
        .fence
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{field}.fence is missing")))?;
    Ok(messages::LeaseRef {
        lease_id,
        fence: Fence {
            session: fence.session,
            attempt: fence.attempt,
        },
    })
}

pub(crate) fn lease_ref_to_proto(lease: &messages::LeaseRef) -> v1::LeaseRef {
    v1::LeaseRef {
        lease_id: lease.lease_id.to_string(),
        fence: Some(v1::Fence {
            session: lease.fence.session,
            attempt: lease.fence.attempt,
        }),
    }
}

pub(crate) fn ack_to_proto(ack: messages::Ack) -> v1::Ack {
    v1::Ack {
        accepted: ack.accepted,
        reason: ack.reason,
        duplicate: ack.duplicate,
    }
}

/// Echoes of untrusted strings in errors stay short.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}
