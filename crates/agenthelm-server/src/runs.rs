//! The runs this server carries on: submitting plans for review, deciding on plans and tool
//! calls, starting, cancelling and picking runs up again after a restart.
//!
//! Nothing here waits for a person. A plan under review and a tool call waiting for approval
//! are records in the run store; the run holds no task and no claim while it waits. A decision
//! is put on record first and acted on after, so a crash between the two loses nothing: the
//! next start finds the decision and goes on.

use agenthelm::approval::{ApprovalDecision, ApprovalRequest};
use agenthelm::orchestrate::{new_run_id, CancelToken, OrchestratorError};
use agenthelm::orchestrate::{ReplayOptions, ReplayReport};
use agenthelm::store::{RunStore, RunSummary, StoreError};
use agenthelm::tool::ToolSet;
use agenthelm::trace::{ApprovalRequestRecord, RunPhase};
use agenthelm::{Event, EventKind, Orchestrator, Plan, RunState};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

use crate::error::{ApiError, Problem};
use crate::hub::Hub;

/// How long a decision on a tool call waits for its run to finish the steps still running
/// before the run is parked (the decision is put on record only once the run is).
const PARK_WAIT: Duration = Duration::from_secs(30);

/// A check of a plan besides its own: the problems it finds, each a sentence.
pub type Preflight = Arc<dyn Fn(&Plan) -> Vec<String> + Send + Sync>;

/// The runs of one workspace, carried on by this server.
pub struct Runs {
    preflight: Option<Preflight>,
    store: Arc<dyn RunStore>,
    orchestrator: Orchestrator,
    tools: ToolSet,
    hub: Arc<Hub>,
    active: Mutex<HashMap<String, watch::Receiver<bool>>>,
    cancels: Mutex<HashMap<String, CancelToken>>,
    slots: Arc<Semaphore>,
    /// One decision at a time: a check of a run's state and the record that follows it are
    /// not interleaved with another decision's.
    deciding: tokio::sync::Mutex<()>,
}

/// A person's decision on a tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallDecision {
    /// Go ahead as asked.
    Approve,
    /// Go ahead with these arguments.
    Edit(Value),
    /// Do not call the tool.
    Deny,
}

