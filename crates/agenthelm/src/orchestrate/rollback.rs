//! Saga rollback: undoing the work of finished steps, newest first, with compensating tools.

use serde_json::Value;
use std::sync::Arc;

use super::orchestrator::Config;
use super::report::{CompensationFailure, RollbackReport};
use super::template::resolve_templates;
use crate::agent::{Effect, StepContext};
use crate::plan::{Plan, StepStatus};
use crate::tool::invoke::invoke;
use crate::tool::{RetryPolicy, Tool};
use crate::trace::{now_ms, CallPurpose, Event, EventKind, EventSink};

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
        let args = match &step.compensate_args {
            Some(args) => resolve_templates(args, &results, step.result.as_ref()),
            None => own_args(),
        };
        job.actions.push(action(comp, args));
    } else if !entry.effects.is_empty() {
        for effect in entry.effects.iter().rev() {
            match &effect.compensating_tool {
                Some(comp) => job.actions.push(action(comp, effect.args.clone())),
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
        job.actions.push(action(&comp, own_args()));
    }
    Some(job)
}

async fn compensate_all(
    jobs: Vec<Job>,
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
        for action in job.actions {
            let outcome = match &action.tool {
                Some(tool) => invoke(tool, action.args, &ctx, CallPurpose::Compensate)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(format!(
                    "compensating tool `{}` is not available",
                    action.name
                )),
            };
            ctx.emit(EventKind::Compensation {
                tool: action.name.clone(),
                success: outcome.is_ok(),
                error: outcome.as_ref().err().cloned(),
            });
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
