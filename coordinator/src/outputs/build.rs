//! What a completed run leaves: scores (common's scoring), our Report, and upstream's files
//! (the `processed_instances.json` and `sast_results.json` / `scan_results.json` inputs, and the
//! result files), each streamed into an [`OutputSink`] as it is made (the coordinator's sink is
//! the [`crate::outputs::store`] folder that `FetchReport` reads).
//!
//! v1 scores against the baseline our own scanner measured (in the evaluation records), not the
//! dataset's `detected_vul_num`: the rules and tool differ from upstream's, so only our own
//! count on the original code is comparable with our count on the generated code. A task none of
//! whose units reached evaluation falls back to the dataset's count (it cannot change a score:
//! a unit without a scan is never secure).

use super::scan_details::{mark_unparsable, task_findings, tool_versions};
use super::store::{OutputStoreError, OutputWriter};
use crate::records::{RunSpecHeader, UnitRecord, UnitState};
use ase_common::dataset::{DatasetVersion, LineRange, Task, TaskSpec};
use ase_common::report::{self, Provenance, Report, RunConfig, Scores, TaskInfo};
use ase_common::scan_findings::StaticScanDetail;
use ase_common::scoring::run::{
    run_version, score_run, RunResults, RunScans, RunScoreError, RunTask, ScoredRun,
};
use ase_common::scoring::v2::V2Scan;
use ase_common::scoring::{Generation, ScoringError, UnitId, UnitOutcome};
use ase_common::unit::{EvaluationRecord, GenerationRecord};
use ase_common::upstream_io;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("run {run_id}: scoring: {source}")]
    Scoring {
        run_id: String,
        source: ScoringError,
    },
    #[error("run {run_id}: {source}")]
    RunName {
        run_id: String,
        source: upstream_io::UpstreamIoError,
    },
    /// The results do not fit the dataset (of the other version, a v1 task without baseline).
    #[error("run {run_id}: {message}")]
    Results { run_id: String, message: String },
    #[error("run {run_id}: the dataset {source}")]
    MixedVersions {
        run_id: String,
        source: ase_common::dataset::MixedVersions,
    },
    #[error(transparent)]
    Store(#[from] OutputStoreError),
    #[error("run outputs, {name}: {source}")]
    Sink { name: String, source: io::Error },
}

impl OutputError {
    /// True when trying again cannot help: a scoring error, or a name the file system refuses
    /// (too long, invalid). A full or failing disk is not one (space can be freed, a disk
    /// replaced): the finish is tried again for that.
    pub fn is_permanent(&self) -> bool {
        let source = match self {
            OutputError::Store(e) => &e.source,
            OutputError::Sink { source, .. } => source,
            _ => return true,
        };
        matches!(
            source.kind(),
            io::ErrorKind::InvalidFilename | io::ErrorKind::InvalidInput
        )
    }
}

/// Where [`build_outputs`] puts each file as it is made: a file is written out and let go
/// before the next one is made, so a run of 100,000 units never has all its files in memory.
pub trait OutputSink {
    fn put(
        &mut self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), OutputError>;
}

impl OutputSink for OutputWriter {
    fn put(
        &mut self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), OutputError> {
        Ok(self.file(name, write)?)
    }
}

/// Files kept in memory (tests, small runs).
impl OutputSink for Vec<(String, Vec<u8>)> {
    fn put(
        &mut self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), OutputError> {
        let mut bytes = Vec::new();
        write(&mut bytes).map_err(|source| OutputError::Sink {
            name: name.to_string(),
            source,
        })?;
        self.push((name.to_string(), bytes));
        Ok(())
    }
}

fn put_python_json(
    sink: &mut dyn OutputSink,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), OutputError> {
    sink.put(name, &mut |w| upstream_io::write_python_json(w, value))
}

fn put_text(sink: &mut dyn OutputSink, name: &str, text: &str) -> Result<(), OutputError> {
    sink.put(name, &mut |w| w.write_all(text.as_bytes()))
}

