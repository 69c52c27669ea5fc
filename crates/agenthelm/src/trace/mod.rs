//! Events: the record of everything a run did.
//!
//! Every LLM call, tool call, approval decision, step transition and compensation becomes an
//! [`Event`]. Events are collected into [`AgentResult::events`](crate::AgentResult::events) and
//! streamed live to observers registered with
//! [`Orchestrator::on_event`](crate::Orchestrator::on_event).

mod effect;
mod exchange;
mod redacted;
mod state;
mod usage;

pub use effect::Effect;
pub use exchange::ModelExchange;
pub use state::{
    began_ms, ApprovalRecord, ApprovalRequestRecord, CallDecision, CompensationState, Interruption,
    LedgerEntry, LlmCallRecord, PlanDecision, PlanReview, Resume, Rollback, RunEnd, RunPhase,
    RunState, StepRecord, StopReason, ToolCallRecord, INTERRUPTED_ERROR,
};
pub use usage::Usage;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::budget::{Budget, BudgetKind};
use crate::lm::{RateLimitCause, TokenUsage};
use crate::plan::StepStatus;

/// One thing that happened during a run, with where it happened.
///
/// Serialized as a flat JSON object whose `type` field names the kind:
///
/// ```
/// use agenthelm::{Event, EventKind};
/// let event = Event::new(EventKind::StepStarted { direct_tool: None });
/// let json = serde_json::to_value(&event).unwrap();
/// assert_eq!(json["type"], "step_started");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time of the event, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The plan run the event belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Arc<str>>,
    /// The plan step the event belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<Arc<str>>,
    /// The agent that acted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Arc<str>>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event of `kind` stamped with the current time and no run, step or agent.
    pub fn new(kind: EventKind) -> Self {
        Event {
            timestamp_ms: now_ms(),
            run_id: None,
            step_id: None,
            agent: None,
            kind,
        }
    }
}

