//! Running a recorded run again from its journal: every model answer and tool result is taken
//! from the record instead of being asked for, and the first point where the run goes another
//! way is kept as a [`Divergence`].
//!
//! The [`ReplaySource`] is built from the recorded run's [`RunState`] (the one reader of its
//! events) and carried by each step's [`StepContext`](super::StepContext): the model-call path
//! asks it for the next answer of the step, the tool invoker for the outcome of a call id, and
//! the scheduler checks each step's dispatch and final status against it.

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::approval::{ApprovalDecision, ApprovalHandler, ApprovalRequest};
use crate::budget::BudgetKind;
use crate::lm::{Completion, LmError, RequestDigest};
use crate::plan::StepStatus;
use crate::tool::ToolError;
use crate::trace::{
    ApprovalRecord, CallPurpose, EventKind, LlmCallRecord, RunState, ToolCallRecord,
};

/// Which side of a replay runs for real; by default neither (no model is called, no tool runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Run the tools for real (their outputs are then not taken from the journal, though their
    /// names and arguments are still compared with it).
    pub live_tools: bool,
    /// Call the models for real (their answers are then not taken from the journal, nor their
    /// requests compared with it).
    pub live_models: bool,
}

/// What made a replay go another way than the recorded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceKind {
    /// A step the recorded run does not have, or never started.
    PlanChanged,
    /// A step is carried out another way (its tool directly, or its agent).
    DispatchChanged,
    /// A model is asked something else (messages, instructions or settings).
    PromptChanged,
    /// A model is offered other tools (names, descriptions or parameter schemas).
    ToolsChanged,
    /// A call names another tool.
    ToolChanged,
    /// A call has other arguments.
    ArgsChanged,
    /// A tool's schema now rejects the arguments it was called with.
    SchemaRejects,
    /// The journal lacks what is needed to replay a call (written before answers were kept).
    MissingRecord,
    /// A call the recorded run did not make.
    ExtraCall,
    /// A step made fewer calls than the recorded run.
    FewerCalls,
    /// A step ended with another status.
    StatusChanged,
}

impl DivergenceKind {
    /// What differed, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            DivergenceKind::PlanChanged => "the plan changed",
            DivergenceKind::DispatchChanged => "the step is carried out another way",
            DivergenceKind::PromptChanged => "the model is asked something else",
            DivergenceKind::ToolsChanged => "the model is offered other tools",
            DivergenceKind::ToolChanged => "another tool is called",
            DivergenceKind::ArgsChanged => "the tool is called with other arguments",
            DivergenceKind::SchemaRejects => "the tool's schema rejects the recorded arguments",
            DivergenceKind::MissingRecord => "the journal has no record to replay",
            DivergenceKind::ExtraCall => "a call the recorded run did not make",
            DivergenceKind::FewerCalls => "fewer calls than the recorded run",
            DivergenceKind::StatusChanged => "the step ended differently",
        }
    }
}

/// The first point where a replay went another way than the recorded run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The step.
    pub step: String,
    /// The call: a tool call's id, or `model call N` (from 1) of the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// What differed.
    pub kind: DivergenceKind,
    /// What the recorded run did.
    pub expected: String,
    /// What the replay did.
    pub actual: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step `{}`", self.step)?;
        if let Some(call) = &self.call {
            write!(f, ", {call}")?;
        }
        write!(
            f,
            ": {} (recorded: {}; now: {})",
            self.kind.describe(),
            self.expected,
            self.actual
        )
    }
}

/// One step of the recorded run, as its latest attempt did it.
#[derive(Default)]
struct StepTape {
    status: StepStatus,
    started: bool,
    direct_tool: Option<String>,
    /// Its model calls, in order.
    models: Vec<LlmCallRecord>,
    /// Its tool calls (compensations included), by call id.
    tools: HashMap<String, ToolCallRecord>,
    /// How many calls that did its work it made (compensations are made after it ended).
    work_calls: usize,
    /// The latest decision on each of its calls, by call id.
    decisions: HashMap<String, ApprovalRecord>,
    models_used: AtomicUsize,
    work_calls_used: AtomicUsize,
}

