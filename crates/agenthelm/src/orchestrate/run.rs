//! One execution of a plan: the ready-queue scheduler, step dispatch and the final report.

use futures::FutureExt;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::cancel::CancelToken;
use super::orchestrator::Config;
use super::outcome::{RollbackReport, RunResult, StepOutcome};
use super::remote::{RemoteOutcome, RemoteRunner, StepWork};
use super::rollback::{self, Progress, Undo};
use crate::agent::{Agent, AgentResult, StepTask};
use crate::exec::invoke::invoke_recorded;
use crate::exec::StepContext;
use crate::exec::{ActionPermit, BudgetGuard, EventSink};
use crate::plan::graph::Graph;
use crate::plan::{references_in, try_resolve_templates, UnresolvedReference};
use crate::plan::{Plan, PlanStep, StepStatus};
use crate::store::StoreError;
use crate::tool::Tool;
use crate::tool::{check_args, panic_message};
use crate::trace::{now_ms, CallPurpose, CompensationState, Event, EventKind};
use crate::trace::{RunState, StopReason};

/// How a step is carried out.
enum Dispatch {
    /// Call this tool with the step's arguments; no model.
    Direct(Arc<dyn Tool>),
    /// Hand the step to the agent.
    Agent(Arc<dyn Agent>),
    /// Hand the step to another process (see [`RemoteRunner`]).
    Remote(Arc<dyn RemoteRunner>, Box<StepWork>),
    /// An argument refers to a result that is not there: the step fails with this message and
    /// nothing is called (a literal `{{...}}` must never reach a tool).
    Unresolved(String),
}

/// Why a run stopped where it was, without rollback and without recording its end: it can be
/// resumed.
pub(super) enum Halt {
    /// The journal could not be written.
    Store(StoreError),
    /// The run was suspended through its [`CancelToken`].
    Suspended,
    /// Steps wait for a person's decision on a tool call.
    Parked {
        /// The parked steps' ids.
        steps: Vec<String>,
    },
}

/// What a finished step task reports back to the scheduler.
struct Finished {
    index: usize,
    outcome: Result<Output, String>,
    /// The agent's result (usage, cost, events it returned), for agent steps.
    agent_result: Option<AgentResult>,
    duration_ms: f64,
}

/// A step's result, and the tool call whose output it is (a direct call).
struct Output {
    value: Value,
    call: Option<String>,
}

/// A step in flight: its context holds the effects it has had so far.
struct Running {
    ctx: Arc<StepContext>,
    started: Instant,
}

/// A run of a plan, fresh or resumed: the same path for both. Its state (the [`RunState`] its
/// sink applies every event to) says where it stands; the scheduler keeps only what it needs to
/// decide what runs next.
pub(super) struct Run {
    orch: Arc<Config>,
    /// The plan, with each step's status, result and error kept current for templates and the
    /// caller.
    plan: Plan,
    cancel: CancelToken,
    graph: Graph,
    run_id: Arc<str>,
    /// Records events and holds the run's state.
    sink: EventSink,
    /// `run_started`, or `run_resumed` with the decision about the interrupted steps.
    opening: Option<EventKind>,
    /// Shared copies of agent names, so events do not copy strings.
    agent_names: HashMap<String, Arc<str>>,
    /// Step positions by id, built on first use (only `{{steps.<id>.result}}` needs it).
    index: Option<HashMap<String, usize>>,
    waiting: Vec<usize>,
    ready: VecDeque<usize>,
    running: Vec<Option<Running>>,
    /// Why the run is stopping, once something went wrong (or it was cancelled).
    stop: Option<StopReason>,
    /// The journal could not be written: the run stopped where it was.
    halted: Option<StoreError>,
    /// The token asked to suspend: the run stops where it is after the grace period.
    suspended: bool,
    /// Steps parked until a person decides on one of their calls: no step starts while any
    /// is, and the run stops without ending once the running ones are done.
    parked: Vec<usize>,
    rollback: Option<RollbackReport>,
    /// The run's budget and what it spent, when it has one (known once the run has opened).
    budget: Option<Arc<BudgetGuard>>,
    /// Steps started by this run (a replay stops where the recorded run was stopped from
    /// outside, counted in started steps).
    launched: usize,
}

