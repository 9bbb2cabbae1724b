//! A command printing a gigabyte keeps bounded output and bounded memory in the worker. Alone
//! in its test binary so that the peak RSS it reads is its own.

mod dynamic_fixtures;
use ase_test_support as support;

use ase_common::unit::{EvaluationRecord, MAX_STEP_OUTPUT_BYTES};
use ase_worker::dynamic::{DynamicEvaluator, DynamicSettings, UNIT_LABEL};
use dynamic_fixtures::*;
use support::*;

const GIB: u64 = 1 << 30;

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

#[tokio::test]
async fn a_gigabyte_of_output_keeps_output_and_memory_bounded() {
    let Some(docker) = docker_with(&v2_image()).await else {
        return;
    };
    let ev = DynamicEvaluator::new(docker.clone(), DynamicSettings::default());
    let mut s = spec(&v2_image());
    // Ends with the marker, so it is found after a gigabyte of output.
    s.poc_cmd =
        format!("sh -c 'head -c {GIB} /dev/zero; echo; echo \"[A.S.E] vulnerability not found\"'");
    let labels = labels("gigabyte");
    let before = peak_rss();
    let rec = ev
        .evaluate(&task(s), &generation(&[(VULN_FILE, FIXED)]), &labels)
        .await
        .unwrap();
    let after = peak_rss();
    let EvaluationRecord::Dynamic { checks, steps, .. } = rec else {
        panic!("not dynamic")
    };
    let poc = steps.iter().find(|s| s.step == "poc").unwrap();
    assert!(poc.output_bytes > GIB, "{}", poc.output_bytes);
    assert!(
        poc.output.len() <= 3 * MAX_STEP_OUTPUT_BYTES + 100,
        "{}",
        poc.output.len()
    );
    assert!(poc.output.contains("bytes omitted"));
    assert!(poc.output.ends_with("[A.S.E] vulnerability not found\n"));
    assert!(checks.poc_check, "the marker after the gigabyte is found");
    let growth = after.saturating_sub(before);
    eprintln!("peak RSS {before} -> {after} (+{growth} bytes)");
    assert!(growth < 64 << 20, "peak RSS grew by {growth} bytes");
    assert!(containers_labelled(&docker, UNIT_LABEL, &labels.unit)
        .await
        .is_empty());
}
