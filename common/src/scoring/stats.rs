//! The arithmetic upstream's scores rest on, reproduced bit for bit where it matters.
//!
//! Stability normalises per-task standard deviations by their min and max: if two tasks with the
//! same pattern of results got standard deviations one ulp apart, the range would be tiny but
//! positive and every task off the minimum would drop from 1 to 0. So the standard deviation is
//! computed the way numpy does it (mean by division, squared deviations summed pairwise), not by a
//! textbook formula that could round differently.

/// Python's `round(x, 2)`: the exact binary value rounded to 2 decimals, exact ties to even.
/// Rust's `{:.2}` formats the exact decimal expansion with the same tie rule, so the formatted
/// text is the rounded number.
pub fn round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.2}")
        .parse()
        .expect("a finite f64 formatted with {:.2} parses back")
}

/// `round(x, 2)` on a numpy float64, which numpy implements as multiply by 100, round half to
/// even, divide by 100: unlike Python's `round`, the product is rounded first, so a value just
/// below a tie in binary (24.215) can go up (24.22, where Python gives 24.21).
pub fn round2_numpy(x: f64) -> f64 {
    (x * 100.0).round_ties_even() / 100.0
}

/// Rounds an upstream figure the way upstream's own value would round: numpy's way when the
/// value is a numpy float64 in upstream's code, Python's otherwise.
pub fn round2_as(x: f64, numpy: bool) -> f64 {
    if numpy {
        round2_numpy(x)
    } else {
        round2(x)
    }
}

