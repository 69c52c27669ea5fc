use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool call that changed (or may have changed) something outside the process: what rollback
/// has to undo.
///
/// The call's output is not repeated here: it is in the call's
/// [`ToolCall`](crate::EventKind::ToolCall) event (same `call_id`). Journals written before
/// 0.2 carry a `result` field as well; it is ignored when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The call's id.
    pub call_id: String,
    /// The tool that was called.
    pub tool: String,
    /// Its arguments.
    pub args: Value,
    /// The tool that undoes it, if it has one.
    pub compensating_tool: Option<String>,
    /// Recorded before the call finished (a tool with partial effects): the call may or may not
    /// have done its work. Replaced by the outcome when the call ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_progress: bool,
}
