use serde::Serialize;

use crate::agent::AgentResult;
use crate::lm::TokenUsage;
use crate::plan::StepStatus;
use crate::redact::Redactor;
use crate::trace::{Event, Usage};

/// The outcome of a plan run: what [`Orchestrator::execute`](super::Orchestrator::execute) and
/// [`Orchestrator::resume`](super::Orchestrator::resume) return.
///
/// It has the fields of an [`AgentResult`] (`success`, `answer`, `error`, `events`, usage and
/// cost, summed over the steps) plus what only a run has: its id, each step's outcome and what
/// the rollback did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunResult {
    /// Whether every step of the plan completed.
    pub success: bool,
    /// The answer: the output of the plan's final step(s).
    pub answer: Option<String>,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// Everything that happened, in order.
    pub events: Vec<Event>,
    /// Tokens used by every model call of every step.
    pub token_usage: TokenUsage,
    /// Total price of the model calls whose price is known, in USD.
    pub total_cost_usd: f64,
    /// Model calls whose price is unknown (so `total_cost_usd` is a lower bound when this is not 0).
    pub unpriced_calls: u32,
    /// Model calls made, summed over the steps.
    pub iterations: u32,
    /// The run's id (always set for a run; an `Option` for code written when this was an
    /// `AgentResult` field).
    pub run_id: Option<String>,
    /// Per-step outcomes, in plan order.
    pub steps: Vec<StepOutcome>,
    /// What the rollback did, when the run failed and rollback was on.
    pub rollback: Option<RollbackReport>,
}

/// A task done outside a plan, as a run result with no run id, no steps and no rollback.
impl From<AgentResult> for RunResult {
    fn from(task: AgentResult) -> Self {
        RunResult {
            success: task.success,
            answer: task.answer,
            error: task.error,
            events: task.events,
            token_usage: task.token_usage,
            total_cost_usd: task.total_cost_usd,
            unpriced_calls: task.unpriced_calls,
            iterations: task.iterations,
            ..RunResult::default()
        }
    }
}

impl RunResult {
    /// Tokens, cost and model calls, as the one [`Usage`] every view counts with.
    pub fn usage(&self) -> Usage {
        Usage::of_totals(
            self.token_usage,
            self.total_cost_usd,
            self.iterations,
            self.unpriced_calls,
        )
    }

    /// Whether the cost is a lower bound: some model call's price is unknown
    /// ([`Usage::cost_incomplete`]).
    pub fn cost_incomplete(&self) -> bool {
        self.usage().cost_incomplete()
    }

    /// Redacts the texts of the result (its events are redacted as they are recorded).
    pub(crate) fn redact(&mut self, redactor: &Redactor) {
        let texts = self.answer.iter_mut().chain(self.error.iter_mut());
        let step_errors = self.steps.iter_mut().filter_map(|s| s.error.as_mut());
        let undo_errors = self
            .rollback
            .iter_mut()
            .flat_map(|r| r.failed.iter_mut().map(|f| &mut f.error));
        for text in texts.chain(step_errors).chain(undo_errors) {
            redactor.redact_string(text);
        }
    }
}

/// How one step of a plan run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepOutcome {
    /// The step's id.
    pub id: String,
    /// Its final status.
    pub status: StepStatus,
    /// The agent that ran it, if one did.
    pub agent: Option<String>,
    /// The tool called directly (no model), if it was.
    pub direct_tool: Option<String>,
    /// Wall time from start to end (0 for a step that never started).
    pub duration_ms: f64,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollbackReport {
    /// Steps undone, in the order they were undone.
    pub compensated: Vec<String>,
    /// Compensations that failed: these effects are still in place.
    pub failed: Vec<CompensationFailure>,
    /// Completed steps with nothing to undo (no compensating tool and no recorded effects).
    pub nothing_to_undo: Vec<String>,
}

impl RollbackReport {
    /// Whether everything that had to be undone was undone.
    pub fn fully_undone(&self) -> bool {
        self.failed.is_empty()
    }
}

/// An effect that rollback could not undo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompensationFailure {
    /// The step whose effect remains.
    pub step: String,
    /// The compensating tool (or the tool whose effect has no compensation).
    pub tool: String,
    /// Why it could not be undone.
    pub error: String,
}
