//! Calling a tool under its contract: argument validation, approval, attempts with backoff,
//! per-attempt timeouts, panic containment, and events.

use futures::FutureExt;
use serde_json::Value;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use super::{ActionPermit, JournalError, StepContext};
use crate::approval::{ApprovalDecision, ApprovalRequest};
use crate::tool::{check_args, panic_message, Tool, ToolCallInfo, ToolError};
use crate::trace::{CallPurpose, EventKind};

/// Calls `tool` with `args` under its contract and records what happened in `ctx`: admission,
/// then the gate, then the call.
pub(crate) async fn invoke(
    tool: &Arc<dyn Tool>,
    args: Value,
    ctx: &StepContext,
    purpose: CallPurpose,
) -> Result<Value, ToolError> {
    invoke_recorded(tool, args, ctx, purpose)
        .await
        .map(|(output, _)| output)
}

/// [`invoke`], also giving the id of the call, whose [`ToolCall`](EventKind::ToolCall) event
/// holds the output: an event that needs the output again can name the call instead.
pub(crate) async fn invoke_recorded(
    tool: &Arc<dyn Tool>,
    args: Value,
    ctx: &StepContext,
    purpose: CallPurpose,
) -> Result<(Value, String), ToolError> {
    let admitted = admit(tool, args, ctx, purpose).await?;
    match ctx.sink().before_action() {
        Ok(permit) => {
            let call_id = admitted.call_id.clone();
            let output = admitted.call(ctx, permit).await?;
            Ok((output, call_id))
        }
        Err(e) => Err(admitted.not_called(ctx, &e)),
    }
}

/// A call whose arguments are valid and that was approved where its contract asks for it: all
/// that is left is to pass the gate and call.
pub(crate) struct Admitted<'t> {
    tool: &'t Arc<dyn Tool>,
    args: Value,
    call_id: String,
    purpose: CallPurpose,
    started: Instant,
    /// The call's span (`execute_tool <name>`), from admission to its record.
    span: tracing::Span,
}

/// Validates `args` and asks for approval when the contract requires it. A call refused here is
/// recorded as a tool call that made no attempt.
///
/// For a call with partial effects the intent is recorded too, so that it reaches the journal
/// at the gate, before the call.
pub(crate) async fn admit<'t>(
    tool: &'t Arc<dyn Tool>,
    args: Value,
    ctx: &StepContext,
    purpose: CallPurpose,
) -> Result<Admitted<'t>, ToolError> {
    let call_id = ctx.next_call_id(purpose);
    admit_as(tool, args, ctx, purpose, call_id).await
}

/// [`admit`] under a call id the caller chose: one that must be the same in every attempt of a
/// run (a compensating action's), so that its idempotency key is too.
pub(crate) async fn admit_as<'t>(
    tool: &'t Arc<dyn Tool>,
    mut args: Value,
    ctx: &StepContext,
    purpose: CallPurpose,
    call_id: String,
) -> Result<Admitted<'t>, ToolError> {
    let started = Instant::now();
    let span = tool_span(&tool.spec().name, &call_id, purpose);
    let approved = approve(tool, &mut args, &call_id, ctx, purpose)
        .instrument(span.clone())
        .await;
    let admitted = Admitted {
        tool,
        args,
        call_id,
        purpose,
        started,
        span,
    };
    match replay_check(&admitted, approved, ctx) {
        Ok(()) => {
            if purpose == CallPurpose::Execute {
                ctx.record_intent(tool.spec(), &admitted.call_id, &admitted.args);
            }
            Ok(admitted)
        }
        // Not refused: it waits, on record as a request (and runs once decided).
        Err(e @ ToolError::AwaitingApproval { .. }) => Err(e),
        Err(e) => {
            admitted.record(ctx, &Err(e.clone()), 0);
            Err(e)
        }
    }
}

