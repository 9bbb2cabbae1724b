//! The `ase` client commands run from the test's host (`status`, `drain`, `report`) and what
//! the tests read in their output.

use crate::project::Project;
use crate::{
    assert_every_unit_generated_and_scanned, fetch_report, CoordinatorAccess, FakeModel, RunFiles,
};
use std::path::Path;
use std::process::Command;

/// `ase CMD --coordinator URL --tls-dir DIR ARGS`, which must succeed; its stdout.
pub fn ase_client(access: &CoordinatorAccess, cmd: &str, args: &[&str]) -> String {
    let o = ase_client_output(access, cmd, args);
    assert!(
        o.status.success(),
        "ase {cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ase CMD ...` whatever its exit status (a coordinator that is still starting).
pub fn ase_client_output(
    access: &CoordinatorAccess,
    cmd: &str,
    args: &[&str],
) -> std::process::Output {
    Command::new(crate::ase_bin())
        .arg(cmd)
        .args(["--coordinator", &access.url, "--tls-dir"])
        .arg(&access.tls_dir)
        .args(args)
        .output()
        .expect("run ase")
}

/// A worker's line of `ase status`: (alive, session, completed units).
pub fn worker_status(status: &str, name: &str) -> Option<(bool, u64, u64)> {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("worker {name} ")))?;
    let word_after = |key: &str| -> Option<u64> {
        let mut it = line.split_whitespace();
        it.find(|w| *w == key)?;
        it.next()?.parse().ok()
    };
    Some((
        line.contains("[alive"),
        word_after("session")?,
        word_after("completed")?,
    ))
}

/// `done N` of `phase` ("generate" or "evaluate") in the first run line of `ase status`.
pub fn phase_done(status: &str, phase: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("run "))?;
    let part = line
        .split(" | ")
        .find(|p| p.starts_with(&format!("{phase}:")))?;
    let mut it = part.split_whitespace();
    it.find(|w| *w == "done")?;
    it.next()?.parse().ok()
}

/// Fetches the run's report into `out` and checks it: every unit of the project exactly once,
/// each generated successfully and scanned with the unit's own injection fixed; and the model
/// called exactly once per unit.
pub fn assert_run_report(
    access: &CoordinatorAccess,
    files: &RunFiles,
    project: &Project,
    rounds: u32,
    model: &FakeModel,
    out: &Path,
) {
    fetch_report(access, &files.run_id, out);
    let units = project.unit_names(rounds);
    let scanned = assert_every_unit_generated_and_scanned(out, &files.run_id, &units);
    // Each module has one injection; the model's fix removes the unit's own one.
    let fixed = project.tasks.len() as i64 - 1;
    assert!(
        scanned.iter().all(|(_, n)| *n == fixed),
        "every unit scans {fixed} findings: {scanned:?}"
    );
    let calls = model.calls();
    for t in &project.tasks {
        assert_eq!(
            calls.get(&t.instance_id).copied(),
            Some(rounds),
            "model calls of {}: {calls:?}",
            t.instance_id
        );
    }
    assert!(model.unrecognised().is_empty(), "unrecognised prompts");
}
