//! v1 static evaluation: scanning a unit's code tree with our semgrep rule packs and turning
//! the report into the A.S.E count (`detected_vul_num`, -1 when the scan failed).

mod bare;
mod container;
mod findings;
mod outcome;
mod report;
mod rule_select;
pub mod vue_script;

pub use bare::{
    osemgrep_args, osemgrep_args_for, BareScanner, ScanSettings, DEFAULT_EXCLUDES,
    STDERR_TAIL_BYTES,
};
pub use container::{
    reap_orphans, ContainerLimits, ContainerScanner, ScanLabels, CONTAINER_SRC, IMAGE_RULES,
    ROLE_LABEL, ROLE_SAST, RUN_LABEL, UNIT_LABEL, WORKER_LABEL,
};
pub use findings::{counted_findings, unparsable_paths};
pub use outcome::{
    count_vulns, outcome_from_process, CountCriteria, CountScope, ProcessOutput, ScanFailure,
    ScanOutcome, VulnCount,
};
pub use report::{
    parse_semgrep_json, relative_to_root, Finding, ParseLimits, ReportError, ScanError,
    SemgrepReport, DEFAULT_MAX_ERRORS, DEFAULT_MAX_FINDINGS, DEFAULT_MAX_OUTPUT_BYTES,
};
pub use rule_select::{CatalogError, RuleCatalog, RuleSet, Selection, CVE_DIR};
