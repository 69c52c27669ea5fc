//! One execution of a plan: the ready-queue scheduler, step dispatch and the final report.

use futures::FutureExt;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

use super::orchestrator::Orchestrator;
use super::report::StepOutcome;
use super::rollback::{self, Undo};
use super::template::resolve_templates;
use crate::agent::{Agent, AgentResult, StepContext, StepTask};
use crate::plan::{Plan, StepStatus};
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

struct Running {
    ctx: Arc<StepContext>,
    started: Instant,
}

pub(super) struct Run<'a> {
    orch: &'a Orchestrator,
    plan: &'a mut Plan,
    run_id: String,
    sink: EventSink,
    index: HashMap<String, usize>,
    dependents: Vec<Vec<usize>>,
    waiting: Vec<usize>,
    ready: VecDeque<usize>,
    running: HashMap<usize, Running>,
    /// Steps with work to undo, in the order they finished.
    undo_log: Vec<Undo>,
    outcomes: Vec<StepOutcome>,
    totals: AgentResult,
    failure: Option<(String, String)>,
}

impl<'a> Run<'a> {
    pub(super) fn new(orch: &'a Orchestrator, plan: &'a mut Plan) -> Self {
        let n = plan.steps.len();
        let index: HashMap<String, usize> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let mut dependents = vec![Vec::new(); n];
        let mut waiting = vec![0; n];
        for step in plan.steps.iter_mut() {
            if step.status != StepStatus::Completed {
                step.status = StepStatus::Pending;
                step.result = None;
                step.error = None;
            }
        }
        for (i, step) in plan.steps.iter().enumerate() {
            for dep in &step.depends_on {
                let d = index[dep.as_str()];
                dependents[d].push(i);
                if plan.steps[d].status != StepStatus::Completed {
                    waiting[i] += 1;
                }
            }
        }
        let ready = (0..n)
            .filter(|&i| waiting[i] == 0 && plan.steps[i].status == StepStatus::Pending)
            .collect();
        let outcomes = plan
            .steps
            .iter()
            .map(|s| StepOutcome {
                id: s.id.clone(),
                status: s.status,
                agent: orch.agent_for(s).map(|a| a.name().to_owned()),
                direct_tool: None,
                duration_ms: 0.0,
                error: None,
            })
            .collect();
        Run {
            orch,
            run_id: new_run_id(),
            sink: EventSink::with_observers(orch.observers.clone()),
            plan,
            index,
            dependents,
            waiting,
            ready,
            running: HashMap::new(),
            undo_log: Vec::new(),
            outcomes,
            totals: AgentResult::default(),
            failure: None,
        }
    }

