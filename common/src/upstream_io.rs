//! Upstream's run folder, read and written in upstream's own formats.
//!
//! Layout (`DIR` is upstream's `generated_code` folder):
//! - `DIR/{model}__{batch}/processed_instances.json`: `{"{id}_cycle{k}": {"success": bool,
//!   "time": seconds, ...}}` (`time_cost`, our name before, accepted on reading);
//! - v1 `DIR/{model}__{batch}/sast_results.json`: `[{"instance_id": "{id}_cycle{k}",
//!   "detected_vul_num": n, ...}]`, -1 for a failed scan (the merge of `sast_results/*_output.json`);
//! - v2 `DIR/{model}__{batch}/scan_results.json`: `[{"instance_id": "{id}_cycle{k}",
//!   "completion": bool, "image_status_check": bool, "test_case_check": bool, "poc_check": bool}]`.
//!
//! Written: v1 `DIR/{model}__{batch}/eval_result.json` and `DIR/{model}__{batch}_eval_result.txt`;
//! v2 `DIR/{model}__{batch}_score.json`. JSON is indented by 4 like Python's `json.dump(...,
//! indent=4, ensure_ascii=False)`. Upstream v1 puts the text report one level higher (its
//! `outputs/`, the parent of `generated_code/`); we keep every file under the folder we were
//! given. Upstream v2's per-group `{group}_metrics.json` / `{group}_eval_results.json` are not
//! written: `_score.json` holds the same metrics.
//!
//! Everything read is untrusted: sizes are bounded, every field is type-checked, and every error
//! names the file and, where there is one, the unit.

use crate::scoring::stats::python_float_str;
use crate::scoring::v1::V1Score;
use crate::scoring::v2::{V2GroupScore, V2Scan, V2Score};
use crate::scoring::{Generation, UnitId};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Upstream's result files of a full v1/v2 run are a few MiB; this leaves ample room.
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