impl Run {
    /// A run of `plan` whose `sink` holds the run's state so far (a fresh [`RunState`] over the
    /// plan, or one replayed from its journal) and that begins by recording `opening`.
    pub(super) fn new(
        orch: Arc<Config>,
        run_id: Arc<str>,
        sink: EventSink,
        graph: Graph,
        cancel: CancelToken,
        plan: Plan,
        opening: EventKind,
    ) -> Self {
        let n = plan.steps.len();
        let agent_names = orch
            .registry
            .agents()
            .chain(orch.default_agent.as_ref())
            .map(|a| (a.name().to_owned(), Arc::from(a.name())))
            .collect();
        Run {
            sink,
            orch,
            cancel,
            graph,
            run_id,
            opening: Some(opening),
            agent_names,
            index: None,
            waiting: Vec::new(),
            ready: VecDeque::new(),
            running: (0..n).map(|_| None).collect(),
            plan,
            stop: None,
            halted: None,
            suspended: false,
            parked: Vec::new(),
            rollback: None,
            budget: None,
            launched: 0,
        }
    }

    /// Takes each step's status, result and error from the run's state and queues the steps
    /// that can start.
    fn prepare(&mut self) {
        let plan = &mut self.plan;
        self.stop = self
            .sink
            .state(|state| {
                for (i, (step, record)) in plan.steps.iter_mut().zip(state.steps()).enumerate() {
                    step.status = record.status;
                    step.result = state.result(i).cloned();
                    step.error.clone_from(&record.error);
                }
                state.stop_reason()
            })
            .flatten();
        let plan = &self.plan;
        let graph = &self.graph;
        self.waiting = (0..plan.steps.len())
            .map(|i| {
                graph
                    .deps(i)
                    .iter()
                    .filter(|&&d| plan.steps[d].status != StepStatus::Completed)
                    .count()
            })
            .collect();
        let waiting = &self.waiting;
        self.ready = (0..plan.steps.len())
            .filter(|&i| waiting[i] == 0 && plan.steps[i].status == StepStatus::Pending)
            .collect();
    }

    /// Runs the plan to its end (or until its journal fails, or it is suspended) and gives it
    /// back with the result.
    pub(super) async fn execute(mut self) -> (Plan, RunResult, Option<Halt>) {
        let started = Instant::now();
        if let Some(opening) = self.opening.take() {
            self.emit(opening);
        }
        self.halted = self.sink.flush().err();
        self.prepare();
        self.budget = self.sink.state(guard_of).flatten();
        let limit = self.orch.max_concurrency.unwrap_or(usize::MAX);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        // Set once, at the first failure: the grace period must not restart each time another
        // running step finishes.
        let mut grace_deadline = None;
        loop {
            if self.cancel.is_cancelled() {
                let reason = "the run was cancelled".to_owned();
                self.stop_with(EventKind::RunCancelled { reason });
            }
            self.note_budget();
            self.note_replayed_stop();
            self.suspended |= self.cancel.is_suspended();
            while self.stop.is_none()
                && !self.suspended
                && self.parked.is_empty()
                && self.halted.is_none()
                && tasks.len() < limit
            {
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                if let Some(task) = self.launch(i) {
                    tasks.spawn(task);
                    self.launched += 1;
                }
                self.note_replayed_stop();
            }
            if self.halted.is_some() {
                // Nothing more may happen untraced: stop where we are, as a crash would.
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
            let next = if self.stop.is_some() || self.suspended {
                let deadline = *grace_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.orch.grace);
                self.join_within_grace(&mut tasks, deadline).await
            } else {
                tokio::select! {
                    biased;
                    next = tasks.join_next() => next,
                    () = self.cancel.stop_requested() => continue,
                    () = over_budget(self.budget.as_deref()) => continue,
                }
            };
            match next {
                Some(Ok(finished)) => self.finish(finished),
                // Step tasks catch their own panics, so this is an abort: handled below.
                Some(Err(_)) => {}
                None => break,
            }
        }
        // A run whose every step completed before the grace period ended has nothing to resume.
        self.suspended &= !self.plan.success();
        // A failure (or cancellation) ends the run even with parked steps: they will not run.
        let parked_here = !self.parked.is_empty() && self.stop.is_none();
        // A suspended or parked run stays as a crash would leave it: steps aborted while
        // running (or parked) are run again on resume, and what failed is rolled back then.
        let stopped_here = self.halted.is_some() || self.suspended || parked_here;
        if !stopped_here {
            self.cancel_stragglers();
            self.fail_parked();
            self.skip_unstarted();
        }
        if self.stop.is_some() && self.orch.rollback && !stopped_here {
            let (mut undo, progress) = self.sink.state(saga_of).unwrap_or_default();
            with_real_args(&self.sink, &mut undo);
            let span = tracing::info_span!(
                "rollback",
                agenthelm.rollback.steps = crate::trace::span_count(undo.len())
            );
            tracing::warn!(parent: &span, steps = undo.len(), "rolling back completed work");
            let report = rollback::run(
                &self.orch,
                &mut self.plan,
                &self.run_id,
                &self.sink,
                undo,
                progress,
            )
            .instrument(span)
            .await;
            self.rollback = Some(report);
            self.halted = self.sink.journal_error();
        }
        self.report(started)
    }

