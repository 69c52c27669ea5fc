//! The state of one run, built from its events: [`RunState`].
//!
//! The journal is the truth. A `RunState` starts from the plan as the run began
//! ([`RunState::new`]) and takes the run's events one at a time ([`RunState::apply`]). The same
//! code runs live (the run's event sink applies every event it records) and on replay (resume,
//! `Orchestrator::replay`, `runs show`, the HTML report, OpenTelemetry spans), so every view of a run agrees with every
//! other and with what the scheduler itself saw.
//!
//! # Where to add a new event kind
//!
//! 1. Add the variant to [`EventKind`] in `trace/mod.rs` (with its `name()`), serialized so that
//!    journals written before it still read.
//! 2. Apply it in [`RunState::apply`] below: the `match` there is exhaustive, so the compiler
//!    points at it. Keep what it changes in a named record type here, and keep applying O(1)
//!    (look steps up through the index, never by scanning).
//! 3. Extend the unit test `every_event_kind_is_applied` in this module (also an exhaustive
//!    match), and the `live_state_equals_replayed_state` property if the scheduler emits it.
//! 4. Views (`runs show`, `traces`, the HTML report, OTLP, the server) read the new fields from
//!    `RunState`; none of them matches on events to derive state.
//!
//! # Sequence numbers
//!
//! Every applied event, of any kind, advances a count ([`RunState::seq`]); a call record keeps
//! the count at its event (`seq`): the event's position, from 1, in the run's journal. A
//! resumed run's live state is replayed from the journal first, so the count goes on where
//! the journal stopped. The CLI names a call `RUN_ID/SEQ`, so a record's `seq` must never
//! change meaning: apply every event, in journal order, exactly once.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::usage::Usage;
use super::{CallPurpose, Effect, Event, EventKind};
use crate::budget::Budget;
use crate::plan::{Plan, StepStatus};

/// The error of a step that was running when its process stopped and was marked failed.
pub const INTERRUPTED_ERROR: &str = "interrupted: the process stopped while this step ran";

/// A run's state: its steps, effects, compensations, usage and history, as its events tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    run_id: Option<Arc<str>>,
    /// How many events were applied.
    seq: usize,
    goal: String,
    started_ms: Option<u64>,
    earliest_ms: Option<u64>,
    latest_ms: Option<u64>,
    end: Option<RunEnd>,
    steps: Vec<StepRecord>,
    index: HashMap<Arc<str>, usize>,
    /// Steps with work to undo, in the order they ended.
    undo_order: Vec<usize>,
    rollback: Option<Rollback>,
    usage: Usage,
    llm_calls: Vec<LlmCallRecord>,
    tool_calls: Vec<ToolCallRecord>,
    approvals: Vec<ApprovalRecord>,
    requests: Vec<ApprovalRequestRecord>,
    resumes: Vec<Resume>,
    failure: Option<StopReason>,
    /// Why the run was cancelled, when it was.
    cancelled: Option<String>,
    review: Option<PlanReview>,
    budget: Option<Budget>,
    /// The event that stopped the run from outside the plan (a cancel, a spent budget), with
    /// its position in the journal.
    stopped_by: Option<(usize, EventKind)>,
    /// Time the run spent running in earlier processes (before its last start or resume), ms.
    ran_before_ms: u64,
    /// When the current stretch of running began (its start or last resume).
    stretch_start_ms: Option<u64>,
}

/// The review of a plan submitted for approval (see [`EventKind::PlanSubmitted`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanReview {
    /// Who submitted it, if known.
    pub submitted_by: Option<String>,
    /// When (ms since the epoch).
    pub submitted_ms: u64,
    /// The decision, once made.
    pub decision: Option<PlanDecision>,
}

/// A person's decision on a submitted plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDecision {
    /// Whether the plan may run.
    pub approved: bool,
    /// Who decided.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Why, if they said.
    pub reason: Option<String>,
    /// Whether the plan was changed before it was approved.
    pub edited: bool,
}

/// Where a run stands, in one word: what the server's run list and pages show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Its plan waits for a person's approval; nothing has run.
    AwaitingApproval,
    /// Its plan was rejected; nothing ran.
    Rejected,
    /// It runs (or will, once picked up again after a restart).
    Running,
    /// A tool call waits for a person's decision.
    WaitingForApproval,
    /// Every step completed.
    Succeeded,
    /// A step failed (and what could be undone was).
    Failed,
    /// It was stopped from outside and rolled back.
    Cancelled,
}

impl RunPhase {
    /// Every phase, in the order a run can pass through them.
    pub const ALL: [RunPhase; 7] = [
        RunPhase::AwaitingApproval,
        RunPhase::Rejected,
        RunPhase::Running,
        RunPhase::WaitingForApproval,
        RunPhase::Succeeded,
        RunPhase::Failed,
        RunPhase::Cancelled,
    ];

    /// Its name, as serialized (`awaiting_approval`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RunPhase::AwaitingApproval => "awaiting_approval",
            RunPhase::Rejected => "rejected",
            RunPhase::Running => "running",
            RunPhase::WaitingForApproval => "waiting_for_approval",
            RunPhase::Succeeded => "succeeded",
            RunPhase::Failed => "failed",
            RunPhase::Cancelled => "cancelled",
        }
    }

    /// Whether the run will do nothing more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunPhase::Rejected | RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled
        )
    }
}

impl std::str::FromStr for RunPhase {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunPhase::ALL
            .into_iter()
            .find(|phase| phase.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = RunPhase::ALL.iter().map(|p| p.name()).collect();
                format!("unknown run state `{text}` (one of: {})", names.join(", "))
            })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunEnd {
    /// Whether every step completed.
    pub success: bool,
    /// Wall time of the run (of its last process, for a resumed run).
    pub duration_ms: f64,
    /// When the end was recorded, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// One step and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The step's id.
    pub id: Arc<str>,
    /// Its latest status.
    pub status: StepStatus,
    /// How many times it was started (more than 1 when it ran again after a crash).
    pub attempts: u32,
    /// Start of its latest attempt, in ms since the Unix epoch.
    pub started_ms: Option<u64>,
    /// Position in the journal (see [`RunState::seq`]) of its latest start: the calls of its
    /// latest attempt come after it.
    pub started_seq: Option<usize>,
    /// End of its latest attempt, in ms since the Unix epoch.
    pub finished_ms: Option<u64>,
    /// Wall time of its latest finished attempt.
    pub duration_ms: Option<f64>,
    /// Its result, when it completed: read it with [`RunState::result`].
    result: StepResult,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// The agent that ran it (from its events), else the one the plan names.
    pub agent: Option<Arc<str>>,
    /// The tool it called directly (no model), if it did.
    pub direct_tool: Option<String>,
    /// What its tool calls changed, oldest first: what rollback undoes.
    pub effects: Vec<Effect>,
    /// The plan gives the step a compensating tool of its own.
    own_compensation: bool,
    /// Its latest tool call, as a position in the run's tool calls.
    last_call: Option<usize>,
    /// Queued in the undo log.
    queued: bool,
    /// Named by the rollback's plan.
    in_rollback: bool,
}

impl PlanDecision {
    /// `approve` or `reject`.
    pub fn verdict(&self) -> &'static str {
        if self.approved {
            "approve"
        } else {
            "reject"
        }
    }
}

