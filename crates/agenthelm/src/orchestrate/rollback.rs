//! Saga rollback: undoing the work of finished steps with compensating tools, newest first one
//! at a time ([`RollbackMode::Sequential`]) or independent steps at the same time
//! ([`RollbackMode::Parallel`]); either way a step only after the steps that depend on it.

use futures::FutureExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::orchestrator::Config;
use super::outcome::{CompensationFailure, RollbackReport};
use super::remote::{RemoteRunner, UndoWork};
use crate::approval::ApprovalHandler;
use crate::exec::invoke::admit_as;
use crate::exec::StepContext;
use crate::exec::{EventSink, ReplaySource};
use crate::plan::graph::Graph;
use crate::plan::{try_resolve_templates, UnresolvedReference};
use crate::plan::{Plan, RollbackMode, StepStatus};
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

impl Action {
    /// Whether its tool declares that a repeat with the same key does nothing more.
    fn idempotent(&self) -> bool {
        self.tool
            .as_ref()
            .is_some_and(|tool| tool.spec().contract.idempotent)
    }
}

/// Undoes the steps of `undo` (newest last) in the plan's rollback mode (else the orchestrator's)
/// and marks the undone ones `compensated`.
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
    let mode = plan.rollback.unwrap_or(orch.rollback_mode);
    let (order, limit) = match mode {
        RollbackMode::Sequential => (Order::chain(jobs.len()), 1),
        RollbackMode::Parallel => (
            Order::by_dependencies(plan, &jobs),
            orch.max_concurrency.unwrap_or(usize::MAX),
        ),
    };
    let shared = Arc::new(Shared {
        progress,
        run_id: Arc::clone(run_id),
        approval: Arc::clone(&orch.approval),
        retry: orch.retry,
        sink: sink.clone(),
        replay: orch.replay.clone(),
        remote: orch.remote.clone(),
    });
    let shielded = tokio::spawn(compensate_all(jobs, order, limit, shared).in_current_span());
    let finished = match shielded.await {
        Ok(finished) => finished,
        Err(e) => {
            report.failed.push(abnormal_end(&e));
            return report;
        }
    };
    // A job the journal stopped half-way is neither undone nor failed: a resumed run finishes it.
    for done in finished.into_iter().filter(|done| !done.halted) {
        if done.failures.is_empty() {
            plan.steps[done.step].status = StepStatus::Compensated;
            report.compensated.push(done.step_id);
        } else {
            report.failed.extend(done.failures);
        }
    }
    report
}

fn abnormal_end(error: &tokio::task::JoinError) -> CompensationFailure {
    CompensationFailure {
        step: "(rollback)".into(),
        tool: "(rollback)".into(),
        error: format!("rollback task ended abnormally: {error}"),
    }
}

/// Which jobs must wait for which: `waiting[j]` jobs have to finish before job `j` starts, and
/// `next[j]` are the jobs that wait for `j`.
struct Order {
    waiting: Vec<usize>,
    next: Vec<Vec<usize>>,
}

