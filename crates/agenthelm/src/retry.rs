//! Retry policy: how long to wait between attempts of a failing call (tool calls and model
//! calls alike).

use std::time::Duration;

/// How long to wait between attempts of a failing tool call: exponential backoff with jitter.
///
/// The wait before retry `n` (1-based) is `initial * multiplier^(n-1)`, capped at `max`, then
/// scaled by a random factor in `[1 - jitter, 1]` so that parallel retries spread out.
///
/// ```
/// use agenthelm::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
/// assert_eq!(policy.delay(1), Duration::from_millis(200));
/// assert_eq!(policy.delay(3), Duration::from_millis(800));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub initial: Duration,
    /// Growth factor per retry.
    pub multiplier: f64,
    /// Longest wait.
    pub max: Duration,
    /// Fraction of the wait that is random, from 0.0 (none) to 1.0 (full jitter).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * fastrand::f64();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}