/// Where a step's result is kept: the output of a direct call is not copied out of its call.
#[derive(Debug, Clone, Default, PartialEq)]
enum StepResult {
    #[default]
    None,
    Value(Value),
    /// The output of this tool call (a position in the run's tool calls).
    Call(usize),
}

/// Where a compensating action stands.
#[derive(Debug, Clone, PartialEq)]
pub enum CompensationState {
    /// Started, with no end on record: it may or may not have taken effect.
    Started,
    /// Done: the effect is undone.
    Done,
    /// Failed with this error: the effect remains.
    Failed(String),
}

/// One compensating action of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// Position of the step in the run.
    pub step: usize,
    /// Position of the action among the step's compensations.
    pub action: usize,
    /// The compensating tool.
    pub tool: String,
    /// Where it stands.
    pub state: CompensationState,
    /// When it started (ms since the epoch), if that is on record.
    pub started_ms: Option<u64>,
    /// When it ended (ms since the epoch), if it did.
    pub finished_ms: Option<u64>,
}

/// The rollback of a failed run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollback {
    /// Steps to undo, in the order they are undone (from the latest rollback to start).
    pub order: Vec<String>,
    /// Every compensating action on record, in the order they began.
    pub ledger: Vec<LedgerEntry>,
    by_action: HashMap<(usize, usize), usize>,
}

impl Rollback {
    /// The entry of `(step, action)`, if on record.
    pub fn entry(&self, step: usize, action: usize) -> Option<&LedgerEntry> {
        self.by_action
            .get(&(step, action))
            .map(|&i| &self.ledger[i])
    }
}

/// A call to a language model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCallRecord {
    /// Position of its event in the run's journal, from 1 (see [`RunState::seq`]).
    pub seq: usize,
    /// The step it belongs to, if any.
    pub step: Option<usize>,
    /// The agent that made it, if its event names one.
    pub agent: Option<Arc<str>>,
    /// The model that answered.
    pub model: String,
    /// Tokens read and written.
    pub tokens: crate::lm::TokenUsage,
    /// Its price, when known.
    pub cost_usd: Option<f64>,
    /// Time from request to answer.
    pub latency_ms: f64,
    /// Tool calls the answer asked for.
    pub tool_calls: usize,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// The request's digest and the answer, when the journal has them (for replay).
    pub exchange: Option<super::ModelExchange>,
    /// When it ended, in ms since the epoch.
    pub at_ms: u64,
}

/// A tool call after its last attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRecord {
    /// Position of its event in the run's journal, from 1 (see [`RunState::seq`]).
    pub seq: usize,
    /// The step it belongs to, if any.
    pub step: Option<usize>,
    /// The agent that made it, if its event names one.
    pub agent: Option<Arc<str>>,
    /// Its stable id.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// Doing or undoing work.
    pub purpose: CallPurpose,
    /// The arguments it was called with.
    pub args: Value,
    /// Its output, when it succeeded.
    pub output: Option<Value>,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time of all attempts.
    pub duration_ms: f64,
    /// When it ended, in ms since the epoch.
    pub at_ms: u64,
}

/// An approval decision on a tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    /// Position of its event in the run's journal, from 1.
    pub seq: usize,
    /// The step it belongs to, if any.
    pub step: Option<usize>,
    /// The call the decision is about.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// Whether the call could go ahead.
    pub approved: bool,
    /// Why, if a reason was given.
    pub reason: Option<String>,
    /// Who decided, when a person did.
    pub by: Option<String>,
    /// The arguments approved instead of those asked for.
    pub edited_args: Option<Value>,
    /// The arguments asked for, when the decision edited them.
    pub asked_args: Option<Value>,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

impl ApprovalRecord {
    /// `approve`, `edit` (approved with other arguments) or `deny`.
    pub fn verdict(&self) -> &'static str {
        match (self.approved, &self.edited_args) {
            (false, _) => "deny",
            (true, Some(_)) => "edit",
            (true, None) => "approve",
        }
    }
}

/// A decision on a tool call, or a call still waiting for one: what a run's views list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallDecision<'s> {
    /// Decided, by the approval handler or a person.
    Decided(&'s ApprovalRecord),
    /// Waiting for a person.
    Waiting(&'s ApprovalRequestRecord),
}

impl<'s> CallDecision<'s> {
    /// Position in the journal of the decision, or of the request still waiting.
    pub fn seq(&self) -> usize {
        match self {
            CallDecision::Decided(record) => record.seq,
            CallDecision::Waiting(request) => request.seq,
        }
    }

    /// The step whose call it is.
    pub fn step(&self) -> Option<usize> {
        match self {
            CallDecision::Decided(record) => record.step,
            CallDecision::Waiting(request) => request.step,
        }
    }

    /// The tool.
    pub fn tool(&self) -> &'s str {
        match self {
            CallDecision::Decided(record) => &record.tool,
            CallDecision::Waiting(request) => &request.tool,
        }
    }

    /// `approve`, `edit`, `deny` (see [`ApprovalRecord::verdict`]) or `waiting`.
    pub fn verdict(&self) -> &'static str {
        match self {
            CallDecision::Decided(record) => record.verdict(),
            CallDecision::Waiting(_) => "waiting",
        }
    }

    /// The arguments the call asked for, when they are not the ones it was (or will be) made
    /// with: those of a call still waiting, or those an edit replaced.
    pub fn asked_args(&self) -> Option<&'s Value> {
        match self {
            CallDecision::Decided(record) => record.asked_args.as_ref(),
            CallDecision::Waiting(request) => Some(&request.args),
        }
    }

    /// When it was decided, or asked (ms since the epoch).
    pub fn at_ms(&self) -> u64 {
        match self {
            CallDecision::Decided(record) => record.at_ms,
            CallDecision::Waiting(request) => request.asked_ms,
        }
    }

    /// The decision, when there is one.
    pub fn decided(&self) -> Option<&'s ApprovalRecord> {
        match self {
            CallDecision::Decided(record) => Some(record),
            CallDecision::Waiting(_) => None,
        }
    }
}

/// A tool call that waited, or waits, for a person's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequestRecord {
    /// Position of its event in the run's journal, from 1: with the run id, a stable name for
    /// the request.
    pub seq: usize,
    /// The step whose call it is.
    pub step: Option<usize>,
    /// The call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The arguments asked for.
    pub args: Value,
    /// Doing or undoing work.
    pub purpose: CallPurpose,
    /// When it was asked (ms since the epoch).
    pub asked_ms: u64,
    /// The decision, once on record: a position in [`RunState::approvals`].
    pub decision: Option<usize>,
}

/// A restart of the run after its process stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// When it was resumed, in ms since the epoch.
    pub at_ms: u64,
    /// The steps that were running when the process stopped.
    pub interrupted: Vec<Interruption>,
}

/// A step that was running when its process stopped, and what the resumed run did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// The step's id.
    pub step: String,
    /// `true`: run again; `false`: marked failed.
    pub rerun: bool,
}

impl Interruption {
    const RERUN: &'static str = " (run again)";
    const FAILED: &'static str = " (marked failed)";

    /// The text of a [`EventKind::RunResumed`] entry.
    pub fn to_entry(&self) -> String {
        let what = if self.rerun {
            Self::RERUN
        } else {
            Self::FAILED
        };
        format!("{}{what}", self.step)
    }

    /// Reads an entry written by [`to_entry`](Self::to_entry); `None` for other text.
    pub fn parse(entry: &str) -> Option<Interruption> {
        let (step, rerun) = match entry.strip_suffix(Self::RERUN) {
            Some(step) => (step, true),
            None => (entry.strip_suffix(Self::FAILED)?, false),
        };
        Some(Interruption {
            step: step.to_owned(),
            rerun,
        })
    }
}