/// A recorded run to replay: its steps' model answers, tool outcomes and approval decisions,
/// and the first [`Divergence`] found so far.
///
/// It is also the replay's [`ApprovalHandler`]: a call is decided as it was in the recorded
/// run, and no one is asked.
pub struct ReplaySource {
    options: ReplayOptions,
    steps: HashMap<String, StepTape>,
    first: Mutex<Option<Divergence>>,
    models_served: AtomicUsize,
    tools_served: AtomicUsize,
    /// A stop the replay cannot bring about by itself, and how many steps had started when
    /// it came.
    stop: Option<(usize, EventKind)>,
}

/// A stop that came from outside the recorded calls: a cancel (a person, Ctrl-C) or the time
/// limit (a replay runs at its own speed). Budgets of cost, tokens and calls are reached again
/// from the recorded usage, so they are not among these.
fn recorded_stop(state: &RunState) -> Option<(usize, EventKind)> {
    let (seq, event) = state.stopped_by()?;
    let external = match event {
        EventKind::RunCancelled { .. } => true,
        EventKind::BudgetExceeded { budget, .. } => *budget == BudgetKind::Duration,
        _ => false,
    };
    let started = state
        .steps()
        .iter()
        .filter(|s| s.started_seq.is_some_and(|at| at < seq))
        .count();
    external.then(|| (started, event.clone()))
}

impl ReplaySource {
    /// The recorded run's stop from outside (a cancel, its time limit), to be brought about
    /// again once as many steps have started as had then.
    pub(crate) fn recorded_stop(&self) -> Option<(usize, &EventKind)> {
        self.stop.as_ref().map(|(started, event)| (*started, event))
    }

    /// The recorded run whose state is `state`, replayed as `options` say.
    pub fn new(state: &RunState, options: ReplayOptions) -> Self {
        let mut steps: HashMap<String, StepTape> = state
            .steps()
            .iter()
            .map(|s| {
                let tape = StepTape {
                    status: s.status,
                    started: s.attempts > 0,
                    direct_tool: s.direct_tool.clone(),
                    ..StepTape::default()
                };
                (s.id.to_string(), tape)
            })
            .collect();
        // Only the calls of each step's latest attempt (a step run again after a restart
        // repeats its call ids).
        let latest = |step: Option<usize>, seq: usize| {
            let record = state.steps().get(step?)?;
            (seq > record.started_seq.unwrap_or(0)).then(|| record.id.to_string())
        };
        for call in state.llm_calls() {
            if let Some(tape) = latest(call.step, call.seq).and_then(|id| steps.get_mut(&id)) {
                tape.models.push(call.clone());
            }
        }
        for call in state.tool_calls() {
            if let Some(tape) = latest(call.step, call.seq).and_then(|id| steps.get_mut(&id)) {
                tape.work_calls += usize::from(call.purpose == CallPurpose::Execute);
                tape.tools.insert(call.call_id.clone(), call.clone());
            }
        }
        for decision in state.approvals() {
            let step = decision.step.and_then(|i| state.steps().get(i));
            if let Some(tape) = step.and_then(|s| steps.get_mut(&*s.id)) {
                tape.decisions
                    .insert(decision.call_id.clone(), decision.clone());
            }
        }
        ReplaySource {
            options,
            stop: recorded_stop(state),
            steps,
            first: Mutex::new(None),
            models_served: AtomicUsize::new(0),
            tools_served: AtomicUsize::new(0),
        }
    }

    /// The options it replays with.
    pub fn options(&self) -> ReplayOptions {
        self.options
    }

    /// The first divergence found, if any.
    pub fn divergence(&self) -> Option<Divergence> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many model answers were taken from the journal.
    pub fn models_served(&self) -> usize {
        self.models_served.load(Ordering::Relaxed)
    }

