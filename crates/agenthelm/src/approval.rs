//! Approval of tool calls whose contract says `requires_approval`.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};

use crate::trace::CallPurpose;

/// A tool call waiting for a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRequest {
    /// Stable id of the call: the same id is never used for two calls of a run, so answers given
    /// out of order (parallel steps) match the right call.
    pub call_id: String,
    /// The plan run, if any.
    pub run_id: Option<String>,
    /// The plan step, if any.
    pub step_id: Option<String>,
    /// The agent making the call, if any.
    pub agent: Option<String>,
    /// The tool.
    pub tool: String,
    /// What the tool does.
    pub description: String,
    /// The arguments it would be called with.
    pub args: Value,
    /// Doing the work, or undoing it during rollback.
    pub purpose: CallPurpose,
}

/// An approval handler's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalDecision {
    /// Go ahead as asked.
    Approve,
    /// Go ahead with these arguments instead (they are validated against the tool's schema).
    ApproveWithArgs(Value),
    /// Do not call the tool.
    Deny {
        /// Why, for the record and the model.
        reason: Option<String>,
    },
    /// A person decides later. The request is put on record
    /// ([`ApprovalRequested`](crate::EventKind::ApprovalRequested)), the call is not made,
    /// and its step is parked: the run stops without ending once its other running steps are
    /// done. Put a decision on record ([`Approval`](crate::EventKind::Approval) with the same
    /// step and call id) and resume the run: the step runs again, finds the decision and goes
    /// on without asking. For a compensating call, which cannot wait, it counts as a denial.
    Defer,
}

impl ApprovalDecision {
    /// A denial with a reason.
    pub fn deny(reason: impl Into<String>) -> Self {
        ApprovalDecision::Deny {
            reason: Some(reason.into()),
        }
    }
}

/// Decides whether a tool call that requires approval may run.
///
/// Closures implement it too:
///
/// ```
/// use agenthelm::prelude::*;
///
/// let only_reads = |request: &ApprovalRequest| {
///     if request.tool.starts_with("read_") {
///         ApprovalDecision::Approve
///     } else {
///         ApprovalDecision::deny("only read_* tools are allowed")
///     }
/// };
/// let orchestrator = Orchestrator::new(AgentRegistry::new()).approval_handler(only_reads);
/// ```
#[async_trait]
pub trait ApprovalHandler: Send + Sync {
    /// The decision on one call. Parallel steps may ask concurrently.
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision;

    /// Who decides, for the record (the `by` of each decision journaled): a person's or a
    /// policy's name. `None` (the default) records no one.
    fn decider(&self) -> Option<String> {
        None
    }

    /// This handler, with its decisions recorded as made by `name`:
    ///
    /// ```
    /// use agenthelm::prelude::*;
    ///
    /// let policy = AutoApprove.decided_by("release-bot");
    /// assert_eq!(policy.decider().as_deref(), Some("release-bot"));
    /// ```
    fn decided_by(self, name: impl Into<String>) -> DecidedBy<Self>
    where
        Self: Sized,
    {
        DecidedBy {
            handler: self,
            name: name.into(),
        }
    }
}

/// A handler whose decisions are recorded as made by a name (see
/// [`ApprovalHandler::decided_by`]).
#[derive(Debug, Clone)]
pub struct DecidedBy<H> {
    handler: H,
    name: String,
}

#[async_trait]
impl<H: ApprovalHandler> ApprovalHandler for DecidedBy<H> {
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
        self.handler.approve(request).await
    }

    fn decider(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

/// The name of the user this process runs as (`$USER`, else `$LOGNAME`, else `uid N`), for
/// the record of a decision taken at its terminal.
pub fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .or_else(process_uid)
        .unwrap_or_else(|| "unknown user".to_owned())
}

/// `uid N` from the kernel's record of this process, where there is one (Linux).
fn process_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uid = line.split_whitespace().nth(1)?;
    Some(format!("uid {uid}"))
}

#[async_trait]
impl<F> ApprovalHandler for F
where
    F: Fn(&ApprovalRequest) -> ApprovalDecision + Send + Sync,
{
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
        self(request)
    }
}

/// Approves every call. For tests and trusted automation.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoApprove;

#[async_trait]
impl ApprovalHandler for AutoApprove {
    async fn approve(&self, _request: &ApprovalRequest) -> ApprovalDecision {
        ApprovalDecision::Approve
    }
}

/// Denies every call. The default: nothing that needs approval runs without it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

#[async_trait]
impl ApprovalHandler for DenyAll {
    async fn approve(&self, _request: &ApprovalRequest) -> ApprovalDecision {
        ApprovalDecision::deny(
            "no approval handler allows it (the default handler denies every call)",
        )
    }
}

/// Asks the person at the terminal, one question at a time (parallel requests wait their turn).
///
/// Shows the tool, its description and arguments on standard error and reads `y`/`yes` from
/// standard input. Without a terminal on standard input every call is denied.
#[derive(Debug, Default)]
pub struct TerminalApproval {
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl TerminalApproval {
    /// A terminal prompt.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ApprovalHandler for TerminalApproval {
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
        if !std::io::stdin().is_terminal() {
            return ApprovalDecision::deny("approval needed but there is no terminal to ask");
        }
        let _turn = self.one_at_a_time.lock().await;
        let question = prompt_text(request);
        let answer = tokio::task::spawn_blocking(move || ask(&question)).await;
        match answer {
            Ok(Ok(line)) if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") => {
                ApprovalDecision::Approve
            }
            Ok(Ok(_)) => ApprovalDecision::deny("denied at the terminal"),
            Ok(Err(e)) => ApprovalDecision::deny(format!("could not read the answer: {e}")),
            Err(e) => ApprovalDecision::deny(format!("could not ask: {e}")),
        }
    }

    /// The user at the terminal: the one this process runs as.
    fn decider(&self) -> Option<String> {
        Some(os_user())
    }
}

fn prompt_text(request: &ApprovalRequest) -> String {
    let action = match request.purpose {
        CallPurpose::Execute => "run",
        CallPurpose::Compensate => "run (to undo step work)",
    };
    let step = request
        .step_id
        .as_deref()
        .map(|s| format!(" for step `{s}`"))
        .unwrap_or_default();
    let args =
        serde_json::to_string_pretty(&request.args).unwrap_or_else(|_| request.args.to_string());
    format!(
        "\nApproval needed{step}: {action} tool `{}` ({})\narguments: {args}\nAllow? [y/N] ",
        request.tool, request.description
    )
}

fn ask(question: &str) -> std::io::Result<String> {
    let mut err = std::io::stderr().lock();
    err.write_all(question.as_bytes())?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line)
}