    /// Waits for the next running step, but only until the grace period after the failure ends.
    async fn join_within_grace(
        &mut self,
        tasks: &mut JoinSet<Finished>,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Finished, tokio::task::JoinError>> {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(next) => next,
            Err(_) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                None
            }
        }
    }

    /// Starts step `i`: resolves its arguments, picks direct dispatch or its agent, and returns
    /// the future that runs it.
    /// `None` when the journal could not record the start: then the step must not run.
    fn launch(&mut self, i: usize) -> Option<impl Future<Output = Finished> + Send + 'static> {
        let orch = Arc::clone(&self.orch);
        let resolved = self.resolved_args(i);
        let step = &self.plan.steps[i];
        let agent = orch.agent_for(step).cloned();
        let (dispatch, direct_tool, args) = match resolved {
            Ok(args) => {
                let (dispatch, tool) = choose_dispatch(&orch, step, agent.as_ref(), &args);
                (dispatch, tool, args)
            }
            Err(e) => (Dispatch::Unresolved(e.to_string()), None, step.args.clone()),
        };
        let dispatch = replay_checked(&orch, step, agent.as_ref(), &args, dispatch, &direct_tool);
        let mut task = StepTask {
            id: step.id.clone(),
            description: step.description.clone(),
            tool_name: step.tool_name.clone(),
            inputs: self
                .graph
                .deps(i)
                .iter()
                .map(|&d| {
                    let dep = &self.plan.steps[d];
                    (dep.id.clone(), dep.result.clone().unwrap_or(Value::Null))
                })
                .collect(),
            args,
        };
        let dispatch = match (&orch.remote, dispatch) {
            (Some(runner), Dispatch::Direct(_) | Dispatch::Agent(_)) => {
                let work = StepWork {
                    run_id: self.run_id.to_string(),
                    step_id: std::mem::take(&mut task.id),
                    agent: agent.as_ref().map(|a| a.name().to_owned()),
                    direct_tool: direct_tool.clone(),
                    description: std::mem::take(&mut task.description),
                    tool_name: task.tool_name.take(),
                    args: task.args.take(),
                    inputs: std::mem::take(&mut task.inputs),
                };
                Dispatch::Remote(Arc::clone(runner), Box::new(work))
            }
            (_, dispatch) => dispatch,
        };
        let mut ctx = StepContext::new()
            .for_step(Arc::clone(&self.run_id), step.id.as_str())
            .with_approval(Arc::clone(&orch.approval))
            .with_retry(orch.retry)
            .with_sink(self.sink.clone())
            .with_text_observers(orch.text_observers.clone());
        if let Some(budget) = &self.budget {
            ctx = ctx.with_budget(Arc::clone(budget));
        }
        if let Some(source) = &orch.replay {
            ctx = ctx.with_replay(Arc::clone(source));
        }
        if let Some(name) = agent.as_ref().and_then(|a| self.agent_names.get(a.name())) {
            ctx = ctx.with_agent(Arc::clone(name));
        }
        let ctx = Arc::new(ctx);
        let span = step_span(&step.id, agent.as_deref(), direct_tool.as_deref());
        ctx.emit(EventKind::StepStarted {
            direct_tool: direct_tool.clone(),
        });
        let permit = match self.sink.before_action() {
            Ok(permit) => permit,
            Err(e) => {
                self.halted = Some(e.source);
                return None;
            }
        };
        self.plan.steps[i].status = StepStatus::Running;
        let started = Instant::now();
        self.running[i] = Some(Running {
            ctx: Arc::clone(&ctx),
            started,
        });
        Some(
            async move {
                let (outcome, agent_result) = run_step(dispatch, task, &ctx, permit).await;
                if outcome.is_err() {
                    // The kind of error is on the span of the call that failed; the step's
                    // error text may quote arguments or output.
                    tracing::warn!("step failed");
                }
                Finished {
                    index: i,
                    outcome,
                    agent_result,
                    duration_ms: started.elapsed().as_secs_f64() * 1e3,
                }
            }
            .instrument(span),
        )
    }

    /// Step `i`'s arguments with `{{steps.<id>.result}}` references filled in; an error names
    /// a reference that has nothing to fill in.
    fn resolved_args(&mut self, i: usize) -> Result<Value, UnresolvedReference> {
        let args = &self.plan.steps[i].args;
        if references_in(args).is_empty() {
            return Ok(args.clone());
        }
        let plan = &self.plan;
        let index = self.index.get_or_insert_with(|| {
            plan.steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.clone(), i))
                .collect()
        });
        let results = |id: &str| index.get(id).and_then(|&j| plan.steps[j].result.as_ref());
        try_resolve_templates(args, &results, None)
    }

    /// Records a finished step and, once the journal has it, releases the steps waiting on it.
    fn finish(&mut self, finished: Finished) {
        let i = finished.index;
        let Some(running) = self.running[i].take() else {
            return;
        };
        if let Some(result) = &finished.agent_result {
            for event in &result.events {
                self.record_agent_event(&running.ctx, event.clone());
            }
        }
        if running.ctx.is_parked() {
            // Not finished: it runs again once its call is decided.
            self.parked.push(i);
            return;
        }
        // Before the step's end: a step that failed because the budget refused its model call
        // failed because of the budget, which is why the run stops.
        self.note_budget();
        let (status, result, result_call, error) = match finished.outcome {
            Ok(Output { value, call }) => (StepStatus::Completed, Some(value), call, None),
            Err(error) => (StepStatus::Failed, None, None, Some(error)),
        };
        if let Some(source) = &self.orch.replay {
            source.check_finish(&self.plan.steps[i].id, status);
        }
        running.ctx.emit(EventKind::StepFinished {
            status,
            // The output of a direct call is on record already: name the call, not a copy.
            result: if result_call.is_none() {
                result.clone()
            } else {
                None
            },
            result_call,
            duration_ms: finished.duration_ms,
            error: error.clone(),
        });
        let step = &mut self.plan.steps[i];
        step.status = status;
        step.result = result;
        step.error = error;
        if let Some(e) = self.sink.journal_error() {
            self.halted = Some(e);
            return;
        }
        if status == StepStatus::Failed {
            let error = step.error.clone().unwrap_or_default();
            let step = step.id.clone();
            self.stop
                .get_or_insert(StopReason::StepFailed { step, error });
            return;
        }
        for &d in self.graph.dependents(i) {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                self.ready.push_back(d);
            }
        }
    }

    /// Steps still running when the grace period ended were aborted: they failed, and whatever
    /// they had already done is kept for rollback.
    fn cancel_stragglers(&mut self) {
        let cause = match &self.stop {
            Some(StopReason::StepFailed { step, .. }) => format!("step `{step}` failed"),
            Some(StopReason::Stopped { reason }) => reason.clone(),
            None => "the run was cancelled".to_owned(),
        };
        for i in 0..self.running.len() {
            let Some(running) = self.running[i].take() else {
                continue;
            };
            let error = format!(
                "cancelled: still running {:.1}s after {cause}",
                self.orch.grace.as_secs_f64()
            );
            let step = &mut self.plan.steps[i];
            step.status = StepStatus::Failed;
            step.error = Some(error.clone());
            let duration_ms = running.started.elapsed().as_secs_f64() * 1e3;
            running.ctx.emit(EventKind::StepFinished {
                status: StepStatus::Failed,
                result: None,
                result_call: None,
                duration_ms,
                error: Some(error),
            });
        }
    }

    /// Stops the run from outside its steps, unless it is stopping already: `event` (a
    /// `run_cancelled` or `budget_exceeded`) goes on record, and no step or model call starts
    /// after it.
    fn stop_with(&mut self, event: EventKind) {
        if self.stop.is_some() {
            return;
        }
        let reason = match &event {
            EventKind::RunCancelled { reason } => reason.clone(),
            EventKind::BudgetExceeded { message, .. } => message.clone(),
            _ => return,
        };
        self.emit(event);
        self.stop = Some(StopReason::Stopped { reason });
    }

    /// Stops the run when its budget is spent (the first time it is seen).
    fn note_budget(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let Some(Err(exceeded)) = self.budget.as_ref().map(|b| b.check()) else {
            return;
        };
        tracing::warn!(
            agenthelm.budget = %exceeded.kind,
            spent = exceeded.spent,
            limit = exceeded.limit,
            "budget exceeded: the run stops"
        );
        self.stop_with(EventKind::BudgetExceeded {
            budget: exceeded.kind,
            spent: exceeded.spent,
            limit: exceeded.limit,
            message: exceeded.message,
        });
    }

    /// In a replay, stops the run the way the recorded run was stopped from outside (a cancel,
    /// its time limit), once as many steps have started as had then.
    fn note_replayed_stop(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let Some((started, event)) = self.orch.replay.as_ref().and_then(|r| r.recorded_stop())
        else {
            return;
        };
        if self.launched >= started {
            let event = event.clone();
            self.stop_with(event);
        }
    }

    /// Steps parked when the run stopped for another reason: their calls will not be made.
    fn fail_parked(&mut self) {
        for i in std::mem::take(&mut self.parked) {
            let error = "not run: it waited for a person's approval when the run stopped";
            let step = &mut self.plan.steps[i];
            step.status = StepStatus::Failed;
            step.error = Some(error.to_owned());
            self.emit_for(
                i,
                EventKind::StepFinished {
                    status: StepStatus::Failed,
                    result: None,
                    result_call: None,
                    duration_ms: 0.0,
                    error: Some(error.to_owned()),
                },
            );
        }
    }

    fn skip_unstarted(&mut self) {
        for step in self.plan.steps.iter_mut() {
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Skipped;
            }
        }
    }

    fn report(mut self, started: Instant) -> (Plan, RunResult, Option<Halt>) {
        let success = self.stop.is_none() && self.halted.is_none() && self.plan.success();
        let parked = !self.parked.is_empty() && self.stop.is_none();
        if self.halted.is_none() {
            if !self.suspended && !parked {
                self.emit(EventKind::RunFinished {
                    success,
                    duration_ms: started.elapsed().as_secs_f64() * 1e3,
                });
            }
            self.halted = self.sink.flush().err();
        }
        let orch = &self.orch;
        let plan = &self.plan;
        let mut result = self
            .sink
            .state(|state| totals_of(orch, plan, state))
            .unwrap_or_default();
        result.success = success;
        result.run_id = Some(self.run_id.to_string());
        result.rollback = self.rollback.take();
        result.events = self.sink.take();
        if success {
            result.answer = Some(final_answer(&self.plan, &self.graph));
        } else if let Some(e) = &self.halted {
            result.error = Some(format!(
                "the run stopped because its journal could not be written ({e}); resume it once the store works"
            ));
        } else if self.suspended {
            result.error = Some("the run was suspended; resume it to go on".to_owned());
        } else if parked {
            result.error = Some(
                "steps wait for a person's approval of a tool call; resume the run once decided"
                    .to_owned(),
            );
        } else {
            result.error = Some(failure_text(self.stop.as_ref(), result.rollback.as_ref()));
        }
        if let Some(redactor) = &self.orch.redactor {
            result.redact(redactor);
        }
        let halt = match self.halted {
            Some(e) => Some(Halt::Store(e)),
            None if self.suspended => Some(Halt::Suspended),
            None if parked => Some(Halt::Parked {
                steps: self
                    .parked
                    .iter()
                    .map(|&i| self.plan.steps[i].id.clone())
                    .collect(),
            }),
            None => None,
        };
        (self.plan, result, halt)
    }

    /// An event an agent returned in its result: stamped with the run, step and agent when it
    /// lacks them.
    fn record_agent_event(&self, ctx: &StepContext, event: Event) {
        self.sink.emit(stamped(ctx, event));
    }

    fn emit(&self, kind: EventKind) {
        self.sink.emit(Event {
            timestamp_ms: now_ms(),
            run_id: Some(Arc::clone(&self.run_id)),
            step_id: None,
            agent: None,
            kind,
        });
    }

    /// An event of step `i`.
    fn emit_for(&self, i: usize, kind: EventKind) {
        self.sink.emit(Event {
            timestamp_ms: now_ms(),
            run_id: Some(Arc::clone(&self.run_id)),
            step_id: Some(Arc::from(self.plan.steps[i].id.as_str())),
            agent: None,
            kind,
        });
    }
}

