use serde::Serialize;

use crate::plan::StepStatus;

/// How one step of a plan run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepOutcome {
    /// The step's id.
    pub id: String,
    /// Its final status.
    pub status: StepStatus,
    /// The agent that ran it, if one did.
    pub agent: Option<String>,
    /// The tool called directly (no model), if it was.
    pub direct_tool: Option<String>,
    /// Wall time from start to end (0 for a step that never started).
    pub duration_ms: f64,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollbackReport {
    /// Steps undone, in the order they were undone.
    pub compensated: Vec<String>,
    /// Compensations that failed: these effects are still in place.
    pub failed: Vec<CompensationFailure>,
    /// Completed steps with nothing to undo (no compensating tool and no recorded effects).
    pub nothing_to_undo: Vec<String>,
}

impl RollbackReport {
    /// Whether everything that had to be undone was undone.
    pub fn fully_undone(&self) -> bool {
        self.failed.is_empty()
    }
}

/// An effect that rollback could not undo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompensationFailure {
    /// The step whose effect remains.
    pub step: String,
    /// The compensating tool (or the tool whose effect has no compensation).
    pub tool: String,
    /// Why it could not be undone.
    pub error: String,
}
