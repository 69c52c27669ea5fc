use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use super::cancel::CancelToken;
use super::remote::{RemoteOutcome, RemoteRunner, RemoteRuns, StepWork, UndoWork};
use super::replay::{self, ReplayReport};
use super::resume::{recover, InterruptedSteps};
use super::rollback::{undo_here, IN_DOUBT};
use super::run::{new_run_id, run_step_here, Halt, Run};
use super::RunResult;
use crate::agent::Agent;
use crate::agent::{AgentInfo, AgentRegistry, Catalogue};
use crate::approval::{ApprovalHandler, DenyAll};
use crate::budget::{Budget, Unpriced};
use crate::exec::{
    EventSink, Observer, ReplayOptions, ReplaySource, StepContext, TextDelta, TextObserver,
};
use crate::plan::graph::Graph;
use crate::plan::{Plan, PlanError, PlanProblem, RollbackMode};
use crate::redact::Redactor;
use crate::store::{Claim, Owner, RunStore, StoreError, HEARTBEAT};
use crate::tool::{RetryPolicy, Tool, ToolSet};
use crate::trace::{Event, EventKind, RunState};

/// Runs approved plans: routes each step to its agent, runs independent steps at the same time,
/// and undoes completed work with compensating tools when a step fails.
///
/// What it guarantees:
///
/// 1. An unapproved plan is refused, and a plan is checked in full before any step runs
///    (duplicate or unknown ids, cycles, unknown agents and tools, tools outside their agent's
///    tool list) against its [`Catalogue`]; every problem is reported.
/// 2. A step starts as soon as all its dependencies have completed, up to
///    [`max_concurrency`](Orchestrator::max_concurrency) at a time.
/// 3. A step sees its dependencies' results in its task text and through
///    `{{steps.<id>.result}}` in its arguments.
/// 4. A step that names a tool its agent has, with valid arguments, is run by calling the tool
///    directly: no model call.
/// 5. When a step fails no new step starts; running steps get a grace period to finish; steps
///    never started are `skipped`.
/// 6. With rollback on (the default), the work of completed steps is undone by calling
///    compensating tools directly: in reverse order of completion, or with
///    [`RollbackMode::Parallel`] independent steps at the same time; either way a step only
///    after every step that depends on it. Failures to undo are reported.
/// 7. Tool contracts (approval, retries with backoff, timeouts) hold for every call, also in
///    parallel steps and during rollback.
/// 8. Every model call, tool call, approval, step and compensation is an [`Event`].
///
/// ```
/// use agenthelm::prelude::*;
/// use serde_json::json;
///
/// /// Reserve a seat.
/// #[tool(compensating_tool = "cancel")]
/// fn reserve(seat: String) -> String { format!("reserved {seat}") }
///
/// /// Cancel a reservation.
/// #[tool]
/// fn cancel(seat: String) -> String { format!("cancelled {seat}") }
///
/// /// Charge a card.
/// #[tool]
/// fn charge(amount: u32) -> Result<String, ToolError> { Err(ToolError::new("card declined")) }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lm = Lm::from_model(ScriptedLm::new(vec![]));
/// let mut registry = AgentRegistry::new();
/// registry.register(ToolAgent::new("booker", lm, tools![reserve, cancel, charge]))?;
///
/// let mut plan = Plan::new("book a trip");
/// plan.steps.push(PlanStep::new("seat", "reserve").agent("booker").tool("reserve").args(json!({"seat": "12A"})));
/// plan.steps.push(PlanStep::new("pay", "charge").agent("booker").tool("charge")
///     .args(json!({"amount": 300})).depends_on(["seat"]));
/// plan.approved = true;
///
/// let result = Orchestrator::new(registry).execute(&mut plan).await?;
/// assert!(!result.success);
/// assert_eq!(plan.get_step("seat").unwrap().status, StepStatus::Compensated);
/// assert_eq!(plan.get_step("pay").unwrap().status, StepStatus::Failed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Orchestrator {
    // Shared with the task that runs a plan, so a run goes on to its end (rollback included)
    // even when the caller stops waiting for it.
    config: Arc<Config>,
}

