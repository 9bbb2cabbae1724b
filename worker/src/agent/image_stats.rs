//! The heartbeat's summary of this worker's task images: its pulls' counters, its cache now,
//! and the pulls under way, bounded whatever the number of pulls or the length of names (the
//! coordinator keeps it per worker for `ase status` and `/metrics`).

use crate::images::{CacheStats, PullStats};
use ase_proto::limits::{MAX_IMAGE_NAME_BYTES, MAX_PULLS_SHOWN};
use ase_proto::v1;

pub(crate) fn summary(pulls: &PullStats, cache: &CacheStats) -> v1::ImageStats {
    let mut under_way: Vec<_> = pulls.in_progress.iter().collect();
    under_way.sort_by(|a, b| a.image.cmp(&b.image));
    let shown = under_way.len().min(MAX_PULLS_SHOWN);
    v1::ImageStats {
        pulls_total: pulls.pulls_total,
        pulls_failed: pulls.pulls_failed,
        pull_attempts: pulls.pull_attempts,
        bytes_downloaded: pulls.bytes_downloaded,
        cache_images: u32::try_from(cache.images.len()).unwrap_or(u32::MAX),
        cache_bytes: cache.images.iter().map(|i| i.size_bytes).sum(),
        cache_pulled_bytes: cache.pulled_bytes,
        cache_budget_bytes: cache.budget_bytes,
        evictions: cache.evictions,
        bytes_evicted: cache.bytes_evicted,
        pulls: under_way[..shown]
            .iter()
            .map(|p| v1::PullUnderWay {
                image: cut(&p.image),
                attempt: p.attempt,
                layers_seen: u32::try_from(p.layers_seen).unwrap_or(u32::MAX),
                layers_done: u32::try_from(p.layers_done).unwrap_or(u32::MAX),
                bytes_downloaded: p.bytes_downloaded,
                bytes_total: p.bytes_total,
            })
            .collect(),
        pulls_not_shown: u32::try_from(under_way.len() - shown).unwrap_or(u32::MAX),
    }
}

/// At most [`MAX_IMAGE_NAME_BYTES`], cut at a character boundary.
fn cut(name: &str) -> String {
    let mut end = name.len().min(MAX_IMAGE_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{CachedImage, PullProgress};

    #[test]
    fn the_summary_lists_a_bounded_number_of_pulls_with_bounded_names_and_counts_the_rest() {
        let pulls = PullStats {
            pulls_total: 7,
            pulls_failed: 1,
            in_progress: (0..MAX_PULLS_SHOWN + 3)
                .map(|i| PullProgress {
                    image: format!("r/{i:03}:{}", "ü".repeat(MAX_IMAGE_NAME_BYTES)),
                    layers_seen: 4,
                    layers_done: 2,
                    bytes_downloaded: 10,
                    bytes_total: 40,
                    attempt: 1,
                })
                .rev()
                .collect(),
            ..Default::default()
        };
        let cache = CacheStats {
            budget_bytes: Some(1000),
            pulled_bytes: 300,
            images: vec![
                CachedImage {
                    id: "sha256:a".into(),
                    references: vec!["r/a:1".into()],
                    size_bytes: 300,
                    in_use: 0,
                    pulled: true,
                },
                CachedImage {
                    id: "sha256:b".into(),
                    references: vec!["r/b:1".into()],
                    size_bytes: 50,
                    in_use: 1,
                    pulled: false,
                },
            ],
            evictions: 2,
            ..Default::default()
        };
        let s = summary(&pulls, &cache);
        assert_eq!((s.pulls_total, s.pulls_failed), (7, 1));
        assert_eq!(s.pulls.len(), MAX_PULLS_SHOWN);
        assert_eq!(s.pulls_not_shown, 3);
        assert!(
            s.pulls[0].image.starts_with("r/000:"),
            "{}",
            s.pulls[0].image
        );
        assert!(s
            .pulls
            .iter()
            .all(|p| p.image.len() <= MAX_IMAGE_NAME_BYTES && p.image.len() > 200));
        assert_eq!(
            (s.cache_images, s.cache_bytes, s.cache_pulled_bytes),
            (2, 350, 300)
        );
        assert_eq!((s.cache_budget_bytes, s.evictions), (Some(1000), 2));
    }
}
