//! One MCP server's lifecycle: started on first use, restarted after a crash, shut down on drop.

use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RoleClient, ServiceError};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use tokio::sync::Mutex;

use super::config::McpServerConfig;
use super::connection::Connection;
use super::error::{stderr_hint, McpError};
use super::tool::{call_result, McpTool};
use crate::tool::{ToolError, ToolSet};

/// An MCP server whose tools AgentHelm can use.
///
/// Nothing starts when it is created: the server is started (or reached) the first time its
/// tools are listed or called, within the configured `startup_timeout`. If it crashes, calls in
/// flight fail with an error that says so, and the next call starts it again. Dropping the last
/// clone, or [`shutdown`](McpServer::shutdown), closes its stdin, gives it a few seconds to exit,
/// then kills its process group, so nothing it started is left behind.
///
/// Clones share the same server.
///
/// ```no_run
/// use agenthelm::mcp::{McpServer, McpServerConfig};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let time = McpServer::new("time", McpServerConfig::command(["mcp-server-time", "--local-timezone", "UTC"]));
/// let tools = time.tools().await?;                 // starts the server, lists its tools
/// for spec in tools.specs() {
///     println!("{}: {}", spec.name, spec.description);
/// }
/// let now = time.call_tool("get_current_time", json!({"timezone": "UTC"})).await?;
/// println!("{now}");
/// time.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct McpServer {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: McpServerConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<Connection>,
    /// Counts the sessions started, so a report about a dead session cannot end a newer one.
    generation: u64,
}

impl McpServer {
    /// A server called `name` (the `server` in `server.tool`), not started yet.
    pub fn new(name: impl Into<String>, config: McpServerConfig) -> Self {
        McpServer {
            inner: Arc::new(Inner {
                name: name.into(),
                config,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How the server is reached and the rules for its tools.
    pub fn config(&self) -> &McpServerConfig {
        &self.inner.config
    }

    /// Lists the server's tools (starting it if needed) as a [`ToolSet`] whose tools call it.
    ///
    /// Tool names are the server's own; each tool's contract comes from the config's `tools`
    /// rules. A rule for a tool the server does not have is an error (it is most likely a typo).
    pub async fn tools(&self) -> Result<ToolSet, McpError> {
        let (peer, generation) = self.session().await?;
        let listed = match peer.list_all_tools().await {
            Ok(listed) => listed,
            Err(e) => {
                if matches!(e, ServiceError::TransportClosed) {
                    self.forget(generation).await;
                }
                return Err(McpError::Request {
                    server: self.name().to_owned(),
                    operation: "tools/list".into(),
                    message: e.to_string(),
                });
            }
        };
        let available: Vec<String> = listed.iter().map(|t| t.name.to_string()).collect();
        if let Some(unknown) = self
            .inner
            .config
            .tools
            .keys()
            .find(|name| !available.contains(name))
        {
            return Err(McpError::UnknownTool {
                server: self.name().to_owned(),
                tool: unknown.clone(),
                available,
            });
        }
        Ok(listed
            .into_iter()
            .map(|tool| McpTool::new(self.clone(), tool))
            .collect())
    }

    /// Calls the server's tool `tool` with `args` (a JSON object), starting the server if needed.
    ///
    /// The result is the tool's structured content when it has some; otherwise its text, parsed
    /// as JSON when it is JSON. A result the server marks as an error becomes
    /// [`ToolError::Failed`] with the server's message.
    pub async fn call_tool(&self, tool: &str, args: Value) -> Result<Value, ToolError> {
        let arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return Err(ToolError::InvalidArguments {
                    tool: tool.to_owned(),
                    problems: vec![crate::tool::schema::Problem::new(
                        "",
                        format!("arguments must be a JSON object, got {other}"),
                    )],
                })
            }
        };
        let (peer, generation) = self
            .session()
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments;
        match peer.call_tool(params).await {
            Ok(result) => call_result(result),
            Err(ServiceError::TransportClosed) => {
                let stderr = self.forget(generation).await;
                Err(ToolError::Failed(format!(
                    "MCP server `{}` stopped while `{tool}` was running (it exited or crashed; \
                     it will be started again on the next call){}",
                    self.name(),
                    stderr_hint(&stderr)
                )))
            }
            Err(ServiceError::McpError(e)) => Err(ToolError::Failed(format!(
                "MCP server `{}` rejected the call to `{tool}`: {}",
                self.name(),
                e.message
            ))),
            Err(other) => Err(ToolError::Failed(format!(
                "MCP server `{}`: calling `{tool}` failed: {other}",
                self.name()
            ))),
        }
    }

    /// Whether the server is running now (started and not exited).
    pub async fn is_running(&self) -> bool {
        let state = self.inner.state.lock().await;
        state.connection.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The id of the server's process while it runs (command servers only).
    pub async fn pid(&self) -> Option<u32> {
        let state = self.inner.state.lock().await;
        state
            .connection
            .as_ref()
            .filter(|c| !c.is_closed())
            .and_then(Connection::pid)
    }

    /// Stops the server if it runs: closes its stdin, waits a few seconds for it to exit, then
    /// kills its process group. A later call starts it again.
    pub async fn shutdown(&self) {
        let connection = self.inner.state.lock().await.connection.take();
        if let Some(connection) = connection {
            connection.close().await;
        }
    }

    /// The live session, starting the server when there is none or the last one ended.
    async fn session(&self) -> Result<(Peer<RoleClient>, u64), McpError> {
        let mut state = self.inner.state.lock().await;
        if let Some(connection) = &state.connection {
            if !connection.is_closed() {
                return Ok((connection.peer(), state.generation));
            }
        }
        if let Some(dead) = state.connection.take() {
            dead.close().await;
        }
        // Holding the lock while starting: concurrent first calls share one start.
        let connection = Connection::open(&self.inner.name, &self.inner.config).await?;
        state.generation += 1;
        let peer = connection.peer();
        state.connection = Some(connection);
        Ok((peer, state.generation))
    }

    /// Drops the session `generation` after it failed, and returns the server's last stderr
    /// lines. A newer session is left alone.
    async fn forget(&self, generation: u64) -> Vec<String> {
        let dead = {
            let mut state = self.inner.state.lock().await;
            if state.generation != generation {
                return Vec::new();
            }
            state.connection.take()
        };
        match dead {
            Some(dead) => {
                let stderr = dead.stderr_tail();
                dead.close().await;
                stderr
            }
            None => Vec::new(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(connection) = self.state.get_mut().connection.take() else {
            return;
        };
        // Close politely in the background when a runtime is there to run it; if that task
        // never runs (the runtime is shutting down), dropping it kills the process group.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(connection.close());
            }
            Err(_) => drop(connection),
        }
    }
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