/// numpy's pairwise summation (`pairwise_sum` in `loops_utils.h`), used by `np.sum`/`np.std` on a
/// contiguous float64 array: plain loop below 8 items, 8 interleaved accumulators up to 128,
/// halves recursively above.
fn numpy_pairwise_sum(values: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        let mut res = 0.0;
        for v in values {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&values[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += values[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &values[i..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_pairwise_sum(&values[..half]) + numpy_pairwise_sum(&values[half..])
    }
}

/// `np.std(values, ddof=1)` for 0/1 round results; `None` with fewer than 2 values, where the
/// sample standard deviation is undefined (numpy would return NaN with a warning).
pub fn sample_std(values: &[u8]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    // numpy sums the integer array exactly, then divides.
    let total: u64 = values.iter().map(|&v| u64::from(v)).sum();
    let mean = total as f64 / n as f64;
    let squares: Vec<f64> = values
        .iter()
        .map(|&v| {
            let d = f64::from(v) - mean;
            d * d
        })
        .collect();
    Some((numpy_pairwise_sum(&squares) / (n - 1) as f64).sqrt())
}

/// The stability of a group, with what decides how upstream rounds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stability {
    /// Mean normalised stability, 0..=1.
    pub fraction: f64,
    /// The tasks' stds differed. Then upstream's normalised values, and everything computed
    /// from them, are numpy float64 and round with `round2_numpy`; when all stds are equal
    /// upstream uses the Python int 1 and Python's rounding applies.
    pub spread: bool,
}

impl Stability {
    /// Rounds a figure derived from this stability as upstream would.
    pub fn round2(&self, x: f64) -> f64 {
        round2_as(x, self.spread)
    }
}

/// Upstream's stability of a group: each task's std mapped to `1 - (s - min) / (max - min)`, or
/// 1 for every task when `max == min`, then the plain mean (Python `sum(...) / len(...)`, a
/// left-to-right sum). `None` for an empty group.
pub fn normalised_stability(stds: &[f64]) -> Option<Stability> {
    if stds.is_empty() {
        return None;
    }
    let min = stds.iter().copied().fold(f64::INFINITY, f64::min);
    let max = stds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = max - min;
    let mut sum = 0.0;
    for &s in stds {
        sum += if range > 0.0 {
            1.0 - (s - min) / range
        } else {
            1.0
        };
    }
    Some(Stability {
        fraction: sum / stds.len() as f64,
        spread: range > 0.0,
    })
}

/// Stability of a group from each task's round results: `None` when any task has fewer than two
/// rounds (the std is undefined) or the group is empty.
pub fn group_stability<'a>(round_results: impl IntoIterator<Item = &'a [u8]>) -> Option<Stability> {
    let stds: Option<Vec<f64>> = round_results.into_iter().map(sample_std).collect();
    normalised_stability(&stds?)
}

/// Python's `str(float)` for the figures upstream prints: shortest round-trip digits, and a
/// trailing `.0` on whole numbers (`50.0`, not `50`). Scores lie in 0..=100 after rounding to 2
/// decimals, where Python never switches to exponent notation.
pub fn python_float_str(x: f64) -> String {
    let s = format!("{x}");
    if x.is_finite() && !s.contains('.') {
        format!("{s}.0")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round2_matches_python_round_on_binary_floats() {
        // Values checked against CPython's round(x, 2).
        assert_eq!(round2(0.125), 0.12); // exact tie -> even
        assert_eq!(round2(0.375), 0.38); // exact tie -> even
        assert_eq!(round2(2.675), 2.67); // binary value is below the tie
        assert_eq!(round2(1.005), 1.0);
        assert_eq!(round2(66.665), 66.67); // binary value is above the tie
        assert_eq!(round2(200.0 / 3.0), 66.67);
        assert_eq!(round2(100.0 / 3.0), 33.33);
        assert_eq!(round2(0.0), 0.0);
        assert_eq!(round2(100.0), 100.0);
    }

    #[test]
    fn round2_numpy_matches_numpy_round_on_float64() {
        // round(np.float64(x), 2) by numpy 2.x, next to Python's round(x, 2).
        assert_eq!(round2_numpy(24.215), 24.22);
        assert_eq!(round2(24.215), 24.21);
        assert_eq!(round2_numpy(0.125), 0.12);
        assert_eq!(round2_numpy(200.0 / 3.0), 66.67);
        assert_eq!(round2_as(24.215, false), 24.21);
        assert_eq!(round2_as(24.215, true), 24.22);
    }

    #[test]
    fn sample_std_matches_numpy_bit_for_bit() {
        // np.std(v, ddof=1) printed with repr() by numpy 2.x.
        assert_eq!(sample_std(&[1, 0, 0]), Some(0.5773502691896258));
        assert_eq!(sample_std(&[0, 1, 1]), Some(0.5773502691896258));
        assert_eq!(sample_std(&[1, 0]), Some(std::f64::consts::FRAC_1_SQRT_2));
        assert_eq!(sample_std(&[1, 0, 0, 0]), Some(0.5));
        assert_eq!(sample_std(&[1, 0, 1, 0]), Some(0.5773502691896257));
        assert_eq!(sample_std(&[1, 1, 1]), Some(0.0));
        assert_eq!(sample_std(&[0, 0, 0]), Some(0.0));
    }

    #[test]
    fn sample_std_is_undefined_below_two_values() {
        assert_eq!(sample_std(&[1]), None);
        assert_eq!(sample_std(&[]), None);
    }

    #[test]
    fn pairwise_sum_uses_numpy_blocking() {
        // np.sum(np.array(v)) by numpy 2.x: the blocked order keeps small terms that a
        // left-to-right sum would lose against 1e16 (which gives 1e16 + 0 here).
        let mut v = vec![1e16];
        v.extend([1.0; 8]);
        assert_eq!(numpy_pairwise_sum(&v), 1.0000000000000008e16);
        let mut v = vec![1e16];
        v.extend([1.0; 15]);
        assert_eq!(numpy_pairwise_sum(&v), 1.0000000000000014e16);
        // Ten 0.1s: numpy gives exactly 1.0, Python's sum() 0.9999999999999999.
        assert_eq!(numpy_pairwise_sum(&[0.1; 10]), 1.0);
        assert_eq!(numpy_pairwise_sum(&[1.0; 300]), 300.0);
        assert_eq!(numpy_pairwise_sum(&[]), 0.0);
    }

    #[test]
    fn normalised_stability_all_equal_is_one() {
        let all_one = Some(Stability {
            fraction: 1.0,
            spread: false,
        });
        assert_eq!(normalised_stability(&[0.5, 0.5, 0.5]), all_one);
        assert_eq!(normalised_stability(&[0.0]), all_one);
    }

    #[test]
    fn normalised_stability_min_max() {
        // Stable tasks (std 0) score 1, the most unstable 0.
        let s = normalised_stability(&[0.0, 0.5773502691896258, 0.0, 0.5773502691896258]);
        assert_eq!(
            s,
            Some(Stability {
                fraction: 0.5,
                spread: true
            })
        );
        let s = normalised_stability(&[0.0, 0.25, 0.5]).unwrap();
        assert!((s.fraction - 0.5).abs() < 1e-15);
    }

    #[test]
    fn normalised_stability_of_nothing_is_none() {
        assert_eq!(normalised_stability(&[]), None);
    }

    #[test]
    fn group_stability_needs_two_rounds_everywhere() {
        let a: &[u8] = &[1, 0, 0];
        let b: &[u8] = &[1, 1, 1];
        assert_eq!(group_stability([a, b]).map(|s| s.fraction), Some(0.5));
        let short: &[u8] = &[1];
        assert_eq!(group_stability([a, short]), None);
        assert_eq!(group_stability(std::iter::empty::<&[u8]>()), None);
    }

    #[test]
    fn python_float_str_keeps_trailing_zero() {
        assert_eq!(python_float_str(50.0), "50.0");
        assert_eq!(python_float_str(66.67), "66.67");
        assert_eq!(python_float_str(0.0), "0.0");
        assert_eq!(python_float_str(100.0), "100.0");
        assert_eq!(python_float_str(3.1), "3.1");
    }
}
