//! The demo campaign `ase run` runs when no run is configured.

use crate::config::AseConfig;
use std::path::Path;

pub fn configure(_config: &mut AseConfig, _data: &Path) -> anyhow::Result<()> {
    anyhow::bail!("no run is configured (pass --config FILE with [[runs]]); the demo campaign is not part of this build yet")
}