/// Why a run stopped before completing every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A step failed.
    StepFailed {
        /// The step.
        step: String,
        /// Its error.
        error: String,
    },
    /// The run was stopped from outside (cancelled, or stopped before a restart).
    Stopped {
        /// What stopped it.
        reason: String,
    },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::StepFailed { step, error } => write!(f, "step `{step}` failed: {error}"),
            StopReason::Stopped { reason } => f.write_str(reason),
        }
    }
}

impl RunState {
    /// The state of a run of `plan` before any event: steps the plan already has completed
    /// count as completed (and are undone last on rollback); every other step is pending.
    pub fn new(plan: &Plan) -> Self {
        let mut state = RunState {
            run_id: None,
            seq: 0,
            goal: plan.goal.clone(),
            started_ms: None,
            earliest_ms: None,
            latest_ms: None,
            end: None,
            steps: Vec::with_capacity(plan.steps.len()),
            index: HashMap::with_capacity(plan.steps.len()),
            undo_order: Vec::new(),
            rollback: None,
            usage: Usage::default(),
            llm_calls: Vec::new(),
            tool_calls: Vec::new(),
            approvals: Vec::new(),
            requests: Vec::new(),
            resumes: Vec::new(),
            failure: None,
            cancelled: None,
            review: None,
            budget: None,
            stopped_by: None,
            ran_before_ms: 0,
            stretch_start_ms: None,
        };
        for step in &plan.steps {
            let i = state.add_step(&step.id);
            let record = &mut state.steps[i];
            record.agent = step.agent_name.as_deref().map(Arc::from);
            record.own_compensation = step.compensate_tool.is_some();
            if step.status == StepStatus::Completed {
                record.status = StepStatus::Completed;
                record.result = step
                    .result
                    .clone()
                    .map_or(StepResult::None, StepResult::Value);
                state.queue_undo(i);
            }
        }
        state
    }

