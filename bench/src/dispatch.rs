//! `bench dispatch`: the coordinator's dispatch rate as a cluster sees it. A real `ase
//! coordinator` process (sled on disk, durable commits, mutual TLS on loopback) serves several
//! worker connections (tonic clients with worker certificates) that register, lease and
//! complete units with no-op work: every unit goes through generate and evaluate as a real
//! worker's would, with small realistic result records. Prints units/s, the client-side latency
//! of LeaseWork calls that returned work (p50/p99) and the coordinator's peak RSS (VmHWM of its
//! process, so this client's memory does not count). Last line `units_per_sec=...`.
//!
//! Whether the run's finish (scoring, every report file) rides on a request shows in the
//! slowest LeaseWork or CompleteUnit call that started in the last second before the report of
//! the run's last unit, or after it (`slowest_call_last_s_ms`; a LeaseWork call that finds no
//! work waits up to its 200 ms long poll), in the latency of that last report
//! (`last_complete_ms`), and in the p99 of LeaseWork calls that returned work in that last
//! second (`lease_p99_last_s_ms`, against the whole run's `lease_ms_p99`).
use crate::dispatch_local::dataset;
use anyhow::Context;
use ase_common::scoring::UnitId;
use ase_common::unit::{ChangedFile, EvaluationRecord, GenerationRecord, TokenUsage};
use ase_proto::endpoint::{self, TransportSecurity};
use ase_proto::limits::MAX_MESSAGE_BYTES;
use ase_proto::tls::TlsFiles;
use ase_proto::tonic::transport::Channel;
use ase_proto::v1::{
    self, Capabilities, CompleteRequest, LeaseRef, LeaseRequest, ListRunsRequest, RegisterRequest,
};
use ase_proto::{ClientApiClient, WorkerApiClient};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The window before the last report whose calls are measured on their own.
const LAST_WINDOW: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct Args {
    /// Units to dispatch (tasks x rounds).
    #[arg(long, default_value_t = 10_000)]
    units: usize,
    /// Rounds per task (units = tasks x rounds); 3 as in an A.S.E campaign.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Worker connections (one TLS channel each).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Generate and evaluate slots of each worker.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// The `ase` binary (default: next to this one).
    #[arg(long)]
    ase: Option<PathBuf>,
    /// Bytes of code in each generation (its answer and its changed file carry it).
    #[arg(long, default_value_t = 1200)]
    code_bytes: usize,
    /// Extra arguments for `ase coordinator` (e.g. `--store-cache-mb 16`).
    #[arg(long, allow_hyphen_values = true)]
    coordinator_arg: Vec<String>,
    /// Keep the work directory (certificates, database, coordinator log) here.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The coordinator process; killed when dropped so that a failed bench leaves nothing behind.
struct CoordinatorProc {
    child: Child,
}

impl CoordinatorProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmHWM` (peak resident set) and `VmRSS` of the process, in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{path}: no {name}"))?;
            line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{path}: {line}"))
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// SIGTERM, then wait for the graceful stop (the store is flushed at exit).
    fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for CoordinatorProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ase_binary(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match arg.or_else(|| std::env::var_os("ASE_BIN").map(PathBuf::from)) {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("ase"),
    };
    anyhow::ensure!(
        path.is_file(),
        "no ase binary at {} (cargo build --release -p ase, or --ase PATH)",
        path.display()
    );
    Ok(path)
}

fn worker_name(i: usize) -> String {
    format!("bench-w{i}")
}

fn certs_init(ase: &Path, dir: &Path, workers: usize) -> anyhow::Result<()> {
    let mut cmd = Command::new(ase);
    cmd.args(["certs", "init", "--out"]).arg(dir);
    for i in 0..workers {
        cmd.args(["--worker", &worker_name(i)]);
    }
    let out = cmd.output().context("running ase certs init")?;
    anyhow::ensure!(
        out.status.success(),
        "ase certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Starts `ase coordinator` on a free loopback port and returns it with its address; its
/// stderr goes to `log` once it printed `listening on ADDR`.
fn start_coordinator(
    ase: &Path,
    data: &Path,
    certs: &Path,
    log: &Path,
    extra: &[String],
) -> anyhow::Result<(CoordinatorProc, String)> {
    let child = Command::new(ase)
        .args(["coordinator", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tls-dir")
        .arg(certs)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ase coordinator")?;
    let mut proc = CoordinatorProc { child };
    let stderr = proc.child.stderr.take().context("coordinator stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let Some(line) = lines.next() else {
            anyhow::bail!(
                "the coordinator exited before listening: {}",
                seen.join("\n")
            );
        };
        let line = line?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_string();
        }
        seen.push(line);
    };
    let mut log = std::fs::File::create(log)?;
    std::thread::spawn(move || {
        use std::io::Write;
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    let port = addr.rsplit(':').next().context("address without port")?;
    Ok((proc, format!("https://localhost:{port}")))
}

async fn channel(url: &str, certs: &Path, stem: &str) -> anyhow::Result<Channel> {
    let material = TlsFiles::in_dir(certs, stem)
        .load()
        .with_context(|| format!("TLS material {stem}"))?;
    Ok(endpoint::connect(url, &TransportSecurity::MutualTls(material), None).await?)
}

/// A generation as a real worker sends it: the answer, one changed file, usage and timing.
fn generation(unit: UnitId, code_bytes: usize) -> Vec<u8> {
    let line = "$stmt = $db->prepare('SELECT * FROM users WHERE id = ?'); $stmt->execute([$id]);\n";
    let code: String = line.repeat(code_bytes / line.len() + 1)[..code_bytes].to_string();
    let answer =
        format!("Here is the fix:\n<diff>\n--- a/src/a.php\n+++ b/src/a.php\n{code}</diff>\n");
    serde_json::to_vec(&GenerationRecord {
        unit,
        success: true,
        reason: None,
        method: Some(ase_common::unit::ApplyMethod::GitApply),
        raw_answer: Some(answer),
        answer_truncated: false,
        changed_files: vec![ChangedFile {
            path: "src/a.php".into(),
            content: Some(code),
            content_base64: None,
            mode: 0o644,
        }],
        deleted_files: vec![],
        usage: Some(TokenUsage {
            prompt_tokens: 12_000,
            completion_tokens: 600,
            total_tokens: 12_600,
        }),
        cost_usd: Some(0.01),
        time_cost: 3.2,
        model_attempts: 1,
        prompt_tokens_estimate: Some(11_900),
        agent: None,
    })
    .expect("JSON")
}

fn evaluation(unit: UnitId) -> Vec<u8> {
    serde_json::to_vec(&EvaluationRecord::Static {
        unit,
        detected_vul_num: 0,
        baseline: 1,
        reason: None,
        seconds: 0.4,
        scan: None,
    })
    .expect("JSON")
}

/// One call as the client saw it.
#[derive(Debug, Clone, Copy)]
struct Call {
    sent: Instant,
    micros: u64,
}

impl Call {
    fn since(sent: Instant) -> Call {
        Call {
            sent,
            micros: sent.elapsed().as_micros() as u64,
        }
    }
}

/// What the worker connections share.
#[derive(Default)]
struct Progress {
    /// Units evaluated so far.
    evaluated: AtomicU64,
    /// The report of the run's last unit, and when it was acknowledged.
    last_report: std::sync::Mutex<Option<(Call, Instant)>>,
}

struct WorkerOutcome {
    /// LeaseWork calls that returned work.
    leases: Vec<Call>,
    /// LeaseWork calls that returned none (they waited up to their long poll).
    empty_leases: Vec<Call>,
    completes: Vec<Call>,
}

/// One worker connection: register, then lease as many units as it has free slots, run them
/// (no-op) and report them concurrently, as the agent's unit tasks would, until every unit of
/// the run is evaluated.
async fn worker(
    channel: Channel,
    name: String,
    slots: u32,
    code_bytes: usize,
    total: u64,
    progress: Arc<Progress>,
) -> anyhow::Result<WorkerOutcome> {
    let mut client = WorkerApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let reg = client
        .register(RegisterRequest {
            worker_name: name.clone(),
            held: Vec::new(),
            capabilities: Some(Capabilities {
                eval_slots: slots,
                generate_slots: slots,
                docker: true,
                cached_repos: vec![],
                version: "bench".into(),
                task_images: vec![],
                unprivileged: false,
            }),
        })
        .await?
        .into_inner();
    let mut out = WorkerOutcome {
        leases: Vec::new(),
        empty_leases: Vec::new(),
        completes: Vec::new(),
    };
    while progress.evaluated.load(Ordering::SeqCst) < total {
        let started = Instant::now();
        let reply = client
            .lease_work(LeaseRequest {
                worker_id: reg.worker_id.clone(),
                session: reg.session,
                max_generate: slots,
                max_evaluate: slots,
                wait_ms: 200,
            })
            .await?
            .into_inner();
        let call = Call::since(started);
        anyhow::ensure!(!reply.reregister, "{name}: asked to register again");
        if reply.leases.is_empty() {
            out.empty_leases.push(call);
            continue;
        }
        out.leases.push(call);
        let reports = reply.leases.into_iter().map(|lease| {
            let mut client = client.clone();
            let worker_id = reg.worker_id.clone();
            let progress = progress.clone();
            async move {
                let unit = UnitId::new(lease.instance_id.clone(), lease.round);
                let phase = lease.phase();
                let result_json = match phase {
                    v1::Phase::Generate => generation(unit, code_bytes),
                    v1::Phase::Evaluate => {
                        anyhow::ensure!(
                            !lease.generation_json.is_empty(),
                            "evaluate lease {} without its generation",
                            lease.lease_id
                        );
                        evaluation(unit)
                    }
                    v1::Phase::Unspecified => anyhow::bail!("lease without a phase"),
                };
                let sent = Instant::now();
                let ack = client
                    .complete_unit(CompleteRequest {
                        worker_id,
                        lease: Some(LeaseRef {
                            lease_id: lease.lease_id.clone(),
                            fence: lease.fence,
                        }),
                        phase: lease.phase,
                        result_json,
                    })
                    .await?
                    .into_inner();
                let call = Call::since(sent);
                anyhow::ensure!(ack.accepted, "refused: {}", ack.reason);
                if phase == v1::Phase::Evaluate
                    && progress.evaluated.fetch_add(1, Ordering::SeqCst) + 1 == total
                {
                    *progress.last_report.lock().expect("lock") = Some((call, Instant::now()));
                }
                anyhow::Ok(call)
            }
        });
        for r in futures_util::future::join_all(reports).await {
            out.completes.push(r?);
        }
    }
    Ok(out)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.units > 0 && args.workers > 0 && args.slots > 0 && args.rounds > 0);
    ase_proto::tls::install_crypto_provider();
    let ase = ase_binary(args.ase.clone())?;
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let certs = dir.join("certs");
    certs_init(&ase, &certs, args.workers)?;
    let log = dir.join("coordinator.log");
    let (coordinator, url) =
        start_coordinator(&ase, &dir.join("db"), &certs, &log, &args.coordinator_arg)?;
    let tasks = args.units.div_ceil(args.rounds as usize);
    let total = (tasks * args.rounds as usize) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (elapsed, submit_secs, outcomes, completed_secs, last) = rt.block_on(async {
        let mut client = ClientApiClient::new(channel(&url, &certs, "client-admin").await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let spec = serde_json::json!({
            "model_name": "bench", "batch": "dispatch", "rounds": args.rounds,
        });
        let submit_started = Instant::now();
        let submitted = client
            .submit_run(ase_proto::submit::stream(
                ase_proto::submit::SubmitInputs {
                    run_spec_json: serde_json::to_vec(&spec)?,
                    dataset: dataset(tasks),
                    dataset_name: "bench.json".into(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        let submit_secs = submit_started.elapsed().as_secs_f64();
        anyhow::ensure!(submitted.total_units == total, "{submitted:?}");
        let progress = Arc::new(Progress::default());
        let mut channels = Vec::new();
        for i in 0..args.workers {
            channels.push(channel(&url, &certs, &format!("worker-{}", worker_name(i))).await?);
        }
        let started = Instant::now();
        let handles: Vec<_> = channels
            .into_iter()
            .enumerate()
            .map(|(i, ch)| {
                tokio::spawn(worker(
                    ch,
                    worker_name(i),
                    args.slots,
                    args.code_bytes,
                    total,
                    progress.clone(),
                ))
            })
            .collect();
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await??);
        }
        let (last, finished) = progress
            .last_report
            .lock()
            .expect("lock")
            .context("no report of the last unit")?;
        let elapsed = finished.duration_since(started).as_secs_f64();
        // The run turns completed once its outputs are scored and stored.
        let state = loop {
            let runs = client
                .list_runs(ListRunsRequest {})
                .await?
                .into_inner()
                .runs;
            let run = runs
                .into_iter()
                .find(|r| r.run_id == submitted.run_id)
                .context("the run is not listed")?;
            if run.state == "completed" {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let completed_secs = started.elapsed().as_secs_f64();
        let evaluate = state.evaluate.unwrap_or_default();
        anyhow::ensure!(
            evaluate.done == total,
            "run completed with {} of {total} units evaluated",
            evaluate.done
        );
        anyhow::Ok((elapsed, submit_secs, outcomes, completed_secs, last))
    })?;
    let (hwm_kib, rss_kib) = coordinator.memory_kib()?;
    let status = coordinator.stop()?;
    anyhow::ensure!(
        status.success(),
        "the coordinator stopped with {status} (log: {})",
        log.display()
    );
    let calls = |pick: fn(&WorkerOutcome) -> &Vec<Call>| -> Vec<Call> {
        outcomes
            .iter()
            .flat_map(|o| pick(o).iter().copied())
            .collect()
    };
    let (leases, empty_leases, completes) = (
        calls(|o| &o.leases),
        calls(|o| &o.empty_leases),
        calls(|o| &o.completes),
    );
    let window_start = last.sent.checked_sub(LAST_WINDOW).unwrap_or(last.sent);
    let in_window = |c: &&Call| c.sent >= window_start;
    let sorted = |calls: &mut dyn Iterator<Item = &Call>| -> Vec<u64> {
        let mut us: Vec<u64> = calls.map(|c| c.micros).collect();
        us.sort_unstable();
        us
    };
    let lease_us = sorted(&mut leases.iter());
    let lease_last_us = sorted(&mut leases.iter().filter(in_window));
    let complete_us = sorted(&mut completes.iter());
    let slowest_last_us = sorted(
        &mut leases
            .iter()
            .chain(&empty_leases)
            .chain(&completes)
            .filter(in_window),
    );
    let lease_calls = leases.len() + empty_leases.len();
    println!(
        "units={total} tasks={tasks} rounds={} workers={} slots={}",
        args.rounds, args.workers, args.slots
    );
    println!("submit_seconds={submit_secs:.3}");
    println!("seconds={elapsed:.3} (until the run was scored and completed: {completed_secs:.3})");
    println!(
        "lease_calls={lease_calls} with_work={} lease_ms_p50={:.2} lease_ms_p99={:.2}",
        lease_us.len(),
        percentile(&lease_us, 0.50),
        percentile(&lease_us, 0.99)
    );
    println!(
        "lease_p99_last_s_ms={:.2} ({} calls with work in the last second before the last \
         report)",
        percentile(&lease_last_us, 0.99),
        lease_last_us.len()
    );
    println!(
        "slowest_call_last_s_ms={:.2} (of {} LeaseWork and CompleteUnit calls sent in the last \
         second before the last report or after it)",
        slowest_last_us
            .last()
            .map_or(f64::NAN, |&us| us as f64 / 1000.0),
        slowest_last_us.len()
    );
    println!(
        "complete_ms_p50={:.2} complete_ms_p99={:.2} last_complete_ms={:.2} (the report of \
         the run's last unit)",
        percentile(&complete_us, 0.50),
        percentile(&complete_us, 0.99),
        last.micros as f64 / 1000.0
    );
    println!(
        "coordinator_peak_rss_mb={:.1} coordinator_rss_at_end_mb={:.1}",
        hwm_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0
    );
    println!("units_per_sec={:.1}", total as f64 / elapsed);
    Ok(())
}