/// Everything an orchestrator is set up with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) registry: AgentRegistry,
    pub(crate) default_agent: Option<Arc<dyn Agent>>,
    pub(crate) tools: ToolSet,
    pub(crate) rollback: bool,
    pub(crate) rollback_mode: RollbackMode,
    pub(crate) approval: Arc<dyn ApprovalHandler>,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) retry: RetryPolicy,
    pub(crate) grace: Duration,
    pub(crate) observers: Vec<Observer>,
    /// Who sees model text as it is written (none: models answer whole).
    pub(crate) text_observers: Vec<TextObserver>,
    pub(crate) store: Option<Arc<dyn RunStore>>,
    pub(crate) interrupted: InterruptedSteps,
    /// Redacts events, the stored plan and results (`None`: nothing to redact).
    pub(crate) redactor: Option<Arc<Redactor>>,
    pub(crate) budget: Budget,
    /// The recorded run this configuration replays (see [`Orchestrator::replay`]).
    pub(crate) replay: Option<Arc<ReplaySource>>,
    /// Where steps and compensations run, when not in this process.
    pub(crate) remote: Option<Arc<dyn RemoteRunner>>,
    /// Opens each run for a coordinator: its guarded journal and its runner.
    pub(crate) remote_runs: Option<Arc<dyn RemoteRuns>>,
}

/// Why a plan was not run at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrchestratorError {
    /// The plan's `approved` flag is not set.
    #[error("plan `{goal}` is not approved: review it, then set `approved` to true")]
    NotApproved {
        /// The plan's goal.
        goal: String,
    },
    /// The plan is not valid for this orchestrator's agents and tools; nothing ran.
    #[error(transparent)]
    InvalidPlan(#[from] PlanError),
    /// The run store could not record the run (or, for a resume, read it): nothing ran.
    #[error("{0}")]
    NotRecorded(StoreError),
    /// The run began and stopped where it was because its journal could not be written: no
    /// step started and no compensation ran after the failed write, and nothing was rolled back
    /// for it. Resume it once the store works.
    #[error("run `{run_id}` stopped: {source}")]
    Halted {
        /// The run, to resume.
        run_id: String,
        /// The store's error.
        source: StoreError,
    },
    /// The run was suspended through its [`CancelToken`]: no step started after that, running
    /// steps were aborted after the grace period, nothing was rolled back and the run's end was
    /// not recorded. Resume it to go on; the aborted steps run again.
    #[error("run `{run_id}` was suspended")]
    Suspended {
        /// The run, to resume.
        run_id: String,
    },
    /// Steps wait for a person's decision on a tool call
    /// ([`ApprovalDecision::Defer`](crate::approval::ApprovalDecision::Defer)): the run stopped
    /// without ending once its other running steps were done. Put the decisions on record and
    /// resume it.
    #[error("run `{run_id}` waits for approval of tool calls in step(s) {}", steps.join(", "))]
    AwaitingApproval {
        /// The run, to resume once decided.
        run_id: String,
        /// The steps whose calls wait.
        steps: Vec<String>,
    },
    /// Another process carries on the run (it runs or resumes it): nothing ran here. Two
    /// processes on one run would repeat its steps and compensations.
    #[error("run `{run_id}` is already being run by {owner}: wait for it to end, or stop that process and resume the run")]
    Claimed {
        /// The run.
        run_id: String,
        /// Who holds it.
        owner: Owner,
    },
    /// Another coordinator holds the run (see
    /// [`Orchestrator::remote_runs`]): nothing ran here. It is taken over once that
    /// coordinator stops renewing its hold.
    #[error("run `{run_id}` is being coordinated by {holder}: it can be taken over once that coordinator stops (its lease runs out)")]
    Leased {
        /// The run.
        run_id: String,
        /// Who holds it.
        holder: String,
    },
    /// Resuming needs a run store.
    #[error("resuming a run needs a run store: set one with Orchestrator::store")]
    NoStore,
    /// Called outside a Tokio runtime: steps run on Tokio tasks.
    #[error("plans run on Tokio tasks: call this from within a Tokio runtime (for example under #[tokio::main])")]
    NoRuntime,
    /// The run to resume had already finished.
    #[error("run `{run_id}` already finished ({})", if *success { "succeeded" } else { "failed" })]
    AlreadyFinished {
        /// The run.
        run_id: String,
        /// Whether it succeeded.
        success: bool,
    },
}

