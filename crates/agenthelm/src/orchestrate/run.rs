//! One execution of a plan: the ready-queue scheduler, step dispatch and the final report.

use futures::FutureExt;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

use super::cancel::CancelToken;
use super::orchestrator::Config;
use super::report::{RollbackReport, StepOutcome};
use super::rollback::{self, Undo};
use super::template::resolve_templates;
use crate::agent::{Agent, AgentResult, StepContext, StepTask};
use crate::plan::graph::Graph;
use crate::plan::{Plan, PlanStep, StepStatus};
use crate::tool::invoke::{check_args, invoke, panic_message};
use crate::tool::Tool;
use crate::trace::{now_ms, CallPurpose, Event, EventKind, EventSink};

/// How a step is carried out.
enum Dispatch {
    /// Call this tool with the step's arguments; no model.
    Direct(Arc<dyn Tool>),
    /// Hand the step to the agent.
    Agent(Arc<dyn Agent>),
}

/// What a finished step task reports back to the scheduler.
struct Finished {
    index: usize,
    outcome: Result<Value, String>,
    /// The agent's result (usage, cost, events it returned), for agent steps.
    agent_result: Option<AgentResult>,
    duration_ms: f64,
}

/// A step in flight: its context holds the effects it has had so far.
struct Running {
    ctx: Arc<StepContext>,
    started: Instant,
}

/// What the report needs to know about a step beyond the plan's own state.
#[derive(Default)]
struct StepRecord {
    direct_tool: Option<String>,
    duration_ms: f64,
}

pub(super) struct Run {
    orch: Arc<Config>,
    plan: Plan,
    cancel: CancelToken,
    graph: Graph,
    run_id: Arc<str>,
    sink: EventSink,
    /// Shared copies of agent names, so events do not copy strings.
    agent_names: HashMap<String, Arc<str>>,
    /// Step positions by id, built on first use (only `{{steps.<id>.result}}` needs it).
    index: Option<HashMap<String, usize>>,
    waiting: Vec<usize>,
    ready: VecDeque<usize>,
    running: Vec<Option<Running>>,
    records: Vec<StepRecord>,
    /// Steps with work to undo, in the order they finished.
    undo_log: Vec<Undo>,
    totals: AgentResult,
    /// The first failure: the step (`None` when the run was cancelled) and its error.
    failure: Option<(Option<String>, String)>,
}

impl Run {
    pub(super) fn new(
        orch: Arc<Config>,
        mut plan: Plan,
        graph: Graph,
        cancel: CancelToken,
    ) -> Self {
        let n = plan.steps.len();
        for step in plan.steps.iter_mut() {
            if step.status != StepStatus::Completed {
                step.status = StepStatus::Pending;
                step.result = None;
                step.error = None;
            }
        }
        let waiting: Vec<usize> = (0..n)
            .map(|i| {
                let deps = graph.deps(i);
                deps.iter()
                    .filter(|&&d| plan.steps[d].status != StepStatus::Completed)
                    .count()
            })
            .collect();
        let ready = (0..n)
            .filter(|&i| waiting[i] == 0 && plan.steps[i].status == StepStatus::Pending)
            .collect();
        let agent_names = orch
            .registry
            .agents()
            .chain(orch.default_agent.as_ref())
            .map(|a| (a.name().to_owned(), Arc::from(a.name())))
            .collect();
        Run {
            sink: EventSink::with_observers(orch.observers.clone()),
            orch,
            cancel,
            graph,
            run_id: Arc::from(new_run_id()),
            agent_names,
            index: None,
            waiting,
            ready,
            running: (0..n).map(|_| None).collect(),
            records: (0..n).map(|_| StepRecord::default()).collect(),
            plan,
            undo_log: Vec::new(),
            totals: AgentResult::default(),
            failure: None,
        }
    }

