//! Preflight: before the first model call of a run, whether each task's inputs can be had:
//! its repo and `base_commit` (one commit fetched into a scratch repository, see
//! [`crate::repo_cache::probe`]) and, for v2, its image's manifest for the workers' platform
//! (asked of the registry through the daemon, see [`crate::images::probe`]). Each distinct
//! (repo, commit) and image is asked once, a few at a time.
//!
//! A task whose input is missing is [`UnavailableTask`]: kept out of the run, listed apart in
//! the reports, never scored as a model failure. A task whose check got no answer (a registry
//! or a host down) is `unchecked`: kept, because the run's own retries and pauses handle an
//! outage, and an outage at submit time must not shrink the benchmark.

use crate::images::credentials::CredentialSource;
use crate::images::probe::{probe_image, ImageProbe};
use crate::repo_cache::probe::{probe_commit, CommitProbe};
use crate::repo_cache::RepoCacheConfig;
use ase_common::dataset::{Task, TaskSpec};
use ase_common::preflight::{Missing, UnavailableTask};
use bollard::Docker;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Probes under way at once, per kind.
const CONCURRENCY: usize = 4;

/// Where and how to ask.
#[derive(Clone)]
pub struct PreflightSettings {
    /// The workers' repo source: the URL template and the token variable (its root is unused).
    pub repos: RepoCacheConfig,
    /// Scratch repositories go here (one commit each, removed after).
    pub scratch: PathBuf,
    pub git_timeout: Duration,
    /// None: no daemon answered here; images are not checked (and said so).
    pub docker: Option<Docker>,
    /// The platform the workers pull for (None: any).
    pub platform: Option<String>,
    pub credentials: CredentialSource,
}

impl PreflightSettings {
    /// As the workers of this host would fetch: repos from `repo_url_template` (default
    /// GitHub) with `GITHUB_TOKEN`, images for `ASE_IMAGE_PLATFORM` with the Docker config's
    /// credentials, through the daemon when `docker` lets one answer.
    pub async fn for_host(
        repo_url_template: Option<&str>,
        docker: crate::setup::DockerUse,
        scratch: PathBuf,
    ) -> Result<Self, crate::setup::SetupError> {
        let mut repos = RepoCacheConfig::new(scratch.join("unused"));
        if let Some(t) = repo_url_template {
            repos.url_template = t.to_string();
        }
        repos.token_env = Some(crate::setup::GITHUB_TOKEN_ENV.into());
        let pulls = crate::images::PullSettings::from_env().unwrap_or_default();
        Ok(Self {
            repos,
            scratch,
            git_timeout: Duration::from_secs(120),
            docker: crate::setup::connect_docker(docker).await?,
            platform: pulls.platform,
            credentials: pulls.credentials,
        })
    }
}

/// One task kept in the run although it could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    pub instance_id: String,
    pub what: &'static str,
    pub reason: String,
}

/// What a preflight found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightReport {
    pub tasks: usize,
    pub unavailable: Vec<UnavailableTask>,
    pub unchecked: Vec<Unchecked>,
    /// Image reference -> the digest its tag names today.
    pub image_digests: BTreeMap<String, String>,
    /// Why images were not checked at all (no Docker daemon here), when they were not.
    pub images_skipped: Option<String>,
    pub repo_probes: usize,
    pub image_probes: usize,
}

impl PreflightReport {
    /// The table a person reads: one line per task that is unavailable or unchecked.
    pub fn table(&self) -> String {
        let mut s = format!(
            "preflight: {} task(s), {} repo/commit and {} image check(s): {} unavailable, {} unchecked\n",
            self.tasks,
            self.repo_probes,
            self.image_probes,
            self.unavailable.len(),
            self.unchecked.len()
        );
        if let Some(why) = &self.images_skipped {
            s.push_str(&format!("images not checked: {why}\n"));
        }
        if self.unavailable.is_empty() && self.unchecked.is_empty() {
            return s;
        }
        let w = self
            .unavailable
            .iter()
            .map(|u| u.instance_id.len())
            .chain(self.unchecked.iter().map(|u| u.instance_id.len()))
            .max()
            .unwrap_or(4)
            .max(4);
        s.push_str(&format!(
            "{:<w$}  {:<11}  {:<8}  reason\n",
            "task", "status", "what"
        ));
        for u in &self.unavailable {
            s.push_str(&format!(
                "{:<w$}  {:<11}  {:<8}  {}\n",
                u.instance_id,
                "unavailable",
                u.missing.as_str(),
                u.reason
            ));
        }
        for u in &self.unchecked {
            s.push_str(&format!(
                "{:<w$}  {:<11}  {:<8}  {}\n",
                u.instance_id, "unchecked", u.what, u.reason
            ));
        }
        s
    }
}

