//! A run's pause after failures of something every unit of the run depends on: the model
//! provider (429, quota, auth, 5xx, timeouts) for generations, the task images' registry
//! (unreachable, pull limit) for v2 evaluations. Such a failure is the run's condition, not a
//! unit's fault: it uses up no attempt of its unit; instead the run's leases of that phase
//! stop, on every worker, until the announced `Retry-After` (at least the back-off of the
//! pause's level) has passed. The back-off doubles when a lease granted after a pause fails
//! again without a `Retry-After`, and starts from its base when the kind changes. After
//! `visible_after` consecutive failures the run shows `paused: KIND`, and then gets one lease
//! of that phase at a time (a probe) until one succeeds: a provider or registry that is still
//! down costs one call per pause, not one per slot. A wrong key or an exhausted quota does not
//! mend with time: once visible, such a pause holds until a client supplies the key again
//! (`resume`).
//!
//! Reports about leases granted before the current pause began say nothing new: a failure of
//! such a lease only extends the pause to its `Retry-After` (it does not raise the back-off
//! level), and its success does not end the pause. Only a lease granted after the pause began
//! (a probe, or the first leases after a short pause) raises the level or ends it.
//!
//! Kept in memory only: a pause lasts seconds to minutes and a restarted coordinator relearns
//! it from the next failure (one lease per slot at most), while storing it would add a durable
//! write to every failure report. The key a `paused: auth` run waits for is memory-only anyway,
//! and after a restart such a run waits for it (`waiting_for_key`).

use crate::messages::{ProviderFault, RegistryFault};
use std::collections::BTreeMap;

/// What a pause is about: the kinds of failure it tells apart.
pub trait PauseKind: Copy + Ord + std::fmt::Debug {
    /// Waiting mends it (otherwise the pause, once visible, waits for a key).
    fn resumes_by_itself(self) -> bool;
}

impl PauseKind for ProviderFault {
    fn resumes_by_itself(self) -> bool {
        ProviderFault::resumes_by_itself(self)
    }
}

impl PauseKind for RegistryFault {
    fn resumes_by_itself(self) -> bool {
        true
    }
}

/// How a run's leases of one phase are paused after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PausePolicy {
    /// Pause at level 1 when the provider names no `Retry-After`; doubled per level.
    pub base_ms: u64,
    /// No back-off grows past this.
    pub max_backoff_ms: u64,
    /// A provider's `Retry-After` is honoured up to this long.
    pub max_retry_after_ms: u64,
    /// Consecutive provider failures after which the run shows `paused: KIND`, probes one
    /// generation at a time, and waits for a key when the kind is auth or quota.
    pub visible_after: u32,
}

impl Default for PausePolicy {
    fn default() -> Self {
        PausePolicy {
            base_ms: 1_000,
            max_backoff_ms: 60_000,
            max_retry_after_ms: 10 * 60_000,
            visible_after: 3,
        }
    }
}

impl PausePolicy {
    /// The pause at `level` (1 = the first): `min(max_backoff, base * 2^(level-1))`, or the
    /// provider's `Retry-After` (capped) when that is longer.
    pub fn delay_ms(&self, level: u32, retry_after_ms: Option<u64>) -> u64 {
        let doublings = level.saturating_sub(1).min(32);
        let backoff = self
            .base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms);
        let announced = retry_after_ms.unwrap_or(0).min(self.max_retry_after_ms);
        backoff.max(announced)
    }
}

/// A failure as the pause sees it.
#[derive(Debug, Clone, Copy)]
pub struct PauseFailure<K> {
    pub fault: K,
    pub retry_after_ms: Option<u64>,
    /// When the failed call's lease was granted.
    pub granted_ms: u64,
}

/// Whether the run may be granted a generate lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Any,
    /// One probe: no other lease granted since the pause began is in flight.
    Probe,
    No,
}

pub type ProviderFailure = PauseFailure<ProviderFault>;
pub type RegistryFailure = PauseFailure<RegistryFault>;

/// One run's pause state for one phase.
#[derive(Debug, Clone)]
pub struct Pause<K> {
    /// No generate lease before this time (coordinator clock).
    until_ms: u64,
    /// When the current pause began (0: never paused, or ended by a success).
    since_ms: u64,
    /// Back-off level: pauses in a row whose next calls failed too.
    level: u32,
    /// Provider failures since the last success, of any kind.
    consecutive: u32,
    /// The last failure's kind and how many of that kind came in a row.
    kind: Option<K>,
    streak: u32,
    /// The probe lease in flight, in the visible state.
    probe: Option<u64>,
    /// Provider failures since this process loaded the run, by kind.
    totals: BTreeMap<K, u64>,
}

