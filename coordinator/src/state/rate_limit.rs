//! Per-run requests-per-minute limit on model calls: a token bucket refilled continuously,
//! holding at most one minute's worth of requests.

const TOKEN: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_minute: u32,
    /// Tokens in units of 1/60_000: one millisecond at `per_minute` adds exactly
    /// `per_minute` units, so no refill is lost to rounding.
    units: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// `per_minute == 0` means unlimited. The bucket starts full.
    pub fn new(per_minute: u32, now_ms: u64) -> Self {
        Self {
            per_minute,
            units: u64::from(per_minute) * TOKEN,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let capacity = u64::from(self.per_minute) * TOKEN;
        self.units = (self.units + elapsed * u64::from(self.per_minute)).min(capacity);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        self.refill(now_ms);
        if self.units >= TOKEN {
            self.units -= TOKEN;
            true
        } else {
            false
        }
    }

    /// Milliseconds until a token is available (0: one is now).
    pub fn ms_until_token(&mut self, now_ms: u64) -> u64 {
        if self.per_minute == 0 {
            return 0;
        }
        self.refill(now_ms);
        let missing = TOKEN.saturating_sub(self.units);
        missing.div_ceil(u64::from(self.per_minute))
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        if self.per_minute == 0 {
            return u64::MAX;
        }
        self.refill(now_ms);
        self.units / TOKEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_minute_then_refills_at_the_rate() {
        let mut b = TokenBucket::new(60, 0);
        for _ in 0..60 {
            assert!(b.try_take(0));
        }
        assert!(!b.try_take(0));
        assert!(!b.try_take(999));
        assert!(b.try_take(1000));
        assert!(!b.try_take(1000));
        // Partial refills add up.
        let mut slow = TokenBucket::new(2, 0);
        assert!(slow.try_take(0) && slow.try_take(0));
        assert!(!slow.try_take(29_000));
        assert!(slow.try_take(30_000));
        assert_eq!(b.ms_until_token(1000), 1000);
        assert_eq!(slow.ms_until_token(30_000), 30_000);
        assert_eq!(slow.ms_until_token(45_000), 15_000);
        // Never more than a minute's worth.
        assert_eq!(b.available(10 * 60_000), 60);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut b = TokenBucket::new(0, 0);
        for _ in 0..10_000 {
            assert!(b.try_take(0));
        }
    }
}