impl Runs {
    /// Runs of `orchestrator` (its store, its agents), at most `max_runs` at once. `tools` are
    /// every tool a run can call, for checking edited arguments; `preflight`, when given,
    /// checks every plan after its own checks. The orchestrator's approval handler is
    /// replaced: every call that needs approval waits for a person.
    pub fn new(
        orchestrator: Orchestrator,
        store: Arc<dyn RunStore>,
        tools: ToolSet,
        max_runs: usize,
        preflight: Option<Preflight>,
    ) -> Arc<Runs> {
        let hub = Arc::new(Hub::default());
        let observer = Arc::clone(&hub);
        let orchestrator = orchestrator
            .store_shared(Arc::clone(&store))
            .approval_handler(|_: &ApprovalRequest| ApprovalDecision::Defer)
            .on_event(move |event| observer.publish(event));
        Arc::new(Runs {
            preflight,
            store,
            orchestrator,
            tools,
            hub,
            active: Mutex::new(HashMap::new()),
            cancels: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max_runs.max(1))),
            deciding: tokio::sync::Mutex::new(()),
        })
    }

    /// The store the runs are kept in.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// The live events of the runs.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Checks `plan` against the workspace's agents and tools: each problem with its field.
    pub fn check(&self, plan: &Plan) -> Result<(), ApiError> {
        let mut problems: Vec<Problem> = self
            .orchestrator
            .catalogue()
            .check(plan)
            .iter()
            .map(|p| Problem::at(agenthelm_workspace::problem_key(plan, p), p.to_string()))
            .collect();
        if problems.is_empty() {
            if let Some(preflight) = &self.preflight {
                problems.extend(preflight(plan).into_iter().map(|message| Problem {
                    field: None,
                    message,
                }));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(ApiError::unprocessable(
            "the plan does not pass its checks",
            problems,
        ))
    }

    /// Picks up every run the store has that is neither finished nor waiting for a person,
    /// as `agenthelm resume` would. Returns how many were started.
    pub fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let unfinished = self.unfinished()?;
        Ok(unfinished
            .iter()
            .filter(|(summary, state)| self.carry_on(&summary.run_id, state))
            .count())
    }

    /// Carries on those of `run_ids` that are neither finished nor waiting for a person and
    /// do not run here already (runs another coordinator left behind). Returns how many were
    /// started.
    pub fn take_over(self: &Arc<Self>, run_ids: &[String]) -> usize {
        run_ids
            .iter()
            .filter(|run_id| {
                let taken = self
                    .state(run_id)
                    .is_ok_and(|state| self.carry_on(run_id, &state));
                if taken {
                    tracing::info!(run = %run_id, "taking over a run its coordinator left");
                }
                taken
            })
            .count()
    }

    /// Starts run `run_id` when its state says it runs (neither finished nor waiting for a
    /// person) and it does not run here already; whether it did.
    fn carry_on(self: &Arc<Self>, run_id: &str, state: &RunState) -> bool {
        state.phase() == RunPhase::Running && self.start_with(run_id, CancelToken::new())
    }

    /// The state of run `run_id`, replayed from an outline of its journal (no tool outputs).
    pub fn state(&self, run_id: &str) -> Result<RunState, StoreError> {
        let run = self.store.load_run_outline(run_id)?;
        Ok(RunState::replay(&run.plan, &run.events))
    }

    /// The most recent runs first, at most `limit`, only those in state `wanted` (all when
    /// `None`), each with its state.
    pub fn list(
        &self,
        wanted: Option<RunPhase>,
        limit: usize,
    ) -> Result<Vec<(RunSummary, RunState)>, StoreError> {
        let mut listed = Vec::new();
        for summary in self.store.list_runs(usize::MAX)? {
            if listed.len() == limit {
                break;
            }
            let state = self.state(&summary.run_id)?;
            if wanted.is_none_or(|w| w == state.phase()) {
                listed.push((summary, state));
            }
        }
        Ok(listed)
    }

    /// The runs whose end is not recorded, with their states.
    fn unfinished(&self) -> Result<Vec<(RunSummary, RunState)>, StoreError> {
        let mut found = Vec::new();
        for summary in self.store.list_runs(usize::MAX)? {
            if summary.success.is_none() {
                let state = self.state(&summary.run_id)?;
                found.push((summary, state));
            }
        }
        Ok(found)
    }

    /// Records a new run of `plan`, submitted by `by`: waiting for review, or (`approve`)
    /// approved at once and started.
    pub fn submit(
        self: &Arc<Self>,
        mut plan: Plan,
        approve: bool,
        by: &str,
    ) -> Result<(String, RunPhase), ApiError> {
        self.check(&plan)?;
        let run_id = new_run_id();
        plan.approved = approve;
        self.store.begin_run(&run_id, &self.stored(plan))?;
        self.record(
            &run_id,
            EventKind::PlanSubmitted {
                by: Some(by.to_owned()),
            },
        )?;
        if !approve {
            return Ok((run_id, RunPhase::AwaitingApproval));
        }
        self.record(&run_id, review(true, by, None, false))?;
        self.start(&run_id);
        Ok((run_id, RunPhase::Running))
    }

    /// Approves the plan of run `run_id` (replaced by `edited`, checked first, when given) and
    /// starts it.
    pub async fn approve_plan(
        self: &Arc<Self>,
        run_id: &str,
        edited: Option<Plan>,
        by: &str,
    ) -> Result<(), ApiError> {
        let _one = self.deciding.lock().await;
        let run = self.store.load_run_outline(run_id)?;
        expect_review(&RunState::replay(&run.plan, &run.events), run_id)?;
        let is_edited = edited.is_some();
        let mut plan = edited.unwrap_or(run.plan);
        self.check(&plan)?;
        plan.approved = true;
        self.store.revise_plan(run_id, &self.stored(plan))?;
        self.record(run_id, review(true, by, None, is_edited))?;
        self.start(run_id);
        Ok(())
    }

    /// Rejects the plan of run `run_id`: nothing runs, and the run is over.
    pub async fn reject_plan(
        &self,
        run_id: &str,
        reason: Option<String>,
        by: &str,
    ) -> Result<(), ApiError> {
        let _one = self.deciding.lock().await;
        expect_review(&self.state(run_id)?, run_id)?;
        let error = match &reason {
            Some(reason) => format!("the plan was rejected by {by}: {reason}"),
            None => format!("the plan was rejected by {by}"),
        };
        self.record(run_id, review(false, by, reason, false))?;
        let error = self.redacted_text(error);
        self.store.finish_run(run_id, false, Some(&error))?;
        self.hub.close(run_id);
        Ok(())
    }

    /// Runs `run_id` again from its journal (see [`Orchestrator::replay`]): no model is called,
    /// no tool runs (unless `options` say so) and nothing is recorded. A run that has not ended
    /// is refused: its journal is not complete.
    pub async fn replay(
        &self,
        run_id: &str,
        options: ReplayOptions,
    ) -> Result<ReplayReport, ApiError> {
        let run = self.store.load_run_outline(run_id)?;
        if !RunState::replay(&run.plan, &run.events).phase().is_final() {
            return Err(ApiError::conflict(format!(
                "run `{run_id}` has not ended: replay it once it has"
            )));
        }
        self.orchestrator
            .replay(run_id, options)
            .await
            .map_err(|e| match e {
                OrchestratorError::NotRecorded(e) => e.into(),
                e => ApiError::internal(e.to_string()),
            })
    }

    /// Stops run `run_id` and rolls back what it did, as Ctrl-C does. A run waiting for a
    /// person is started to be rolled back.
    pub async fn cancel(self: &Arc<Self>, run_id: &str) -> Result<(), ApiError> {
        let _one = self.deciding.lock().await;
        if let Some(cancel) = self.cancels().get(run_id) {
            cancel.cancel();
            return Ok(());
        }
        match self.state(run_id)?.phase() {
            RunPhase::AwaitingApproval => Err(ApiError::conflict(format!(
                "run `{run_id}` has not started: reject its plan instead"
            ))),
            phase if phase.is_final() => Err(ApiError::conflict(format!(
                "run `{run_id}` is already over ({})",
                phase.name()
            ))),
            _ => {
                let cancel = CancelToken::new();
                cancel.cancel();
                self.start_with(run_id, cancel);
                Ok(())
            }
        }
    }

    /// The tool calls waiting for a person, in every run, oldest first.
    pub fn pending_approvals(&self) -> Result<Vec<PendingCall>, ApiError> {
        let mut pending = Vec::new();
        for (summary, state) in self.unfinished()? {
            for request in state.pending_approvals() {
                pending.push(PendingCall::of(&summary.run_id, &state, request));
            }
        }
        pending.sort_by_key(|p| p.asked_ms);
        Ok(pending)
    }

    /// Puts a person's decision on tool call `approval_id` (`RUN_ID:SEQ`) on record, then
    /// carries the run on.
    pub async fn decide(
        self: &Arc<Self>,
        approval_id: &str,
        decision: CallDecision,
        reason: Option<String>,
        by: &str,
    ) -> Result<(), ApiError> {
        let (run_id, seq) = parse_approval_id(approval_id)?;
        let _one = self.deciding.lock().await;
        self.wait_until_parked(run_id).await?;
        let state = self.state(run_id)?;
        let request = state
            .approval_requests()
            .iter()
            .find(|r| r.seq == seq)
            .ok_or_else(|| ApiError::not_found(format!("no approval `{approval_id}`")))?;
        if request.decision.is_some() {
            return Err(ApiError::conflict(format!(
                "approval `{approval_id}` is already decided"
            )));
        }
        if state.end().is_some() {
            return Err(ApiError::conflict(format!(
                "run `{run_id}` is over: the call will not be made"
            )));
        }
        let approved = decision != CallDecision::Deny;
        let edited_args = match decision {
            CallDecision::Edit(args) => Some(self.check_args(&request.tool, args)?),
            _ => None,
        };
        let mut event = Event::new(EventKind::Approval {
            call_id: request.call_id.clone(),
            tool: request.tool.clone(),
            approved,
            reason,
            by: Some(by.to_owned()),
            asked_args: edited_args.is_some().then(|| request.args.clone()),
            edited_args,
        });
        event.step_id = request.step.map(|i| Arc::clone(&state.steps()[i].id));
        self.append(run_id, event)?;
        self.start(run_id);
        Ok(())
    }

    /// `args` when they fit tool `tool`'s parameters; otherwise 422 naming each field.
    fn check_args(&self, tool: &str, args: Value) -> Result<Value, ApiError> {
        let Some(found) = self.tools.get(tool) else {
            return Ok(args);
        };
        let problems = found.spec().argument_problems(&args);
        if problems.is_empty() {
            return Ok(args);
        }
        let problems = problems
            .iter()
            .map(|p| {
                let field = match p.path.as_str() {
                    "" => "args".to_owned(),
                    path if path.starts_with('[') => format!("args{path}"),
                    path => format!("args.{path}"),
                };
                Problem::at(field, p.message.clone())
            })
            .collect();
        Err(ApiError::unprocessable(
            format!("the edited arguments do not fit tool `{tool}`"),
            problems,
        ))
    }

    /// Waits until run `run_id` runs nothing (a decision is recorded only then, so that the
    /// journal is written by one hand at a time).
    async fn wait_until_parked(&self, run_id: &str) -> Result<(), ApiError> {
        let Some(mut done) = self.active().get(run_id).cloned() else {
            return Ok(());
        };
        let finished = tokio::time::timeout(PARK_WAIT, done.wait_for(|done| *done)).await;
        match finished {
            Ok(_) => Ok(()),
            Err(_) => Err(ApiError::conflict(format!(
                "run `{run_id}` is still finishing running steps; decide again in a moment"
            ))),
        }
    }

    /// Carries run `run_id` on, unless it already runs here.
    pub fn start(self: &Arc<Self>, run_id: &str) {
        self.start_with(run_id, CancelToken::new());
    }

    /// Whether it started the run (`false`: it runs here already).
    fn start_with(self: &Arc<Self>, run_id: &str, cancel: CancelToken) -> bool {
        let mut active = self.active();
        if active.contains_key(run_id) {
            return false;
        }
        let (done, watcher) = watch::channel(false);
        active.insert(run_id.to_owned(), watcher);
        self.cancels().insert(run_id.to_owned(), cancel.clone());
        drop(active);
        let runs = Arc::clone(self);
        let run_id = run_id.to_owned();
        tokio::spawn(async move {
            runs.drive(&run_id, cancel).await;
            runs.active().remove(&run_id);
            runs.cancels().remove(&run_id);
            let _ = done.send(true);
        });
        true
    }

    /// Carries a run on until it ends or parks; a decision recorded while its last steps were
    /// still running carries it on again at once.
    async fn drive(&self, run_id: &str, cancel: CancelToken) {
        let Ok(_slot) = Arc::clone(&self.slots).acquire_owned().await else {
            return;
        };
        loop {
            match self.store.load_run_outline(run_id) {
                Ok(run) => self.hub.open(run_id, run.events.len()),
                Err(e) => {
                    tracing::error!(run = run_id, error = %e, "cannot read the run");
                    return;
                }
            }
            let outcome = self
                .orchestrator
                .resume_with_cancel(run_id, cancel.clone())
                .await;
            match outcome {
                Err(OrchestratorError::AwaitingApproval { steps, .. }) => {
                    tracing::info!(run = run_id, ?steps, "waiting for approval");
                    if self.decided_while_parking(run_id) {
                        continue;
                    }
                    self.hub.pause(run_id);
                }
                Ok((_, result)) => {
                    tracing::info!(run = run_id, success = result.success, "run ended");
                    self.hub.close(run_id);
                }
                Err(e) => {
                    tracing::warn!(run = run_id, error = %e, "run stopped");
                    self.hub.close(run_id);
                }
            }
            return;
        }
    }

    /// Whether a parked step of run `run_id` has its decision on record already.
    fn decided_while_parking(&self, run_id: &str) -> bool {
        let Ok(state) = self.state(run_id) else {
            return false;
        };
        (0..state.steps().len()).any(|i| {
            state.is_parked(i)
                && state
                    .approval_requests()
                    .iter()
                    .any(|r| r.step == Some(i) && r.decision.is_some())
                && state.pending_approvals().all(|r| r.step != Some(i))
        })
    }

    fn record(&self, run_id: &str, kind: EventKind) -> Result<(), ApiError> {
        self.append(run_id, Event::new(kind))
    }

    /// Appends an event to a run that runs nothing now, and shows it to the run's streams.
    fn append(&self, run_id: &str, mut event: Event) -> Result<(), ApiError> {
        event.run_id = Some(Arc::from(run_id));
        if let Some(redacted) = self.orchestrator.redactor().and_then(|r| event.redacted(r)) {
            event = redacted;
        }
        self.store.append(&event)?;
        let recorded = self.store.load_run_outline(run_id)?.events.len();
        self.hub.open(run_id, recorded.saturating_sub(1));
        self.hub.publish(&event);
        Ok(())
    }

    /// `plan` as the store may keep it: redacted as the workspace says (`redact:`). A value
    /// redacted here is not there when the run starts: plans pass secrets as `{{env.NAME}}`.
    fn stored(&self, plan: Plan) -> Plan {
        match self.orchestrator.redacted_plan(&plan) {
            std::borrow::Cow::Owned(redacted) => redacted,
            std::borrow::Cow::Borrowed(_) => plan,
        }
    }

    fn redacted_text(&self, mut text: String) -> String {
        if let Some(redactor) = self.orchestrator.redactor() {
            redactor.redact_string(&mut text);
        }
        text
    }

    fn active(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cancels(&self) -> MutexGuard<'_, HashMap<String, CancelToken>> {
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Suspends every run carried on now (no new step starts; running steps get their grace
    /// period) and waits up to `wait` for them to stop. They stay resumable: the next start of
    /// the server picks them up.
    pub async fn suspend_all(&self, wait: Duration) {
        for cancel in self.cancels().values() {
            cancel.suspend();
        }
        let watchers: Vec<_> = self.active().values().cloned().collect();
        let all = futures::future::join_all(watchers.into_iter().map(|mut done| async move {
            let _ = done.wait_for(|done| *done).await;
        }));
        let _ = tokio::time::timeout(wait, all).await;
    }

    /// Whether run `run_id` is carried on by this server right now.
    pub fn is_active(&self, run_id: &str) -> bool {
        self.active().contains_key(run_id)
    }
}

/// A tool call waiting for a person.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingCall {
    /// `RUN_ID:SEQ`: the run and the position of the request in its journal.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The step whose call it is.
    pub step_id: Option<String>,
    /// The tool.
    pub tool: String,
    /// The arguments asked for.
    pub args: Value,
    /// `execute` or `compensate`.
    pub purpose: agenthelm::trace::CallPurpose,
    /// When it was asked, RFC 3339.
    pub asked_at: String,
    #[serde(skip)]
    asked_ms: u64,
}

impl PendingCall {
    fn of(run_id: &str, state: &RunState, request: &ApprovalRequestRecord) -> PendingCall {
        PendingCall {
            id: approval_id(run_id, request.seq),
            run_id: run_id.to_owned(),
            step_id: request.step.map(|i| state.steps()[i].id.to_string()),
            tool: request.tool.clone(),
            args: request.args.clone(),
            purpose: request.purpose,
            asked_at: agenthelm_workspace::timestamp::format_ms(request.asked_ms),
            asked_ms: request.asked_ms,
        }
    }
}

/// The id of the approval request at position `seq` of run `run_id`.
pub fn approval_id(run_id: &str, seq: usize) -> String {
    format!("{run_id}:{seq}")
}

fn parse_approval_id(id: &str) -> Result<(&str, usize), ApiError> {
    id.rsplit_once(':')
        .and_then(|(run, seq)| Some((run, seq.parse().ok()?)))
        .ok_or_else(|| {
            ApiError::not_found(format!("no approval `{id}` (ids look like `RUN_ID:SEQ`)"))
        })
}

fn review(approved: bool, by: &str, reason: Option<String>, edited: bool) -> EventKind {
    EventKind::PlanReviewed {
        approved,
        by: by.to_owned(),
        reason,
        edited,
    }
}

/// 409 unless run `run_id` waits for its plan's review.
fn expect_review(state: &RunState, run_id: &str) -> Result<(), ApiError> {
    match state.phase() {
        RunPhase::AwaitingApproval => Ok(()),
        phase => Err(ApiError::conflict(format!(
            "run `{run_id}` does not wait for approval of its plan (it is {})",
            phase.name()
        ))),
    }
}