/// What scoring needs of a task (the rest of it stays in the store).
#[derive(Debug, Clone)]
pub struct TaskFacts {
    pub instance_id: String,
    pub version: DatasetVersion,
    pub vuln_type: String,
    pub cwe_id: String,
    pub language: String,
    /// v1: the dataset's count on the original code; 0 for v2.
    pub detected_vul_num: i64,
    /// v2: the image reference the task names.
    pub image: Option<String>,
    /// The masked file and lines (the report shows findings against them).
    pub vuln_file: String,
    pub vuln_lines: LineRange,
}

impl TaskFacts {
    pub fn of(t: &Task) -> Self {
        TaskFacts {
            instance_id: t.instance_id.clone(),
            version: t.version(),
            vuln_type: t.vuln_type.clone(),
            cwe_id: t.cwe_id.clone(),
            language: t.language.clone(),
            image: match &t.spec {
                TaskSpec::V1(_) => None,
                TaskSpec::V2(s) => Some(s.image.clone()),
            },
            detected_vul_num: match &t.spec {
                TaskSpec::V1(s) => s.detected_vul_num,
                TaskSpec::V2(_) => 0,
            },
            vuln_file: t.vuln_file.clone(),
            vuln_lines: t.vuln_lines,
        }
    }
}

/// Longest reason (in characters) kept per record for the report: the records in the store
/// keep everything, the report needs the gist, and memory at finishing stays bounded.
const REASON_CHARS: usize = 500;

fn short_reason(r: Option<&str>) -> Option<String> {
    r.map(|r| {
        let mut it = r.char_indices().skip(REASON_CHARS);
        match it.next() {
            Some((cut, _)) => format!("{}...", &r[..cut]),
            None => r.to_string(),
        }
    })
}

/// What scoring and the report need of a committed generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationFacts {
    pub success: bool,
    pub time_cost: f64,
    /// Why it failed (failed generations only), shortened.
    pub reason: Option<String>,
    pub usage: Option<ase_common::unit::TokenUsage>,
    pub cost_usd: Option<f64>,
    /// Agent mode: the agent's figures (its transcript written apart, see `agent_section`).
    pub agent: Option<super::AgentFacts>,
}

impl From<&GenerationRecord> for GenerationFacts {
    fn from(g: &GenerationRecord) -> Self {
        GenerationFacts {
            success: g.success,
            time_cost: g.time_cost,
            reason: if g.success {
                None
            } else {
                short_reason(g.reason.as_deref())
            },
            usage: g.usage,
            cost_usd: g.cost_usd,
            agent: g.agent.as_deref().map(super::AgentFacts::from),
        }
    }
}

/// What scoring and the report need of a committed evaluation (not its step logs).
#[derive(Debug, Clone, PartialEq)]
pub enum EvaluationFacts {
    Static {
        detected_vul_num: i64,
        baseline: i64,
        reason: Option<String>,
        /// Where the findings are and what did not parse (boxed: most facts are small).
        detail: Option<Box<StaticScanDetail>>,
    },
    Dynamic {
        checks: V2Scan,
        reason: Option<String>,
        /// The image the checks ran in, by digest (or image id).
        image_digest: Option<String>,
    },
}

impl EvaluationFacts {
    /// What the worker recorded about the evaluation, if anything.
    pub fn reason(&self) -> Option<&str> {
        match self {
            EvaluationFacts::Static { reason, .. } | EvaluationFacts::Dynamic { reason, .. } => {
                reason.as_deref()
            }
        }
    }
}