impl Order {
    /// Each job after the one before it: the order of the list.
    fn chain(jobs: usize) -> Order {
        Order {
            waiting: (0..jobs).map(|j| usize::from(j > 0)).collect(),
            next: (0..jobs)
                .map(|j| {
                    if j + 1 < jobs {
                        vec![j + 1]
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        }
    }

    /// A step's jobs after every job of the steps that depend on it, directly or through steps
    /// with nothing to undo; jobs of one step in list order.
    fn by_dependencies(plan: &Plan, jobs: &[Job]) -> Order {
        let index: HashMap<&str, usize> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let graph = Graph::build(plan, &index);
        let mut of_step: HashMap<usize, Vec<usize>> = HashMap::new();
        for (j, job) in jobs.iter().enumerate() {
            of_step.entry(job.step).or_default().push(j);
        }
        let mut order = Order {
            waiting: vec![0; jobs.len()],
            next: vec![Vec::new(); jobs.len()],
        };
        for (&step, own) in &of_step {
            for pair in own.windows(2) {
                order.edge(pair[0], pair[1]);
            }
            for dependent in nearest_undone_dependents(&graph, step, &of_step) {
                if let Some(&last) = of_step[&dependent].last() {
                    order.edge(last, own[0]);
                }
            }
        }
        order
    }

    fn edge(&mut self, first: usize, then: usize) {
        self.next[first].push(then);
        self.waiting[then] += 1;
    }
}

/// The steps with jobs that depend on `step`, found through steps without jobs, not beyond
/// (a step further down waits for them already).
fn nearest_undone_dependents(
    graph: &Graph,
    step: usize,
    of_step: &HashMap<usize, Vec<usize>>,
) -> Vec<usize> {
    let mut seen = vec![false; graph.len()];
    let mut stack = vec![step];
    let mut found = Vec::new();
    while let Some(at) = stack.pop() {
        for &d in graph.dependents(at) {
            if std::mem::replace(&mut seen[d], true) {
                continue;
            }
            if of_step.contains_key(&d) {
                found.push(d);
            } else {
                stack.push(d);
            }
        }
    }
    found
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
    let own_args = || try_resolve_templates(&step.args, &results, step.result.as_ref());
    // The step's `compensate_args` when given, else its own arguments.
    let step_args = || match &step.compensate_args {
        Some(args) => try_resolve_templates(args, &results, step.result.as_ref()),
        None => own_args(),
    };
    let mut job = Job {
        step: entry.step,
        step_id: step.id.clone(),
        agent: agent.map(|a| a.name().to_owned()),
        actions: Vec::new(),
        failures: Vec::new(),
    };
    // Arguments that cannot be filled in make the compensation impossible: it is reported as
    // not undone, never called with a literal `{{...}}`.
    let push = |job: &mut Job, name: &str, args: Result<Value, UnresolvedReference>| match args {
        Ok(args) => job.actions.push(Action {
            name: name.to_owned(),
            tool: find(name),
            args,
        }),
        Err(e) => job.failures.push(CompensationFailure {
            step: step.id.clone(),
            tool: name.to_owned(),
            error: e.to_string(),
        }),
    };
    if let Some(comp) = &step.compensate_tool {
        push(&mut job, comp, step_args());
    } else if !entry.effects.is_empty() {
        for effect in entry.effects.iter().rev() {
            // The step's `compensate_args` are written for undoing the step's own tool.
            let own_tool = step.tool_name.as_deref() == Some(effect.tool.as_str());
            let args = match &step.compensate_args {
                Some(_) if own_tool => step_args(),
                _ => Ok(effect.args.clone()),
            };
            match &effect.compensating_tool {
                Some(comp) => push(&mut job, comp, args),
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
        push(&mut job, &comp, step_args());
    }
    Some(job)
}

/// What the compensations need besides the jobs, shared by the tasks that run them.
struct Shared {
    progress: Progress,
    run_id: Arc<str>,
    approval: Arc<dyn ApprovalHandler>,
    retry: RetryPolicy,
    sink: EventSink,
    /// The recorded run, when this is a replay: compensations are taken from it too.
    replay: Option<Arc<ReplaySource>>,
    /// Where compensations run when not here.
    remote: Option<Arc<dyn RemoteRunner>>,
}

/// How one step's job ended.
struct JobDone {
    step: usize,
    step_id: String,
    failures: Vec<CompensationFailure>,
    /// The journal failed: the job stopped before its next compensation.
    halted: bool,
}

/// Runs the jobs in `order`, at most `limit` at a time, each on a task of its own; returns them
/// in the order they ended. After a journal failure no further job starts.
async fn compensate_all(
    jobs: Vec<Job>,
    mut order: Order,
    limit: usize,
    shared: Arc<Shared>,
) -> Vec<JobDone> {
    let mut ready: VecDeque<usize> = (0..jobs.len()).filter(|&j| order.waiting[j] == 0).collect();
    let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    let mut tasks = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (usize, usize, String)> = HashMap::new();
    let mut finished = Vec::with_capacity(slots.len());
    let mut halted = false;
    loop {
        while !halted && tasks.len() < limit {
            let Some((j, job)) = ready.pop_front().and_then(|j| Some((j, slots[j].take()?))) else {
                break;
            };
            let key = (j, job.step, job.step_id.clone());
            let handle = tasks.spawn(compensate_job(job, Arc::clone(&shared)).in_current_span());
            running.insert(handle.id(), key);
        }
        let Some(joined) = tasks.join_next_with_id().await else {
            break;
        };
        let (id, done) = match joined {
            Ok((id, done)) => (id, Some(done)),
            Err(e) => (e.id(), None),
        };
        let Some((j, step, step_id)) = running.remove(&id) else {
            continue;
        };
        // Contained panics never get here; this is a task that ended some other way.
        let done = done.unwrap_or_else(|| JobDone {
            failures: vec![CompensationFailure {
                step: step_id.clone(),
                tool: "(rollback)".into(),
                error: "the compensation task ended abnormally".into(),
            }],
            step,
            step_id,
            halted: false,
        });
        halted |= done.halted;
        finished.push(done);
        for &n in &order.next[j] {
            order.waiting[n] -= 1;
            if order.waiting[n] == 0 {
                ready.push_back(n);
            }
        }
    }
    finished
}

/// Runs one step's compensating actions in their order, skipping those a resumed run finds
/// done and reporting (not repeating) those in doubt.
async fn compensate_job(job: Job, shared: Arc<Shared>) -> JobDone {
    let mut ctx = StepContext::new()
        .for_step(Arc::clone(&shared.run_id), job.step_id.as_str())
        .with_approval(Arc::clone(&shared.approval))
        .with_retry(shared.retry)
        .with_sink(shared.sink.clone());
    if let Some(source) = &shared.replay {
        ctx = ctx.with_replay(Arc::clone(source));
    }
    if let Some(agent) = &job.agent {
        ctx = ctx.with_agent(agent.as_str());
    }
    let mut done = JobDone {
        step: job.step,
        step_id: job.step_id,
        failures: job.failures,
        halted: false,
    };
    for (n, action) in job.actions.into_iter().enumerate() {
        let outcome = match shared.progress.done.get(&(job.step, n)) {
            Some(true) => continue,
            Some(false) => Err("it failed before the run was resumed".to_owned()),
            // In doubt: a tool that declares repeats harmless runs again, with the same key.
            // Remote work is not in doubt here: the runner knows its outcome (or whether the
            // worker that began it died, and then decides the same way).
            None if shared.remote.is_none()
                && shared.progress.uncertain.contains(&(job.step, n))
                && !action.idempotent() =>
            {
                Err(IN_DOUBT.to_owned())
            }
            None => match compensate(&ctx, n, &action, shared.remote.as_ref()).await {
                Some(outcome) => outcome,
                None => {
                    done.halted = true;
                    return done;
                }
            },
        };
        if let Err(error) = outcome {
            done.failures.push(CompensationFailure {
                step: done.step_id.clone(),
                tool: action.name,
                error,
            });
        }
    }
    done
}

/// Why a compensation that was started by a process that stopped is not run again.
pub(super) const IN_DOUBT: &str =
    "it was running when the process stopped; it is not run again (a \
     compensation never runs twice): check by hand whether it took effect, or declare the tool \
     `idempotent`";

/// Runs compensating action `n` (here, or through the remote runner) and records how it ended.
/// `None` when the journal failed: what is not on record must not happen, so the rollback stops
/// here as a crash would.
async fn compensate(
    ctx: &StepContext,
    n: usize,
    action: &Action,
    remote: Option<&Arc<dyn RemoteRunner>>,
) -> Option<Result<(), String>> {
    let outcome = match remote {
        Some(runner) => {
            let work = UndoWork {
                run_id: ctx.run_id().unwrap_or_default().to_owned(),
                step_id: ctx.step_id().unwrap_or_default().to_owned(),
                agent: ctx.agent().map(str::to_owned),
                action: n,
                tool: action.name.clone(),
                args: action.args.clone(),
            };
            runner.undo(work, ctx).await?
        }
        None => undo_here(ctx, n, action.tool.as_ref(), &action.name, &action.args).await?,
    };
    if ctx.sink().journal_error().is_some() {
        return None;
    }
    ctx.emit(EventKind::CompensationFinished {
        action: n,
        tool: action.name.clone(),
        success: outcome.is_ok(),
        error: outcome.as_ref().err().cloned(),
    });
    Some(outcome)
}

/// Calls compensating action `n` in this process: admission (approval may wait for a person),
/// then `CompensationStarted`, the gate and the call. `None` when the journal failed.
pub(super) async fn undo_here(
    ctx: &StepContext,
    n: usize,
    tool: Option<&Arc<dyn Tool>>,
    name: &str,
    args: &Value,
) -> Option<Result<(), String>> {
    let outcome = match tool {
        Some(tool) => {
            // The same id (and so the same idempotency key) in every attempt of the run.
            let call_id = format!("{}#undo{}", ctx.step_id().unwrap_or("step"), n + 1);
            match contained(admit_as(
                tool,
                args.clone(),
                ctx,
                CallPurpose::Compensate,
                call_id,
            ))
            .await
            {
                Ok(admitted) => {
                    ctx.emit(EventKind::CompensationStarted {
                        action: n,
                        tool: admitted.tool_name().to_owned(),
                        args: admitted.args().clone(),
                    });
                    match ctx.sink().before_action() {
                        Ok(permit) => contained(admitted.call(ctx, permit)).await.map(drop),
                        Err(e) => {
                            admitted.not_called(ctx, &e);
                            return None;
                        }
                    }
                }
                Err(e) => Err(e),
            }
        }
        None => Err(ToolError::Failed(format!(
            "compensating tool `{name}` is not available"
        ))),
    };
    if ctx.sink().journal_error().is_some() {
        return None;
    }
    Some(outcome.map_err(|e| e.to_string()))
}

/// Tool panics are caught inside the call; this also contains a panicking approval handler, so
/// one bad compensation cannot end the rollback of the others.
async fn contained<T>(work: impl Future<Output = Result<T, ToolError>>) -> Result<T, ToolError> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(ToolError::Failed(format!(
                "compensation panicked: {}",
                panic_message(panic.as_ref())
            )))
        })
}
