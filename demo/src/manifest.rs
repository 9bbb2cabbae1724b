//! `examples/demo/repos.json`: the demo repos, where their two trees live and the commit ids
//! that materialising them must give.

use serde::Deserialize;

/// One demo repo: two commits, the vulnerable base and the fix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoRepo {
    /// `owner/name`, as the tasks name it.
    pub repo: String,
    /// Folder under `examples/demo/repos/` holding `base/` and `fix/`.
    pub dir: String,
    pub base_message: String,
    pub fix_message: String,
    /// Author and committer date of the base commit (RFC 3339); the fix is one day later.
    pub date: String,
    pub fix_date: String,
    /// The ids materialising must produce; the task files name them.
    pub base_commit: String,
    pub fix_commit: String,
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<DemoRepo>, serde_json::Error> {
    serde_json::from_slice(bytes)
}