impl Orchestrator {
    /// An orchestrator for the agents of `registry`, with rollback on, the [`DenyAll`] approval
    /// handler, no concurrency limit, the default [`RetryPolicy`] and a 30 s grace period.
    pub fn new(registry: AgentRegistry) -> Self {
        Orchestrator {
            config: Arc::new(Config {
                registry,
                default_agent: None,
                tools: ToolSet::new(),
                rollback: true,
                rollback_mode: RollbackMode::Sequential,
                approval: Arc::new(DenyAll),
                max_concurrency: None,
                retry: RetryPolicy::default(),
                grace: Duration::from_secs(30),
                observers: Vec::new(),
                text_observers: Vec::new(),
                store: None,
                interrupted: InterruptedSteps::default(),
                redactor: None,
                budget: Budget::default(),
                replay: None,
                remote: None,
                remote_runs: None,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The agent for steps that name none.
    pub fn default_agent(mut self, agent: impl Agent + 'static) -> Self {
        self.config_mut().default_agent = Some(Arc::new(agent));
        self
    }

    /// Turns Saga rollback on failure on (the default) or off.
    pub fn enable_rollback(mut self, enabled: bool) -> Self {
        self.config_mut().rollback = enabled;
        self
    }

    /// How rollback orders compensations (default: [`RollbackMode::Sequential`]); a plan's own
    /// `rollback` setting takes precedence. In parallel mode steps that do not depend on each
    /// other are undone at the same time, up to [`max_concurrency`](Self::max_concurrency).
    pub fn rollback_mode(mut self, mode: RollbackMode) -> Self {
        self.config_mut().rollback_mode = mode;
        self
    }

    /// Who approves tool calls whose contract requires approval. Default: [`DenyAll`].
    pub fn approval_handler(mut self, handler: impl ApprovalHandler + 'static) -> Self {
        self.config_mut().approval = Arc::new(handler);
        self
    }

    /// Runs at most `limit` steps (and, in a parallel rollback, compensations) at the same time
    /// (at least 1).
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.config_mut().max_concurrency = Some(limit.max(1));
        self
    }

    /// Backoff between attempts of failing tool calls.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.config_mut().retry = retry;
        self
    }

    /// How long running steps may go on after another step failed before they are cancelled.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config_mut().grace = grace;
        self
    }

    /// Tools of the orchestrator itself: steps that name one of them run it directly even
    /// without an agent, and rollback finds compensating tools here after the agent's own. A
    /// step routed to an agent whose tools are known cannot call them: it may name only the
    /// agent's tools.
    pub fn tools(mut self, tools: ToolSet) -> Self {
        self.config_mut().tools.extend(&tools);
        self
    }

    /// Keeps every run in `store`: the plan before the first step, and each event before the
    /// orchestrator acts on it, so a run can be inspected later and resumed after a crash.
    pub fn store(self, store: impl RunStore + 'static) -> Self {
        self.store_shared(Arc::new(store))
    }

    /// Like [`store`](Self::store), with a store shared with other code.
    pub fn store_shared(mut self, store: Arc<dyn RunStore>) -> Self {
        self.config_mut().store = Some(store);
        self
    }

    /// What [`resume`](Self::resume) does with steps that were running when the process
    /// stopped (default: [`InterruptedSteps::Rerun`]).
    pub fn on_interrupted_steps(mut self, rule: InterruptedSteps) -> Self {
        self.config_mut().interrupted = rule;
        self
    }

    /// Redacts with `redactor` everything a run records, shows or returns: the stored plan,
    /// every event (before observers and the journal see it: arguments, results, errors,
    /// prompts), and the [`RunResult`]'s answer and errors. Tools and models still get the real
    /// values. Plans may read the variables it allows as `{{env.NAME}}` in arguments, filled in
    /// in memory when a tool is called; any other `{{env.NAME}}` is a plan problem.
    ///
    /// A value redacted from the journal is not there when the run is resumed: a call that
    /// would need it fails with a message naming the argument (see [`crate::redact`]).
    pub fn redact(mut self, redactor: Redactor) -> Self {
        self.config_mut().redactor = Some(Arc::new(redactor));
        self
    }

    /// The redactor set with [`redact`](Self::redact), if any: for code that records or shows
    /// run data besides the orchestrator (a server's decisions, a CLI's output).
    pub fn redactor(&self) -> Option<&Redactor> {
        self.config.redactor.as_deref()
    }

    /// `plan` as it may be stored or shown: redacted as set with [`redact`](Self::redact)
    /// (borrowed as it is when nothing is redacted).
    pub fn redacted_plan<'p>(&self, plan: &'p Plan) -> Cow<'p, Plan> {
        self.config.stored(plan)
    }

    /// Keeps every run within `budget`: a run that reaches a limit stops like a failure (no new
    /// step or model call, running steps get the grace period, completed work is rolled back),
    /// and its error gives the figures. A plan's own [`budget`](Plan::budget) can tighten
    /// these limits, not loosen them. The budget a run starts with is journaled: a resumed run
    /// keeps it, and what it spent before counts.
    ///
    /// ```
    /// use agenthelm::budget::Budget;
    /// use agenthelm::prelude::*;
    /// use std::time::Duration;
    ///
    /// let orchestrator = Orchestrator::new(AgentRegistry::new())
    ///     .budget(Budget::new().max_cost_usd(0.50).max_duration(Duration::from_secs(600)));
    /// ```
    pub fn budget(mut self, budget: Budget) -> Self {
        self.config_mut().budget = budget;
        self
    }

    /// Calls `observer` with each event as it happens (for progress displays and journals).
    pub fn on_event(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.config_mut().observers.push(Arc::new(observer));
        self
    }

    /// Calls `observer` with the text of model answers as it is written, in every step whose
    /// agent thinks with a model (such as a [`ToolAgent`](crate::ToolAgent)): for a live view
    /// of the run. With an observer, models are asked to stream; the journal is the same
    /// either way (each call's final answer and usage, not its pieces). When the run redacts,
    /// so does the text (see [`TextDelta`]).
    pub fn on_text(mut self, observer: impl Fn(&TextDelta) + Send + Sync + 'static) -> Self {
        self.config_mut().text_observers.push(Arc::new(observer));
        self
    }

    /// The registry.
    pub fn registry(&self) -> &AgentRegistry {
        &self.config.registry
    }

    /// Hands every step and compensating action to `runner` instead of running it in this
    /// process: this orchestrator becomes a coordinator that schedules and journals the run
    /// while workers elsewhere do the work (see [`RemoteRunner`]). It still needs the agents
    /// and tools, to check plans and to decide which steps call a tool directly.
    pub fn remote(mut self, runner: Arc<dyn RemoteRunner>) -> Self {
        self.config_mut().remote = Some(runner);
        self
    }

    /// Coordinates every run this orchestrator executes or resumes through `runs`: each run is
    /// opened there first (taken for this process), journaled through the journal it gives
    /// and carried out by the runner it gives (see [`RemoteRuns`]). The agents and tools are
    /// still needed here, to check plans and choose direct calls.
    pub fn remote_runs(mut self, runs: Arc<dyn RemoteRuns>) -> Self {
        self.config_mut().remote_runs = Some(runs);
        self
    }

    /// Carries out a step a coordinator sent (a worker's side of [`remote`](Self::remote)),
    /// with this orchestrator's agents, tools, approval handler and retry policy, recording
    /// what it does in `sink` (which journals to the run's store).
    ///
    /// `Err` when the journal failed: what happened is then not all on record, and no outcome
    /// may be reported for it.
    pub async fn run_step_work(
        &self,
        work: &StepWork,
        sink: EventSink,
    ) -> Result<RemoteOutcome, StoreError> {
        let ctx = self.work_context(&work.run_id, &work.step_id, work.agent.as_deref(), sink);
        run_step_here(&self.config, work, &ctx).await
    }

    /// Carries out a compensating action a coordinator sent (see
    /// [`run_step_work`](Self::run_step_work)): the call keeps the id (and so the idempotency
    /// key) it has in a local rollback. `Ok(Err(..))` when the compensation failed; `Err` when
    /// the journal did.
    ///
    /// `in_doubt`: an earlier attempt started this compensation and stopped without an outcome.
    /// As in a resumed local rollback, the call is then made again only when its tool declares
    /// itself `idempotent` (with the same idempotency key); otherwise it fails as in doubt, for
    /// a person to check: a compensation never runs twice.
    pub async fn run_undo_work(
        &self,
        work: &UndoWork,
        sink: EventSink,
        in_doubt: bool,
    ) -> Result<Result<(), String>, StoreError> {
        let config = &self.config;
        let agent = work
            .agent
            .as_deref()
            .and_then(|name| config.registry.get(name));
        let tool = config.find_tool(agent.map(|a| &**a), &work.tool);
        if in_doubt && !tool.is_some_and(|t| t.spec().contract.idempotent) {
            return Ok(Err(IN_DOUBT.to_owned()));
        }
        let ctx = self.work_context(&work.run_id, &work.step_id, work.agent.as_deref(), sink);
        let outcome = undo_here(&ctx, work.action, tool, &work.tool, &work.args).await;
        let flushed = ctx.sink().flush();
        match (outcome, ctx.sink().journal_error()) {
            (Some(outcome), None) => flushed.map(|()| outcome),
            (_, Some(error)) => Err(error),
            (None, None) => Err(StoreError::Backend(
                "the compensation stopped before its call".to_owned(),
            )),
        }
    }

    /// The context a worker carries out work of step `step_id` in.
    fn work_context(
        &self,
        run_id: &str,
        step_id: &str,
        agent: Option<&str>,
        sink: EventSink,
    ) -> StepContext {
        let config = &self.config;
        let sink = match &config.redactor {
            Some(redactor) => sink.with_redactor(Arc::clone(redactor)),
            None => sink,
        };
        let ctx = StepContext::new()
            .for_step(run_id, step_id)
            .with_approval(Arc::clone(&config.approval))
            .with_retry(config.retry)
            .with_sink(sink);
        match agent {
            Some(agent) => ctx.with_agent(agent),
            None => ctx,
        }
    }

    /// Runs an approved plan and updates its steps' status, result and error.
    ///
    /// `Err` only when nothing ran: the plan is not approved or not valid. A step that fails
    /// gives `Ok` with `success == false`, after rollback. Steps already `completed` are kept
    /// (their results feed later steps); others start from `pending`.
    ///
    /// The run happens on a task of its own. Once started it always finishes what it started:
    /// dropping this future does not abort steps half-way or skip the rollback (the plan's
    /// final state is then lost to the caller). To stop a run early, use
    /// [`execute_with_cancel`](Self::execute_with_cancel).
    pub async fn execute(&self, plan: &mut Plan) -> Result<RunResult, OrchestratorError> {
        self.execute_with_cancel(plan, CancelToken::new()).await
    }

    /// Like [`execute`](Self::execute), and stops the run when `cancel` is cancelled: no new
    /// step starts, running steps get the grace period, and completed work is rolled back.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use agenthelm::orchestrate::CancelToken;
    /// use agenthelm::tool::FnTool;
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let noop = FnTool::new("noop", "Does nothing", json!({"type": "object"}), |_, _| async {
    ///     Ok(json!(null))
    /// })?;
    /// let mut plan = Plan::new("cancelled before it starts");
    /// plan.steps.push(PlanStep::new("a", "Do nothing").tool("noop"));
    /// plan.approved = true;
    /// let cancel = CancelToken::new();
    /// cancel.cancel(); // e.g. from a Ctrl-C handler
    /// let result = Orchestrator::new(AgentRegistry::new())
    ///     .tools(ToolSet::new().with(noop))
    ///     .execute_with_cancel(&mut plan, cancel)
    ///     .await?;
    /// assert!(!result.success);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn execute_with_cancel(
        &self,
        plan: &mut Plan,
        cancel: CancelToken,
    ) -> Result<RunResult, OrchestratorError> {
        ensure_runtime()?;
        if !plan.approved {
            return Err(OrchestratorError::NotApproved {
                goal: plan.goal.clone(),
            });
        }
        let graph = self.config.check(plan)?;
        let run_id: Arc<str> = Arc::from(new_run_id());
        let (this, claim) = self.for_run(&run_id)?;
        let stored = this.config.stored(plan);
        if let Some(store) = &this.config.store {
            store
                .begin_run(&run_id, &stored)
                .map_err(OrchestratorError::NotRecorded)?;
        }
        drop(stored);
        let owned = std::mem::replace(plan, Plan::new(String::new()));
        // From the real plan: the results of steps it gives as completed feed later steps.
        let state = RunState::new(&owned);
        let opening = this.config.opening(&owned);
        let (finished, result) = this
            .run(run_id, graph, cancel, claim, (owned, state, opening))
            .await;
        *plan = finished;
        result
    }

    /// Continues a run recorded in the store after its process stopped, and returns the plan
    /// in its final state with the result.
    ///
    /// Completed steps are not run again; steps that were running are handled by the
    /// [`InterruptedSteps`] rule; a rollback that was under way goes on where it stopped; a
    /// compensation that was started is never run a second time (one whose outcome is unknown
    /// is reported in the rollback's failures).
    ///
    /// A run that is recorded but never started (its plan was stored with
    /// [`RunStore::begin_run`](crate::store::RunStore::begin_run) for a review, then approved)
    /// starts from the beginning. The stored plan must be approved.
    pub async fn resume(&self, run_id: &str) -> Result<(Plan, RunResult), OrchestratorError> {
        self.resume_with_cancel(run_id, CancelToken::new()).await
    }

    /// Like [`resume`](Self::resume), stopping early when `cancel` is cancelled.
    pub async fn resume_with_cancel(
        &self,
        run_id: &str,
        cancel: CancelToken,
    ) -> Result<(Plan, RunResult), OrchestratorError> {
        ensure_runtime()?;
        self.required_store()?;
        // Before reading the journal: it is then complete, and no one else adds to it.
        let (this, claim) = self.for_run(run_id)?;
        let store = this.required_store()?;
        let stored = store
            .load_run(run_id)
            .map_err(OrchestratorError::NotRecorded)?;
        if let Some(success) = stored.summary.success {
            return Err(OrchestratorError::AlreadyFinished {
                run_id: run_id.to_owned(),
                success,
            });
        }
        if !stored.plan.approved {
            return Err(OrchestratorError::NotApproved {
                goal: stored.plan.goal.clone(),
            });
        }
        let graph = this.config.check(&stored.plan)?;
        let recovered = recover(&stored.plan, &stored.events, this.config.interrupted);
        if let Some(success) = recovered.state.end().map(|end| end.success) {
            // The journal has the end, but the process stopped before the run list did: record it.
            let error = (!success).then_some("the run failed (its end was recorded on resume)");
            store
                .finish_run(run_id, success, error)
                .map_err(OrchestratorError::NotRecorded)?;
            return Err(OrchestratorError::AlreadyFinished {
                run_id: run_id.to_owned(),
                success,
            });
        }
        // A run recorded but never started (a plan approved after review) starts now.
        let opening = if recovered.state.started() {
            EventKind::RunResumed {
                interrupted: recovered.interrupted,
            }
        } else {
            this.config.opening(&stored.plan)
        };
        let start = (stored.plan, recovered.state, opening);
        let (plan, result) = this
            .run(Arc::from(run_id), graph, cancel, claim, start)
            .await;
        result.map(|result| (plan, result))
    }

    /// Runs the stored run `run_id` again with every model answer, tool outcome and approval
    /// decision taken from its journal: no model is called and no tool runs (unless `options`
    /// make one side live), and nothing is written to the store. Reports whether the run was
    /// reproduced, else the first point where it went another way (a changed prompt, tool
    /// schema, dispatch or outcome), so a failure can be reproduced and a fix checked offline.
    ///
    /// The replay uses this orchestrator's agents and tools, with the plan as the run began,
    /// and runs its rollback, if any, from the journal too. A plan that no longer fits the
    /// agents and tools is reported as a divergence. `Err` when the run cannot be read.
    pub async fn replay(
        &self,
        run_id: &str,
        options: ReplayOptions,
    ) -> Result<ReplayReport, OrchestratorError> {
        self.replay_with(run_id, None, options).await
    }

    /// Like [`replay`](Self::replay), running `plan` instead of the stored run's plan: its
    /// steps are compared with the recorded steps of the same ids, so a changed step (its
    /// arguments, description, tool or agent), a new one or a removed one is named.
    pub async fn replay_plan(
        &self,
        run_id: &str,
        plan: Plan,
        options: ReplayOptions,
    ) -> Result<ReplayReport, OrchestratorError> {
        self.replay_with(run_id, Some(plan), options).await
    }

    async fn replay_with(
        &self,
        run_id: &str,
        plan: Option<Plan>,
        options: ReplayOptions,
    ) -> Result<ReplayReport, OrchestratorError> {
        ensure_runtime()?;
        let store = self.required_store()?;
        let stored = store
            .load_run(run_id)
            .map_err(OrchestratorError::NotRecorded)?;
        let recorded_success = stored.summary.success;
        let prepared = match replay::prepare(&self.config, stored, plan, options) {
            Ok(prepared) => prepared,
            Err(divergence) => return Ok(replay::not_started(run_id, divergence, options)),
        };
        let replayer = Orchestrator {
            config: Arc::new(prepared.config),
        };
        let graph = replayer.config.check(&prepared.plan)?;
        let state = RunState::new(&prepared.plan);
        let opening = replayer.config.opening(&prepared.plan);
        let start = (prepared.plan, state, opening);
        let (plan, result) = replayer
            .run(
                Arc::from(run_id),
                graph,
                CancelToken::new(),
                Claim::unguarded(),
                start,
            )
            .await;
        let result = result?;
        Ok(replay::report(
            run_id,
            recorded_success,
            &prepared.source,
            &plan,
            &result,
        ))
    }

    /// The store, for what cannot be done without one (resume, replay).
    fn required_store(&self) -> Result<&Arc<dyn RunStore>, OrchestratorError> {
        self.config.store.as_ref().ok_or(OrchestratorError::NoStore)
    }

    /// The orchestrator that carries run `run_id`, and the claim it holds the run by: this one
    /// with its store's claim, or, with [remote runs](Self::remote_runs), one that journals
    /// through the run's own journal and sends its work away.
    fn for_run(&self, run_id: &str) -> Result<(Orchestrator, Claim), OrchestratorError> {
        let Some(runs) = &self.config.remote_runs else {
            return Ok((self.clone(), self.claim(run_id)?));
        };
        let remote = runs.open(run_id).map_err(|e| match e {
            StoreError::Leased { run_id, holder, .. } => {
                OrchestratorError::Leased { run_id, holder }
            }
            e => OrchestratorError::NotRecorded(e),
        })?;
        let mut config = (*self.config).clone();
        config.store = Some(remote.journal);
        config.remote = Some(remote.runner);
        config.remote_runs = None;
        let this = Orchestrator {
            config: Arc::new(config),
        };
        Ok((this, remote.claim))
    }

    /// Claims `run_id` in the store for this process (nothing to claim without a store).
    fn claim(&self, run_id: &str) -> Result<Claim, OrchestratorError> {
        let Some(store) = &self.config.store else {
            return Ok(Claim::unguarded());
        };
        store
            .claim_run(run_id, &Owner::this_process())
            .map_err(|e| match e {
                StoreError::Claimed { run_id, owner } => {
                    OrchestratorError::Claimed { run_id, owner }
                }
                e => OrchestratorError::NotRecorded(e),
            })
    }

    /// Runs on a task of its own (see [`execute`](Self::execute)), holding `claim` until the
    /// run ends, and records the end. The plan comes back in its latest state even when the
    /// store failed. `start` is the plan as the run began, its state so far and the event that
    /// opens this part of the run.
    async fn run(
        &self,
        run_id: Arc<str>,
        graph: Graph,
        cancel: CancelToken,
        claim: Claim,
        (plan, state, opening): (Plan, RunState, EventKind),
    ) -> (Plan, Result<RunResult, OrchestratorError>) {
        let config = &self.config;
        let mut sink = EventSink::for_run(config.observers.clone(), config.store.clone(), state);
        if let Some(redactor) = &config.redactor {
            sink = sink.with_redactor(Arc::clone(redactor));
        }
        // The span of the whole run, for a `tracing` subscriber: its steps, model and tool calls
        // and rollback are inside it. Ids and counts only: goals and arguments may be private.
        let span = tracing::info_span!(
            "run",
            otel.name = "invoke_workflow agenthelm",
            gen_ai.operation.name = "invoke_workflow",
            agenthelm.run_id = %run_id,
            agenthelm.steps = crate::trace::span_count(plan.steps.len()),
            agenthelm.replay = config.replay.is_some(),
        );
        let run = Run::new(
            Arc::clone(config),
            Arc::clone(&run_id),
            sink,
            graph,
            cancel,
            plan,
            opening,
        );
        let claimed = while_claimed(claim, run.execute()).instrument(span);
        let (plan, result, halted_by) = match tokio::spawn(claimed).await {
            Ok(finished) => finished,
            Err(e) => {
                let error = format!("the run stopped abnormally ({e}); the plan's state was lost");
                return (
                    Plan::new(String::new()),
                    Ok(RunResult {
                        error: Some(error),
                        ..RunResult::default()
                    }),
                );
            }
        };
        let halted = |source| OrchestratorError::Halted {
            run_id: run_id.to_string(),
            source,
        };
        match halted_by {
            Some(Halt::Store(e)) => return (plan, Err(halted(e))),
            Some(Halt::Suspended) => {
                let run_id = run_id.to_string();
                return (plan, Err(OrchestratorError::Suspended { run_id }));
            }
            Some(Halt::Parked { steps }) => {
                let run_id = run_id.to_string();
                return (
                    plan,
                    Err(OrchestratorError::AwaitingApproval { run_id, steps }),
                );
            }
            None => {}
        }
        if let Some(store) = &config.store {
            let recorded = store.finish_run(&run_id, result.success, result.error.as_deref());
            if let Err(e) = recorded {
                // The journal has the end; a resume records it in the run list.
                return (plan, Err(halted(e)));
            }
        }
        (plan, Ok(result))
    }

    /// Checks `plan` against this orchestrator's agents and tools, as [`execute`](Self::execute)
    /// does before running anything. Reports every problem at once.
    pub fn check(&self, plan: &Plan) -> Result<(), PlanError> {
        self.config.check(plan).map(drop)
    }

    /// What plans run here may use: the registry's agents, the default agent and the
    /// orchestrator's own tools. [`check`](Self::check) checks plans against it.
    pub fn catalogue(&self) -> Catalogue {
        self.config.catalogue()
    }
}