impl From<&EvaluationRecord> for EvaluationFacts {
    fn from(e: &EvaluationRecord) -> Self {
        match e {
            EvaluationRecord::Static {
                detected_vul_num,
                baseline,
                reason,
                scan,
                ..
            } => EvaluationFacts::Static {
                detected_vul_num: *detected_vul_num,
                baseline: *baseline,
                reason: short_reason(reason.as_deref()),
                detail: scan.clone().map(Box::new),
            },
            EvaluationRecord::Dynamic {
                checks,
                reason,
                image_digest,
                ..
            } => EvaluationFacts::Dynamic {
                checks: *checks,
                reason: short_reason(reason.as_deref()),
                image_digest: image_digest.clone(),
            },
        }
    }
}

/// A row of upstream's `processed_instances.json`: upstream's generators write the generation
/// time as `time`, the key upstream's v2 scorer reads.
#[derive(serde::Serialize)]
struct ProcessedEntry {
    success: bool,
    #[serde(rename = "time")]
    time_cost: f64,
}

/// A row of upstream's `sast_results.json`.
#[derive(serde::Serialize)]
struct SastRow {
    instance_id: String,
    detected_vul_num: i64,
}

/// A JSON object with its keys in the given order.
struct OrderedMap<'a, V>(&'a [(String, V)]);

impl<V: serde::Serialize> serde::Serialize for OrderedMap<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Everything a run's outputs are computed from.
pub struct RunOutputInput<'a> {
    pub run_id: &'a str,
    pub header: &'a RunSpecHeader,
    pub dataset_name: &'a str,
    pub dataset_sha256: &'a str,
    pub context_sha256: Option<&'a str>,
    pub tasks: &'a [TaskFacts],
    pub units: &'a [UnitRecord],
    /// Committed records by unit index.
    pub generations: &'a BTreeMap<u32, GenerationFacts>,
    pub evaluations: &'a BTreeMap<u32, EvaluationFacts>,
    /// When the run was submitted (the report's provenance), if known.
    pub created_unix_ms: Option<u64>,
}

/// The dataset's version ([`run_version`], the one check); a dataset mixing both is refused.
/// An empty one is v1 here: its scoring then says it has nothing to score.
pub fn dataset_version<'a>(
    run_id: &str,
    tasks: impl IntoIterator<Item = (&'a str, DatasetVersion)>,
) -> Result<DatasetVersion, OutputError> {
    match run_version(tasks) {
        Ok(v) => Ok(v),
        Err(RunScoreError::Scoring(ScoringError::NoTasks)) => Ok(DatasetVersion::V1),
        Err(e) => Err(score_error(run_id, e)),
    }
}

/// The one place a scoring failure becomes the outputs'.
fn score_error(run_id: &str, e: RunScoreError) -> OutputError {
    let run_id = run_id.to_string();
    match e {
        RunScoreError::MixedVersions(source) => OutputError::MixedVersions { run_id, source },
        RunScoreError::Scoring(source) => OutputError::Scoring { run_id, source },
        e => OutputError::Results {
            run_id,
            message: e.to_string(),
        },
    }
}

