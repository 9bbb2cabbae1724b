//! Prometheus metrics in the text exposition format, served on `GET /metrics` by a minimal
//! HTTP/1 listener. Counters of RPC outcomes live here; unit, run and worker gauges are read
//! from the coordinator at scrape time, so they cannot drift from its state.

use crate::messages::{Ack, FailureKind, InfraKind, ProviderFault};
use crate::records::Phase;
use crate::{Coordinator, ImageStats};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the lease grant latency histogram.
pub const LEASE_GRANT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bytes of an HTTP request head read before answering.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters the gRPC services update.
#[derive(Debug, Default)]
pub struct Metrics {
    lease_grant_buckets: [AtomicU64; LEASE_GRANT_BUCKETS.len()],
    lease_grant_count: AtomicU64,
    lease_grant_sum_us: AtomicU64,
    /// Index: 0 generate, 1 evaluate.
    commits: [AtomicU64; 2],
    duplicate_results: AtomicU64,
    refused_results: AtomicU64,
    infrastructure_failures: AtomicU64,
    released_leases: AtomicU64,
    /// Index: position in [`ProviderFault::ALL`].
    provider_failures: [AtomicU64; ProviderFault::ALL.len()],
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Generate => 0,
        Phase::Evaluate => 1,
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A LeaseWork call that granted at least one lease took `elapsed` (long-poll wait included).
    pub fn observe_lease_grant(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in LEASE_GRANT_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.lease_grant_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lease_grant_count.fetch_add(1, Ordering::Relaxed);
        self.lease_grant_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn record_completion(&self, phase: Phase, ack: &Ack) {
        let counter = if !ack.accepted {
            &self.refused_results
        } else if ack.duplicate {
            &self.duplicate_results
        } else {
            &self.commits[phase_index(phase)]
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_failure(&self, kind: FailureKind, infra: InfraKind, ack: &Ack) {
        if !ack.accepted {
            self.refused_results.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let (FailureKind::Infrastructure, InfraKind::Provider(fault)) = (kind, infra) {
            if let Some(i) = ProviderFault::ALL.iter().position(|f| *f == fault) {
                self.provider_failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        match kind {
            FailureKind::Infrastructure => &self.infrastructure_failures,
            FailureKind::Released => &self.released_leases,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text: these counters and the coordinator's current state.
    pub fn render(&self, coordinator: &Coordinator) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "ase_units",
            "gauge",
            "Units by run, phase and state.",
        );
        let runs = coordinator.list_runs();
        for run in &runs {
            let run_label = escape(&run.run_id);
            for (phase, counts) in [("generate", run.generate), ("evaluate", run.evaluate)] {
                for (state, n) in [
                    ("queued", counts.queued),
                    ("leased", counts.leased),
                    ("done", counts.done),
                    ("failed", counts.failed),
                ] {
                    let _ = writeln!(
                        out,
                        "ase_units{{run=\"{run_label}\",phase=\"{phase}\",state=\"{state}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut out,
            "ase_run_info",
            "gauge",
            "1 per run, labelled with its state.",
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "ase_run_info{{run=\"{}\",state=\"{}\"}} 1",
                escape(&run.run_id),
                escape(&run.state)
            );
        }
        header(
            &mut out,
            "ase_run_model_calls_total",
            "counter",
            "Model requests of committed generations.",
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "ase_run_model_calls_total{{run=\"{}\"}} {}",
                escape(&run.run_id),
                run.model_calls
            );
        }
        header(
            &mut out,
            "ase_run_retries_total",
            "counter",
            "Phase attempts lost to infrastructure failures or expiry.",
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "ase_run_retries_total{{run=\"{}\"}} {}",
                escape(&run.run_id),
                run.retries
            );
        }

        header(
            &mut out,
            "ase_run_paused",
            "gauge",
            "1 per run whose model calls are paused after consecutive provider failures, labelled with the kind (rate_limited, quota, auth, server_error, timeout, network).",
        );
        for run in &runs {
            if let Some(reason) = run.state.strip_prefix("paused: ") {
                let _ = writeln!(
                    out,
                    "ase_run_paused{{run=\"{}\",reason=\"{}\"}} 1",
                    escape(&run.run_id),
                    escape(reason)
                );
            }
        }
        header(
            &mut out,
            "ase_run_pause_remaining_seconds",
            "gauge",
            "Seconds until a run's generations are tried again after provider failures (0: not paused by time).",
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "ase_run_pause_remaining_seconds{{run=\"{}\"}} {}",
                escape(&run.run_id),
                run.pause_remaining_ms as f64 / 1000.0
            );
        }
        header(
            &mut out,
            "ase_run_provider_failures_total",
            "counter",
            "Provider failures of a run's generations since the coordinator loaded it (no unit attempt used up).",
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "ase_run_provider_failures_total{{run=\"{}\"}} {}",
                escape(&run.run_id),
                run.provider_failures
            );
        }

        header(
            &mut out,
            "ase_run_finish_failures_total",
            "counter",
            "Attempts to finish a run (score it, write its files) that failed; the run stays in scoring and is tried again.",
        );
        let _ = writeln!(
            out,
            "ase_run_finish_failures_total {}",
            coordinator.finish_failures()
        );

        let workers = coordinator.list_workers();
        let alive = workers.iter().filter(|w| w.alive).count();
        let draining = workers.iter().filter(|w| w.alive && w.draining).count();
        header(
            &mut out,
            "ase_workers_alive",
            "gauge",
            "Workers with a live session and a recent heartbeat.",
        );
        let _ = writeln!(out, "ase_workers_alive {alive}");
        header(
            &mut out,
            "ase_workers_draining",
            "gauge",
            "Alive workers asked to drain.",
        );
        let _ = writeln!(out, "ase_workers_draining {draining}");
        header(
            &mut out,
            "ase_workers_known",
            "gauge",
            "Workers ever registered.",
        );
        let _ = writeln!(out, "ase_workers_known {}", workers.len());
        worker_images(&mut out, &workers);

        header(
            &mut out,
            "ase_commits_total",
            "counter",
            "Phase results committed (first commit of a lease).",
        );
        for (phase, i) in [("generate", 0), ("evaluate", 1)] {
            let _ = writeln!(
                out,
                "ase_commits_total{{phase=\"{phase}\"}} {}",
                load(&self.commits[i])
            );
        }
        header(
            &mut out,
            "ase_duplicate_results_total",
            "counter",
            "Results repeated for an already committed lease.",
        );
        let _ = writeln!(
            out,
            "ase_duplicate_results_total {}",
            load(&self.duplicate_results)
        );
        header(
            &mut out,
            "ase_refused_reports_total",
            "counter",
            "Results and failures refused (stale fence, unknown lease, bad record).",
        );
        let _ = writeln!(
            out,
            "ase_refused_reports_total {}",
            load(&self.refused_results)
        );
        header(
            &mut out,
            "ase_unit_failures_total",
            "counter",
            "Failure reports accepted from workers, by kind.",
        );
        let _ = writeln!(
            out,
            "ase_unit_failures_total{{kind=\"infrastructure\"}} {}",
            load(&self.infrastructure_failures)
        );
        let _ = writeln!(
            out,
            "ase_unit_failures_total{{kind=\"released\"}} {}",
            load(&self.released_leases)
        );
        header(
            &mut out,
            "ase_provider_failures_total",
            "counter",
            "Failure reports of generations the model provider is to blame for, by kind.",
        );
        for (i, fault) in ProviderFault::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "ase_provider_failures_total{{kind=\"{}\"}} {}",
                fault.as_str(),
                load(&self.provider_failures[i])
            );
        }

        header(
            &mut out,
            "ase_lease_grant_seconds",
            "histogram",
            "Time from a LeaseWork request to its grant, long-poll wait included.",
        );
        for (i, bound) in LEASE_GRANT_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ase_lease_grant_seconds_bucket{{le=\"{bound}\"}} {}",
                load(&self.lease_grant_buckets[i])
            );
        }
        let count = load(&self.lease_grant_count);
        let _ = writeln!(out, "ase_lease_grant_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "ase_lease_grant_seconds_sum {}",
            load(&self.lease_grant_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "ase_lease_grant_seconds_count {count}");
        out
    }
}

/// Per worker (label `worker`, its name): its task-image pulls and cache, as its last heartbeat
/// told; a worker that has not sent any has no series.
fn worker_images(out: &mut String, workers: &[crate::WorkerInfo]) {
    type Value = fn(&ImageStats) -> u64;
    let series: [(&str, &str, &str, Value); 11] = [
        (
            "ase_worker_image_pulls_total",
            "counter",
            "Task images the worker pulled to completion.",
            |s| s.pulls_total,
        ),
        (
            "ase_worker_image_pulls_failed_total",
            "counter",
            "Task-image pulls that failed after their retries.",
            |s| s.pulls_failed,
        ),
        (
            "ase_worker_image_pull_attempts_total",
            "counter",
            "Pull requests the worker sent its daemon (first tries and retries).",
            |s| s.pull_attempts,
        ),
        (
            "ase_worker_image_pull_bytes_total",
            "counter",
            "Bytes downloaded by the worker's finished pulls.",
            |s| s.bytes_downloaded,
        ),
        (
            "ase_worker_image_pulls_in_progress",
            "gauge",
            "Task-image pulls under way.",
            ImageStats::pulls_under_way,
        ),
        (
            "ase_worker_image_pull_progress_bytes",
            "gauge",
            "Bytes downloaded so far by the pulls under way (those listed in the heartbeat).",
            |s| s.pulls.iter().map(|p| p.bytes_downloaded).sum(),
        ),
        (
            "ase_worker_image_pull_progress_layers",
            "gauge",
            "Layers done so far by the pulls under way (those listed in the heartbeat).",
            |s| s.pulls.iter().map(|p| u64::from(p.layers_done)).sum(),
        ),
        (
            "ase_worker_image_cache_images",
            "gauge",
            "Task images the worker holds.",
            |s| u64::from(s.cache_images),
        ),
        (
            "ase_worker_image_cache_bytes",
            "gauge",
            "Sizes of the task images the worker holds.",
            |s| s.cache_bytes,
        ),
        (
            "ase_worker_image_cache_pulled_bytes",
            "gauge",
            "Sizes of the task images the worker pulled and holds (what its budget bounds).",
            |s| s.cache_pulled_bytes,
        ),
        (
            "ase_worker_image_evictions_total",
            "counter",
            "Task images removed to meet the worker's disk budget.",
            |s| s.evictions,
        ),
    ];
    let reporting: Vec<(String, &ImageStats)> = workers
        .iter()
        .filter_map(|w| Some((escape(&w.name), w.images.as_ref()?)))
        .collect();
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for (worker, stats) in &reporting {
            let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {}", value(stats));
        }
    }
    header(
        out,
        "ase_worker_image_cache_budget_bytes",
        "gauge",
        "The worker's disk budget for the task images it pulls (no series: no budget).",
    );
    for (worker, stats) in &reporting {
        if let Some(budget) = stats.cache_budget_bytes {
            let _ = writeln!(
                out,
                "ase_worker_image_cache_budget_bytes{{worker=\"{worker}\"}} {budget}"
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the exposition format wants it.
fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub async fn serve_metrics(
    listener: TcpListener,
    coordinator: Arc<Coordinator>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let coordinator = coordinator.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let answered =
                tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &coordinator, &metrics)).await;
            if !matches!(answered, Ok(Ok(()))) {
                tracing::debug!(%peer, "metrics request failed or timed out");
            }
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    coordinator: &Coordinator,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let body = metrics.render(coordinator);
            respond(&mut stream, "200 OK", &body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "only /metrics is served\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
