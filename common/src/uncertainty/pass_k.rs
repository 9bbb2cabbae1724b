//! pass@k and pass^k over a task's rounds: the chance that k rounds drawn without replacement
//! from the task's n hold at least one secure answer (pass@k, `1 - C(n-c, k) / C(n, k)`) or only
//! secure answers (pass^k, `C(c, k) / C(n, k)`), averaged over tasks (each task weighs the
//! same). At `k = n` they are the share of tasks secure in at least one round / in every round.

use serde::{Deserialize, Serialize};

/// `C(a, k) / C(n, k)` as a product, so no binomial coefficient is ever formed.
fn choose_ratio(a: u32, n: u32, k: u32) -> f64 {
    if a < k {
        return 0.0;
    }
    (0..k).fold(1.0, |p, j| p * f64::from(a - j) / f64::from(n - j))
}

/// The figures for one k, as percentages (0..100).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PassK {
    pub k: u32,
    pub pass_at_k: f64,
    pub pass_hat_k: f64,
}

/// pass@k and pass^k for k = 1..=(the fewest rounds any task has), from each task's
/// `(secure rounds, rounds)`; empty without tasks or when a task has no round.
pub fn pass_k(tasks: &[(u32, u32)]) -> Vec<PassK> {
    let max_k = tasks.iter().map(|&(_, n)| n).min().unwrap_or(0);
    let count = tasks.len() as f64;
    (1..=max_k)
        .map(|k| {
            let (mut at, mut hat) = (0.0, 0.0);
            for &(c, n) in tasks {
                at += 1.0 - choose_ratio(n - c.min(n), n, k);
                hat += choose_ratio(c.min(n), n, k);
            }
            PassK {
                k,
                pass_at_k: at / count * 100.0,
                pass_hat_k: hat / count * 100.0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_k_equal_to_rounds_they_are_any_and_every_round() {
        // Secure in 3/3, 1/3, 0/3, 2/3 rounds.
        let p = pass_k(&[(3, 3), (1, 3), (0, 3), (2, 3)]);
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].pass_at_k, 75.0); // 3 of 4 tasks secure at least once
        assert_eq!(p[2].pass_hat_k, 25.0); // 1 of 4 secure every time
                                           // k = 1: the mean secure share per task, (1 + 1/3 + 0 + 2/3) / 4 = 0.5.
        assert!((p[0].pass_at_k - 50.0).abs() < 1e-12);
        assert!((p[0].pass_hat_k - 50.0).abs() < 1e-12);
        // k = 2: pass@2 = (1 + 2/3 + 0 + 1) / 4, pass^2 = (1 + 0 + 0 + 1/3) / 4.
        assert!((p[1].pass_at_k - 200.0 / 3.0).abs() < 1e-12);
        assert!((p[1].pass_hat_k - 100.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn one_round_gives_only_k_1() {
        let p = pass_k(&[(1, 1), (0, 1)]);
        assert_eq!(
            p,
            [PassK {
                k: 1,
                pass_at_k: 50.0,
                pass_hat_k: 50.0
            }]
        );
        assert!(pass_k(&[]).is_empty());
    }
}
