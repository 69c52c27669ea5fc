use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use super::{invoke, BudgetGuard, EventSink, ReplaySource, TextForwarder, TextObserver};
use crate::approval::{ApprovalHandler, DenyAll};
use crate::lm::{Completion, LmError, RequestDigest};
use crate::retry::RetryPolicy;
use crate::tool::{Tool, ToolError, ToolSpec};
use crate::trace::{now_ms, CallPurpose, Effect, Event, EventKind};

/// Where an agent's work happens: which run and step, who approves tool calls, how failed calls
/// are retried, and where events go.
///
/// The orchestrator makes one per step. For a task outside a plan, [`StepContext::new`] gives a
/// context with no run, the [`DenyAll`] approval handler and the default [`RetryPolicy`].
pub struct StepContext {
    run_id: Option<Arc<str>>,
    step_id: Option<Arc<str>>,
    agent: Option<Arc<str>>,
    approval: Arc<dyn ApprovalHandler>,
    retry: RetryPolicy,
    sink: EventSink,
    budget: Option<Arc<BudgetGuard>>,
    calls: AtomicU32,
    /// A call of this step waits for a person's decision.
    parked: AtomicBool,
    /// The recorded run this step replays, if it is a replay.
    replay: Option<Arc<ReplaySource>>,
    /// Who sees model text as it is written; none: models are not asked to stream.
    text_observers: Vec<TextObserver>,
}

impl Default for StepContext {
    fn default() -> Self {
        StepContext {
            run_id: None,
            step_id: None,
            agent: None,
            approval: Arc::new(DenyAll),
            retry: RetryPolicy::default(),
            sink: EventSink::new(),
            budget: None,
            calls: AtomicU32::new(0),
            parked: AtomicBool::new(false),
            replay: None,
            text_observers: Vec::new(),
        }
    }
}

impl StepContext {
    /// A context outside any plan run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the run and step this context belongs to.
    pub fn for_step(mut self, run_id: impl Into<Arc<str>>, step_id: impl Into<Arc<str>>) -> Self {
        self.run_id = Some(run_id.into());
        self.step_id = Some(step_id.into());
        self
    }

    /// Sets the agent doing the work.
    pub fn with_agent(mut self, agent: impl Into<Arc<str>>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Sets who approves tool calls that require approval.
    pub fn with_approval(mut self, approval: Arc<dyn ApprovalHandler>) -> Self {
        self.approval = approval;
        self
    }

    /// Sets the backoff between attempts of failing tool calls.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends events to `sink`.
    pub fn with_sink(mut self, sink: EventSink) -> Self {
        self.sink = sink;
        self
    }

    /// Keeps the model calls made in this context within a run's budget.
    pub fn with_budget(mut self, budget: Arc<BudgetGuard>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Streams the model calls made in this context, handing their text to `observers` as it
    /// is written (see [`TextDelta`](super::TextDelta)). Without observers, models answer
    /// whole.
    pub fn with_text_observers(mut self, observers: Vec<TextObserver>) -> Self {
        self.text_observers = observers;
        self
    }

    /// Whether model calls in this context stream their text to someone.
    pub fn streams_text(&self) -> bool {
        !self.text_observers.is_empty()
    }

    /// Hands one model call's text to the observers (redacted as the sink redacts).
    pub(crate) fn text_forwarder(&self) -> TextForwarder<'_> {
        TextForwarder::new(
            &self.text_observers,
            self.sink.redactor(),
            self.run_id.clone(),
            self.step_id.clone(),
            self.agent.clone(),
        )
    }

    /// The budget model calls are kept within, if any.
    pub fn budget(&self) -> Option<&BudgetGuard> {
        self.budget.as_deref()
    }

    /// Replays the step from a recorded run: model answers and tool outcomes come from its
    /// journal (see [`Orchestrator::replay`](crate::Orchestrator::replay)).
    pub(crate) fn with_replay(mut self, source: Arc<ReplaySource>) -> Self {
        self.replay = Some(source);
        self
    }

    /// The recorded run this step replays, if any (with the step's id).
    pub(crate) fn replay(&self) -> Option<(&ReplaySource, &str)> {
        Some((self.replay.as_deref()?, self.step_id.as_deref()?))
    }

    /// The recorded answer to this step's next model call, whose request has `digest`; `None`
    /// when the step is no replay, or the replay calls models for real.
    pub(crate) fn replayed_answer(
        &self,
        digest: &RequestDigest,
    ) -> Option<Result<Completion, LmError>> {
        let (source, step) = self.replay()?;
        source.model_answer(step, digest)
    }

    /// The plan run, if any.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// The plan step, if any.
    pub fn step_id(&self) -> Option<&str> {
        self.step_id.as_deref()
    }

    /// The agent, if set.
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Who approves tool calls.
    pub fn approval_handler(&self) -> &dyn ApprovalHandler {
        &*self.approval
    }

    /// The backoff between attempts.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Where events go.
    pub fn sink(&self) -> &EventSink {
        &self.sink
    }

    /// Records an event, stamped with this context's run, step and agent.
    pub fn emit(&self, kind: EventKind) {
        self.sink
            .emit(stamped(&self.run_id, &self.step_id, &self.agent, kind));
    }

    /// [`emit`](StepContext::emit) for code that outlives a borrow of the context (a model
    /// call's rate-limit waits are reported from inside the call).
    pub(crate) fn emitter(&self) -> impl Fn(EventKind) + Send + Sync + 'static {
        let sink = self.sink.clone();
        let (run_id, step_id, agent) = (
            self.run_id.clone(),
            self.step_id.clone(),
            self.agent.clone(),
        );
        move |kind| sink.emit(stamped(&run_id, &step_id, &agent, kind))
    }

