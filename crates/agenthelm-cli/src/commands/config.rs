//! `agenthelm config show|set KEY VALUE|path`.

use std::path::Path;

use crate::cli::{ConfigAction, ConfigArgs};
use agenthelm_workspace::user::{self as user_config, UserConfig};
use agenthelm_workspace::Workspace;

/// Runs `agenthelm config`.
pub fn run(args: &ConfigArgs, workspace_flag: Option<&Path>) -> anyhow::Result<()> {
    match &args.action {
        ConfigAction::Path => crate::out::line(&user_config::path()?.display().to_string())?,
        ConfigAction::Set { key, value } => {
            let mut config = UserConfig::load()?;
            config.set(key, value)?;
            let file = config.save()?;
            crate::out::line(&format!("{key} = {value} (saved in {})", file.display()))?;
        }
        ConfigAction::Show => show(workspace_flag)?,
    }
    Ok(())
}

fn show(workspace_flag: Option<&Path>) -> anyhow::Result<()> {
    let file = user_config::path()?;
    let config = UserConfig::load()?;
    crate::out::line(&format!("user defaults: {}", file.display()))?;
    crate::out::line(&format!(
        "  model: {}",
        config.model.as_deref().unwrap_or("(not set)")
    ))?;
    crate::out::line(&format!(
        "  max_parallel: {}",
        config
            .max_parallel
            .map_or("(not set)".to_owned(), |n| n.to_string())
    ))?;
    match super::locate(workspace_flag, None) {
        Ok(path) => {
            let workspace = Workspace::load(&path)?;
            let config = &workspace.config;
            crate::out::line(&format!("workspace: {}", workspace.file.display()))?;
            crate::out::line(&format!(
                "  model: {}",
                config.model.as_deref().unwrap_or("(not set)")
            ))?;
            crate::out::line(&format!(
                "  default_agent: {}",
                config.default_agent.as_deref().unwrap_or("(not set)")
            ))?;
            let names = |keys: Vec<&String>| {
                if keys.is_empty() {
                    "(none)".to_owned()
                } else {
                    keys.iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            crate::out::line(&format!(
                "  agents: {}",
                names(config.agents.keys().collect())
            ))?;
            crate::out::line(&format!(
                "  tools: {}",
                names(config.tools.keys().collect())
            ))?;
            crate::out::line(&format!(
                "  mcp_servers: {}",
                names(config.mcp_servers.keys().collect())
            ))?;
        }
        Err(_) if workspace_flag.is_none() => crate::out::line("workspace: (none found)")?,
        Err(e) => return Err(e),
    }
    Ok(())
}
