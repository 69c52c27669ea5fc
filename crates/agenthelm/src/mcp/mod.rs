//! MCP servers as tool sources: any Model Context Protocol server's tools become [`Tool`]s
//! that agents, the planner and the orchestrator use like native ones, compensations included.
//!
//! - [`McpServerConfig`]: how to reach a server (a command run as a child process speaking
//!   MCP over stdio, or a streamable-HTTP `url`), its start-up timeout, and contract rules for
//!   its tools (`compensating_tool`, `requires_approval`, `retries`, `timeout`), since MCP has
//!   no way to state them. It deserializes from a workspace file's `mcp_servers:` entries.
//! - [`McpServer`]: one server, started on first use, restarted after a crash, shut down
//!   (process group included) when dropped. A command server gets a minimal environment
//!   ([`BASE_ENV`], `pass_env`, `env`), not this process's API keys, unless `inherit_env` is set.
//! - [`McpServers`]: servers by name; [`resolve`](McpServers::resolve) turns `server.tool` /
//!   `server.*` references into a [`ToolSet`](crate::ToolSet).
//! - [`McpTool`]: one server tool as a [`Tool`].
//!
//! This module needs the `mcp` cargo feature (on by default).
//!
//! ```no_run
//! use agenthelm::mcp::{McpServerConfig, McpServers, ToolOverride};
//! use agenthelm::prelude::*;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A memory server; undo `create_entities` with `delete_entities` during rollback.
//! let memory = McpServerConfig::command(["npx", "-y", "@modelcontextprotocol/server-memory"])
//!     .tool("create_entities", ToolOverride {
//!         compensating_tool: Some("delete_entities".into()),
//!         ..Default::default()
//!     });
//! let servers = McpServers::from_configs([("memory", memory)]);
//! let tools = servers.resolve(["memory.*"]).await?;
//!
//! let mut registry = AgentRegistry::new();
//! registry.register(ToolAgent::new("keeper", Lm::new("openai/gpt-4o-mini")?, tools))?;
//! let mut plan = Plan::new("remember Ada");
//! plan.steps.push(
//!     PlanStep::new("add", "store Ada").agent("keeper").tool("create_entities")
//!         .args(json!({"entities": [{"name": "Ada", "entityType": "person", "observations": []}]}))
//!         // The compensating tool comes from the rule above; its arguments differ, so give them.
//!         .compensate("delete_entities", json!({"entityNames": ["Ada"]})),
//! );
//! plan.approved = true;
//! let result = Orchestrator::new(registry).execute(&mut plan).await?;
//! println!("success: {}", result.success);
//! servers.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Tool`]: crate::Tool

mod config;
mod connection;
mod error;
mod server;
mod servers;
mod tool;

pub use config::{McpServerConfig, McpTransport, ToolOverride, BASE_ENV, DEFAULT_STARTUP_TIMEOUT};
pub use error::McpError;
pub use server::McpServer;
pub use servers::McpServers;
pub use tool::McpTool;