    /// [`new`](Self::new), then [`apply`](Self::apply) each event in order.
    pub fn replay<'e>(plan: &Plan, events: impl IntoIterator<Item = &'e Event>) -> Self {
        let mut state = Self::new(plan);
        for event in events {
            state.apply(event);
        }
        state
    }

    /// Takes one event into the state. Events of steps the plan does not have (a replay
    /// without the plan) add those steps.
    pub fn apply(&mut self, event: &Event) {
        self.seq += 1;
        // The last event before a resume ends the earlier stretch of running.
        let previous_ms = self.latest_ms;
        self.note_time(event);
        if self.run_id.is_none() {
            self.run_id.clone_from(&event.run_id);
        }
        let step = event.step_id.as_ref().map(|id| self.step_index(id));
        if let (Some(i), Some(agent)) = (step, &event.agent) {
            if self.steps[i].agent.as_ref() != Some(agent) {
                self.steps[i].agent = Some(Arc::clone(agent));
            }
        }
        let at = event.timestamp_ms;
        match (&event.kind, step) {
            (EventKind::RunStarted { goal, budget, .. }, _) => {
                self.goal.clone_from(goal);
                self.started_ms.get_or_insert(at);
                self.budget = *budget;
                self.stretch_start_ms = Some(at);
            }
            (
                EventKind::RunFinished {
                    success,
                    duration_ms,
                },
                _,
            ) => self.finish_run(*success, *duration_ms, at),
            (EventKind::RunResumed { interrupted }, _) => {
                if let (Some(start), Some(end)) = (self.stretch_start_ms, previous_ms) {
                    self.ran_before_ms += end.saturating_sub(start);
                }
                self.stretch_start_ms = Some(at);
                self.resume(interrupted, at);
            }
            (EventKind::LlmCall { .. }, _) => self.llm_call(event, step),
            (EventKind::ToolCall { .. }, _) => self.tool_call(event, step),
            (EventKind::Approval { .. }, _) => self.decide(event, step),
            (
                EventKind::ApprovalRequested {
                    call_id,
                    tool,
                    args,
                    purpose,
                },
                _,
            ) => self.requests.push(ApprovalRequestRecord {
                seq: self.seq,
                step,
                call_id: call_id.clone(),
                tool: tool.clone(),
                args: args.clone(),
                purpose: *purpose,
                asked_ms: at,
                decision: None,
            }),
            (EventKind::StepStarted { direct_tool }, Some(i)) => {
                let s = &mut self.steps[i];
                s.status = StepStatus::Running;
                s.attempts += 1;
                s.started_ms = Some(at);
                s.started_seq = Some(self.seq);
                s.finished_ms = None;
                s.error = None;
                s.direct_tool.clone_from(direct_tool);
            }
            (
                EventKind::StepFinished {
                    status,
                    result,
                    result_call,
                    duration_ms,
                    error,
                },
                Some(i),
            ) => {
                let result = match (result_call, result) {
                    (Some(call), _) => self
                        .call_of(i, call)
                        .map_or(StepResult::None, StepResult::Call),
                    (None, Some(value)) => StepResult::Value(value.clone()),
                    (None, None) => StepResult::None,
                };
                self.finish_step(i, *status, result, error, *duration_ms, at);
            }
            (EventKind::RollbackStarted { steps }, _) => self.start_rollback(steps),
            (EventKind::CompensationStarted { action, tool, .. }, Some(i)) => {
                let entry = self.ledger_entry(i, *action, tool);
                entry.state = CompensationState::Started;
                entry.started_ms = Some(at);
            }
            (
                EventKind::CompensationFinished {
                    action,
                    tool,
                    success,
                    error,
                },
                Some(i),
            ) => {
                let entry = self.ledger_entry(i, *action, tool);
                entry.state = if *success {
                    CompensationState::Done
                } else {
                    CompensationState::Failed(error.clone().unwrap_or_else(|| "failed".into()))
                };
                entry.finished_ms = Some(at);
                self.mark_if_undone(i);
            }
            (EventKind::Effect { effect }, Some(i)) => {
                // Effects belong to a running attempt; the outcome of a call replaces the
                // intent recorded before it.
                let s = &mut self.steps[i];
                if s.status == StepStatus::Running {
                    s.effects.retain(|e| e.call_id != effect.call_id);
                    s.effects.push(effect.clone());
                }
            }
            (EventKind::StepStarted { .. }, None)
            | (EventKind::StepFinished { .. }, None)
            | (EventKind::CompensationStarted { .. }, None)
            | (EventKind::CompensationFinished { .. }, None)
            | (EventKind::Effect { .. }, None)
            | (EventKind::Note { .. }, _) => {}
            // A wait is news while it lasts; what the call cost comes with its `LlmCall`.
            (EventKind::RateLimitWait { .. }, _) => {}
            (EventKind::RunCancelled { reason }, _) => {
                self.cancelled.get_or_insert_with(|| reason.clone());
                self.stopped_by
                    .get_or_insert_with(|| (self.seq, event.kind.clone()));
            }
            // A spent budget stops the run as a failure does (and steps that fail after it
            // failed because of it).
            (EventKind::BudgetExceeded { message, .. }, _) => {
                self.stopped_by
                    .get_or_insert_with(|| (self.seq, event.kind.clone()));
                if self.failure.is_none() && self.cancelled.is_none() {
                    self.failure = Some(StopReason::Stopped {
                        reason: message.clone(),
                    });
                }
            }
            (EventKind::PlanSubmitted { by }, _) => {
                self.review = Some(PlanReview {
                    submitted_by: by.clone(),
                    submitted_ms: at,
                    decision: None,
                });
            }
            (
                EventKind::PlanReviewed {
                    approved,
                    by,
                    reason,
                    edited,
                },
                _,
            ) => {
                let review = self.review.get_or_insert(PlanReview {
                    submitted_by: None,
                    submitted_ms: at,
                    decision: None,
                });
                review.decision = Some(PlanDecision {
                    approved: *approved,
                    by: by.clone(),
                    at_ms: at,
                    reason: reason.clone(),
                    edited: *edited,
                });
            }
        }
    }

    fn note_time(&mut self, event: &Event) {
        let began = began_ms(event);
        self.earliest_ms = Some(self.earliest_ms.map_or(began, |t| t.min(began)));
        let at = event.timestamp_ms;
        self.latest_ms = Some(self.latest_ms.map_or(at, |t| t.max(at)));
    }

    fn step_index(&mut self, id: &Arc<str>) -> usize {
        match self.index.get(id) {
            Some(&i) => i,
            None => self.add_step(id),
        }
    }

    fn add_step(&mut self, id: &str) -> usize {
        let id: Arc<str> = Arc::from(id);
        let i = self.steps.len();
        self.index.insert(Arc::clone(&id), i);
        self.steps.push(StepRecord {
            id,
            status: StepStatus::Pending,
            attempts: 0,
            started_ms: None,
            started_seq: None,
            finished_ms: None,
            duration_ms: None,
            result: StepResult::None,
            error: None,
            agent: None,
            direct_tool: None,
            effects: Vec::new(),
            own_compensation: false,
            last_call: None,
            queued: false,
            in_rollback: false,
        });
        i
    }

    fn queue_undo(&mut self, i: usize) {
        if !self.steps[i].queued {
            self.steps[i].queued = true;
            self.undo_order.push(i);
        }
    }

    fn finish_run(&mut self, success: bool, duration_ms: f64, at_ms: u64) {
        self.end = Some(RunEnd {
            success,
            duration_ms,
            at_ms,
        });
        // A finished run never started the steps still pending.
        for s in &mut self.steps {
            if s.status == StepStatus::Pending {
                s.status = StepStatus::Skipped;
            }
        }
    }

    fn resume(&mut self, entries: &[String], at_ms: u64) {
        let interrupted: Vec<Interruption> = entries
            .iter()
            .filter_map(|e| Interruption::parse(e))
            .collect();
        for interruption in &interrupted {
            let Some(&i) = self.index.get(interruption.step.as_str()) else {
                continue;
            };
            if interruption.rerun {
                // Its effects stay: the new attempt replaces those it records again.
                self.steps[i].status = StepStatus::Pending;
            } else {
                self.fail_interrupted(i);
            }
        }
        self.resumes.push(Resume { at_ms, interrupted });
    }

    fn fail_interrupted(&mut self, i: usize) {
        let s = &mut self.steps[i];
        s.status = StepStatus::Failed;
        s.error = Some(INTERRUPTED_ERROR.to_owned());
        let has_effects = !s.effects.is_empty();
        let step = s.id.to_string();
        if has_effects {
            self.queue_undo(i);
        }
        self.failure.get_or_insert(StopReason::StepFailed {
            step,
            error: INTERRUPTED_ERROR.to_owned(),
        });
    }

    fn llm_call(&mut self, event: &Event, step: Option<usize>) {
        let EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            latency_ms,
            tool_calls,
            error,
            exchange,
        } = &event.kind
        else {
            return;
        };
        self.usage.add_call(*usage, *cost_usd, error.is_some());
        self.llm_calls.push(LlmCallRecord {
            seq: self.seq,
            step,
            agent: event.agent.clone(),
            model: model.clone(),
            tokens: *usage,
            cost_usd: *cost_usd,
            latency_ms: *latency_ms,
            tool_calls: *tool_calls,
            error: error.clone(),
            exchange: exchange.clone(),
            at_ms: event.timestamp_ms,
        });
    }

    fn tool_call(&mut self, event: &Event, step: Option<usize>) {
        let EventKind::ToolCall {
            call_id,
            tool,
            args,
            output,
            error,
            attempts,
            duration_ms,
            purpose,
        } = &event.kind
        else {
            return;
        };
        if let Some(i) = step {
            // A call that ended without recording an effect did not leave its intent behind.
            let s = &mut self.steps[i];
            s.effects
                .retain(|e| !(e.in_progress && &e.call_id == call_id));
            s.last_call = Some(self.tool_calls.len());
        }
        self.tool_calls.push(ToolCallRecord {
            seq: self.seq,
            step,
            agent: event.agent.clone(),
            call_id: call_id.clone(),
            tool: tool.clone(),
            purpose: *purpose,
            args: args.clone(),
            output: output.clone(),
            error: error.clone(),
            attempts: *attempts,
            duration_ms: *duration_ms,
            at_ms: event.timestamp_ms,
        });
    }

    /// Where step `i`'s call `call_id` is among the tool calls: its latest call, normally, else
    /// found among the calls before it.
    fn call_of(&self, i: usize, call_id: &str) -> Option<usize> {
        let is_it = |k: &usize| {
            let c = &self.tool_calls[*k];
            c.step == Some(i) && c.call_id == call_id
        };
        self.steps[i]
            .last_call
            .filter(is_it)
            .or_else(|| (0..self.tool_calls.len()).rev().find(is_it))
    }

    fn decide(&mut self, event: &Event, step: Option<usize>) {
        let EventKind::Approval {
            call_id,
            tool,
            approved,
            reason,
            by,
            edited_args,
            asked_args,
        } = &event.kind
        else {
            return;
        };
        let at = self.approvals.len();
        // It answers the latest open request of that call, which holds the arguments asked for.
        let request = self
            .requests
            .iter_mut()
            .rev()
            .find(|r| r.step == step && &r.call_id == call_id && r.decision.is_none());
        let asked_args = match (edited_args, asked_args, &request) {
            (Some(_), None, Some(request)) => Some(request.args.clone()),
            (Some(_), asked, _) => asked.clone(),
            (None, _, _) => None,
        };
        if let Some(request) = request {
            request.decision = Some(at);
        }
        self.approvals.push(ApprovalRecord {
            seq: self.seq,
            step,
            call_id: call_id.clone(),
            tool: tool.clone(),
            approved: *approved,
            reason: reason.clone(),
            by: by.clone(),
            edited_args: edited_args.clone(),
            asked_args,
            at_ms: event.timestamp_ms,
        });
    }

    fn finish_step(
        &mut self,
        i: usize,
        status: StepStatus,
        result: StepResult,
        error: &Option<String>,
        duration_ms: f64,
        at_ms: u64,
    ) {
        let s = &mut self.steps[i];
        s.status = status;
        s.result = result;
        s.error.clone_from(error);
        s.duration_ms = Some(duration_ms);
        s.finished_ms = Some(at_ms);
        if s.started_ms.is_none() {
            // No start on record: it began `duration_ms` before its end.
            s.started_ms = Some(at_ms.saturating_sub(duration_ms.max(0.0) as u64));
        }
        if status == StepStatus::Completed || !s.effects.is_empty() {
            self.queue_undo(i);
        }
        // A step that fails once the run was cancelled was stopped by it: not the cause.
        if status == StepStatus::Failed && self.failure.is_none() && self.cancelled.is_none() {
            self.failure = Some(StopReason::StepFailed {
                step: self.steps[i].id.to_string(),
                error: error.clone().unwrap_or_default(),
            });
        }
    }

    fn start_rollback(&mut self, order: &[String]) {
        for id in order {
            if let Some(&i) = self.index.get(id.as_str()) {
                self.steps[i].in_rollback = true;
            }
        }
        self.rollback.get_or_insert_with(Rollback::default).order = order.to_vec();
    }

    fn ledger_entry(&mut self, step: usize, action: usize, tool: &str) -> &mut LedgerEntry {
        let rollback = self.rollback.get_or_insert_with(Rollback::default);
        let at = *rollback.by_action.entry((step, action)).or_insert_with(|| {
            rollback.ledger.push(LedgerEntry {
                step,
                action,
                tool: tool.to_owned(),
                state: CompensationState::Started,
                started_ms: None,
                finished_ms: None,
            });
            rollback.ledger.len() - 1
        });
        &mut rollback.ledger[at]
    }

    /// Marks step `i` compensated once every compensating action rollback runs for it is done.
    /// Mirrors how rollback picks them: the step's own compensating tool (one action); else
    /// one per recorded effect (none possible if an effect has no compensating tool); else the
    /// compensating tool of the step's tool (one action).
    fn mark_if_undone(&mut self, i: usize) {
        let s = &self.steps[i];
        if !s.in_rollback {
            return;
        }
        let actions = if s.own_compensation || s.effects.is_empty() {
            1
        } else if s.effects.iter().all(|e| e.compensating_tool.is_some()) {
            s.effects.len()
        } else {
            return;
        };
        let Some(rollback) = &self.rollback else {
            return;
        };
        let done = (0..actions).all(|n| {
            rollback
                .entry(i, n)
                .is_some_and(|e| e.state == CompensationState::Done)
        });
        if done {
            self.steps[i].status = StepStatus::Compensated;
        }
    }
}

