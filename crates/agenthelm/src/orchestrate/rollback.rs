//! Saga rollback: undoing the work of finished steps, newest first, with compensating tools.

use futures::FutureExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::orchestrator::Config;
use super::outcome::{CompensationFailure, RollbackReport};
use crate::exec::invoke::invoke;
use crate::exec::EventSink;
use crate::exec::StepContext;
use crate::plan::resolve_templates;
use crate::plan::{Plan, StepStatus};
use crate::tool::panic_message;
use crate::tool::{RetryPolicy, Tool, ToolError};
use crate::trace::Effect;
use crate::trace::{now_ms, CallPurpose, Event, EventKind};

/// Compensations a resumed run finds already done (with their success) or in doubt.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub done: HashMap<(usize, usize), bool>,
    pub uncertain: HashSet<(usize, usize)>,
}

/// A step with work that may need undoing, and the tool calls that did that work.
pub(super) struct Undo {
    pub step: usize,
    pub effects: Vec<Effect>,
}

/// The compensations of one step, ready to run.
struct Job {
    step: usize,
    step_id: String,
    agent: Option<String>,
    actions: Vec<Action>,
    /// Effects known up front to be impossible to undo.
    failures: Vec<CompensationFailure>,
}

struct Action {
    name: String,
    tool: Option<Arc<dyn Tool>>,
    args: Value,
}

/// Undoes the steps of `undo` in reverse order and marks the undone ones `compensated`.
///
/// The compensations run in a task of their own, so cancelling the caller (Ctrl-C, a dropped
/// future) does not stop a rollback half-way.
pub(super) async fn run(
    orch: &Config,
    plan: &mut Plan,
    run_id: &Arc<str>,
    sink: &EventSink,
    undo: Vec<Undo>,
    progress: Progress,
) -> RollbackReport {
    let mut report = RollbackReport::default();
    let jobs: Vec<Job> = undo
        .into_iter()
        .rev()
        .filter_map(|entry| plan_job(orch, plan, entry))
        .collect();
    let mut has_job = vec![false; plan.steps.len()];
    for job in &jobs {
        has_job[job.step] = true;
    }
    for (step, has_job) in plan.steps.iter().zip(has_job) {
        if step.status == StepStatus::Completed && !has_job {
            report.nothing_to_undo.push(step.id.clone());
        }
    }
    sink.emit(Event {
        timestamp_ms: now_ms(),
        run_id: Some(Arc::clone(run_id)),
        step_id: None,
        agent: None,
        kind: EventKind::RollbackStarted {
            steps: jobs.iter().map(|j| j.step_id.clone()).collect(),
        },
    });
    let shielded = tokio::spawn(compensate_all(
        jobs,
        progress,
        Arc::clone(run_id),
        Arc::clone(&orch.approval),
        orch.retry,
        sink.clone(),
    ));
    let finished = match shielded.await {
        Ok(finished) => finished,
        Err(e) => {
            report.failed.push(CompensationFailure {
                step: "(rollback)".into(),
                tool: "(rollback)".into(),
                error: format!("rollback task ended abnormally: {e}"),
            });
            return report;
        }
    };
    for (step, step_id, failures) in finished {
        if failures.is_empty() {
            plan.steps[step].status = StepStatus::Compensated;
            report.compensated.push(step_id);
        } else {
            report.failed.extend(failures);
        }
    }
    report
}

