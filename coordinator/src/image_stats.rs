//! What a worker's task-image pulls did and its image cache holds, as its last heartbeat told:
//! kept per worker in memory (never stored: a worker's counters start again with its process,
//! and a coordinator that restarts learns them again at the next heartbeat), shown by
//! `ListWorkers` (`ase status`) and `/metrics`.
//!
//! Bounded on receipt whatever the worker sent: at most [`MAX_PULLS_SHOWN`] pulls under way
//! (the others counted in `pulls_not_shown`), names cut to [`MAX_IMAGE_NAME_BYTES`].

use ase_proto::limits::{MAX_IMAGE_NAME_BYTES, MAX_PULLS_SHOWN};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageStats {
    pub pulls_total: u64,
    pub pulls_failed: u64,
    pub pull_attempts: u64,
    pub bytes_downloaded: u64,
    pub cache_images: u32,
    pub cache_bytes: u64,
    pub cache_pulled_bytes: u64,
    pub cache_budget_bytes: Option<u64>,
    pub evictions: u64,
    pub bytes_evicted: u64,
    /// Sorted by image.
    pub pulls: Vec<PullUnderWay>,
    /// Pulls under way beyond `pulls`.
    pub pulls_not_shown: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullUnderWay {
    pub image: String,
    pub attempt: u32,
    pub layers_seen: u32,
    pub layers_done: u32,
    pub bytes_downloaded: u64,
    pub bytes_total: u64,
}

impl ImageStats {
    /// Within the bounds of this module.
    pub fn bounded(mut self) -> Self {
        self.pulls.sort_by(|a, b| a.image.cmp(&b.image));
        if self.pulls.len() > MAX_PULLS_SHOWN {
            let cut = self.pulls.len() - MAX_PULLS_SHOWN;
            self.pulls.truncate(MAX_PULLS_SHOWN);
            self.pulls_not_shown = self
                .pulls_not_shown
                .saturating_add(u32::try_from(cut).unwrap_or(u32::MAX));
        }
        for p in &mut self.pulls {
            cut_to(&mut p.image, MAX_IMAGE_NAME_BYTES);
        }
        self
    }

    /// Pulls under way, listed or not.
    pub fn pulls_under_way(&self) -> u64 {
        self.pulls.len() as u64 + u64::from(self.pulls_not_shown)
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_to(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_s_stats_are_bounded_on_receipt() {
        let stats = ImageStats {
            pulls: (0..(MAX_PULLS_SHOWN + 5))
                .map(|i| PullUnderWay {
                    image: format!("{:03}{}", i, "é".repeat(MAX_IMAGE_NAME_BYTES)),
                    ..Default::default()
                })
                .rev()
                .collect(),
            pulls_not_shown: 2,
            ..Default::default()
        }
        .bounded();
        assert_eq!(stats.pulls.len(), MAX_PULLS_SHOWN);
        assert_eq!(stats.pulls_not_shown, 7);
        assert_eq!(stats.pulls_under_way(), MAX_PULLS_SHOWN as u64 + 7);
        assert!(stats.pulls[0].image.starts_with("000"));
        assert!(stats
            .pulls
            .iter()
            .all(|p| p.image.len() <= MAX_IMAGE_NAME_BYTES && p.image.len() > 200));
    }
}