/// Scores the run and puts its files into `sink` one at a time; returns the report (redacted,
/// as written). A scoring error leaves the files already put in the sink.
pub fn build_outputs(
    input: &RunOutputInput<'_>,
    sink: &mut dyn OutputSink,
) -> Result<Report, OutputError> {
    let run_id = input.run_id.to_string();
    let run =
        upstream_io::run_name(&input.header.model_name, &input.header.batch).map_err(|source| {
            OutputError::RunName {
                run_id: run_id.clone(),
                source,
            }
        })?;
    let generations: Vec<Generation> = input
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| match input.generations.get(&(i as u32)) {
            Some(g) => Generation {
                unit: u.unit.clone(),
                success: g.success,
                time_cost: g.time_cost,
            },
            // Out of retries before a generation was committed: a failed generation.
            None => Generation {
                unit: u.unit.clone(),
                success: false,
                time_cost: 0.0,
            },
        })
        .collect();
    // Typed rows rather than a JSON value per unit: the same bytes at a fraction of the memory.
    let processed: Vec<(String, ProcessedEntry)> = generations
        .iter()
        .map(|g| {
            (
                g.unit.dir_name(),
                ProcessedEntry {
                    success: g.success,
                    time_cost: g.time_cost,
                },
            )
        })
        .collect();
    put_python_json(
        sink,
        &format!("{run}/{}", upstream_io::PROCESSED_FILE),
        &OrderedMap(&processed),
    )?;
    drop(processed);
    let rounds = input.header.rounds;
    let version = dataset_version(
        input.run_id,
        input
            .tasks
            .iter()
            .map(|t| (t.instance_id.as_str(), t.version)),
    )?;
    let mut tasks: Vec<RunTask> = input
        .tasks
        .iter()
        .map(|t| RunTask {
            instance_id: t.instance_id.clone(),
            version: t.version,
            vuln_type: t.vuln_type.clone(),
            cwe_id: t.cwe_id.clone(),
            baseline: (t.version == DatasetVersion::V1).then_some(t.detected_vul_num),
        })
        .collect();
    let scans = match version {
        DatasetVersion::V1 => {
            let mut baseline_of: BTreeMap<&str, i64> = BTreeMap::new();
            let mut scans = BTreeMap::new();
            for (i, u) in input.units.iter().enumerate() {
                if let Some(EvaluationFacts::Static {
                    detected_vul_num,
                    baseline,
                    ..
                }) = input.evaluations.get(&(i as u32))
                {
                    scans.insert(u.unit.clone(), *detected_vul_num);
                    baseline_of
                        .entry(input.tasks[u.task_index as usize].instance_id.as_str())
                        .or_insert(*baseline);
                }
            }
            // Our scanner's baseline where a unit was scanned (see the module doc).
            for t in tasks.iter_mut() {
                if let Some(b) = baseline_of.get(t.instance_id.as_str()) {
                    t.baseline = Some(*b);
                }
            }
            let sast: Vec<SastRow> = scans
                .iter()
                .map(|(unit, n)| SastRow {
                    instance_id: unit.dir_name(),
                    detected_vul_num: *n,
                })
                .collect();
            put_python_json(
                sink,
                &format!("{run}/{}", upstream_io::SAST_RESULTS_FILE),
                &sast,
            )?;
            RunScans::V1(scans)
        }
        DatasetVersion::V2 => {
            let mut scans = BTreeMap::new();
            for (i, u) in input.units.iter().enumerate() {
                if let Some(EvaluationFacts::Dynamic { checks, .. }) =
                    input.evaluations.get(&(i as u32))
                {
                    scans.insert(u.unit.clone(), *checks);
                }
            }
            let listed: Vec<Value> = scans
                .iter()
                .map(|(unit, s)| {
                    json!({
                        "instance_id": unit.dir_name(),
                        "completion": s.completion,
                        "image_status_check": s.image_status_check,
                        "test_case_check": s.test_case_check,
                        "poc_check": s.poc_check,
                    })
                })
                .collect();
            put_python_json(
                sink,
                &format!("{run}/{}", upstream_io::SCAN_RESULTS_FILE),
                &listed,
            )?;
            RunScans::V2(scans)
        }
    };
    let scored = score_run(RunResults {
        rounds,
        tasks,
        generations,
        scans,
    })
    .map_err(|e| score_error(input.run_id, e))?;
    let (scores, mut outcomes) = match scored {
        ScoredRun::V1 {
            score,
            mut outcomes,
        } => {
            put_python_json(
                sink,
                &format!("{run}/{}", upstream_io::V1_EVAL_RESULT_FILE),
                &upstream_io::v1_eval_result(&score),
            )?;
            put_text(
                sink,
                &format!("{run}_eval_result.txt"),
                &upstream_io::v1_text_report(&run, &score),
            )?;
            mark_unparsable(input, &mut outcomes);
            (Scores::V1(score), outcomes)
        }
        ScoredRun::V2 { score, outcomes } => {
            put_python_json(
                sink,
                &format!("{run}_score.json"),
                &upstream_io::v2_score_json(&score),
            )?;
            (Scores::V2(score), outcomes)
        }
    };
    let index_of: std::collections::HashMap<&UnitId, usize> = input
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| (&u.unit, i))
        .collect();
    for outcome in outcomes.iter_mut() {
        let Some(&i) = index_of.get(&outcome.unit) else {
            continue;
        };
        let u = &input.units[i];
        // Tokens and cost were spent even when the unit later ran out of retries.
        let index = i as u32;
        if let Some(g) = input.generations.get(&index) {
            let usage = &mut outcome.usage;
            usage.prompt_tokens = g.usage.as_ref().map(|u| u.prompt_tokens);
            usage.completion_tokens = g.usage.as_ref().map(|u| u.completion_tokens);
            usage.total_tokens = g.usage.as_ref().map(|u| u.total_tokens);
            usage.cost_usd = g.cost_usd;
        }
        // Units that ran out of retries say why, with every recorded reason.
        if u.state == UnitState::Failed {
            outcome.set_error(failure_summary(u));
            continue;
        }
        // The scorer knows the verdict; the records know what the worker saw.
        let i = index;
        let generation_reason = input
            .generations
            .get(&i)
            .filter(|g| !g.success)
            .and_then(|g| g.reason.as_deref());
        let evaluation_reason = input.evaluations.get(&i).and_then(EvaluationFacts::reason);
        for detail in [generation_reason, evaluation_reason].into_iter().flatten() {
            outcome.reason = format!("{}: {detail}", outcome.reason);
        }
    }
    drop(index_of);
    let mut report = make_report(input, scores, outcomes).with_findings(task_findings(input));
    if let Some(agent) = super::agent_section::agent_section(input.units, input.generations) {
        report = report.with_agent(agent);
    }
    let report = report.into_redacted();
    sink.put(report::REPORT_JSON, &mut |w| {
        serde_json::to_writer_pretty(&mut *w, &report)?;
        w.write_all(b"\n")
    })?;
    for (name, text) in report::rendered_files(&report) {
        put_text(sink, name, &text)?;
    }
    Ok(report)
}

