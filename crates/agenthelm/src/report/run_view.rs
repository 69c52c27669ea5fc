//! What the page shows, derived from a stored run: each step's final status, the bars of the
//! timeline, totals and the rollback outcome.
//!
//! Everything here is read from the run's [`RunState`], replayed from its journal: the page
//! tells what every other view of the run tells.

use super::escape::truncate;
use super::time_format::duration;
use crate::lm::TokenUsage;
use crate::plan::{PlanStep, StepStatus};
use crate::store::StoredRun;
use crate::trace::{
    CallPurpose, CompensationState, LedgerEntry, LlmCallRecord, RunState, StepRecord,
    ToolCallRecord,
};

/// How the run as a whole ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    Succeeded,
    Failed,
    /// No end on record: still running, or its process stopped.
    Unfinished,
}

/// One plan step and what happened to it.
#[derive(Debug)]
pub(crate) struct StepView<'a> {
    pub step: &'a PlanStep,
    pub status: StepStatus,
    /// The agent that ran it (from its events), else the one the plan names.
    pub agent: Option<String>,
    /// Start and end relative to the run's start, in ms.
    pub start_ms: Option<f64>,
    pub end_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub error: Option<String>,
}

/// What a timeline bar stands for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BarKind {
    Step(StepStatus),
    Llm { ok: bool },
    Tool { ok: bool },
    Compensation { ok: bool },
}

/// One bar of the timeline, on the row of its step (`None`: the run's own row).
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub step: Option<usize>,
    pub kind: BarKind,
    pub start_ms: f64,
    pub end_ms: f64,
    /// Hover text.
    pub title: String,
}

/// One compensating action and how it went.
#[derive(Debug, Clone)]
pub(crate) struct CompensationOutcome {
    pub step: String,
    pub tool: String,
    /// `None` when it started and has no end on record.
    pub success: Option<bool>,
    pub error: Option<String>,
}

/// The rollback, when there was one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rollback {
    /// Steps to undo, in the order they were to be undone.
    pub order: Vec<String>,
    pub actions: Vec<CompensationOutcome>,
}

impl Rollback {
    /// Steps with a compensation that failed or never finished: their effects may remain.
    pub fn not_undone(&self) -> Vec<&str> {
        let mut steps: Vec<&str> = Vec::new();
        for action in &self.actions {
            if action.success != Some(true) && !steps.contains(&action.step.as_str()) {
                steps.push(&action.step);
            }
        }
        steps
    }
}

/// A stored run, read for the page.
#[derive(Debug)]
pub(crate) struct RunView<'a> {
    pub run: &'a StoredRun,
    pub steps: Vec<StepView<'a>>,
    pub bars: Vec<Bar>,
    pub outcome: RunOutcome,
    /// Length of the run on the time axis, in ms.
    pub span_ms: f64,
    pub usage: TokenUsage,
    /// Sum of the known prices, and whether some calls had no price.
    pub cost_usd: f64,
    pub cost_incomplete: bool,
    pub llm_calls: usize,
    pub tool_calls: usize,
    pub rollback: Option<Rollback>,
    /// The review of the plan, when it was submitted for one.
    pub review: Option<crate::trace::PlanReview>,
    /// Decisions on tool calls that needed approval, and calls still waiting, in journal order.
    pub decisions: Vec<Decision>,
}

/// A decision on a tool call, or a call waiting for one.
#[derive(Debug)]
pub(crate) struct Decision {
    pub step: Option<String>,
    pub tool: String,
    /// `approved`, `approved with edited arguments`, `denied` or `waiting`.
    pub what: &'static str,
    /// Who decided; `None` for the approval handler.
    pub by: Option<String>,
    pub at_ms: u64,
    pub reason: Option<String>,
    /// The arguments asked for, when an edit replaced them (or the call still waits).
    pub asked_args: Option<serde_json::Value>,
    pub edited_args: Option<serde_json::Value>,
}

fn decisions(state: &RunState) -> Vec<Decision> {
    state
        .call_decisions()
        .into_iter()
        .map(|decision| {
            let record = decision.decided();
            Decision {
                step: decision.step().map(|i| state.steps()[i].id.to_string()),
                tool: decision.tool().to_owned(),
                what: match decision.verdict() {
                    "deny" => "denied",
                    "edit" => "approved with edited arguments",
                    "approve" => "approved",
                    _ => "waiting",
                },
                by: record.and_then(|r| r.by.clone()),
                at_ms: decision.at_ms(),
                reason: record.and_then(|r| r.reason.clone()),
                asked_args: decision.asked_args().cloned(),
                edited_args: record.and_then(|r| r.edited_args.clone()),
            }
        })
        .collect()
}

