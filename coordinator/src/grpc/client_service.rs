//! `ClientApi`: submitting, watching, cancelling and reporting runs, and the worker list, for
//! callers holding a client certificate.

use super::{ack_to_proto, status_of, truncate};
use crate::messages;
use crate::Coordinator;
use ase_proto::tonic::{Request, Response, Status};
use ase_proto::v1;
use futures_util::stream::{self, Stream};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// WatchRun's interval when the client asks for none, and its bounds.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between two WatchRun updates: a burst of commits makes one update.
const MIN_UPDATE_GAP: Duration = Duration::from_millis(100);

pub struct ClientService {
    coordinator: Arc<Coordinator>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl ClientService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            coordinator,
            shutdown,
        }
    }
}

pub(crate) fn progress_to_proto(p: messages::RunProgress) -> v1::RunProgress {
    let counts = |c: messages::PhaseCounts| v1::PhaseCounts {
        queued: c.queued,
        leased: c.leased,
        done: c.done,
        failed: c.failed,
    };
    v1::RunProgress {
        run_id: p.run_id,
        state: p.state,
        total_units: p.total_units,
        generate: Some(counts(p.generate)),
        evaluate: Some(counts(p.evaluate)),
        eta_seconds: p.eta_seconds,
        retries: p.retries,
        model_calls: p.model_calls,
        model: p.model,
        batch: p.batch,
        generate_eta_seconds: p.generate_eta_seconds,
        evaluate_eta_seconds: p.evaluate_eta_seconds,
        leased_by_step: p.leased_by_step.into_iter().collect(),
        pause_remaining_ms: p.pause_remaining_ms,
        provider_failures: p.provider_failures,
    }
}

/// A run in one of these states will not change any more (until resubmitted).
pub fn is_final_state(state: &str) -> bool {
    state == "completed" || state == "cancelled"
}