/// The generations' pause after provider failures.
pub type ProviderPause = Pause<ProviderFault>;
/// The v2 evaluations' pause after the task images' registry failed.
pub type RegistryPause = Pause<RegistryFault>;

impl<K> Default for Pause<K> {
    fn default() -> Self {
        Pause {
            until_ms: 0,
            since_ms: 0,
            level: 0,
            consecutive: 0,
            kind: None,
            streak: 0,
            probe: None,
            totals: BTreeMap::new(),
        }
    }
}

impl<K: PauseKind> Pause<K> {
    /// Records a failure reported at `now_ms`.
    pub fn failed(&mut self, policy: &PausePolicy, f: PauseFailure<K>, now_ms: u64) {
        *self.totals.entry(f.fault).or_insert(0) += 1;
        self.consecutive = self.consecutive.saturating_add(1);
        if self.kind == Some(f.fault) {
            self.streak = self.streak.saturating_add(1);
        } else {
            // Another condition (the 429s became 500s): its back-off starts from the base.
            self.kind = Some(f.fault);
            self.streak = 1;
            self.level = 0;
        }
        // A call granted after the pause began failed too: the pause was not long enough. A
        // provider that announces when to come back is taken at its word (no doubling).
        let fresh = self.level == 0 || f.granted_ms > self.since_ms;
        if fresh {
            if self.level == 0 || f.retry_after_ms.is_none() {
                self.level = self.level.saturating_add(1);
            }
            self.since_ms = now_ms;
        }
        let until = now_ms.saturating_add(policy.delay_ms(self.level, f.retry_after_ms));
        self.until_ms = self.until_ms.max(until);
    }

    /// A generation granted at `granted_ms` succeeded: the provider answers again, unless the
    /// call was made before the current pause began.
    pub fn succeeded(&mut self, granted_ms: u64) {
        if self.level == 0 || granted_ms > self.since_ms {
            let totals = std::mem::take(&mut self.totals);
            *self = Pause {
                totals,
                ..Pause::default()
            };
        }
    }

    /// A client supplied the key again: a pause waiting for it ends (so does any other; the
    /// next failure starts a new one).
    pub fn resume(&mut self) {
        self.succeeded(u64::MAX);
    }

    /// A generate lease of the run ended, however.
    pub fn lease_ended(&mut self, lease_id: u64) {
        if self.probe == Some(lease_id) {
            self.probe = None;
        }
    }

    /// A generate lease was granted under `grant`.
    pub fn granted(&mut self, grant: Grant, lease_id: u64) {
        if grant == Grant::Probe {
            self.probe = Some(lease_id);
        }
    }

    /// The kind shown as `paused: KIND`, once `visible_after` failures came in a row.
    pub fn visible(&self, policy: &PausePolicy) -> Option<K> {
        if self.consecutive >= policy.visible_after.max(1) {
            self.kind
        } else {
            None
        }
    }

    /// Paused until a key is supplied (auth or quota, `visible_after` of them in a row).
    pub fn waits_for_key(&self, policy: &PausePolicy) -> bool {
        self.kind
            .is_some_and(|k| !k.resumes_by_itself() && self.streak >= policy.visible_after.max(1))
    }

    pub fn may_grant(&self, policy: &PausePolicy, now_ms: u64) -> Grant {
        if self.waits_for_key(policy) || now_ms < self.until_ms {
            Grant::No
        } else if self.visible(policy).is_none() {
            Grant::Any
        } else if self.probe.is_none() {
            Grant::Probe
        } else {
            Grant::No
        }
    }

    /// Milliseconds until generations are tried again; 0 when they are not paused by time
    /// (running, or waiting for a key).
    pub fn remaining_ms(&self, policy: &PausePolicy, now_ms: u64) -> u64 {
        if self.waits_for_key(policy) {
            0
        } else {
            self.until_ms.saturating_sub(now_ms)
        }
    }

    /// When a timed pause ends, if one is running at `now_ms` (to wake long polls).
    pub fn ends_at(&self, policy: &PausePolicy, now_ms: u64) -> Option<u64> {
        (!self.waits_for_key(policy) && self.until_ms > now_ms).then_some(self.until_ms)
    }