    /// How many tool outcomes were taken from the journal.
    pub fn tools_served(&self) -> usize {
        self.tools_served.load(Ordering::Relaxed)
    }

    /// Keeps `divergence` if it is the first, and gives the error text the replayed call or
    /// step fails with.
    pub(crate) fn diverge(&self, divergence: Divergence) -> String {
        let text = format!("replay diverged: {divergence}");
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(divergence);
        text
    }

    fn tape(&self, step: &str, call: Option<String>) -> Result<&StepTape, String> {
        match self.steps.get(step) {
            Some(tape) if tape.started => Ok(tape),
            found => Err(self.diverge(Divergence {
                step: step.to_owned(),
                call,
                kind: DivergenceKind::PlanChanged,
                expected: match found {
                    Some(_) => "the step never started".to_owned(),
                    None => "no such step".to_owned(),
                },
                actual: "the step runs".to_owned(),
            })),
        }
    }

    /// Checks how step `step` is carried out: `direct_tool` is the tool it calls directly, if
    /// any; `rejection` says why the recorded direct tool no longer takes its arguments.
    pub(crate) fn check_start(
        &self,
        step: &str,
        direct_tool: Option<&str>,
        rejection: impl FnOnce(&str) -> Option<String>,
    ) -> Result<(), String> {
        let tape = self.tape(step, None)?;
        if tape.direct_tool.as_deref() == direct_tool {
            return Ok(());
        }
        let how = |tool: Option<&str>| match tool {
            Some(tool) => format!("calls tool `{tool}` directly"),
            None => "goes to its agent".to_owned(),
        };
        let rejected = tape.direct_tool.as_deref().and_then(rejection);
        Err(self.diverge(Divergence {
            step: step.to_owned(),
            call: None,
            kind: match rejected {
                Some(_) => DivergenceKind::SchemaRejects,
                None => DivergenceKind::DispatchChanged,
            },
            expected: how(tape.direct_tool.as_deref()),
            actual: match rejected {
                Some(why) => format!("{} ({why})", how(direct_tool)),
                None => how(direct_tool),
            },
        }))
    }

    /// The recorded answer to the next model call of `step`, asked with a request of `digest`;
    /// `None` when models are called for real.
    pub(crate) fn model_answer(
        &self,
        step: &str,
        digest: &RequestDigest,
    ) -> Option<Result<Completion, LmError>> {
        if self.options.live_models {
            return None;
        }
        Some(
            self.recorded_answer(step, digest)
                .map_err(LmError::Replayed),
        )
    }

    fn recorded_answer(&self, step: &str, digest: &RequestDigest) -> Result<Completion, String> {
        let tape = self.tape(step, None)?;
        let n = tape.models_used.fetch_add(1, Ordering::Relaxed);
        let diverge = |kind, expected: String, actual: String| {
            self.diverge(Divergence {
                step: step.to_owned(),
                call: Some(format!("model call {}", n + 1)),
                kind,
                expected,
                actual,
            })
        };
        let Some(record) = tape.models.get(n) else {
            let expected = format!("{} model call(s)", tape.models.len());
            return Err(diverge(
                DivergenceKind::ExtraCall,
                expected,
                format!("model call {}", n + 1),
            ));
        };
        let Some(exchange) = &record.exchange else {
            let expected = "a model call without its answer on record".to_owned();
            let actual = "an answer is needed".to_owned();
            return Err(diverge(DivergenceKind::MissingRecord, expected, actual));
        };
        if let Some(recorded) = RequestDigest::parse(&exchange.request_digest) {
            let (kind, before, now) = if recorded.prompt != digest.prompt {
                (
                    DivergenceKind::PromptChanged,
                    recorded.prompt,
                    digest.prompt,
                )
            } else {
                (DivergenceKind::ToolsChanged, recorded.tools, digest.tools)
            };
            if before != now {
                let expected = format!("request {before:016x}");
                return Err(diverge(kind, expected, format!("request {now:016x}")));
            }
        }
        self.models_served.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = &record.error {
            return Err(error.clone());
        }
        Ok(Completion {
            text: exchange.text.clone(),
            tool_calls: exchange.tool_calls.clone(),
            usage: record.tokens,
            cost_usd: record.cost_usd,
            model: record.model.clone(),
        })
    }