/// The span of one step: `invoke_agent <agent>` for a step its agent carries out, `step <id>`
/// for a direct tool call (the tool call's own span is inside it).
fn step_span(step: &str, agent: Option<&dyn Agent>, tool: Option<&str>) -> tracing::Span {
    let agent = agent.map(Agent::name);
    let by_agent = agent.filter(|_| tool.is_none());
    // Written only when a subscriber wants the span: no text is built for nobody.
    let name = tracing::field::display(StepSpanName {
        step,
        agent: by_agent,
    });
    tracing::info_span!(
        "step",
        otel.name = name,
        gen_ai.operation.name = if by_agent.is_some() {
            "invoke_agent"
        } else {
            "step"
        },
        gen_ai.agent.name = agent,
        agenthelm.step_id = step,
        gen_ai.tool.name = tool,
    )
}

/// `invoke_agent <agent>` or `step <id>`.
struct StepSpanName<'a> {
    step: &'a str,
    agent: Option<&'a str>,
}

impl std::fmt::Display for StepSpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.agent {
            Some(agent) => write!(f, "invoke_agent {agent}"),
            None => write!(f, "step {}", self.step),
        }
    }
}

/// Direct dispatch when the step names a tool its agent (or the orchestrator) has and the
/// arguments fit it; otherwise the agent.
fn choose_dispatch(
    orch: &Config,
    step: &PlanStep,
    agent: Option<&Arc<dyn Agent>>,
    args: &Value,
) -> (Dispatch, Option<String>) {
    let tool = step
        .tool_name
        .as_deref()
        .and_then(|name| orch.find_tool(agent.map(|a| &**a), name));
    if let Some(tool) = tool {
        // Without an agent there is no one else to ask: calling the tool reports which
        // argument is wrong.
        if agent.is_none() || check_args(tool, args).is_ok() {
            let name = tool.spec().name.clone();
            return (Dispatch::Direct(Arc::clone(tool)), Some(name));
        }
    }
    match agent {
        Some(agent) => (Dispatch::Agent(Arc::clone(agent)), None),
        // Validation makes this unreachable; if reached, the step fails with a clear message.
        None => (Dispatch::Agent(Arc::new(NoAgent)), None),
    }
}