    /// Runs the plan to its end and gives it back with the result.
    pub(super) async fn execute(mut self) -> (Plan, AgentResult) {
        let started = Instant::now();
        self.emit(EventKind::RunStarted {
            goal: self.plan.goal.clone(),
            steps: self.plan.steps.len(),
        });
        let limit = self.orch.max_concurrency.unwrap_or(usize::MAX);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        loop {
            if self.failure.is_none() && self.cancel.is_cancelled() {
                self.failure = Some((None, "the run was cancelled".to_owned()));
            }
            while self.failure.is_none() && tasks.len() < limit {
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                let task = self.launch(i);
                tasks.spawn(task);
            }
            let next = if self.failure.is_some() {
                self.join_within_grace(&mut tasks).await
            } else {
                tokio::select! {
                    biased;
                    next = tasks.join_next() => next,
                    () = self.cancel.cancelled() => continue,
                }
            };
            match next {
                Some(Ok(finished)) => self.finish(finished),
                // Step tasks catch their own panics, so this is an abort: handled below.
                Some(Err(_)) => {}
                None => break,
            }
        }
        self.cancel_stragglers();
        self.skip_unstarted();
        if self.failure.is_some() && self.orch.rollback {
            let undo = std::mem::take(&mut self.undo_log);
            let report =
                rollback::run(&self.orch, &mut self.plan, &self.run_id, &self.sink, undo).await;
            self.totals.rollback = Some(report);
        }
        self.report(started)
    }

