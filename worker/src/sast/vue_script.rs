//! `.vue` single-file components, made scannable.
//!
//! The pinned semgrep parses no `.vue` file ("Vue support has been removed in 1.93.0"), so a
//! vulnerable `<script>` of a component (CVE-2024-43795 is one) is invisible to every rule.
//! Before a scan, each component's script sections are copied into a JavaScript twin
//! (`Login.vue` -> `Login.vue.js`) in a staging folder that mirrors the scanned tree; every
//! other line of the twin is left empty, so a finding's line in the twin is its line in the
//! component, and its path is the component's once the `.js` is taken off.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::outcome::{ScanFailure, ScanOutcome};
use super::report::SemgrepReport;

/// Appended to a component's path to name its twin.
pub const TWIN_SUFFIX: &str = ".js";

/// Components larger than this are not copied (minified bundles, generated code).
pub const MAX_COMPONENT_BYTES: u64 = 4 * 1024 * 1024;

/// At most this many components are staged per scan (the walk stops there).
pub const MAX_COMPONENTS: usize = 20_000;

/// The text of `source` with everything outside its `<script ...>` ... `</script>` sections
/// blanked (line breaks kept), or None when it has no script section.
pub fn script_twin(source: &str) -> Option<String> {
    let mut out = String::with_capacity(source.len());
    let mut found = false;
    let mut rest = source;
    loop {
        let Some(open) = find_ascii_ci(rest, "<script") else {
            blank_into(&mut out, rest);
            break;
        };
        // `<script>`, `<script setup>`; not `<scripts>` or `<script-x>`.
        let after = &rest[open + "<script".len()..];
        if !after.starts_with(|c: char| c == '>' || c.is_ascii_whitespace()) {
            blank_into(&mut out, &rest[..open + "<script".len()]);
            rest = after;
            continue;
        }
        let Some(tag_end) = after.find('>') else {
            blank_into(&mut out, rest);
            break;
        };
        blank_into(&mut out, &rest[..open + "<script".len() + tag_end + 1]);
        let body = &after[tag_end + 1..];
        let (code, tail) = match find_ascii_ci(body, "</script") {
            Some(close) => (&body[..close], &body[close..]),
            None => (body, ""),
        };
        if is_typescript(&after[..tag_end]) {
            // Our rules are JavaScript's; TypeScript read as JavaScript would not parse, and an
            // unparsable file is a broken answer: such a section is left out.
            blank_into(&mut out, code);
        } else {
            out.push_str(code);
            found = true;
        }
        rest = tail;
        if rest.is_empty() {
            break;
        }
        // Skip the closing tag itself, then look for another section.
        let close_len = rest.find('>').map(|i| i + 1).unwrap_or(rest.len());
        blank_into(&mut out, &rest[..close_len]);
        rest = &rest[close_len..];
    }
    found.then_some(out)
}

/// `lang="ts"` (or tsx) among a script tag's attributes.
fn is_typescript(attributes: &str) -> bool {
    let a = attributes.to_ascii_lowercase().replace(' ', "");
    [
        "lang=\"ts\"",
        "lang='ts'",
        "lang=ts",
        "lang=\"tsx\"",
        "lang='tsx'",
    ]
    .iter()
    .any(|l| a.contains(l))
}

/// Keeps only the line breaks of `text`.
fn blank_into(out: &mut String, text: &str) {
    out.extend(text.chars().filter(|&c| c == '\n'));
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(n.len())
        .position(|w| w.eq_ignore_ascii_case(n))
}

/// The component a twin's path names (`a/Login.vue.js` -> `a/Login.vue`).
pub fn component_path(twin: &str) -> String {
    twin.strip_suffix(TWIN_SUFFIX).unwrap_or(twin).to_string()
}

/// Writes the twin of every `.vue` component under `target` (a folder or one file) into
/// `stage`, at the component's path relative to `target` plus [`TWIN_SUFFIX`]. Folders named
/// by a plain pattern of `exclude` (`node_modules`, `.git`) are not entered, symbolic links
/// not followed. Returns how many twins were written.
pub fn stage_twins(target: &Path, stage: &Path, exclude: &[String]) -> std::io::Result<usize> {
    let skip = |name: &str| exclude.iter().any(|p| p == name);
    let mut written = 0;
    let mut stack: Vec<(PathBuf, PathBuf)> = Vec::new();
    let meta = std::fs::symlink_metadata(target)?;
    if meta.is_file() {
        if let Some(name) = target.file_name() {
            written += stage_one(target, &stage.join(name), meta.len())?;
        }
        return Ok(written);
    }
    stack.push((target.to_path_buf(), PathBuf::new()));
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                if !skip(&name_str) {
                    stack.push((entry.path(), rel.join(&name)));
                }
            } else if ft.is_file() && name_str.to_ascii_lowercase().ends_with(".vue") {
                if written >= MAX_COMPONENTS {
                    return Ok(written);
                }
                let len = entry.metadata()?.len();
                written += stage_one(&entry.path(), &stage.join(rel.join(&name)), len)?;
            }
        }
    }
    Ok(written)
}

/// Where a scan's twins are staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// The system's temporary folder (a scanner on this host).
    Temp,
    /// A folder beside the scanned tree, so that a Docker daemon that can mount the tree can
    /// mount the twins too (the system's temporary folder when that cannot be written).
    BesideTarget,
}

