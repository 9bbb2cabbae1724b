//! Agent mode: the coordinator grants each model call of a coding agent after its first, from
//! the run's requests-per-minute bucket (see `coding_agent::proxy` for why there).

use super::Shared;
use crate::coding_agent::proxy::{CallPermit, CallPermits};
use ase_proto::v1::{ModelCallRequest, Phase};
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

/// When the coordinator cannot be asked (partition, restart): the call is held back this long,
/// not let through (fail closed: the run's rate must hold).
const UNREACHABLE_WAIT: Duration = Duration::from_secs(2);

/// The worker's coordinator as the proxy's [`CallPermits`]. Weak: the agent's shared state
/// owns the coding agents, which hold this.
pub(super) struct CoordinatorPermits {
    pub shared: Weak<Shared>,
}

impl CallPermits for CoordinatorPermits {
    fn acquire(
        &self,
        run: String,
        unit: String,
    ) -> Pin<Box<dyn Future<Output = CallPermit> + Send + 'static>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(shared) = shared.upgrade() else {
                return CallPermit::Refused("the worker is stopping".into());
            };
            let lease = shared
                .units()
                .values()
                .find(|u| u.phase == Phase::Generate && u.run_id == run && u.unit == unit)
                .map(|u| u.lease.clone());
            let Some(lease) = lease else {
                return CallPermit::Refused(format!("unit {unit} holds no generate lease"));
            };
            let Some(session) = shared.registrar.current() else {
                return CallPermit::Wait(UNREACHABLE_WAIT);
            };
            let request = ModelCallRequest {
                worker_id: session.worker_id,
                lease: Some(lease),
            };
            let mut client = shared.client();
            let asked = tokio::time::timeout(
                shared.config.rpc_timeout,
                client.acquire_model_call(request),
            )
            .await;
            match asked {
                Ok(Ok(reply)) => {
                    let r = reply.into_inner();
                    if r.granted {
                        CallPermit::Granted
                    } else if !r.refused.is_empty() {
                        CallPermit::Refused(r.refused)
                    } else {
                        CallPermit::Wait(Duration::from_millis(u64::from(r.retry_after_ms.max(1))))
                    }
                }
                Ok(Err(status)) => {
                    tracing::warn!(%run, %unit, error = %status, "the coordinator did not grant a model call");
                    CallPermit::Wait(UNREACHABLE_WAIT)
                }
                Err(_) => CallPermit::Wait(UNREACHABLE_WAIT),
            }
        })
    }
}