/// In a replay, a step carried out otherwise than in the recorded run (its tool directly, or
/// its agent) fails with the divergence instead of running.
fn replay_checked(
    orch: &Config,
    step: &PlanStep,
    agent: Option<&Arc<dyn Agent>>,
    args: &Value,
    dispatch: Dispatch,
    direct_tool: &Option<String>,
) -> Dispatch {
    let Some(source) = &orch.replay else {
        return dispatch;
    };
    // Why the tool the recorded run called directly no longer takes the arguments, if so.
    let rejects = |tool: &str| {
        let tool = orch.find_tool(agent.map(|a| &**a), tool)?;
        check_args(tool, args).err().map(|e| e.to_string())
    };
    match source.check_start(&step.id, direct_tool.as_deref(), rejects) {
        Ok(()) => dispatch,
        Err(divergence) => Dispatch::Unresolved(divergence),
    }
}

/// Carries out a started step (see [`run_step_uncaught`]); a panic in it fails the step,
/// not the process.
async fn run_step(
    dispatch: Dispatch,
    task: StepTask,
    ctx: &StepContext,
    permit: ActionPermit,
) -> (Result<Output, String>, Option<AgentResult>) {
    let work = AssertUnwindSafe(run_step_uncaught(dispatch, task, ctx, permit)).catch_unwind();
    work.await.unwrap_or_else(|panic| {
        let message = format!("step panicked: {}", panic_message(panic.as_ref()));
        (Err(message), None)
    })
}

