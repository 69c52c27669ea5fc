//! A plan's review as the command line and the server show it.

use agenthelm::RunState;
use serde::Serialize;

use crate::timestamp::format_ms;

/// Who submitted a run's plan for review and what was decided, flat, with the time in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewSummary {
    /// Who submitted the plan, if known.
    pub submitted_by: Option<String>,
    /// `approve`, `reject`, or `null` while it waits.
    pub decision: Option<&'static str>,
    /// Who decided.
    pub by: Option<String>,
    /// When, RFC 3339.
    pub at: Option<String>,
    /// Why, if they said.
    pub reason: Option<String>,
    /// Whether the plan was changed before it was approved.
    pub edited: bool,
}

impl ReviewSummary {
    /// The review of the run in `state`, when its plan was submitted for one.
    pub fn of(state: &RunState) -> Option<ReviewSummary> {
        let review = state.review()?;
        let decision = review.decision.as_ref();
        Some(ReviewSummary {
            submitted_by: review.submitted_by.clone(),
            decision: decision.map(|d| d.verdict()),
            by: decision.map(|d| d.by.clone()),
            at: decision.map(|d| format_ms(d.at_ms)),
            reason: decision.and_then(|d| d.reason.clone()),
            edited: decision.is_some_and(|d| d.edited),
        })
    }
}
