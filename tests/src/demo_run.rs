//! The demo's runs as a cluster test submits them (`ase submit --spec`), and what `ase compare`
//! must say of the demo's v1 runs, wherever their reports come from (`ase run`'s folders, or
//! a coordinator's `FetchReport`).

use crate::RunFiles;
use serde_json::{json, Value};
use std::path::Path;

/// The entries of a predictions JSONL file, as the run spec carries them inline.
pub fn prediction_entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes the spec of the demo's run of `provider` (`reference`, `original`, or `predictions`:
/// the pretend model's shipped answers) on `version`'s dataset, `rounds` rounds, under `dir`;
/// its model is `demo-{provider}`, its batch `version`.
pub fn write_demo_run(
    dir: &Path,
    version: &str,
    provider: &str,
    rounds: u32,
    tasks: &Path,
    context: &Path,
    predictions: &Path,
) -> RunFiles {
    let model = match provider {
        "predictions" => {
            json!({"provider": "predictions", "entries": prediction_entries(predictions)})
        }
        other => json!({ "provider": other }),
    };
    let spec = json!({
        "model_name": format!("demo-{provider}"),
        "batch": version,
        "rounds": rounds,
        "model": model,
    });
    let parsed: ase_worker::pipeline::RunSpec =
        serde_json::from_value(spec.clone()).expect("the demo run spec is a RunSpec");
    std::fs::create_dir_all(dir).unwrap();
    let files = RunFiles {
        spec: dir.join("spec.json"),
        dataset: tasks.to_path_buf(),
        context: context.to_path_buf(),
        run_id: parsed.run_name(),
    };
    std::fs::write(&files.spec, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    files
}

/// `ase compare --json` of the demo's v1 runs of the original code, the reference fix and the
/// pretend model, in that order (3 rounds): the reference is more secure than the original on
/// every task (all 8 tasks differ, p = 2 / 2^8), and the pretend model falls short of the
/// reference only where its answers are not the fix.
pub fn assert_demo_v1_comparison(c: &Value) {
    assert_eq!(c["tasks_compared"], 8, "{c}");
    assert_eq!(c["shared_tasks_only"], false, "{c}");
    let pairs = c["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3, "{c}");
    let (orig_ref, ref_pretend) = (&pairs[0], &pairs[2]);
    assert_eq!(orig_ref["b_better"], 8, "{orig_ref}");
    assert_eq!(orig_ref["p_value"].as_f64(), Some(0.0078125));
    assert_eq!(orig_ref["flipped"].as_array().unwrap().len(), 8);
    // The pretend model's answers to these three are not the fix: the reference is better.
    assert_eq!(ref_pretend["b_better"], 0, "{ref_pretend}");
    let flipped: Vec<&str> = ref_pretend["flipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["instance_id"].as_str().unwrap())
        .collect();
    for task in [
        "demo_cmdi_py_bookshelf",
        "demo_xss_php_guestbook",
        "demo_xss_js_notes",
    ] {
        assert!(flipped.contains(&task), "{task} in {flipped:?}");
    }
    let n = flipped.len() as i32;
    assert_eq!(
        ref_pretend["p_value"].as_f64(),
        Some((2.0f64 / 2f64.powi(n)).min(1.0))
    );
}
