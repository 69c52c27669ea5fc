//! AgentHelm workspaces: the `agenthelm.yaml` file, and the agents, tools, MCP servers and run
//! store it declares, assembled into the pieces of the `agenthelm` library.
//!
//! The `agenthelm` command line, the server and your own programs share this crate, so a
//! workspace means the same thing everywhere:
//!
//! - [`Workspace`]: finding ([`discover`], which refuses a file others own or can write),
//!   reading and checking the file. A mistake in it is a
//!   [`SourceError`] naming the file, line and key (`agenthelm.yaml:7: `tools.x.timeout`: ...`).
//! - [`CommandTool`]: a program declared under `tools:` as a [`Tool`](agenthelm::Tool). It gets
//!   its arguments as JSON on stdin and runs in a process group of its own, which is killed
//!   whole on a timeout or cancellation.
//! - [`Assembly`]: models, agents with their command and MCP tools, the
//!   [`AgentRegistry`](agenthelm::AgentRegistry) and an [`Orchestrator`](agenthelm::Orchestrator) that can reach
//!   every compensating tool during rollback.
//! - [`open_store`]: the run store the workspace names.
//! - [`UserConfig`]: user defaults in `~/.agenthelm/config.yaml`.
//! - [`PlanFile`]: a plan read from a file, whose problems name the file, line and key.
//!
//! Errors are [`WorkspaceError`]s; [`WorkspaceError::is_bad_input`] tells a mistake in what was
//! written from a failure while running.
//!
//! # Example
//!
//! Load a workspace and get its agents:
//!
//! ```
//! use agenthelm_workspace::{Assembly, ModelNeed, UserConfig, Workspace};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("agenthelm-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # std::fs::write(dir.join("agenthelm.yaml"), "
//! # model: openai/gpt-4o-mini
//! # agents:
//! #   writer:
//! #     role: writes files
//! #     tools: [write]
//! # tools:
//! #   write:
//! #     command: [python3, tools/write.py]
//! #     parameters: { type: object, properties: { path: { type: string } }, required: [path] }
//! #     compensating_tool: remove
//! #   remove:
//! #     command: [rm, -f, --]
//! # ")?;
//! // `agenthelm.yaml` in `dir` or a parent folder.
//! let file = agenthelm_workspace::discover(&dir)?.ok_or("no agenthelm.yaml")?;
//! let workspace = Workspace::load(&file)?;
//!
//! let assembly = Assembly::new(&workspace, &UserConfig::default(), None);
//! let registry = assembly.registry(ModelNeed::OnDemand).await?;
//! assert_eq!(registry.names(), ["writer"]);
//! let write = assembly.tools.get("write").ok_or("no tool")?;
//! assert_eq!(write.spec().contract.compensating_tool.as_deref(), Some("remove"));
//!
//! // Or an orchestrator with every agent and tool, journaling to the workspace's store:
//! let store = agenthelm_workspace::open_store(&workspace)?;
//! let orchestrator = assembly.orchestrator().await?.store_shared(store.store);
//! # drop(orchestrator);
//! assembly.shutdown().await;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod assemble;
mod byte_size;
mod cluster;
mod command_tool;
mod error;
mod plan_file;
mod preflight;
mod rate_limits;
mod redact_config;
mod review;
mod source;
mod store;
mod user_config;
mod workspace;

pub use assemble::{Assembly, ModelNeed};
pub use byte_size::ByteSize;
pub use cluster::{pool_name_problem, ClusterConfig, NATS_URL_ENV};
pub use command_tool::{
    CommandTool, DEFAULT_MAX_OUTPUT, IDEMPOTENCY_KEY_VAR, RUN_ID_VAR, STEP_ID_VAR,
};
pub use error::WorkspaceError;
pub use plan_file::{problem_key, PlanFile};
pub use preflight::check_programs;
pub use rate_limits::RateLimitConfig;
pub use redact_config::RedactConfig;
pub use review::ReviewSummary;
pub use source::{line_of, SourceError, SourceErrors};
pub use store::{open_store, OpenStore};
pub mod timestamp;
pub use user_config::UserConfig;
pub use workspace::{
    discover, parse, AgentConfig, ServerConfig, ServerUser, StoreBackend, StoreConfig, ToolConfig,
    Workspace, WorkspaceConfig, FILE_NAME, STORE_URL_ENV,
};

/// User defaults in `~/.agenthelm/config.yaml`: where the file is and which keys it takes.
pub mod user {
    pub use crate::user_config::{path, UserConfig, KEYS};
}