/// `failed after N attempts: reason; reason`.
pub fn failure_summary(u: &UnitRecord) -> String {
    let counted: Vec<&str> = u
        .failures
        .iter()
        .filter(|f| f.counted)
        .map(|f| f.reason.as_str())
        .collect();
    format!(
        "out of retries after {} infrastructure failures: {}",
        counted.len(),
        counted.join("; ")
    )
}

/// Each v2 task's image reference -> the image its units ran in (`name@sha256:…`, or the id
/// of an image that never came from a registry). The run pins each task to the image of its
/// first evaluation; should units of one reference still have run in several images (their
/// first evaluations raced a moved tag), all are listed, space-separated, so it shows.
fn images_ran_in(input: &RunOutputInput<'_>) -> BTreeMap<String, String> {
    let rounds = input.header.rounds.max(1);
    let mut seen: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for (index, facts) in input.evaluations {
        let EvaluationFacts::Dynamic {
            image_digest: Some(digest),
            ..
        } = facts
        else {
            continue;
        };
        let task = input.tasks.get((index / rounds) as usize);
        if let Some(reference) = task.and_then(|t| t.image.as_deref()) {
            seen.entry(reference).or_default().insert(digest);
        }
    }
    seen.into_iter()
        .map(|(r, ds)| (r.to_string(), ds.into_iter().collect::<Vec<_>>().join(" ")))
        .collect()
}