impl<'a> RunView<'a> {
    pub fn new(run: &'a StoredRun) -> Self {
        let state = RunState::replay(&run.plan, &run.events);
        // The axis starts at the earliest moment on record: a call's event is written when it
        // ends, so a planner's call before the run's first event starts earlier than it.
        let origin_ms = state
            .earliest_ms()
            .map_or(run.summary.started_ms, |t| t.min(run.summary.started_ms));
        let since = |ms: u64| ms.saturating_sub(origin_ms) as f64;
        let mut last_ms = state.latest_ms().map_or(0.0, since);
        if let Some(finished) = run.summary.finished_ms {
            last_ms = last_ms.max(since(finished));
        }
        let outcome = match (state.end(), run.summary.success) {
            (Some(end), _) => outcome(end.success),
            (None, Some(success)) => outcome(success),
            (None, None) => RunOutcome::Unfinished,
        };
        let steps: Vec<StepView<'a>> = run
            .plan
            .steps
            .iter()
            .zip(state.steps())
            .map(|(step, record)| StepView::of(step, record, outcome, &since))
            .collect();
        let usage = state.usage();
        let mut view = RunView {
            run,
            bars: Vec::new(),
            outcome,
            span_ms: 0.0,
            usage: usage.tokens,
            cost_usd: usage.cost_usd,
            cost_incomplete: usage.cost_incomplete(),
            llm_calls: state.llm_calls().len(),
            tool_calls: state.tool_calls().len(),
            rollback: state.rollback().map(|r| Rollback {
                order: r.order.clone(),
                actions: r
                    .ledger
                    .iter()
                    .map(|e| compensation_outcome(&state, e))
                    .collect(),
            }),
            review: state.review().cloned(),
            decisions: decisions(&state),
            steps,
        };
        view.bars = bars(&state, &view.steps, &since, last_ms);
        view.span_ms = view.bars.iter().map(|b| b.end_ms).fold(last_ms, f64::max);
        view
    }

    /// End of the run (ms since the epoch), when it ended.
    pub fn finished_ms(&self) -> Option<u64> {
        self.run.summary.finished_ms.or_else(|| {
            (self.outcome != RunOutcome::Unfinished)
                .then(|| self.run.events.last().map(|e| e.timestamp_ms))
                .flatten()
        })
    }
}

impl<'a> StepView<'a> {
    /// The step as its record tells it, times relative to the axis' origin.
    fn of(
        step: &'a PlanStep,
        record: &StepRecord,
        outcome: RunOutcome,
        since: &dyn Fn(u64) -> f64,
    ) -> Self {
        let start_ms = record.started_ms.map(since);
        let end_ms = record.finished_ms.map(|end| {
            let start = start_ms.unwrap_or(0.0);
            since(end).max(start + record.duration_ms.unwrap_or(0.0))
        });
        let mut status = record.status;
        // A run whose end only the run list has never started the steps still pending.
        if outcome != RunOutcome::Unfinished && status == StepStatus::Pending {
            status = StepStatus::Skipped;
        }
        StepView {
            step,
            status,
            agent: record.agent.as_deref().map(str::to_owned),
            start_ms,
            end_ms,
            duration_ms: record.duration_ms,
            error: record.error.clone(),
        }
    }

    /// Hover text of the step's bar.
    fn title(&self) -> String {
        let mut title = format!(
            "step {} · {}\nagent: {}",
            self.step.id,
            self.status,
            self.agent.as_deref().unwrap_or("default")
        );
        if let Some(d) = self.duration_ms {
            title.push_str(&format!("\n{}", duration(d)));
        }
        if !self.step.description.is_empty() {
            title.push_str(&format!("\n{}", truncate(&self.step.description, 300)));
        }
        if let Some(error) = &self.error {
            title.push_str(&format!("\nerror: {}", truncate(error, 400)));
        }
        title
    }
}

