//! Named MCP servers, and resolving `server.tool` / `server.*` references into tools.

use std::collections::BTreeMap;

use super::config::McpServerConfig;
use super::error::McpError;
use super::server::McpServer;
use crate::tool::ToolSet;

/// The MCP servers of a workspace, by name (the `mcp_servers:` section of a workspace file).
///
/// Agents name MCP tools as `server.tool`, or `server.*` for all of a server's tools;
/// [`resolve`](McpServers::resolve) turns such a list into a [`ToolSet`]. Only the servers a
/// list names are started.
///
/// ```no_run
/// use agenthelm::mcp::{McpServerConfig, McpServers};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let servers = McpServers::from_configs([
///     ("time", McpServerConfig::command(["mcp-server-time", "--local-timezone", "UTC"])),
///     ("files", McpServerConfig::command(["mcp-server-filesystem", "/tmp/work"])),
/// ]);
/// let tools = servers.resolve(["time.get_current_time", "files.*"]).await?;
/// println!("{:?}", tools.names().collect::<Vec<_>>());
/// servers.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct McpServers {
    servers: BTreeMap<String, McpServer>,
}

impl McpServers {
    /// No servers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Servers from `(name, config)` pairs, e.g. a workspace file's `mcp_servers:` map.
    pub fn from_configs(
        configs: impl IntoIterator<Item = (impl Into<String>, McpServerConfig)>,
    ) -> Self {
        let mut servers = McpServers::new();
        for (name, config) in configs {
            servers.insert(name, config);
        }
        servers
    }

    /// Adds a server (not started yet); returns the one it replaced, if any.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        config: McpServerConfig,
    ) -> Option<McpServer> {
        let name = name.into();
        self.servers
            .insert(name.clone(), McpServer::new(name, config))
    }

    /// The server called `name`.
    pub fn get(&self, name: &str) -> Option<&McpServer> {
        self.servers.get(name)
    }

    /// Server names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether `reference` names a tool of one of these servers (`server.tool` or `server.*`
    /// with a configured `server`). Lets a caller tell MCP tools from other tools in one list.
    ///
    /// ```
    /// use agenthelm::mcp::{McpServerConfig, McpServers};
    ///
    /// let servers = McpServers::from_configs([("time", McpServerConfig::command(["mcp-server-time"]))]);
    /// assert!(servers.is_reference("time.get_current_time"));
    /// assert!(servers.is_reference("time.*"));
    /// assert!(!servers.is_reference("search"));
    /// assert!(!servers.is_reference("other.tool"));
    /// ```
    pub fn is_reference(&self, reference: &str) -> bool {
        split(reference).is_some_and(|(server, _)| self.servers.contains_key(server))
    }

    /// The tools that `references` name, each `server.tool` or `server.*`, starting the
    /// servers they need.
    ///
    /// Errors name the reference at fault: an unknown server, a tool the server does not have
    /// (with the ones it has), a malformed reference, or two servers offering the same tool
    /// name.
    pub async fn resolve<I, S>(&self, references: I) -> Result<ToolSet, McpError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        // Group by server (in first-mention order) so each server lists its tools once.
        let mut wanted: Vec<(&McpServer, Vec<String>)> = Vec::new();
        for reference in references {
            let reference = reference.as_ref();
            let (server_name, tool) = split(reference).ok_or_else(|| McpError::BadReference {
                reference: reference.to_owned(),
            })?;
            let server = self
                .servers
                .get(server_name)
                .ok_or_else(|| McpError::UnknownServer {
                    reference: reference.to_owned(),
                    server: server_name.to_owned(),
                    available: self.servers.keys().cloned().collect(),
                })?;
            match wanted.iter_mut().find(|(s, _)| s.name() == server_name) {
                Some((_, tools)) => tools.push(tool.to_owned()),
                None => wanted.push((server, vec![tool.to_owned()])),
            }
        }
        let mut set = ToolSet::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for (server, tools) in wanted {
            let offered = server.tools().await?;
            for tool in tools {
                let picked: Vec<_> = if tool == "*" {
                    offered.iter().cloned().collect()
                } else {
                    let found = offered.get(&tool).ok_or_else(|| McpError::UnknownTool {
                        server: server.name().to_owned(),
                        tool: tool.clone(),
                        available: offered.names().map(str::to_owned).collect(),
                    })?;
                    vec![found.clone()]
                };
                for found in picked {
                    let name = found.spec().name.clone();
                    if let Some(first) = owner.get(&name).filter(|s| *s != server.name()) {
                        return Err(McpError::DuplicateTool {
                            tool: name,
                            first: first.clone(),
                            second: server.name().to_owned(),
                        });
                    }
                    owner.insert(name, server.name().to_owned());
                    set.insert(found);
                }
            }
        }
        Ok(set)
    }

    /// Stops every running server (see [`McpServer::shutdown`]), all at the same time.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.servers.values().map(McpServer::shutdown)).await;
    }
}

/// `server.tool` → (`server`, `tool`); the tool part may itself contain dots.
fn split(reference: &str) -> Option<(&str, &str)> {
    let (server, tool) = reference.split_once('.')?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> McpServers {
        McpServers::from_configs([("a", McpServerConfig::command(["never-started"]))])
    }

    #[tokio::test]
    async fn malformed_and_unknown_references_fail_before_starting_anything() {
        let bad = servers().resolve(["no_dot"]).await.unwrap_err();
        assert!(matches!(bad, McpError::BadReference { .. }), "{bad}");
        let empty_tool = servers().resolve(["a."]).await.unwrap_err();
        assert!(matches!(empty_tool, McpError::BadReference { .. }));
        let unknown = servers().resolve(["b.tool"]).await.unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown MCP server `b` in `b.tool` (configured servers: a)"
        );
    }

    #[test]
    fn tool_part_may_contain_dots() {
        assert_eq!(split("srv.ns.tool"), Some(("srv", "ns.tool")));
        assert_eq!(split(".tool"), None);
    }
}