    fn recorded_call(&self, step: &str, call_id: &str) -> Result<&ToolCallRecord, String> {
        let tape = self.tape(step, Some(call_id.to_owned()))?;
        tape.tools.get(call_id).ok_or_else(|| {
            self.diverge(Divergence {
                step: step.to_owned(),
                call: Some(call_id.to_owned()),
                kind: DivergenceKind::ExtraCall,
                expected: "no such call".to_owned(),
                actual: format!("call `{call_id}`"),
            })
        })
    }

    /// Counts a call of `step` made for `purpose`: a step must make as many calls doing its
    /// work as in the recorded run (see [`check_finish`](Self::check_finish)).
    pub(crate) fn note_call(&self, step: &str, purpose: CallPurpose) {
        if purpose != CallPurpose::Execute {
            return;
        }
        if let Some(tape) = self.steps.get(step) {
            tape.work_calls_used.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Checks that call `call_id` of `step` asks for the tool and arguments it asked for in the
    /// recorded run.
    pub(crate) fn check_call(
        &self,
        step: &str,
        call_id: &str,
        tool: &str,
        args: &Value,
    ) -> Result<(), String> {
        let record = self.recorded_call(step, call_id)?;
        let (kind, expected, actual) = if record.tool != tool {
            (
                DivergenceKind::ToolChanged,
                record.tool.clone(),
                tool.to_owned(),
            )
        } else if &record.args != args {
            (
                DivergenceKind::ArgsChanged,
                record.args.to_string(),
                args.to_string(),
            )
        } else {
            return Ok(());
        };
        Err(self.diverge(Divergence {
            step: step.to_owned(),
            call: Some(call_id.to_owned()),
            kind,
            expected,
            actual,
        }))
    }

    /// A call refused before it ran (bad arguments, denied): checks that the recorded run
    /// refused it too, with the same error.
    pub(crate) fn check_refusal(
        &self,
        step: &str,
        call_id: &str,
        error: &ToolError,
    ) -> Result<(), String> {
        let record = self.recorded_call(step, call_id)?;
        let now = error.to_string();
        if record.attempts == 0 && record.error.as_deref() == Some(now.as_str()) {
            return Ok(());
        }
        let kind = match error {
            ToolError::InvalidArguments { .. } => DivergenceKind::SchemaRejects,
            _ => DivergenceKind::StatusChanged,
        };
        let expected = match (&record.error, record.attempts) {
            (_, 1..) => format!("`{}` ran", record.tool),
            (Some(error), 0) => format!("refused: {error}"),
            (None, 0) => "not refused".to_owned(),
        };
        Err(self.diverge(Divergence {
            step: step.to_owned(),
            call: Some(call_id.to_owned()),
            kind,
            expected,
            actual: format!("refused: {now}"),
        }))
    }

    /// The recorded outcome of call `call_id` of `step` and its attempts; `None` when tools run
    /// for real.
    pub(crate) fn tool_outcome(
        &self,
        step: &str,
        call_id: &str,
    ) -> Option<(Result<Value, ToolError>, u32)> {
        if self.options.live_tools {
            return None;
        }
        let record = match self.recorded_call(step, call_id) {
            Ok(record) => record,
            Err(text) => return Some((Err(ToolError::Failed(text)), 0)),
        };
        self.tools_served.fetch_add(1, Ordering::Relaxed);
        let outcome = match (&record.output, &record.error) {
            (_, Some(error)) => Err(ToolError::Failed(error.clone())),
            (Some(output), None) => Ok(output.clone()),
            (None, None) => Ok(Value::Null),
        };
        Some((outcome, record.attempts))
    }

    /// Checks that `step` ended as it did in the recorded run, having made as many calls.
    pub(crate) fn check_finish(&self, step: &str, status: StepStatus) {
        let Some(tape) = self.steps.get(step) else {
            return;
        };
        let models = tape.models_used.load(Ordering::Relaxed);
        let calls = tape.work_calls_used.load(Ordering::Relaxed);
        let step = step.to_owned();
        let divergence = if tape.status != status && !undone_after(tape.status, status) {
            Divergence {
                step,
                call: None,
                kind: DivergenceKind::StatusChanged,
                expected: tape.status.to_string(),
                actual: status.to_string(),
            }
        } else if models < tape.models.len() && !self.options.live_models {
            Divergence {
                step,
                call: Some(format!("model call {}", models + 1)),
                kind: DivergenceKind::FewerCalls,
                expected: format!("{} model call(s)", tape.models.len()),
                actual: format!("{models} model call(s)"),
            }
        } else if calls < tape.work_calls {
            Divergence {
                step,
                call: None,
                kind: DivergenceKind::FewerCalls,
                expected: format!("{} tool call(s)", tape.work_calls),
                actual: format!("{calls} tool call(s)"),
            }
        } else {
            return;
        };
        self.diverge(divergence);
    }

    /// Checks a step's status once the replay ended (after any rollback).
    pub(crate) fn check_final(&self, step: &str, status: StepStatus) {
        match self.steps.get(step) {
            Some(tape) if tape.status != status => {
                self.diverge(Divergence {
                    step: step.to_owned(),
                    call: None,
                    kind: DivergenceKind::StatusChanged,
                    expected: tape.status.to_string(),
                    actual: status.to_string(),
                });
            }
            _ => {}
        }
    }

    /// Checks that every step the recorded run started is among `steps` (the replayed plan's).
    pub(crate) fn check_removed<'s>(&self, steps: impl Iterator<Item = &'s str>) {
        let kept: std::collections::HashSet<&str> = steps.collect();
        let mut removed: Vec<&String> = self
            .steps
            .iter()
            .filter(|(id, tape)| tape.started && !kept.contains(id.as_str()))
            .map(|(id, _)| id)
            .collect();
        removed.sort();
        if let Some(step) = removed.first() {
            self.diverge(Divergence {
                step: (*step).clone(),
                call: None,
                kind: DivergenceKind::PlanChanged,
                expected: "the step ran".to_owned(),
                actual: "no such step".to_owned(),
            });
        }
    }

    /// The decision the recorded run had on this call.
    fn recorded_decision(&self, request: &ApprovalRequest) -> ApprovalDecision {
        let step = request.step_id.as_deref().unwrap_or_default();
        let record = self
            .steps
            .get(step)
            .and_then(|tape| tape.decisions.get(&request.call_id));
        match record {
            Some(record) if !record.approved => ApprovalDecision::Deny {
                reason: record.reason.clone(),
            },
            Some(record) => match &record.edited_args {
                Some(args) => ApprovalDecision::ApproveWithArgs(args.clone()),
                None => ApprovalDecision::Approve,
            },
            None => ApprovalDecision::Deny {
                reason: Some(self.diverge(Divergence {
                    step: step.to_owned(),
                    call: Some(request.call_id.clone()),
                    kind: DivergenceKind::MissingRecord,
                    expected: "no approval decision on record".to_owned(),
                    actual: format!("`{}` asks for approval", request.tool),
                })),
            },
        }
    }
}

/// A step the rollback undid ends `compensated`: when it finishes it has not been rolled back
/// yet (the status after the rollback is checked at the end).
fn undone_after(recorded: StepStatus, now: StepStatus) -> bool {
    recorded == StepStatus::Compensated && matches!(now, StepStatus::Completed | StepStatus::Failed)
}

#[async_trait::async_trait]
impl ApprovalHandler for ReplaySource {
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
        self.recorded_decision(request)
    }
}

impl fmt::Debug for ReplaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaySource")
            .field("options", &self.options)
            .field("steps", &self.steps.len())
            .field("divergence", &self.divergence())
            .finish_non_exhaustive()
    }
}
