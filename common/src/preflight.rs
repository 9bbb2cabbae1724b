//! What a preflight found unavailable: tasks whose inputs (repo, commit, image) cannot be had,
//! found before the first model call. Such a task is kept out of the run with its reason; the
//! reports list it apart and score the run over the remaining tasks (labelled so). A task that
//! could not be checked (a registry or a host that did not answer) is not unavailable: it is
//! kept, and the run's own retries deal with it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which input of a task is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// The repository does not exist (or is not readable with the credentials given).
    Repo,
    /// The repository has no such `base_commit`.
    Commit,
    /// The task's image has no manifest under that name (404, or refused).
    Image,
    /// The image exists but not for the platform the workers pull for.
    Platform,
}

impl Missing {
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Repo => "repo",
            Missing::Commit => "commit",
            Missing::Image => "image",
            Missing::Platform => "platform",
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task kept out of a run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnavailableTask {
    pub instance_id: String,
    pub missing: Missing,
    /// What was asked and what answered (the repo URL or image reference, the error), with any
    /// credential removed.
    pub reason: String,
}

/// The longest reason kept (a registry's or git's error can be long).
pub const MAX_REASON_CHARS: usize = 500;

impl UnavailableTask {
    pub fn new(instance_id: impl Into<String>, missing: Missing, reason: impl AsRef<str>) -> Self {
        let reason = reason.as_ref().trim();
        let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &reason[..cut]),
            None => reason.to_string(),
        };
        Self {
            instance_id: instance_id.into(),
            missing,
            reason,
        }
    }
}

/// A list of unavailable tasks, as a run spec carries it, checked against the dataset's ids:
/// each named once, each in the dataset, and not all of them (a run needs a task).
pub fn check_against(
    unavailable: &[UnavailableTask],
    dataset_ids: &std::collections::HashSet<&str>,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for u in unavailable {
        if !dataset_ids.contains(u.instance_id.as_str()) {
            return Err(format!(
                "`unavailable` names task {:?}, which is not in the dataset",
                u.instance_id
            ));
        }
        if !seen.insert(u.instance_id.as_str()) {
            return Err(format!(
                "`unavailable` names task {:?} twice",
                u.instance_id
            ));
        }
    }
    if !dataset_ids.is_empty() && seen.len() == dataset_ids.len() {
        return Err("every task of the dataset is unavailable: nothing to run".into());
    }
    Ok(())
}

/// The Markdown section the reports show: one row per unavailable task.
pub fn markdown_section(unavailable: &[UnavailableTask], scored_tasks: usize) -> String {
    if unavailable.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "## Unavailable tasks\n\n{} task(s) of the dataset were kept out of the run before any \
         model call (their inputs cannot be had); every score above is over the {} remaining \
         task(s), upstream's figures included. They are not model failures.\n\n\
         | task | missing | reason |\n|---|---|---|\n",
        unavailable.len(),
        scored_tasks
    );
    for u in unavailable {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            md_cell(&u.instance_id),
            u.missing,
            md_cell(&u.reason)
        ));
    }
    s
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn reasons_are_bounded_and_lists_checked_against_the_dataset() {
        let long = "x".repeat(MAX_REASON_CHARS + 50);
        let u = UnavailableTask::new("t1", Missing::Image, &long);
        assert_eq!(u.reason.chars().count(), MAX_REASON_CHARS + 1);
        let ids: HashSet<&str> = ["t1", "t2"].into();
        assert!(check_against(std::slice::from_ref(&u), &ids).is_ok());
        let other = UnavailableTask::new("t9", Missing::Repo, "no");
        assert!(check_against(&[other], &ids)
            .unwrap_err()
            .contains("\"t9\""));
        assert!(check_against(&[u.clone(), u.clone()], &ids)
            .unwrap_err()
            .contains("twice"));
        let both = [u, UnavailableTask::new("t2", Missing::Commit, "no")];
        assert!(check_against(&both, &ids)
            .unwrap_err()
            .contains("nothing to run"));
    }

    #[test]
    fn the_section_escapes_cells_and_names_the_remaining_count() {
        let s = markdown_section(
            &[UnavailableTask::new(
                "a|b",
                Missing::Commit,
                "line1\nline2 | x",
            )],
            7,
        );
        assert!(s.contains("| a\\|b | commit | line1 line2 \\| x |"), "{s}");
        assert!(s.contains("over the 7 remaining"), "{s}");
        assert_eq!(markdown_section(&[], 3), "");
    }
}