/// Runs `work` while refreshing `claim` every [`HEARTBEAT`], then releases the claim. The claim
/// goes with the run's own task, so a caller that stops waiting does not release it early.
async fn while_claimed<T>(claim: Claim, work: impl Future<Output = T>) -> T {
    let heartbeat = async {
        let mut every = tokio::time::interval(HEARTBEAT);
        loop {
            every.tick().await;
            if claim.refresh().is_err() {
                break;
            }
        }
    };
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = heartbeat => {}
    }
    // The claim was lost (the store failed, or another host took over after a long stall):
    // the run still finishes what it started; its journal writes tell whether the store works.
    work.await
}

fn ensure_runtime() -> Result<(), OrchestratorError> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| OrchestratorError::NoRuntime)
}

impl Config {
    /// The event that starts a run of `plan`, with the budget it is kept within: this
    /// orchestrator's, tightened by the plan's own.
    fn opening(&self, plan: &Plan) -> EventKind {
        let budget = self.budget_for(plan);
        EventKind::RunStarted {
            goal: plan.goal.clone(),
            steps: plan.steps.len(),
            budget: budget.is_limited().then_some(budget),
        }
    }

    /// Validates `plan` for these agents and tools and returns its dependency graph.
    /// The budget a run of `plan` is kept within: this orchestrator's, tightened by the plan's.
    fn budget_for(&self, plan: &Plan) -> Budget {
        self.budget.tightened_by(plan.budget.as_ref())
    }