    pub fn total(&self) -> u64 {
        self.totals.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PausePolicy = PausePolicy {
        base_ms: 1_000,
        max_backoff_ms: 8_000,
        max_retry_after_ms: 30_000,
        visible_after: 3,
    };

    fn rate_limited(granted_ms: u64, retry_after_ms: Option<u64>) -> ProviderFailure {
        ProviderFailure {
            fault: ProviderFault::RateLimited,
            retry_after_ms,
            granted_ms,
        }
    }

    #[test]
    fn delay_is_the_longer_of_back_off_and_retry_after_both_capped() {
        assert_eq!(P.delay_ms(1, None), 1_000);
        assert_eq!(P.delay_ms(2, None), 2_000);
        assert_eq!(P.delay_ms(4, None), 8_000);
        assert_eq!(P.delay_ms(40, None), 8_000);
        assert_eq!(P.delay_ms(1, Some(2_500)), 2_500);
        assert_eq!(P.delay_ms(1, Some(u64::MAX)), 30_000);
    }

    #[test]
    fn calls_in_flight_when_the_pause_began_do_not_raise_the_level() {
        let mut p = ProviderPause::default();
        // Six calls granted at 0 all fail at about 4 s.
        for i in 0..6 {
            p.failed(&P, rate_limited(0, Some(2_000)), 4_000 + i);
        }
        assert_eq!(p.level, 1);
        assert_eq!(p.until_ms, 6_005);
        assert_eq!(p.visible(&P), Some(ProviderFault::RateLimited));
        assert_eq!(p.may_grant(&P, 6_000), Grant::No);
        assert_eq!(p.may_grant(&P, 6_005), Grant::Probe);
        p.granted(Grant::Probe, 7);
        assert_eq!(p.may_grant(&P, 6_005), Grant::No, "one probe at a time");
        // The probe fails: the level rises.
        p.lease_ended(7);
        p.failed(&P, rate_limited(6_005, None), 6_500);
        assert_eq!(p.level, 2);
        assert_eq!(p.until_ms, 8_500);
        // A late success of a call made before the pause changes nothing.
        p.succeeded(1);
        assert_eq!(p.may_grant(&P, 8_000), Grant::No);
        // The next probe succeeds: the run resumes by itself.
        assert_eq!(p.may_grant(&P, 8_500), Grant::Probe);
        p.granted(Grant::Probe, 9);
        p.lease_ended(9);
        p.succeeded(8_500);
        assert_eq!(p.may_grant(&P, 8_500), Grant::Any);
        assert_eq!(p.visible(&P), None);
        assert_eq!(p.total(), 7);
    }

    #[test]
    fn an_announced_retry_after_is_not_doubled_and_a_new_kind_starts_from_the_base() {
        let mut p = ProviderPause::default();
        p.failed(&P, rate_limited(0, Some(2_000)), 10);
        p.failed(&P, rate_limited(2_010, Some(2_000)), 2_100);
        p.failed(&P, rate_limited(4_100, Some(2_000)), 4_200);
        assert_eq!(p.level, 1);
        assert_eq!(p.until_ms, 6_200, "the announced 2 s, not 8 s");
        // No Retry-After: doubling.
        p.failed(&P, rate_limited(6_200, None), 6_300);
        assert_eq!(p.until_ms, 8_300);
        p.failed(&P, rate_limited(8_300, None), 8_400);
        assert_eq!(p.until_ms, 12_400);
        // The 429s turn into 500s: the back-off starts again at its base.
        let server = ProviderFailure {
            fault: ProviderFault::ServerError,
            retry_after_ms: None,
            granted_ms: 12_400,
        };
        p.failed(&P, server, 12_500);
        assert_eq!(p.until_ms, 13_500);
        assert_eq!(p.visible(&P), Some(ProviderFault::ServerError));
    }

    #[test]
    fn auth_waits_for_the_key_once_visible() {
        let mut p = ProviderPause::default();
        let auth = |granted_ms| ProviderFailure {
            fault: ProviderFault::Auth,
            retry_after_ms: None,
            granted_ms,
        };
        p.failed(&P, auth(0), 10);
        assert!(!p.waits_for_key(&P));
        assert_eq!(p.may_grant(&P, 1_010), Grant::Any);
        p.failed(&P, auth(1_010), 1_100);
        p.failed(&P, auth(3_100), 3_200);
        assert!(p.waits_for_key(&P));
        assert_eq!(p.may_grant(&P, u64::MAX / 2), Grant::No);
        assert_eq!(p.remaining_ms(&P, 0), 0);
        p.resume();
        assert_eq!(p.may_grant(&P, 3_300), Grant::Any);
    }
}