    pub(super) async fn execute(mut self) -> AgentResult {
        let started = Instant::now();
        self.emit(
            None,
            None,
            EventKind::RunStarted {
                goal: self.plan.goal.clone(),
                steps: self.plan.steps.len(),
            },
        );
        let limit = self.orch.max_concurrency.unwrap_or(usize::MAX);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        // Set once, at the first failure: the grace period must not restart each time another
        // running step finishes.
        let mut grace_deadline = None;
        loop {
            while self.failure.is_none() && tasks.len() < limit {
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                let task = self.launch(i);
                tasks.spawn(task);
            }
            let next = if self.failure.is_some() {
                let deadline = *grace_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.orch.grace);
                self.join_within_grace(&mut tasks, deadline).await
            } else {
                tasks.join_next().await
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
            self.totals.rollback =
                Some(rollback::run(self.orch, self.plan, &self.run_id, &self.sink, undo).await);
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
    fn launch(&mut self, i: usize) -> impl std::future::Future<Output = Finished> + Send + 'static {
        let orch = self.orch;
        let step = &self.plan.steps[i];
        let agent = orch.agent_for(step).cloned();
        let results = |id: &str| {
            self.index
                .get(id)
                .and_then(|&j| self.plan.steps[j].result.as_ref())
        };
        let args = resolve_templates(&step.args, &results, None);
        let direct = step.tool_name.as_deref().and_then(|name| {
            let tool = orch.find_tool(agent.as_deref(), name)?;
            check_args(tool, &args).is_ok().then(|| Arc::clone(tool))
        });
        let direct_tool = direct.as_ref().map(|t| t.spec().name.clone());
        let dispatch = match (direct, agent.clone()) {
            (Some(tool), _) => Dispatch::Direct(tool),
            (None, Some(agent)) => Dispatch::Agent(agent),
            // Validation guarantees an agent or an orchestrator tool; with arguments that do not
            // fit that tool, calling it reports exactly which field is wrong.
            (None, None) => match step.tool_name.as_deref().and_then(|t| orch.tools.get(t)) {
                Some(tool) => Dispatch::Direct(Arc::clone(tool)),
                None => Dispatch::Agent(Arc::new(NoAgent)),
            },
        };
        let task = StepTask {
            id: step.id.clone(),
            description: step.description.clone(),
            tool_name: step.tool_name.clone(),
            inputs: step
                .depends_on
                .iter()
                .map(|d| (d.clone(), results(d).cloned().unwrap_or(Value::Null)))
                .collect(),
            args,
        };
        let agent_name = agent.as_ref().map(|a| a.name().to_owned());
        let mut ctx = StepContext::new()
            .for_step(self.run_id.clone(), step.id.clone())
            .with_approval(Arc::clone(&orch.approval))
            .with_retry(orch.retry)
            .with_sink(self.sink.clone());
        if let Some(name) = &agent_name {
            ctx = ctx.with_agent(name.clone());
        }
        let ctx = Arc::new(ctx);
        self.plan.steps[i].status = StepStatus::Running;
        self.outcomes[i].direct_tool = direct_tool.clone();
        ctx.emit(EventKind::StepStarted { direct_tool });
        let started = Instant::now();
        self.running.insert(
            i,
            Running {
                ctx: Arc::clone(&ctx),
                started,
            },
        );
        async move {
            let work = AssertUnwindSafe(run_step(dispatch, task, &ctx)).catch_unwind();
            let (outcome, agent_result) = work.await.unwrap_or_else(|panic| {
                (
                    Err(format!("step panicked: {}", panic_message(panic.as_ref()))),
                    None,
                )
            });
            Finished {
                index: i,
                outcome,
                agent_result,
                duration_ms: started.elapsed().as_secs_f64() * 1e3,
            }
        }
    }

    /// Records a finished step and releases the steps waiting on it.
    fn finish(&mut self, finished: Finished) {
        let i = finished.index;
        let effects = self
            .running
            .remove(&i)
            .map(|r| r.ctx.take_effects())
            .unwrap_or_default();
        if let Some(result) = &finished.agent_result {
            self.totals.add_usage(result);
            for event in &result.events {
                self.record_agent_event(i, event.clone());
            }
        }
        let step_id = self.plan.steps[i].id.clone();
        match finished.outcome {
            Ok(value) => {
                let step = &mut self.plan.steps[i];
                step.status = StepStatus::Completed;
                step.result = Some(value);
                self.undo_log.push(Undo { step: i, effects });
                for k in 0..self.dependents[i].len() {
                    let d = self.dependents[i][k];
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 {
                        self.ready.push_back(d);
                    }
                }
            }
            Err(error) => {
                let step = &mut self.plan.steps[i];
                step.status = StepStatus::Failed;
                step.error = Some(error.clone());
                if !effects.is_empty() {
                    self.undo_log.push(Undo { step: i, effects });
                }
                if self.failure.is_none() {
                    self.failure = Some((step_id.clone(), error));
                }
            }
        }
        let step = &self.plan.steps[i];
        let outcome = &mut self.outcomes[i];
        outcome.status = step.status;
        outcome.duration_ms = finished.duration_ms;
        outcome.error = step.error.clone();
        let (status, error) = (step.status, step.error.clone());
        self.emit_for(
            i,
            EventKind::StepFinished {
                status,
                duration_ms: finished.duration_ms,
                error,
            },
        );
    }

    /// Steps still running when the grace period ended were aborted: they failed, and whatever
    /// they had already done is kept for rollback.
    fn cancel_stragglers(&mut self) {
        let cause = self
            .failure
            .as_ref()
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        let mut stragglers: Vec<usize> = self.running.keys().copied().collect();
        stragglers.sort_unstable();
        for i in stragglers {
            let Some(running) = self.running.remove(&i) else {
                continue;
            };
            let error = format!(
                "cancelled: still running {:.1}s after step `{cause}` failed",
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
            let outcome = &mut self.outcomes[i];
            outcome.status = StepStatus::Failed;
            outcome.duration_ms = duration_ms;
            outcome.error = Some(error.clone());
            self.emit_for(
                i,
                EventKind::StepFinished {
                    status: StepStatus::Failed,
                    duration_ms,
                    error: Some(error),
                },
            );
        }
    }

    fn skip_unstarted(&mut self) {
        for (i, step) in self.plan.steps.iter_mut().enumerate() {
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Skipped;
                self.outcomes[i].status = StepStatus::Skipped;
            }
        }
    }

    fn report(mut self, started: Instant) -> AgentResult {
        for (outcome, step) in self.outcomes.iter_mut().zip(&self.plan.steps) {
            outcome.status = step.status;
        }
        let success = self.failure.is_none() && self.plan.success();
        self.emit(
            None,
            None,
            EventKind::RunFinished {
                success,
                duration_ms: started.elapsed().as_secs_f64() * 1e3,
            },
        );
        let mut result = self.totals;
        result.success = success;
        result.run_id = Some(self.run_id);
        result.steps = self.outcomes;
        result.events = self.sink.take();
        if success {
            result.answer = Some(final_answer(self.plan));
        } else {
            result.error = Some(failure_text(
                self.failure.as_ref(),
                result.rollback.as_ref(),
            ));
        }
        result
    }

    /// An event an agent returned in its result: stamped with the run and step when it lacks them.
    fn record_agent_event(&self, i: usize, mut event: Event) {
        event.run_id.get_or_insert_with(|| self.run_id.clone());
        event
            .step_id
            .get_or_insert_with(|| self.plan.steps[i].id.clone());
        if event.agent.is_none() {
            event.agent = self.outcomes[i].agent.clone();
        }
        self.sink.emit(event);
    }

    fn emit_for(&self, i: usize, kind: EventKind) {
        self.emit(Some(i), self.outcomes[i].agent.clone(), kind);
    }

    fn emit(&self, step: Option<usize>, agent: Option<String>, kind: EventKind) {
        self.sink.emit(Event {
            timestamp_ms: now_ms(),
            run_id: Some(self.run_id.clone()),
            step_id: step.map(|i| self.plan.steps[i].id.clone()),
            agent,
            kind,
        });
    }
}

async fn run_step(
    dispatch: Dispatch,
    task: StepTask,
    ctx: &StepContext,
) -> (Result<Value, String>, Option<AgentResult>) {
    match dispatch {
        Dispatch::Direct(tool) => {
            let outcome = invoke(&tool, task.args, ctx, CallPurpose::Execute).await;
            (outcome.map_err(|e| e.to_string()), None)
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

/// The output of the steps nothing depends on: one step's result as it is, several as
/// `[id] result` paragraphs in plan order.
fn final_answer(plan: &Plan) -> String {
    let mut has_dependents = vec![false; plan.steps.len()];
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    for step in &plan.steps {
        for dep in &step.depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                has_dependents[d] = true;
            }
        }
    }
    let finals: Vec<&crate::plan::PlanStep> = plan
        .steps
        .iter()
        .zip(&has_dependents)
        .filter(|(_, &has)| !has)
        .map(|(s, _)| s)
        .collect();
    let text = |s: &crate::plan::PlanStep| match &s.result {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
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
    failure: Option<&(String, String)>,
    rollback: Option<&super::RollbackReport>,
) -> String {
    let mut text = match failure {
        Some((step, error)) => format!("step `{step}` failed: {error}"),
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

/// Stands in for a missing agent; validation makes this unreachable, and if it is reached the
/// step fails with a clear message instead of the process panicking.
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
