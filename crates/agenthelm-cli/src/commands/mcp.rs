//! `agenthelm mcp list-tools` and `agenthelm mcp run`: one MCP server's tools from the terminal.

use agenthelm::mcp::{McpError, McpServer, McpServerConfig};
use agenthelm::{Agent, Lm, ToolAgent, ToolSet};
use serde_json::{json, Value};
use std::path::Path;

use super::Session;
use crate::cli::{McpAction, McpArgs, McpListArgs, McpRunArgs, McpServerArgs};
use crate::exit::{BadInput, Failed};
use crate::render::{self, Palette};
use agenthelm_workspace::Workspace;

/// Runs `agenthelm mcp ...`.
pub async fn run(session: &Session, args: &McpArgs) -> anyhow::Result<()> {
    match &args.action {
        McpAction::ListTools(args) => list_tools(session, args).await,
        McpAction::Run(args) => run_task(session, args).await,
    }
}

async fn list_tools(session: &Session, args: &McpListArgs) -> anyhow::Result<()> {
    let workspace = optional_workspace(session, args.server.server.is_some())?;
    let server = server(&args.server, workspace.as_ref())?;
    let listed = server.tools().await;
    server.shutdown().await;
    let tools = listed.map_err(mcp_error)?;
    if args.json {
        let specs: Vec<Value> = tools
            .specs()
            .map(|s| json!({"name": s.name, "description": s.description, "parameters": s.parameters}))
            .collect();
        crate::out::json(&specs)?;
    } else {
        crate::out::line(&render::tool_table(&tools, Palette::stdout()))?;
        crate::out::note(&Palette::stderr().dim(&format!(
            "{} tools from MCP server `{}`; [name] marks an optional parameter",
            tools.len(),
            server.name()
        )));
    }
    Ok(())
}

async fn run_task(session: &Session, args: &McpRunArgs) -> anyhow::Result<()> {
    let workspace = optional_workspace(session, args.server.server.is_some())?;
    let server = server(&args.server, workspace.as_ref())?;
    let lm = model(args.model.as_deref(), workspace.as_ref(), session)?;
    let outcome = async {
        let tools: ToolSet = server.tools().await.map_err(mcp_error)?;
        let (agent, live) =
            super::run::live(ToolAgent::new(server.name(), lm, tools), args.approve_tools);
        let result = crate::interrupt::or_ctrl_c(agent.run(&args.task)).await?;
        super::run::report(server.name(), &result.into(), live.as_deref())
    }
    .await;
    // Also after a failure or Ctrl-C: the server and whatever it started are stopped.
    server.shutdown().await;
    outcome
}

/// The workspace file when there is one; required for `--server`.
fn optional_workspace(session: &Session, required: bool) -> anyhow::Result<Option<Workspace>> {
    if required || session.config.is_some() {
        return session.workspace(None).map(Some);
    }
    match session.workspace_file(None) {
        Ok(file) => Ok(Some(Workspace::load(&file)?)),
        Err(_) => Ok(None),
    }
}

/// The server the arguments name, not started yet.
fn server(args: &McpServerArgs, workspace: Option<&Workspace>) -> anyhow::Result<McpServer> {
    let (name, mut config) = match (&args.server, &args.url, args.command.as_slice()) {
        (Some(name), _, _) => {
            let workspace = workspace.ok_or_else(|| BadInput("--server needs a workspace file".into()))?;
            let config = workspace.config.mcp_servers.get(name).cloned().ok_or_else(|| {
                let defined: Vec<&str> =
                    workspace.config.mcp_servers.keys().map(String::as_str).collect();
                BadInput(format!(
                    "MCP server `{name}` is not defined under `mcp_servers:` in {} (defined: {})",
                    workspace.file.display(),
                    if defined.is_empty() { "none".to_owned() } else { defined.join(", ") }
                ))
            })?;
            (name.clone(), config)
        }
        (None, Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(BadInput(format!("--url must start with http:// or https://, got `{url}`")).into());
            }
            ("remote".to_owned(), McpServerConfig::url(url))
        }
        // Run as if from the user's shell, so with the user's environment (tokens included):
        // the user named this very program. Workspace servers get only what their entry says.
        (None, None, argv @ [_, ..]) => (
            server_name(argv),
            McpServerConfig::command(argv.iter().cloned()).inherit_env(true),
        ),
        (None, None, []) => {
            return Err(BadInput(
                "which MCP server? Give its command after `--` (agenthelm mcp list-tools -- CMD [ARGS...]), \
                 --url URL, or --server NAME from the workspace file"
                    .into(),
            )
            .into())
        }
    };
    if let Some(secs) = args.startup_timeout {
        let timeout = agenthelm::duration::from_seconds(secs)
            .map_err(|e| BadInput(format!("--startup-timeout: {e}")))?;
        config = config.startup_timeout(timeout);
    }
    Ok(McpServer::new(name, config))
}

/// A name for a server given as a command: the program's name, or for a launcher like
/// `npx -y @scope/server-x` or `python3 server.py` the name of what it launches.
fn server_name(argv: &[String]) -> String {
    const LAUNCHERS: [&str; 11] = [
        "python", "python3", "node", "npx", "uvx", "uv", "deno", "bun", "bunx", "sh", "bash",
    ];
    let stem = |arg: &str| {
        Path::new(arg)
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
    };
    let program = argv.first().and_then(|p| stem(p));
    let launched = argv.iter().skip(1).find(|a| !a.starts_with('-'));
    match (program, launched) {
        (Some(p), Some(target)) if LAUNCHERS.contains(&p.as_str()) => stem(target).unwrap_or(p),
        (Some(p), _) => p,
        (None, _) => "server".to_owned(),
    }
}

/// `--model`, else the workspace's model, else the user's.
fn model(
    forced: Option<&str>,
    workspace: Option<&Workspace>,
    session: &Session,
) -> anyhow::Result<Lm> {
    let id = forced
        .map(str::to_owned)
        .or_else(|| workspace.and_then(|w| w.config.model.clone()))
        .or_else(|| session.user().model.clone())
        .ok_or_else(|| {
            BadInput(
                "no model: pass --model provider/model, or set `model:` in agenthelm.yaml or with \
                 `agenthelm config set model ...`"
                    .into(),
            )
        })?;
    Lm::new(&id).map_err(|e| BadInput(e.to_string()).into())
}

/// A program that cannot be started is bad input (exit 2); a server that fails is a failure.
fn mcp_error(error: McpError) -> anyhow::Error {
    let message = error.to_string();
    match error {
        McpError::Spawn { .. } | McpError::UnknownTool { .. } => BadInput(message).into(),
        _ => Failed(message).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::server_name;

    fn name(argv: &[&str]) -> String {
        server_name(&argv.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn servers_are_named_after_what_runs() {
        assert_eq!(
            name(&["/usr/bin/mcp-server-time", "--local-timezone", "UTC"]),
            "mcp-server-time"
        );
        assert_eq!(
            name(&["npx", "-y", "@modelcontextprotocol/server-memory"]),
            "server-memory"
        );
        assert_eq!(name(&["python3", "tools/demo.py"]), "demo");
        assert_eq!(name(&["python3"]), "python3");
    }
}
