//! Running plans: the [`AgentRegistry`] of named agents, the [`Orchestrator`] that schedules
//! steps by their dependencies and rolls back on failure, and [approval](ApprovalHandler) of
//! tool calls.

mod cancel;
mod orchestrator;
mod outcome;
mod remote;
mod replay;
mod resume;
mod rollback;
mod run;

// Re-exported here, where they were before the layers were split, so older code keeps compiling.
pub use crate::agent::{AgentRegistry, RegistryError};
pub use crate::approval::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, AutoApprove, DenyAll, TerminalApproval,
};
pub use crate::exec::{Divergence, DivergenceKind, ReplayOptions};
pub use crate::plan::{resolve_templates, RollbackMode};
pub use cancel::CancelToken;
pub use orchestrator::{Orchestrator, OrchestratorError};
pub use outcome::{CompensationFailure, RollbackReport, RunResult, StepOutcome};
pub use remote::{RemoteOutcome, RemoteRun, RemoteRunner, RemoteRuns, StepWork, UndoWork};
pub use replay::ReplayReport;
pub use resume::InterruptedSteps;
pub use run::new_run_id;
