//! The exact two-sided sign test: under "neither run is better", each of the `n` tasks whose
//! verdicts differ goes either way with probability 1/2, so the count `k` one run wins is
//! Binomial(n, 1/2) and `p = min(1, 2 * P(X <= min(k, n - k)))`. No normal approximation.

/// Two-sided p-value of `k` wins out of `n` differing tasks (`k <= n`); 1 when `n == 0`.
pub fn sign_test(n: u64, k: u64) -> f64 {
    let k = k.min(n);
    let m = k.min(n - k);
    if n == 0 {
        return 1.0;
    }
    if n < 127 {
        // Exact integers: C(n, i) and 2^n fit in u128; one rounding, at the division.
        let mut c: u128 = 1;
        let mut tail: u128 = 0;
        for i in 0..=m {
            if i > 0 {
                c = c * u128::from(n - i + 1) / u128::from(i);
            }
            tail += c;
        }
        let p = (2 * tail) as f64 / (1u128 << n) as f64;
        return p.min(1.0);
    }
    // Larger n: the same sum, from its largest term down. ln P(X = m) by a sum of logs, then
    // P(X = i - 1) = P(X = i) * i / (n - i + 1); relative error around 1e-12, far below what
    // any decision reads.
    let ln_top: f64 = (1..=m)
        .map(|j| ((n - m + j) as f64 / j as f64).ln())
        .sum::<f64>()
        - n as f64 * std::f64::consts::LN_2;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    let mut i = m;
    while i > 0 && term > 1e-300 {
        term *= i as f64 / (n - i + 1) as f64;
        sum += term;
        i -= 1;
    }
    (2.0 * (ln_top.exp() * sum)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reference_values() {
        assert_eq!(sign_test(10, 1), 0.021484375); // 2 * 11 / 1024
        assert_eq!(sign_test(10, 9), 0.021484375);
        assert_eq!(sign_test(5, 0), 0.0625);
        assert_eq!(sign_test(0, 0), 1.0);
        assert_eq!(sign_test(1, 0), 1.0);
        assert_eq!(sign_test(4, 2), 1.0);
        assert_eq!(sign_test(20, 5), 0.04138946533203125); // 2 * 21700 / 2^20
        assert_eq!(sign_test(126, 50), SIGN_126_50);
    }

    // Python 3: float(2 * Fraction(sum(comb(n, i) for i in range(m + 1)), 2 ** n)).
    const SIGN_126_50: f64 = 0.02554336402978297;
    const SIGN_200_80: f64 = 0.0056851559967503055;
    const SIGN_1000_470: f64 = 0.06202319509836318;

    #[test]
    fn large_n_agrees_with_exact_rationals() {
        let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-10;
        assert!(
            close(sign_test(200, 80), SIGN_200_80),
            "{}",
            sign_test(200, 80)
        );
        assert!(close(sign_test(1000, 470), SIGN_1000_470));
        assert!(sign_test(100_000, 0) >= 0.0);
        assert_eq!(sign_test(100_000, 50_000), 1.0);
    }
}