/// `report` (the scan of `target`) with the findings and errors of a second scan, `scan`, of
/// the twins of `target`'s components, staged as `staging` says and removed afterwards.
/// Without components, `report` as it is, and no second scan.
pub async fn with_twins<F, Fut>(
    mut report: SemgrepReport,
    target: &Path,
    exclude: &[String],
    staging: Staging,
    scan: F,
) -> ScanOutcome
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = ScanOutcome>,
{
    let beside = match staging {
        Staging::Temp => None,
        Staging::BesideTarget => std::path::absolute(target)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf)),
    };
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix(".ase-vue-");
        b
    };
    let stage = match beside.map(|dir| builder.tempdir_in(dir)) {
        Some(Ok(s)) => s,
        _ => match builder.tempdir() {
            Ok(s) => s,
            Err(e) => {
                return ScanOutcome::Failed(ScanFailure::Start(format!(
                    "staging folder for .vue scripts: {e}"
                )))
            }
        },
    };
    match stage_twins(target, stage.path(), exclude) {
        Ok(0) => return ScanOutcome::Completed(report),
        Ok(_) => {}
        Err(e) => {
            return ScanOutcome::Failed(ScanFailure::Start(format!(
                "{}: reading .vue components: {e}",
                target.display()
            )))
        }
    }
    let twins = match scan(stage.path().to_path_buf()).await {
        ScanOutcome::Completed(r) => r,
        failed => return failed,
    };
    report
        .findings
        .extend(twins.findings.into_iter().map(|mut f| {
            f.path = component_path(&f.path);
            f
        }));
    report.findings_total += twins.findings_total;
    report.errors.extend(twins.errors.into_iter().map(|mut e| {
        e.path = e.path.as_deref().map(component_path);
        e
    }));
    report.errors_total += twins.errors_total;
    ScanOutcome::Completed(report)
}

fn stage_one(component: &Path, twin_of: &Path, len: u64) -> std::io::Result<usize> {
    if len > MAX_COMPONENT_BYTES {
        return Ok(0);
    }
    let bytes = std::fs::read(component)?;
    let Some(twin) = script_twin(&String::from_utf8_lossy(&bytes)) else {
        return Ok(0);
    };
    let mut path = twin_of.as_os_str().to_owned();
    path.push(TWIN_SUFFIX);
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, twin)?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twin_keeps_script_lines_in_place_and_blanks_the_rest() {
        let vue = "<template>\n  <a href=\"x\">hi</a>\n</template>\n<script setup lang=\"js\">\nconst a = 1\nlet b = a + 1\n</script>\n<style>\n.x { color: red }\n</style>\n";
        let twin = script_twin(vue).unwrap();
        assert_eq!(twin.lines().count(), vue.lines().count());
        let lines: Vec<&str> = twin.lines().collect();
        assert_eq!(lines[4], "const a = 1");
        assert_eq!(lines[5], "let b = a + 1");
        for (i, l) in lines.iter().enumerate() {
            if i != 4 && i != 5 {
                assert!(l.trim().is_empty(), "line {}: {l:?}", i + 1);
            }
        }
    }

    #[test]
    fn two_sections_a_one_line_section_and_no_section() {
        let vue = "<script>export default {}</script>\n<template><p/></template>\n<SCRIPT setup>\nx()\n</SCRIPT>";
        let twin = script_twin(vue).unwrap();
        let lines: Vec<&str> = twin.lines().collect();
        assert_eq!(lines[0], "export default {}");
        assert_eq!(lines[3], "x()");
        assert_eq!(twin.matches('\n').count(), vue.matches('\n').count());
        assert_eq!(script_twin("<template><scripts/></template>\n"), None);
        assert_eq!(
            script_twin("<script lang=\"ts\">\nlet a: number = 1\n</script>\n"),
            None
        );
        assert_eq!(script_twin(""), None);
    }

    #[test]
    fn twins_mirror_the_tree_and_skip_excluded_folders() {
        let tree = tempfile::tempdir().unwrap();
        let stage = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("src/components")).unwrap();
        std::fs::create_dir_all(tree.path().join("node_modules/lib")).unwrap();
        let vue = "<template/>\n<script>\nrun()\n</script>\n";
        std::fs::write(tree.path().join("src/components/Login.vue"), vue).unwrap();
        std::fs::write(tree.path().join("node_modules/lib/X.vue"), vue).unwrap();
        std::fs::write(tree.path().join("src/Plain.vue"), "<template/>\n").unwrap();
        std::fs::write(tree.path().join("src/a.js"), "run()\n").unwrap();
        let n = stage_twins(tree.path(), stage.path(), &["node_modules".to_string()]).unwrap();
        assert_eq!(n, 1);
        let twin = stage.path().join("src/components/Login.vue.js");
        assert_eq!(std::fs::read_to_string(&twin).unwrap(), "\n\nrun()\n\n");
        assert!(!stage.path().join("node_modules").exists());
        assert!(!stage.path().join("src/Plain.vue.js").exists());
        assert_eq!(
            component_path("src/components/Login.vue.js"),
            "src/components/Login.vue"
        );
        // One file as the target.
        let one = tempfile::tempdir().unwrap();
        let file = tree.path().join("src/components/Login.vue");
        assert_eq!(stage_twins(&file, one.path(), &[]).unwrap(), 1);
        assert!(one.path().join("Login.vue.js").is_file());
    }
}
