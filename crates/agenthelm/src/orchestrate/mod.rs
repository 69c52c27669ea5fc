//! Running plans: the [`AgentRegistry`] of named agents, the [`Orchestrator`] that schedules
//! steps by their dependencies and rolls back on failure, and [approval](ApprovalHandler) of
//! tool calls.

mod approval;
mod cancel;
mod orchestrator;
mod registry;
mod report;
mod rollback;
mod run;
mod template;

pub use approval::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, AutoApprove, DenyAll, TerminalApproval,
};
pub use cancel::CancelToken;
pub use orchestrator::{Orchestrator, OrchestratorError};
pub use registry::{AgentRegistry, RegistryError};
pub use report::{CompensationFailure, RollbackReport, StepOutcome};
pub(crate) use template::referenced_steps;
pub use template::resolve_templates;
