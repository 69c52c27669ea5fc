use serde::Serialize;

use crate::lm::TokenUsage;

/// Tokens, cost and number of model calls, counted one way everywhere: runs, agents, the
/// HTML report, `runs show` and OpenTelemetry spans.
///
/// A call whose price is unknown (`cost_usd: None`) is *unpriced*, whether it succeeded or
/// failed: a failed call may still have been billed, so its cost is not known to be zero.
///
/// ```
/// use agenthelm::trace::Usage;
/// use agenthelm::TokenUsage;
///
/// let mut usage = Usage::default();
/// usage.add_call(TokenUsage::new(10, 5), Some(0.01), false);
/// usage.add_call(TokenUsage::default(), None, true);
/// assert_eq!(usage.calls, 2);
/// assert!(usage.cost_incomplete());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens read and written by every call.
    pub tokens: TokenUsage,
    /// Sum of the known prices, in USD.
    pub cost_usd: f64,
    /// Model calls made.
    pub calls: u32,
    /// Calls whose price is unknown.
    pub unpriced_calls: u32,
    /// Calls that ended in an error.
    pub failed_calls: u32,
}

impl Usage {
    /// Totals kept elsewhere (a task's or a run's result), which do not tell failed calls apart.
    pub fn of_totals(tokens: TokenUsage, cost_usd: f64, calls: u32, unpriced_calls: u32) -> Self {
        Usage {
            tokens,
            cost_usd,
            calls,
            unpriced_calls,
            failed_calls: 0,
        }
    }

    /// Counts one model call.
    pub fn add_call(&mut self, tokens: TokenUsage, cost_usd: Option<f64>, failed: bool) {
        self.tokens += tokens;
        self.calls += 1;
        match cost_usd {
            Some(cost) => self.cost_usd += cost,
            None => self.unpriced_calls += 1,
        }
        if failed {
            self.failed_calls += 1;
        }
    }

    /// Whether [`cost_usd`](Self::cost_usd) is only a lower bound: some call has no price.
    pub fn cost_incomplete(&self) -> bool {
        self.unpriced_calls > 0
    }
}