/// Why a tool was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPurpose {
    /// Doing the work of a step (directly or from an agent's reasoning loop).
    Execute,
    /// Undoing the work of a completed step during rollback.
    Compensate,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A plan run began.
    RunStarted {
        /// The plan's goal.
        goal: String,
        /// How many steps the plan has.
        steps: usize,
        /// The limits the run is kept within, when it has any: journaled so that a resumed run
        /// keeps the same budget (and what it spent counts against it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<Budget>,
    },
    /// A plan run ended (after rollback, if there was one).
    RunFinished {
        /// Whether every step completed.
        success: bool,
        /// Wall time of the whole run.
        duration_ms: f64,
    },
    /// A call to a language model.
    LlmCall {
        /// The model that answered.
        model: String,
        /// Tokens read and written.
        usage: TokenUsage,
        /// Price of the call in USD; `None` when the model's price is unknown.
        #[serde(default)]
        cost_usd: Option<f64>,
        /// Time from request to complete answer (waits for a rate limit included: see
        /// [`RateLimitWait`](EventKind::RateLimitWait)).
        latency_ms: f64,
        /// How many tool calls the answer asked for.
        #[serde(default)]
        tool_calls: usize,
        /// The error, when the call failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The request's digest and the answer, for replay; `None` in journals written before
        /// they were kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exchange: Option<ModelExchange>,
    },
    /// A model call begins to wait for a rate limit before it is sent (emitted again if the
    /// wait turns out longer). Its [`LlmCall`](EventKind::LlmCall) follows once it was answered.
    RateLimitWait {
        /// The model (`provider/model`) the call is for.
        model: String,
        /// The limit waited for.
        limit: RateLimitCause,
        /// How long the call expects to wait, from this event on.
        wait_ms: f64,
    },
    /// A tool call, after its last attempt.
    ToolCall {
        /// Stable id of the call within the run.
        call_id: String,
        /// The tool's name.
        tool: String,
        /// The arguments it was called with.
        args: Value,
        /// Its output, when it succeeded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// The error, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// How many attempts were made (0 when it never ran: bad arguments or denied).
        attempts: u32,
        /// Wall time of all attempts, backoff included.
        duration_ms: f64,
        /// Whether the call did work or undid it.
        purpose: CallPurpose,
    },
    /// A tool call waits for a person's decision: the call is not made and its step is parked
    /// (the run stops without ending, and is resumed once an [`Approval`](EventKind::Approval)
    /// for the call is on record).
    ApprovalRequested {
        /// The call waiting.
        call_id: String,
        /// The tool's name.
        tool: String,
        /// The arguments it would be called with.
        args: Value,
        /// Doing or undoing work.
        purpose: CallPurpose,
    },
    /// A decision on a tool call: by the approval handler as the call was made, or by a person
    /// on a call that waited ([`ApprovalRequested`](EventKind::ApprovalRequested)).
    Approval {
        /// The call the decision is about.
        call_id: String,
        /// The tool's name.
        tool: String,
        /// Whether the call may go ahead.
        approved: bool,
        /// The handler's reason, if it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Who decided, when a person did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The arguments the call is approved with, when the decision changed them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edited_args: Option<Value>,
        /// The arguments the call asked for, when `edited_args` replaced them (a decision on a
        /// call that waited finds them in its [`ApprovalRequested`](EventKind::ApprovalRequested)
        /// event instead).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asked_args: Option<Value>,
    },
    /// A step began.
    StepStarted {
        /// The tool the step calls directly, without asking its agent's model; `None` when the
        /// step goes to the agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        direct_tool: Option<String>,
    },
    /// A step reached a final state.
    StepFinished {
        /// Its new status.
        status: StepStatus,
        /// Its result, when it completed and `result_call` is not given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The call whose output is the step's result (a step that calls its tool directly):
        /// the output is kept once, in that call's [`ToolCall`](EventKind::ToolCall) event, which
        /// comes earlier in the journal. [`RunState`] fills the step's result in from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result_call: Option<String>,
        /// How long it ran.
        duration_ms: f64,
        /// The error, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The run was asked to stop (cancelled): no new step starts, running steps get the grace
    /// period, then what was done is rolled back. Steps that fail after this failed because of
    /// it, not the other way round.
    RunCancelled {
        /// Why, as the canceller said.
        reason: String,
    },
    /// The run reached a limit of its budget and stops like a failure: no new step or model
    /// call, running steps get the grace period, then what was done is rolled back.
    BudgetExceeded {
        /// Which limit.
        budget: BudgetKind,
        /// What was spent when it was reached (USD, tokens, calls or seconds).
        spent: f64,
        /// The limit, in the same unit.
        limit: f64,
        /// What happened, with the figures (`cost budget exceeded: $0.512 spent of $0.500`).
        message: String,
    },
    /// A rollback began after a failure.
    RollbackStarted {
        /// The steps to undo, in the order they will be undone.
        steps: Vec<String>,
    },
    /// A compensating action is about to run (recorded first, so a resumed run never runs it
    /// twice).
    CompensationStarted {
        /// Position of the action among the step's compensations.
        action: usize,
        /// The compensating tool.
        tool: String,
        /// Its arguments.
        args: Value,
    },
    /// One compensating action for a step ended, during rollback. Journals written before this
    /// kind was renamed call it `compensation`; they still read.
    #[serde(alias = "compensation")]
    CompensationFinished {
        /// Position of the action among the step's compensations.
        #[serde(default)]
        action: usize,
        /// The compensating tool.
        tool: String,
        /// Whether it succeeded.
        success: bool,
        /// The error, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A tool call changed (or may have changed) something outside the process; rollback undoes
    /// it.
    Effect {
        /// What was done and how to undo it.
        effect: Effect,
    },
    /// A run was picked up again after its process stopped.
    RunResumed {
        /// Steps that were running when the process stopped, and what was done about them.
        #[serde(default)]
        interrupted: Vec<String>,
    },
    /// A plan was submitted for review: nothing runs until a person approves it.
    PlanSubmitted {
        /// Who submitted it, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A person decided on a submitted plan.
    PlanReviewed {
        /// Whether the plan may run.
        approved: bool,
        /// Who decided.
        by: String,
        /// Why, if they said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Whether they changed the plan before approving it (the run's stored plan is the
        /// changed one).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        edited: bool,
    },
    /// Anything else an agent wants on record.
    Note {
        /// Free text.
        message: String,
    },
}

impl EventKind {
    /// Leaves out what can be big and only a detailed view shows: tool arguments (as `null`),
    /// tool outputs, step results and model answers (as `None`). Run stores use it to load an outline of a
    /// run for views that list or sum up runs.
    pub fn strip_payloads(&mut self) {
        match self {
            EventKind::ToolCall { args, output, .. } => {
                *args = Value::Null;
                *output = None;
            }
            EventKind::StepFinished { result, .. } => *result = None,
            EventKind::LlmCall { exchange, .. } => *exchange = None,
            EventKind::CompensationStarted { args, .. } => *args = Value::Null,
            EventKind::Effect { effect } => effect.args = Value::Null,
            _ => {}
        }
    }

    /// The kind's name, as in the serialized `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::RunFinished { .. } => "run_finished",
            EventKind::RunResumed { .. } => "run_resumed",
            EventKind::LlmCall { .. } => "llm_call",
            EventKind::RateLimitWait { .. } => "rate_limit_wait",
            EventKind::ToolCall { .. } => "tool_call",
            EventKind::ApprovalRequested { .. } => "approval_requested",
            EventKind::Approval { .. } => "approval",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::StepFinished { .. } => "step_finished",
            EventKind::RollbackStarted { .. } => "rollback_started",
            EventKind::CompensationStarted { .. } => "compensation_started",
            EventKind::CompensationFinished { .. } => "compensation_finished",
            EventKind::Effect { .. } => "effect",
            EventKind::BudgetExceeded { .. } => "budget_exceeded",
            EventKind::PlanSubmitted { .. } => "plan_submitted",
            EventKind::PlanReviewed { .. } => "plan_reviewed",
            EventKind::RunCancelled { .. } => "run_cancelled",
            EventKind::Note { .. } => "note",
        }
    }

    /// The tool involved, if any.
    pub fn tool(&self) -> Option<&str> {
        match self {
            EventKind::ToolCall { tool, .. }
            | EventKind::Approval { tool, .. }
            | EventKind::ApprovalRequested { tool, .. }
            | EventKind::CompensationStarted { tool, .. }
            | EventKind::CompensationFinished { tool, .. } => Some(tool),
            EventKind::Effect { effect } => Some(&effect.tool),
            _ => None,
        }
    }

    /// Whether what happened succeeded, for kinds that can fail.
    pub fn succeeded(&self) -> Option<bool> {
        match self {
            EventKind::RunFinished { success, .. }
            | EventKind::CompensationFinished { success, .. } => Some(*success),
            EventKind::LlmCall { error, .. } | EventKind::ToolCall { error, .. } => {
                Some(error.is_none())
            }
            EventKind::Approval { approved, .. } | EventKind::PlanReviewed { approved, .. } => {
                Some(*approved)
            }
            EventKind::StepFinished { status, .. } => Some(*status == StepStatus::Completed),
            _ => None,
        }
    }

    /// How long it took, for kinds that measure it.
    pub fn duration_ms(&self) -> Option<f64> {
        match self {
            EventKind::RunFinished { duration_ms, .. }
            | EventKind::ToolCall { duration_ms, .. }
            | EventKind::StepFinished { duration_ms, .. } => Some(*duration_ms),
            EventKind::LlmCall { latency_ms, .. } => Some(*latency_ms),
            _ => None,
        }
    }
}

/// A count as a `tracing` field value: signed, because OpenTelemetry's layer sends unsigned
/// values as text but `i64` as an integer attribute.
pub(crate) fn span_count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_written_before_the_rename_still_read() {
        let old =
            r#"{"timestamp_ms":1,"type":"compensation","action":0,"tool":"undo","success":true}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert!(matches!(
            event.kind,
            EventKind::CompensationFinished { success: true, .. }
        ));
        let written = serde_json::to_value(&event).unwrap();
        assert_eq!(written["type"], "compensation_finished");
        assert_eq!(event.kind.name(), "compensation_finished");
    }
}
