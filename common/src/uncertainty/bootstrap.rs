//! Percentile bootstrap over items (tasks), resampled within strata.
//!
//! Each replicate draws, for every stratum in order, as many items as the stratum holds,
//! uniformly with replacement (`SplitMix64::below`), and evaluates the statistic on the drawn
//! items; the interval is the `(1 - level) / 2` and `(1 + level) / 2` quantiles of the sorted
//! replicates, interpolated linearly between order statistics (numpy's default `percentile`).
//! A task's rounds travel together because the item is the task, never the unit.

use super::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// How many replicates, from which seed, at which level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    pub resamples: u32,
    pub seed: u64,
    /// 0.95 for a 95 % interval.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: 2000,
            seed: 15,
            level: 0.95,
        }
    }
}

/// A figure with its bootstrap interval, on the figure's own scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// Linear interpolation between order statistics of sorted `values` (numpy's `percentile`
/// with its default method). `values` must not be empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The bootstrap interval of `stat` over the items listed in `strata` (item indices; empty
/// strata are skipped). `None` when there is no item or no replicate.
pub fn bootstrap(
    strata: &[Vec<usize>],
    config: &BootstrapConfig,
    stat: impl Fn(&[usize]) -> f64,
) -> Option<Interval> {
    bootstrap_figures(strata, config, 1, |s, out| out[0] = stat(s))
        .pop()
        .flatten()
}

/// The intervals of `figures` statistics computed from the same replicates: `stat` writes
/// each figure of a sample into its slot. A figure that is NaN on the whole sample or on any
/// replicate (not defined there) has no interval. The draws are those of [`bootstrap`] with
/// the same config, so a figure gets the same interval whichever figures are computed beside.
pub fn bootstrap_figures(
    strata: &[Vec<usize>],
    config: &BootstrapConfig,
    figures: usize,
    stat: impl Fn(&[usize], &mut [f64]),
) -> Vec<Option<Interval>> {
    let all: Vec<usize> = strata.iter().flatten().copied().collect();
    if all.is_empty() || config.resamples == 0 {
        return vec![None; figures];
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut sample = Vec::with_capacity(all.len());
    let mut values = vec![0.0; figures];
    let mut replicates = vec![Vec::with_capacity(config.resamples as usize); figures];
    for _ in 0..config.resamples {
        sample.clear();
        for stratum in strata.iter().filter(|s| !s.is_empty()) {
            for _ in 0..stratum.len() {
                sample.push(stratum[rng.below(stratum.len())]);
            }
        }
        stat(&sample, &mut values);
        for (r, &v) in replicates.iter_mut().zip(&values) {
            r.push(v);
        }
    }
    stat(&all, &mut values);
    let tail = (1.0 - config.level) / 2.0;
    replicates
        .into_iter()
        .zip(values)
        .map(|(mut r, estimate)| {
            if estimate.is_nan() || r.iter().any(|v| v.is_nan()) {
                return None;
            }
            r.sort_by(f64::total_cmp);
            Some(Interval {
                estimate,
                low: quantile(&r, tail),
                high: quantile(&r, 1.0 - tail),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        // np.percentile([1, 2, 3, 4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert!((quantile(&v, 0.975) - 3.925).abs() < 1e-12);
        assert_eq!(quantile(&[5.0], 0.975), 5.0);
    }

    #[test]
    fn nothing_to_resample_has_no_interval() {
        let c = BootstrapConfig::default();
        assert_eq!(bootstrap(&[vec![]], &c, |_| 0.0), None);
        let none = BootstrapConfig { resamples: 0, ..c };
        assert_eq!(bootstrap(&[vec![0]], &none, |_| 0.0), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let c = BootstrapConfig::default();
        let x = [0.0, 1.0, 1.0, 0.5, 0.0, 1.0];
        let mean = |s: &[usize]| s.iter().map(|&i| x[i]).sum::<f64>() / s.len() as f64;
        let a = bootstrap(&[(0..6).collect()], &c, mean).unwrap();
        let b = bootstrap(&[(0..6).collect()], &c, mean).unwrap();
        assert_eq!(a, b);
        assert!(a.low <= a.estimate && a.estimate <= a.high);
    }
}