/// Decides how to undo one step: the step's own `compensate_tool` first; otherwise each recorded
/// effect's compensating tool, newest first; otherwise the compensating tool of the step's tool.
fn plan_job(orch: &Config, plan: &Plan, entry: Undo) -> Option<Job> {
    let step = &plan.steps[entry.step];
    let agent = orch.agent_for(step);
    let find = |name: &str| orch.find_tool(agent.map(|a| &**a), name).cloned();
    let results = |id: &str| {
        plan.steps
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.result.as_ref())
    };
    let own_args = || resolve_templates(&step.args, &results, step.result.as_ref());
    // The step's `compensate_args` when given, else its own arguments.
    let step_args = || match &step.compensate_args {
        Some(args) => resolve_templates(args, &results, step.result.as_ref()),
        None => own_args(),
    };
    let mut job = Job {
        step: entry.step,
        step_id: step.id.clone(),
        agent: agent.map(|a| a.name().to_owned()),
        actions: Vec::new(),
        failures: Vec::new(),
    };
    let action = |name: &str, args: Value| Action {
        name: name.to_owned(),
        tool: find(name),
        args,
    };
    if let Some(comp) = &step.compensate_tool {
        job.actions.push(action(comp, step_args()));
    } else if !entry.effects.is_empty() {
        for effect in entry.effects.iter().rev() {
            // The step's `compensate_args` are written for undoing the step's own tool.
            let own_tool = step.tool_name.as_deref() == Some(effect.tool.as_str());
            let args = match &step.compensate_args {
                Some(_) if own_tool => step_args(),
                _ => effect.args.clone(),
            };
            match &effect.compensating_tool {
                Some(comp) => job.actions.push(action(comp, args)),
                None => job.failures.push(CompensationFailure {
                    step: step.id.clone(),
                    tool: effect.tool.clone(),
                    error: format!(
                        "tool `{}` changed something and has no compensating tool",
                        effect.tool
                    ),
                }),
            }
        }
    } else {
        let comp = step
            .tool_name
            .as_deref()
            .and_then(&find)
            .and_then(|tool| tool.spec().contract.compensating_tool.clone())?;
        job.actions.push(action(&comp, step_args()));
    }
    Some(job)
}

async fn compensate_all(
    jobs: Vec<Job>,
    progress: Progress,
    run_id: Arc<str>,
    approval: Arc<dyn super::ApprovalHandler>,
    retry: RetryPolicy,
    sink: EventSink,
) -> Vec<(usize, String, Vec<CompensationFailure>)> {
    let mut finished = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut ctx = StepContext::new()
            .for_step(Arc::clone(&run_id), job.step_id.as_str())
            .with_approval(Arc::clone(&approval))
            .with_retry(retry)
            .with_sink(sink.clone());
        if let Some(agent) = &job.agent {
            ctx = ctx.with_agent(agent.as_str());
        }
        let mut failures = job.failures;
        for (n, action) in job.actions.into_iter().enumerate() {
            let outcome = match progress.done.get(&(job.step, n)) {
                Some(true) => continue,
                Some(false) => Err("it failed before the run was resumed".to_owned()),
                None if progress.uncertain.contains(&(job.step, n)) => Err(
                    "it was running when the process stopped; it is not run again (a \
                     compensation never runs twice): check by hand whether it took effect"
                        .to_owned(),
                ),
                None => {
                    // On record once approved, right before the tool is called (not before
                    // the approval, which may wait for a person).
                    let started = EventKind::CompensationStarted {
                        action: n,
                        tool: action.name.clone(),
                        args: action.args.clone(),
                    };
                    let outcome = match &action.tool {
                        // Tool panics are caught inside `invoke`; this also contains a panicking
                        // approval handler, so one bad call cannot end the rollback of the others.
                        Some(tool) => AssertUnwindSafe(invoke(
                            tool,
                            action.args,
                            &ctx,
                            CallPurpose::Compensate,
                            Some(started),
                        ))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(ToolError::Failed(format!(
                                "compensation panicked: {}",
                                panic_message(panic.as_ref())
                            )))
                        })
                        .map_err(|e| e.to_string()),
                        None => Err(format!(
                            "compensating tool `{}` is not available",
                            action.name
                        )),
                    };
                    if sink.journal_error().is_some() {
                        // What was not on record was not done: stop here as a crash would.
                        finished.push((job.step, job.step_id, failures));
                        return finished;
                    }
                    ctx.emit(EventKind::CompensationFinished {
                        action: n,
                        tool: action.name.clone(),
                        success: outcome.is_ok(),
                        error: outcome.as_ref().err().cloned(),
                    });
                    outcome
                }
            };
            if let Err(error) = outcome {
                failures.push(CompensationFailure {
                    step: job.step_id.clone(),
                    tool: action.name,
                    error,
                });
            }
        }
        finished.push((job.step, job.step_id, failures));
    }
    finished
}
