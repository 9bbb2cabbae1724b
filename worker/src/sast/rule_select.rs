//! Which rules scan a v1 task: the one place that decides.
//!
//! A task whose CVE has a rule of its own (`rules/cve/<vuln_source>.yaml`) is scanned with that
//! rule only; mutated tasks carry their seed's `vuln_source` and so share it. Every other task
//! is scanned with the generic pack of its vulnerability type AND language
//! (`rules/<type>/<language>.yaml`), not with all twenty packs: a finding of another language's
//! rule cannot be about the masked block, and scanning with fewer rules is faster.
//!
//! The selection reads a [`RuleCatalog`] (the rule files and their digests, listed once per
//! worker) and returns a [`RuleSet`]: the files, relative to the rules root, and a digest of
//! their names and contents, which keys the task's cached baseline.

use ase_common::dataset::Task;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The folder of per-CVE rules inside the rules root.
pub const CVE_DIR: &str = "cve";

/// Why a rule set was chosen (kept in the set, for reports and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The task's CVE has a rule of its own.
    Cve(String),
    /// The generic pack of the task's type and language.
    Generic { vuln_type: String, language: String },
    /// No pack for this type or language: every generic pack (the behaviour before per-task
    /// selection), so that the scan still counts what our rules can see.
    Everything,
}

/// The rules one scan runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Paths relative to the rules root, sorted; `""` is the rules root itself.
    pub files: Vec<String>,
    /// sha256 over the files' relative paths and contents.
    pub digest: String,
    pub selection: Selection,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no rule files (*.yaml outside fixtures/)")]
    Empty(PathBuf),
}

/// Every rule file under a rules root (`*.yaml`, `fixtures/` excluded), with its content digest.
#[derive(Debug, Clone)]
pub struct RuleCatalog {
    root: PathBuf,
    /// Relative path -> sha256 of (path, contents) as [`RuleSet::digest`] hashes them.
    files: BTreeMap<String, [u8; 32]>,
}