    /// Calls `tool` under its contract: validates the arguments, asks for approval when
    /// required, retries with backoff, applies the timeout, records the call as an event and,
    /// when it changed something, as an [`Effect`] for rollback.
    pub async fn call_tool(&self, tool: &Arc<dyn Tool>, args: Value) -> Result<Value, ToolError> {
        invoke::invoke(tool, args, self, CallPurpose::Execute).await
    }

    /// Asks this context's approval handler about the calls of its step that wait for a
    /// decision another process asked for (a worker carrying the step out, see
    /// `RemoteRunner`), and records each decision it
    /// makes. Returns how many it made; a handler that defers leaves the calls waiting.
    pub async fn decide_waiting_calls(&self) -> usize {
        invoke::decide_waiting(self).await
    }

    /// Whether a call made in this context waits for a person's decision
    /// ([`ApprovalDecision::Defer`](crate::approval::ApprovalDecision::Defer)): the step must
    /// stop and be run again once the decision is on record.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    pub(crate) fn park(&self) {
        self.parked.store(true, Ordering::Release);
    }

    pub(crate) fn next_call_id(&self, purpose: CallPurpose) -> String {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let owner = self
            .step_id
            .as_deref()
            .or(self.agent.as_deref())
            .unwrap_or("call");
        match purpose {
            CallPurpose::Execute => format!("{owner}#{n}"),
            CallPurpose::Compensate => format!("{owner}#undo{n}"),
        }
    }

    /// Notes, before a call runs, that a tool declaring partial effects is about to act: if the
    /// call never finishes (its step is cancelled), rollback still undoes whatever it began.
    /// [`record_effect`](Self::record_effect) replaces the note once the call finishes.
    pub(crate) fn record_intent(&self, spec: &ToolSpec, call_id: &str, args: &Value) {
        if !spec.contract.partial_effects {
            return;
        }
        self.push_effect(Effect {
            call_id: call_id.to_owned(),
            tool: spec.name.clone(),
            args: args.clone(),
            compensating_tool: spec.contract.compensating_tool.clone(),
            in_progress: true,
        });
    }

    /// Notes a finished call as an effect when it may have changed something: it succeeded and
    /// has a compensating tool or declared side effects, or it failed but declares partial effects.
    pub(crate) fn record_effect(
        &self,
        spec: &ToolSpec,
        call_id: &str,
        args: &Value,
        outcome: &Result<Value, ToolError>,
    ) {
        // The outcome replaces the intent noted before the call (same call id) in the run state.
        let contract = &spec.contract;
        let changed = match outcome {
            Ok(_) => contract.compensating_tool.is_some() || !contract.side_effects.is_empty(),
            Err(ToolError::Failed(_) | ToolError::Timeout { .. }) => contract.partial_effects,
            Err(_) => false,
        };
        if !changed {
            return;
        }
        self.push_effect(Effect {
            call_id: call_id.to_owned(),
            tool: spec.name.clone(),
            args: args.clone(),
            compensating_tool: contract.compensating_tool.clone(),
            in_progress: false,
        });
    }

    /// Puts an effect on record: the run state keeps it for rollback (and a resumed run's
    /// replayed state too).
    fn push_effect(&self, effect: Effect) {
        self.emit(EventKind::Effect { effect });
    }
}

impl fmt::Debug for StepContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("run_id", &self.run_id)
            .field("step_id", &self.step_id)
            .field("agent", &self.agent)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// An event of `kind`, stamped now with where it happened.
fn stamped(
    run_id: &Option<Arc<str>>,
    step_id: &Option<Arc<str>>,
    agent: &Option<Arc<str>>,
    kind: EventKind,
) -> Event {
    Event {
        timestamp_ms: now_ms(),
        run_id: run_id.clone(),
        step_id: step_id.clone(),
        agent: agent.clone(),
        kind,
    }
}
