//! `bench outputs`: what finishing a run costs the coordinator: scoring and making every file
//! (upstream's result files, report.json/md/html) for a run of many units, with the same
//! function the coordinator runs (`outputs::build_outputs`). The files go to a sink that
//! counts their bytes. Prints the seconds, the resident memory as each file is made, and the
//! peak above the inputs; last line `outputs_peak_mb=...` (the process's VmHWM).

use ase_common::dataset::DatasetVersion;
use ase_common::scoring::UnitId;
use ase_coordinator::outputs::{
    build_outputs, EvaluationFacts, GenerationFacts, OutputError, OutputSink, RunOutputInput,
    TaskFacts,
};
use ase_coordinator::records::{RunSpecHeader, UnitRecord, UnitState};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Tasks of the run.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Rounds per task (units = tasks x rounds).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Counts bytes and reports memory after each file.
struct CountingSink {
    bytes: u64,
}

struct Counter<'a>(&'a mut u64);

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        *self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl OutputSink for CountingSink {
    fn put(
        &mut self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), OutputError> {
        let mut n = 0u64;
        write(&mut Counter(&mut n)).map_err(|source| OutputError::Sink {
            name: name.to_string(),
            source,
        })?;
        self.bytes += n;
        let (rss, hwm) = memory_mb();
        println!("file {name}: {n} bytes; rss_mb={rss:.1} peak_mb={hwm:.1}");
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tasks > 0 && args.rounds > 0,
        "--tasks and --rounds must be > 0"
    );
    let (rss0, _) = memory_mb();
    let types = ["SQLI", "XSS", "CMDI", "PATHT"];
    let tasks: Vec<TaskFacts> = (0..args.tasks)
        .map(|i| TaskFacts {
            instance_id: format!("bench_{i:06}"),
            version: DatasetVersion::V1,
            vuln_type: types[i % types.len()].to_string(),
            cwe_id: format!("CWE-{}", 20 + i % 7),
            language: ["php", "python", "go", "javascript"][i % 4].to_string(),
            detected_vul_num: 1,
            image: None,
            vuln_file: "a.php".into(),
            vuln_lines: ase_common::dataset::LineRange { start: 1, end: 2 },
        })
        .collect();
    let mut units = Vec::with_capacity(args.tasks * args.rounds as usize);
    let mut generations = BTreeMap::new();
    let mut evaluations = BTreeMap::new();
    for (t, task) in tasks.iter().enumerate() {
        for round in 1..=args.rounds {
            let index = units.len() as u32;
            units.push(UnitRecord {
                unit: UnitId::new(task.instance_id.clone(), round),
                task_index: t as u32,
                state: UnitState::Done,
                attempt: 2,
                phase_failures: 0,
                lease: None,
                generated_by: Some(u64::from(index) * 2 + 1),
                evaluated_by: Some(u64::from(index) * 2 + 2),
                model_calls: 1,
                failures: Vec::new(),
                agent_attempts: Vec::new(),
            });
            // Every fifth generation fails, every third scan finds the vulnerability.
            let success = !index.is_multiple_of(5);
            generations.insert(
                index,
                GenerationFacts {
                    success,
                    time_cost: 1.5,
                    reason: (!success).then(|| "the answer had no code block".to_string()),
                    usage: None,
                    cost_usd: None,
                    agent: None,
                },
            );
            if success {
                evaluations.insert(
                    index,
                    EvaluationFacts::Static {
                        detected_vul_num: i64::from(index.is_multiple_of(3)),
                        baseline: 1,
                        reason: None,
                        detail: None,
                    },
                );
            }
        }
    }
    let header = RunSpecHeader {
        model_name: "bench".into(),
        batch: "outputs".into(),
        rounds: args.rounds,
        ..RunSpecHeader::default()
    };
    let input = RunOutputInput {
        run_id: "bench__outputs",
        header: &header,
        dataset_name: "bench.json",
        dataset_sha256: "0",
        context_sha256: None,
        tasks: &tasks,
        units: &units,
        generations: &generations,
        evaluations: &evaluations,
        created_unix_ms: Some(0),
    };
    let (rss_inputs, _) = memory_mb();
    println!(
        "tasks={} rounds={} units={} rss_before_inputs_mb={rss0:.1} rss_with_inputs_mb={rss_inputs:.1}",
        args.tasks,
        args.rounds,
        units.len()
    );
    let started = Instant::now();
    let mut sink = CountingSink { bytes: 0 };
    let report = build_outputs(&input, &mut sink)?;
    let secs = started.elapsed().as_secs_f64();
    let (_, hwm) = memory_mb();
    println!(
        "seconds={secs:.3} bytes={} report_units={}",
        sink.bytes,
        report.units.len()
    );
    println!("peak_above_inputs_mb={:.1}", hwm - rss_inputs);
    println!("outputs_peak_mb={hwm:.1}");
    Ok(())
}