/// In a replay, checks the call against the recorded run: the same tool and arguments when it
/// was admitted, the same refusal when it was not. A difference fails the call (it is then not
/// made), naming the divergence.
fn replay_check(
    call: &Admitted<'_>,
    approved: Result<(), ToolError>,
    ctx: &StepContext,
) -> Result<(), ToolError> {
    let Some((source, step)) = ctx.replay() else {
        return approved;
    };
    source.note_call(step, call.purpose);
    let checked = match &approved {
        Ok(()) => source.check_call(step, &call.call_id, call.tool_name(), &call.args),
        Err(ToolError::AwaitingApproval { .. }) => return approved,
        Err(e) => source.check_refusal(step, &call.call_id, e),
    };
    checked.map_err(ToolError::Failed).and(approved)
}

impl Admitted<'_> {
    /// The tool's name.
    pub(crate) fn tool_name(&self) -> &str {
        &self.tool.spec().name
    }

    /// The arguments the call will get (after any edit by the approver).
    pub(crate) fn args(&self) -> &Value {
        &self.args
    }

    /// Makes the attempts (with backoff and per-attempt timeouts) and records the call and its
    /// effect. The permit proves that what led here is on record.
    pub(crate) async fn call(
        self,
        ctx: &StepContext,
        _permit: ActionPermit,
    ) -> Result<Value, ToolError> {
        let info = ToolCallInfo {
            idempotency_key: format!("{}:{}", ctx.run_id().unwrap_or("-"), self.call_id),
            call_id: self.call_id.clone(),
            run_id: ctx.run_id().map(str::to_owned),
            step_id: ctx.step_id().map(str::to_owned),
            attempt: 0,
        };
        let mut attempts = 0;
        // A replay takes the outcome from the recorded run, unless it runs tools for real.
        let replayed = ctx
            .replay()
            .and_then(|(source, step)| source.tool_outcome(step, &self.call_id));
        let outcome = match replayed {
            Some((outcome, recorded_attempts)) => {
                attempts = recorded_attempts;
                outcome
            }
            None => match self.revealed(ctx) {
                Ok(args) => {
                    attempt_all(self.tool, &args, info, ctx, &mut attempts)
                        .instrument(self.span.clone())
                        .await
                }
                Err(error) => {
                    self.record(ctx, &Err(error.clone()), 0);
                    return Err(error);
                }
            },
        };
        if self.purpose == CallPurpose::Execute {
            ctx.record_effect(self.tool.spec(), &self.call_id, &self.args, &outcome);
            // A failed write stops the run at its next gate; the call itself is done either way.
            let _ = ctx.sink().flush();
        }
        self.record(ctx, &outcome, attempts);
        outcome
    }

    /// The arguments the tool gets: secrets the journal does not hold filled in, in memory
    /// only (the events keep `{{env.NAME}}` and markers); an error when one is not there.
    fn revealed(&self, ctx: &StepContext) -> Result<Cow<'_, Value>, ToolError> {
        match ctx.sink().redactor().map(|r| r.reveal(&self.args)) {
            None => Ok(Cow::Borrowed(&self.args)),
            Some(Ok(args)) => Ok(args),
            Some(Err(hidden)) => Err(ToolError::Failed(format!("not called: {hidden}"))),
        }
    }

    /// Records that the call was not made because the gate refused it, and says why.
    pub(crate) fn not_called(self, ctx: &StepContext, error: &JournalError) -> ToolError {
        let error = ToolError::Failed(format!("not called: {error}"));
        let outcome = Err(error.clone());
        self.record(ctx, &outcome, 0);
        error
    }

    fn record(&self, ctx: &StepContext, outcome: &Result<Value, ToolError>, attempts: u32) {
        self.span
            .record("agenthelm.attempts", crate::trace::span_count(attempts));
        if let Err(e) = outcome {
            self.span.record("error.type", e.kind());
            self.span.record("otel.status_code", "ERROR");
        }
        let (output, error) = match outcome {
            Ok(value) => (Some(value.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        ctx.emit(EventKind::ToolCall {
            call_id: self.call_id.clone(),
            tool: self.tool.spec().name.clone(),
            args: self.args.clone(),
            output,
            error,
            attempts,
            duration_ms: self.started.elapsed().as_secs_f64() * 1e3,
            purpose: self.purpose,
        });
    }
}

/// The span of one tool call, with OpenTelemetry GenAI names; never its arguments or output.
fn tool_span(tool: &str, call_id: &str, purpose: CallPurpose) -> tracing::Span {
    tracing::info_span!(
        "execute_tool",
        otel.name = %format_args!("execute_tool {tool}"),
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        gen_ai.tool.call.id = call_id,
        agenthelm.purpose = match purpose {
            CallPurpose::Execute => "execute",
            CallPurpose::Compensate => "compensate",
        },
        agenthelm.attempts = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Validates the arguments and asks for approval when the contract requires it.
async fn approve(
    tool: &Arc<dyn Tool>,
    args: &mut Value,
    call_id: &str,
    ctx: &StepContext,
    purpose: CallPurpose,
) -> Result<(), ToolError> {
    let spec = tool.spec();
    check_args(tool, args)?;
    if !spec.contract.requires_approval {
        return Ok(());
    }
    // A decision a person put on record while the step was parked: no one is asked again.
    let step = ctx.step_id();
    let decided = ctx
        .sink()
        .state(|state| {
            let step = step.and_then(|id| state.position(id));
            let record = state.decision_for(step, call_id, &spec.name, &as_recorded(ctx, args))?;
            let decision = match (record.approved, &record.edited_args) {
                (false, _) => ApprovalDecision::Deny {
                    reason: record.reason.clone(),
                },
                (true, Some(edited)) => ApprovalDecision::ApproveWithArgs(edited.clone()),
                (true, None) => ApprovalDecision::Approve,
            };
            Some(decision)
        })
        .flatten();
    let decision = match decided {
        Some(decision) => decision,
        None => {
            let request = ApprovalRequest {
                call_id: call_id.to_owned(),
                run_id: ctx.run_id().map(str::to_owned),
                step_id: step.map(str::to_owned),
                agent: ctx.agent().map(str::to_owned),
                tool: spec.name.clone(),
                description: spec.description.clone(),
                args: args.clone(),
                purpose,
            };
            let decision = ctx.approval_handler().approve(&request).await;
            if decision == ApprovalDecision::Defer {
                return defer(request, ctx);
            }
            record_decision(ctx, &request, &decision);
            decision
        }
    };
    match decision {
        ApprovalDecision::Approve => Ok(()),
        ApprovalDecision::ApproveWithArgs(edited) => {
            *args = edited;
            check_args(tool, args)
        }
        ApprovalDecision::Deny { reason } => Err(ToolError::Denied {
            tool: spec.name.clone(),
            reason,
        }),
        ApprovalDecision::Defer => Err(ToolError::AwaitingApproval {
            tool: spec.name.clone(),
        }),
    }
}

/// Records the handler's decision on a call, with who decided (as the handler says) and, for
/// an edit, the arguments asked for.
fn record_decision(ctx: &StepContext, request: &ApprovalRequest, decision: &ApprovalDecision) {
    let (approved, reason, edited_args) = match decision {
        ApprovalDecision::Approve => (true, None, None),
        ApprovalDecision::ApproveWithArgs(args) => (
            true,
            Some("approved with edited arguments".to_owned()),
            Some(args.clone()),
        ),
        ApprovalDecision::Deny { reason } => (false, reason.clone(), None),
        ApprovalDecision::Defer => return,
    };
    let by = ctx.approval_handler().decider();
    tracing::info!(
        approved,
        edited = edited_args.is_some(),
        by = by.as_deref(),
        "tool call decided"
    );
    ctx.emit(EventKind::Approval {
        call_id: request.call_id.clone(),
        tool: request.tool.clone(),
        approved,
        reason,
        by,
        asked_args: edited_args.is_some().then(|| request.args.clone()),
        edited_args,
    });
}

/// Asks `ctx`'s approval handler about the calls of its step that wait for a decision (asked
/// by another process: a worker), records each decision made and returns how many were made.
pub(crate) async fn decide_waiting(ctx: &StepContext) -> usize {
    let waiting: Vec<ApprovalRequest> = ctx
        .sink()
        .state(|state| {
            let step = ctx.step_id().and_then(|id| state.position(id));
            state
                .pending_approvals()
                .filter(|r| r.step == step && step.is_some())
                .map(|r| ApprovalRequest {
                    call_id: r.call_id.clone(),
                    run_id: ctx.run_id().map(str::to_owned),
                    step_id: ctx.step_id().map(str::to_owned),
                    agent: ctx.agent().map(str::to_owned),
                    tool: r.tool.clone(),
                    description: String::new(),
                    args: r.args.clone(),
                    purpose: r.purpose,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut decided = 0;
    for request in waiting {
        let decision = ctx.approval_handler().approve(&request).await;
        if decision != ApprovalDecision::Defer {
            record_decision(ctx, &request, &decision);
            decided += 1;
        }
    }
    decided
}

/// Puts a request for a person's decision on record (once: a step parked again asks under the
/// same record) and parks the step. A compensation cannot wait: it is denied.
fn defer(request: ApprovalRequest, ctx: &StepContext) -> Result<(), ToolError> {
    if request.purpose == CallPurpose::Compensate {
        let reason = "a compensating call cannot wait for a person's decision".to_owned();
        let decision = ApprovalDecision::deny(reason.clone());
        record_decision(ctx, &request, &decision);
        return Err(ToolError::Denied {
            tool: request.tool,
            reason: Some(reason),
        });
    }
    let asked = ctx
        .sink()
        .state(|state| {
            let step = request.step_id.as_deref().and_then(|id| state.position(id));
            let args = as_recorded(ctx, &request.args);
            state
                .request_for(step, &request.call_id, &request.tool, &args)
                .is_some()
        })
        .unwrap_or(false);
    if !asked {
        ctx.emit(EventKind::ApprovalRequested {
            call_id: request.call_id,
            tool: request.tool.clone(),
            args: request.args,
            purpose: request.purpose,
        });
    }
    ctx.park();
    Err(ToolError::AwaitingApproval { tool: request.tool })
}

/// `args` as the journal (and so the run state) has them: redacted when the run redacts.
fn as_recorded<'a>(ctx: &StepContext, args: &'a Value) -> Cow<'a, Value> {
    match ctx.sink().redactor() {
        Some(redactor) => {
            let mut recorded = args.clone();
            redactor.redact_value(&mut recorded);
            Cow::Owned(recorded)
        }
        None => Cow::Borrowed(args),
    }
}

async fn attempt_all(
    tool: &Arc<dyn Tool>,
    args: &Value,
    mut info: ToolCallInfo,
    ctx: &StepContext,
    attempts: &mut u32,
) -> Result<Value, ToolError> {
    let contract = &tool.spec().contract;
    loop {
        *attempts += 1;
        info.attempt = *attempts;
        let result = attempt(tool, args.clone(), &info).await;
        match result {
            Err(e) if e.is_retryable() && *attempts <= contract.retries => {
                let delay = ctx.retry_policy().delay(*attempts);
                tracing::warn!(
                    attempt = *attempts,
                    error.type = e.kind(),
                    retry_in_ms = delay.as_millis() as u64,
                    "tool call failed; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

async fn attempt(
    tool: &Arc<dyn Tool>,
    args: Value,
    info: &ToolCallInfo,
) -> Result<Value, ToolError> {
    let spec = tool.spec();
    let call = AssertUnwindSafe(tool.call(args, info)).catch_unwind();
    let outcome = match spec.contract.timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(ToolError::Timeout {
                    tool: spec.name.clone(),
                    after: limit,
                })
            }
        },
        None => call.await,
    };
    outcome.unwrap_or_else(|panic| {
        Err(ToolError::Failed(format!(
            "tool `{}` panicked: {}",
            spec.name,
            panic_message(panic.as_ref())
        )))
    })
}
