//! What the page shows, derived from a stored run: each step's final status, the bars of the
//! timeline, totals and the rollback outcome.
//!
//! The stored plan is the plan as it was when the run began, so step statuses come from the
//! events: `step_started`, `step_finished` and the compensations of the rollback.

use std::collections::HashMap;

use super::escape::truncate;
use super::time_format::duration;
use crate::lm::TokenUsage;
use crate::plan::{PlanStep, StepStatus};
use crate::store::StoredRun;
use crate::trace::{CallPurpose, Event, EventKind};

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
}

impl<'a> RunView<'a> {
    pub fn new(run: &'a StoredRun) -> Self {
        // The axis starts at the earliest moment on record: a call's event is written when it
        // ends, so a planner's call before the run's first event starts earlier than it.
        let origin_ms = run
            .events
            .iter()
            .map(began_ms)
            .min()
            .map_or(run.summary.started_ms, |t| t.min(run.summary.started_ms));
        let mut reader = Reader {
            index: run
                .plan
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect(),
            view: RunView {
                run,
                steps: run.plan.steps.iter().map(StepView::planned).collect(),
                bars: Vec::new(),
                outcome: RunOutcome::Unfinished,
                span_ms: 0.0,
                usage: TokenUsage::default(),
                cost_usd: 0.0,
                cost_incomplete: false,
                llm_calls: 0,
                tool_calls: 0,
                rollback: None,
            },
            compensating: HashMap::new(),
            origin_ms,
            last_ms: 0.0,
        };
        for event in &run.events {
            reader.read(event);
        }
        reader.finish()
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
    /// The step as the plan has it, before any event.
    fn planned(step: &'a PlanStep) -> Self {
        StepView {
            step,
            status: step.status,
            agent: step.agent_name.clone(),
            start_ms: None,
            end_ms: None,
            duration_ms: None,
            error: step.error.clone(),
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

/// Reads the events in order into a [`RunView`].
struct Reader<'a> {
    index: HashMap<&'a str, usize>,
    view: RunView<'a>,
    /// Start of each compensation still running, by (step, action).
    compensating: HashMap<(usize, usize), f64>,
    origin_ms: u64,
    /// Latest time seen, relative to the origin.
    last_ms: f64,
}

impl<'a> Reader<'a> {
    fn read(&mut self, event: &Event) {
        let at = event.timestamp_ms.saturating_sub(self.origin_ms) as f64;
        self.last_ms = self.last_ms.max(at);
        let step = event
            .step_id
            .as_deref()
            .and_then(|id| self.index.get(id).copied());
        if let (Some(i), Some(agent)) = (step, event.agent.as_deref()) {
            self.view.steps[i].agent = Some(agent.to_owned());
        }
        match &event.kind {
            EventKind::StepStarted { .. } => {
                if let Some(i) = step {
                    let s = &mut self.view.steps[i];
                    s.status = StepStatus::Running;
                    s.start_ms = Some(at);
                    s.end_ms = None;
                    s.error = None;
                }
            }
            EventKind::StepFinished {
                status,
                duration_ms,
                error,
                ..
            } => {
                if let Some(i) = step {
                    let s = &mut self.view.steps[i];
                    let start = s.start_ms.unwrap_or((at - duration_ms).max(0.0));
                    s.status = *status;
                    s.start_ms = Some(start);
                    s.end_ms = Some(at.max(start + duration_ms));
                    s.duration_ms = Some(*duration_ms);
                    s.error = error.clone();
                }
            }
            EventKind::LlmCall { .. } => self.llm_call(&event.kind, step, at),
            EventKind::ToolCall { .. } => self.tool_call(&event.kind, step, at),
            EventKind::RollbackStarted { steps: order } => {
                self.rollback().order = order.clone();
            }
            EventKind::CompensationStarted { action, tool, .. } => {
                if let Some(i) = step {
                    self.compensating.insert((i, *action), at);
                    let step = self.view.steps[i].step.id.clone();
                    self.rollback().actions.push(CompensationOutcome {
                        step,
                        tool: tool.clone(),
                        success: None,
                        error: None,
                    });
                }
            }
            EventKind::CompensationFinished {
                action,
                tool,
                success,
                error,
            } => {
                if let Some(i) = step {
                    self.compensation(i, *action, tool, *success, error.as_deref(), at);
                }
            }
            EventKind::RunFinished { success, .. } => {
                self.view.outcome = outcome(*success);
            }
            EventKind::RunStarted { .. }
            | EventKind::RunResumed { .. }
            | EventKind::Approval { .. }
            | EventKind::Effect { .. }
            | EventKind::Note { .. } => {}
        }
    }

    fn rollback(&mut self) -> &mut Rollback {
        self.view.rollback.get_or_insert_with(Rollback::default)
    }

    fn llm_call(&mut self, kind: &EventKind, step: Option<usize>, at: f64) {
        let EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            latency_ms,
            tool_calls,
            error,
        } = kind
        else {
            return;
        };
        let view = &mut self.view;
        view.llm_calls += 1;
        view.usage.input_tokens += usage.input_tokens;
        view.usage.output_tokens += usage.output_tokens;
        match cost_usd {
            Some(cost) => view.cost_usd += cost,
            None => view.cost_incomplete = true,
        }
        let price = cost_usd.map_or("price unknown".to_owned(), |c| format!("${c:.6}"));
        let mut title = format!(
            "LLM call · {model}\n{} in / {} out tokens · {price}\n{}",
            usage.input_tokens,
            usage.output_tokens,
            duration(*latency_ms),
        );
        if *tool_calls > 0 {
            title.push_str(&format!(" · asked for {tool_calls} tool call(s)"));
        }
        if let Some(error) = error {
            title.push_str(&format!("\nerror: {}", truncate(error, 400)));
        }
        view.bars.push(Bar {
            step,
            kind: BarKind::Llm {
                ok: error.is_none(),
            },
            start_ms: (at - latency_ms).max(0.0),
            end_ms: at,
            title,
        });
    }

    fn tool_call(&mut self, kind: &EventKind, step: Option<usize>, at: f64) {
        let EventKind::ToolCall {
            call_id,
            tool,
            output,
            error,
            attempts,
            duration_ms,
            purpose,
            ..
        } = kind
        else {
            return;
        };
        self.view.tool_calls += 1;
        // A compensating call is drawn as its compensation's bar.
        if *purpose == CallPurpose::Compensate {
            return;
        }
        let detail = match (error, output) {
            (Some(error), _) => format!("error: {}", truncate(error, 400)),
            (None, Some(output)) => format!("output: {}", truncate(&output.to_string(), 400)),
            (None, None) => String::new(),
        };
        self.view.bars.push(Bar {
            step,
            kind: BarKind::Tool {
                ok: error.is_none(),
            },
            start_ms: (at - duration_ms).max(0.0),
            end_ms: at,
            title: format!(
                "tool call · {tool} ({call_id})\n{} · {attempts} attempt(s)\n{detail}",
                duration(*duration_ms)
            ),
        });
    }

    fn compensation(
        &mut self,
        i: usize,
        action: usize,
        tool: &str,
        success: bool,
        error: Option<&str>,
        at: f64,
    ) {
        let id = self.view.steps[i].step.id.clone();
        let rollback = self.rollback();
        let open = rollback
            .actions
            .iter_mut()
            .rev()
            .find(|a| a.step == id && a.tool == tool && a.success.is_none());
        match open {
            Some(outcome) => {
                outcome.success = Some(success);
                outcome.error = error.map(str::to_owned);
            }
            // The end of a compensation whose start is not on record (a resumed run's).
            None => rollback.actions.push(CompensationOutcome {
                step: id.clone(),
                tool: tool.to_owned(),
                success: Some(success),
                error: error.map(str::to_owned),
            }),
        }
        let start = self.compensating.remove(&(i, action)).unwrap_or(at);
        let mut title = format!(
            "compensation of {id} · {tool}\n{}",
            if success {
                "undone"
            } else {
                "FAILED: the effect remains"
            }
        );
        if let Some(error) = error {
            title.push_str(&format!("\nerror: {}", truncate(error, 400)));
        }
        self.view.bars.push(Bar {
            step: Some(i),
            kind: BarKind::Compensation { ok: success },
            start_ms: start,
            end_ms: at,
            title,
        });
    }

    fn finish(mut self) -> RunView<'a> {
        let run = self.view.run;
        if self.view.outcome == RunOutcome::Unfinished {
            if let Some(success) = run.summary.success {
                self.view.outcome = outcome(success);
            }
        }
        if let Some(finished) = run.summary.finished_ms {
            self.last_ms = self
                .last_ms
                .max(finished.saturating_sub(self.origin_ms) as f64);
        }
        let view = &mut self.view;
        finish_statuses(&mut view.steps, view.rollback.as_ref(), view.outcome);
        // Compensations still open when the record ends: drawn up to the end, as not undone.
        for ((i, _), start) in self.compensating {
            view.bars.push(Bar {
                step: Some(i),
                kind: BarKind::Compensation { ok: false },
                start_ms: start,
                end_ms: self.last_ms,
                title: format!(
                    "compensation of {} · started, no end on record",
                    view.steps[i].step.id
                ),
            });
        }
        for (i, s) in view.steps.iter().enumerate() {
            let Some(start) = s.start_ms else { continue };
            view.bars.push(Bar {
                step: Some(i),
                kind: BarKind::Step(s.status),
                start_ms: start,
                // A step still running when the record ends runs to the end of the axis.
                end_ms: s.end_ms.unwrap_or(self.last_ms),
                title: s.title(),
            });
        }
        view.span_ms = view
            .bars
            .iter()
            .map(|b| b.end_ms)
            .fold(self.last_ms, f64::max);
        self.view
    }
}

/// When what `event` records began (ms since the epoch): its time, less its duration for the
/// kinds written at their end.
fn began_ms(event: &Event) -> u64 {
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

fn outcome(success: bool) -> RunOutcome {
    if success {
        RunOutcome::Succeeded
    } else {
        RunOutcome::Failed
    }
}

/// Applies the rollback and the end of the run to the statuses the step events left.
fn finish_statuses(steps: &mut [StepView<'_>], rollback: Option<&Rollback>, outcome: RunOutcome) {
    if let Some(rollback) = rollback {
        let not_undone = rollback.not_undone();
        for s in steps.iter_mut() {
            let compensated = rollback.actions.iter().any(|a| a.step == s.step.id);
            if compensated
                && s.status == StepStatus::Completed
                && !not_undone.contains(&s.step.id.as_str())
            {
                s.status = StepStatus::Compensated;
            }
        }
    }
    // A finished run never started the steps still pending: they were skipped.
    if outcome != RunOutcome::Unfinished {
        for s in steps.iter_mut() {
            if s.status == StepStatus::Pending {
                s.status = StepStatus::Skipped;
            }
        }
    }
}