/// An event an agent returned in its result, stamped with the run, step and agent of `ctx`
/// where it lacks them.
fn stamped(ctx: &StepContext, mut event: Event) -> Event {
    if event.run_id.is_none() {
        event.run_id = ctx.run_id().map(Arc::from);
    }
    if event.step_id.is_none() {
        event.step_id = ctx.step_id().map(Arc::from);
    }
    if event.agent.is_none() {
        event.agent = ctx.agent().map(Arc::from);
    }
    event
}

/// Carries out a started step; the permit proves its start is on record.
async fn run_step_uncaught(
    dispatch: Dispatch,
    task: StepTask,
    ctx: &StepContext,
    _permit: ActionPermit,
) -> (Result<Output, String>, Option<AgentResult>) {
    match dispatch {
        Dispatch::Direct(tool) => {
            // Boxed so the (rarely small) tool-call state does not bloat every step's task.
            let call = Box::pin(invoke_recorded(&tool, task.args, ctx, CallPurpose::Execute));
            let outcome = call.await.map(|(value, call)| Output {
                value,
                call: Some(call),
            });
            (outcome.map_err(|e| e.to_string()), None)
        }
        Dispatch::Agent(agent) => {
            let result = agent.run_step(&task, ctx).await;
            let outcome = if result.success {
                let value = result.answer.clone().map_or(Value::Null, Value::String);
                Ok(Output { value, call: None })
            } else {
                Err(result.error.clone().unwrap_or_else(|| {
                    format!(
                        "agent `{}` reported failure without an error message",
                        agent.name()
                    )
                }))
            };
            (outcome, Some(result))
        }
        Dispatch::Remote(runner, work) => {
            let outcome = match runner.run_step(*work, ctx).await {
                RemoteOutcome::Completed { value, call } => Ok(Output { value, call }),
                RemoteOutcome::Failed { error } => Err(error),
                RemoteOutcome::Parked => {
                    ctx.park();
                    Err("waits for a person's decision".to_owned())
                }
            };
            (outcome, None)
        }
        Dispatch::Unresolved(message) => (Err(message), None),
    }
}