/// Reading the state.
impl RunState {
    /// The run's id, once an event named it.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// How many events were applied: the position, from 1, of the latest one in the run's
    /// journal (0 before any). Call records keep theirs as `seq`.
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// The call with this `seq`, if the event there was a model call.
    pub fn llm_call_at(&self, seq: usize) -> Option<&LlmCallRecord> {
        find_seq(&self.llm_calls, seq, |c| c.seq)
    }

    /// The call with this `seq`, if the event there was a tool call.
    pub fn tool_call_at(&self, seq: usize) -> Option<&ToolCallRecord> {
        find_seq(&self.tool_calls, seq, |c| c.seq)
    }

    /// The plan's goal.
    pub fn goal(&self) -> &str {
        &self.goal
    }

    /// Whether the run's start is on record.
    pub fn started(&self) -> bool {
        self.started_ms.is_some()
    }

    /// When the run started (ms since the epoch), if on record.
    pub fn started_ms(&self) -> Option<u64> {
        self.started_ms
    }

    /// The earliest moment on record (ms since the epoch): an event's time less its duration.
    pub fn earliest_ms(&self) -> Option<u64> {
        self.earliest_ms
    }

    /// The latest event's time (ms since the epoch).
    pub fn latest_ms(&self) -> Option<u64> {
        self.latest_ms
    }

    /// How the run ended, if its end is on record.
    pub fn end(&self) -> Option<RunEnd> {
        self.end
    }

    /// Every step, in plan order (then steps only the events named).
    pub fn steps(&self) -> &[StepRecord] {
        &self.steps
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// Position of the step with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Steps with work rollback would undo, in the order to list them (rollback undoes them in
    /// reverse): first effects of interrupted attempts whose steps never ran again (they
    /// happened first), then the steps that ended with work, in the order they ended.
    /// Each comes with its position.
    pub fn undo_log(&self) -> impl Iterator<Item = (usize, &StepRecord)> + '_ {
        let carried =
            self.steps.iter().enumerate().filter(|(_, s)| {
                !s.queued && !s.effects.is_empty() && s.status != StepStatus::Running
            });
        carried.chain(self.undo_order.iter().map(|&i| (i, &self.steps[i])))
    }

    /// The rollback, if one started.
    pub fn rollback(&self) -> Option<&Rollback> {
        self.rollback.as_ref()
    }

    /// Tokens, cost and model calls.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The event that stopped the run from outside its plan (`run_cancelled`, or
    /// `budget_exceeded`), with its position in the journal (from 1), if one did.
    pub fn stopped_by(&self) -> Option<(usize, &EventKind)> {
        self.stopped_by.as_ref().map(|(seq, kind)| (*seq, kind))
    }

    /// The budget the run is kept within, as recorded when it started.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// How long the run has been running: from its start to its latest event, less the time it
    /// stood still between a stop (a crash, a suspension, a wait for approval) and its resume.
    pub fn running_time(&self) -> Duration {
        let current = match (self.stretch_start_ms, self.latest_ms) {
            (Some(start), Some(latest)) => latest.saturating_sub(start),
            _ => 0,
        };
        Duration::from_millis(self.ran_before_ms + current)
    }

    /// Model calls, in the order they ended.
    pub fn llm_calls(&self) -> &[LlmCallRecord] {
        &self.llm_calls
    }

    /// Tool calls, in the order they ended.
    pub fn tool_calls(&self) -> &[ToolCallRecord] {
        &self.tool_calls
    }

    /// Approval decisions, in order.
    pub fn approvals(&self) -> &[ApprovalRecord] {
        &self.approvals
    }

    /// The run's restarts after its process stopped.
    pub fn resumes(&self) -> &[Resume] {
        &self.resumes
    }

    /// The result of step `step` (a position in [`steps`](Self::steps)), when it completed.
    pub fn result(&self, step: usize) -> Option<&Value> {
        match &self.steps.get(step)?.result {
            StepResult::None => None,
            StepResult::Value(value) => Some(value),
            StepResult::Call(k) => self.tool_calls.get(*k)?.output.as_ref(),
        }
    }

    /// Every tool call that waited for a person, in the order asked.
    pub fn approval_requests(&self) -> &[ApprovalRequestRecord] {
        &self.requests
    }