fn compensation_outcome(state: &RunState, entry: &LedgerEntry) -> CompensationOutcome {
    let (success, error) = match &entry.state {
        CompensationState::Started => (None, None),
        CompensationState::Done => (Some(true), None),
        CompensationState::Failed(error) => (Some(false), Some(error.clone())),
    };
    CompensationOutcome {
        step: state.steps()[entry.step].id.to_string(),
        tool: entry.tool.clone(),
        success,
        error,
    }
}

/// The timeline: model calls, tool calls, compensations, then one bar per started step.
fn bars(
    state: &RunState,
    steps: &[StepView<'_>],
    since: &dyn Fn(u64) -> f64,
    last_ms: f64,
) -> Vec<Bar> {
    let mut bars: Vec<Bar> = state
        .llm_calls()
        .iter()
        .map(|call| llm_bar(call, since(call.at_ms)))
        .collect();
    bars.extend(
        state
            .tool_calls()
            .iter()
            // A compensating call is drawn as its compensation's bar.
            .filter(|call| call.purpose == CallPurpose::Execute)
            .map(|call| tool_bar(call, since(call.at_ms))),
    );
    let ledger = state.rollback().map_or(&[][..], |r| &r.ledger);
    bars.extend(ledger.iter().map(|entry| {
        let id = &state.steps()[entry.step].id;
        compensation_bar(entry, id, since, last_ms)
    }));
    for (i, s) in steps.iter().enumerate() {
        let Some(start) = s.start_ms else { continue };
        bars.push(Bar {
            step: Some(i),
            kind: BarKind::Step(s.status),
            start_ms: start,
            // A step still running when the record ends runs to the end of the axis.
            end_ms: s.end_ms.unwrap_or(last_ms),
            title: s.title(),
        });
    }
    bars
}

fn llm_bar(call: &LlmCallRecord, at: f64) -> Bar {
    let price = call
        .cost_usd
        .map_or("price unknown".to_owned(), |c| format!("${c:.6}"));
    let mut title = format!(
        "LLM call · {}\n{} in / {} out tokens · {price}\n{}",
        call.model,
        call.tokens.input_tokens,
        call.tokens.output_tokens,
        duration(call.latency_ms),
    );
    if call.tool_calls > 0 {
        title.push_str(&format!(" · asked for {} tool call(s)", call.tool_calls));
    }
    if let Some(error) = &call.error {
        title.push_str(&format!("\nerror: {}", truncate(error, 400)));
    }
    Bar {
        step: call.step,
        kind: BarKind::Llm {
            ok: call.error.is_none(),
        },
        start_ms: (at - call.latency_ms).max(0.0),
        end_ms: at,
        title,
    }
}

fn tool_bar(call: &ToolCallRecord, at: f64) -> Bar {
    let detail = match (&call.error, &call.output) {
        (Some(error), _) => format!("error: {}", truncate(error, 400)),
        (None, Some(output)) => format!("output: {}", truncate(&output.to_string(), 400)),
        (None, None) => String::new(),
    };
    Bar {
        step: call.step,
        kind: BarKind::Tool {
            ok: call.error.is_none(),
        },
        start_ms: (at - call.duration_ms).max(0.0),
        end_ms: at,
        title: format!(
            "tool call · {} ({})\n{} · {} attempt(s)\n{detail}",
            call.tool,
            call.call_id,
            duration(call.duration_ms),
            call.attempts
        ),
    }
}

/// A compensation's bar; one with no end on record runs to the end of the axis, as not undone.
fn compensation_bar(
    entry: &LedgerEntry,
    id: &str,
    since: &dyn Fn(u64) -> f64,
    last_ms: f64,
) -> Bar {
    let end = entry.finished_ms.map_or(last_ms, since);
    let start = entry.started_ms.map_or(end, since);
    let (ok, title) = match &entry.state {
        CompensationState::Started => (
            false,
            format!("compensation of {id} · started, no end on record"),
        ),
        CompensationState::Done => (
            true,
            format!("compensation of {id} · {}\nundone", entry.tool),
        ),
        CompensationState::Failed(error) => (
            false,
            format!(
                "compensation of {id} · {}\nFAILED: the effect remains\nerror: {}",
                entry.tool,
                truncate(error, 400)
            ),
        ),
    };
    Bar {
        step: Some(entry.step),
        kind: BarKind::Compensation { ok },
        start_ms: start,
        end_ms: end,
        title,
    }
}

fn outcome(success: bool) -> RunOutcome {
    if success {
        RunOutcome::Succeeded
    } else {
        RunOutcome::Failed
    }
}