/// Carries out `work` sent by a coordinator in this process, the way a local run would: its
/// tool directly, or its agent (an unknown one fails the step). `Err` when `ctx`'s journal
/// failed: then what happened is not all on record, and no outcome may be reported.
pub(super) async fn run_step_here(
    orch: &Config,
    work: &StepWork,
    ctx: &StepContext,
) -> Result<RemoteOutcome, StoreError> {
    let agent = match &work.agent {
        Some(name) => orch.registry.get(name).or(orch
            .default_agent
            .as_ref()
            .filter(|a| a.name() == name.as_str())),
        None => None,
    };
    let dispatch = match (&work.direct_tool, agent) {
        (Some(tool), _) => match orch.find_tool(agent.map(|a| &**a), tool) {
            Some(tool) => Dispatch::Direct(Arc::clone(tool)),
            None => Dispatch::Unresolved(format!("this worker has no tool `{tool}`")),
        },
        (None, Some(agent)) => Dispatch::Agent(Arc::clone(agent)),
        (None, None) => Dispatch::Unresolved(format!(
            "this worker has no agent `{}`",
            work.agent.as_deref().unwrap_or("(none)")
        )),
    };
    let permit = ctx.sink().before_action().map_err(|e| e.source)?;
    let (outcome, agent_result) = run_step(dispatch, work.task(), ctx, permit).await;
    for event in agent_result.into_iter().flat_map(|r| r.events) {
        ctx.sink().emit(stamped(ctx, event));
    }
    ctx.sink().flush()?;
    Ok(if ctx.is_parked() {
        RemoteOutcome::Parked
    } else {
        match outcome {
            Ok(Output { value, call }) => RemoteOutcome::Completed { value, call },
            Err(error) => RemoteOutcome::Failed { error },
        }
    })
}

