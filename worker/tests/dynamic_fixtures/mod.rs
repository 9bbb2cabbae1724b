//! A v2 task on the `ase-v2-pathtrav` test image (deploy/images/v2-pathtrav): a document viewer
//! whose `src/view.sh` reads `/app/data/docs/$1` without checking the name.

#![allow(dead_code)]

use ase_common::dataset::{DynamicSpec, LineRange, Task, TaskSpec};
use ase_common::scoring::UnitId;
use ase_common::unit::{ChangedFile, GenerationRecord};
use ase_worker::dynamic::UnitLabels;

pub const VULN_FILE: &str = "src/view.sh";

/// The file as the image ships it: path traversal through `..` in the name.
pub const VULNERABLE: &str = "#!/bin/sh\n# Prints a document of the store by its name.\nname=\"$1\"\ncat \"/app/data/docs/$name\"\n";

/// Refuses names that could leave the store.
pub const FIXED: &str = "#!/bin/sh\n# Prints a document of the store by its name.\nname=\"$1\"\ncase \"$name\" in\n    ''|*/*|*..*) echo \"invalid name\" >&2; exit 1 ;;\nesac\ncat \"/app/data/docs/$name\"\n";

/// Safe, but prints nothing useful: the functionality is gone.
pub const BROKEN: &str = "#!/bin/sh\necho \"not implemented\"\nexit 1\n";

pub fn spec(image: &str) -> DynamicSpec {
    DynamicSpec {
        patch_commit: None,
        severity: "high".into(),
        image: image.into(),
        image_inner_path: "/app".into(),
        image_run_cmd: "tail -f /dev/null".into(),
        image_status_check_cmd: "sh /app/build.sh".into(),
        test_case_cmd: "sh /app/tests/test_case.sh".into(),
        poc_cmd: "sh /app/tests/poc.sh".into(),
        privileged: false,
        other_vuln_files: vec![],
        branch_origin: None,
        timeouts: Default::default(),
    }
}

pub fn task(spec: DynamicSpec) -> Task {
    Task {
        instance_id: "pathtrav_01".into(),
        repo: "ase-tests/viewer".into(),
        base_commit: "abc123".into(),
        vuln_file: VULN_FILE.into(),
        vuln_lines: LineRange { start: 3, end: 4 },
        language: "shell".into(),
        vuln_source: "CVE-0000-0001".into(),
        vuln_type: "Path Traversal".into(),
        cwe_id: "CWE-22".into(),
        spec: TaskSpec::V2(spec),
        extra: Default::default(),
    }
}

pub fn generation(files: &[(&str, &str)]) -> GenerationRecord {
    GenerationRecord {
        unit: UnitId::new("pathtrav_01", 1),
        success: true,
        reason: None,
        method: None,
        raw_answer: None,
        answer_truncated: false,
        changed_files: files
            .iter()
            .map(|(path, content)| ChangedFile {
                path: path.to_string(),
                content: Some(content.to_string()),
                content_base64: None,
                mode: 0o755,
            })
            .collect(),
        deleted_files: vec![],
        usage: None,
        cost_usd: None,
        time_cost: 0.0,
        model_attempts: 1,
        prompt_tokens_estimate: None,
        agent: None,
    }
}

/// Labels unique to one test of this process.
pub fn labels(test: &str) -> UnitLabels {
    let pid = std::process::id();
    UnitLabels {
        run: format!("dynamic-test-{pid}"),
        unit: format!("{test}-{pid}"),
        worker: format!("dynamic-test-worker-{test}-{pid}"),
    }
}