fn make_report(input: &RunOutputInput<'_>, scores: Scores, units: Vec<UnitOutcome>) -> Report {
    let h = input.header;
    let mut config = RunConfig {
        model: h.model_name.clone(),
        batch: h.batch.clone(),
        rounds: h.rounds,
        base_url: None,
        temperature: h.temperature,
        top_p: h.top_p,
        max_context_token: h.max_context_token,
        max_gen_token: h.max_gen_token,
        extra: BTreeMap::new(),
    };
    if let Some(url) = &h.base_url {
        config.set_base_url(url);
    }
    config
        .extra
        .insert("run_id".into(), input.run_id.to_string());
    let provenance = Provenance {
        dataset_path: input.dataset_name.to_string(),
        dataset_sha256: input.dataset_sha256.to_string(),
        context_sha256: input.context_sha256.map(str::to_string),
        tool_versions: tool_versions(input),
        image_ids: images_ran_in(input),
        config,
        started_at: input.created_unix_ms.and_then(report::rfc3339_from_unix_ms),
    };
    let tasks = input.tasks.iter().map(|t| TaskInfo {
        instance_id: t.instance_id.clone(),
        vuln_type: t.vuln_type.clone(),
        cwe_id: t.cwe_id.clone(),
        language: t.language.clone(),
    });
    Report::new(provenance, units, scores)
        .with_tasks(tasks)
        .with_unavailable(input.header.unavailable.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_error(errno: i32) -> OutputError {
        OutputError::Sink {
            name: "x".into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// What the file system says about a real name that is too long: the finish stops trying
    /// (a retry meets it again forever); a full disk is waited out.
    #[test]
    fn provenance_names_the_image_each_tasks_units_ran_in_and_shows_a_mixed_one() {
        let header = RunSpecHeader {
            rounds: 2,
            ..RunSpecHeader::default()
        };
        let task = |id: &str, image: &str| TaskFacts {
            instance_id: id.into(),
            version: DatasetVersion::V2,
            vuln_type: String::new(),
            cwe_id: String::new(),
            language: String::new(),
            detected_vul_num: 0,
            vuln_file: "a.c".into(),
            vuln_lines: LineRange { start: 1, end: 2 },
            image: Some(image.into()),
        };
        let tasks = [
            task("a", "reg/a:1"),
            task("b", "reg/b:1"),
            task("c", "reg/c:1"),
        ];
        let ran = |d: Option<&str>| EvaluationFacts::Dynamic {
            checks: V2Scan::default(),
            reason: None,
            image_digest: d.map(str::to_string),
        };
        // a: both rounds in its pin; b: its rounds raced a moved tag; c: no container ran.
        let evaluations = BTreeMap::from([
            (0, ran(Some("reg/a@sha256:1"))),
            (1, ran(Some("reg/a@sha256:1"))),
            (2, ran(Some("reg/b@sha256:2"))),
            (3, ran(Some("reg/b@sha256:3"))),
            (4, ran(None)),
        ]);
        let input = RunOutputInput {
            run_id: "r",
            header: &header,
            dataset_name: "d.json",
            dataset_sha256: "",
            context_sha256: None,
            tasks: &tasks,
            units: &[],
            generations: &BTreeMap::new(),
            evaluations: &evaluations,
            created_unix_ms: None,
        };
        assert_eq!(
            images_ran_in(&input),
            BTreeMap::from([
                ("reg/a:1".to_string(), "reg/a@sha256:1".to_string()),
                (
                    "reg/b:1".to_string(),
                    "reg/b@sha256:2 reg/b@sha256:3".to_string()
                ),
            ])
        );
    }

    #[test]
    fn a_refused_file_name_is_permanent_and_a_full_disk_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let too_long = std::fs::File::create(dir.path().join("n".repeat(300))).unwrap_err();
        let e = OutputError::Sink {
            name: "run".into(),
            source: too_long,
        };
        assert!(e.is_permanent(), "{e}");
        assert!(!sink_error(28).is_permanent(), "ENOSPC is waited out");
        assert!(!sink_error(5).is_permanent(), "EIO is waited out");
        let mixed = ase_common::dataset::single_version([
            ("a", DatasetVersion::V1),
            ("b", DatasetVersion::V2),
        ])
        .unwrap_err();
        assert!(OutputError::MixedVersions {
            run_id: "r".into(),
            source: mixed
        }
        .is_permanent());
    }
}