/// The output of the steps nothing depends on: one step's result as it is, several as
/// `[id] result` paragraphs in plan order.
fn final_answer(plan: &Plan, graph: &Graph) -> String {
    let text = |s: &PlanStep| match &s.result {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let finals: Vec<&PlanStep> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|&(i, _)| graph.dependents(i).is_empty())
        .map(|(_, s)| s)
        .collect();
    match finals.as_slice() {
        [only] => text(only),
        many => many
            .iter()
            .map(|s| format!("[{}] {}", s.id, text(s)))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// The guard of the run's budget, from its state: the limits it started with and what it has
/// spent (tokens, cost and calls, and running time) so far.
fn guard_of(state: &RunState) -> Option<Arc<BudgetGuard>> {
    let budget = state.budget()?;
    let guard = BudgetGuard::new(*budget, *state.usage(), state.running_time());
    Some(Arc::new(guard))
}

/// Resolves once the budget is spent; never without one.
async fn over_budget(budget: Option<&BudgetGuard>) {
    match budget {
        Some(budget) => budget.tripped().await,
        None => std::future::pending().await,
    }
}

/// What rollback has to undo and what a run before a restart already undid, from the state.
fn saga_of(state: &RunState) -> (Vec<Undo>, Progress) {
    let undo = state
        .undo_log()
        .map(|(step, record)| Undo {
            step,
            effects: record.effects.clone(),
        })
        .collect();
    let mut progress = Progress::default();
    for entry in state.rollback().map_or(&[][..], |r| &r.ledger) {
        let key = (entry.step, entry.action);
        match entry.state {
            CompensationState::Started => {
                progress.uncertain.insert(key);
            }
            CompensationState::Done => {
                progress.done.insert(key, true);
            }
            CompensationState::Failed(_) => {
                progress.done.insert(key, false);
            }
        }
    }
    (undo, progress)
}

/// Effects this process recorded have their real arguments back (the state holds them
/// redacted), so a rollback in the same process undoes them with the values they were done
/// with. A resumed run has only the journal's.
fn with_real_args(sink: &EventSink, undo: &mut [Undo]) {
    if sink.redactor().is_none() {
        return;
    }
    for effect in undo.iter_mut().flat_map(|u| u.effects.iter_mut()) {
        if let Some(args) = sink.real_effect_args(&effect.call_id) {
            effect.args = args;
        }
    }
}

/// The run's usage and per-step outcomes, from its state.
fn totals_of(orch: &Config, plan: &Plan, state: &RunState) -> RunResult {
    let usage = state.usage();
    let steps = plan
        .steps
        .iter()
        .zip(state.steps())
        .map(|(step, record)| StepOutcome {
            id: step.id.clone(),
            status: record.status,
            agent: record
                .agent
                .as_deref()
                .map(str::to_owned)
                .or_else(|| orch.agent_for(step).map(|a| a.name().to_owned())),
            direct_tool: record.direct_tool.clone(),
            duration_ms: record.duration_ms.unwrap_or(0.0),
            error: record.error.clone(),
        })
        .collect();
    RunResult {
        token_usage: usage.tokens,
        total_cost_usd: usage.cost_usd,
        unpriced_calls: usage.unpriced_calls,
        iterations: usage.calls,
        steps,
        ..RunResult::default()
    }
}

fn failure_text(stop: Option<&StopReason>, rollback: Option<&RollbackReport>) -> String {
    let mut text = match stop {
        Some(stop) => stop.to_string(),
        None => "the plan did not complete".to_owned(),
    };
    if let Some(report) = rollback {
        text.push_str(&format!(
            "; rolled back {} step(s)",
            report.compensated.len()
        ));
        if !report.failed.is_empty() {
            let left: Vec<String> = report
                .failed
                .iter()
                .map(|f| format!("`{}` ({})", f.step, f.tool))
                .collect();
            text.push_str(&format!("; could NOT undo: {}", left.join(", ")));
        }
    }
    text
}

/// A new run id: `run-<ms since the epoch, hex>-<random, hex>`, ordered by time.
pub fn new_run_id() -> String {
    format!("run-{:x}-{:08x}", now_ms(), fastrand::u32(..))
}

/// Stands in for a missing agent so that an impossible case fails one step, not the process.
struct NoAgent;

#[async_trait::async_trait]
impl Agent for NoAgent {
    fn name(&self) -> &str {
        "(none)"
    }

    async fn run(&self, _task: &str) -> AgentResult {
        AgentResult::fail("the step has no agent and no tool that can run it")
    }
}