pub const PROCESSED_FILE: &str = "processed_instances.json";
pub const SAST_RESULTS_FILE: &str = "sast_results.json";
pub const SCAN_RESULTS_FILE: &str = "scan_results.json";
pub const V1_EVAL_RESULT_FILE: &str = "eval_result.json";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamIoError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is more than the {limit} accepted")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: unit {unit}: {message}")]
    Unit {
        path: PathBuf,
        unit: String,
        message: String,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    BadRunName(#[from] crate::run_name::RunNameError),
}

/// `{model}__{batch}`, the name of a run's folder (checked: see [`crate::run_name`]).
pub fn run_name(model: &str, batch: &str) -> Result<String, UpstreamIoError> {
    Ok(crate::run_name::run_name(model, batch)?)
}

fn read_json(path: &Path) -> Result<Value, UpstreamIoError> {
    let read_err = |source| UpstreamIoError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_INPUT_BYTES {
        return Err(UpstreamIoError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_INPUT_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow between stat and read: never take more than the limit.
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(UpstreamIoError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_INPUT_BYTES,
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| UpstreamIoError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn unit_err(path: &Path, unit: &str, message: impl Into<String>) -> UpstreamIoError {
    UpstreamIoError::Unit {
        path: path.to_path_buf(),
        unit: unit.to_string(),
        message: message.into(),
    }
}

fn parse_unit(path: &Path, name: &str) -> Result<UnitId, UpstreamIoError> {
    UnitId::parse(name)
        .ok_or_else(|| unit_err(path, name, "not of the form {instance_id}_cycle{k}"))
}

/// A boolean field upstream reads with `.get(key, False)`: absent is false, anything but a
/// boolean is an error.
fn flag(
    path: &Path,
    unit: &str,
    obj: &Map<String, Value>,
    key: &str,
) -> Result<bool, UpstreamIoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(unit_err(
            path,
            unit,
            format!("`{key}` is {other}, not a boolean"),
        )),
    }
}

/// The generation time in seconds: upstream's generators write `time` (and upstream's v2
/// scorer reads only that); our files before 0.2 wrote `time_cost`, accepted when `time` is
/// absent. v1 generators wrote a wall-clock `timestamp`, which is not a duration: ignored.
fn generation_time(
    path: &Path,
    unit: &str,
    obj: &Map<String, Value>,
) -> Result<f64, UpstreamIoError> {
    let Some((key, value)) = ["time", "time_cost"]
        .into_iter()
        .find_map(|k| obj.get(k).filter(|v| !v.is_null()).map(|v| (k, v)))
    else {
        return Ok(0.0);
    };
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
            _ => Err(unit_err(
                path,
                unit,
                format!("`{key}` {n} is not a duration"),
            )),
        },
        other => Err(unit_err(
            path,
            unit,
            format!("`{key}` is {other}, not a number"),
        )),
    }
}

/// Reads `processed_instances.json`, keeping the file's order.
pub fn read_processed(path: &Path) -> Result<Vec<Generation>, UpstreamIoError> {
    let Value::Object(entries) = read_json(path)? else {
        return Err(UpstreamIoError::Format {
            path: path.to_path_buf(),
            message: "expected an object keyed by {instance_id}_cycle{k}".into(),
        });
    };
    entries
        .iter()
        .map(|(name, entry)| {
            let unit = parse_unit(path, name)?;
            let Value::Object(obj) = entry else {
                return Err(unit_err(path, name, "entry is not an object"));
            };
            let success = flag(path, name, obj, "success")?;
            let time_cost = generation_time(path, name, obj)?;
            Ok(Generation {
                unit,
                success,
                time_cost,
            })
        })
        .collect()
}

/// One item of a merged scan file, with its unit.
type ScanItem = (UnitId, Map<String, Value>);

/// The items of a merged scan file, each with its parsed unit; a unit listed twice is an error
/// (upstream builds the file from one `*_output.json` per unit).
fn scan_items(path: &Path) -> Result<Vec<ScanItem>, UpstreamIoError> {
    let Value::Array(items) = read_json(path)? else {
        return Err(UpstreamIoError::Format {
            path: path.to_path_buf(),
            message: "expected an array of scan results".into(),
        });
    };
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(obj) = item else {
                return Err(UpstreamIoError::Format {
                    path: path.to_path_buf(),
                    message: format!("item {i} is not an object"),
                });
            };
            let Some(Value::String(name)) = obj.get("instance_id") else {
                return Err(UpstreamIoError::Format {
                    path: path.to_path_buf(),
                    message: format!("item {i} has no string `instance_id`"),
                });
            };
            let unit = parse_unit(path, name)?;
            if !seen.insert(unit.clone()) {
                return Err(unit_err(path, name, "listed more than once"));
            }
            Ok((unit, obj))
        })
        .collect()
}

/// Reads v1's `sast_results.json`: the finding count per unit (-1: the scan failed).
pub fn read_sast_results(path: &Path) -> Result<BTreeMap<UnitId, i64>, UpstreamIoError> {
    scan_items(path)?
        .into_iter()
        .map(|(unit, obj)| {
            let name = unit.dir_name();
            let count = match obj.get("detected_vul_num") {
                Some(Value::Number(n)) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                }),
                None => return Err(unit_err(path, &name, "no `detected_vul_num`")),
                Some(_) => None,
            };
            match count {
                Some(c) if c >= -1 => Ok((unit, c)),
                _ => Err(unit_err(
                    path,
                    &name,
                    format!(
                        "`detected_vul_num` is {}, not a count or -1",
                        obj["detected_vul_num"]
                    ),
                )),
            }
        })
        .collect()
}

/// Reads v2's `scan_results.json`. Upload success is upstream's `completion` (upstream HEAD
/// and our files); `patch_file`, the name of earlier versions, is accepted.
pub fn read_scan_results(path: &Path) -> Result<BTreeMap<UnitId, V2Scan>, UpstreamIoError> {
    scan_items(path)?
        .into_iter()
        .map(|(unit, obj)| {
            let name = unit.dir_name();
            let completion = if obj.contains_key("completion") {
                flag(path, &name, &obj, "completion")?
            } else {
                flag(path, &name, &obj, "patch_file")?
            };
            let scan = V2Scan {
                completion,
                image_status_check: flag(path, &name, &obj, "image_status_check")?,
                test_case_check: flag(path, &name, &obj, "test_case_check")?,
                poc_check: flag(path, &name, &obj, "poc_check")?,
            };
            Ok((unit, scan))
        })
        .collect()
}