/// An input over its limit, or a broken stream of parts: the client's to fix.
fn submit_status(e: &ase_proto::submit::SubmitError) -> Status {
    Status::invalid_argument(e.to_string())
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<v1::RunProgress, Status>> + Send>>;

struct WatchState {
    coordinator: Arc<Coordinator>,
    run_id: String,
    interval: Duration,
    changes: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    first: bool,
    done: bool,
}

async fn next_progress(
    mut st: WatchState,
) -> Option<(Result<v1::RunProgress, Status>, WatchState)> {
    if st.done {
        return None;
    }
    if !st.first {
        tokio::time::sleep(MIN_UPDATE_GAP).await;
        // A change during the gap is answered at once; several make one update.
        if !st.changes.has_changed().unwrap_or(false) {
            let wait = st.interval.saturating_sub(MIN_UPDATE_GAP);
            let stopping = tokio::select! {
                _ = st.changes.changed() => false,
                _ = tokio::time::sleep(wait) => false,
                _ = st.shutdown.wait_for(|stop| *stop) => true,
            };
            if stopping {
                st.done = true;
                return Some((
                    Err(Status::unavailable("the coordinator is shutting down")),
                    st,
                ));
            }
        }
        st.changes.borrow_and_update();
    }
    st.first = false;
    match st.coordinator.progress(&st.run_id) {
        Ok(p) => {
            st.done = is_final_state(&p.state);
            Some((Ok(progress_to_proto(p)), st))
        }
        Err(e) => {
            st.done = true;
            Some((Err(status_of(&e)), st))
        }
    }
}

#[ase_proto::tonic::async_trait]
impl ase_proto::ClientApi for ClientService {
    async fn submit_run(
        &self,
        req: Request<ase_proto::tonic::Streaming<v1::SubmitRunPart>>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        // The header holds the API key: only named, sized fields go into the span.
        let span = tracing::info_span!(
            "submit_run",
            run = tracing::field::Empty,
            dataset = tracing::field::Empty,
            dataset_bytes = tracing::field::Empty,
            with_key = tracing::field::Empty,
        );
        async {
            let mut parts = req.into_inner();
            let mut assembler = ase_proto::submit::Assembler::new();
            // Bounded: the assembler refuses more bytes than the header declared, and the
            // header was checked against the limits.
            while let Some(part) = parts.message().await? {
                let first = assembler.header().is_none();
                assembler.push(part).map_err(|e| submit_status(&e))?;
                if let (true, Some(h)) = (first, assembler.header()) {
                    let span = tracing::Span::current();
                    span.record("dataset", truncate(&h.dataset_name, 128).as_str());
                    span.record("dataset_bytes", h.dataset_bytes);
                    span.record("with_key", !h.api_key.is_empty());
                }
            }
            let inputs = assembler.finish().map_err(|e| submit_status(&e))?;
            let submitted = self
                .coordinator
                .submit_run(messages::SubmitRun {
                    run_spec_json: inputs.run_spec_json,
                    dataset: inputs.dataset,
                    dataset_name: inputs.dataset_name,
                    context: inputs.context,
                    context_name: inputs.context_name,
                    api_key: (!inputs.api_key.is_empty()).then_some(inputs.api_key),
                })
                .await
                .map_err(|e| status_of(&e))?;
            tracing::Span::current().record("run", submitted.run_id.as_str());
            tracing::info!(
                resumed = submitted.resumed,
                units = submitted.total_units,
                "run submitted"
            );
            Ok(Response::new(v1::SubmitRunResponse {
                run_id: submitted.run_id,
                resumed: submitted.resumed,
                total_units: submitted.total_units,
            }))
        }
        .instrument(span)
        .await
    }

    type WatchRunStream = ProgressStream;

    async fn watch_run(
        &self,
        req: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let req = req.into_inner();
        let _span = tracing::info_span!("watch_run", run = %truncate(&req.run_id, 256)).entered();
        // Unknown runs fail the call itself rather than the first message.
        self.coordinator
            .progress(&req.run_id)
            .map_err(|e| status_of(&e))?;
        let interval = if req.interval_ms == 0 {
            DEFAULT_WATCH_INTERVAL
        } else {
            Duration::from_millis(u64::from(req.interval_ms))
                .clamp(MIN_WATCH_INTERVAL, MAX_WATCH_INTERVAL)
        };
        let state = WatchState {
            coordinator: self.coordinator.clone(),
            run_id: req.run_id,
            interval,
            changes: self.coordinator.subscribe(),
            shutdown: self.shutdown.clone(),
            first: true,
            done: false,
        };
        let stream: ProgressStream = Box::pin(stream::unfold(state, next_progress));
        Ok(Response::new(stream))
    }

    async fn cancel_run(&self, req: Request<v1::RunRef>) -> Result<Response<v1::Ack>, Status> {
        let run_id = req.into_inner().run_id;
        let span = tracing::info_span!("cancel_run", run = %truncate(&run_id, 256));
        async {
            let ack = self
                .coordinator
                .cancel_run(&run_id)
                .await
                .map_err(|e| status_of(&e))?;
            tracing::info!(accepted = ack.accepted, reason = %ack.reason, "cancel");
            Ok(Response::new(ack_to_proto(ack)))
        }
        .instrument(span)
        .await
    }

    async fn list_runs(
        &self,
        _req: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        Ok(Response::new(v1::ListRunsResponse {
            runs: self
                .coordinator
                .list_runs()
                .into_iter()
                .map(progress_to_proto)
                .collect(),
        }))
    }

    async fn list_workers(
        &self,
        _req: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self
            .coordinator
            .list_workers()
            .into_iter()
            .map(|w| v1::WorkerInfo {
                worker_id: w.worker_id,
                name: w.name,
                alive: w.alive,
                draining: w.draining,
                eval_slots: w.eval_slots,
                generate_slots: w.generate_slots,
                running: w.running,
                cached_repos: w.cached_repos,
                last_heartbeat_ms_ago: w.last_heartbeat_ms_ago,
                session: w.session,
                completed: w.completed,
                running_generate: w.running_generate,
                running_evaluate: w.running_evaluate,
                task_images: w.task_images,
                images: w.images.map(super::image_stats_to_proto),
            })
            .collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn drain_worker(
        &self,
        req: Request<v1::DrainWorkerRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let worker = req.into_inner().worker;
        let span = tracing::info_span!("drain_worker", worker = %truncate(&worker, 64));
        async {
            let ack = self
                .coordinator
                .drain_worker(&worker)
                .await
                .map_err(|e| status_of(&e))?;
            tracing::info!(accepted = ack.accepted, "drain");
            Ok(Response::new(ack_to_proto(ack)))
        }
        .instrument(span)
        .await
    }

    async fn fetch_report(
        &self,
        req: Request<v1::RunRef>,
    ) -> Result<Response<v1::FetchReportResponse>, Status> {
        let run_id = req.into_inner().run_id;
        let _span = tracing::info_span!("fetch_report", run = %truncate(&run_id, 256)).entered();
        let report = self
            .coordinator
            .fetch_report(&run_id)
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(v1::FetchReportResponse {
            run_id: report.run_id,
            complete: report.complete,
            files: report
                .files
                .into_iter()
                .map(|f| v1::ReportFile {
                    name: f.name,
                    content: f.content,
                })
                .collect(),
        }))
    }
}