/// Checks every task of `tasks` (in dataset order; the report keeps that order).
pub async fn preflight(tasks: &[Task], settings: &PreflightSettings) -> PreflightReport {
    let mut commits: Vec<(String, String)> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    for t in tasks {
        let key = (t.repo.clone(), t.base_commit.clone());
        if !commits.contains(&key) {
            commits.push(key);
        }
        if let TaskSpec::V2(s) = &t.spec {
            if !images.contains(&s.image) {
                images.push(s.image.clone());
            }
        }
    }
    let commit_results = probe_commits(&commits, settings).await;
    let (image_results, images_skipped) = match &settings.docker {
        Some(docker) => (probe_images(docker, &images, settings).await, None),
        None if images.is_empty() => (HashMap::new(), None),
        None => (
            HashMap::new(),
            Some("no Docker daemon answered on this host".to_string()),
        ),
    };
    let mut report = PreflightReport {
        tasks: tasks.len(),
        images_skipped,
        repo_probes: commits.len(),
        image_probes: image_results.len(),
        ..PreflightReport::default()
    };
    for t in tasks {
        let id = &t.instance_id;
        let key = (t.repo.clone(), t.base_commit.clone());
        match commit_results.get(&key) {
            Some(CommitProbe::RepoMissing(r)) => {
                report
                    .unavailable
                    .push(UnavailableTask::new(id, Missing::Repo, r));
                continue;
            }
            Some(CommitProbe::CommitMissing(r)) => {
                report
                    .unavailable
                    .push(UnavailableTask::new(id, Missing::Commit, r));
                continue;
            }
            Some(CommitProbe::Unchecked(r)) => report.unchecked.push(Unchecked {
                instance_id: id.clone(),
                what: "repo",
                reason: r.clone(),
            }),
            Some(CommitProbe::Present) | None => {}
        }
        let TaskSpec::V2(s) = &t.spec else { continue };
        match image_results.get(&s.image) {
            Some(ImageProbe::Missing(r)) => {
                report
                    .unavailable
                    .push(UnavailableTask::new(id, Missing::Image, r))
            }
            Some(ImageProbe::WrongPlatform(r)) => {
                report
                    .unavailable
                    .push(UnavailableTask::new(id, Missing::Platform, r))
            }
            Some(ImageProbe::Unchecked(r)) => report.unchecked.push(Unchecked {
                instance_id: id.clone(),
                what: "image",
                reason: r.clone(),
            }),
            Some(ImageProbe::Present { digest }) if !digest.is_empty() => {
                report.image_digests.insert(s.image.clone(), digest.clone());
            }
            Some(ImageProbe::Present { .. }) | None => {}
        }
    }
    report
}

async fn probe_commits(
    commits: &[(String, String)],
    settings: &PreflightSettings,
) -> HashMap<(String, String), CommitProbe> {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for (repo, commit) in commits.iter().cloned() {
        let gate = gate.clone();
        let cfg = settings.repos.clone();
        let scratch = settings.scratch.clone();
        let timeout = settings.git_timeout;
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let probe = tokio::task::spawn_blocking({
                let (repo, commit) = (repo.clone(), commit.clone());
                move || probe_commit(&cfg, &repo, &commit, &scratch, timeout)
            })
            .await
            .unwrap_or_else(|e| CommitProbe::Unchecked(format!("the check failed: {e}")));
            ((repo, commit), probe)
        });
    }
    let mut out = HashMap::new();
    while let Some(done) = set.join_next().await {
        if let Ok((key, probe)) = done {
            out.insert(key, probe);
        }
    }
    out
}

async fn probe_images(
    docker: &Docker,
    images: &[String],
    settings: &PreflightSettings,
) -> HashMap<String, ImageProbe> {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for image in images.iter().cloned() {
        let gate = gate.clone();
        let docker = docker.clone();
        let platform = settings.platform.clone();
        let credentials = settings.credentials.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let probe = probe_image(&docker, &image, platform.as_deref(), &credentials).await;
            (image, probe)
        });
    }
    let mut out = HashMap::new();
    while let Some(done) = set.join_next().await {
        if let Ok((image, probe)) = done {
            out.insert(image, probe);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn v2_tasks(repo_root: &Path, sha: &str) -> Vec<Task> {
        let task = |id: &str| {
            serde_json::json!({
                "instance_id": id, "repo": "o/p", "base_commit": sha,
                "vuln_file": "a.c", "vuln_lines": [1, 2], "language": "c",
                "vuln_source": format!("CVE-{id}"), "cwe_id": "CWE-125",
                "vuln_type": "Out-of-bounds Read", "severity": "high",
                "image": "example/never-asked:1", "image_inner_path": "/src",
                "image_run_cmd": "", "image_status_check_cmd": "true",
                "test_case_cmd": "true", "poc_cmd": "true"
            })
        };
        let bytes = serde_json::to_vec(&vec![task("t1"), task("t2")]).unwrap();
        ase_common::dataset::parse_tasks(&repo_root.join("tasks.json"), &bytes)
            .unwrap()
            .tasks
    }

    /// Without a daemon on this host, v2 images are not checked, and the table says so; the
    /// repo check still runs, once per (repo, commit).
    #[tokio::test]
    async fn without_docker_images_are_said_to_be_unchecked_and_repos_still_checked() {
        let root = tempfile::tempdir().unwrap();
        let mut repos = RepoCacheConfig::new(root.path().join("unused"));
        repos.url_template = format!("{}/{{repo}}", root.path().display());
        let settings = PreflightSettings {
            repos,
            scratch: root.path().to_path_buf(),
            git_timeout: Duration::from_secs(30),
            docker: None,
            platform: None,
            credentials: CredentialSource::anonymous(),
        };
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let report = preflight(&v2_tasks(root.path(), sha), &settings).await;
        assert_eq!(report.tasks, 2);
        assert_eq!(report.repo_probes, 1);
        assert_eq!(report.image_probes, 0);
        assert!(report.images_skipped.is_some());
        assert!(
            report.table().contains("images not checked"),
            "{}",
            report.table()
        );
        // No such repository under the template: both tasks unavailable, with the reason.
        assert_eq!(report.unavailable.len(), 2, "{report:?}");
        assert!(report
            .unavailable
            .iter()
            .all(|u| u.missing == Missing::Repo));
    }
}
