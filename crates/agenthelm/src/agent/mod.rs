//! Agents: named workers that take a task and return an [`AgentResult`].
//!
//! [`ToolAgent`] is the built-in one (a model that reasons and calls tools). Implement [`Agent`]
//! for anything else: a deterministic function, a call to another service, a human in the loop.
//!
//! ```
//! use agenthelm::prelude::*;
//!
//! struct Shout;
//!
//! #[agenthelm::async_trait]
//! impl Agent for Shout {
//!     fn name(&self) -> &str { "shout" }
//!     async fn run(&self, task: &str) -> AgentResult {
//!         AgentResult::ok(task.to_uppercase())
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert_eq!(Shout.run("hi").await.answer.as_deref(), Some("HI"));
//! # }
//! ```

mod catalogue;
mod llm_call;
mod planner;
mod registry;
mod result;
mod task;
mod tool_agent;

pub use crate::exec::{StepContext, TextDelta, TextObserver};
pub use crate::trace::Effect;
pub use catalogue::{AgentInfo, Catalogue};
pub use planner::{PlannerAgent, PlannerError};
pub use registry::{AgentRegistry, RegistryError};
pub use result::AgentResult;
pub use task::StepTask;
pub use tool_agent::{AgentStreamItem, ToolAgent};

use async_trait::async_trait;

use crate::lm::Lm;
use crate::tool::ToolSet;

/// A named worker that plans can route steps to.
#[async_trait]
pub trait Agent: Send + Sync {
    /// The agent's unique name in a registry.
    fn name(&self) -> &str;

    /// Does `task` and reports the outcome. Never panics on bad input: a failure is
    /// [`AgentResult::fail`].
    async fn run(&self, task: &str) -> AgentResult;

    /// What the agent is good at, for planners choosing who does a step.
    fn description(&self) -> Option<&str> {
        None
    }

    /// The tools the agent can call, when it has a known set. The orchestrator calls these
    /// directly for fully specified tool steps, validates plans against them, and finds
    /// compensating tools among them.
    fn tools(&self) -> Option<&ToolSet> {
        None
    }

    /// The model the agent thinks with, when it has one: checked against a run's cost budget
    /// before the run starts (a model without a price cannot be kept within one).
    fn model(&self) -> Option<&Lm> {
        None
    }

    /// Does one plan step. The default builds the task text with [`StepTask::prompt`] and calls
    /// [`run`](Agent::run); events the result carries are added to the run's record.
    ///
    /// An agent that overrides this should call tools through `ctx` so approvals, retries,
    /// rollback and live events work for them (see [`StepContext::call_tool`]).
    async fn run_step(&self, task: &StepTask, ctx: &StepContext) -> AgentResult {
        let _ = ctx;
        self.run(&task.prompt()).await
    }
}
