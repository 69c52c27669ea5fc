use serde::Serialize;

use crate::lm::TokenUsage;
use crate::trace::{Event, Usage};

/// The outcome of an agent's task (or of one plan step given to an agent).
///
/// A whole plan run ends in an `orchestrate::RunResult`, which has the same fields plus the run
/// id, the per-step outcomes and the rollback record.
///
/// ```
/// use agenthelm::AgentResult;
///
/// let done = AgentResult::ok("42");
/// assert!(done.success);
/// let failed = AgentResult::fail("disk full");
/// assert_eq!(failed.error.as_deref(), Some("disk full"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentResult {
    /// Whether the task succeeded.
    pub success: bool,
    /// The answer.
    pub answer: Option<String>,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// Everything that happened, in order.
    pub events: Vec<Event>,
    /// Tokens used by every model call.
    pub token_usage: TokenUsage,
    /// Total price of the model calls whose price is known, in USD.
    pub total_cost_usd: f64,
    /// Model calls whose price is unknown (so `total_cost_usd` is a lower bound when this is not 0).
    pub unpriced_calls: u32,
    /// Model calls made.
    pub iterations: u32,
}

impl AgentResult {
    /// A success with this answer.
    pub fn ok(answer: impl Into<String>) -> Self {
        AgentResult {
            success: true,
            answer: Some(answer.into()),
            ..Self::default()
        }
    }

    /// A failure with this error.
    pub fn fail(error: impl Into<String>) -> Self {
        AgentResult {
            success: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// Adds the tokens, cost and unpriced calls of `usage` (not its calls: an agent counts its
    /// own iterations).
    pub fn add_priced(&mut self, usage: &Usage) {
        self.token_usage += usage.tokens;
        self.total_cost_usd += usage.cost_usd;
        self.unpriced_calls += usage.unpriced_calls;
    }

    /// Tokens, cost and model calls, as the one [`Usage`] every view counts with (failed calls
    /// are not told apart here: an agent's result does not keep them).
    pub fn usage(&self) -> Usage {
        Usage::of_totals(
            self.token_usage,
            self.total_cost_usd,
            self.iterations,
            self.unpriced_calls,
        )
    }

    /// Adds another result's usage, cost and model calls to this one.
    pub fn add_usage(&mut self, other: &AgentResult) {
        self.token_usage += other.token_usage;
        self.total_cost_usd += other.total_cost_usd;
        self.unpriced_calls += other.unpriced_calls;
        self.iterations += other.iterations;
    }
}