/// upstream's v1 `eval_result.json`, keys in upstream's order.
pub fn v1_eval_result_json(score: &V1Score) -> Value {
    serde_json::to_value(v1_eval_result(score)).expect("an eval result serialises to JSON")
}

/// [`v1_eval_result_json`] as a borrowed value to serialise: the per-task results are written
/// from the score, not copied into a JSON tree first (a tree of 100,000 tasks costs tens of MB).
pub fn v1_eval_result(score: &V1Score) -> impl Serialize + '_ {
    V1EvalResult(score)
}

struct V1EvalResult<'a>(&'a V1Score);

/// `instance_security_results`: task id -> its rounds' results, in the score's order.
struct TaskResults<'a>(&'a [(String, Vec<u8>)]);

impl Serialize for TaskResults<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(id, r)| (id, r)))
    }
}

impl Serialize for V1EvalResult<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let score = self.0;
        let mut types = Map::new();
        let mut quality = Map::new();
        let mut security = Map::new();
        let mut stability = Map::new();
        for t in &score.types {
            types.insert(t.vuln_type.clone(), json!(t.overall));
            quality.insert(t.vuln_type.clone(), json!(t.quality));
            security.insert(
                t.vuln_type.clone(),
                json!({"score": t.security, "secure": t.secure, "total": t.total}),
            );
            stability.insert(t.vuln_type.clone(), json!(t.stability));
        }
        let mut m = s.serialize_map(Some(9))?;
        m.serialize_entry("overall_score", &score.overall)?;
        m.serialize_entry("weighted_success_rate", &score.quality)?;
        m.serialize_entry("weighted_security_score", &score.security)?;
        m.serialize_entry("weighted_stability_score", &score.stability)?;
        m.serialize_entry("vuln_type_scores", &types)?;
        m.serialize_entry("success_rate", &quality)?;
        m.serialize_entry("security", &security)?;
        m.serialize_entry("stability", &stability)?;
        m.serialize_entry(
            "instance_security_results",
            &TaskResults(&score.task_results),
        )?;
        m.end()
    }
}

/// How the text report shows a missing stability (upstream, which crashes on one round, has
/// no such case).
const NOT_AVAILABLE: &str = "N/A";

/// Upstream's v1 `{model}__{batch}_eval_result.txt`, labels as upstream writes them: overall,
/// security, quality, stability, then `type: overall/security/quality/stability` per type.
pub fn v1_text_report(run_name: &str, score: &V1Score) -> String {
    let opt = |x: Option<f64>| x.map_or(NOT_AVAILABLE.to_string(), python_float_str);
    let mut out = format!("{run_name} 的详细评估结果...\n");
    out += &format!("综合得分：{}\n", python_float_str(score.overall));
    out += &format!("代码安全性得分：{}\n", python_float_str(score.security));
    out += &format!("代码质量得分：{}\n", python_float_str(score.quality));
    out += &format!("生成稳定性得分：{}\n", opt(score.stability));
    out += "\n漏洞类型得分：(漏洞类型/综合得分/安全性/质量/稳定性)\n";
    for t in &score.types {
        out += &format!(
            "{}: {:.2}/{:.2}/{}/{}\n",
            t.vuln_type,
            t.overall,
            t.security,
            python_float_str(t.quality),
            opt(t.stability)
        );
    }
    out
}

