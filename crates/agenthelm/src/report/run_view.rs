//! What the page shows, derived from a stored run: each step's final status, the bars of the
//! timeline, totals and the rollback outcome.
//!
//! The stored plan is the plan as it was when the run began, so step statuses come from the
//! events: `step_started`, `step_finished` and the compensations of the rollback.

use std::collections::HashMap;

use crate::lm::TokenUsage;
use crate::plan::{PlanStep, StepStatus};
use crate::store::StoredRun;
use crate::trace::{CallPurpose, EventKind};

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
        let origin_ms = run
            .events
            .iter()
            .map(|e| e.timestamp_ms)
            .min()
            .map_or(run.summary.started_ms, |t| t.min(run.summary.started_ms));
        let rel = |t: u64| t.saturating_sub(origin_ms) as f64;
        let index: HashMap<&str, usize> = run
            .plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut steps: Vec<StepView<'a>> = run
            .plan
            .steps
            .iter()
            .map(|step| StepView {
                step,
                status: step.status,
                agent: step.agent_name.clone(),
                start_ms: None,
                end_ms: None,
                duration_ms: None,
                error: step.error.clone(),
            })
            .collect();
        let mut view = RunView {
            run,
            steps: Vec::new(),
            bars: Vec::new(),
            outcome: RunOutcome::Unfinished,
            span_ms: 0.0,
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            cost_incomplete: false,
            llm_calls: 0,
            tool_calls: 0,
            rollback: None,
        };
        // Compensation start times by (step, action), to give each compensation its bar.
        let mut compensating: HashMap<(usize, usize), f64> = HashMap::new();
        let mut last_ms = 0.0_f64;
        for event in &run.events {
            let at = rel(event.timestamp_ms);
            last_ms = last_ms.max(at);
            let step = event
                .step_id
                .as_deref()
                .and_then(|id| index.get(id).copied());
            if let (Some(i), Some(agent)) = (step, event.agent.as_deref()) {
                steps[i].agent = Some(agent.to_owned());
            }
            match &event.kind {
                EventKind::StepStarted { .. } => {
                    if let Some(i) = step {
                        steps[i].status = StepStatus::Running;
                        steps[i].start_ms = Some(at);
                        steps[i].end_ms = None;
                        steps[i].error = None;
                    }
                }
                EventKind::StepFinished {
                    status,
                    duration_ms,
                    error,
                    ..
                } => {
                    if let Some(i) = step {
                        let s = &mut steps[i];
                        s.status = *status;
                        let start = s.start_ms.unwrap_or((at - duration_ms).max(0.0));
                        s.start_ms = Some(start);
                        s.end_ms = Some(at.max(start + duration_ms));
                        s.duration_ms = Some(*duration_ms);
                        s.error = error.clone();
                    }
                }
                EventKind::LlmCall {
                    model,
                    usage,
                    cost_usd,
                    latency_ms,
                    tool_calls,
                    error,
                } => {
                    view.llm_calls += 1;
                    view.usage.input_tokens += usage.input_tokens;
                    view.usage.output_tokens += usage.output_tokens;
                    match cost_usd {
                        Some(cost) => view.cost_usd += cost,
                        None => view.cost_incomplete = true,
                    }
                    let mut title = format!(
                        "LLM call · {model}\n{} in / {} out tokens · {}\n{}",
                        usage.input_tokens,
                        usage.output_tokens,
                        cost_usd.map_or("price unknown".to_owned(), |c| format!("${c:.6}")),
                        super::time_format::duration(*latency_ms),
                    );
                    if *tool_calls > 0 {
                        title.push_str(&format!(" · asked for {tool_calls} tool call(s)"));
                    }
                    if let Some(error) = error {
                        title.push_str(&format!("\nerror: {error}"));
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
                EventKind::ToolCall {
                    call_id,
                    tool,
                    output,
                    error,
                    attempts,
                    duration_ms,
                    purpose,
                    ..
                } => {
                    view.tool_calls += 1;
                    // A compensating call is drawn as its compensation's bar.
                    if *purpose == CallPurpose::Compensate {
                        continue;
                    }
                    let detail = match (error, output) {
                        (Some(error), _) => {
                            format!("error: {}", super::escape::truncate(error, 400))
                        }
                        (None, Some(output)) => {
                            format!(
                                "output: {}",
                                super::escape::truncate(&output.to_string(), 400)
                            )
                        }
                        (None, None) => String::new(),
                    };
                    view.bars.push(Bar {
                        step,
                        kind: BarKind::Tool {
                            ok: error.is_none(),
                        },
                        start_ms: (at - duration_ms).max(0.0),
                        end_ms: at,
                        title: format!(
                            "tool call · {tool} ({call_id})\n{} · {attempts} attempt(s)\n{detail}",
                            super::time_format::duration(*duration_ms)
                        ),
                    });
                }
                EventKind::RollbackStarted { steps: order } => {
                    view.rollback.get_or_insert_with(Rollback::default).order = order.clone();
                }
                EventKind::CompensationStarted { action, tool, .. } => {
                    if let Some(i) = step {
                        compensating.insert((i, *action), at);
                        view.rollback
                            .get_or_insert_with(Rollback::default)
                            .actions
                            .push(CompensationOutcome {
                                step: steps[i].step.id.clone(),
                                tool: tool.clone(),
                                success: None,
                                error: None,
                            });
                    }
                }
                EventKind::Compensation {
                    action,
                    tool,
                    success,
                    error,
                } => {
                    let Some(i) = step else { continue };
                    let rollback = view.rollback.get_or_insert_with(Rollback::default);
                    let id = &steps[i].step.id;
                    match rollback
                        .actions
                        .iter_mut()
                        .rev()
                        .find(|a| &a.step == id && &a.tool == tool && a.success.is_none())
                    {
                        Some(outcome) => {
                            outcome.success = Some(*success);
                            outcome.error = error.clone();
                        }
                        None => rollback.actions.push(CompensationOutcome {
                            step: id.clone(),
                            tool: tool.clone(),
                            success: Some(*success),
                            error: error.clone(),
                        }),
                    }
                    let start = compensating.remove(&(i, *action)).unwrap_or(at);
                    let mut title = format!(
                        "compensation of {id} · {tool}\n{}",
                        if *success {
                            "undone"
                        } else {
                            "FAILED: effect remains"
                        }
                    );
                    if let Some(error) = error {
                        title.push_str(&format!("\nerror: {error}"));
                    }
                    view.bars.push(Bar {
                        step: Some(i),
                        kind: BarKind::Compensation { ok: *success },
                        start_ms: start,
                        end_ms: at,
                        title,
                    });
                }
                EventKind::RunFinished { success, .. } => {
                    view.outcome = if *success {
                        RunOutcome::Succeeded
                    } else {
                        RunOutcome::Failed
                    };
                }
                EventKind::RunStarted { .. }
                | EventKind::RunResumed { .. }
                | EventKind::Approval { .. }
                | EventKind::Effect { .. }
                | EventKind::Note { .. } => {}
            }
        }
        if view.outcome == RunOutcome::Unfinished {
            if let Some(success) = run.summary.success {
                view.outcome = if success {
                    RunOutcome::Succeeded
                } else {
                    RunOutcome::Failed
                };
            }
        }
        if let Some(finished) = run.summary.finished_ms {
            last_ms = last_ms.max(rel(finished));
        }
        finish_statuses(&mut steps, view.rollback.as_ref(), view.outcome);
        // Compensations still open when the record ends: drawn up to the end, marked unfinished.
        for ((i, _), start) in compensating {
            view.bars.push(Bar {
                step: Some(i),
                kind: BarKind::Compensation { ok: false },
                start_ms: start,
                end_ms: last_ms,
                title: format!(
                    "compensation of {} · started, no end on record",
                    steps[i].step.id
                ),
            });
        }
        for s in &steps {
            let (Some(start), status) = (s.start_ms, s.status) else {
                continue;
            };
            let end = s.end_ms.unwrap_or(last_ms);
            last_ms = last_ms.max(end);
            let mut title = format!(
                "step {} · {}\nagent: {}",
                s.step.id,
                status,
                s.agent.as_deref().unwrap_or("default")
            );
            if let Some(d) = s.duration_ms {
                title.push_str(&format!("\n{}", super::time_format::duration(d)));
            }
            if !s.step.description.is_empty() {
                title.push_str(&format!(
                    "\n{}",
                    super::escape::truncate(&s.step.description, 300)
                ));
            }
            if let Some(error) = &s.error {
                title.push_str(&format!("\nerror: {}", super::escape::truncate(error, 400)));
            }
            view.bars.push(Bar {
                step: index.get(s.step.id.as_str()).copied(),
                kind: BarKind::Step(status),
                start_ms: start,
                end_ms: end,
                title,
            });
        }
        for bar in &view.bars {
            last_ms = last_ms.max(bar.end_ms);
        }
        view.span_ms = last_ms;
        view.steps = steps;
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
