//! What the worker's pulls did and are doing: counters over its life, and the progress of each
//! pull under way (bytes and layers), bounded whatever the daemon sends.

use std::collections::HashMap;

use bollard::models::CreateImageInfo;

/// Layers remembered per pull; an image has tens, a hostile stream could name millions.
pub const MAX_LAYERS_TRACKED: usize = 512;
/// Pulls whose progress is shown at once (they are also bounded by the images evaluated).
pub const MAX_PULLS_SHOWN: usize = 64;

/// Counters over the worker's life (tests, logs, `/metrics`-style snapshots).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PullStats {
    /// Images pulled to completion.
    pub pulls_total: u64,
    /// Pulls that ended in an error after their retries.
    pub pulls_failed: u64,
    /// Requests sent to the daemon (first tries and retries).
    pub pull_attempts: u64,
    /// Needs met by an image already on the daemon (no pull).
    pub already_present: u64,
    /// Needs that waited for a pull another need had started.
    pub shared_waits: u64,
    /// Bytes the daemon reported downloaded, over completed and failed pulls.
    pub bytes_downloaded: u64,
    /// Layers the daemon downloaded or found already present.
    pub layers_done: u64,
    /// Pulls under way.
    pub in_progress: Vec<PullProgress>,
}

/// One pull under way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    pub attempt: u32,
    pub layers_seen: usize,
    pub layers_done: usize,
    pub bytes_downloaded: u64,
    pub bytes_total: u64,
}

#[derive(Debug, Default, Clone)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
}

/// Reads the daemon's progress messages of one pull.
#[derive(Debug, Default)]
pub struct ProgressTracker {
    layers: HashMap<String, Layer>,
}

impl ProgressTracker {
    pub fn observe(&mut self, info: &CreateImageInfo) {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return;
        };
        // Messages about the tag itself ("Pulling from x") carry the tag as id, not a layer.
        let layer_status = status.starts_with("Pulling fs layer")
            || status.starts_with("Waiting")
            || status.starts_with("Downloading")
            || status.starts_with("Verifying")
            || status.starts_with("Download complete")
            || status.starts_with("Extracting")
            || status.starts_with("Pull complete")
            || status.starts_with("Already exists");
        if !layer_status {
            return;
        }
        if !self.layers.contains_key(id) && self.layers.len() >= MAX_LAYERS_TRACKED {
            return;
        }
        let layer = self.layers.entry(id.clone()).or_default();
        if status.starts_with("Downloading") {
            if let Some(d) = &info.progress_detail {
                let current = d.current.unwrap_or(0).max(0) as u64;
                let total = d.total.unwrap_or(0).max(0) as u64;
                layer.current = layer.current.max(current);
                layer.total = layer.total.max(total);
            }
        }
        if status.starts_with("Download complete") {
            layer.current = layer.current.max(layer.total);
        }
        if status.starts_with("Pull complete") || status.starts_with("Already exists") {
            layer.done = true;
        }
    }

    pub fn snapshot(&self, image: &str, attempt: u32) -> PullProgress {
        PullProgress {
            image: image.to_string(),
            attempt,
            layers_seen: self.layers.len(),
            layers_done: self.layers.values().filter(|l| l.done).count(),
            bytes_downloaded: self.layers.values().map(|l| l.current).sum(),
            bytes_total: self.layers.values().map(|l| l.total).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn msg(id: &str, status: &str, cur: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail {
                current: cur,
                total,
            }),
            error_detail: None,
        }
    }

    #[test]
    fn layers_and_bytes_are_counted_once_each() {
        let mut t = ProgressTracker::default();
        t.observe(&msg("v1", "Pulling from ase/x", None, None));
        t.observe(&msg("aaa", "Pulling fs layer", None, None));
        t.observe(&msg("bbb", "Already exists", None, None));
        t.observe(&msg("aaa", "Downloading", Some(100), Some(300)));
        t.observe(&msg("aaa", "Downloading", Some(300), Some(300)));
        t.observe(&msg("aaa", "Pull complete", None, None));
        let s = t.snapshot("x", 1);
        assert_eq!((s.layers_seen, s.layers_done), (2, 2));
        assert_eq!((s.bytes_downloaded, s.bytes_total), (300, 300));
    }

    #[test]
    fn the_layer_table_is_bounded() {
        let mut t = ProgressTracker::default();
        for i in 0..(MAX_LAYERS_TRACKED + 100) {
            t.observe(&msg(&format!("l{i}"), "Pulling fs layer", None, None));
        }
        assert_eq!(t.snapshot("x", 1).layers_seen, MAX_LAYERS_TRACKED);
    }
}