    /// The requests still waiting for a decision. A run that ended has none: what waited when
    /// it ended will never be called.
    pub fn pending_approvals(&self) -> impl Iterator<Item = &ApprovalRequestRecord> + '_ {
        let open = self.end.is_none();
        self.requests
            .iter()
            .filter(move |r| open && r.decision.is_none())
    }

    /// Every decision on a tool call and every call still waiting, in journal order.
    pub fn call_decisions(&self) -> Vec<CallDecision<'_>> {
        let mut all: Vec<CallDecision<'_>> = self
            .approvals
            .iter()
            .map(CallDecision::Decided)
            .chain(self.pending_approvals().map(CallDecision::Waiting))
            .collect();
        all.sort_by_key(CallDecision::seq);
        all
    }

    /// The decision that let `call` go ahead or stopped it, when its tool needed one: the
    /// latest decision on its call id before it.
    pub fn approval_of(&self, call: &ToolCallRecord) -> Option<&ApprovalRecord> {
        self.approvals.iter().rev().find(|a| {
            a.seq < call.seq
                && a.step == call.step
                && a.call_id == call.call_id
                && a.tool == call.tool
        })
    }

    /// The decision on record for call `call_id` of step `step` asking for `tool` with `args`:
    /// a person's answer to a request that waited. A different tool or arguments under the same
    /// call id (an agent that chose otherwise when its step ran again) is another request.
    pub fn decision_for(
        &self,
        step: Option<usize>,
        call_id: &str,
        tool: &str,
        args: &Value,
    ) -> Option<&ApprovalRecord> {
        self.request_for(step, call_id, tool, args)
            .and_then(|r| r.decision)
            .map(|i| &self.approvals[i])
    }

    /// Whether step `step` is parked: it runs and a call of it waited for a person's decision
    /// that it has not made since (decided or not). Such a step made no call since, so it can
    /// always run again.
    pub fn is_parked(&self, step: usize) -> bool {
        self.steps.get(step).map(|s| s.status) == Some(StepStatus::Running)
            && self.requests.iter().any(|r| {
                r.step == Some(step)
                    && !self
                        .tool_calls
                        .iter()
                        .any(|c| c.step == Some(step) && c.call_id == r.call_id && c.seq > r.seq)
            })
    }

    /// The latest request on record for that call, tool and arguments, decided or not.
    pub fn request_for(
        &self,
        step: Option<usize>,
        call_id: &str,
        tool: &str,
        args: &Value,
    ) -> Option<&ApprovalRequestRecord> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.step == step && r.call_id == call_id && r.tool == tool && &r.args == args)
    }

    /// The review of its plan, when it was submitted for one.
    pub fn review(&self) -> Option<&PlanReview> {
        self.review.as_ref()
    }

    /// Where the run stands. A run whose end is on record succeeded, failed, or (stopped from
    /// outside with no failed step) was cancelled; before its start, its plan's review decides.
    pub fn phase(&self) -> RunPhase {
        if let Some(end) = self.end {
            // Journals written before `run_cancelled` existed show a cancel as a rollback
            // with no failed step.
            let stopped = self.cancelled.is_some() || self.rollback.is_some();
            return if end.success {
                RunPhase::Succeeded
            } else if self.failure.is_none() && stopped {
                RunPhase::Cancelled
            } else {
                RunPhase::Failed
            };
        }
        match self.review.as_ref().map(|r| r.decision.as_ref()) {
            Some(None) => RunPhase::AwaitingApproval,
            Some(Some(decision)) if !decision.approved => RunPhase::Rejected,
            _ if self.pending_approvals().next().is_some() => RunPhase::WaitingForApproval,
            _ => RunPhase::Running,
        }
    }

    /// Why the run is stopping: its first failed step, else its cancellation (or a rollback
    /// under way with no failed step: it was stopped). `None` while nothing went wrong.
    pub fn stop_reason(&self) -> Option<StopReason> {
        if let Some(failure) = &self.failure {
            return Some(failure.clone());
        }
        let reason = match (&self.cancelled, &self.rollback) {
            (Some(reason), _) => reason.clone(),
            (None, Some(_)) => "the run was stopped".to_owned(),
            (None, None) => return None,
        };
        Some(StopReason::Stopped { reason })
    }
}

/// The record with this `seq` among `records` (kept in `seq` order, as `apply` pushes them).
fn find_seq<T>(records: &[T], seq: usize, key: impl Fn(&T) -> usize) -> Option<&T> {
    records
        .binary_search_by_key(&seq, key)
        .ok()
        .and_then(|i| records.get(i))
}