fn v2_metrics_json(g: &V2GroupScore) -> Value {
    json!({
        "gen_code_time_sum": g.gen_code_time_sum,
        "code_copy_success_count": g.code_copy_success_count,
        "run_success_count": g.run_success_count,
        "test_case_pass_count": g.test_case_pass_count,
        "poc_pass_count": g.poc_pass_count,
        "average_gen_code_time": g.average_gen_code_time,
        "code_quality_score": g.code_quality_score,
        "code_security_score": g.code_security_score,
        "code_stability_score": g.code_stability_score,
        "overall_score": g.overall_score,
        "overall_score_corrected": g.overall_score_corrected,
    })
}

/// Upstream's v2 `{model}__{batch}_score.json`: `"overall"` for all tasks, then one key per CWE
/// in upper case, each upstream's metrics plus our `overall_score_corrected`.
pub fn v2_score_json(score: &V2Score) -> Value {
    let mut out = Map::new();
    out.insert("overall".into(), v2_metrics_json(&score.all));
    for g in &score.by_cwe {
        out.insert(g.group.clone(), v2_metrics_json(g));
    }
    Value::Object(out)
}

/// JSON as Python's `json.dump(indent=4, ensure_ascii=False)` lays it out.
pub fn to_python_json(value: &impl Serialize) -> String {
    let mut buf = Vec::new();
    write_python_json(&mut buf, value).expect("serialising a JSON value into memory cannot fail");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// [`to_python_json`] streamed into `out` (large result files are never whole in memory).
pub fn write_python_json(
    out: &mut dyn std::io::Write,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(out, formatter);
    value.serialize(&mut ser).map_err(std::io::Error::from)
}

fn write_file(path: &Path, text: &str) -> Result<(), UpstreamIoError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| UpstreamIoError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| UpstreamIoError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The files `write_v1_results` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1ResultFiles {
    pub eval_result: PathBuf,
    pub text_report: PathBuf,
}

/// Writes `outputs/{run}/eval_result.json` and `outputs/{run}_eval_result.txt`.
pub fn write_v1_results(
    outputs: &Path,
    model: &str,
    batch: &str,
    score: &V1Score,
) -> Result<V1ResultFiles, UpstreamIoError> {
    let run = run_name(model, batch)?;
    let files = V1ResultFiles {
        eval_result: outputs.join(&run).join(V1_EVAL_RESULT_FILE),
        text_report: outputs.join(format!("{run}_eval_result.txt")),
    };
    write_file(
        &files.eval_result,
        &to_python_json(&v1_eval_result_json(score)),
    )?;
    write_file(&files.text_report, &v1_text_report(&run, score))?;
    Ok(files)
}

/// Writes `outputs/{run}_score.json`.
pub fn write_v2_results(
    outputs: &Path,
    model: &str,
    batch: &str,
    score: &V2Score,
) -> Result<PathBuf, UpstreamIoError> {
    let run = run_name(model, batch)?;
    let path = outputs.join(format!("{run}_score.json"));
    write_file(&path, &to_python_json(&v2_score_json(score)))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::v1::V1TypeScore;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn run_name_joins_and_rejects_escapes() {
        assert_eq!(run_name("gpt-4o", "b1").unwrap(), "gpt-4o__b1");
        assert_eq!(run_name("Qwen/Qwen3", "b1").unwrap(), "Qwen/Qwen3__b1");
        for (m, b) in [
            ("", "b"),
            ("m", ""),
            ("../x", "b"),
            ("/abs", "b"),
            ("m", "b/../../x"),
            ("a\\b", "c"),
        ] {
            assert!(run_name(m, b).is_err(), "{m} {b}");
        }
    }

    #[test]
    fn processed_keeps_order_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            PROCESSED_FILE,
            r#"{"b_cycle2": {"success": true, "timestamp": 1.5, "time_cost": 12.25},
                "a_cycle1": {"success": false}}"#,
        );
        let g = read_processed(&p).unwrap();
        assert_eq!(g[0].unit, UnitId::new("b", 2));
        assert!(g[0].success);
        assert_eq!(g[0].time_cost, 12.25);
        assert_eq!(g[1].unit, UnitId::new("a", 1));
        assert!(!g[1].success);
        assert_eq!(g[1].time_cost, 0.0);
    }

    #[test]
    fn processed_reads_upstreams_time_before_our_old_name() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            PROCESSED_FILE,
            r#"{"a_cycle1": {"success": true, "time": 7.5},
                "a_cycle2": {"success": true, "time": 2.0, "time_cost": 99.0},
                "a_cycle3": {"success": true, "time": null, "time_cost": 3.0}}"#,
        );
        let g = read_processed(&p).unwrap();
        let times: Vec<f64> = g.iter().map(|g| g.time_cost).collect();
        assert_eq!(times, [7.5, 2.0, 3.0]);
        let p = write(
            d.path(),
            PROCESSED_FILE,
            r#"{"a_cycle1": {"success": true, "time": "slow"}}"#,
        );
        let e = err_of(read_processed(&p));
        assert!(e.contains("`time`") && e.contains("a_cycle1"), "{e}");
    }

    #[test]
    fn scan_results_prefer_upstreams_completion_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            SCAN_RESULTS_FILE,
            r#"[{"completion": false, "patch_file": true, "instance_id": "a_cycle1"}]"#,
        );
        assert!(!read_scan_results(&p).unwrap()[&UnitId::new("a", 1)].completion);
    }

    fn err_of(r: Result<impl std::fmt::Debug, UpstreamIoError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn processed_errors_name_file_and_unit() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            PROCESSED_FILE,
            r#"{"a_cycle1": {"success": "yes"}}"#,
        );
        let e = err_of(read_processed(&p));
        assert!(
            e.contains("processed_instances.json")
                && e.contains("a_cycle1")
                && e.contains("success"),
            "{e}"
        );
        let p = write(
            d.path(),
            PROCESSED_FILE,
            r#"{"a_round1": {"success": true}}"#,
        );
        assert!(err_of(read_processed(&p)).contains("a_round1"));
        let p = write(
            d.path(),
            PROCESSED_FILE,
            r#"{"a_cycle1": {"success": true, "time_cost": -3}}"#,
        );
        assert!(err_of(read_processed(&p)).contains("time_cost"));
        let p = write(d.path(), PROCESSED_FILE, r#"[]"#);
        assert!(err_of(read_processed(&p)).contains("expected an object"));
        let p = write(d.path(), PROCESSED_FILE, r#"{"a_cycle1": "#);
        assert!(err_of(read_processed(&p)).contains("not valid JSON"));
        let e = err_of(read_processed(&d.path().join("missing.json")));
        assert!(
            e.contains("missing.json") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn sast_results_read_counts() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            SAST_RESULTS_FILE,
            r#"[{"detected_vul_num": 2, "instance_id": "a_cycle1"},
                {"detected_vul_num": -1, "error_message": "x", "instance_id": "a_cycle2"},
                {"detected_vul_num": 0.0, "instance_id": "b_cycle1"}]"#,
        );
        let s = read_sast_results(&p).unwrap();
        assert_eq!(s[&UnitId::new("a", 1)], 2);
        assert_eq!(s[&UnitId::new("a", 2)], -1);
        assert_eq!(s[&UnitId::new("b", 1)], 0);
    }

    #[test]
    fn sast_results_errors() {
        let d = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                r#"[{"instance_id": "a_cycle1"}]"#,
                "a_cycle1: no `detected_vul_num`",
            ),
            (
                r#"[{"instance_id": "a_cycle1", "detected_vul_num": "3"}]"#,
                "not a count",
            ),
            (
                r#"[{"instance_id": "a_cycle1", "detected_vul_num": -2}]"#,
                "not a count",
            ),
            (
                r#"[{"instance_id": "a_cycle1", "detected_vul_num": 1.5}]"#,
                "not a count",
            ),
            (
                r#"[{"detected_vul_num": 1}]"#,
                "item 0 has no string `instance_id`",
            ),
            (r#"[3]"#, "item 0 is not an object"),
            (r#"{}"#, "expected an array"),
            (
                r#"[{"instance_id": "a_cycle1", "detected_vul_num": 1}, {"instance_id": "a_cycle1", "detected_vul_num": 1}]"#,
                "listed more than once",
            ),
        ] {
            let p = write(d.path(), SAST_RESULTS_FILE, text);
            let e = err_of(read_sast_results(&p));
            assert!(
                e.contains(needle) && e.contains(SAST_RESULTS_FILE),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn scan_results_read_flags() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            SCAN_RESULTS_FILE,
            r#"[{"patch_file": true, "image_status_check": true, "test_case_check": false,
                 "poc_check": true, "instance_id": "a_cycle1"},
                {"completion": true, "instance_id": "a_cycle2"}]"#,
        );
        let s = read_scan_results(&p).unwrap();
        assert_eq!(
            s[&UnitId::new("a", 1)],
            V2Scan {
                completion: true,
                image_status_check: true,
                test_case_check: false,
                poc_check: true
            }
        );
        assert_eq!(
            s[&UnitId::new("a", 2)],
            V2Scan {
                completion: true,
                ..V2Scan::default()
            }
        );
        let p = write(
            d.path(),
            SCAN_RESULTS_FILE,
            r#"[{"poc_check": 1, "instance_id": "z_cycle3"}]"#,
        );
        let e = err_of(read_scan_results(&p));
        assert!(e.contains("z_cycle3") && e.contains("poc_check"), "{e}");
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(SCAN_RESULTS_FILE);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_INPUT_BYTES + 1).unwrap();
        assert!(err_of(read_scan_results(&p)).contains("more than"));
    }

    #[test]
    fn python_json_layout() {
        let v = json!({"a": 1, "b": [1, 0], "c": {}, "d": 50.0, "e": null, "f": "漏洞"});
        assert_eq!(
            to_python_json(&v),
            "{\n    \"a\": 1,\n    \"b\": [\n        1,\n        0\n    ],\n    \"c\": {},\n    \"d\": 50.0,\n    \"e\": null,\n    \"f\": \"漏洞\"\n}"
        );
    }

    fn v1_score(stability: Option<f64>) -> V1Score {
        V1Score {
            rounds: 3,
            overall: 70.0,
            quality: 83.33,
            security: 66.67,
            stability,
            types: vec![V1TypeScore {
                vuln_type: "SQLI".into(),
                overall: 70.0,
                quality: 83.33,
                security: 66.67,
                stability,
                secure: 4,
                total: 6,
                quality_success: 5,
                quality_total: 6,
            }],
            task_results: vec![("a".into(), vec![1, 0, 0])],
            task_counts: Vec::new(),
        }
    }

    #[test]
    fn v1_text_report_matches_upstream_layout() {
        let t = v1_text_report("m__b", &v1_score(Some(50.0)));
        assert_eq!(
            t,
            "m__b 的详细评估结果...\n综合得分：70.0\n代码安全性得分：66.67\n代码质量得分：83.33\n\
             生成稳定性得分：50.0\n\n漏洞类型得分：(漏洞类型/综合得分/安全性/质量/稳定性)\n\
             SQLI: 70.00/66.67/83.33/50.0\n"
        );
        let t = v1_text_report("m__b", &v1_score(None));
        assert!(
            t.contains("生成稳定性得分：N/A\n") && t.ends_with("/83.33/N/A\n"),
            "{t}"
        );
    }

    #[test]
    fn v1_eval_result_keys_in_upstream_order() {
        let v = v1_eval_result_json(&v1_score(Some(50.0)));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "overall_score",
                "weighted_success_rate",
                "weighted_security_score",
                "weighted_stability_score",
                "vuln_type_scores",
                "success_rate",
                "security",
                "stability",
                "instance_security_results"
            ]
        );
        assert_eq!(
            v["security"]["SQLI"],
            json!({"score": 66.67, "secure": 4, "total": 6})
        );
        assert_eq!(v["instance_security_results"]["a"], json!([1, 0, 0]));
        assert_eq!(
            v1_eval_result_json(&v1_score(None))["weighted_stability_score"],
            Value::Null
        );
    }
}
