//! [`ImageStats`] to and from its protobuf message (heartbeats in, `ListWorkers` out).

use crate::image_stats::{ImageStats, PullUnderWay};
use ase_proto::v1;

/// What a heartbeat said, within the bounds of [`ImageStats::bounded`] (the list of pulls is
/// cut before anything is copied).
pub(crate) fn image_stats_from_proto(p: v1::ImageStats) -> ImageStats {
    let listed = p.pulls.len();
    let kept = listed.min(ase_proto::limits::MAX_PULLS_SHOWN);
    let dropped = u32::try_from(listed - kept).unwrap_or(u32::MAX);
    ImageStats {
        pulls_total: p.pulls_total,
        pulls_failed: p.pulls_failed,
        pull_attempts: p.pull_attempts,
        bytes_downloaded: p.bytes_downloaded,
        cache_images: p.cache_images,
        cache_bytes: p.cache_bytes,
        cache_pulled_bytes: p.cache_pulled_bytes,
        cache_budget_bytes: p.cache_budget_bytes,
        evictions: p.evictions,
        bytes_evicted: p.bytes_evicted,
        pulls: p
            .pulls
            .into_iter()
            .take(kept)
            .map(|u| PullUnderWay {
                image: u.image,
                attempt: u.attempt,
                layers_seen: u.layers_seen,
                layers_done: u.layers_done,
                bytes_downloaded: u.bytes_downloaded,
                bytes_total: u.bytes_total,
            })
            .collect(),
        pulls_not_shown: p.pulls_not_shown.saturating_add(dropped),
    }
    .bounded()
}

pub(crate) fn image_stats_to_proto(s: ImageStats) -> v1::ImageStats {
    v1::ImageStats {
        pulls_total: s.pulls_total,
        pulls_failed: s.pulls_failed,
        pull_attempts: s.pull_attempts,
        bytes_downloaded: s.bytes_downloaded,
        cache_images: s.cache_images,
        cache_bytes: s.cache_bytes,
        cache_pulled_bytes: s.cache_pulled_bytes,
        cache_budget_bytes: s.cache_budget_bytes,
        evictions: s.evictions,
        bytes_evicted: s.bytes_evicted,
        pulls: s
            .pulls
            .into_iter()
            .map(|u| v1::PullUnderWay {
                image: u.image,
                attempt: u.attempt,
                layers_seen: u.layers_seen,
                layers_done: u.layers_done,
                bytes_downloaded: u.bytes_downloaded,
                bytes_total: u.bytes_total,
            })
            .collect(),
        pulls_not_shown: s.pulls_not_shown,
    }
}
