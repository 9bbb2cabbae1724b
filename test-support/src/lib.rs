//! Shared by the integration tests of every crate (a dev-dependency, never a `#[path]`
//! include): where the repository's rules and fixtures are, where the real osemgrep is, how a
//! test reports that it cannot run, and the Docker helpers.

pub mod fixture_repo;
pub mod loopback_http;
pub mod registry;

use std::path::{Path, PathBuf};

pub const TYPES: [(&str, &str, &str); 4] = [
    ("command-injection", "Command Injection", "CWE-78"),
    ("xss", "XSS", "CWE-79"),
    ("sqli", "SQLI", "CWE-89"),
    ("path-traversal", "Path Traversal", "CWE-22"),
];
pub const LANGUAGES: [&str; 5] = ["php", "python", "go", "javascript", "java"];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ has a parent")
        .to_path_buf()
}

pub fn rules_dir() -> PathBuf {
    repo_root().join("rules")
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ASE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/ase-cluster"),
    }
}

/// `ASE_OSEMGREP`, else `$ASE_CACHE/semgrep/bin/osemgrep`.
pub fn osemgrep_path() -> PathBuf {
    match std::env::var_os("ASE_OSEMGREP") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("semgrep/bin/osemgrep"),
    }
}

/// A prerequisite is missing: in CI that is a failure, elsewhere the test says why it did
/// not run (never a silent pass). Returns normally only outside CI.
pub fn unavailable(why: &str) {
    unavailable_unless(why, "run deploy/images/build.sh");
}

/// As [`unavailable`], naming what to do (`fix`) instead of building the images.
pub fn unavailable_unless(why: &str, fix: &str) {
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{why}; {fix} first");
    }
    eprintln!("skipped: {why} ({fix} to enable this test)");
}

pub fn osemgrep_or_skip() -> Option<PathBuf> {
    let p = osemgrep_path();
    if p.is_file() {
        Some(p)
    } else {
        unavailable(&format!("osemgrep not found at {}", p.display()));
        None
    }
}

/// An expected finding: fixture file name, line, rule id.
pub type Expected = (String, u64, String);

/// Reads the `ruleid: <id>` annotations of every fixture in `dir`: each expects a finding of
/// that rule starting on the next line.
pub fn annotations(dir: &Path) -> Vec<Expected> {
    let mut out = Vec::new();
    for file in fixture_files(dir) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if let Some(pos) = line.find("ruleid:") {
                let id = line[pos + "ruleid:".len()..].trim().to_string();
                out.push((name.clone(), i as u64 + 2, id));
            }
        }
    }
    out.sort();
    out
}

pub fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every regular file under `dir`, at any depth, sorted.
pub fn fixture_files_recursive(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn is_bad(name: &str) -> bool {
    name.starts_with("bad") || name.starts_with("Bad")
}

pub fn is_good(name: &str) -> bool {
    name.starts_with("good") || name.starts_with("Good")
}

/// The v2 contract test image built by deploy/images/build.sh (`ASE_V2_IMAGE` overrides).
pub fn v2_image() -> String {
    std::env::var("ASE_V2_IMAGE").unwrap_or_else(|_| "ase-v2-pathtrav:latest".to_string())
}

/// A Docker client whose daemon answers and holds `image`, or None (after `unavailable`).
pub async fn docker_with(image: &str) -> Option<bollard::Docker> {
    let docker = match bollard::Docker::connect_with_unix_defaults() {
        Ok(d) => d,
        Err(e) => {
            unavailable(&format!("no Docker client: {e}"));
            return None;
        }
    };
    if let Err(e) = docker.ping().await {
        unavailable(&format!("Docker daemon does not answer: {e}"));
        return None;
    }
    if let Err(e) = docker.inspect_image(image).await {
        unavailable(&format!("image {image} missing: {e}"));
        return None;
    }
    Some(docker)
}

/// Ids of the containers (running or not) carrying label `key=value`.
pub async fn containers_labelled(docker: &bollard::Docker, key: &str, value: &str) -> Vec<String> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![format!("{key}={value}")])]);
    docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}