    /// Waits for the next running step, but only until the grace period after the failure ends.
    async fn join_within_grace(
        &mut self,
        tasks: &mut JoinSet<Finished>,
    ) -> Option<Result<Finished, tokio::task::JoinError>> {
        let deadline = tokio::time::Instant::now() + self.orch.grace;
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
    fn launch(&mut self, i: usize) -> impl Future<Output = Finished> + Send + 'static {
        let orch = Arc::clone(&self.orch);
        let args = self.resolved_args(i);
        let step = &self.plan.steps[i];
        let agent = orch.agent_for(step).cloned();
        let (dispatch, direct_tool) = choose_dispatch(&orch, step, agent.as_ref(), &args);
        let task = StepTask {
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
        let mut ctx = StepContext::new()
            .for_step(Arc::clone(&self.run_id), step.id.as_str())
            .with_approval(Arc::clone(&orch.approval))
            .with_retry(orch.retry)
            .with_sink(self.sink.clone());
        if let Some(name) = agent.as_ref().and_then(|a| self.agent_names.get(a.name())) {
            ctx = ctx.with_agent(Arc::clone(name));
        }
        let ctx = Arc::new(ctx);
        ctx.emit(EventKind::StepStarted {
            direct_tool: direct_tool.clone(),
        });
        self.plan.steps[i].status = StepStatus::Running;
        self.records[i].direct_tool = direct_tool;
        let started = Instant::now();
        self.running[i] = Some(Running {
            ctx: Arc::clone(&ctx),
            started,
        });
        async move {
            let work = AssertUnwindSafe(run_step(dispatch, task, &ctx)).catch_unwind();
            let (outcome, agent_result) = work.await.unwrap_or_else(|panic| {
                let message = format!("step panicked: {}", panic_message(panic.as_ref()));
                (Err(message), None)
            });
            Finished {
                index: i,
                outcome,
                agent_result,
                duration_ms: started.elapsed().as_secs_f64() * 1e3,
            }
        }
    }

    /// Step `i`'s arguments with `{{steps.<id>.result}}` references filled in.
    fn resolved_args(&mut self, i: usize) -> Value {
        let args = &self.plan.steps[i].args;
        if !mentions_template(args) {
            return args.clone();
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
        resolve_templates(args, &results, None)
    }

    /// Records a finished step and releases the steps waiting on it.
    fn finish(&mut self, finished: Finished) {
        let i = finished.index;
        let Some(running) = self.running[i].take() else {
            return;
        };
        let effects = running.ctx.take_effects();
        if let Some(result) = &finished.agent_result {
            self.totals.add_usage(result);
            for event in &result.events {
                self.record_agent_event(&running.ctx, event.clone());
            }
        }
        let step = &mut self.plan.steps[i];
        match finished.outcome {
            Ok(value) => {
                step.status = StepStatus::Completed;
                step.result = Some(value);
                self.undo_log.push(Undo { step: i, effects });
                for &d in self.graph.dependents(i) {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 {
                        self.ready.push_back(d);
                    }
                }
            }
            Err(error) => {
                step.status = StepStatus::Failed;
                step.error = Some(error.clone());
                if !effects.is_empty() {
                    self.undo_log.push(Undo { step: i, effects });
                }
                if self.failure.is_none() {
                    self.failure = Some((Some(step.id.clone()), error));
                }
            }
        }
        self.records[i].duration_ms = finished.duration_ms;
        running.ctx.emit(EventKind::StepFinished {
            status: step.status,
            duration_ms: finished.duration_ms,
            error: step.error.clone(),
        });
    }

    /// Steps still running when the grace period ended were aborted: they failed, and whatever
    /// they had already done is kept for rollback.
    fn cancel_stragglers(&mut self) {
        let cause = match &self.failure {
            Some((Some(step), _)) => format!("step `{step}` failed"),
            _ => "the run was cancelled".to_owned(),
        };
        for i in 0..self.running.len() {
            let Some(running) = self.running[i].take() else {
                continue;
            };
            let error = format!(
                "cancelled: still running {:.1}s after {cause}",
                self.orch.grace.as_secs_f64()
            );
            let effects = running.ctx.take_effects();
            if !effects.is_empty() {
                self.undo_log.push(Undo { step: i, effects });
            }
            let step = &mut self.plan.steps[i];
            step.status = StepStatus::Failed;
            step.error = Some(error.clone());
            let duration_ms = running.started.elapsed().as_secs_f64() * 1e3;
            self.records[i].duration_ms = duration_ms;
            running.ctx.emit(EventKind::StepFinished {
                status: StepStatus::Failed,
                duration_ms,
                error: Some(error),
            });
        }
    }

    fn skip_unstarted(&mut self) {
        for step in self.plan.steps.iter_mut() {
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Skipped;
            }
        }
    }

    fn report(self, started: Instant) -> (Plan, AgentResult) {
        let success = self.failure.is_none() && self.plan.success();
        self.emit(EventKind::RunFinished {
            success,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        });
        let orch = &self.orch;
        let mut result = self.totals;
        result.success = success;
        result.run_id = Some(self.run_id.to_string());
        result.steps = self
            .plan
            .steps
            .iter()
            .zip(self.records)
            .map(|(step, record)| StepOutcome {
                id: step.id.clone(),
                status: step.status,
                agent: orch.agent_for(step).map(|a| a.name().to_owned()),
                direct_tool: record.direct_tool,
                duration_ms: record.duration_ms,
                error: step.error.clone(),
            })
            .collect();
        result.events = self.sink.take();
        if success {
            result.answer = Some(final_answer(&self.plan, &self.graph));
        } else {
            result.error = Some(failure_text(
                self.failure.as_ref(),
                result.rollback.as_ref(),
            ));
        }
        (self.plan, result)
    }

    /// An event an agent returned in its result: stamped with the run, step and agent when it
    /// lacks them.
    fn record_agent_event(&self, ctx: &StepContext, mut event: Event) {
        event.run_id.get_or_insert_with(|| Arc::clone(&self.run_id));
        if event.step_id.is_none() {
            event.step_id = ctx.step_id().map(Arc::from);
        }
        if event.agent.is_none() {
            event.agent = ctx.agent().map(Arc::from);
        }
        self.sink.emit(event);
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

async fn run_step(
    dispatch: Dispatch,
    task: StepTask,
    ctx: &StepContext,
) -> (Result<Value, String>, Option<AgentResult>) {
    match dispatch {
        Dispatch::Direct(tool) => {
            // Boxed so the (rarely small) tool-call state does not bloat every step's task.
            let call = Box::pin(invoke(&tool, task.args, ctx, CallPurpose::Execute));
            (call.await.map_err(|e| e.to_string()), None)
        }
        Dispatch::Agent(agent) => {
            let result = agent.run_step(&task, ctx).await;
            let outcome = if result.success {
                Ok(result.answer.clone().map_or(Value::Null, Value::String))
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
    }
}

/// Whether any string in `value` may hold a `{{...}}` reference.
fn mentions_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::Array(items) => items.iter().any(mentions_template),
        Value::Object(map) => map.values().any(mentions_template),
        _ => false,
    }
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

fn failure_text(
    failure: Option<&(Option<String>, String)>,
    rollback: Option<&RollbackReport>,
) -> String {
    let mut text = match failure {
        Some((Some(step), error)) => format!("step `{step}` failed: {error}"),
        Some((None, error)) => error.clone(),
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

fn new_run_id() -> String {
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
