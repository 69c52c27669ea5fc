//! What can go wrong when reaching an MCP server or resolving its tools.

use std::time::Duration;

/// Why an MCP server's tools could not be had.
///
/// Tool calls report their failures as [`ToolError`](crate::ToolError) like any other tool;
/// this type covers starting servers, listing their tools and resolving `server.tool` names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The server's program could not be started.
    #[error("could not start MCP server `{server}` (`{program}`): {source}")]
    Spawn {
        /// The server's name.
        server: String,
        /// The program that was run.
        program: String,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },
    /// The server did not finish the `initialize` handshake in time.
    #[error(
        "MCP server `{server}` did not answer `initialize` within {:.1}s (raise `startup_timeout` if it is just slow){}",
        after.as_secs_f64(),
        stderr_hint(stderr)
    )]
    StartupTimeout {
        /// The server's name.
        server: String,
        /// The limit that was exceeded.
        after: Duration,
        /// The last lines the server wrote to stderr.
        stderr: Vec<String>,
    },
    /// The handshake failed: the server exited, or answered with something else.
    #[error(
        "MCP server `{server}` failed to start: {message}{}",
        stderr_hint(stderr)
    )]
    Initialize {
        /// The server's name.
        server: String,
        /// What went wrong.
        message: String,
        /// The last lines the server wrote to stderr.
        stderr: Vec<String>,
    },
    /// A request to a running server failed (for example `tools/list`).
    #[error("MCP server `{server}`: {operation} failed: {message}")]
    Request {
        /// The server's name.
        server: String,
        /// The MCP method.
        operation: String,
        /// What went wrong.
        message: String,
    },
    /// A `server.tool` reference names a server that is not configured.
    #[error(
        "unknown MCP server `{server}` in `{reference}`{}",
        list_hint("configured servers", available)
    )]
    UnknownServer {
        /// The reference as written.
        reference: String,
        /// The server part.
        server: String,
        /// The servers that are configured.
        available: Vec<String>,
    },
    /// A reference or a configured tool rule names a tool the server does not have.
    #[error(
        "MCP server `{server}` has no tool `{tool}`{}",
        list_hint("its tools", available)
    )]
    UnknownTool {
        /// The server's name.
        server: String,
        /// The tool asked for.
        tool: String,
        /// The tools the server offers.
        available: Vec<String>,
    },
    /// A reference is not of the form `server.tool` or `server.*`.
    #[error("`{reference}` is not an MCP tool reference: write `server.tool` or `server.*`")]
    BadReference {
        /// The reference as written.
        reference: String,
    },
    /// Two servers offer a tool of the same name to the same tool set.
    #[error("tool `{tool}` is offered by both MCP servers `{first}` and `{second}`: list only one of them for this agent")]
    DuplicateTool {
        /// The tool name.
        tool: String,
        /// The server listed first.
        first: String,
        /// The other server.
        second: String,
    },
}

/// The server's last stderr lines, as a suffix for an error message.
pub(super) fn stderr_hint(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n  {}", lines.join("\n  "))
    }
}

fn list_hint(what: &str, names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({what}: {})", names.join(", "))
    }
}
