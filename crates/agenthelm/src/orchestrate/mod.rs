//! Running plans: the [`AgentRegistry`] of named agents, the [`Orchestrator`] that schedules
//! steps by their dependencies and rolls back on failure, and [approval](ApprovalHandler) of
//! tool calls.

mod approval;
mod orchestrator;
mod registry;
mod report;
mod rollback;
mod run;
mod template;

pub use approval::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, AutoApprove, DenyAll, TerminalApproval,
};
pub(crate) use orchestrator::reference_problems;
pub use orchestrator::{Orchestrator, OrchestratorError};
pub use registry::{AgentRegistry, RegistryError};
pub use report::{CompensationFailure, RollbackReport, StepOutcome};
pub use template::resolve_templates;
