//! What the API shows of a run: the run model, read from its journal through [`RunState`].

use agenthelm::store::{RunSummary, StoredRun};
use agenthelm::trace::{ApprovalRequestRecord, CompensationState, RunPhase};
use agenthelm::{Plan, RunState, StepStatus};
use agenthelm_workspace::timestamp::format_ms;
use agenthelm_workspace::ReviewSummary;
use serde::Serialize;
use serde_json::Value;

use crate::runs::approval_id;

/// One line of the run list.
#[derive(Debug, Serialize)]
pub struct RunLine {
    /// The run.
    pub run_id: String,
    /// Its plan's goal.
    pub goal: String,
    /// Where it stands.
    pub state: RunPhase,
    /// When it was submitted or started, RFC 3339.
    pub started: String,
    /// How many steps its plan has.
    pub steps: usize,
}

impl RunLine {
    /// The line of a run whose phase is known.
    pub fn of(summary: &RunSummary, state: RunPhase) -> RunLine {
        RunLine {
            run_id: summary.run_id.clone(),
            goal: summary.goal.clone(),
            state,
            started: format_ms(summary.started_ms),
            steps: summary.steps,
        }
    }
}

/// A run as `GET /api/runs/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct RunView<'r> {
    run_id: &'r str,
    goal: &'r str,
    state: RunPhase,
    plan: &'r Plan,
    started: String,
    finished: Option<String>,
    error: Option<&'r str>,
    review: Option<ReviewSummary>,
    /// The limits the run is kept within, once it started with any.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<agenthelm::budget::Budget>,
    steps: Vec<StepView<'r>>,
    rollback: Option<RollbackView>,
    approvals: Vec<ApprovalView>,
    usage: UsageView,
    cost_usd: f64,
    cost_complete: bool,
}

#[derive(Debug, Serialize)]
struct StepView<'r> {
    id: &'r str,
    description: &'r str,
    status: StepStatus,
    agent: Option<&'r str>,
    tool: Option<&'r str>,
    depends_on: &'r [String],
    attempts: u32,
    result: Option<&'r Value>,
    error: Option<&'r str>,
    duration_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RollbackView {
    /// Steps to undo, in the order they are undone.
    order: Vec<String>,
    /// Each compensating action on record.
    actions: Vec<UndoView>,
}

#[derive(Debug, Serialize)]
struct UndoView {
    step: String,
    tool: String,
    /// `started` (no end on record), `done` or `failed`.
    state: &'static str,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ApprovalView {
    id: String,
    step_id: Option<String>,
    tool: String,
    args: Value,
    /// `approve`, `edit` or `deny`; `null` while pending.
    decision: Option<&'static str>,
    by: Option<String>,
    at: Option<String>,
    reason: Option<String>,
    edited_args: Option<Value>,
}

#[derive(Debug, Serialize)]
struct UsageView {
    input_tokens: u64,
    output_tokens: u64,
    llm_calls: u32,
    unpriced_calls: u32,
}

impl<'r> RunView<'r> {
    /// The view of `run`, whose state is `state`.
    pub fn of(run: &'r StoredRun, state: &'r RunState) -> RunView<'r> {
        let usage = state.usage();
        RunView {
            run_id: &run.summary.run_id,
            goal: &run.plan.goal,
            state: state.phase(),
            plan: &run.plan,
            started: format_ms(run.summary.started_ms),
            finished: run.summary.finished_ms.map(format_ms),
            error: run.summary.error.as_deref(),
            review: ReviewSummary::of(state),
            budget: state.budget().copied(),
            steps: steps_of(run, state),
            rollback: rollback_of(state),
            approvals: state
                .approval_requests()
                .iter()
                .map(|r| approval_of(&run.summary.run_id, state, r))
                .collect(),
            usage: UsageView {
                input_tokens: usage.tokens.input_tokens,
                output_tokens: usage.tokens.output_tokens,
                llm_calls: usage.calls,
                unpriced_calls: usage.unpriced_calls,
            },
            cost_usd: usage.cost_usd,
            cost_complete: !usage.cost_incomplete(),
        }
    }
}

fn steps_of<'r>(run: &'r StoredRun, state: &'r RunState) -> Vec<StepView<'r>> {
    state
        .steps()
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let step = run.plan.steps.get(i);
            StepView {
                id: &record.id,
                description: step.map_or("", |s| s.description.as_str()),
                status: record.status,
                agent: record.agent.as_deref(),
                tool: record
                    .direct_tool
                    .as_deref()
                    .or_else(|| step.and_then(|s| s.tool_name.as_deref())),
                depends_on: step.map_or(&[], |s| s.depends_on.as_slice()),
                attempts: record.attempts,
                result: state.result(i),
                error: record.error.as_deref(),
                duration_ms: record.duration_ms,
            }
        })
        .collect()
}

fn rollback_of(state: &RunState) -> Option<RollbackView> {
    let rollback = state.rollback()?;
    let actions = rollback
        .ledger
        .iter()
        .map(|entry| {
            let (state_name, error) = match &entry.state {
                CompensationState::Started => ("started", None),
                CompensationState::Done => ("done", None),
                CompensationState::Failed(error) => ("failed", Some(error.clone())),
            };
            UndoView {
                step: state.steps()[entry.step].id.to_string(),
                tool: entry.tool.clone(),
                state: state_name,
                error,
            }
        })
        .collect();
    Some(RollbackView {
        order: rollback.order.clone(),
        actions,
    })
}

fn approval_of(run_id: &str, state: &RunState, request: &ApprovalRequestRecord) -> ApprovalView {
    let decision = request.decision.map(|i| &state.approvals()[i]);
    ApprovalView {
        id: approval_id(run_id, request.seq),
        step_id: request.step.map(|i| state.steps()[i].id.to_string()),
        tool: request.tool.clone(),
        args: request.args.clone(),
        decision: decision.map(|d| d.verdict()),
        by: decision.and_then(|d| d.by.clone()),
        at: decision.map(|d| format_ms(d.at_ms)),
        reason: decision.and_then(|d| d.reason.clone()),
        edited_args: decision.and_then(|d| d.edited_args.clone()),
    }
}
