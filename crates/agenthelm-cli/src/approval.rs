//! Who approves tool calls whose contract says `requires_approval`, from the command line.

use agenthelm::{ApprovalDecision, ApprovalHandler, ApprovalRequest, TerminalApproval};
use async_trait::async_trait;
use serde_json::Value;
use std::io::IsTerminal;

use crate::render;

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
            CliApproval::Ask(terminal) => {
                // The question and its answer need the terminal to themselves.
                let _paused = crate::progress::pause();
                terminal.approve(&shown(request)).await
            }
        }
    }

    /// The user this process runs as: the one at the terminal, or the one who passed
    /// `--approve-tools`.
    fn decider(&self) -> Option<String> {
        let user = agenthelm::approval::os_user();
        Some(match self {
            CliApproval::Everything => format!("{user} (--approve-tools)"),
            CliApproval::Ask(_) => user,
        })
    }
}

/// The request as the prompt may show it: step, tool, description and every string in the
/// arguments with control characters escaped (arguments may carry earlier tools' output).
fn shown(request: &ApprovalRequest) -> ApprovalRequest {
    let mut shown = request.clone();
    shown.step_id = request.step_id.as_deref().map(render::safe);
    shown.tool = render::safe(&request.tool);
    shown.description = render::safe(&request.description);
    shown.args = safe_json(&request.args);
    shown
}

fn safe_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(render::safe(s)),
        Value::Array(items) => Value::Array(items.iter().map(safe_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (render::safe(k), safe_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_json;
    use serde_json::json;

    #[test]
    fn strings_in_arguments_are_shown_escaped() {
        let args = json!({"a\u{9b}": ["\x1b[2J", 1, {"b": "\u{7}"}]});
        assert_eq!(
            safe_json(&args),
            json!({"a\\x9b": ["\\x1b[2J", 1, {"b": "\\x07"}]})
        );
    }
}