    /// Steps whose agent thinks with a model that has no price, under a cost budget that
    /// refuses those: found before the run starts rather than at the step's first model call.
    fn unpriced_models(&self, plan: &Plan) -> Vec<PlanProblem> {
        let budget = self.budget_for(plan);
        if budget.max_cost_usd.is_none() || budget.unpriced == Unpriced::Allow {
            return Vec::new();
        }
        plan.steps
            .iter()
            // A step that names a tool is normally a direct call: no model.
            .filter(|step| step.tool_name.is_none())
            .filter_map(|step| {
                let agent = self.agent_for(step)?;
                let lm = agent.model()?;
                lm.pricing()
                    .lookup(lm.model_id())
                    .is_none()
                    .then(|| PlanProblem::UnpricedModel {
                        step: step.id.clone(),
                        agent: agent.name().to_owned(),
                        model: lm.model_id().to_owned(),
                    })
            })
            .collect()
    }

    pub(crate) fn check(&self, plan: &Plan) -> Result<Graph, PlanError> {
        let (mut problems, graph) = self.catalogue().analyze(plan);
        problems.extend(self.unpriced_models(plan));
        if problems.is_empty() {
            Ok(graph)
        } else {
            Err(PlanError::Invalid(problems))
        }
    }

    /// `plan` as it may be stored: redacted when the orchestrator redacts.
    pub(crate) fn stored<'p>(&self, plan: &'p Plan) -> Cow<'p, Plan> {
        match &self.redactor {
            Some(redactor) if !redactor.is_empty() => {
                let mut stored = plan.clone();
                redactor.redact_plan(&mut stored);
                Cow::Owned(stored)
            }
            _ => Cow::Borrowed(plan),
        }
    }

    fn catalogue(&self) -> Catalogue {
        let mut catalogue = Catalogue::from_registry(&self.registry).extra_tools(&self.tools);
        if let Some(redactor) = &self.redactor {
            catalogue = catalogue.env_from(redactor);
        }
        match &self.default_agent {
            Some(agent) => catalogue.default_agent(AgentInfo::of(&**agent)),
            None => catalogue,
        }
    }

    /// The agent that runs `step`.
    pub(crate) fn agent_for(&self, step: &crate::plan::PlanStep) -> Option<&Arc<dyn Agent>> {
        match &step.agent_name {
            Some(name) => self.registry.get(name),
            None => self.default_agent.as_ref(),
        }
    }

    /// A tool by name: the agent's own first, then the orchestrator's.
    pub(crate) fn find_tool<'s>(
        &'s self,
        agent: Option<&'s dyn Agent>,
        name: &str,
    ) -> Option<&'s Arc<dyn Tool>> {
        agent
            .and_then(|a| a.tools())
            .and_then(|tools| tools.get(name))
            .or_else(|| self.tools.get(name))
    }
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        f.debug_struct("Orchestrator")
            .field("registry", &config.registry)
            .field(
                "default_agent",
                &config.default_agent.as_ref().map(|a| a.name().to_owned()),
            )
            .field("tools", &config.tools)
            .field("rollback", &config.rollback)
            .field("rollback_mode", &config.rollback_mode)
            .field("max_concurrency", &config.max_concurrency)
            .field("retry", &config.retry)
            .field("grace", &config.grace)
            .finish_non_exhaustive()
    }
}