impl RuleCatalog {
    /// Lists and hashes the rule files under `root` (a folder, or one rule file).
    pub fn load(root: &Path) -> Result<Self, CatalogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CatalogError::Io { path, source }
        };
        let mut files = BTreeMap::new();
        if root.is_file() {
            // One rule file given as the rules: every task scans with it (`""`).
            let data = std::fs::read(root).map_err(io(root))?;
            files.insert(String::new(), file_digest("", &data));
            return Ok(Self {
                root: root.to_path_buf(),
                files,
            });
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let e = e.map_err(io(&dir))?;
                let path = e.path();
                let ft = e.file_type().map_err(io(&path))?;
                let rel = path
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                if ft.is_dir() {
                    if rel != "fixtures" {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.ends_with(".yaml") {
                    let data = std::fs::read(&path).map_err(io(&path))?;
                    files.insert(rel.clone(), file_digest(&rel, &data));
                }
            }
        }
        if files.is_empty() {
            return Err(CatalogError::Empty(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
            files,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The rule set of `task`.
    pub fn select(&self, task: &Task) -> RuleSet {
        if let Some(cve) = cve_file(&task.vuln_source) {
            if self.files.contains_key(&cve) {
                return self.set(vec![cve], Selection::Cve(task.vuln_source.clone()));
            }
        }
        if let (Some(t), Some(l)) = (type_dir(&task.vuln_type), pack_language(task)) {
            let pack = format!("{t}/{l}.yaml");
            if self.files.contains_key(&pack) {
                return self.set(
                    vec![pack],
                    Selection::Generic {
                        vuln_type: task.vuln_type.clone(),
                        language: l.to_string(),
                    },
                );
            }
        }
        self.generic()
    }

    /// Every generic pack (no per-CVE rule): what a task without a pack of its own gets.
    pub fn generic(&self) -> RuleSet {
        let generic = self
            .files
            .keys()
            .filter(|f| !f.starts_with(&format!("{CVE_DIR}/")))
            .cloned()
            .collect();
        self.set(generic, Selection::Everything)
    }

    fn set(&self, files: Vec<String>, selection: Selection) -> RuleSet {
        let mut h = Sha256::new();
        for f in &files {
            h.update(self.files[f]);
        }
        RuleSet {
            files,
            digest: hex::encode(h.finalize()),
            selection,
        }
    }
}

impl RuleSet {
    /// The scanner's whole rules, when no catalog of them is at hand (a SAST image without the
    /// host folder it was built from): `digest` is what names them (the image's tag).
    pub fn whole(digest: &str) -> Self {
        RuleSet {
            files: vec![String::new()],
            digest: digest.to_string(),
            selection: Selection::Everything,
        }
    }
}

fn file_digest(rel: &str, data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((rel.len() as u64).to_be_bytes());
    h.update(rel.as_bytes());
    h.update((data.len() as u64).to_be_bytes());
    h.update(data);
    h.finalize().into()
}

/// `cve/<vuln_source>.yaml`, for a `vuln_source` that is a plain file name (`CVE-2024-1234`);
/// anything else (a path, an empty string) has no per-CVE rule.
fn cve_file(vuln_source: &str) -> Option<String> {
    let s = vuln_source.trim();
    let plain = !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    plain.then(|| format!("{CVE_DIR}/{s}.yaml"))
}

/// The pack folder of an A.S.E `vuln_type` (the spellings of the datasets, any case).
fn type_dir(vuln_type: &str) -> Option<&'static str> {
    match vuln_type.trim().to_ascii_lowercase().as_str() {
        "command injection" => Some("command-injection"),
        "xss" => Some("xss"),
        "sqli" | "sql injection" => Some("sqli"),
        "path traversal" => Some("path-traversal"),
        _ => None,
    }
}

/// The pack language of a task: its `language`, as the datasets spell it.
fn pack_language(task: &Task) -> Option<&'static str> {
    match task.language.trim().to_ascii_lowercase().as_str() {
        "php" => Some("php"),
        "python" => Some("python"),
        "go" | "golang" => Some("go"),
        "javascript" | "js" | "typescript" | "ts" => Some("javascript"),
        "java" => Some("java"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ase_common::dataset::{LineRange, StaticSpec, TaskSpec};

    fn task(vuln_type: &str, language: &str, source: &str) -> Task {
        Task {
            instance_id: "t".into(),
            repo: "o/n".into(),
            base_commit: "abc".into(),
            vuln_file: "a".into(),
            vuln_lines: LineRange { start: 1, end: 2 },
            language: language.into(),
            vuln_source: source.into(),
            vuln_type: vuln_type.into(),
            cwe_id: "CWE-1".into(),
            spec: TaskSpec::V1(StaticSpec {
                seed: true,
                detected_tool: String::new(),
                detected_vul_num: 1,
                patch_commit: None,
            }),
            extra: Default::default(),
        }
    }

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "sqli/php.yaml",
            "sqli/go.yaml",
            "xss/php.yaml",
            "path-traversal/python.yaml",
            "cve/CVE-2020-1.yaml",
            "fixtures/sqli/php/bad.yaml",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("rules: [] # {f}\n")).unwrap();
        }
        std::fs::write(d.path().join("README.md"), "not a rule").unwrap();
        d
    }

    #[test]
    fn a_cve_rule_wins_and_is_shared_by_its_mutations() {
        let d = root();
        let c = RuleCatalog::load(d.path()).unwrap();
        let seed = c.select(&task("SQLI", "php", "CVE-2020-1"));
        assert_eq!(seed.files, ["cve/CVE-2020-1.yaml"]);
        assert_eq!(seed.selection, Selection::Cve("CVE-2020-1".into()));
        // A mutated task: another id, file and type spelling, the same vuln_source.
        let mut mutated = task("sqli", "php", "CVE-2020-1");
        mutated.instance_id = "t_m1".into();
        mutated.vuln_file = "b.php".into();
        assert_eq!(c.select(&mutated), seed);
    }

    #[test]
    fn otherwise_the_pack_of_the_type_and_language_only() {
        let d = root();
        let c = RuleCatalog::load(d.path()).unwrap();
        let s = c.select(&task("SQLI", "go", "CVE-2099-9"));
        assert_eq!(s.files, ["sqli/go.yaml"]);
        let s = c.select(&task("Path Traversal", "python", "CVE-2099-9"));
        assert_eq!(s.files, ["path-traversal/python.yaml"]);
        // Another type or language is another set with another digest.
        let x = c.select(&task("XSS", "php", "x"));
        assert_eq!(x.files, ["xss/php.yaml"]);
        assert_ne!(x.digest, c.select(&task("SQLI", "php", "x")).digest);
    }

    #[test]
    fn without_a_pack_every_generic_pack_and_never_a_fixture_or_cve_rule() {
        let d = root();
        let c = RuleCatalog::load(d.path()).unwrap();
        let s = c.select(&task("XSS", "go", "../cve/CVE-2020-1"));
        assert_eq!(s.selection, Selection::Everything);
        assert_eq!(
            s.files,
            [
                "path-traversal/python.yaml",
                "sqli/go.yaml",
                "sqli/php.yaml",
                "xss/php.yaml"
            ]
        );
    }

    #[test]
    fn the_digest_follows_the_selected_files_contents_only() {
        let d = root();
        let before = RuleCatalog::load(d.path()).unwrap();
        let t = task("SQLI", "php", "none");
        std::fs::write(d.path().join("xss/php.yaml"), "rules: [] # changed\n").unwrap();
        let after = RuleCatalog::load(d.path()).unwrap();
        assert_eq!(before.select(&t), after.select(&t), "another pack changed");
        std::fs::write(d.path().join("sqli/php.yaml"), "rules: [] # changed\n").unwrap();
        let again = RuleCatalog::load(d.path()).unwrap();
        assert_ne!(before.select(&t).digest, again.select(&t).digest);
        assert!(RuleCatalog::load(&d.path().join("fixtures/sqli/php/none")).is_err());
        // One file as the rules: every task gets it.
        let one = RuleCatalog::load(&d.path().join("sqli/php.yaml")).unwrap();
        assert_eq!(one.select(&task("XSS", "go", "CVE-2020-1")).files, [""]);
    }
}