/// When what `event` records began (ms since the epoch): its time, less its duration for the
/// kinds written at their end.
pub fn began_ms(event: &Event) -> u64 {
    let took = match &event.kind {
        EventKind::LlmCall { latency_ms, .. } => *latency_ms,
        EventKind::ToolCall { duration_ms, .. } | EventKind::StepFinished { duration_ms, .. } => {
            *duration_ms
        }
        _ => 0.0,
    };
    let took = if took.is_finite() && took > 0.0 {
        took.ceil() as u64
    } else {
        0
    };
    event.timestamp_ms.saturating_sub(took)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::TokenUsage;
    use crate::plan::PlanStep;
    use serde_json::json;

    fn at(step: Option<&str>, ms: u64, kind: EventKind) -> Event {
        Event {
            timestamp_ms: ms,
            run_id: Some(Arc::from("run-1")),
            step_id: step.map(Arc::from),
            agent: step.map(|_| Arc::from("clerk")),
            kind,
        }
    }

    fn effect(call_id: &str, in_progress: bool) -> Effect {
        Effect {
            call_id: call_id.into(),
            tool: "create".into(),
            args: json!({}),
            compensating_tool: Some("delete".into()),
            in_progress,
        }
    }

    /// One event of every kind, in an order a real run could write them.
    fn every_kind() -> Vec<Event> {
        let a = Some("a");
        vec![
            at(
                None,
                1,
                EventKind::RunStarted {
                    goal: "g".into(),
                    steps: 2,
                    budget: None,
                },
            ),
            at(
                a,
                2,
                EventKind::StepStarted {
                    direct_tool: Some("create".into()),
                },
            ),
            at(
                a,
                3,
                EventKind::Approval {
                    call_id: "a#1".into(),
                    tool: "create".into(),
                    approved: true,
                    reason: None,
                    by: None,
                    edited_args: None,
                    asked_args: None,
                },
            ),
            at(
                a,
                4,
                EventKind::Effect {
                    effect: effect("a#1", true),
                },
            ),
            at(
                a,
                5,
                EventKind::Effect {
                    effect: effect("a#1", false),
                },
            ),
            at(
                a,
                6,
                EventKind::ToolCall {
                    call_id: "a#1".into(),
                    tool: "create".into(),
                    args: json!({}),
                    output: Some(json!("x")),
                    error: None,
                    attempts: 1,
                    duration_ms: 1.0,
                    purpose: CallPurpose::Execute,
                },
            ),
            at(
                a,
                7,
                EventKind::LlmCall {
                    model: "m".into(),
                    usage: TokenUsage::new(3, 2),
                    cost_usd: None,
                    latency_ms: 1.0,
                    tool_calls: 0,
                    error: Some("boom".into()),
                    exchange: None,
                },
            ),
            at(
                a,
                8,
                EventKind::StepFinished {
                    status: StepStatus::Completed,
                    result: Some(json!("x")),
                    result_call: None,
                    duration_ms: 6.0,
                    error: None,
                },
            ),
            at(
                None,
                9,
                EventKind::RunResumed {
                    interrupted: vec![],
                },
            ),
            at(Some("b"), 10, EventKind::StepStarted { direct_tool: None }),
            at(
                Some("b"),
                11,
                EventKind::StepFinished {
                    status: StepStatus::Failed,
                    result: None,
                    result_call: None,
                    duration_ms: 1.0,
                    error: Some("no".into()),
                },
            ),
            at(
                None,
                12,
                EventKind::RollbackStarted {
                    steps: vec!["a".into()],
                },
            ),
            at(
                a,
                13,
                EventKind::CompensationStarted {
                    action: 0,
                    tool: "delete".into(),
                    args: json!({}),
                },
            ),
            at(
                a,
                14,
                EventKind::CompensationFinished {
                    action: 0,
                    tool: "delete".into(),
                    success: true,
                    error: None,
                },
            ),
            at(
                None,
                15,
                EventKind::Note {
                    message: "n".into(),
                },
            ),
            at(
                None,
                16,
                EventKind::RunFinished {
                    success: false,
                    duration_ms: 15.0,
                },
            ),
            at(
                None,
                0,
                EventKind::PlanSubmitted {
                    by: Some("bo".into()),
                },
            ),
            at(
                None,
                0,
                EventKind::PlanReviewed {
                    approved: true,
                    by: "al".into(),
                    reason: None,
                    edited: true,
                },
            ),
            at(
                a,
                17,
                EventKind::ApprovalRequested {
                    call_id: "a#9".into(),
                    tool: "create".into(),
                    args: json!({}),
                    purpose: CallPurpose::Execute,
                },
            ),
            at(
                None,
                18,
                EventKind::BudgetExceeded {
                    budget: crate::budget::BudgetKind::Tokens,
                    spent: 12.0,
                    limit: 10.0,
                    message: "token budget exceeded: 12 tokens used of 10 tokens".into(),
                },
            ),
            at(
                None,
                18,
                EventKind::RunCancelled {
                    reason: "stop".into(),
                },
            ),
            at(
                a,
                19,
                EventKind::RateLimitWait {
                    model: "m".into(),
                    limit: crate::lm::RateLimitCause::Requests,
                    wait_ms: 250.0,
                },
            ),
        ]
    }

    #[test]
    fn every_event_kind_is_applied() {
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "a"));
        plan.steps.push(PlanStep::new("b", "b"));
        let mut state = RunState::new(&plan);
        for event in every_kind() {
            state.apply(&event);
            let a = &state.steps()[0];
            // No wildcard: a new kind does not compile until it is handled here (and in apply).
            match &event.kind {
                EventKind::RunStarted { .. } => assert!(state.started()),
                EventKind::StepStarted { .. } => {
                    let s = state.step(event.step_id.as_deref().unwrap()).unwrap();
                    assert_eq!((s.status, s.attempts), (StepStatus::Running, 1));
                }
                EventKind::Approval { .. } => assert_eq!(state.approvals().len(), 1),
                EventKind::RunCancelled { .. } => {
                    assert!(state.cancelled.is_some());
                }
                EventKind::BudgetExceeded { .. } => assert!(state.stop_reason().is_some()),
                EventKind::ApprovalRequested { .. } => {
                    assert_eq!(state.approval_requests().len(), 1);
                    assert_eq!(state.pending_approvals().count(), 0, "the run ended");
                }
                EventKind::Effect { effect } => {
                    assert_eq!(a.effects.len(), 1, "the outcome replaces the intent");
                    assert_eq!(a.effects[0].in_progress, effect.in_progress);
                }
                EventKind::ToolCall { .. } => assert_eq!(state.tool_calls().len(), 1),
                EventKind::RateLimitWait { .. } => {
                    assert_eq!(state.usage().calls, 1, "a wait is not a call");
                }
                EventKind::LlmCall { .. } => {
                    let usage = state.usage();
                    assert_eq!((usage.calls, usage.failed_calls), (1, 1));
                    assert!(
                        usage.cost_incomplete(),
                        "a failed unpriced call is unpriced"
                    );
                }
                EventKind::StepFinished { status, .. } => {
                    let s = state.step(event.step_id.as_deref().unwrap()).unwrap();
                    assert_eq!(s.status, *status);
                }
                EventKind::RunResumed { .. } => assert_eq!(state.resumes().len(), 1),
                EventKind::RollbackStarted { steps } => {
                    assert_eq!(&state.rollback().unwrap().order, steps);
                    assert!(matches!(
                        state.stop_reason(),
                        Some(StopReason::StepFailed { .. })
                    ));
                }
                EventKind::CompensationStarted { .. } => {
                    let entry = state.rollback().unwrap().entry(0, 0).unwrap();
                    assert_eq!(entry.state, CompensationState::Started);
                }
                EventKind::CompensationFinished { .. } => {
                    assert_eq!(a.status, StepStatus::Compensated);
                }
                EventKind::Note { .. } => assert_eq!(state.steps().len(), 2),
                EventKind::PlanSubmitted { by } => {
                    assert_eq!(&state.review().unwrap().submitted_by, by);
                }
                EventKind::PlanReviewed { .. } => {
                    let decision = state.review().unwrap().decision.as_ref().unwrap();
                    assert!(decision.approved && decision.edited);
                }
                EventKind::RunFinished { success, .. } => {
                    assert_eq!(state.end().map(|e| e.success), Some(*success));
                }
            }
        }
    }

    /// Where each call's event sits in `journal`, from 1: what `seq` must say.
    fn call_positions(journal: &[Event]) -> Vec<usize> {
        journal
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                matches!(
                    e.kind,
                    EventKind::LlmCall { .. } | EventKind::ToolCall { .. }
                )
            })
            .map(|(i, _)| i + 1)
            .collect()
    }

    fn seqs(state: &RunState) -> Vec<usize> {
        let mut seqs: Vec<usize> = state.llm_calls().iter().map(|c| c.seq).collect();
        seqs.extend(state.tool_calls().iter().map(|c| c.seq));
        seqs.sort_unstable();
        seqs
    }

    #[test]
    fn seq_numbers_are_journal_positions_and_a_resumed_run_continues_them() {
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "a"));
        plan.steps.push(PlanStep::new("b", "b"));
        let journal = every_kind();
        let state = RunState::replay(&plan, &journal);
        assert_eq!(state.seq(), journal.len());
        assert_eq!(seqs(&state), call_positions(&journal));
        assert_eq!(
            call_positions(&journal),
            vec![6, 7],
            "the fixture has both kinds"
        );
        let tool = state.tool_call_at(6).unwrap();
        assert_eq!(
            (tool.tool.as_str(), tool.agent.as_deref()),
            ("create", Some("clerk"))
        );
        assert_eq!(tool.args, json!({}));
        assert_eq!(state.llm_call_at(7).unwrap().model, "m");
        assert!(state.tool_call_at(7).is_none() && state.llm_call_at(6).is_none());
        assert!(state.tool_call_at(0).is_none() && state.llm_call_at(1).is_none());

        // The process stopped after the first 7 events; the resumed run replays them, then
        // applies what it does next live, and writes it after them in the journal.
        let stopped = &journal[..7];
        let mut live = RunState::replay(&plan, stopped);
        assert_eq!(live.seq(), 7);
        let mut resumed = stopped.to_vec();
        let again = |ms: u64, call_id: &str| {
            at(
                Some("a"),
                ms,
                EventKind::ToolCall {
                    call_id: call_id.into(),
                    tool: "create".into(),
                    args: json!({"again": call_id}),
                    output: None,
                    error: Some("no".into()),
                    attempts: 1,
                    duration_ms: 1.0,
                    purpose: CallPurpose::Execute,
                },
            )
        };
        for event in [
            at(
                None,
                20,
                EventKind::RunResumed {
                    interrupted: vec![],
                },
            ),
            at(Some("a"), 21, EventKind::StepStarted { direct_tool: None }),
            again(22, "a#2"),
            at(
                None,
                23,
                EventKind::Note {
                    message: "n".into(),
                },
            ),
            again(24, "a#3"),
        ] {
            live.apply(&event);
            resumed.push(event);
        }
        assert_eq!(seqs(&live), call_positions(&resumed));
        assert_eq!(live.tool_call_at(12).unwrap().args, json!({"again": "a#3"}));
        assert_eq!(live, RunState::replay(&plan, &resumed));
    }

    #[test]
    fn interrupted_steps_run_again_or_fail_as_the_resume_event_says() {
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "a"));
        plan.steps.push(PlanStep::new("b", "b"));
        let entries = vec![
            Interruption {
                step: "a".into(),
                rerun: true,
            }
            .to_entry(),
            Interruption {
                step: "b".into(),
                rerun: false,
            }
            .to_entry(),
        ];
        let state = RunState::replay(
            &plan,
            &[
                at(Some("a"), 1, EventKind::StepStarted { direct_tool: None }),
                at(Some("b"), 1, EventKind::StepStarted { direct_tool: None }),
                at(
                    Some("b"),
                    2,
                    EventKind::Effect {
                        effect: effect("b#1", false),
                    },
                ),
                at(
                    None,
                    3,
                    EventKind::RunResumed {
                        interrupted: entries,
                    },
                ),
            ],
        );
        assert_eq!(state.steps()[0].status, StepStatus::Pending);
        assert_eq!(state.steps()[1].status, StepStatus::Failed);
        assert_eq!(state.steps()[1].error.as_deref(), Some(INTERRUPTED_ERROR));
        let undo: Vec<usize> = state.undo_log().map(|(i, _)| i).collect();
        assert_eq!(undo, vec![1]);
        assert_eq!(state.resumes()[0].interrupted.len(), 2);
    }

    #[test]
    fn a_step_with_an_effect_that_cannot_be_undone_is_never_compensated() {
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "a"));
        let mut lasting = effect("a#2", false);
        lasting.compensating_tool = None;
        let state = RunState::replay(
            &plan,
            &[
                at(Some("a"), 1, EventKind::StepStarted { direct_tool: None }),
                at(
                    Some("a"),
                    2,
                    EventKind::Effect {
                        effect: effect("a#1", false),
                    },
                ),
                at(Some("a"), 2, EventKind::Effect { effect: lasting }),
                at(
                    Some("a"),
                    3,
                    EventKind::StepFinished {
                        status: StepStatus::Completed,
                        result: None,
                        result_call: None,
                        duration_ms: 1.0,
                        error: None,
                    },
                ),
                at(
                    None,
                    4,
                    EventKind::RollbackStarted {
                        steps: vec!["a".into()],
                    },
                ),
                at(
                    Some("a"),
                    5,
                    EventKind::CompensationFinished {
                        action: 0,
                        tool: "delete".into(),
                        success: true,
                        error: None,
                    },
                ),
            ],
        );
        assert_eq!(state.steps()[0].status, StepStatus::Completed);
    }

    fn call(call_id: &str, output: Value) -> EventKind {
        EventKind::ToolCall {
            call_id: call_id.into(),
            tool: "create".into(),
            args: json!({}),
            output: Some(output),
            error: None,
            attempts: 1,
            duration_ms: 1.0,
            purpose: CallPurpose::Execute,
        }
    }

    fn finished_from(call_id: &str) -> EventKind {
        EventKind::StepFinished {
            status: StepStatus::Completed,
            result: None,
            result_call: Some(call_id.into()),
            duration_ms: 1.0,
            error: None,
        }
    }

    #[test]
    fn a_step_result_named_by_its_call_is_that_calls_output() {
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "a"));
        plan.steps.push(PlanStep::new("b", "b"));
        let state = RunState::replay(
            &plan,
            &[
                at(Some("a"), 1, call("a#1", json!({"id": 1}))),
                at(Some("b"), 1, call("b#1", json!({"id": 2}))),
                // A later call of the step is not the one named.
                at(Some("a"), 2, call("a#2", json!("other"))),
                at(Some("b"), 3, finished_from("b#1")),
                at(Some("a"), 3, finished_from("a#1")),
            ],
        );
        assert_eq!(state.result(0), Some(&json!({"id": 1})));
        assert_eq!(state.result(1), Some(&json!({"id": 2})));
    }

    #[test]
    fn journals_that_repeat_outputs_still_read() {
        // Before 0.2 an effect and a step's end carried their own copy of the output.
        let lines = [
            r#"{"timestamp_ms":1,"step_id":"a","type":"step_started"}"#,
            r#"{"timestamp_ms":1,"step_id":"a","type":"effect","effect":{"call_id":"a#1","tool":"create","args":{},"result":{"id":7},"compensating_tool":"delete"}}"#,
            r#"{"timestamp_ms":2,"step_id":"a","type":"tool_call","call_id":"a#1","tool":"create","args":{},"output":{"id":7},"attempts":1,"duration_ms":1.0,"purpose":"execute"}"#,
            r#"{"timestamp_ms":3,"step_id":"a","type":"step_finished","status":"completed","result":{"id":7},"duration_ms":1.0}"#,
        ];
        let events: Vec<Event> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "a"));
        let state = RunState::replay(&plan, &events);
        assert_eq!(state.result(0), Some(&json!({"id": 7})));
        assert_eq!(state.steps()[0].effects.len(), 1);
        assert_eq!(state.undo_log().count(), 1);
    }

    #[test]
    fn the_phase_follows_review_and_end() {
        let plan = Plan::new("g");
        let submitted = at(None, 1, EventKind::PlanSubmitted { by: None });
        let decided = |approved| {
            at(
                None,
                2,
                EventKind::PlanReviewed {
                    approved,
                    by: "al".into(),
                    reason: Some("no".into()),
                    edited: false,
                },
            )
        };
        let ended = |success| {
            at(
                None,
                3,
                EventKind::RunFinished {
                    success,
                    duration_ms: 1.0,
                },
            )
        };
        let rollback = at(None, 3, EventKind::RollbackStarted { steps: vec![] });
        let phase = |events: &[Event]| RunState::replay(&plan, events).phase();
        assert_eq!(phase(&[]), RunPhase::Running);
        assert_eq!(
            phase(std::slice::from_ref(&submitted)),
            RunPhase::AwaitingApproval
        );
        assert_eq!(
            phase(&[submitted.clone(), decided(false)]),
            RunPhase::Rejected
        );
        assert_eq!(
            phase(&[submitted.clone(), decided(true)]),
            RunPhase::Running
        );
        assert_eq!(phase(&[ended(true)]), RunPhase::Succeeded);
        assert_eq!(
            phase(&[rollback.clone(), ended(false)]),
            RunPhase::Cancelled
        );
        let failed = at(
            Some("a"),
            2,
            EventKind::StepFinished {
                status: StepStatus::Failed,
                result: None,
                result_call: None,
                duration_ms: 1.0,
                error: Some("boom".into()),
            },
        );
        assert_eq!(
            phase(&[failed.clone(), rollback.clone(), ended(false)]),
            RunPhase::Failed
        );
        // A step stopped by a cancel does not make the run failed.
        let cancel = at(
            None,
            1,
            EventKind::RunCancelled {
                reason: "asked".into(),
            },
        );
        let state = RunState::replay(&plan, &[cancel.clone(), failed.clone(), rollback.clone()]);
        assert_eq!(
            state.stop_reason(),
            Some(StopReason::Stopped {
                reason: "asked".into()
            })
        );
        assert_eq!(
            phase(&[cancel.clone(), failed.clone(), rollback, ended(false)]),
            RunPhase::Cancelled
        );
        // A failure before the cancel stays the cause.
        assert_eq!(phase(&[failed, cancel, ended(false)]), RunPhase::Failed);
        for phase in RunPhase::ALL {
            assert_eq!(phase.name().parse::<RunPhase>(), Ok(phase));
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.name());
        }
        assert!("paused"
            .parse::<RunPhase>()
            .unwrap_err()
            .contains("awaiting_approval"));
    }
}
