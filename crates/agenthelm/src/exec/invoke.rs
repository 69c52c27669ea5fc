//! Calling a tool under its contract: argument validation, approval, attempts with backoff,
//! per-attempt timeouts, panic containment, and events.

use futures::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use super::StepContext;
use crate::approval::{ApprovalDecision, ApprovalRequest};
use crate::tool::{check_args, panic_message, Tool, ToolCallInfo, ToolError};
use crate::trace::{CallPurpose, EventKind};

/// Calls `tool` with `args` under its contract and records what happened in `ctx`.
///
/// `on_record` is emitted once the call is admitted (arguments valid, approval given) and flushed
/// with everything before it, just before the first attempt: the latest moment a journal can
/// note that the call is about to happen.
pub(crate) async fn invoke(
    tool: &Arc<dyn Tool>,
    args: Value,
    ctx: &StepContext,
    purpose: CallPurpose,
    on_record: Option<EventKind>,
) -> Result<Value, ToolError> {
    let spec = tool.spec();
    let call_id = ctx.next_call_id(purpose);
    let started = Instant::now();
    let mut attempts = 0;
    let mut final_args = args;
    let outcome = match admit(tool, &mut final_args, &call_id, ctx, purpose).await {
        Ok(()) => {
            let info = ToolCallInfo {
                idempotency_key: format!("{}:{call_id}", ctx.run_id().unwrap_or("-")),
                call_id: call_id.clone(),
                run_id: ctx.run_id().map(str::to_owned),
                step_id: ctx.step_id().map(str::to_owned),
                attempt: 0,
            };
            if purpose == CallPurpose::Execute {
                ctx.record_intent(spec, &call_id, &final_args);
            }
            if let Some(event) = on_record {
                ctx.emit(event);
            }
            // What led to the call (the step's start, an approval, the intent of a call with
            // partial effects) is on record first.
            match ctx.sink().flush() {
                Ok(()) => attempt_all(tool, &final_args, info, ctx, &mut attempts).await,
                Err(e) => Err(ToolError::Failed(format!(
                    "not called: the run's journal could not be written ({e})"
                ))),
            }
        }
        Err(e) => Err(e),
    };
    if purpose == CallPurpose::Execute && attempts > 0 {
        ctx.record_effect(spec, &call_id, &final_args, &outcome);
        // A failed write stops the run at its next step; the call itself is done either way.
        let _ = ctx.sink().flush();
    }
    let (output, error) = match &outcome {
        Ok(value) => (Some(value.clone()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    ctx.emit(EventKind::ToolCall {
        call_id,
        tool: spec.name.clone(),
        args: final_args,
        output,
        error,
        attempts,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        purpose,
    });
    outcome
}

/// Validates the arguments and asks for approval when the contract requires it.
async fn admit(
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
    let request = ApprovalRequest {
        call_id: call_id.to_owned(),
        run_id: ctx.run_id().map(str::to_owned),
        step_id: ctx.step_id().map(str::to_owned),
        agent: ctx.agent().map(str::to_owned),
        tool: spec.name.clone(),
        description: spec.description.clone(),
        args: args.clone(),
        purpose,
    };
    let decision = ctx.approval_handler().approve(&request).await;
    let (approved, reason) = match &decision {
        ApprovalDecision::Approve => (true, None),
        ApprovalDecision::ApproveWithArgs(_) => {
            (true, Some("approved with edited arguments".to_owned()))
        }
        ApprovalDecision::Deny { reason } => (false, reason.clone()),
    };
    ctx.emit(EventKind::Approval {
        call_id: call_id.to_owned(),
        tool: spec.name.clone(),
        approved,
        reason: reason.clone(),
    });
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
                tokio::time::sleep(ctx.retry_policy().delay(*attempts)).await;
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
