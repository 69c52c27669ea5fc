//! Who approves tool calls whose contract says `requires_approval`, from the command line.

use agenthelm::{ApprovalDecision, ApprovalHandler, ApprovalRequest, TerminalApproval};
use async_trait::async_trait;
use std::io::IsTerminal;

/// `--approve-tools` approves everything; otherwise the person at the terminal decides, and
/// without a terminal every such call is denied.
pub enum CliApproval {
    /// `--approve-tools`.
    Everything,
    /// Ask at the terminal.
    Ask(TerminalApproval),
}

impl CliApproval {
    /// The handler for the `--approve-tools` flag.
    pub fn new(approve_tools: bool) -> Self {
        if approve_tools {
            CliApproval::Everything
        } else {
            CliApproval::Ask(TerminalApproval::new())
        }
    }
}

#[async_trait]
impl ApprovalHandler for CliApproval {
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
        match self {
            CliApproval::Everything => ApprovalDecision::Approve,
            CliApproval::Ask(_) if !std::io::stdin().is_terminal() => ApprovalDecision::deny(
                "approval needed but there is no terminal to ask (pass --approve-tools to allow it)",
            ),
            CliApproval::Ask(terminal) => terminal.approve(request).await,
        }
    }
}
