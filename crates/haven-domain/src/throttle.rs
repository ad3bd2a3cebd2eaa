//! Throttling of failed authentication attempts, per account and per source address.
//!
//! A key (an account or an address) may fail `max_failures` times within `window`; after that
//! it is refused until the window that began with its first counted failure is over. A success
//! does not reset the per-source counter, and asking for a new code resets nothing.

use jiff::{SignedDuration, Timestamp};

/// Limits for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed in one window.
    pub max_failures: u32,
    /// Length of the window.
    pub window: SignedDuration,
}

/// The stored count for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    /// Failures counted in the current window.
    pub failures: u32,
    /// When the current window began (the first failure in it).
    pub window_start: Timestamp,
}

/// Whether an attempt may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleDecision {
    /// Go ahead.
    Allow,
    /// Refuse; try again after this long.
    Refuse {
        /// Time until the window ends, rounded up to whole seconds, at least 1.
        retry_after_secs: u64,
    },
}

impl ThrottlePolicy {
    /// Decides whether an attempt by a key with this count may proceed at `now`.
    pub fn decide(&self, count: Option<FailureCount>, now: Timestamp) -> ThrottleDecision {
        let Some(c) = count else { return ThrottleDecision::Allow };
        let ends = c.window_start + self.window;
        if c.failures >= self.max_failures && now < ends {
            let ms = ends.duration_since(now).as_millis();
            let secs = u64::try_from((ms + 999) / 1000).unwrap_or(1).max(1);
            return ThrottleDecision::Refuse { retry_after_secs: secs };
        }
        ThrottleDecision::Allow
    }

    /// Decides an attempt whose own reservation is already in `counted`: it may proceed if,
    /// without it, the key was under its limit.
    pub fn decide_reserved(&self, counted: FailureCount, now: Timestamp) -> ThrottleDecision {
        let before = FailureCount { failures: counted.failures.saturating_sub(1), ..counted };
        self.decide(Some(before), now)
    }

    /// The count after one more failure at `now`: a window that has ended starts afresh.
    pub fn record_failure(&self, count: Option<FailureCount>, now: Timestamp) -> FailureCount {
        match count {
            Some(c) if now < c.window_start + self.window => {
                FailureCount { failures: c.failures.saturating_add(1), window_start: c.window_start }
            }
            _ => FailureCount { failures: 1, window_start: now },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn locks_after_max_failures_until_the_window_ends() {
        let p = ThrottlePolicy { max_failures: 3, window: SignedDuration::from_secs(60) };
        let mut c = None;
        for i in 0..3 {
            assert_eq!(p.decide(c, t(i)), ThrottleDecision::Allow);
            c = Some(p.record_failure(c, t(i)));
        }
        assert_eq!(p.decide(c, t(10)), ThrottleDecision::Refuse { retry_after_secs: 50 });
        assert_eq!(p.decide(c, t(60)), ThrottleDecision::Allow);
        // A failure after the window starts a new one.
        assert_eq!(p.record_failure(c, t(61)), FailureCount { failures: 1, window_start: t(61) });
    }

    #[test]
    fn a_reserved_attempt_counts_itself() {
        let p = ThrottlePolicy { max_failures: 2, window: SignedDuration::from_secs(60) };
        let c = |n| FailureCount { failures: n, window_start: t(0) };
        assert_eq!(p.decide_reserved(c(1), t(1)), ThrottleDecision::Allow);
        assert_eq!(p.decide_reserved(c(2), t(1)), ThrottleDecision::Allow);
        assert_eq!(p.decide_reserved(c(3), t(1)), ThrottleDecision::Refuse { retry_after_secs: 59 });
    }
}
